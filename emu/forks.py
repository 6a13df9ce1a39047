"""Fork snapshots: run a function on a copy-on-write image of this process.

``ForkPool(jobs)`` keeps up to ``jobs`` forked children alive. ``submit(key,
fn)`` forks; the child (a snapshot of the parent at that instant: a rack
paused at a crash point, say) runs ``fn()``, writes its JSON result to a
pipe and leaves with ``os._exit``, so it runs no ``atexit`` handler, flushes
none of the parent's buffered files and closes none of the parent's
resources; the parent goes on at once. Results come back as
``(key, {"ok": True, "result": ...})`` or ``(key, {"ok": False, "error":
...})`` (an exception in ``fn``, or a child that died without answering).

``pause(fn)`` forks a child that stays paused at that instant (a
checkpoint) until ``resume(paused, key, arg)`` sends it an argument: it
then runs ``fn(arg)`` as a submitted child would, in one of the ``jobs``
slots; ``discard(paused)`` lets it leave without running anything. A paused
child waits in a blocking read of its own pipe, so it costs no CPU, only
the pages the parent changes after it (copied on write).

Waiting is on the pipes (``selectors``) and ``waitpid`` of the child's own
pid, never a sleep and never ``waitpid(-1)`` (which could reap a process
that is not ours). ``close()`` (also on an exception) kills and reaps every
child still running: nothing is left behind.

What must hold for a child not to harm the parent: it shares no writable
memory with it (the inline backend's regions are private, copy-on-write
mappings: ``emu.shm.PrivateRegion``), holds no ZeroMQ context (the inline
backend has none), and writes no file the parent writes.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import selectors
import signal
import traceback
from typing import Any, Callable, NamedTuple

#: prctl(2) option: the signal a process gets when its parent dies
PR_SET_PDEATHSIG = 1
#: what a child sends at most (a result is a verdict, not a trace)
RESULT_BYTES_MAX = 16 << 20


class ForkPool:
    def __init__(self, jobs: int):
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        #: children alive at most
        self.jobs = jobs
        #: read fd -> (pid, key, bytes read so far)
        self._running: dict[int, tuple[int, Any, list[bytes]]] = {}
        self._selector = selectors.DefaultSelector()
        #: paused children (checkpoints): command fd -> Paused
        self._paused: dict[int, "Paused"] = {}
        #: discarded children not reaped yet (they leave at their command pipe's EOF)
        self._leaving: list[int] = []
        #: children forked so far
        self.forked = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, key: Any, fn: Callable[[], Any]) -> list[tuple[Any, dict]]:
        """Fork a child running ``fn``; first wait for a free slot. Returns the
        results that came back while waiting (maybe none)."""
        done = []
        while len(self._running) >= self.jobs:
            done.extend(self.wait_some())
        r, w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:   # the child: never returns
            _child(r, w, fn, self._fds(), parent)
        os.close(w)
        self.forked += 1
        self._watch(r, pid, key)
        return done

    def _fds(self) -> list[int]:
        """The parent's ends of every child's pipes: a new child closes them
        (a paused child holding another's command pipe would never see its EOF)."""
        return [*self._running, *(fd for p in self._paused.values() for fd in (p.command, p.result))]

    def _watch(self, r: int, pid: int, key: Any) -> None:
        self._running[r] = (pid, key, [])
        self._selector.register(r, selectors.EVENT_READ)

    def pause(self, fn: Callable[[Any], Any]) -> "Paused":
        """Fork a child paused at this instant; ``resume`` runs ``fn(arg)`` in
        it, ``discard`` ends it. It takes no slot while paused."""
        cr, cw = os.pipe()
        r, w = os.pipe()
        parent = os.getpid()
        inherited = self._fds()
        pid = os.fork()
        if pid == 0:   # the child: never returns
            os.close(cw)
            _child(r, w, lambda: fn(_wait_command(cr)), inherited, parent)
        os.close(cr)
        os.close(w)
        self.forked += 1
        paused = Paused(pid, cw, r)
        self._paused[cw] = paused
        return paused

    def resume(self, paused: "Paused", key: Any, arg: Any) -> list[tuple[Any, dict]]:
        """Give a paused child its argument (JSON) once a slot is free; it then
        answers under ``key`` like a submitted child. Returns the results that
        came back while waiting for the slot."""
        if self._paused.get(paused.command) is not paused:
            raise ValueError(f"child {paused.pid} is not paused in this pool")
        done = []
        while len(self._running) >= self.jobs:
            done.extend(self.wait_some())
        del self._paused[paused.command]
        data = memoryview(json.dumps(arg).encode())
        try:
            while data:
                data = data[os.write(paused.command, data):]
        except BrokenPipeError:
            pass   # it died while paused: its result pipe says so (it answers nothing)
        os.close(paused.command)
        self._watch(paused.result, paused.pid, key)
        return done

    def discard(self, paused: "Paused") -> None:
        """A paused child leaves without running ``fn`` (EOF on its command pipe)."""
        if self._paused.pop(paused.command, None) is not paused:
            raise ValueError(f"child {paused.pid} is not paused in this pool")
        os.close(paused.command)
        os.close(paused.result)
        self._leaving.append(paused.pid)
        self._reap_leaving(block=False)

    def _reap_leaving(self, block: bool) -> None:
        """Reap discarded children that have left (all of them with ``block``):
        the parent does not wait for each to be scheduled and leave."""
        still = []
        for pid in self._leaving:
            if os.waitpid(pid, 0 if block else os.WNOHANG)[0] == 0:
                still.append(pid)
        self._leaving = still

    def wait_some(self) -> list[tuple[Any, dict]]:
        """Block until at least one child has answered; return those that did."""
        if not self._running:
            return []
        done = []
        while not done:
            for sel_key, _ in self._selector.select():
                fd = sel_key.fd
                chunk = os.read(fd, 1 << 16)
                pid, key, parts = self._running[fd]
                if chunk:
                    parts.append(chunk)
                    if sum(map(len, parts)) > RESULT_BYTES_MAX:
                        raise RuntimeError(f"child {pid} sent more than {RESULT_BYTES_MAX} bytes")
                    continue
                done.append((key, self._reap(fd, pid, b"".join(parts))))
        return done

    def drain(self) -> list[tuple[Any, dict]]:
        """Wait for every child still running; return their results."""
        done = []
        while self._running:
            done.extend(self.wait_some())
        return done

    def _reap(self, fd: int, pid: int, data: bytes) -> dict:
        self._selector.unregister(fd)
        os.close(fd)
        del self._running[fd]
        _, status = os.waitpid(pid, 0)
        if data:
            return json.loads(data)
        if os.WIFSIGNALED(status):
            why = f"killed by signal {os.WTERMSIG(status)}"
        else:
            why = f"exit status {os.waitstatus_to_exitcode(status)}"
        return {"ok": False, "error": f"child {pid} answered nothing ({why})"}

    def close(self) -> None:
        """Kill and reap every child still running (an aborted sweep)."""
        for fd, (pid, _key, _parts) in list(self._running.items()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            self._selector.unregister(fd)
            os.close(fd)
        self._running.clear()
        for paused in list(self._paused.values()):
            try:
                os.kill(paused.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(paused.pid, 0)
            os.close(paused.command)
            os.close(paused.result)
        self._paused.clear()
        self._reap_leaving(block=True)
        self._selector.close()


class Paused(NamedTuple):
    """A paused child: its pid, the parent's end of its command pipe and of its result pipe."""

    pid: int
    command: int
    result: int


def _wait_command(fd: int) -> Any:
    """In a paused child: block until the parent sends an argument (JSON, up
    to EOF); at EOF with nothing sent (``discard``), leave at once."""
    parts = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        parts.append(chunk)
    os.close(fd)
    if not parts:
        os._exit(0)
    return json.loads(b"".join(parts))


def die_with_parent(parent: int | None = None) -> None:
    """A forked process must not outlive the one that forked it (a Dask
    worker killed mid-task, say): Linux's PR_SET_PDEATHSIG kills it with its
    parent. With ``parent`` (its pid), also leave now if it is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass   # not Linux: the child still ends when it has answered
    if parent is not None and os.getppid() != parent:   # it died before prctl took effect
        os._exit(70)


def _child(r: int, w: int, fn: Callable[[], Any], inherited: list[int], parent: int) -> None:
    """Run ``fn`` in the forked child, send its result, leave without cleanup."""
    code = 0
    try:
        die_with_parent(parent)
        os.close(r)
        for fd in inherited:   # the parent's pipes from other children
            os.close(fd)
        gc.disable()   # a short life: no collection touching (and copying) every page
        try:
            payload = {"ok": True, "result": fn()}
        except BaseException as exc:  # noqa: BLE001 - sent to the parent, which reports it
            payload = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        data = json.dumps(payload, default=str).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(w, view):]
        os.close(w)
    except BaseException:  # noqa: BLE001 - nothing may escape a forked child
        code = 70
    finally:
        os._exit(code)
