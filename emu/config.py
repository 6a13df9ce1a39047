"""Config files: TOML (``tomllib``) into a validated ``RackSpec``.

Two shapes share one loader:

* a **generic rack** (``[[actor]]`` and ``[[link]]`` tables) for substrate
  models such as the toy and the M/M/1 queue;
* any model-level shape (the storage product's ``[[site]]`` racks) through
  an ``expand(doc, path) -> RackSpec`` the caller passes in: the substrate
  knows nothing of what the model's tables mean.

Every error is a ``ConfigError`` naming the file, the key and what was
expected; the CLI prints it as one line and exits 2.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Callable

from emu import units
from emu.params import ConfigError
from emu.spec import ActorSpec, LinkSpec, RackSpec, RegionSpec, validate

MAX_SEED = (1 << 63) - 1
MAX_CONFIG_BYTES = 4 << 20


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such file", path=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"file larger than {MAX_CONFIG_BYTES} bytes", path=str(path))
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        if line is None:  # Python < 3.14: the line is only in the text "(at line N, column M)"
            found = re.search(r"\(at line (\d+)", str(exc))
            line = int(found.group(1)) if found else None
        msg = str(exc).split(" (at line")[0]
        raise ConfigError(f"TOML syntax: {msg}", path=str(path), line=line) from None


def load_config(path: str | Path, seed: int | None = None,
                expand: Callable[[dict, str], RackSpec] | None = None) -> RackSpec:
    """Load, expand and validate a config; raise ConfigError on any mistake.

    ``expand`` turns a parsed document into a RackSpec; without one the
    document must be a generic ``[[actor]]``/``[[link]]`` rack."""
    path = str(path)
    doc = load_toml(path)
    try:
        spec = (expand or build_generic)(doc, path)
        if seed is not None:
            spec.seed = _seed(seed, "--seed")
        validate(spec)
    except ConfigError as exc:
        if not exc.path:
            exc.path = path
            exc.args = (exc.render(),)
        raise
    return spec


def _seed(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"expected an integer seed 0..{MAX_SEED}, got {value!r}", key)
    return value


def table(doc: dict, key: str, path: str, required=False) -> dict:
    value = doc.get(key, {} if not required else None)
    if value is None:
        raise ConfigError("required table missing", key, path)
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table [{key}], got {type(value).__name__}", key, path)
    return value


def array_of_tables(doc: dict, key: str, path: str) -> list[dict]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"expected an array of tables [[{key}]]", key, path)
    return value


def known_keys(tbl: dict, allowed: set[str], prefix: str, path: str) -> None:
    for k in sorted(tbl):
        if k not in allowed:
            raise ConfigError(f"unknown key (expected one of: {', '.join(sorted(allowed))})",
                              f"{prefix}{k}", path)


def build_generic(doc: dict, path: str) -> RackSpec:
    known_keys(doc, {"rack", "actor", "link", "region"}, "", path)
    rack = table(doc, "rack", path)
    known_keys(rack, {"name", "seed", "quantum"}, "rack.", path)
    seed = _seed(rack.get("seed", 1), "rack.seed")
    quantum_ns = _time(rack.get("quantum", "1ms"), "rack.quantum", path)
    actors = []
    for i, a in enumerate(array_of_tables(doc, "actor", path)):
        for key in ("name", "class"):
            if not isinstance(a.get(key), str):
                raise ConfigError("required string missing", f"actor[{i}].{key}", path)
        params = {k: v for k, v in a.items() if k not in ("name", "class", "regions")}
        actors.append(ActorSpec(a["name"], a["class"], params, list(a.get("regions", []))))
    links = []
    for i, ln in enumerate(array_of_tables(doc, "link", path)):
        known_keys(ln, {"a", "b", "latency", "directed"}, f"link[{i}].", path)
        for key in ("a", "b"):
            if not isinstance(ln.get(key), str):
                raise ConfigError("required actor name missing", f"link[{i}].{key}", path)
        links.append(LinkSpec(ln["a"], ln["b"], _time(ln.get("latency"), f"link[{i}].latency", path),
                              bool(ln.get("directed", False))))
    regions = []
    for i, r in enumerate(array_of_tables(doc, "region", path)):
        known_keys(r, {"name", "size"}, f"region[{i}].", path)
        regions.append(RegionSpec(str(r.get("name")), _size(r.get("size"), f"region[{i}].size", path)))
    return RackSpec(str(rack.get("name", Path(path).stem)), seed, actors, links, regions,
                    quantum_ns, source=path)


def _unit(parse, what: str, example: str, value, key: str, path: str) -> int:
    if value is None:
        raise ConfigError(f"required {what} missing (e.g. '{example}')", key, path)
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(str(exc), key, path) from None


def _time(value, key: str, path: str) -> int:
    return _unit(units.time_ns, "duration", "10us", value, key, path)


def _size(value, key: str, path: str) -> int:
    return _unit(units.size_bytes, "size", "64KiB", value, key, path)
