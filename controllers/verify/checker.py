"""Consistency checker for LDEV images against the host's write log.

Independent of any firmware: it reads only raw LDEV images (stamped by
:mod:`controllers.formats.stamp`) and a :class:`controllers.formats.writelog.WriteLog`.

Definitions (per consistency unit U, a set of LDEVs; only writes to LDEVs
of U count):

* ``v(s)``: what sector ``s`` shows: *unwritten* (all zero), *corrupt*
  (torn, bad filler, foreign data, stamp of another place), or a write id.
  A stamp whose id is not in the log, or whose log extent does not contain
  ``s``, is a violation too (``unknown`` / ``misplaced``).
* ``A -> B`` ("A completed before B was issued"): ``A.complete_ns`` is set
  and ``A.complete_ns <= B.issue_ns``, ``A != B``. Equality counts: a
  closed-loop host issuing B at the very instant A's acknowledgement arrives
  made B dependent on A. ``->`` is transitive (issue <= complete).
* *visible* writes ``P``: every write id shown by at least one sector. A
  visible write is proof that it reached the image, so any visible sector
  counts (not just sectors where it is the newest write in the log).
* ``A`` is *held* by the image iff every sector ``s`` of A's extent shows
  ``A`` itself or a write ``C`` with ``not (C -> A)``, i.e. a write that may
  legitimately have landed after A on that sector (issued after A completed,
  or concurrent with A). Unwritten or corrupt sectors, or a sector showing a
  write that completed before A was issued, mean A is not held there.
* *required* writes ``R = {A : A -> B for some B in P}``. Because ``->`` only
  looks at B's issue time, ``R = {A : A.complete_ns <= max issue_ns over P}``
  (the dependency closure is a prefix in completion time).

**Dependent-write consistent** iff no corrupt/unknown/misplaced sector and
every required write is held. Writes that are visible but not required may
be held only partially (they were in flight: sector atomicity only).
This is exactly "there is a set S of writes closed under ``->`` whose
application (in any order compatible with ``->``, in-flight writes possibly
partial) yields the image".

**RPO**: acknowledged writes that are not held: count, earliest and latest
``complete_ns``. ``require_all_acked=True`` (sync PAIR) also makes any such
write a violation. ``equals`` compares with a reference image (e.g. the
suspension-time image a recovery copy must return to).

Cost: O(written data), not O(capacity). Images may be sparse
(:class:`controllers.formats.image.SparseImage`: thin LDEVs hold only the
tracks ever written, the rest reads zeros). The check works in a *compact*
sector space: the union of the sectors an image holds and the sectors the
log's writes touch, per LDEV, merged into intervals; a sector outside it is
unwritten and no write claims it, so it can only count as unwritten. The
held sectors are scanned by one compiled pass (``stamp.scan_sectors``), then
one vectorised pass over the sectors of every logged write (chunked).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from numba import njit

from controllers.formats.image import SparseImage, as_image, read_image_file
from controllers.formats.stamp import CORRUPT, SECTOR_BYTES, UNWRITTEN, ImageScan, make_payload, scan_sectors
from controllers.formats.writelog import WriteLog, WriteRecord

MAX_REASONS = 5
_INF = np.iinfo(np.int64).max

# special values of the per-sector log index
_IDX_UNWRITTEN = -1
_IDX_BAD = -2          # corrupt, unknown or misplaced


@dataclass
class Verdict:
    """Result of a check. Truthy iff ``consistent``.

    ``counts`` keys: sectors, unwritten_sectors, corrupt_sectors,
    unknown_stamps, misplaced_stamps, writes, acked_writes, visible_writes,
    required_writes, missing_required, missing_acked, held_writes (and
    differing_sectors for :func:`equals`). ``held_write_ids`` lists the
    write ids the image holds in full (sorted; not part of ``==``).
    """

    consistent: bool
    reasons: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    missing_acked_min_complete_ns: int | None = None
    missing_acked_max_complete_ns: int | None = None
    units: list[tuple[int, ...]] = field(default_factory=list)
    held_write_ids: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.consistent

    @property
    def missing_acked(self) -> int:
        return self.counts.get("missing_acked", 0)

    @property
    def holds_all_acked(self) -> bool:
        """Every acknowledged write is held and no sector is corrupt."""
        return self.missing_acked == 0 and self.counts.get("corrupt_sectors", 0) == 0

    def summary(self) -> str:
        """One line for the console / CLI."""
        c = self.counts
        head = "CONSISTENT" if self.consistent else "INCONSISTENT"
        if "differing_sectors" in c:
            text = f"{head}: {c['differing_sectors']} of {c.get('sectors', 0)} sectors differ from the reference"
        else:
            text = (f"{head}: {len(self.units)} unit(s), {c.get('sectors', 0)} sectors, "
                    f"{c.get('visible_writes', 0)} writes visible, {c.get('required_writes', 0)} required, "
                    f"{c.get('missing_required', 0)} missing, {c.get('corrupt_sectors', 0)} corrupt; "
                    f"RPO: {self.missing_acked} acknowledged writes not held")
            if self.missing_acked_max_complete_ns is not None:
                text += (f" (complete_ns {self.missing_acked_min_complete_ns}"
                         f"..{self.missing_acked_max_complete_ns})")
        if self.reasons:
            text += f"; first: {self.reasons[0]}"
        return text

    def to_dict(self) -> dict:
        """JSON-ready form for the run report's ``verify`` section."""
        return {"consistent": self.consistent, "reasons": list(self.reasons), "counts": dict(self.counts),
                "missing_acked": self.missing_acked,
                "missing_acked_min_complete_ns": self.missing_acked_min_complete_ns,
                "missing_acked_max_complete_ns": self.missing_acked_max_complete_ns,
                "units": [list(u) for u in self.units]}


