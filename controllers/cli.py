"""``emu``: the command line of the rack emulator.

Exit codes: 0 ok, 1 an ``expect`` failed (or a check found an
inconsistency), 2 bad input (a one-line message naming the file, line and
key; never a traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from emu.backends.base import RackError
from emu.params import ConfigError

#: the exception a DKC raises when the memory behind its thin media runs out
#: (controllers/devices/dkc/actor.py ``MediaFull``), as an actor failure names it
MEDIA_FULL = "MediaFull"

RACKS_DIR = "racks"


class Usage(Exception):
    """Bad command-line input: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise Usage(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="emu", description="Storage-rack emulator of JP H11-15604 (remote copy with a "
                                        "consistency-preserving recovery copy)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="start a rack, play a script, print the report, stop")
    r.add_argument("config")
    r.add_argument("script")
    r.add_argument("--backend", choices=("processes", "inline"), default="processes")
    r.add_argument("--seed", type=int)
    r.add_argument("--json")
    r.add_argument("--trace")
    r.add_argument("--plots")
    r.add_argument("--writes")
    u = sub.add_parser("up", help="start a long-running rack")
    u.add_argument("config")
    u.add_argument("--name", default="rack")
    u.add_argument("--realtime", type=float)
    u.add_argument("--tcp", metavar="HOST:PORT",
                   help="serve the console over tcp, with CurveZMQ keys generated for this rack (0600)")
    u.add_argument("--seed", type=int)
    u.add_argument("--nbd", action="store_true",
                   help="serve every LDEV as an NBD export SITE:LDEV on a unix socket in the rack's run directory")
    u.add_argument("--nbd-tcp", metavar="HOST:PORT", help="also serve NBD over tcp (loopback addresses only)")
    u.add_argument("--fuse", metavar="DIR", help="show every LDEV as a file DIR/SITE/ldevN (FUSE)")
    u.add_argument("--capture", metavar="FILE",
                   help="log every front-end request to a capture file per site ({site} in FILE, or FILE.SITE.ext)")
    c = sub.add_parser("console", help="an interactive SVP console on a rack of its own")
    c.add_argument("config")
    c.add_argument("--backend", choices=("processes", "inline"), default="processes")
    c.add_argument("--seed", type=int)
    d = sub.add_parser("down", help="stop a long-running rack")
    d.add_argument("--name", default="rack")
    sub.add_parser("ps", help="list long-running racks")
    s = sub.add_parser("svp", help="the SVP console of a running rack")
    s.add_argument("--name", default="rack")
    s.add_argument("-c", dest="commands")
    rp = sub.add_parser("report", help="render a saved report")
    rp.add_argument("json")
    rp.add_argument("--plots")
    t = sub.add_parser("trace", help="walk a trace step by step")
    t.add_argument("file")
    t.add_argument("--pair")
    t.add_argument("--steps")
    sub.add_parser("check", help="consistency of LDEV images against a write log", add_help=False)
    sub.add_parser("disk", help="disk tools: emu disk replay --disk PRESET|--disk-spec FILE TRACE",
                   add_help=False)
    sub.add_parser("sweep", help="crash-point sweep", add_help=False)
    sub.add_parser("campaign", help="fault campaign", add_help=False)
    i = sub.add_parser("info", help="a device's parameters")
    i.add_argument("device", nargs="?")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = {"check": "controllers.verify.checker", "sweep": "controllers.verify.sweep",
                   "campaign": "controllers.verify.campaign"}
    try:
        if argv and argv[0] in passthrough:
            import importlib
            try:
                module = importlib.import_module(passthrough[argv[0]])
            except ModuleNotFoundError:
                raise Usage(f"emu {argv[0]}: not available in this build") from None
            return module.main(argv[1:])
        if argv[:2] == ["disk", "replay"]:
            from controllers.operator.disk_replay import main as replay
            return replay(argv[2:])
        if argv[:1] == ["disk"]:
            raise Usage("usage: emu disk replay (--disk PRESET | --disk-spec FILE) TRACE "
                        "[--out FILE] [--verbose]")
        args = _parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except Usage as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"emu: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"emu: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emu: interrupted", file=sys.stderr)
        return 130
    except RackError as exc:
        if getattr(exc, "cause", "").startswith(f"{MEDIA_FULL}:"):
            # the memory behind thin media ran out: a limit of this machine,
            # neither bad input nor our bug; one line naming the keys, exit 71 (EX_OSERR)
            print(f"emu: the run stopped at {exc.time_ns} ns: {exc.cause.split(': ', 1)[1]}", file=sys.stderr)
            return 71
        # a bug (ours), not bad input: the traceback, then one line naming the
        # actor, the event and the virtual time; exit 70 (EX_SOFTWARE)
        import traceback
        traceback.print_exc()
        if getattr(exc, "remote_traceback", ""):
            print(exc.remote_traceback, file=sys.stderr, end="")
        print(f"emu: internal error, the run stopped: {exc}", file=sys.stderr)
        return 70


# ---------------------------------------------------------------------------- run
def cmd_run(args) -> int:
    from controllers.operator.console import SvpConsole, run_script
    from controllers.operator.report import build_report, render_report
    from controllers.rack.storage import StorageRack
    script = Path(args.script)
    try:
        lines = script.read_text().splitlines()
    except FileNotFoundError:
        raise Usage(f"emu: {args.script}: no such script") from None
    trace_out = open(args.trace, "w") if args.trace else None
    try:
        with StorageRack(args.config, backend=args.backend, seed=args.seed, trace_out=trace_out) as rack:
            console = SvpConsole(rack, stdout=sys.stdout)
            code, error = run_script(console, lines, args.script)
            report = build_report(rack)
            if error:   # keep the evidence: every file asked for, with what happened up to the error
                report["error"] = error
                _outputs(args, rack, report, console)
                print(f"emu: {error}", file=sys.stderr)
                return 2
            print(render_report(report))
            if console.expect_failures:
                print(f"{len(console.expect_failures)} expect(s) failed", file=sys.stderr)
            _outputs(args, rack, report, console)
            return code
    finally:
        if trace_out:
            trace_out.close()


def _outputs(args, rack, report, console) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "samples": console.samples}, indent=1, sort_keys=True,
                                              default=str))
    if args.writes:
        rack.writelog().save(args.writes)
    if args.plots:
        from controllers.operator.plots import write_plots
        write_plots({**report, "samples": console.samples}, args.plots, rack.host_stats())


