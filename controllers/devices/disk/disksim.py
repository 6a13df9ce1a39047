"""DiskSim 4.0 parameter files -> DiskParams (pure: reads files, no sockets, no clock).

The grammar is DiskSim's libparam (src/disksim_loadparams.c, libparam/):

    # comment to end of line
    source other.diskspecs                      (include, relative to this file)
    TYPE NAME { Key words = value, ... }        (a named definition)
    instantiate [ disk0, disk1 ] as NAME
    topology TYPE INSTANCE [ TYPE INSTANCE [ ... ] ]

A value is an integer, a real, a bare word (string), a list ``[ v, v ]``, a
nested block ``TYPE { ... }``, or ``source FILE`` (the block defined in that
file).  Keys are words with blanks, case-sensitive in DiskSim; here matched
without regard to case or repeated blanks.  A ``.seek`` file (extracted seek
curve, named by ``Full seek curve``) is ``Seek distances measured: N`` then N
lines ``distance, ms``.

``parse(path) -> Spec`` gives the tree, every block and value with its
file:line; ``params_from_spec(path) -> DiskParams`` maps the disk that the
file describes (the one instantiated, or the only ``disksim_disk``) onto
the model, with the bus it hangs on from the topology.  Errors are
``SpecError`` naming file:line and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SOURCE_DEPTH_MAX = 16      # nested `source` includes; deeper is a loop


class SpecError(ValueError):
    """A DiskSim file that cannot be read or mapped: the message names file:line and key."""


@dataclass
class Entry:
    """One ``key = value`` with where it was written."""
    key: str
    value: object          # int | float | str | list | Block
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Block:
    """``TYPE [NAME] { entries }``; entries keyed by normalised key."""
    type: str
    name: str | None
    file: str
    line: int
    entries: dict = field(default_factory=dict)
    used: set = field(default_factory=set)      # normalised keys read by the mapper

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def entry(self, key: str) -> Entry | None:
        k = norm_key(key)
        e = self.entries.get(k)
        if e is not None:
            self.used.add(k)
        return e

    def has(self, key: str) -> bool:
        return norm_key(key) in self.entries


@dataclass
class Spec:
    """Everything one top-level file defines, with its includes."""
    path: str
    blocks: dict = field(default_factory=dict)         # name -> Block
    instances: dict = field(default_factory=dict)      # instance name -> (type name, file, line)
    topology: list = field(default_factory=list)       # [(type, instance, [children])]
    files: list = field(default_factory=list)          # every file read, in order


def norm_key(key: str) -> str:
    return " ".join(key.split()).lower()


# ---------------------------------------------------------------------- lexer
_TOKEN = re.compile(r"""
    (?P<space>[ \t\r]+) | (?P<nl>\n) | (?P<comment>\#[^\n]*) |
    (?P<punct>[{}\[\],=]) |
    (?P<word>[^\s{}\[\],=\#]+)
""", re.VERBOSE)


@dataclass(frozen=True)
class _Tok:
    kind: str      # "punct" | "word" | "eof"
    text: str
    line: int


def _lex(text: str, fname: str) -> list[_Tok]:
    out, line, pos = [], 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:                          # cannot happen: word takes anything else
            raise SpecError(f"{fname}:{line}: unreadable character {text[pos]!r}")
        kind = m.lastgroup
        if kind == "nl":
            line += 1
        elif kind in ("punct", "word"):
            out.append(_Tok(kind, m.group(), line))
        pos = m.end()
    out.append(_Tok("eof", "", line))
    return out


# ---------------------------------------------------------------------- parser
class _Parser:
    """Recursive descent over one file's tokens; `source` opens a new _Parser."""

    def __init__(self, path: Path, spec: Spec, depth: int):
        self.path = path
        self.fname = str(path)
        self.spec = spec
        self.depth = depth
        try:
            text = path.read_text()
        except OSError as e:
            raise SpecError(f"{path}: cannot read: {e.strerror or e}") from None
        spec.files.append(self.fname)
        self.toks = _lex(text, self.fname)
        self.i = 0

    # token helpers
    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return t

    def expect(self, text: str, what: str) -> _Tok:
        t = self.take()
        if t.text != text or t.kind == "eof":
            got = "end of file" if t.kind == "eof" else repr(t.text)
            raise SpecError(f"{self.fname}:{t.line}: expected {text!r} {what}, got {got}")
        return t

    def err(self, tok: _Tok, msg: str) -> SpecError:
        return SpecError(f"{self.fname}:{tok.line}: {msg}")

    # top level
    def top(self) -> None:
        while self.peek().kind != "eof":
            t = self.peek()
            if t.kind != "word":
                raise self.err(t, f"expected a definition, 'source', 'instantiate' or 'topology', got {t.text!r}")
            if t.text == "source":
                self.take()
                self.include(self.take_word("a file name after 'source'"))
            elif t.text == "instantiate":
                self.instantiate()
            elif t.text == "topology":
                self.take()
                self.spec.topology.append(self.topology_node())
            else:
                self.definition()

    def take_word(self, what: str) -> _Tok:
        t = self.take()
        if t.kind != "word":
            raise self.err(t, f"expected {what}, got {'end of file' if t.kind == 'eof' else repr(t.text)}")
        return t

    def include(self, tok: _Tok) -> Spec:
        if self.depth >= SOURCE_DEPTH_MAX:
            raise self.err(tok, f"'source {tok.text}' nested more than {SOURCE_DEPTH_MAX} deep (a loop?)")
        target = self.path.parent / tok.text
        if not target.is_file():
            raise self.err(tok, f"source {tok.text}: no such file {target}")
        _Parser(target, self.spec, self.depth + 1).top()
        return self.spec

    def definition(self) -> None:
        type_tok = self.take_word("a block type")
        name_tok = self.take_word(f"a name after {type_tok.text!r}")
        block = self.block_body(type_tok.text, name_tok.text, type_tok.line)
        if name_tok.text in self.spec.blocks:
            prev = self.spec.blocks[name_tok.text]
            raise self.err(name_tok, f"{name_tok.text!r} defined twice (first at {prev.where})")
        self.spec.blocks[name_tok.text] = block

    def instantiate(self) -> None:
        t = self.take()
        self.expect("[", "after 'instantiate'")
        names = []
        while self.peek().text != "]":
            names.append(self.take_word("an instance name").text)
            if self.peek().text == ",":
                self.take()
        self.expect("]", "closing the instance list")
        as_tok = self.take_word("'as'")
        if as_tok.text != "as":
            raise self.err(as_tok, f"expected 'as' after the instance list, got {as_tok.text!r}")
        type_name = self.take_word("a definition name after 'as'").text
        for n in names:
            self.spec.instances[n] = (type_name, self.fname, t.line)

    def topology_node(self):
        type_tok = self.take_word("a component type in the topology")
        inst = self.take_word("an instance name in the topology").text
        self.expect("[", f"after topology component {inst!r}")
        children = []
        while self.peek().text != "]":
            if self.peek().kind == "eof":
                raise self.err(self.peek(), "topology: missing ']'")
            children.append(self.topology_node())
            if self.peek().text == ",":
                self.take()
        self.take()
        return (type_tok.text, inst, children)

    def block_body(self, btype: str, name: str | None, line: int) -> Block:
        block = Block(btype, name, self.fname, line)
        self.expect("{", f"opening block {btype} {name or ''}".rstrip())
        while True:
            t = self.peek()
            if t.text == "}":
                self.take()
                return block
            if t.kind == "eof":
                raise self.err(t, f"block {btype} {name or ''} opened at line {line} is not closed".replace("  ", " "))
            key_tok = t
            words = []
            while self.peek().kind == "word":
                words.append(self.take().text)
            if not words:
                raise self.err(self.peek(), f"expected a key in block {btype}, got {self.peek().text!r}")
            key = " ".join(words)
            self.expect("=", f"after key '{key}'")
            value = self.value(key)
            k = norm_key(key)
            if k in block.entries:
                raise self.err(key_tok, f"key '{key}' given twice in block {btype} "
                                        f"(first at {block.entries[k].where})")
            block.entries[k] = Entry(key, value, self.fname, key_tok.line)
            nxt = self.peek()
            if nxt.text == ",":
                self.take()
            elif nxt.text != "}":
                raise self.err(nxt, f"key '{key}': expected ',' or '}}' after the value, got "
                                    f"{'end of file' if nxt.kind == 'eof' else repr(nxt.text)}")

    def value(self, key: str):
        t = self.peek()
        if t.text == "[":
            self.take()
            items = []
            while self.peek().text != "]":
                if self.peek().kind == "eof":
                    raise self.err(self.peek(), f"key '{key}': list opened at line {t.line} is not closed")
                items.append(self.value(key))
                if self.peek().text == ",":
                    self.take()
                elif self.peek().text != "]":
                    raise self.err(self.peek(), f"key '{key}': expected ',' or ']' in the list, "
                                                f"got {self.peek().text!r}")
            self.take()
            return items
        if t.kind != "word":
            raise self.err(t, f"key '{key}': expected a value, got "
                              f"{'end of file' if t.kind == 'eof' else repr(t.text)}")
        if t.text == "source" and self.peek(1).kind == "word":
            self.take()
            return self.sourced_block(key, self.take())
        if self.peek(1).text == "{":
            self.take()
            return self.block_body(t.text, None, t.line)
        self.take()
        words = [t.text]
        while self.peek().kind == "word":      # a bare string of several words
            words.append(self.take().text)
        return _scalar(" ".join(words))

    def sourced_block(self, key: str, tok: _Tok) -> Block:
        """``Key = source FILE``: FILE defines one block, which is the value."""
        before = set(self.spec.blocks)
        self.include(tok)
        new = [n for n in self.spec.blocks if n not in before]
        if len(new) != 1:
            raise self.err(tok, f"key '{key}': source {tok.text} must define exactly one block, "
                                f"defines {len(new)}")
        return self.spec.blocks[new[0]]


_INT = re.compile(r"[-+]?\d+\Z")
_REAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z")


def _scalar(text: str):
    if _INT.match(text):
        return int(text)
    if _REAL.match(text):
        return float(text)
    return text


def parse(path: str | Path) -> Spec:
    """Parse a DiskSim parameter file and everything it sources."""
    path = Path(path)
    spec = Spec(str(path))
    _Parser(path, spec, 0).top()
    return spec


# ---------------------------------------------------------------------- .seek
def read_seek_table(path: Path, where: str, key: str) -> tuple:
    """``Seek distances measured: N`` then N ``distance, ms`` lines -> ((d, ms), ...)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise SpecError(f"{where}: key '{key}': cannot read seek table {path}: {e.strerror or e}") from None
    head = lines[0] if lines else ""
    m = re.match(r"\s*Seek distances measured:\s*(\d+)\s*$", head)
    if not m:
        raise SpecError(f"{path}:1: key '{key}': expected 'Seek distances measured: N', got {head!r}")
    n = int(m.group(1))
    out = []
    for no, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
        try:
            d, ms = int(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise SpecError(f"{path}:{no}: key '{key}': expected 'distance, ms', got {line.strip()!r}") from None
        if out and d <= out[-1][0]:
            raise SpecError(f"{path}:{no}: key '{key}': distances must ascend ({d} after {out[-1][0]})")
        out.append((d, ms))
    if len(out) != n:
        raise SpecError(f"{path}:1: key '{key}': header says {n} distances, file has {len(out)}")
    return tuple(out)


# ---------------------------------------------------------------------- mapping
SEEK_TYPES = ("constant", "hpl", "hplplus10", "extracted")
_SCHEMES = {0: "none", 1: "track", 2: "sectpercyl", 3: "sectpertrack", 4: "sectpercyl_sliptoend",
            7: "sectatend", 8: "range", 9: "zone"}
_ORDERS = {0: "normal", 1: "serpentine-zone", 2: "serpentine-even"}


@dataclass
class MapReport:
    """What the mapper read and what it left aside (printed by --verbose)."""
    ignored: list = field(default_factory=list)     # "file:line: block: key = value"
    notes: list = field(default_factory=list)       # approximations made, with reasons


class _Reader:
    """Typed access to a block's entries; every error names file:line and key."""

    def __init__(self, block: Block):
        self.b = block

    def _get(self, key: str, required: bool):
        e = self.b.entry(key)
        if e is None and required:
            raise SpecError(f"{self.b.where}: block {self.b.type} {self.b.name or ''}".rstrip()
                            + f": missing key '{key}'")
        return e

    def num(self, key: str, default=None, lo=None, hi=None) -> float | None:
        e = self._get(key, default is None)
        if e is None:
            return default
        if isinstance(e.value, bool) or not isinstance(e.value, (int, float)):
            raise SpecError(f"{e.where}: key '{e.key}': expected a number, got {e.value!r}")
        v = e.value
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise SpecError(f"{e.where}: key '{e.key}': {v} outside {lo}..{hi}")
        return v

    def int(self, key: str, default=None, lo=None, hi=None) -> int | None:
        v = self.num(key, default, lo, hi)
        if v is None:
            return None
        if v != int(v):
            e = self.b.entry(key)
            raise SpecError(f"{e.where}: key '{e.key}': expected an integer, got {v}")
        return int(v)

    def word(self, key: str, default=None) -> str | None:
        e = self._get(key, default is None)
        if e is None:
            return default
        if not isinstance(e.value, (str, int, float)) or isinstance(e.value, bool):
            raise SpecError(f"{e.where}: key '{e.key}': expected a word, got a {type(e.value).__name__}")
        return str(e.value)

    def block(self, key: str) -> Block:
        e = self._get(key, True)
        if not isinstance(e.value, Block):
            raise SpecError(f"{e.where}: key '{e.key}': expected a block, got {e.value!r}")
        return e.value

    def ints(self, key: str, default=()) -> tuple:
        e = self._get(key, default is None)
        if e is None:
            return tuple(default)
        if not isinstance(e.value, list) or not all(isinstance(v, int) for v in e.value):
            raise SpecError(f"{e.where}: key '{e.key}': expected a list of integers")
        return tuple(e.value)

    def nums(self, key: str, n: int) -> tuple:
        e = self._get(key, True)
        if (not isinstance(e.value, list) or len(e.value) != n
                or not all(isinstance(v, (int, float)) for v in e.value)):
            raise SpecError(f"{e.where}: key '{e.key}': expected a list of {n} numbers")
        return tuple(float(v) for v in e.value)

    def entry(self, key: str) -> Entry:
        return self._get(key, True)


def _find_disk(spec: Spec) -> tuple[Block, str | None]:
    """The disk the file describes: the one instantiated, else the only
    disksim_disk defined.  Returns (block, instance name or None)."""
    inst = [(n, t) for n, (t, _, _) in spec.instances.items()
            if t in spec.blocks and spec.blocks[t].type == "disksim_disk"]
    names = sorted({t for _, t in inst})
    if len(names) > 1:
        raise SpecError(f"{spec.path}: instantiates several disk types ({', '.join(names)}); "
                        f"give a file that describes one")
    if names:
        return spec.blocks[names[0]], sorted(n for n, t in inst)[0]
    disks = [b for b in spec.blocks.values() if b.type == "disksim_disk"]
    if len(disks) != 1:
        raise SpecError(f"{spec.path}: expected one disksim_disk block, found {len(disks)}")
    return disks[0], None


def _parent_bus(spec: Spec, instance: str | None) -> Block | None:
    """The bus block directly above `instance` in the topology, if any."""
    if instance is None:
        return None

    def walk(node, parent):
        typ, name, children = node
        if name == instance:
            return parent
        for ch in children:
            got = walk(ch, (typ, name))
            if got is not None:
                return got
        return None

    for root in spec.topology:
        p = walk(root, None)
        if p is not None and p[0] == "disksim_bus":
            t = spec.instances.get(p[1], (None,))[0]
            return spec.blocks.get(t)
    return None


def _zone(r: _Reader, skew_units: str) -> dict:
    spt = r.int("Blocks per track", lo=1)
    units = r.word("Skew units", skew_units)
    if units not in ("sectors", "revolutions"):
        e = r.entry("Skew units")
        raise SpecError(f"{e.where}: key '{e.key}': expected sectors or revolutions, got {units!r}")

    def skew(key):
        v = r.num(key, 0.0)
        # DiskSim: sectors are truncated to whole sectors; revolutions are an angle
        return int(v) if units == "sectors" else int(round(v * spt)) % spt

    defects = r.ints("defects", ())
    if len(defects) % 2:
        e = r.entry("defects")
        raise SpecError(f"{e.where}: key '{e.key}': defects are (defective, replacement) pairs; "
                        f"got an odd count {len(defects)}")
    first = r.int("First cylinder number", lo=0)
    last = r.int("Last cylinder number", lo=first)
    return dict(first_cyl=first, last_cyl=last, sectors_per_track=spt,
                track_skew=skew("Skew for track switch"), cyl_skew=skew("Skew for cylinder switch"),
                first_sector_offset=skew("Offset of first block"),
                slips=r.ints("slips", ()), spares=r.int("Number of spares", 0, lo=0),
                deadspace_sectors=r.int("Empty space at zone front", 0, lo=0),
                defects=tuple(zip(defects[0::2], defects[1::2])))


def _seek(mech: _Reader) -> dict:
    """Seek curve fields of DiskParams from a dm_mech_g1 block
    (DiskSim diskmodel/mech_g1_seektime.c).  "hpl" splits at v1 cylinders as
    Ruemmler & Wilkes define it (DiskSim 4.0's own hpl reads an unset split
    and is linear everywhere; its hplplus10 uses v1, as here)."""
    kind = mech.word("Seek type")
    out: dict = {}
    if mech.b.has("Full seek curve"):         # DiskSim: naming a curve selects "extracted"
        kind = "extracted"
    if kind == "extracted":
        e = mech.entry("Full seek curve")
        path = (Path(e.file).parent / str(e.value))
        if not path.is_file():
            raise SpecError(f"{e.where}: key '{e.key}': no such seek file {path}")
        out["seek_table_ms"] = read_seek_table(path, e.where, e.key)
        out["seek_table_extrapolate"] = True
    elif kind in ("hpl", "hplplus10"):
        v1, a, b, c, e_, one_flag = mech.nums("HPL seek equation values", 6)
        out.update(seek_boundary_cyl=int(v1), seek_a_ms=a, seek_b_ms=b, seek_c_ms=c, seek_e_ms=e_)
        if kind == "hplplus10":
            ten = mech.nums("First ten seek times", 10)
            out["seek_table_ms"] = tuple((d, ms) for d, ms in zip(range(1, 11), ten))
        elif one_flag != -1:
            out["seek_table_ms"] = ((1, mech.num("Single cylinder seek time", lo=0)),)
    elif kind == "constant":
        out.update(seek_boundary_cyl=0, seek_c_ms=mech.num("Constant seek time", lo=0), seek_e_ms=0.0)
    else:
        e = mech.entry("Seek type")
        raise SpecError(f"{e.where}: key '{e.key}': seek type {kind!r} not supported "
                        f"(supported: {', '.join(SEEK_TYPES)})")
    return out


def _layout(model: _Reader, report: MapReport) -> dict:
    lay = _Reader(model.block("Layout Model"))
    if lay.b.type != "dm_layout_g1":
        raise SpecError(f"{lay.b.where}: key 'Layout Model': layout {lay.b.type!r} not supported "
                        f"(supported: dm_layout_g1)")
    mapping = lay.int("LBN-to-PBN mapping scheme", 0)
    if mapping not in _ORDERS:
        e = lay.entry("LBN-to-PBN mapping scheme")
        raise SpecError(f"{e.where}: key '{e.key}': mapping scheme {mapping} not supported (supported: "
                        + ", ".join(f"{k} {v}" for k, v in _ORDERS.items()) + ")")
    code = lay.int("Sparing scheme used", 0)
    if code not in _SCHEMES:
        e = lay.entry("Sparing scheme used")
        raise SpecError(f"{e.where}: key '{e.key}': sparing scheme {code} not supported (supported: "
                        + ", ".join(f"{k} {v}" for k, v in _SCHEMES.items()) + ")")
    scheme = _SCHEMES[code]
    surfaces = model.int("Number of data surfaces", lo=1)
    units = lay.word("Skew units", "sectors")
    ez = lay.entry("Zones")
    if not isinstance(ez.value, list) or not ez.value:
        raise SpecError(f"{ez.where}: key '{ez.key}': expected a list of dm_layout_g1_zone blocks")
    zones = []
    for z in ez.value:
        if not isinstance(z, Block) or z.type != "dm_layout_g1_zone":
            raise SpecError(f"{ez.where}: key '{ez.key}': expected dm_layout_g1_zone blocks, got {z!r}")
        zones.append(_zone(_Reader(z), units))
        _leftovers(z, report)
    _leftovers(lay.b, report)
    return dict(surfaces=surfaces, sparing=scheme, surface_order=_ORDERS[mapping],
                spare_range_cyl=lay.int("Rangesize for sparing", 1, lo=1), zones=zones)


def _leftovers(block: Block, report: MapReport) -> None:
    for k, e in block.entries.items():
        if k not in block.used and not isinstance(e.value, Block):
            report.ignored.append(f"{e.where}: {block.type} {block.name or ''}".rstrip()
                                  + f": {e.key} = {e.value!r}")


def _ms_to_ns(ms: float) -> int:
    return int(round(ms * 1_000_000))


def load(path: str | Path, report: MapReport | None = None):
    """Parse `path` (.parv or .diskspecs) and map its disk -> DiskParams.
    `report` collects the keys left unused and the approximations made."""
    from controllers.devices.disk.model import DiskModel, DiskParams
    report = MapReport() if report is None else report
    spec = parse(Path(path))
    disk_b, inst = _find_disk(spec)
    disk = _Reader(disk_b)
    model = _typed(disk.block("Model"), "Model", "dm_disk")
    mech = _typed(model.block("Mechanical Model"), "Mechanical Model", "dm_mech_g1")
    fields = dict(name=disk_b.name, **_geometry(model, report), **_mechanics(mech),
                  **_controller(disk, _parent_bus(spec, inst), report), **_cache(disk))
    _approximations(disk, mech, report)
    try:
        params = DiskParams(**fields)
    except ValueError as e:               # the model's own checks (zones, spares, ...)
        raise SpecError(f"{disk_b.where}: disk {disk_b.name}: {e}") from None
    declared = model.int("Block count", 0, lo=0)
    got = DiskModel(params).lba_count
    if declared and declared != got:
        e = model.entry("Block count")
        report.notes.append(f"{e.where}: {e.key} = {declared}, but the zones give {got} blocks "
                            f"(DiskSim also uses the zones' figure)")
    for b in (disk_b, model.b, mech.b):
        _leftovers(b, report)
    return params


def _typed(block: Block, key: str, btype: str) -> _Reader:
    if block.type != btype:
        raise SpecError(f"{block.where}: key '{key}': {block.type!r} not supported (supported: {btype})")
    return _Reader(block)


def _geometry(model: _Reader, report: MapReport) -> dict:
    """Cylinders, surfaces, zones and sparing (dm_disk + dm_layout_g1)."""
    from controllers.devices.disk.model import Zone
    lay = _layout(model, report)
    cylinders = model.int("Number of cylinders", lo=1)
    last = max(z["last_cyl"] for z in lay["zones"])
    if last >= cylinders:              # DiskSim does not check; the zones are what it maps
        e = model.entry("Number of cylinders")
        report.notes.append(f"{e.where}: {e.key} = {cylinders}, but a zone ends at cylinder "
                            f"{last}: the disk is taken to have {last + 1}")
        cylinders = last + 1
    return dict(cylinders=cylinders, surfaces=lay["surfaces"],
                zones=tuple(Zone(**z) for z in lay["zones"]),
                sparing=lay["sparing"], spare_range_cyl=lay["spare_range_cyl"],
                surface_order=lay["surface_order"])


def _mechanics(mech: _Reader) -> dict:
    """Rotation, seek, head switch and write settle (dm_mech_g1)."""
    acc = mech.word("Access time type", "trackSwitchPlusRotation")
    if acc != "trackSwitchPlusRotation":
        e = mech.entry("Access time type")
        raise SpecError(f"{e.where}: key '{e.key}': {acc!r} not supported "
                        f"(supported: trackSwitchPlusRotation)")
    return dict(rpm=mech.num("Rotation speed (in rpms)", lo=1), **_seek(mech),
                head_switch_ms=mech.num("Head switch time", 0.0, lo=0),
                write_settle_ms=mech.num("Add. write settling delay", 0.0))


def _controller(disk: _Reader, bus: Block | None, report: MapReport) -> dict:
    """Command, completion, disconnect and reselect overheads (scaled by
    "Time scale for overheads") and the transfer time per block: the slower
    of the bus above the disk and the disk's own (disk_get_blktranstime)."""
    scale = disk.num("Time scale for overheads", 1.0, lo=0)

    def ov(key):
        return disk.num(key, 0.0, lo=0) * scale

    bus_r = bus_w = 0.0
    if bus is not None:
        br = _Reader(bus)
        bus_r = br.num("Read block transfer time", 0.0, lo=0)
        bus_w = br.num("Write block transfer time", 0.0, lo=0)
        _leftovers(bus, report)
    bulk = disk.num("Bulk sector transfer time", 0.0, lo=0)
    # DiskSim charges write *hit* overheads when write-back caching is on
    w = "hit" if disk.int("Fast write level", 0, lo=0, hi=2) else "miss"
    out = dict(
        read_miss_overhead_ms=ov("Read miss over. after read"),
        read_miss_after_write_overhead_ms=ov("Read miss over. after write"),
        read_hit_overhead_ms=ov("Read hit over. after read"),
        read_hit_after_write_overhead_ms=ov("Read hit over. after write"),
        write_overhead_ms=ov(f"Write {w} over. after read"),
        write_after_write_overhead_ms=ov(f"Write {w} over. after write"),
        read_completion_ms=ov("Read completion overhead"),
        per_request_overhead_ms=ov("Per-request overhead time"),
        write_completion_ms=ov("Write completion overhead"),
        bus_ns_per_sector=_ms_to_ns(max(bus_r, bulk)),
        bus_write_ns_per_sector=_ms_to_ns(max(bus_w, bulk)),
        read_water=disk.num("High (read) water mark", 0.0, lo=0, hi=1),
        water_by_request=bool(disk.int("Set watermark by reqsize", 1, lo=0, hi=1)),
        disconnect_read_after_read_ms=ov("Read disconnect afterread"),
        disconnect_read_after_write_ms=ov("Read disconnect afterwrite"),
        disconnect_write_ms=ov("Write disconnect overhead"),
        write_min_seek_ms=disk.num("Minimum seek delay", 0.0, lo=0),
        reselect_first_ms=ov("First reselect overhead"),
        reselect_other_ms=ov("Other reselect overhead"),
        data_prep_ms=ov("Data preparation overhead"))
    if disk.int("Extra write disconnect", 0, lo=0, hi=1):   # off the bus before its data
        out.update(extradisc_command_ms=ov("Extradisc command overhead"),
                   extradisc_seek_delta_ms=ov("Extradisc seek delta"),
                   extradisc_disconnect_ms=ov("Extradisc disconnect overhead"),
                   extradisc_inter_ms=ov("Extradisc inter-disconnect delay"),
                   extradisc_disconnect2_ms=ov("Extradisc 2nd disconnect overhead"))
    return out


def _cache(disk: _Reader) -> dict:
    """Buffer segments, read-ahead and write-back (disk.modspec)."""
    enable = disk.int("Enable caching in buffer", 1, lo=0, hi=2)
    segs = disk.int("Number of buffer segments", 0, lo=0)
    seg_size = disk.int("Segment size (in blks)", 0, lo=0)
    on = bool(enable and segs and seg_size)
    return dict(
        cache_segments=segs if on else 0, cache_segment_sectors=seg_size,
        separate_write_segment=bool(disk.int("Use separate write segment", 0, lo=0, hi=1)),
        read_hits_on_write_data=bool(disk.int("Allow read hits on write data", 1, lo=0, hi=1)),
        read_ahead=on and bool(disk.int("Buffer continuous read", 0, lo=0, hi=4)),
        read_ahead_mode={1: "track", 2: "cylinder", 4: "dec"}.get(
            disk.int("Buffer continuous read", 0, lo=0, hi=4), "segment"),
        read_ahead_max_sectors=disk.int("Maximum read-ahead (blks)", seg_size, lo=0),
        request_data={0: "keep", 1: "replace", -1: "erase"}[
            disk.int("Read-ahead over requested", 0, lo=-1, hi=1)],
        read_ahead_on_hit=bool(disk.int("Read-ahead on idle hit", 1, lo=0, hi=1)),
        write_cache=on and bool(disk.int("Fast write level", 0, lo=0, hi=2)))


def params_from_spec(path: str | Path):
    """DiskParams of the disk a DiskSim .parv/.diskspecs file describes."""
    return load(path)


def _approximations(disk: _Reader, mech: _Reader, report: MapReport) -> None:
    """Keys that DiskSim would act on but this model treats more simply: say so."""
    for key, neutral in (("Percent error in rpms", 0),
                         ("Immediate buffer read", 0), ("Immediate buffer write", 0),
                         ("Low (write) water mark", 0),

                         ("Read any free blocks", 0), ("Minimum read-ahead (blks)", 0)):
        r = mech if key == "Percent error in rpms" else disk
        e = r.b.entry(key)
        if e is not None and e.value != neutral:
            report.notes.append(f"{e.where}: {e.key} = {e.value!r} is not modelled "
                                f"(treated as {neutral})")
