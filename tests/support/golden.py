"""Pinned trace hashes: behaviour that must not change without a reason.

``tests/e2e/golden_traces.json`` maps a run's name to the sha256 of its
trace. ``check(name, sha)`` compares; with ``EMU_UPDATE_GOLDEN=1`` it
records the new value instead (then review the diff and commit it with the
reason for the change)."""

from __future__ import annotations

import json
import os
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "e2e" / "golden_traces.json"


def check(name: str, sha: str) -> None:
    doc = json.loads(GOLDEN.read_text())
    if os.environ.get("EMU_UPDATE_GOLDEN") == "1":
        doc["runs"][name] = sha
        GOLDEN.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return
    want = doc["runs"].get(name)
    assert want is not None, f"no pinned trace for {name!r}; record it with EMU_UPDATE_GOLDEN=1"
    assert sha == want, (f"trace of {name} changed: {sha} != pinned {want}. If the change is deliberate: "
                         f"{doc['_how_to_update']}")


def pinned(prefix: str) -> list[str]:
    return sorted(k for k in json.loads(GOLDEN.read_text())["runs"] if k.startswith(prefix))