def cmd_console(args) -> int:
    """A rack of its own with the console on this terminal (or stdin)."""
    from controllers.operator.console import SvpConsole, interactive, run_script
    from controllers.rack.storage import StorageRack
    with StorageRack(args.config, backend=args.backend, seed=args.seed) as rack:
        if sys.stdin.isatty():
            console = SvpConsole(rack, interactive=True)
            interactive(console)
            return 1 if console.expect_failures else 0
        console = SvpConsole(rack, stdout=sys.stdout)
        code, error = run_script(console, sys.stdin.read().splitlines(), "<stdin>")
        if error:
            print(f"emu: {error}", file=sys.stderr)
        return code


# ---------------------------------------------------------------------------- report / trace / info
def cmd_report(args) -> int:
    from controllers.operator.report import render_report, validate_report
    try:
        report = json.loads(Path(args.json).read_text())
    except json.JSONDecodeError as exc:
        raise Usage(f"emu: {args.json}:{exc.lineno}: not JSON ({exc.msg})") from None
    problems = validate_report(report)
    if problems:
        raise Usage(f"emu: {args.json}: not a run report ({problems[0]})")
    print(render_report(report))
    if args.plots:
        from controllers.operator.plots import write_plots
        write_plots(report, args.plots, None)
    return 0


