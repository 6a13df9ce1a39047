"""``--plots DIR``: PNGs of a run (matplotlib, Agg backend).

* ``latency_cdf.png``: latency CDF per phase;
* ``timeline.png``: one band per pair coloured by its state, and the
  differential tracks, over virtual time (sampled after each ``run`` step);
* ``save_area.png``: saved tracks (and those held in cache) per site.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from controllers.operator.report import natural_key


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
    bands = pair_bands(samples)
    names = sorted(bands, key=natural_key)
    seen = set()
    for y, name in enumerate(names):   # one band per pair, coloured by its state: nothing hides anything
        for t0, t1, state in bands[name]:
            a1.broken_barh([(t0 / 1e6, max(t1 - t0, 1) / 1e6)], (y - 0.4, 0.8),
                           color=STATE_COLOURS.get(state, "tab:gray"), label=None if state in seen else state)
            seen.add(state)
    a1.set_yticks(range(len(names)), names, fontsize=7)
    a1.set_ylabel("pair")
    a1.set_title("Pair states and recovery progress")
    if seen:
        a1.legend(fontsize=7, ncols=min(len(seen), 6), loc="upper right")
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


#: one colour per pair state on the timeline
STATE_COLOURS = {"SMPL": "tab:gray", "COPY": "tab:orange", "PAIR": "tab:green", "PSUS": "tab:blue",
                 "PSUE": "tab:red", "SSWS": "tab:purple"}


def pair_bands(samples: list[dict]) -> dict[str, list[tuple[int, int, str]]]:
    """Per pair, the (start_ns, end_ns, state) runs of its state over the samples."""
    bands: dict[str, list[list]] = {}
    for i, smp in enumerate(samples):
        t_next = samples[i + 1]["time_ns"] if i + 1 < len(samples) else smp["time_ns"]
        for name, (state, _) in sorted(smp["pairs"].items()):
            runs = bands.setdefault(name, [])
            if runs and runs[-1][2] == state and runs[-1][1] == smp["time_ns"]:
                runs[-1][1] = t_next
            else:
                runs.append([smp["time_ns"], t_next, state])
    return {name: [tuple(r) for r in runs] for name, runs in bands.items()}


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return str(path)
