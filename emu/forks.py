"""Fork snapshots: run a function on a copy-on-write image of this process.

``ForkPool(jobs)`` keeps up to ``jobs`` forked children alive. ``submit(key,
fn)`` forks; the child (a snapshot of the parent at that instant: a rack
paused at a crash point, say) runs ``fn()``, writes its JSON result to a
pipe and leaves with ``os._exit``, so it runs no ``atexit`` handler, flushes
none of the parent's buffered files and closes none of the parent's
resources; the parent goes on at once. Results come back as
``(key, {"ok": True, "result": ...})`` or ``(key, {"ok": False, "error":
...})`` (an exception in ``fn``, or a child that died without answering).

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
from typing import Any, Callable

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
            _child(r, w, fn, list(self._running), parent)
        os.close(w)
        self.forked += 1
        self._running[r] = (pid, key, [])
        self._selector.register(r, selectors.EVENT_READ)
        return done

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
        self._selector.close()


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
