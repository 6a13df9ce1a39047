"""The host's write log (``emu run --writes FILE``; DESIGN section 5).

One row per host write, CSV with the header exactly::

    write_id,site,ldev,lba,sectors,issue_ns,complete_ns

``complete_ns`` is empty for a write never acknowledged (``-1`` is also
accepted on load). Write ids are unique and >= 1 (they are what the stamp
of every sector carries, see :mod:`controllers.formats.stamp`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

#: the columns of a write-log row, in the host's log and in the CSV file
HEADER = ("write_id", "site", "ldev", "lba", "sectors", "issue_ns", "complete_ns")
COMPLETE_NS = HEADER.index("complete_ns")
NOT_COMPLETED = -1


@dataclass(frozen=True)
class WriteRecord:
    """One host write. ``complete_ns`` is None while not acknowledged."""

    write_id: int
    site: str
    ldev: int
    lba: int
    sectors: int
    issue_ns: int
    complete_ns: int | None = None

    @property
    def completed(self) -> bool:
        return self.complete_ns is not None

    @classmethod
    def from_row(cls, row) -> "WriteRecord":
        """From a host's log row, whose columns are ``HEADER`` (a list on the wire)."""
        wid, site, ldev, lba, sectors, issue, done = row
        return cls(int(wid), str(site), int(ldev), int(lba), int(sectors), int(issue),
                   None if done is None else int(done))


def _validate(rec: WriteRecord) -> None:
    if rec.write_id < 1:
        raise ValueError(f"write_id must be >= 1, got {rec.write_id}")
    if not rec.site or "," in rec.site or "\n" in rec.site:
        raise ValueError(f"site must be a non-empty name without ',' or newline, got {rec.site!r}")
    if rec.ldev < 0 or rec.lba < 0 or rec.sectors < 1 or rec.issue_ns < 0:
        raise ValueError(f"write {rec.write_id}: need ldev>=0, lba>=0, sectors>=1, issue_ns>=0")
    if rec.complete_ns is not None and rec.complete_ns < rec.issue_ns:
        raise ValueError(f"write {rec.write_id}: complete_ns {rec.complete_ns} < issue_ns {rec.issue_ns}")


class WriteLog:
    """Ordered collection of :class:`WriteRecord`, keyed by write id.

    The host actor calls :meth:`issue` when it sends a write and
    :meth:`complete` when the acknowledgement arrives; :meth:`next_id`
    hands out increasing write ids.
    """

    def __init__(self, records: Iterable[WriteRecord] = ()):
        self._records: list[WriteRecord] = []
        self._index: dict[int, int] = {}
        self._last_id = 0
        #: the integer columns kept beside the records, so that to_arrays is a
        #: list-to-array copy, not a Python pass per write (the checker's cost)
        self._cols: dict[str, list[int]] = {k: [] for k in HEADER if k != "site"}
        for rec in records:
            self.add(rec)

    # -- building ----------------------------------------------------------
    def next_id(self) -> int:
        """A fresh write id, larger than any seen so far."""
        self._last_id += 1
        return self._last_id

    def add(self, rec: WriteRecord) -> None:
        _validate(rec)
        if rec.write_id in self._index:
            raise ValueError(f"duplicate write_id {rec.write_id}")
        self._index[rec.write_id] = len(self._records)
        self._records.append(rec)
        self._last_id = max(self._last_id, rec.write_id)
        cols = self._cols
        cols["write_id"].append(rec.write_id)
        cols["ldev"].append(rec.ldev)
        cols["lba"].append(rec.lba)
        cols["sectors"].append(rec.sectors)
        cols["issue_ns"].append(rec.issue_ns)
        cols["complete_ns"].append(NOT_COMPLETED if rec.complete_ns is None else rec.complete_ns)

    def issue(self, write_id: int, site: str, ldev: int, lba: int, sectors: int, issue_ns: int) -> None:
        """Record a write sent by the host (not yet acknowledged)."""
        self.add(WriteRecord(write_id, site, ldev, lba, sectors, issue_ns, None))

    def complete(self, write_id: int, complete_ns: int) -> None:
        """Record the acknowledgement of a write issued earlier."""
        try:
            i = self._index[write_id]
        except KeyError:
            raise ValueError(f"complete for unknown write_id {write_id}") from None
        old = self._records[i]
        if old.complete_ns is not None:
            raise ValueError(f"write {write_id} already completed at {old.complete_ns} ns")
        new = WriteRecord(old.write_id, old.site, old.ldev, old.lba, old.sectors, old.issue_ns, complete_ns)
        _validate(new)
        self._records[i] = new
        self._cols["complete_ns"][i] = complete_ns

    # -- access ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[WriteRecord]:
        return iter(self._records)

    def __getitem__(self, write_id: int) -> WriteRecord:
        return self._records[self._index[write_id]]

    def __contains__(self, write_id: int) -> bool:
        return write_id in self._index

    def filter(self, sites: Iterable[str] | None = None, ldevs: Iterable[int] | None = None) -> "WriteLog":
        """A new log with only the writes to the given sites / LDEVs."""
        sset = None if sites is None else set(sites)
        lset = None if ldevs is None else set(ldevs)
        return WriteLog(r for r in self._records
                        if (sset is None or r.site in sset) and (lset is None or r.ldev in lset))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Columns as int64 arrays (``complete_ns`` = -1 where not acknowledged) plus ``site`` (object)."""
        cols = {k: np.array(v, dtype=np.int64) if v else np.zeros(0, np.int64) for k, v in self._cols.items()}
        cols["site"] = np.array([r.site for r in self._records], dtype=object)
        return cols

    # -- CSV ---------------------------------------------------------------
    def dumps(self) -> str:
        out = io.StringIO()
        out.write(",".join(HEADER) + "\n")
        for r in self._records:
            done = "" if r.complete_ns is None else str(r.complete_ns)
            out.write(f"{r.write_id},{r.site},{r.ldev},{r.lba},{r.sectors},{r.issue_ns},{done}\n")
        return out.getvalue()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @classmethod
    def loads(cls, text: str, name: str = "<string>") -> "WriteLog":
        """Parse CSV text; errors say ``name:line: what``."""
        log = cls()
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise ValueError(f"{name}:1: expected header '{','.join(HEADER)}', got {','.join(header or [])!r}")
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            try:
                log.add(_parse_row(row))
            except ValueError as exc:
                raise ValueError(f"{name}:{line}: {exc}") from None
        return log

    @classmethod
    def load(cls, path: str | Path) -> "WriteLog":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read write log: {exc}") from None
        return cls.loads(text, str(path))


def _parse_row(row: list[str]) -> WriteRecord:
    if len(row) != len(HEADER):
        raise ValueError(f"expected {len(HEADER)} fields ({','.join(HEADER)}), got {len(row)}")
    vals = [c.strip() for c in row]
    ints = []
    for key, text in zip(("write_id", "ldev", "lba", "sectors", "issue_ns"), (vals[0], *vals[2:6])):
        try:
            ints.append(int(text))
        except ValueError:
            raise ValueError(f"{key}: expected an integer, got {text!r}") from None
    done_text = vals[6]
    if done_text in ("", "-1"):
        complete_ns = None
    else:
        try:
            complete_ns = int(done_text)
        except ValueError:
            raise ValueError(f"complete_ns: expected an integer, empty or -1, got {done_text!r}") from None
    wid, ldev, lba, sectors, issue_ns = ints
    return WriteRecord(wid, vals[1], ldev, lba, sectors, issue_ns, complete_ns)
