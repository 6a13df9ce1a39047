"""The run trace: one fixed-column line per recorded event, and its sha256.

Canonical line (UTF-8, '\\n' terminated)::

    <time_ns:>15> <actor:<12> <step:>4|----> <event> <fields as compact sorted JSON>

Records arrive from actors in rounds; the sink holds them in a heap and
flushes, in (time_ns, actor, per-actor counter) order, every record below the
global safe time (no actor can still produce an earlier one). The sha256 of
the flushed lines is the run's fingerprint: the same config, script and seed
give the same fingerprint in both backends.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from typing import IO


def canonical_line(record: tuple) -> str:
    t, actor, _count, event, step, fields = record
    step_s = f"{step:>4}" if step is not None else "----"
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_plain)
    return f"{t:>15} {actor:<12} {step_s} {event} {body}\n"


def _plain(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": len(value), "sha1": hashlib.sha1(bytes(value)).hexdigest()[:12]}
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def parse_line(line: str) -> dict:
    """Inverse of ``canonical_line`` for ``emu trace``."""
    head, _, rest = line.rstrip("\n").partition(" {")
    parts = head.split()
    if len(parts) < 4:
        raise ValueError(f"not a trace line: {line[:60]!r}")
    t, actor, step, event = int(parts[0]), parts[1], parts[2], " ".join(parts[3:])
    return {"time_ns": t, "actor": actor, "step": None if step == "----" else int(step),
            "event": event, "fields": json.loads("{" + rest) if rest else {}}


class TraceSink:
    """Orders, hashes and optionally writes trace records."""

    def __init__(self, out: IO[str] | None = None, keep: bool = False, on_line=None):
        self._heap: list[tuple] = []
        self._sha = hashlib.sha256()
        self._out = out
        self.lines: list[str] | None = [] if keep else None
        self._on_line = on_line
        self.count = 0
        self.steps_seen: dict[int, int] = {}

    def add(self, records) -> None:
        for r in records:
            heapq.heappush(self._heap, (r[0], r[1], r[2], r))

    def flush(self, safe_ns: int) -> None:
        """Emit every record strictly below ``safe_ns``."""
        heap = self._heap
        while heap and heap[0][0] < safe_ns:
            record = heapq.heappop(heap)[3]
            line = canonical_line(record)
            self._sha.update(line.encode())
            self.count += 1
            if record[4] is not None:
                self.steps_seen[record[4]] = self.steps_seen.get(record[4], 0) + 1
            if self._out is not None:
                self._out.write(line)
            if self.lines is not None:
                self.lines.append(line)
            if self._on_line is not None:
                self._on_line(record)

    def flush_all(self) -> None:
        self.flush(1 << 63)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()