# --------------------------------------------------------------------------
# inputs

@dataclass
class _Log:
    """The log as int64 columns, sorted by write id."""

    wid: np.ndarray
    ldev: np.ndarray
    lba: np.ndarray
    sectors: np.ndarray
    issue: np.ndarray
    complete: np.ndarray      # _INF where not acknowledged

    def take(self, mask: np.ndarray) -> "_Log":
        return _Log(*(getattr(self, k)[mask] for k in ("wid", "ldev", "lba", "sectors", "issue", "complete")))


def _log_arrays(log: WriteLog, sites: Iterable[str] | None) -> _Log:
    cols = log.to_arrays()
    keep = np.ones(len(log), dtype=bool)
    if sites is not None:
        keep = np.isin(cols["site"], list(sites))
    order = np.argsort(cols["write_id"][keep], kind="stable")
    get = lambda k: cols[k][keep][order]  # noqa: E731
    complete = get("complete_ns").copy()
    complete[complete < 0] = _INF
    return _Log(get("write_id"), get("ldev"), get("lba"), get("sectors"), get("issue_ns"), complete)


def _normalise_units(images: Mapping[int, object], units) -> list[tuple[int, ...]]:
    if units is None:
        return [(ldev,) for ldev in sorted(images)]
    out = []
    for unit in units:
        members = tuple(sorted(set(int(x) for x in unit)))
        if not members:
            raise ValueError("empty consistency unit")
        missing = [m for m in members if m not in images]
        if missing:
            raise ValueError(f"consistency unit {list(members)}: no image for LDEV(s) {missing}")
        out.append(members)
    return out


# --------------------------------------------------------------------------
# the check