def cmd_trace(args) -> int:
    from emu.trace import parse_line
    lo, hi = 0, 1 << 30
    if args.steps:
        try:
            a, _, b = args.steps.partition("-")
            lo, hi = int(a), int(b or a)
        except ValueError:
            raise Usage(f"emu trace: --steps expects A-B like 501-520, got {args.steps!r}") from None
    with open(args.file) as f:
        for number, line in enumerate(f, 1):
            try:
                rec = parse_line(line)
            except ValueError:
                raise Usage(f"emu: {args.file}:{number}: not a trace line") from None
            if args.steps and (rec["step"] is None or not lo <= rec["step"] <= hi):
                continue
            if args.pair and rec["fields"].get("pair") != args.pair and args.pair not in rec["fields"].get("pairs", []):
                continue
            t = rec["time_ns"]
            step = f"{rec['step']:>4}" if rec["step"] is not None else "    "
            fields = " ".join(f"{k}={v}" for k, v in sorted(rec["fields"].items()))
            print(f"{t / 1e6:12.6f} ms  {rec['actor']:<12} {step}  {rec['event']:<28} {fields}")
    return 0


def device_classes() -> dict:
    """KIND -> actor class: the storage devices of the registry, then the
    substrate's own example models (toy, M/M/1)."""
    import importlib
    from controllers.devices.registry import actor_classes
    from emu.actor import Actor
    out = {cls.KIND: cls for cls in actor_classes()}
    toy = importlib.import_module("emu.toy")
    for obj in vars(toy).values():
        if isinstance(obj, type) and issubclass(obj, Actor) and obj is not Actor and obj.__module__ == toy.__name__:
            out[obj.KIND] = obj
    return dict(sorted(out.items()))


def cmd_info(args) -> int:
    from tabulate import tabulate
    from emu.params import describe
    classes = device_classes()
    if not args.device:
        print(tabulate([[k, c.DOC] for k, c in classes.items()], headers=["Device", "What it is"]))
        return 0
    if args.device not in classes:
        raise Usage(f"emu info: unknown device {args.device!r} (known: {', '.join(classes)})")
    cls = classes[args.device]
    print(f"{args.device}: {cls.DOC}")
    print(tabulate(describe(cls.PARAMS), headers=["Parameter", "Kind", "Default", "Description"]))
    return 0


# ---------------------------------------------------------------------------- long-running racks
def _rack_dir(name: str) -> Path:
    from emu.backends.processes import run_root
    if not name.replace("-", "").replace("_", "").isalnum():
        raise Usage(f"emu: bad rack name {name!r} (letters, digits, - and _)")
    d = Path(run_root()) / RACKS_DIR
    d.mkdir(mode=0o700, exist_ok=True)
    for pidfile in d.glob("*.pid"):   # racks whose daemon died without `emu down`
        pid = pidfile.read_text().strip()
        if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
            pidfile.unlink(missing_ok=True)
            pidfile.with_suffix(".sock").unlink(missing_ok=True)
    return d / name


def _endpoint(name: str) -> str:
    return f"ipc://{_rack_dir(name)}.sock"


