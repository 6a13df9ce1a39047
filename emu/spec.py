"""Rack description: actors, links, regions; validated before anything starts.

Phases (SST style): describe (a ``RackSpec``), validate (``validate``),
instantiate (a backend builds hosts), run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

from emu.actor import Actor
from emu.params import ConfigError, resolve

MAX_ACTORS = 512
MAX_LINKS = 8192
# unreachable distance: small enough that NEVER_NS + it cannot overflow int64
UNREACHABLE_NS = 1 << 60


@dataclass
class ActorSpec:
    name: str
    cls: str                      # "package.module:Class"
    params: dict = field(default_factory=dict)   # raw config values
    regions: list[str] = field(default_factory=list)


@dataclass
class LinkSpec:
    a: str
    b: str
    latency_ns: int
    #: one-way link (a -> b only): b cannot answer, so a's lookahead is not
    #: limited by b, which lets a pure source run far ahead
    directed: bool = False


@dataclass
class RegionSpec:
    name: str
    size_bytes: int


@dataclass
class RackSpec:
    name: str
    seed: int
    actors: list[ActorSpec]
    links: list[LinkSpec]
    regions: list[RegionSpec] = field(default_factory=list)
    quantum_ns: int = 1_000_000
    source: str = "<spec>"

    def index_of(self) -> dict[str, int]:
        return {a.name: i for i, a in enumerate(self.actors)}

    def latency_map(self) -> dict[str, dict[int, int]]:
        idx = self.index_of()
        out: dict[str, dict[int, int]] = {a.name: {} for a in self.actors}
        for ln in self.links:
            for x, y in ((ln.a, ln.b),) if ln.directed else ((ln.a, ln.b), (ln.b, ln.a)):
                prev = out[x].get(idx[y])
                out[x][idx[y]] = ln.latency_ns if prev is None else min(prev, ln.latency_ns)
        return out

    def distances(self) -> np.ndarray:
        """dist[S, A]: least latency from S to A over links; dist[A, A] = the
        shortest cycle through A (how soon A's own actions can come back)."""
        n = len(self.actors)
        idx = self.index_of()
        far = UNREACHABLE_NS
        d = np.full((n, n), far, dtype=np.int64)
        for ln in self.links:
            i, j = idx[ln.a], idx[ln.b]
            d[i, j] = min(d[i, j], ln.latency_ns)
            if not ln.directed:
                d[j, i] = min(d[j, i], ln.latency_ns)
        for k in range(n):  # Floyd-Warshall; diagonal starts at NEVER so it becomes the cycle length
            d = np.minimum(d, np.minimum(d[:, k:k + 1] + d[k:k + 1, :], far))
        return d


def load_class(path: str) -> type[Actor]:
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"no actor class {path!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise ConfigError(f"{path!r} is not an Actor class")
    return cls


def validate(spec: RackSpec) -> dict[str, dict]:
    """Check names, links and params; return the typed params per actor."""
    if not spec.actors:
        raise ConfigError("a rack needs at least one actor", "actor", spec.source)
    if len(spec.actors) > MAX_ACTORS:
        raise ConfigError(f"{len(spec.actors)} actors exceed the limit of {MAX_ACTORS}", "actor", spec.source)
    if len(spec.links) > MAX_LINKS:
        raise ConfigError(f"{len(spec.links)} links exceed the limit of {MAX_LINKS}", "link", spec.source)
    names = [a.name for a in spec.actors]
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n or not all(c.isalnum() or c in "_-." for c in n) or len(n) > 64:
            raise ConfigError(f"bad actor name {n!r} (letters, digits, _ - . ; at most 64)", f"actor[{i}].name", spec.source)
        if names.index(n) != i:
            raise ConfigError(f"duplicate actor name {n!r}", f"actor[{i}].name", spec.source)
    regions = {r.name for r in spec.regions}
    typed = {}
    for i, a in enumerate(spec.actors):
        cls = _cls_or_error(a, i, spec.source)
        try:
            typed[a.name] = resolve(cls.PARAMS, a.params, prefix=f"{a.name}.")
        except ConfigError as exc:
            exc.path = exc.path or spec.source
            raise ConfigError(exc.message, exc.key, spec.source) from None
        for r in a.regions:
            if r not in regions:
                raise ConfigError(f"unknown region {r!r}", f"actor[{i}].regions", spec.source)
    for i, ln in enumerate(spec.links):
        for end in (ln.a, ln.b):
            if end not in names:
                raise ConfigError(f"link end {end!r} is not an actor", f"link[{i}]", spec.source)
        if ln.latency_ns <= 0:
            raise ConfigError("link latency must be > 0 (it is the scheduler's lookahead)", f"link[{i}].latency", spec.source)
    return typed


def _cls_or_error(a: ActorSpec, i: int, source: str):
    try:
        return load_class(a.cls)
    except ConfigError as exc:
        raise ConfigError(exc.message, f"actor[{i}].class", source) from None
