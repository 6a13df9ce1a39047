"""The DKC's non-volatile memory: the firmware's state and the RAID/disk
map, written so that a process killed at any instant restarts from a whole
state. Two slots after a 4 KiB header: a new state is copied into the slot
not named by the header, and only then does the header (generation, slot
offset, length) flip to it, so a torn write leaves the previous state.
"""
from __future__ import annotations

import pickle
import struct

import numpy as np

NVM_HEADER = struct.Struct("<QQQ")  # generation, slot offset, length
HEADER_BYTES = 4096
#: bytes written to the region since it was created (state and header), kept in
#: the header page past the header proper: it survives restarts, and any
#: process mapping the region can read it (bench/bench_capacity.py)
NVM_COUNTER = struct.Struct("<Q")
COUNTER_OFFSET = 1024


def write_state(nvm: np.ndarray, gen: int, state: dict, who: str) -> int:
    """Store ``state`` as generation ``gen + 1``; return the new generation."""
    blob = pickle.dumps({**state, "gen": gen + 1}, protocol=pickle.HIGHEST_PROTOCOL)
    half = (len(nvm) - HEADER_BYTES) // 2
    if len(blob) > half:
        raise RuntimeError(f"{who}: NVM state of {len(blob)} bytes exceeds {half}: size invariant violated")
    gen += 1
    off = HEADER_BYTES + (gen % 2) * half   # two slots: the header flips only after the copy
    nvm[off:off + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
    nvm[:NVM_HEADER.size] = np.frombuffer(NVM_HEADER.pack(gen, off, len(blob)), dtype=np.uint8)
    _count(nvm, len(blob) + NVM_HEADER.size)
    return gen


def _count(nvm: np.ndarray, nbytes: int) -> None:
    at = slice(COUNTER_OFFSET, COUNTER_OFFSET + NVM_COUNTER.size)
    total = NVM_COUNTER.unpack(nvm[at].tobytes())[0] + nbytes
    nvm[at] = np.frombuffer(NVM_COUNTER.pack(total), dtype=np.uint8)


def bytes_written(nvm: np.ndarray) -> int:
    """Bytes written to this NVM region so far (every state and header write)."""
    return NVM_COUNTER.unpack(nvm[COUNTER_OFFSET:COUNTER_OFFSET + NVM_COUNTER.size].tobytes())[0]


def read_state(nvm: np.ndarray) -> dict | None:
    """The last whole state, or None for a DKC that never wrote one."""
    gen, off, length = NVM_HEADER.unpack(nvm[:NVM_HEADER.size].tobytes())
    if gen == 0:
        return None
    return pickle.loads(nvm[off:off + length].tobytes())