def check(images: Mapping[int, object], log: WriteLog, units: Sequence[Iterable[int]] | None = None,
          *, sites: Iterable[str] | None = None, require_all_acked: bool = False,
          max_reasons: int = MAX_REASONS) -> Verdict:
    """Dependent-write consistency (and RPO) of ``images`` against ``log``.

    ``images`` maps LDEV number to its raw image (bytes / bytearray / uint8
    array, length a multiple of 512, or a ``SparseImage``). ``units`` lists
    consistency units (default: each LDEV alone); writes to LDEVs outside
    every unit are ignored. ``sites`` restricts the log to writes issued at
    those sites. ``require_all_acked`` (sync PAIR) makes every acknowledged
    write that is not held a violation. Raises ValueError on input that does
    not fit (an image of the wrong size, a logged write past the end of its
    LDEV).
    """
    unit_list = _normalise_units(images, units)
    sparse = {ldev: as_image(images[ldev]) for ldev in sorted({m for u in unit_list for m in u})}
    arrays = _log_arrays(log, sites)
    verdicts = [_check_unit(u, sparse, arrays, require_all_acked, max_reasons) for u in unit_list]
    return _merge(verdicts, unit_list, max_reasons)


def holds_all_acknowledged(images: Mapping[int, object], log: WriteLog,
                           units: Sequence[Iterable[int]] | None = None,
                           *, sites: Iterable[str] | None = None) -> Verdict:
    """Sync PAIR check: consistent and every acknowledged write held."""
    return check(images, log, units, sites=sites, require_all_acked=True)


def _merge(verdicts: list[Verdict], units: list[tuple[int, ...]], max_reasons: int) -> Verdict:
    counts: dict[str, int] = {}
    reasons: list[str] = []
    lo = hi = None
    for v in verdicts:
        for k, n in v.counts.items():
            counts[k] = counts.get(k, 0) + n
        reasons.extend(v.reasons)
        if v.missing_acked_max_complete_ns is not None:
            hi = max(hi or 0, v.missing_acked_max_complete_ns)
            lo = v.missing_acked_min_complete_ns if lo is None else min(lo, v.missing_acked_min_complete_ns)
    if len(verdicts) == 1:   # one unit's held ids are already sorted and unique (the log is sorted by id)
        held = verdicts[0].held_write_ids
    else:
        held = np.unique(np.concatenate([v.held_write_ids for v in verdicts])) if verdicts else np.zeros(0, np.int64)
    return Verdict(all(v.consistent for v in verdicts), reasons[:max_reasons], counts, lo, hi, list(units), held)


