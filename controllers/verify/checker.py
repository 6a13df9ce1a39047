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

Cost: one vectorised scan of the images (stamp + filler check) and one pass
over the sectors of every logged write (chunked); ~100k writes on a few
MiB of LDEVs take well under a second.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from controllers.formats.stamp import CORRUPT, SECTOR_BYTES, UNWRITTEN, ImageScan, scan_image
from controllers.formats.writelog import WriteLog

MAX_REASONS = 5
_CHUNK_ENTRIES = 1 << 22
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
    array, length a multiple of 512). ``units`` lists consistency units
    (default: each LDEV alone); writes to LDEVs outside every unit are
    ignored. ``sites`` restricts the log to writes issued at those sites.
    ``require_all_acked`` (sync PAIR) makes every acknowledged write that
    is not held a violation. Raises ValueError on input that does not fit
    (an image of the wrong size, a logged write past the end of its LDEV).
    """
    unit_list = _normalise_units(images, units)
    scans = {ldev: scan_image(images[ldev], ldev) for ldev in sorted({m for u in unit_list for m in u})}
    arrays = _log_arrays(log, sites)
    verdicts = [_check_unit(u, scans, arrays, require_all_acked, max_reasons) for u in unit_list]
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
    held = np.unique(np.concatenate([v.held_write_ids for v in verdicts])) if verdicts else np.zeros(0, np.int64)
    return Verdict(all(v.consistent for v in verdicts), reasons[:max_reasons], counts, lo, hi, list(units), held)


def _unit_sectors(unit: tuple[int, ...], scans: Mapping[int, ImageScan]):
    """Concatenate the unit's scans; returns (base offsets, state, write ids, ldev of sector, lba of sector)."""
    sizes = [scans[m].state.size for m in unit]
    base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    state = np.concatenate([scans[m].state for m in unit])
    wids = np.concatenate([scans[m].write_ids for m in unit])
    sec_ldev = np.repeat(np.asarray(unit, dtype=np.int64), sizes)
    sec_lba = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])
    return base, np.asarray(sizes, dtype=np.int64), state, wids, sec_ldev, sec_lba


def _where(ldev: int, lba: int) -> str:
    return f"ldev {ldev} lba {lba}"


