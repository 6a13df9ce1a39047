"""``--plots DIR``: PNGs of a run (matplotlib, Agg backend).

* ``latency_cdf.png``: latency CDF per phase;
* ``timeline.png``: pairs per state and differential tracks over virtual
  time (sampled after each ``run`` step of the script);
* ``save_area.png``: saved tracks (and those held in cache) per site.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_plots(report: dict, folder: str, host_stats: dict | None) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for site, st in sorted((host_stats or {}).items()):
        for phase, ph in sorted(st["phases"].items()):
            lat = np.sort(np.asarray(ph["read"] + ph["write"], dtype=float)) / 1000.0
            if len(lat):
                ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=f"{site}/{phase}")
    ax.set_xscale("log")
    ax.set_xlabel("latency (us)")
    ax.set_ylabel("fraction of I/Os")
    ax.set_title("Latency CDF per phase")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    written.append(_save(fig, out / "latency_cdf.png"))
    samples = report.get("samples", [])
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    t = [s["time_ns"] / 1e6 for s in samples]
    states = sorted({st for s in samples for st, _ in s["pairs"].values()})
    for state in states:
        a1.step(t, [sum(1 for st, _ in s["pairs"].values() if st == state) for s in samples], where="post",
                label=state)
    a1.set_ylabel("pairs")
    a1.set_title("Pair states and recovery progress")
    if states:
        a1.legend(fontsize=7)
    a2.step(t, [sum(d or 0 for _, d in s["pairs"].values()) for s in samples], where="post", color="tab:red")
    a2.set_ylabel("differential tracks")
    a2.set_xlabel("virtual time (ms)")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
    written.append(_save(fig, out / "timeline.png"))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sites = sorted({site for smp in samples for site in smp.get("save_area", {})})
    for site in sites:
        ax.step(t, [smp.get("save_area", {}).get(site, {}).get("saved", 0) for smp in samples], where="post",
                label=f"{site}: saved tracks")
        ax.step(t, [smp.get("save_area", {}).get(site, {}).get("cache", 0) for smp in samples], where="post",
                linestyle="--", label=f"{site}: of which in cache")
    ax.set_xlabel("virtual time (ms)")
    ax.set_ylabel("tracks")
    ax.set_title("Save-area occupancy (patent Figs. 10/11)")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    written.append(_save(fig, out / "save_area.png"))
    return written


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return str(path)