def _intervals(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of half-open intervals [lo, hi) as sorted disjoint (starts, ends)."""
    if lo.size == 0:
        return lo.astype(np.int64), hi.astype(np.int64)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    run_hi = np.maximum.accumulate(hi)
    new = np.ones(lo.size, dtype=bool)
    new[1:] = lo[1:] > run_hi[:-1]
    first = np.flatnonzero(new)
    return lo[first], np.maximum.reduceat(hi, first)


@dataclass
class _Compact:
    """The unit's compact sector space: per LDEV, intervals of real sectors
    laid end to end. ``to_compact(ldev, lba)`` maps a sector inside them."""

    unit: tuple[int, ...]
    sizes: np.ndarray            # real sectors per LDEV of the unit
    iv_lo: list                  # per LDEV: interval starts (real lba)
    iv_base: list                # per LDEV: compact index of each interval's start
    size: int                    # compact sectors in all
    sec_ldev: np.ndarray         # per compact sector: its LDEV
    sec_lba: np.ndarray          # per compact sector: its real lba

    def to_compact(self, pos: int, lba: np.ndarray) -> np.ndarray:
        lo, base = self.iv_lo[pos], self.iv_base[pos]
        k = np.searchsorted(lo, lba, side="right") - 1
        return base[k] + lba - lo[k]


def _compact_space(unit: tuple[int, ...], images: Mapping[int, SparseImage], log: "_Log") -> _Compact:
    sizes = np.asarray([images[m].n_sectors for m in unit], dtype=np.int64)
    iv_lo, iv_base, ldev_parts, lba_parts = [], [], [], []
    at = 0
    for pos, m in enumerate(unit):
        img = images[m]
        mine = log.ldev == m
        seg_lo = img.segments * img.seg_sectors
        lo, hi = _intervals(np.concatenate([seg_lo, log.lba[mine]]),
                            np.concatenate([seg_lo + img.seg_sectors, log.lba[mine] + log.sectors[mine]]))
        lens = hi - lo
        base = at + np.cumsum(lens) - lens
        iv_lo.append(lo)
        iv_base.append(base)
        total = int(lens.sum())
        lba_parts.append(np.repeat(lo - base, lens) + np.arange(at, at + total, dtype=np.int64))
        ldev_parts.append(np.full(total, m, dtype=np.int64))
        at += total
    return _Compact(unit, sizes, iv_lo, iv_base, at, np.concatenate(ldev_parts), np.concatenate(lba_parts))


_CAT_CORRUPT, _CAT_UNKNOWN, _CAT_MISPLACED = 1, 2, 3


@njit(cache=True, nogil=True)
def _k_classify(state, wids, log_wid, start, sectors, cidx, cat):
    """Per compact sector: the log index of the write it shows (cidx), or
    _IDX_UNWRITTEN / _IDX_BAD; cat says why a sector is bad: corrupt (the
    scan's verdict), unknown (an id the log lacks) or misplaced (the log puts
    that write elsewhere)."""
    n_log = log_wid.size
    for g in range(state.size):
        if state[g] == CORRUPT:
            cidx[g] = -2
            cat[g] = 1
            continue
        w = wids[g]
        if w <= 0:
            cidx[g] = -1
            continue
        k = np.searchsorted(log_wid, w)
        if k >= n_log or log_wid[k] != w:
            cidx[g] = -2
            cat[g] = 2
        elif g < start[k] or g >= start[k] + sectors[k]:
            cidx[g] = -2
            cat[g] = 3
        else:
            cidx[g] = k


def _where(ldev: int, lba: int) -> str:
    return f"ldev {ldev} lba {lba}"


def _check_unit(unit: tuple[int, ...], images: Mapping[int, SparseImage], all_log: _Log,
                require_all_acked: bool, max_reasons: int) -> Verdict:
    log = all_log.take(np.isin(all_log.ldev, unit))
    unit_arr = np.asarray(unit, dtype=np.int64)
    pos = np.searchsorted(unit_arr, log.ldev)
    sizes = np.asarray([images[m].n_sectors for m in unit], dtype=np.int64)
    too_long = log.lba + log.sectors > sizes[pos]
    if too_long.any():
        i = int(np.flatnonzero(too_long)[0])
        raise ValueError(f"write {int(log.wid[i])} ({_where(int(log.ldev[i]), int(log.lba[i]))}, "
                         f"{int(log.sectors[i])} sectors) runs past the end of its LDEV image "
                         f"({int(sizes[pos[i]])} sectors)")
    space = _compact_space(unit, images, log)
    sec_ldev, sec_lba = space.sec_ldev, space.sec_lba
    # the compact sector of each write's first sector (its extent is contiguous there)
    start = np.empty(log.wid.size, dtype=np.int64)
    for p in range(len(unit)):
        mine = np.flatnonzero(pos == p)
        start[mine] = space.to_compact(p, log.lba[mine])
    # what every held sector shows (the rest of the compact space is unwritten)
    state = np.full(space.size, UNWRITTEN, dtype=np.int8)
    wids = np.zeros(space.size, dtype=np.int64)
    for p, m in enumerate(unit):
        img = images[m]
        if img.segments.size:
            lbas = img.sector_lbas()
            scan: ImageScan = scan_sectors(img.words(), lbas, m)
            # a segment is contiguous in the compact space too: map its first sector only
            first = space.to_compact(p, img.segments * img.seg_sectors)
            at = (first[:, None] + np.arange(img.seg_sectors, dtype=np.int64)[None, :]).reshape(-1)
            state[at] = scan.state
            wids[at] = scan.write_ids
    reasons: list[str] = []

    # (a) per-sector log index of the write each sector shows (one compiled pass)
    cidx = np.empty(state.size, dtype=np.int64)
    cat = np.zeros(state.size, dtype=np.int8)
    _k_classify(state, wids, log.wid, start, log.sectors, cidx, cat)
    corrupt = np.flatnonzero(cat == _CAT_CORRUPT)
    unknown = np.flatnonzero(cat == _CAT_UNKNOWN)
    misplaced = np.flatnonzero(cat == _CAT_MISPLACED)
    for s in corrupt[:max_reasons]:
        reasons.append(f"corrupt/torn sector at {_where(int(sec_ldev[s]), int(sec_lba[s]))}")
    for s in unknown[:max_reasons]:
        reasons.append(f"sector {_where(int(sec_ldev[s]), int(sec_lba[s]))} holds write {int(wids[s])} not in the log")
    for s in misplaced[:max_reasons]:
        reasons.append(f"sector {_where(int(sec_ldev[s]), int(sec_lba[s]))} holds write {int(wids[s])}, "
                       f"which the log puts elsewhere")

    # visible and required writes
    seen = np.zeros(log.wid.size, dtype=bool)   # a mask, not np.unique: O(n), and sorted as unique's
    seen[cidx[cidx >= 0]] = True
    vis_idx = np.flatnonzero(seen)
    acked = log.complete != _INF
    required = acked & (log.complete <= _latest_other_visible_issue(vis_idx, log))

    # held / not held, over the sectors of every write
    not_held_at = _first_unheld_sector(np.arange(log.wid.size), start, log, cidx)
    not_held = not_held_at >= 0
    missing_req = np.flatnonzero(required & not_held)
    missing_acked = np.flatnonzero(acked & not_held)

    vis_issue_sorted = np.sort(log.issue[vis_idx])
    vis_by_issue = vis_idx[np.argsort(log.issue[vis_idx], kind="stable")]
    for a in missing_req[:max_reasons]:
        reasons.append(_explain_missing(a, int(not_held_at[a]), log, cidx, sec_ldev, sec_lba,
                                        vis_issue_sorted, vis_by_issue))
    if require_all_acked:
        for a in np.setdiff1d(missing_acked, missing_req)[:max_reasons]:
            s = int(not_held_at[a])
            reasons.append(f"acknowledged write {int(log.wid[a])} (complete_ns {int(log.complete[a])}) "
                           f"not held at {_where(int(sec_ldev[s]), int(sec_lba[s]))}")

    bad_sectors = corrupt.size + unknown.size + misplaced.size
    consistent = bad_sectors == 0 and missing_req.size == 0
    if require_all_acked:
        consistent = consistent and missing_acked.size == 0
    n_sectors = int(sizes.sum())
    counts = {"sectors": n_sectors,
              "unwritten_sectors": n_sectors - space.size + int((state == UNWRITTEN).sum()),
              "corrupt_sectors": int(corrupt.size), "unknown_stamps": int(unknown.size),
              "misplaced_stamps": int(misplaced.size), "writes": int(log.wid.size),
              "acked_writes": int(acked.sum()), "visible_writes": int(vis_idx.size),
              "required_writes": int(required.sum()), "missing_required": int(missing_req.size),
              "missing_acked": int(missing_acked.size), "held_writes": int((~not_held).sum())}
    lo = int(log.complete[missing_acked].min()) if missing_acked.size else None
    hi = int(log.complete[missing_acked].max()) if missing_acked.size else None
    return Verdict(consistent, reasons[:max_reasons], counts, lo, hi, [unit], log.wid[~not_held])


def _latest_other_visible_issue(vis_idx: np.ndarray, log: _Log) -> np.ndarray:
    """Per log write A: max issue_ns over visible writes other than A (-1 if none).

    A write never depends on itself, which matters only for zero-latency
    writes (issue_ns == complete_ns).
    """
    out = np.full(log.wid.size, -1, dtype=np.int64)
    if vis_idx.size == 0:
        return out
    order = np.argsort(log.issue[vis_idx], kind="stable")
    top = vis_idx[order[-1]]
    out[:] = log.issue[top]
    out[top] = log.issue[vis_idx[order[-2]]] if vis_idx.size > 1 else -1
    return out


def _first_unheld_sector(writes: np.ndarray, start: np.ndarray, log: _Log, cidx: np.ndarray) -> np.ndarray:
    """For every log write: the first global sector where it is not held, -1 if held (or not checked)."""
    out = np.full(log.wid.size, -1, dtype=np.int64)
    if writes.size:
        _k_first_unheld(np.ascontiguousarray(writes, dtype=np.int64), start, log.sectors, log.issue,
                        log.complete, cidx, out)
    return out


@njit(cache=True, nogil=True)
def _k_first_unheld(writes, start, sectors, issue, complete, cidx, out):
    """Sector s of write a holds a when it shows a itself, or a write c that
    may have landed after a (not completed before a was issued)."""
    for i in range(writes.size):
        a = writes[i]
        for g in range(start[a], start[a] + sectors[a]):
            c = cidx[g]
            if c != a and (c < 0 or complete[c] <= issue[a]):
                out[a] = g
                break


def _explain_missing(a: int, s: int, log: _Log, cidx, sec_ldev, sec_lba, vis_issue_sorted, vis_by_issue) -> str:
    c = int(cidx[s])
    if c == _IDX_UNWRITTEN:
        shows = "unwritten"
    elif c == _IDX_BAD:
        shows = "corrupt data"
    else:
        shows = f"older write {int(log.wid[c])} (completed {int(log.complete[c])} ns)"
    # the earliest-issued visible write that depends on a
    j = int(np.searchsorted(vis_issue_sorted, log.complete[a], side="left"))
    b = int(vis_by_issue[min(j, vis_by_issue.size - 1)])
    return (f"write {int(log.wid[a])} (completed {int(log.complete[a])} ns) missing at "
            f"{_where(int(sec_ldev[s]), int(sec_lba[s]))}, which shows {shows}, but dependent write "
            f"{int(log.wid[b])} (issued {int(log.issue[b])} ns, ldev {int(log.ldev[b])}) is present")


# --------------------------------------------------------------------------
# equality with a reference image

def equals(image, reference, *, max_reasons: int = MAX_REASONS) -> Verdict:
    """Does ``image`` equal ``reference`` byte for byte (e.g. the suspension-time image)?

    Both are single images or both mappings LDEV -> image; an image may be
    sparse (``SparseImage``: what it does not hold reads zeros). Reasons name
    the first differing sectors and the write ids each side's stamp shows.
    Cost: O(held sectors) of the two sides.
    """
    if isinstance(image, Mapping) != isinstance(reference, Mapping):
        raise ValueError("equals: pass two images or two mappings LDEV -> image")
    pairs = ({None: (image, reference)} if not isinstance(image, Mapping)
             else {k: (image.get(k), reference.get(k)) for k in sorted(set(image) | set(reference))})
    reasons: list[str] = []
    total = differ = 0
    for ldev, (a, b) in pairs.items():
        label = "" if ldev is None else f"ldev {ldev} "
        if a is None or b is None:
            reasons.append(f"{label}present on one side only")
            differ += 1
            continue
        sa, sb = as_image(a), as_image(b)
        if sa.n_sectors != sb.n_sectors:
            reasons.append(f"{label}size differs: {sa.n_sectors} vs {sb.n_sectors} sectors")
            differ += max(sa.n_sectors, sb.n_sectors)
            continue
        total += sa.n_sectors
        diff, wa, wb = _differing_sectors(sa, sb)
        differ += diff.size
        for i in range(min(diff.size, max(0, max_reasons - len(reasons)))):
            reasons.append(f"{label}lba {int(diff[i])}: image shows {_stamp_text(wa[i])}, "
                           f"reference shows {_stamp_text(wb[i])}")
    return Verdict(differ == 0, reasons[:max_reasons], {"sectors": total, "differing_sectors": differ},
                   units=[(k,) for k in pairs if k is not None])


def _differing_sectors(a: SparseImage, b: SparseImage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted lbas where two images of one size differ, with each side's words there."""
    if a.segments.size == 1 == b.segments.size and a.seg_sectors == a.n_sectors == b.seg_sectors:
        wa, wb = a.words(), b.words()   # two dense images
        diff = np.flatnonzero((wa != wb).any(axis=1))
        return diff, wa[diff], wb[diff]
    la, lb = a.sector_lbas(), b.sector_lbas()
    wa, wb = a.words(), b.words()
    both, ia, ib = np.intersect1d(la, lb, assume_unique=True, return_indices=True)
    only_a = np.setdiff1d(np.arange(la.size), ia, assume_unique=True)
    only_b = np.setdiff1d(np.arange(lb.size), ib, assume_unique=True)
    only_a = only_a[wa[only_a].any(axis=1)]   # a sector one side lacks reads zeros there
    only_b = only_b[wb[only_b].any(axis=1)]
    d_both = np.flatnonzero((wa[ia] != wb[ib]).any(axis=1))
    lbas = np.concatenate([both[d_both], la[only_a], lb[only_b]])
    zeros = lambda n: np.zeros((n, wa.shape[1] if wa.size else wb.shape[1]), np.uint64)  # noqa: E731
    side_a = np.concatenate([wa[ia[d_both]], wa[only_a], zeros(only_b.size)])
    side_b = np.concatenate([wb[ib[d_both]], zeros(only_a.size), wb[only_b]])
    order = np.argsort(lbas, kind="stable")
    return lbas[order], side_a[order], side_b[order]


def _stamp_text(words: np.ndarray) -> str:
    if not words.any():
        return "unwritten"
    if (int(words[0]) & 0xFFFFFFFF) == int.from_bytes(b"EMUW", "little"):
        return f"write {int(words[2])}"
    return "unstamped data"


# --------------------------------------------------------------------------
# warm-up

def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel a verify uses, in
    this process: call it before forking children that judge (a fork sweep's
    points, a campaign's seeds), or each child loads them again (about
    0.1 s of CPU per child, as much as the rest of a point's verify).

    A tiny image of two stamped writes, the later present and the earlier
    missing, so the dependent-write pass runs all its kernels; both the
    bytes and the track-segment forms an export gives."""
    from controllers.formats import stamp
    stamp.warm_up()
    spt = 8
    recs = [WriteRecord(1, "w", 0, 0, 4, 10, 20), WriteRecord(2, "w", 0, spt, 4, 30, 40)]
    track = make_payload(0, spt, 4, 2) + bytes((spt - 4) * SECTOR_BYTES)
    tracks = SparseImage.from_tracks(2, spt * SECTOR_BYTES, [1], np.frombuffer(track, np.uint8).copy())
    for image in (bytes(spt * SECTOR_BYTES) + track, tracks):
        check({0: image}, WriteLog(recs), [[0]])
        holds_all_acknowledged({0: image}, WriteLog(recs))
        equals(image, tracks)


# --------------------------------------------------------------------------
# CLI: emu check IMAGES_DIR WRITELOG [--unit ldev|group] [--group LDEV,LDEV...]

_IMG_RE = re.compile(r"ldev(\d+)\.img")


def load_images(images_dir: str | Path) -> dict[int, SparseImage]:
    """Read every ``ldev<N>.img`` in a folder (sparse files by their data
    extents only); ValueError naming the folder/file on trouble."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory")
    images = {}
    for path in sorted(folder.iterdir()):
        m = _IMG_RE.fullmatch(path.name)
        if not m:
            continue
        images[int(m.group(1))] = read_image_file(path)
    if not images:
        raise ValueError(f"{folder}: no ldev<N>.img files")
    return images


def _parse_group(text: str) -> list[int]:
    try:
        members = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--group: expected LDEV numbers like 0,1,2, got {text!r}") from None
    if not members:
        raise ValueError(f"--group: expected LDEV numbers like 0,1,2, got {text!r}")
    return members


def main(argv: Sequence[str] | None = None) -> int:
    """``emu check``: 0 consistent, 1 inconsistent, 2 bad input."""
    parser = argparse.ArgumentParser(prog="emu check", description="Check LDEV images against a write log.")
    parser.add_argument("images_dir", help="folder with ldev<N>.img files")
    parser.add_argument("writelog", nargs="?", help="write log CSV (emu run --writes); optional with --check")
    parser.add_argument("--unit", choices=("ldev", "group"), default="ldev",
                        help="consistency unit: each LDEV alone, or all LDEVs (or --group) as one")
    parser.add_argument("--group", action="append", default=[],
                        help="LDEVs of one consistency group, e.g. 0,1,2 (repeatable)")
    parser.add_argument("--site", action="append", default=None, help="only writes issued at this site")
    parser.add_argument("--all-acked", action="store_true",
                        help="also require every acknowledged write (sync PAIR)")
    parser.add_argument("--check", choices=["sqlite", "ext4"],
                        help="judge an application's LDEV as it would (controllers.verify.apps), "
                             "beside the stamp checker")
    parser.add_argument("--facts", metavar="CAPTURE.json",
                        help="with --check: the capture's application facts (its LDEV, invariants)")
    parser.add_argument("--acked-txid", type=int, default=-1,
                        help="with --check sqlite: the last transaction acknowledged before the suspension")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if args.check:
        return _app_main(args)
    if args.writelog is None:
        print("emu check: a write log is needed (or --check APP)", file=sys.stderr)
        return 2
    try:
        images = load_images(args.images_dir)
        log = WriteLog.load(args.writelog)
        if args.group:
            units = [_parse_group(g) for g in args.group]
        elif args.unit == "group":
            units = [sorted(images)]
        else:
            units = None
    except (ValueError, OSError) as exc:
        print(f"emu check: {exc}", file=sys.stderr)
        return 2
    try:
        verdict = check(images, log, units, sites=args.site, require_all_acked=args.all_acked)
    except ValueError as exc:
        print(f"emu check: {args.writelog} does not fit {args.images_dir}: {exc}", file=sys.stderr)
        return 2
    print(verdict.summary())
    return 0 if verdict.consistent else 1


def _app_main(args) -> int:
    """``emu check DIR --check APP --facts CAPTURE.json``: the application verdict of its
    LDEV's image (and the stamp checker on the other LDEVs, if a write log is given)."""
    from controllers.verify.apps import AppCheckError, check_ext4, check_sqlite, load_facts
    if not args.facts:
        print("emu check: --check needs --facts CAPTURE.json (the capture's application facts)", file=sys.stderr)
        return 2
    try:
        images = load_images(args.images_dir)
        meta = load_facts(args.facts)
        if meta["ldev"] not in images:
            raise ValueError(f"{args.images_dir}: no ldev{meta['ldev']}.img (the application's LDEV)")
    except (ValueError, OSError, AppCheckError) as exc:
        print(f"emu check: {exc}", file=sys.stderr)
        return 2
    if meta["app"] != args.check:
        print(f"emu check: {args.facts} describes a {meta['app']} application, not {args.check}", file=sys.stderr)
        return 2
    image = images[meta["ldev"]]
    try:
        if args.check == "sqlite":
            v = check_sqlite(image, meta["invariants"], args.acked_txid, meta["db"])
            facts = f"integrity_check {v['integrity']}; " + ", ".join(f"{k} {val}" for k, val in v["values"].items())
        else:
            v = check_ext4(image, meta["durable"])
            facts = f"e2fsck {v['fsck']}; {v['files_checked']} durable files read"
    except AppCheckError as exc:
        print(f"emu check: {exc}", file=sys.stderr)
        return 2
    print(f"{args.check} ldev {meta['ldev']}: {'CONSISTENT' if v['ok'] else 'INCONSISTENT'}: {facts}"
          + (f"; {'; '.join(v['problems'])}" if v["problems"] else ""))
    ok = v["ok"]
    others = {k: img for k, img in images.items() if k != meta["ldev"]}
    if args.writelog and others:
        try:
            verdict = check(others, WriteLog.load(args.writelog), None, sites=args.site)
        except (ValueError, OSError) as exc:
            print(f"emu check: {exc}", file=sys.stderr)
            return 2
        print(f"stamped LDEVs {sorted(others)}: {verdict.summary()}")
        ok = ok and verdict.consistent
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