def _check_unit(unit: tuple[int, ...], scans: Mapping[int, ImageScan], all_log: _Log,
                require_all_acked: bool, max_reasons: int) -> Verdict:
    log = all_log.take(np.isin(all_log.ldev, unit))
    base, sizes, state, wids, sec_ldev, sec_lba = _unit_sectors(unit, scans)
    unit_arr = np.asarray(unit, dtype=np.int64)
    pos = np.searchsorted(unit_arr, log.ldev)
    start = base[pos] + log.lba                      # global sector of each write's first sector
    too_long = log.lba + log.sectors > sizes[pos]
    if too_long.any():
        i = int(np.flatnonzero(too_long)[0])
        raise ValueError(f"write {int(log.wid[i])} ({_where(int(log.ldev[i]), int(log.lba[i]))}, "
                         f"{int(log.sectors[i])} sectors) runs past the end of its LDEV image "
                         f"({int(sizes[pos[i]])} sectors)")
    reasons: list[str] = []

    # (a) per-sector log index of the write each sector shows
    cidx = np.full(state.size, _IDX_UNWRITTEN, dtype=np.int64)
    cidx[state == CORRUPT] = _IDX_BAD
    stamped = np.flatnonzero(wids > 0)
    k = np.searchsorted(log.wid, wids[stamped])
    k_clip = np.minimum(k, max(log.wid.size - 1, 0))
    known = (k < log.wid.size) & (log.wid[k_clip] == wids[stamped]) if log.wid.size else np.zeros(stamped.size, bool)
    inside = np.zeros(stamped.size, dtype=bool)
    g = stamped[known]
    kk = k[known]
    inside[known] = (g >= start[kk]) & (g < start[kk] + log.sectors[kk])
    cidx[stamped[known & inside]] = k[known & inside]
    cidx[stamped[~(known & inside)]] = _IDX_BAD
    unknown = stamped[~known]
    misplaced = stamped[known & ~inside]
    corrupt = np.flatnonzero(state == CORRUPT)
    for s in corrupt[:max_reasons]:
        reasons.append(f"corrupt/torn sector at {_where(int(sec_ldev[s]), int(sec_lba[s]))}")
    for s in unknown[:max_reasons]:
        reasons.append(f"sector {_where(int(sec_ldev[s]), int(sec_lba[s]))} holds write {int(wids[s])} not in the log")
    for s in misplaced[:max_reasons]:
        reasons.append(f"sector {_where(int(sec_ldev[s]), int(sec_lba[s]))} holds write {int(wids[s])}, "
                       f"which the log puts elsewhere")

    # visible and required writes
    vis_idx = np.unique(cidx[cidx >= 0])
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
    counts = {"sectors": int(state.size), "unwritten_sectors": int((state == UNWRITTEN).sum()),
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
    if writes.size == 0:
        return out
    lens = log.sectors[writes]
    ends = np.cumsum(lens)
    # chunk so that no chunk expands to more than _CHUNK_ENTRIES sectors
    cuts = np.searchsorted(ends, np.arange(_CHUNK_ENTRIES, int(ends[-1]), _CHUNK_ENTRIES), side="left")
    for chunk in np.split(writes, np.unique(np.maximum(cuts, 1))):
        if chunk.size == 0:
            continue
        n = log.sectors[chunk]
        owner = np.repeat(chunk, n)
        offset = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
        g = start[owner] + offset
        c = cidx[g]
        c_safe = np.maximum(c, 0)
        held = (c == owner) | ((c >= 0) & (log.complete[c_safe] > log.issue[owner]))
        bad = np.flatnonzero(~held)
        if bad.size:
            # first failing sector per owner: bad is in ascending g within each owner
            owners_bad, first = np.unique(owner[bad], return_index=True)
            out[owners_bad] = g[bad[first]]
    return out


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

    Both are single images or both mappings LDEV -> image. Reasons name the
    first differing sectors and the write ids each side's stamp shows.
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
        wa, wb = _sector_words(a), _sector_words(b)
        if wa.shape != wb.shape:
            reasons.append(f"{label}size differs: {wa.shape[0]} vs {wb.shape[0]} sectors")
            differ += max(wa.shape[0], wb.shape[0])
            continue
        total += wa.shape[0]
        diff = np.flatnonzero((wa != wb).any(axis=1))
        differ += diff.size
        for s in diff[: max(0, max_reasons - len(reasons))]:
            reasons.append(f"{label}lba {int(s)}: image shows {_stamp_text(wa[s])}, "
                           f"reference shows {_stamp_text(wb[s])}")
    return Verdict(differ == 0, reasons[:max_reasons], {"sectors": total, "differing_sectors": differ},
                   units=[(k,) for k in pairs if k is not None])


def _sector_words(image) -> np.ndarray:
    buf = np.frombuffer(image, dtype=np.uint8) if not isinstance(image, np.ndarray) else image.view(np.uint8).reshape(-1)
    if buf.size % SECTOR_BYTES:
        raise ValueError(f"image size {buf.size} B is not a multiple of {SECTOR_BYTES} B")
    return buf.view("<u8").reshape(-1, SECTOR_BYTES // 8)


def _stamp_text(words: np.ndarray) -> str:
    if not words.any():
        return "unwritten"
    if (int(words[0]) & 0xFFFFFFFF) == int.from_bytes(b"EMUW", "little"):
        return f"write {int(words[2])}"
    return "unstamped data"


# --------------------------------------------------------------------------
# CLI: emu check IMAGES_DIR WRITELOG [--unit ldev|group] [--group LDEV,LDEV...]

_IMG_RE = re.compile(r"ldev(\d+)\.img")


def load_images(images_dir: str | Path) -> dict[int, bytes]:
    """Read every ``ldev<N>.img`` in a folder; ValueError naming the folder/file on trouble."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory")
    images = {}
    for path in sorted(folder.iterdir()):
        m = _IMG_RE.fullmatch(path.name)
        if not m:
            continue
        data = path.read_bytes()
        if len(data) % SECTOR_BYTES:
            raise ValueError(f"{path}: size {len(data)} B is not a multiple of {SECTOR_BYTES} B")
        images[int(m.group(1))] = data
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
