"""The SVP console: CCI-flavoured commands over a ``StorageRack``.

Interactive on a terminal (history, tab completion of commands, groups,
pairs, processes, sites and settings; ``help CMD`` with an example), plain
lines from a script or stdin otherwise. Every error is one line
(``error: ...``) and leaves the rack as it was: commands are parsed and
checked before anything is sent to the rack.
"""

from __future__ import annotations

import cmd
import shlex
import sys
from typing import Callable

from tabulate import tabulate

from controllers.operator.report import natural_key
from controllers.rack.storage import SHOW_VIEWS, CommandError, StorageRack, show_usage
from firmware.lost_tracks import format_ranges
from firmware.protocol import FENCES, METHODS, MODES, ORDERS, PAIR_STATES, SIGNAL_EVENTS, SIGNAL_STEPS
from controllers.devices.svp import SETTABLE
from emu import units
from controllers.verify.rack_verify import verify_rack

FAULT_HELP = "fault link down|up [LINK] | fault link slow FACTOR [LINK] | fault kill PROC | fault restart PROC | fault disk fail SITE:DISK | fault site SITE down"
SHOW_WHAT = tuple(SHOW_VIEWS)
STATES = PAIR_STATES


def command(complete: Callable[["SvpConsole"], list[str]] | None = None):
    """Declare a console command in one place: the method ``do_NAME`` is its
    handler, its docstring the help (usage line, what it does, an example),
    ``complete`` the words tab completion offers after the command name
    (local and remote consoles alike). ``install_completion`` wires them up."""
    def mark(handler):
        handler.complete_words = complete
        return handler
    return mark


class ExpectFailed(Exception):
    """An ``expect`` line did not hold."""


def _loss_text(runs: list[dict], most: int = 6) -> str:
    """Lost track runs of one LDEV, grouped by reason: 'tracks 0, 4-7 (why); ...'."""
    by_why: dict[str, list[int]] = {}
    for run in runs:
        by_why.setdefault(run["why"], []).extend(range(run["first"], run["last"] + 1))
    parts = []
    for why, tracks in sorted(by_why.items()):
        spans = format_ranges(tracks).split(", ")
        shown = ", ".join(spans[:most]) + (f", ... ({len(tracks)} tracks)" if len(spans) > most else "")
        parts.append(f"{'track' if len(tracks) == 1 else 'tracks'} {shown} ({why})")
    return "; ".join(parts)


