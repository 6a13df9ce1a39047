"""The ``processes`` backend: one OS process per actor, ZeroMQ between them.

Supervisor: creates a private 0700 run directory, starts one process per
actor by forking after the actor modules are imported (a child costs a few
ms; each child makes its own ZeroMQ context and never uses the parent's), watches them,
kills and restarts them, and removes every process, socket file and segment
at ``close`` (and, through PDEATHSIG and the resource tracker, when the
supervisor itself dies).

Coordinator (conservative synchronisation, star topology): it knows every
actor's next event time and the least link latency dist(S, A) between every
two actors. Each round it grants actor A the horizon
``H(A) = min_S next(S) + dist(S, A)`` together with A's inbound messages, to
every actor with work below its horizon; each granted actor handles all its
events below H(A) in (time, source, sequence) order and answers once with
its next event time, outbound messages, trace records and signals. Two
frames per active actor per round, however many events it handled.

A bug in an actor's handler ends its process with an ERROR frame naming
the actor, the event and the virtual time; the coordinator raises it as
``ActorFailed``, as the inline backend does.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

import numpy as np
import setproctitle

from emu import wire
from emu.fabric import FABRICS, CoordinatorFabric, LinkLost, actor_end
from emu.actor import NEVER_NS, ActorHost
from emu.backends.base import ActorFailed, Backend, RackError, call_handler, event_failed, make_host
from emu.forks import die_with_parent
from emu.shm import SharedRegion
from emu.spec import UNREACHABLE_NS, RackSpec
from emu.wire import Cmd

REPLY_TIMEOUT_S = 120.0       # a round taking this long means a stuck actor
LIVENESS_POLL_MS = 100        # how often a waiting coordinator checks for dead children
BASE_PRELOAD = ["emu.backends.processes", "numpy", "zmq", "msgpack"]
#: which links join the coordinator and its actors (``emu.fabric``); env EMU_FABRIC
DEFAULT_FABRIC = "unix"
_mp_ctx = None
#: actor modules whose ``warm_up`` has run in this process
_warmed: set[str] = set()


def run_root() -> str:
    """Per-user directory that holds each rack's private run directory.
    Run directories of supervisors that no longer exist (a crashed run) are
    swept away here, so a crash never leaves socket files behind for long."""
    root = os.path.join(tempfile.gettempdir(), f"emu-{os.getuid()}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    for name in os.listdir(root):
        pid = name.split("_", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return root


def _context(preload: list[str]):
    """Fork, with the actor modules imported first so a child costs a few ms.

    A forkserver would re-import the caller's ``__main__`` in every child
    (slow, and wrong for scripts without a main guard); forking this process
    is safe because a child never touches the parent's ZeroMQ context: it
    makes its own when its link is ZeroMQ (``emu.fabric.actor_end``), and
    pyzmq ignores inherited sockets.

    An actor module may define ``warm_up()``: work every one of its actors
    would otherwise repeat at start in its own process (compiling numba
    kernels and typed lists, say). It runs here once per module, so the
    children inherit the result with the fork.
    """
    global _mp_ctx
    for module in sorted(set(BASE_PRELOAD + preload)):
        mod = importlib.import_module(module)
        if module not in _warmed and callable(getattr(mod, "warm_up", None)):
            mod.warm_up()
            _warmed.add(module)
    if _mp_ctx is None:
        _mp_ctx = mp.get_context("fork")
    return _mp_ctx


def _enc(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot send {type(obj).__name__} over the fabric")


def _pack(cmd: Cmd, body) -> bytes:
    import msgpack
    payload = msgpack.packb(body, use_bin_type=True, default=_enc)
    return wire.HEADER.pack(wire.MAGIC, int(cmd), 0, 0, len(payload)) + payload


# ---------------------------------------------------------------------------
# actor process
# ---------------------------------------------------------------------------
def worker_main(job: dict) -> None:
    """Entry point of one actor process."""
    # ps/top tell the devices apart: emu:RACK:ACTOR (setproctitle rewrites argv,
    # which ps shows; prctl's 15-character comm name would not fit)
    setproctitle.setproctitle(f"emu:{job['rack']}:{job['name']}")
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = actor_end(job.pop("link"), job["name"])
    regions = {name: SharedRegion.attach(seg, name, size) for seg, name, size in job["regions"]}
    host = make_host(job, regions)
    drops = wire.DropCounter(job["name"], log=lambda m: print(m, file=sys.stderr))
    sock.send(_pack(Cmd.HELLO, [job["name"], os.getpid()]))
    try:
        if os.environ.get("EMU_PROFILE_DIR"):
            import cProfile
            prof = cProfile.Profile()
            try:
                prof.runcall(_worker_loop, sock, host, drops)
            finally:
                prof.dump_stats(os.path.join(os.environ["EMU_PROFILE_DIR"], job["name"] + ".prof"))
        else:
            _worker_loop(sock, host, drops)
    except LinkLost:
        pass   # the coordinator is gone: nobody to tell
    except ActorFailed as exc:
        sock.send(_pack(Cmd.ERROR, _failure_body(exc, traceback.format_exc())))
    except Exception:
        sock.send(_pack(Cmd.ERROR, [f"{job['name']}: {traceback.format_exc()}"]))
    finally:
        sock.close()


def _worker_loop(sock, host: ActorHost, drops: wire.DropCounter) -> None:
    while True:
        frame = sock.recv()
        try:
            cmd, _seq, body = wire.decode(frame)
            if not _well_formed(cmd, body):
                raise wire.WireError(f"unexpected {cmd!r} for an actor, or malformed body")
        except wire.WireError as exc:
            drops.drop(str(exc))
            continue
        if cmd == Cmd.STOP:
            return
        if cmd == Cmd.QUERY:
            answer = call_handler(host, f"query {body[0].get('q')!r}", host.actor.on_query, body[0])
            answer = dict(answer) if isinstance(answer, dict) else {"answer": answer}
            answer.setdefault("_dropped_frames", drops.dropped)
            sock.send(_pack(Cmd.REPLY, [answer]))
            continue
        if cmd == Cmd.GRANT:
            horizon_ns, events = body
            for ev in events:
                host.push(tuple(ev))
            _run_until(host, horizon_ns)
            call_handler(host, "checkpoint", host.checkpoint)
            floors = call_handler(host, "send_floors", host.report_floors)
            sock.send(_pack(Cmd.DONE, [host.next_timer_ns(), host.next_message_ns(), host.take_outbox(),
                                       host.take_records(), _take_signals(host), host.events_handled, floors]))
            continue
        now_ns, command = body  # CONTROL
        if command.get("cmd") == "__start__":
            restart = bool(command.get("restart"))
            call_handler(host, "restart" if restart else "start", host.start, restart)
            result = {"ok": True}
        else:
            result = call_handler(host, f"control {command.get('cmd')!r}", host.control, now_ns, command)
        floors = call_handler(host, "send_floors", host.report_floors)
        sock.send(_pack(Cmd.REPLY, [result, host.next_timer_ns(), host.next_message_ns(), host.take_outbox(),
                                    host.take_records(), _take_signals(host), floors, host.promise_row()]))


def _run_until(host: ActorHost, horizon_ns: int) -> int:
    """``host.run_until(horizon_ns)``, with a handler's exception raised as
    ``ActorFailed`` naming the event."""
    pop = host.pop_before
    while (event := pop(horizon_ns)) is not None:
        try:
            host.dispatch(event)
        except Exception as exc:
            raise event_failed(host, event, exc) from exc
    return host.next_ns()


def _failure_body(exc: ActorFailed, tb: str) -> list:
    """The ERROR frame of a failed handler: [text, actor, event, time_ns, cause, traceback]."""
    return [f"{exc}\n{tb}", exc.actor, exc.event, exc.time_ns, exc.cause, tb]


def _error_of(body) -> RackError:
    """The exception an actor's ERROR frame stands for (``ActorFailed`` when
    it names the actor, event and time; untrusted, so shape-checked)."""
    if (isinstance(body, list) and len(body) == 6 and all(isinstance(x, str) for x in body[1:3])
            and isinstance(body[3], int) and all(isinstance(x, str) for x in body[4:])):
        _text, actor, event, time_ns, cause, tb = body
        return ActorFailed(actor, event, time_ns, cause, remote_traceback=tb)
    return RackError(str(body[0]) if isinstance(body, list) and body else "actor error")


def _well_formed(cmd, body) -> bool:
    """Shape check of a decoded frame to an actor: a bad peer frame is
    dropped and counted, never allowed to raise inside the actor loop."""
    if not isinstance(body, list):
        return False
    if cmd == Cmd.STOP:
        return True
    if cmd == Cmd.QUERY:
        return len(body) == 1 and isinstance(body[0], dict)
    if cmd == Cmd.CONTROL:
        return len(body) == 2 and isinstance(body[0], int) and isinstance(body[1], dict)
    if cmd == Cmd.GRANT:
        return (len(body) == 2 and isinstance(body[0], int) and isinstance(body[1], list)
                and all(isinstance(ev, list) and len(ev) == 5 and isinstance(ev[0], int)
                        and isinstance(ev[1], int) and isinstance(ev[2], int) and isinstance(ev[3], str)
                        for ev in body[1]))
    return False


def _take_signals(host: ActorHost) -> list:
    out = [[t, host.actor.name, n] for t, n in host.signals]
    host.signals.clear()
    return out


# ---------------------------------------------------------------------------
# supervisor + coordinator
# ---------------------------------------------------------------------------
class ProcessesBackend(Backend):
    name = "processes"

    def __init__(self, spec: RackSpec, typed: dict[str, dict], regions: dict, sink,
                 record_trace=True, rack_id: str = "rack", preload: list[str] | None = None):
        super().__init__(spec, typed, regions, sink, record_trace)
        self.names = [a.name for a in spec.actors]
        n = len(self.names)
        #: lat[S, Y]: link latency S -> Y (UNREACHABLE_NS where there is no link)
        self.lat = np.full((n, n), UNREACHABLE_NS, dtype=np.int64)
        for name, row in self.latency.items():
            for d, ns in row.items():
                self.lat[self.index_of[name], d] = ns
        self.edge = self.lat < UNREACHABLE_NS
        #: the actors' promises (``emu.actor.Promise``), as reported after each start
        self.reaction = np.zeros(n, dtype=np.int64)
        self.min_delay = np.zeros((n, n), dtype=np.int64)
        #: floor_lat[S, Y]: S's dynamic floor towards Y plus the latency (0: none)
        self.floor_lat = np.zeros((n, n), dtype=np.int64)
        self._paths()
        #: per actor, as it last reported: its next timer, its next message not yet handled
        self.timer_next = np.full(n, NEVER_NS, dtype=np.int64)
        self.msg_next = np.full(n, NEVER_NS, dtype=np.int64)
        self.pending: list[list] = [[] for _ in range(n)]
        self.pending_min = np.full(n, NEVER_NS, dtype=np.int64)
        self.procs: list = [None] * n
        self.alive_mask = np.zeros(n, dtype=bool)
        self.events_by_actor = [0] * n
        self.rundir = tempfile.mkdtemp(prefix=f"{rack_id}-", dir=run_root())
        os.chmod(self.rundir, 0o700)
        try:
            self._open(spec, preload)
        except BaseException:
            shutil.rmtree(self.rundir, ignore_errors=True)
            raise

    def _open(self, spec: RackSpec, preload: list[str] | None) -> None:
        mods = sorted({a.cls.partition(':')[0] for a in spec.actors})
        self.mp = _context((preload or []) + mods)
        fabric = os.environ.get("EMU_FABRIC", DEFAULT_FABRIC)
        if fabric not in FABRICS:
            raise RackError(f"EMU_FABRIC={fabric!r}: expected one of {', '.join(FABRICS)}")
        self.fabric = CoordinatorFabric(fabric, self.names, self.rundir)
        self.drops = wire.DropCounter("coordinator", log=lambda m: print(m, file=sys.stderr))

    @property
    def events_handled(self) -> int:
        return sum(self.events_by_actor)

    # -- process management -------------------------------------------------------
    def _job(self, i: int, now_ns: int) -> dict:
        job = self.host_job(i, now_ns)
        job["link"] = self.fabric.link_for(i)
        job["regions"] = [self.regions[r].spec() for r in self.spec.actors[i].regions]
        return job

    def _spawn(self, indices: list[int], now_ns: int, restart: bool) -> None:
        for i in indices:
            p = self.mp.Process(target=worker_main, args=(self._job(i, now_ns),),
                                name=f"emu:{self.names[i]}", daemon=True)
            p.start()
            self.fabric.forked(i)
            self.procs[i] = p
        waiting = set(indices)
        while waiting:
            ident, cmd, body = self._recv(waiting)
            if cmd == Cmd.HELLO:
                waiting.discard(self.index_of[ident])
        for i in indices:
            self.alive_mask[i] = True
            self._send(i, Cmd.CONTROL, [now_ns, {"cmd": "__start__", "restart": restart}])
        waiting = set(indices)
        while waiting:
            ident, cmd, body = self._recv(waiting)
            i = self.index_of[ident]
            if cmd != Cmd.REPLY or i not in waiting:
                self.drops.drop(f"unexpected {cmd!r} from {ident}")
                continue
            waiting.discard(i)
            self._absorb_reply(i, body)

    def start(self) -> None:
        self._spawn(list(range(len(self.names))), 0, restart=False)

    def kill(self, actor: str, now_ns: int) -> None:
        i = self.index_of[actor]
        if not self.alive_mask[i]:
            raise LookupError(f"actor {actor!r} is already down")
        os.kill(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].join()
        self._mark_dead(i)

    def _mark_dead(self, i: int) -> None:
        self.fabric.drop(i)
        self.alive_mask[i] = False
        self.timer_next[i] = self.msg_next[i] = NEVER_NS
        self.floor_lat[i, :] = 0
        self.dropped_to_dead += len(self.pending[i])
        self.pending[i] = []
        self.pending_min[i] = NEVER_NS

    def _lost(self, i: int) -> None:
        """Actor ``i`` disconnected without being told to: reap it, mark it dead."""
        p = self.procs[i]
        p.join(REPLY_TIMEOUT_S)
        if p.exitcode is None:
            p.kill()
            p.join()
        self._mark_dead(i)
        self.deaths.append(self.names[i])

    def restart(self, actor: str, now_ns: int) -> None:
        i = self.index_of[actor]
        if self.alive_mask[i]:
            raise LookupError(f"actor {actor!r} is running")
        self.incarnation[i] += 1
        self._spawn([i], now_ns, restart=True)

    def alive(self, actor: str) -> bool:
        return bool(self.alive_mask[self.index_of[actor]])

    # -- crash-point watch -----------------------------------------------------------
    def set_watch(self, steps: set[int], count: int) -> None:
        raise ValueError("exact crash points need the inline backend")

    def clear_watch(self) -> None:
        """Nothing to disarm: a watch is never armed here."""

    def poll_deaths(self) -> list[str]:
        """Actors whose process died by itself (e.g. kill -9 from outside)."""
        dead = []
        for i, p in enumerate(self.procs):
            if self.alive_mask[i] and p is not None and p.exitcode is not None:
                self._mark_dead(i)
                dead.append(self.names[i])
        return dead

    def close(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None and p.exitcode is None and self.alive_mask[i]:
                try:
                    self._send(i, Cmd.STOP, [])
                except LinkLost:
                    pass
        deadline = time.monotonic() + 2.0
        for p in self.procs:
            if p is not None:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.exitcode is None:
                    p.kill()
                    p.join()
        self.fabric.close()
        shutil.rmtree(self.rundir, ignore_errors=True)

    # -- messaging ------------------------------------------------------------------
    def _send(self, i: int, cmd: Cmd, body) -> None:
        self.fabric.send(i, _pack(cmd, body))

    def _recv(self, expect: set[int]):
        """Next well-formed frame from one of ``expect``; dead children raise."""
        waited_s = 0.0
        while True:
            got = self.fabric.recv(LIVENESS_POLL_MS)
            if got is None:
                waited_s += LIVENESS_POLL_MS / 1000
                for i in sorted(expect):
                    p = self.procs[i]
                    if p is not None and p.exitcode is not None:
                        self._lost(i)
                        raise _ActorDied(i)
                if waited_s > REPLY_TIMEOUT_S:
                    raise RackError(f"no answer from {[self.names[i] for i in sorted(expect)]} in {REPLY_TIMEOUT_S}s")
                continue
            i, frame = got
            if i < 0:
                self.drops.drop("bad envelope")
                continue
            if frame is None:   # end of stream: the process is gone
                if self.alive_mask[i]:
                    self._lost(i)
                if i in expect:
                    raise _ActorDied(i)
                continue
            try:
                cmd, _seq, body = wire.decode(frame)
            except wire.WireError as exc:
                self.drops.drop(str(exc))
                continue
            if cmd == Cmd.ERROR:
                raise _error_of(body)
            return self.names[i], cmd, body

    def _await_reply(self, i: int):
        while True:
            ident, cmd, body = self._recv({i})
            if self.index_of[ident] == i and cmd == Cmd.REPLY:
                return body
            self.drops.drop(f"unexpected {cmd!r} from {ident}")

    def _absorb_reply(self, i: int, body):
        result, timer_ns, msg_ns, outbox, records, signals, floors, (reaction, min_delay) = body
        if self.reaction[i] != reaction or list(self.min_delay[i]) != min_delay:
            self.reaction[i] = reaction
            self.min_delay[i, :] = min_delay
            self._paths()
        self._absorb(i, timer_ns, msg_ns, outbox, records, signals, floors)
        return result

    def _absorb(self, i: int, timer_ns: int, msg_ns: int, outbox, records, signals, floors) -> None:
        """An actor's answer: its next timer and next unhandled message,
        messages to route, trace records, signals and its dynamic floors."""
        self.timer_next[i] = timer_ns
        self.msg_next[i] = msg_ns
        row, lat = self.floor_lat[i], self.lat[i]
        row[:] = 0
        if floors:
            for d, ns in floors:
                row[d] = ns + lat[d] if self.edge[i, d] else 0
        self._route(outbox)
        if records:
            self.sink.add(records)
        for t, who, name in signals:
            self.signals.append((t, who, name))

    def _route(self, outbox) -> None:
        pending, pmin, alive = self.pending, self.pending_min, self.alive_mask
        for t, src, seq, dst, kind, body in outbox:
            if not alive[dst]:
                self.dropped_to_dead += 1
                continue
            pending[dst].append([t, src, seq, kind, body])
            if t < pmin[dst]:
                pmin[dst] = t

    # -- running ----------------------------------------------------------------------
    def _paths(self) -> None:
        """Edge weights and shortest paths from the latencies and promises.

        ``msg_w[S, Y]``: a message S handles at t reaches Y no sooner than
        t + msg_w (S's reaction or its least delay to Y, whichever is more,
        plus the latency); ``timer_w[S, Y]``: the same from a timer (no
        reaction). ``paths[Y, A]``: least msg_w path from a message arriving
        at Y to one arriving at A (0 for A = Y)."""
        far = UNREACHABLE_NS
        msg_w = np.maximum(self.reaction[:, None], self.min_delay) + self.lat
        timer_w = self.min_delay + self.lat
        self.msg_w = np.where(self.edge, np.minimum(msg_w, far), far)
        self.timer_w = np.where(self.edge, np.minimum(timer_w, far), far)
        d = self.msg_w.copy()
        np.fill_diagonal(d, 0)
        for k in range(len(d)):  # Floyd-Warshall
            d = np.minimum(d, np.minimum(d[:, k:k + 1] + d[k:k + 1, :], far))
        self.paths = d

    def next_vector(self) -> np.ndarray:
        nxt = np.minimum(np.minimum(self.timer_next, self.msg_next), self.pending_min)
        nxt[~self.alive_mask] = NEVER_NS
        return nxt

    def next_ns(self) -> int:
        return int(self.next_vector().min())

    def next_times(self) -> list[int]:
        return [int(t) for t in self.next_vector()]

    def horizons(self) -> tuple[np.ndarray, np.ndarray]:
        """(next event time, horizon) per actor: H(A) is the earliest time a
        message A has not been given yet can reach it. A message first
        reaches some Y from an actor S, no sooner than S's next timer plus
        timer_w, S's next message plus msg_w, and S's dynamic floor towards
        Y; from Y it takes at least paths[Y, A] to reach A."""
        dead = ~self.alive_mask
        tn = self.timer_next.copy()
        mn = np.minimum(self.msg_next, self.pending_min)
        tn[dead] = NEVER_NS
        mn[dead] = NEVER_NS
        first = np.maximum(np.minimum(tn[:, None] + self.timer_w, mn[:, None] + self.msg_w), self.floor_lat)
        arrive = first.min(axis=0)
        return np.minimum(tn, mn), (arrive[:, None] + self.paths).min(axis=0)

    def run(self, until_ns: int, exact_signal: bool | str = False) -> int:
        if exact_signal:
            raise ValueError("exact stop on a signal needs the inline backend")
        while True:
            nxt, horizon = self.horizons()
            safe_ns = int(nxt.min())
            if safe_ns >= until_ns:
                break
            # no actor can still record below its next event time
            self.sink.flush(safe_ns)
            horizon = np.minimum(horizon, until_ns)
            active = np.nonzero((nxt < horizon) & self.alive_mask)[0]
            self._round(active, horizon)
        self.sink.flush(until_ns)
        return until_ns

    def _round(self, active, horizon) -> None:
        self.rounds += 1
        waiting = set()
        for i in active:
            i = int(i)
            try:
                self._send(i, Cmd.GRANT, [int(horizon[i]), self.pending[i]])
            except LinkLost:
                # the peer is gone (killed from outside since the last
                # round); report it as died instead of crashing the rack
                self._lost(i)
                continue
            self.pending[i] = []
            self.pending_min[i] = NEVER_NS
            waiting.add(i)
        while waiting:
            try:
                ident, cmd, body = self._recv(waiting)
            except _ActorDied as died:
                waiting.discard(died.index)
                continue
            i = self.index_of[ident]
            if cmd != Cmd.DONE or i not in waiting:
                self.drops.drop(f"unexpected {cmd!r} from {ident}")
                continue
            waiting.discard(i)
            timer_ns, msg_ns, outbox, records, signals, handled, floors = body
            self.events_by_actor[i] = handled
            self._absorb(i, timer_ns, msg_ns, outbox, records, signals, floors)

    # -- console -----------------------------------------------------------------------
    def control(self, actor: str, now_ns: int, command: dict) -> dict:
        i = self._index_up(actor)
        self._send(i, Cmd.CONTROL, [now_ns, command])
        return self._absorb_reply(i, self._await_reply(i))

    def query(self, actor: str, query: dict) -> dict:
        i = self._index_up(actor)
        self._send(i, Cmd.QUERY, [query])
        answer = self._await_reply(i)[0]
        answer.pop("_dropped_frames", None)
        return answer

    def raw_query(self, actor: str, query: dict) -> dict:
        """Like ``query`` but keeps the actor's count of dropped frames."""
        i = self._index_up(actor)
        self._send(i, Cmd.QUERY, [query])
        return self._await_reply(i)[0]

    def send_raw(self, actor: str, frame: bytes) -> None:
        """Test hook: put arbitrary bytes on the wire to an actor."""
        self.fabric.send(self.index_of[actor], frame)

    def pid(self, actor: str) -> int:
        return self.procs[self.index_of[actor]].pid


class _ActorDied(Exception):
    def __init__(self, index: int):
        self.index = index
