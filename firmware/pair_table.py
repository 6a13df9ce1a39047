"""Pair table: M-DEV -> R-DEV pairs and their states (the steps of Fig. 4
that form them are in ``fig04_pairs``).

States (CCI names): SMPL (no pair), COPY (initial or recovery copy running),
PAIR (mirror state), PSUS (split by the user), PSUE (suspended by an error,
e.g. link down), SSWS (remote side after horctakeover: writable).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware.fig07_bitmap import DiffBitmap
# the states are defined in the protocol; P.SMPL etc. stay readable in the steps
from firmware.protocol import COPY, FENCES, MODES, PAIR, PAIR_STATES, PSUE, PSUS, SMPL, SSWS  # noqa: F401

STATES = PAIR_STATES


@dataclass
class Pair:
    name: str
    group: str
    m_site: str
    m_ldev: int
    r_site: str
    r_ldev: int
    state: str = SMPL
    mode: str = "sync"
    fence: str = "never"
    bitmap: DiffBitmap | None = None  # master side only
    sid: int | None = None  # copy session the pair belongs to (master side)
    sent: np.ndarray | None = None  # tracks sent during the current recovery copy

    def role(self, site: str) -> str:
        return "master" if self.m_site == site else "remote"


@dataclass
class PairTable:
    pairs: dict[str, Pair] = field(default_factory=dict)

    @classmethod
    def from_params(cls, site: str, specs: list[dict]) -> "PairTable":
        table = cls()
        for spec in specs:
            if site not in (spec["m_site"], spec["r_site"]):
                continue
            pair = Pair(name=spec["name"], group=spec.get("group", spec["name"]),
                        m_site=spec["m_site"], m_ldev=int(spec["m_ldev"]),
                        r_site=spec["r_site"], r_ldev=int(spec["r_ldev"]))
            if pair.name in table.pairs:
                raise ValueError(f"duplicate pair name {pair.name}")
            table.pairs[pair.name] = pair
        return table

    def get(self, name: str) -> Pair:
        if name not in self.pairs:
            raise ValueError(f"no such pair {name}")
        return self.pairs[name]

    def select(self, target: str) -> list[Pair]:
        """Pairs named `target`, every pair of group `target`, every pair for
        "*", or the union for a list of such names; sorted by name."""
        if isinstance(target, (list, tuple)):
            names = sorted({p.name for t in target for p in self.select(t)})
            return [self.pairs[n] for n in names]
        if target in ("*", "all"):
            return [p for _, p in sorted(self.pairs.items())]
        if target in self.pairs:
            return [self.pairs[target]]
        found = [p for _, p in sorted(self.pairs.items()) if p.group == target]
        if not found:
            raise ValueError(f"no pair or group named {target}")
        return found

    def by_master_ldev(self, site: str, ldev: int) -> list[Pair]:
        """The pairs ``site`` masters on ``ldev``, by name (asked on every host
        write: looked up in an index of the table, which pairs never leave
        and whose ends never move)."""
        return list(self._index()[0].get((site, ldev), ()))

    def by_remote_ldev(self, site: str, ldev: int) -> list[Pair]:
        return list(self._index()[1].get((site, ldev), ()))

    def _index(self) -> tuple[dict, dict]:
        """(master end, remote end) -> pairs sorted by name; rebuilt when the
        table's membership changed (volatile: not pickled)."""
        idx = self.__dict__.get("_ends")
        if idx is None or idx[0] != len(self.pairs):
            by_m: dict = {}
            by_r: dict = {}
            for _, p in sorted(self.pairs.items()):
                by_m.setdefault((p.m_site, p.m_ldev), []).append(p)
                by_r.setdefault((p.r_site, p.r_ldev), []).append(p)
            idx = self.__dict__["_ends"] = (len(self.pairs), by_m, by_r)
        return idx[1], idx[2]

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_ends", None)   # the index is rebuilt from the pairs
        return state

    def in_group(self, group: str) -> list[Pair]:
        return [p for _, p in sorted(self.pairs.items()) if p.group == group]


def master_pairs(fw, target: str) -> list[Pair]:
    """The pairs named by ``target`` (a pair, a group or all); every one must
    be mastered at this DKC's site, else ValueError says which are not."""
    found = fw.pairs.select(target)
    bad = [p.name for p in found if p.m_site != fw.site]
    if bad:
        raise ValueError(f"pairs {bad} are not mastered at {fw.site}")
    return found