class SvpConsole(cmd.Cmd):
    intro = None
    prompt = "svp> "

    def __init__(self, rack: StorageRack, stdin=None, stdout=None, interactive: bool = False):
        super().__init__(stdin=stdin, stdout=stdout)
        self.use_rawinput = interactive
        self.rack = rack
        self.interactive = interactive
        self.expect_failures: list[str] = []
        self.errors: list[str] = []
        self.last_report: dict | None = None
        self.samples: list[dict] = []   # pair states after each run step (for plots)

    # -- plumbing -----------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def emptyline(self):
        return False   # never repeat the last command (dangerous after a fault)

    def default(self, line):
        word = line.split()[0] if line.split() else line
        self._error(f"unknown command {word!r} (type 'help')")

    def _error(self, text: str) -> None:
        self.errors.append(text)
        self.say(f"error: {text}")

    def onecmd(self, line):
        line = line.split("#", 1)[0].strip()
        if not line:
            return False
        try:
            return super().onecmd(line)
        except (CommandError, ValueError) as exc:
            # bad input (ValueError: a unit or a setting that does not parse);
            # anything else is our bug and stops the console loudly
            self._error(str(exc).strip("'\""))
        except ExpectFailed as exc:
            self.expect_failures.append(str(exc))
            self.say(f"expect failed: {exc}")
        finally:
            for notice in self.rack.notices:   # a process death is never silent
                self.say(notice)
            self.rack.notices.clear()
        return False

    def _complete(self, text, words):
        return [w for w in words if w.startswith(text)]

    def _targets(self):
        return sorted(self.rack.groups) + sorted(self.rack.pairs)

    def complete_line(self, line: str, text: str) -> list[str]:
        """Completion of ``text`` at the end of ``line`` (the remote console asks this)."""
        words = line.split()
        if not words or (len(words) == 1 and not line.endswith(" ")):
            return [n for n in console_commands() if n.startswith(text)]
        completer = getattr(self, f"complete_{words[0]}", None)
        return completer(text, line, len(line) - len(text), len(line)) if completer else []

    @staticmethod
    def _args(arg: str) -> list[str]:
        try:
            return shlex.split(arg)
        except ValueError as exc:
            raise ValueError(f"cannot parse arguments: {exc}") from None

    @staticmethod
    def _options(words: list[str], allowed: dict[str, str]) -> tuple[list[str], dict]:
        """Split ``--key value`` options (names in ``allowed``) from positionals."""
        pos, opts, i = [], {}, 0
        while i < len(words):
            w = words[i]
            if w.startswith("--"):
                key = w[2:]
                if key not in allowed:
                    raise ValueError(f"unknown option {w} (known: {', '.join('--' + k for k in allowed)})")
                if i + 1 >= len(words):
                    raise ValueError(f"option {w} needs a value ({allowed[key]})")
                opts[key] = words[i + 1]
                i += 2
            else:
                pos.append(w)
                i += 1
        return pos, opts

    # -- pair commands ----------------------------------------------------------------------
    @command(complete=lambda c: c._targets() + ["--mode", "--fence", *MODES, *FENCES])
    def do_paircreate(self, arg):
        """paircreate GROUP|PAIR [--mode sync|async] [--fence data|status|never]
        Form pairs and start the initial copy (patent 350-353).
        Example: paircreate g0 --mode sync"""
        pos, opts = self._options(self._args(arg), {"mode": "sync|async", "fence": "data|status|never"})
        if len(pos) != 1:
            raise ValueError("usage: paircreate GROUP|PAIR [--mode sync|async] [--fence data|status|never]")
        if opts.get("mode", "sync") not in MODES:
            raise ValueError(f"--mode expects sync or async, got {opts['mode']!r}")
        if opts.get("fence", "never") not in FENCES:
            raise ValueError(f"--fence expects data, status or never, got {opts['fence']!r}")
        self.rack.resolve(pos[0])
        out = self.rack.paircreate(pos[0], opts.get("mode"), opts.get("fence"))
        self.say(f"paircreate {pos[0]}: {', '.join(out.get('pairs', []))} -> COPY")

    @command(complete=lambda c: c._targets())
    def do_pairdisplay(self, arg):
        """pairdisplay [GROUP|PAIR]
        Pair states as the master sees them.
        Example: pairdisplay g0"""
        pos = self._args(arg)
        if len(pos) > 1:
            raise ValueError("usage: pairdisplay [GROUP|PAIR]")
        rows = self.rack.pairdisplay(pos[0] if pos else None)
        table = [[r.get("group"), r.get("name"), r.get("m"), r.get("r"),
                  "P" if r.get("role") == "master" else "S", r.get("state"), r.get("fence", "-"),
                  r.get("copy_pct", "-"), r.get("diff_tracks", "-")] for r in rows]
        self.say(tabulate(table, headers=["Group", "Pair", "M LDEV", "R LDEV", "P/S", "Status", "Fence",
                                          "Copy%", "Diff tracks"]))

    @command(complete=lambda c: c._targets() + ["-S"])
    def do_pairsplit(self, arg):
        """pairsplit GROUP | pairsplit -S GROUP
        Split pairs (PSUS), or with -S delete them (SMPL).
        Example: pairsplit -S g0"""
        words = self._args(arg)
        delete = "-S" in words
        pos = [w for w in words if w != "-S"]
        if len(pos) != 1:
            raise ValueError("usage: pairsplit [-S] GROUP|PAIR")
        self.rack.resolve(pos[0])
        self.rack.pairsplit(pos[0], delete)
        self.say(f"pairsplit {pos[0]}: {'SMPL' if delete else 'PSUS'}")

    @command(complete=lambda c: c._targets() + ["--max-time", "--method", "--order", "--window", "--unit",
                                                "--format-shortcut", *METHODS, *ORDERS])
    def do_pairresync(self, arg):
        """pairresync GROUP [--max-time T] [--method save-old|stage-new|none] [--order bitmap|time] [--window W] [--unit ldev|group]
        Start the recovery copy (patent 401-413); unset options come from the SVP (set ...).
        Example: pairresync g0 --max-time 2s --method save-old --window 32"""
        pos, opts = self._options(self._args(arg), {"max-time": "duration", "method": "save-old|stage-new|none",
                                                    "order": "bitmap|time", "window": "1..4096",
                                                    "unit": "ldev|group", "format-shortcut": "on|off"})
        if len(pos) != 1:
            raise ValueError("usage: pairresync GROUP [--max-time T] [--method M] [--order O] [--window W] [--unit U]")
        from controllers.devices.svp import convert_setting
        kw = {}
        if "max-time" in opts:
            kw["max_time_ns"] = convert_setting("max_time", opts["max-time"])
        for key in ("method", "order", "unit"):
            if key in opts:
                kw[key] = convert_setting(key, opts[key])
        if "window" in opts:
            kw["window"] = convert_setting("window", opts["window"])
        if "format-shortcut" in opts:
            kw["format_shortcut"] = convert_setting("format_shortcut", opts["format-shortcut"])
        self.rack.resolve(pos[0])
        out = self.rack.pairresync(pos[0], **kw)
        self.say(f"pairresync {pos[0]}: recovery copy started for {', '.join(out.get('pairs', []))}")

    @command(complete=lambda c: c._targets())
    def do_horctakeover(self, arg):
        """horctakeover GROUP|PAIR
        Make the remote's R-DEVs writable (SSWS). A recovery copy in progress is rolled
        back first: its pairs become SSWS when the rollback ends (run until recovery.rolled_back).
        Example: horctakeover g0"""
        pos = self._args(arg)
        if len(pos) != 1:
            raise ValueError("usage: horctakeover GROUP|PAIR")
        self.rack.resolve(pos[0])
        out = self.rack.horctakeover(pos[0])
        waiting = [r["waiting_for_rollback"] for r in out["results"] if r.get("waiting_for_rollback")]
        for w in waiting:
            self.say(f"horctakeover {pos[0]}: rolling back recovery copy {w['sid']} first "
                     f"({w['tracks_left']} tracks to restore); {', '.join(w['pairs'])} become SSWS when it ends")
        if not waiting:
            self.say(f"horctakeover {pos[0]}: SSWS")

    # -- settings -------------------------------------------------------------------------------
    @command(complete=lambda c: sorted(SETTABLE) + [f"{ln}.{k}" for ln in sorted(c.rack.links)
                                                     for k in ("bandwidth", "latency")])
    def do_set(self, arg):
        """set KEY VALUE
        Change an SVP setting: max_time, method, order, window, unit, keep_raid5, spares_usable,
        format_shortcut, cache_save_threshold; or a link's LINK.bandwidth / LINK.latency (it can grow, not
        shrink below its configured propagation).
        Example: set max_time 500ms"""
        pos = self._args(arg)
        if len(pos) != 2:
            raise ValueError(f"usage: set KEY VALUE (keys: {', '.join(sorted(SETTABLE))})")
        self.rack.set(pos[0], pos[1])
        self.say(f"set {pos[0]} = {pos[1]}")

    @command(complete=lambda c: list(SHOW_WHAT))
    def do_show(self, arg):
        """show config|recovery-plan|save-area|bitmap LDEV|queue LDEV|disks|cache|time|nbd [--json]
        A table where one is defined (recovery-plan, disks, processes, bitmap), JSON
        otherwise; --json prints JSON always (for scripts).
        Example: show recovery-plan"""
        pos = self._args(arg)
        as_json = "--json" in pos
        pos = [p for p in pos if p != "--json"]
        if not pos or pos[0] not in SHOW_WHAT:
            raise ValueError(f"usage: show {'|'.join(show_usage())} [--json]")
        out = self.rack.show(pos[0], pos[1] if len(pos) > 1 else None)
        text = _show_json(out) if as_json else SHOW_FORMATS.get(pos[0], _show_json)(out)
        if text:
            self.say(text)

    # -- faults ------------------------------------------------------------------------------------
    @command(complete=lambda c: ["link", "kill", "restart", "disk", "site", "down", "up", "fail", "slow"]
             + sorted(c.rack.links) + [a.name for a in c.rack.spec.actors] + sorted(c.rack.sites))
    def do_fault(self, arg):
        """fault link down|up [LINK] | fault link slow FACTOR [LINK] | fault kill PROC | fault restart PROC | fault disk fail SITE:DISK | fault site SITE down
        Break the rack on purpose.
        Example: fault site main down"""
        w = self._args(arg)
        if len(w) >= 2 and w[0] == "link" and w[1] in ("up", "down") and len(w) <= 3:
            self.rack.fault_link(w[1], w[2] if len(w) == 3 else None)
        elif len(w) in (3, 4) and w[:2] == ["link", "slow"]:
            if not w[2].isdigit():
                raise ValueError(f"fault link slow expects an integer factor, got {w[2]!r}")
            self.rack.fault_link_slow(int(w[2]), w[3] if len(w) == 4 else None)
        elif len(w) == 2 and w[0] in ("kill", "restart"):
            (self.rack.fault_kill if w[0] == "kill" else self.rack.fault_restart)(w[1])
        elif len(w) == 3 and w[:2] == ["disk", "fail"] and ":" in w[2]:
            site, _, disk = w[2].partition(":")
            if not disk.isdigit():
                raise ValueError(f"expected SITE:DISK like main:1, got {w[2]!r}")
            self.rack.fault_disk_fail(site, int(disk))
        elif len(w) == 3 and w[0] == "site" and w[2] == "down":
            self.rack.fault_site_down(w[1])
        else:
            raise ValueError(f"usage: {FAULT_HELP}")
        self.say(f"fault {' '.join(w)}: done at {units.fmt_ns(self.rack.now_ns)}")

    # -- load -----------------------------------------------------------------------------------------
    @command(complete=lambda c: ["start", "stop", "rw=", "bs=", "iodepth=", "ldevs=", "seed=", "site="])
    def do_workload(self, arg):
        """workload start NAME SPEC | workload stop NAME
        SPEC is fio-style key=value: rw bs iodepth rate_iops ldevs runtime zipf seed [site=NAME],
        or a trace replay: trace=PATH format=msr|mqsim|tencent [scale=F].
        Example: workload start w1 rw=randwrite bs=4KiB iodepth=4 ldevs=0-3 seed=7"""
        w = self._args(arg)
        if len(w) >= 3 and w[0] == "start":
            self.rack.workload_start(w[1], " ".join(w[2:]))
            self.say(f"workload {w[1]} started")
        elif len(w) == 2 and w[0] == "stop":
            self.rack.workload_stop(w[1])
            self.say(f"workload {w[1]} stopped")
        else:
            raise ValueError("usage: workload start NAME SPEC | workload stop NAME")

    @command()
    def do_phase(self, arg):
        """phase NAME
        Start a new report phase (latency and throughput are reported per phase).
        Example: phase resync"""
        pos = self._args(arg)
        if len(pos) != 1:
            raise ValueError("usage: phase NAME")
        self.rack.phase(pos[0])
        self.say(f"phase {pos[0]} at {units.fmt_ns(self.rack.now_ns)}")

    # -- time --------------------------------------------------------------------------------------------
    @command(complete=lambda c: ["until", "IDLE"] + sorted({*SIGNAL_STEPS.values(), *SIGNAL_EVENTS.values()}))
    def do_run(self, arg):
        """run DURATION | run until IDLE|EVENT [LIMIT]
        Advance virtual time. Events: pair.mirroring, recovery.reached, recovery.complete,
        recovery.timeout, recovery.restored (each restored track), recovery.rolled_back
        (the remote's rollback is over), recovery.remote_done.
        Example: run 200ms"""
        w = self._args(arg)
        if len(w) == 1:
            duration = units.time_ns(w[0])
            if self.interactive and self.stdout.isatty():
                self._run_with_progress(duration)
            else:
                self.rack.run(duration)
            self.say(f"time {units.fmt_ns(self.rack.now_ns)}  {self._progress()}")
        elif len(w) in (2, 3) and w[0] == "until":
            limit = units.time_ns(w[2]) if len(w) == 3 else 3_600 * 10 ** 9
            t = self.rack.run_until(w[1], limit)
            if t is None:
                self.say(f"time {units.fmt_ns(self.rack.now_ns)}: {w[1]} did not happen within {units.fmt_ns(limit)}")
            else:
                self.say(f"time {units.fmt_ns(self.rack.now_ns)}: {w[1]} at {units.fmt_ns(t)}")
        else:
            raise ValueError("usage: run DURATION | run until IDLE|EVENT [LIMIT]")
        self._sample()

    def _diff_tracks(self) -> int:
        try:
            return sum(r.get("diff_tracks", 0) or 0 for r in self.rack.pairdisplay())
        except CommandError:
            return 0

    def _run_with_progress(self, duration_ns: int, steps: int = 20) -> None:
        """On a terminal: run in slices and redraw one line with the recovery
        copy's progress (tracks done / total, rate, ETA in virtual time)."""
        start_diff, t0 = self._diff_tracks(), self.rack.now_ns
        end = t0 + duration_ns
        while self.rack.now_ns < end:
            self.rack.run(min(max(1, duration_ns // steps), end - self.rack.now_ns))
            left = self._diff_tracks()
            done = max(0, start_diff - left)
            elapsed_s = max(1, self.rack.now_ns - t0) / 1e9
            rate = done / elapsed_s
            eta = f"{left / rate:.3f}s" if rate > 0 and left else "-"
            self.stdout.write(f"\r  {units.fmt_ns(self.rack.now_ns)}  tracks {done}/{start_diff}  "
                              f"{rate:.0f} tracks/s  ETA {eta}   ")
            self.stdout.flush()
        self.stdout.write("\n")

    def _progress(self) -> str:
        """One plain line of pair states (scripts) and copy progress."""
        try:
            rows = self.rack.pairdisplay()
        except CommandError:
            return ""
        states: dict[str, int] = {}
        diff = 0
        for r in rows:
            states[r["state"]] = states.get(r["state"], 0) + 1
            diff += r.get("diff_tracks", 0) or 0
        return "pairs " + " ".join(f"{k}:{v}" for k, v in sorted(states.items())) + f"  diff tracks {diff}"

    def _sample(self) -> None:
        try:
            rows = self.rack.pairdisplay()
        except CommandError:
            rows = []
        try:
            save = {site: {"saved": sa.get("saved_nodes", 0), "cache": sa.get("cache_tracks", 0)}
                    for site, sa in self.rack.show("save-area").items()}
        except CommandError:
            save = {}
        self.samples.append({"time_ns": self.rack.now_ns, "save_area": save,
                             "pairs": {r["name"]: [r["state"], r.get("diff_tracks", 0)] for r in rows}})

    # -- checks ---------------------------------------------------------------------------------------------
    @command()
    def do_verify(self, arg):
        """verify
        Check every remote image: dependent-write consistency per unit, and per pair
        whether it equals its suspension-time image or the master.
        Example: verify"""
        if self._args(arg):
            raise ValueError("usage: verify")
        v = verify_rack(self.rack)
        self.say(f"verify: {'consistent' if v['consistent'] else 'INCONSISTENT'} "
                 f"(unit {v['unit']}, {v['writes']} writes in the log)")
        for g in v.get("skipped", []):
            self.say(f"  group {g['group']}: not checked ({g['reason']})")
        for u in v.get("unjudged", []):
            self.say(f"  pair {u['pair']} ({u['site']} ldev {u['ldev']}): not judged, {u['reason']}")
        for g in v["groups"]:
            for loss in g.get("data_loss", []):
                self.say(f"  group {g['group']}: DATA LOSS at {loss['site']} ldev {loss['ldev']} (pair {loss['pair']}): "
                         + _loss_text(loss["tracks"]))
            if g.get("data_loss"):
                if not g.get("units"):
                    continue
                self.say(f"  group {g['group']}: the other LDEVs: "
                         f"{'consistent' if g['consistent'] else 'INCONSISTENT'}"
                         + ("" if g["consistent"] else f"; {'; '.join(g['reasons'][:3])}"))
                continue
            self.say(f"  group {g['group']}: {'consistent' if g['consistent'] else 'INCONSISTENT'}; "
                     f"acknowledged writes missing {g.get('missing_acked', 0)}"
                     + ("" if g["consistent"] else f"; {'; '.join(g['reasons'][:3])}"))

    @command(complete=lambda c: ["pair", "state", "consistent", "inconsistent", "equals-suspension"]
             + c._targets() + list(STATES))
    def do_expect(self, arg):
        """expect pair P STATE | expect state GROUP STATE | expect consistent | expect inconsistent | expect equals-suspension P
        A self-check: a failed expect is reported and makes `emu run` exit 1.
        Example: expect pair p0 PAIR"""
        w = self._args(arg)
        if len(w) == 3 and w[0] == "pair":
            if w[2] not in STATES:
                raise ValueError(f"unknown state {w[2]!r} (one of {', '.join(STATES)})")
            got = self.rack.pair_state(w[1])
            if got != w[2]:
                raise ExpectFailed(f"pair {w[1]} is {got}, expected {w[2]}")
        elif len(w) == 3 and w[0] == "state":
            if w[2] not in STATES:
                raise ValueError(f"unknown state {w[2]!r} (one of {', '.join(STATES)})")
            got = {r["name"]: r["state"] for r in self.rack.pairdisplay(w[1])}
            bad = {p: s for p, s in got.items() if s != w[2]}
            if bad:
                raise ExpectFailed(f"group {w[1]}: {bad} expected {w[2]}")
        elif w in (["consistent"], ["inconsistent"]):
            v = verify_rack(self.rack)
            if v.get("unjudged"):
                raise ExpectFailed(f"the stamp checker cannot judge {len(v['unjudged'])} LDEV(s) written with "
                                   "client bytes (emu check/sweep --check APP judges them)")
            if v["consistent"] != (w[0] == "consistent"):
                raise ExpectFailed(f"the remote is {'consistent' if v['consistent'] else 'inconsistent'}, "
                                   f"expected {w[0]}")
        elif len(w) == 2 and w[0] == "equals-suspension":
            v = verify_rack(self.rack)
            facts = v["pairs"].get(w[1])
            if facts is None or "equals_suspension_image" not in facts:
                raise ValueError(f"no suspension image known for pair {w[1]!r} (was it resynced?)")
            if not facts["equals_suspension_image"]:
                raise ExpectFailed(f"pair {w[1]}'s remote image differs from its suspension-time image")
        else:
            raise ValueError("usage: expect pair P STATE | expect state GROUP STATE | expect consistent | "
                             "expect inconsistent | expect equals-suspension P")
        self.say(f"expect {' '.join(w)}: ok")

    @command()
    def do_report(self, arg):
        """report
        Print the report tables (phases, devices, recovery copies, verify).
        Example: report"""
        from controllers.operator.report import build_report, render_report
        self.last_report = build_report(self.rack)
        self.say(render_report(self.last_report))

    @command(complete=lambda c: sorted(c.rack.sites))
    def do_export(self, arg):
        """export SITE:LDEV FILE
        Write the raw bytes of one LDEV image to FILE.
        Example: export remote:0 /tmp/r0.img"""
        w = self._args(arg)
        if len(w) != 2 or ":" not in w[0] or not w[0].partition(":")[2].isdigit():
            raise ValueError("usage: export SITE:LDEV FILE")
        site, _, ldev = w[0].partition(":")
        out = self.rack.export(site, int(ldev), w[1])
        self.say(f"export {w[0]}: {out['bytes']} bytes -> {w[1]}")

    @command()
    def do_quit(self, arg):
        """quit
        Leave the console (Ctrl-D too)."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg):
        if self.interactive:
            self.say("")
        return True


def _install_completion(console_cls) -> None:
    """complete_NAME for every declared command (cmd.Cmd looks them up by name)."""
    for name in console_commands():
        words = getattr(getattr(console_cls, f"do_{name}"), "complete_words", None)   # help: cmd.Cmd's own
        if words is not None:
            setattr(console_cls, f"complete_{name}",
                    lambda self, text, line, b, e, words=words: self._complete(text, words(self)))


def console_commands() -> list[str]:
    """The command names, from the declarations."""
    return sorted(n[3:] for n in dir(SvpConsole) if n.startswith("do_") and n != "do_EOF")


_install_completion(SvpConsole)


def _show_json(out: dict) -> str:
    import json
    return json.dumps(out, indent=1, sort_keys=True, default=str)


def _show_disks(out: dict) -> str:
    return tabulate([[n, d["role"], d["ios"], d["busy_pct"], d["queue_max"], d["failed"]]
                     for n, d in sorted(out.items(), key=lambda kv: natural_key(kv[0]))],
                    headers=["Disk", "Role", "I/Os", "Busy %", "Queue max", "Failed"])


def _show_bitmap(out: dict) -> str:
    return "\n".join(f"{pair}: {len(tracks)} tracks set: {_ranges(tracks) or '-'}"
                     for pair, tracks in sorted((k, v) for k, v in out.items() if k != "ok"))


def _show_processes(out: dict) -> str:
    return tabulate([[p["name"], p["pid"] if p["pid"] is not None else "-", "up" if p["alive"] else "DOWN",
                      p["restarts"]] for p in out["processes"]], headers=["Process", "PID", "State", "Restarts"])


def _show_recovery_plan(out: dict) -> str:
    """Step 404 per group (save places, n and what limits it), then the copies running now."""
    lines = []
    for plan in out.get("groups", []):
        head = f"group {plan['group']}: {plan['master']} -> {plan['remote']}"
        if plan.get("error"):
            lines.append(f"{head}: no plan ({plan['error']})")
            continue
        head += f", method {plan['method']}"
        lines.append(f"{head}; suspended {len(plan['suspended'])}/{plan['pairs']} pairs, "
                     f"{plan['diff_tracks']} tracks to copy (largest pair {plan['largest_pair_tracks']})")
        lines.append(tabulate([[p["place"], p["tracks"], "yes" if p["usable"] else "no"] for p in plan["places"]],
                              headers=["Save place", "Tracks", "Usable"]))
        lines.append(f"capacity {plan['capacity_tracks']} tracks; {plan['n_limit']}; "
                     f"{plan['pairs_at_once']} pairs at once"
                     + (f"; pairresync would be REFUSED: {plan['refused']}" if plan["refused"] else ""))
    sessions = [(site, s) for site, v in sorted(out.items()) if site != "groups" for s in v.get("sessions", [])]
    if sessions:
        lines.append(tabulate([[site, s["sid"], s["kind"], s["remote"], s["phase"], s["plan"].get("n_used", "-"),
                                s["window"], ",".join(s["active"]) or "-", ",".join(s["reached"]) or "-",
                                ",".join(s["waiting"]) or "-"] for site, s in sessions],
                              headers=["Site", "Copy", "Kind", "Remote", "Phase", "n", "Window", "Active",
                                       "Reached", "Waiting"]))
    else:
        lines.append("no copy running")
    for site, v in sorted(out.items()):
        if site != "groups" and v.get("last_remote"):
            last = v["last_remote"]
            lines.append(f"{site}: last recovery copy {last['sid']} {last['outcome']}"
                         + (f", rolled back {','.join(last.get('rolled_back', []))}" if last.get("rolled_back") else ""))
    return "\n".join(lines)


#: how ``show X`` prints each view of ``SHOW_VIEWS`` (JSON unless named here, or with --json)
def _show_nbd(out: dict) -> str:
    """One line per export, as ``emu up --nbd`` prints them."""
    rows = out["exports"]
    if not rows:
        return "no front-end is serving (emu up CONFIG --nbd)"
    lines = [f"nbd {r['export']} {r['uri']}" + (f" {r['tcp_uri']}" if r.get("tcp_uri") else "") for r in rows
             if r.get("uri")]
    lines += [f"fuse {r['export']} {r['file']}" for r in rows if r.get("file")]
    return "\n".join(lines)


SHOW_FORMATS = {"time": lambda out: f"time {out['now']} ({out['now_ns']} ns)", "disks": _show_disks, "nbd": _show_nbd,
                "bitmap": _show_bitmap, "processes": _show_processes, "recovery-plan": _show_recovery_plan}


def _ranges(values) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'."""
    out, vals = [], sorted(int(v) for v in values)
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        out.append(f"{vals[i]}-{vals[j]}" if j > i else f"{vals[i]}")
        i = j + 1
    return ",".join(out)


def run_script(console: SvpConsole, lines: list[str], source: str) -> tuple[int, str | None]:
    """Play a script; returns (exit code, error line). A command error stops
    the script with exit 2 naming ``source:LINE``; a failed expect is counted
    and the script goes on (exit 1 at the end)."""
    for number, raw in enumerate(lines, 1):
        before = len(console.errors)
        if raw.split("#", 1)[0].strip():
            console.say(f"svp> {raw.rstrip()}")
        console.onecmd(raw)
        if len(console.errors) > before:
            return 2, f"{source}:{number}: {console.errors[-1]}"
    return (1 if console.expect_failures else 0), None


def interactive(console: SvpConsole) -> None:
    """A terminal session with readline history and completion."""
    try:
        import readline  # history and tab completion in cmd
        # words like --method and remote.disk4 complete whole: only blanks delimit
        readline.set_completer_delims(" \t\n")
    except ImportError:
        pass
    console.cmdloop("rack emulator SVP console; 'help' lists commands, Ctrl-D leaves")


if __name__ == "__main__":   # pragma: no cover
    sys.exit("use: emu svp / emu run")
