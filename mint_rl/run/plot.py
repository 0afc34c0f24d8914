"""Metric curves as PNG: a run's `curves.png` (metrics.plot_metrics) and `mint-rl plot`'s
comparison of runs. Rows are metrics.jsonl rows (metrics.read_metrics).

    compare_runs({"k0": rows_k0, "k1": rows_k1}, Path("comparison.png"))

One panel per metric against step, one line per run; a metric no run logged gets no panel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Panels of a comparison, top to bottom; "eval/*" stands for every eval metric a run logged.
COMPARED = ["reward/mean", "eval/*", "kl/sampler_learner", "staleness/max", "time/step"]

# Figure geometry: the PNG's height grows by one panel's worth per metric.
WIDTH_IN, PANEL_IN, DPI = 7.0, 2.6, 110


@dataclass(frozen=True)
class Plot:
    path: Path
    panels: list[str]
    """The metrics drawn, top to bottom."""
    labels: list[str]
    """One legend entry per run (empty for a single unlabelled run)."""


def compare_runs(runs: Mapping[str, list[dict[str, Any]]], out: Path,
                 keys: Sequence[str] = COMPARED) -> Plot:
    """Runs side by side (label -> metrics rows), one line each."""
    panels = expand_keys(keys, list(runs.values()))
    return draw(runs, panels, out, title=" vs ".join(runs))


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Folder names; where two runs share a name, their parents' names too."""
    names = [d.resolve().name for d in run_dirs]
    return [f"{d.resolve().parent.name}/{n}" if names.count(n) > 1 else n
            for d, n in zip(run_dirs, names, strict=True)]


def expand_keys(keys: Sequence[str], runs: Sequence[list[dict[str, Any]]]) -> list[str]:
    """`keys` with "prefix/*" replaced by the matching metrics (sorted), keeping only metrics
    that at least one run logged."""
    logged = {k for rows in runs for row in rows for k, v in row.items() if v is not None}
    panels: list[str] = []
    for key in keys:
        if key.endswith("/*"):
            panels += sorted(k for k in logged if k.startswith(key[:-1]))
        elif key in logged:
            panels.append(key)
    return list(dict.fromkeys(panels))


def draw(runs: Mapping[str, list[dict[str, Any]]], panels: list[str], out: Path, *,
         title: str = "") -> Plot:
    """One panel per metric, one line per run (legend when a run has a label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_of_panels = max(1, len(panels))
    fig, axes = plt.subplots(rows_of_panels, 1, figsize=(WIDTH_IN, PANEL_IN * rows_of_panels),
                             squeeze=False)
    for ax, key in zip(axes[:, 0], panels, strict=False):
        for label, rows in runs.items():
            points = [(r["step"], r[key]) for r in rows
                      if r.get(key) is not None and "step" in r]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=label or None)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if any(runs):  # labelled runs: a comparison
            ax.legend(fontsize="small")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no metrics to plot", ha="center", va="center")
    axes[-1, 0].set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return Plot(out, panels, [label for label in runs if label])
