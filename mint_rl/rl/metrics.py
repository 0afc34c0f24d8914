"""Run metrics: one JSON object per step in metrics.jsonl, TensorBoard scalars, PNG plots."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends each step's metrics; the file is flushed every line so a crash loses nothing.

    A run that starts at `start_step` (resumed from a checkpoint; 0 = from scratch) first drops
    the rows of steps >= start_step that an earlier attempt wrote past its last checkpoint, so
    every step appears once.
    """

    def __init__(self, log_dir: Path, *, start_step: int = 0, tensorboard: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / "metrics.jsonl"
        if self.path.exists():
            keep_rows_before(self.path, start_step)
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.log_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional for library users
                self._tb = None

    def log(self, metrics: dict[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in metrics.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tb is not None and "step" in clean:
            for key, value in clean.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, clean["step"])
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(path: Path, out: Path, keys: list[str], *, title: str = "") -> Path:
    """One panel per key against step (and wall time on a second axis label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(path)
    keys = [k for k in keys if any(k in r for r in rows)]
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.6 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        points = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def keep_rows_before(path: Path, step: int) -> None:
    """Rewrites a JSONL file of step rows (atomically) without its rows for steps >= `step`."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by a crash
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] < step:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