def cmd_up(args) -> int:
    from controllers.rack.storage import StorageRack
    from controllers.rack.layout import load_storage_config
    load_storage_config(args.config, args.seed)  # bad input: exit 2 before forking
    nbd_tcp = None
    if args.nbd_tcp:
        from controllers.frontends.nbd import parse_tcp
        try:
            nbd_tcp = parse_tcp(args.nbd_tcp)
        except ValueError as exc:
            raise Usage(f"emu up: {exc}") from None
    if (args.capture or nbd_tcp) and not (args.nbd or args.fuse or nbd_tcp):
        raise Usage("emu up: --capture needs a front-end (--nbd or --fuse)")
    if args.fuse:
        from controllers.frontends.fuse import fuse_missing
        why = fuse_missing()
        if why:
            raise Usage(f"emu up: --fuse: {why}")
    base = _rack_dir(args.name)
    pidfile = Path(f"{base}.pid")
    if pidfile.exists() and Path(f"/proc/{pidfile.read_text().strip()}").exists():
        raise Usage(f"emu up: a rack named {args.name!r} is already up (emu down --name {args.name})")
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        status = _read_status(r)
        if not status.startswith("ok"):
            print(f"emu up: {status}", file=sys.stderr)
            return 2
        print(f"rack {args.name} up (pid {pid}); console: emu svp --name {args.name}")
        for line in status.splitlines()[1:]:     # one line per front-end export
            print(line)
        return 0
    os.close(r)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):   # before any actor is forked: nobody keeps the caller's terminal or pipes
        os.dup2(devnull, fd)
    code = 0
    try:
        frontends = bool(args.nbd or args.fuse or nbd_tcp)
        # with front-ends the serving loop paces virtual time itself (it runs
        # by itself under --realtime), so the rack's own pacing is off
        rack = StorageRack(args.config, backend="processes", seed=args.seed,
                           realtime=None if frontends else args.realtime)
        pidfile.write_text(str(os.getpid()))
        fe = None
        if frontends:
            fe = {"nbd_socket": f"{_rack_dir(args.name)}.nbd" if (args.nbd or nbd_tcp) else None,
                  "nbd_tcp": nbd_tcp, "fuse_dir": args.fuse, "capture": args.capture, "realtime": args.realtime}
        code = _serve(rack, args.name, w, args.tcp, fe)
    except Exception as exc:   # report to the parent, never a traceback
        _write_status(w, f"{type(exc).__name__}: {exc}")
        code = 2
    finally:
        pidfile.unlink(missing_ok=True)
        os._exit(code)


def _write_status(fd: int, text: str) -> None:
    """The daemon's word to `emu up`: its length, a newline, the text (the
    actor processes inherit the pipe, so its end of file says nothing)."""
    data = text.encode()
    os.write(fd, b"%d\n" % len(data) + data)


def _read_status(fd: int) -> str:
    with os.fdopen(fd, "rb") as pipe:
        head = pipe.readline()
        if not head.strip().isdigit():
            return "the rack's daemon ended before it served"
        return pipe.read(int(head)).decode(errors="replace")


def _serve(rack, name: str, status_fd: int, tcp: str | None = None, frontends: dict | None = None) -> int:
    import io
    import threading
    from controllers.operator.console import SvpConsole
    from emu.remote import ConsoleServer, RackKeys
    fe = None
    if frontends:
        from controllers.frontends.serve import Frontends
        try:
            fe = Frontends(rack, **frontends)
        except BaseException:
            rack.close()
            raise
    if tcp:   # authenticated only: the rack's keys, and the endpoint, next to its pid file
        keys = RackKeys.generate(f"{_rack_dir(name)}.keys")
        server = ConsoleServer(f"tcp://{tcp}", lambda line: handle(line), keys)
        Path(f"{_rack_dir(name)}.endpoint").write_text(server.endpoint)
    else:
        server = ConsoleServer(_endpoint(name), lambda line: handle(line))
    stop = threading.Event()

    def handle(line: str):
        if line == "__shutdown__":
            stop.set()
            return True, "rack going down"
        if line.startswith("__complete__ "):   # the remote console's tab completion
            ask = json.loads(line.split(" ", 1)[1])
            return True, json.dumps(SvpConsole(rack, stdout=io.StringIO()).complete_line(ask["line"], ask["text"]))
        out = io.StringIO()
        console = SvpConsole(rack, stdout=out)
        console.onecmd(line)
        return not console.errors, out.getvalue().rstrip("\n")

    signal.signal(signal.SIGTERM, lambda *_: stop.set())   # `kill PID` is a clean `emu down`
    _write_status(status_fd, "\n".join(["ok"] + (fe.lines() if fe else [])))
    os.close(status_fd)
    try:
        if fe is not None:
            fe.serve_until(server, stop)
        else:
            server.serve_until(stop)
    finally:
        try:
            if fe is not None:
                fe.close()
        finally:
            server.close()
            rack.close()
        Path(_endpoint(name)[len("ipc://"):]).unlink(missing_ok=True)
        Path(f"{_rack_dir(name)}.endpoint").unlink(missing_ok=True)
        import shutil
        shutil.rmtree(f"{_rack_dir(name)}.keys", ignore_errors=True)
    return 0


