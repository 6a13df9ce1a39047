"""The SVP console as an operator uses it.

* On a terminal (a real pseudo-terminal): tab completion, history (up
  arrow), a live progress line (tracks done/total, rate, ETA) during a
  copy, `help CMD` with an example, a bad command answered in one line,
  Ctrl-D leaves with exit 0.
* From stdin (`emu console` without a terminal) a script runs.
* Fuzzing the parser (hypothesis): no traceback ever reaches the user, and
  after any rejected command the rack is exactly as it was.
"""

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers.operator.console import SvpConsole
from controllers.rack.storage import StorageRack

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs" / "two-site.toml")


class Pty:
    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ["TERM"] = "xterm"
            os.execv(argv[0], argv)
        self.buf = b""

    def expect(self, needle: bytes, timeout_s: float = 60.0) -> bytes:
        """Read until ``needle`` appears (waits on the terminal, not a sleep)."""
        deadline = time.monotonic() + timeout_s
        while needle not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {needle!r}; got {self.buf[-400:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"console exited; got {self.buf[-400:]!r}")
                self.buf += chunk
        before, _, self.buf = self.buf.partition(needle)
        return before

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def test_interactive_console_on_a_terminal():
    t = Pty([sys.executable, "-m", "controllers.cli", "console", CFG, "--backend", "inline"])
    t.expect(b"svp> ")
    t.send(b"pairdis\t")                      # completion of a command name
    t.expect(b"pairdisplay")
    t.send(b"\r")
    out = t.expect(b"svp> ")
    assert b"Status" in out and b"SMPL" in out
    t.send(b"paircreate g\t")                 # completion of a group name
    t.expect(b"g0")
    t.send(b"\r")
    assert b"-> COPY" in t.expect(b"svp> ")
    t.send(b"\x1b[A\x1b[A\r")                 # history: two back is pairdisplay
    assert b"COPY" in t.expect(b"svp> ")
    t.send(b"run 50ms\r")                    # a copy in progress: a live progress line with an ETA
    progress = t.expect(b"svp> ")
    assert b"tracks " in progress and b"ETA" in progress, progress
    t.send(b"help paircreate\r")
    assert b"Example: paircreate g0" in t.expect(b"svp> ")
    t.send(b"frobnicate\r")
    assert b"error: unknown command 'frobnicate'" in t.expect(b"svp> ")
    t.send(b"\x04")                           # Ctrl-D
    assert t.wait() == 0


def test_console_reads_a_script_from_stdin():
    script = "paircreate g0\nrun until pair.mirroring 5s\nexpect state g0 PAIR\npairdisplay g0\n"
    p = subprocess.run([sys.executable, "-m", "controllers.cli", "console", CFG, "--backend", "inline"],
                       input=script, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "expect state g0 PAIR: ok" in p.stdout


def digest(rack: StorageRack) -> tuple:
    """Everything a rejected command must leave unchanged."""
    return (repr(rack.pairdisplay()), repr(rack.settings()), rack.now_ns, rack.rack.sink.count,
            repr(rack.host_stats()["main"]["workloads"]), tuple(sorted(rack.down_sites)),
            repr([(f["actor"], f["fault"]) for f in rack.rack.faults]))


@pytest.fixture(scope="module")
def rack():
    with StorageRack(CFG, backend="inline", seed=2) as r:
        r.paircreate("g0")
        r.wait_mirrored()
        yield r


WORDS = ["paircreate", "pairdisplay", "pairsplit", "pairresync", "horctakeover", "set", "show", "fault",
         "workload", "phase", "run", "expect", "export", "g0", "p0", "nosuch", "-S", "--mode", "--window",
         "--max-time", "link", "down", "kill", "disk", "fail", "site", "main:9", "x:y", "start", "stop",
         "until", "0", "-1", "1e99", "10qs", "'", '"', "#", ";", "\\", "max_time", "window", "ldev",
         "rw=nope", "bs=3", "\x00", "é"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS) | st.text(max_size=8), min_size=1, max_size=6))
def test_fuzzed_commands_never_traceback_and_rejections_change_nothing(rack, words):
    line = " ".join(words)
    out = io.StringIO()
    console = SvpConsole(rack, stdout=out)
    before = digest(rack)
    try:
        console.onecmd(line)
    except Exception as exc:  # noqa: BLE001 - the point: nothing may escape
        pytest.fail(f"{line!r} raised {type(exc).__name__}: {exc}")
    text = out.getvalue()
    assert "Traceback" not in text
    if console.errors:
        assert text.count("\n") == 1 and text.startswith("error: "), text
        assert digest(rack) == before, f"rejected {line!r} changed the rack"