def _client(name: str):
    from emu.remote import ConsoleClient, RackKeys
    tcp = Path(f"{_rack_dir(name)}.endpoint")
    if tcp.exists():
        return ConsoleClient(tcp.read_text().strip(), RackKeys(f"{_rack_dir(name)}.keys"))
    sock = Path(_endpoint(name)[len("ipc://"):])
    if not sock.exists():
        raise Usage(f"emu: no rack named {name!r} is up (emu up CONFIG --name {name})")
    return ConsoleClient(_endpoint(name))


def cmd_down(args) -> int:
    pidfile = Path(f"{_rack_dir(args.name)}.pid")
    client = _client(args.name)
    try:
        ok, text = client.request("__shutdown__")
    finally:
        client.close()
    print(text)
    if pidfile.exists():
        pid = int(pidfile.read_text().strip() or 0)
        if pid and not _wait_exit(pid, 10.0):
            os.kill(pid, signal.SIGKILL)
    return 0


def _wait_exit(pid: int, timeout_s: float) -> bool:
    """Wait for a process that is not our child to exit (a pidfd becomes
    readable when it does); True if it exited in time."""
    import select
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return True
    try:
        return bool(select.select([fd], [], [], timeout_s)[0])
    finally:
        os.close(fd)


def cmd_ps(args) -> int:
    from tabulate import tabulate
    d = _rack_dir("x").parent
    rows = []
    for pidfile in sorted(d.glob("*.pid")):
        pid = pidfile.read_text().strip()
        alive = Path(f"/proc/{pid}").exists()
        rows.append([pidfile.stem, pid, "up" if alive else "dead"])
    print(tabulate(rows, headers=["Rack", "PID", "State"]) if rows else "no racks up")
    return 0


def cmd_svp(args) -> int:
    client = _client(args.name)
    failed = False
    try:
        if args.commands:
            lines = [c.strip() for c in args.commands.split(";") if c.strip()]
        elif sys.stdin.isatty():
            return _svp_tty(client)
        else:
            lines = [ln for ln in sys.stdin.read().splitlines() if ln.split("#", 1)[0].strip()]
        for line in lines:
            ok, text = client.request(line, timeout_ms=600_000)
            print(text)
            failed = failed or not ok
    finally:
        client.close()
    return 2 if failed else 0


def _svp_tty(client) -> int:
    """The console of a running rack on this terminal: the commands and
    their completion are the local console's; each line runs in the rack."""
    import cmd as cmdmod
    try:
        import readline  # history and tab completion in cmd
        # words like --method and remote.disk4 complete whole: only blanks delimit
        readline.set_completer_delims(" \t\n")
    except ImportError:
        pass

    def ask(line: str, text: str) -> list[str]:
        """Completion comes from the rack's own console declarations."""
        return json.loads(client.request("__complete__ " + json.dumps({"line": line, "text": text}))[1])

    class Remote(cmdmod.Cmd):
        prompt = "svp> "

        def completenames(self, text, *ignored):
            return ask(text, text)

        def completedefault(self, text, line, b, e):
            return ask(line[:e], text)

        def emptyline(self):
            return False

        def default(self, line):
            if line.strip() in ("quit", "exit", "EOF"):
                return True
            print(client.request(line, timeout_ms=600_000)[1])
            return False

    Remote().cmdloop("rack console (remote); Ctrl-D leaves")
    print()
    return 0


def _quiet_on_broken_pipe(command):
    """`emu trace FILE | head`: a reader that goes away ends the output quietly, like any Unix tool."""
    def run(args) -> int:
        try:
            return command(args)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())   # the interpreter's final flush must not fail too
            return 0
    return run


COMMANDS = {"console": cmd_console, "run": cmd_run, "report": cmd_report, "trace": _quiet_on_broken_pipe(cmd_trace), "info": cmd_info,
            "up": _quiet_on_broken_pipe(cmd_up), "down": cmd_down, "ps": cmd_ps, "svp": cmd_svp}

if __name__ == "__main__":
    sys.exit(main())
