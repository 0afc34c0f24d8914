"""Run metrics: one JSON object per step in metrics.jsonl, TensorBoard scalars, and any other
sink (wandb: mint_rl/run/wandb_sink.py) given each row as written, and the run's PNG plot."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Receives every metrics row as written to metrics.jsonl (plain JSON values); may have close().
MetricSink = Callable[[dict[str, Any]], None]


class MetricsLogger:
    """Appends each step's metrics; the file is flushed every line so a crash loses nothing.

    A run that starts at `start_step` (resumed from a checkpoint; 0 = from scratch) first drops
    the rows of steps >= start_step that an earlier attempt wrote past its last checkpoint, so
    every step appears once. Each of `sinks` gets every row too (and is closed with the logger).
    """

    def __init__(self, log_dir: Path, *, start_step: int = 0, tensorboard: bool = True,
                 sinks: Sequence[MetricSink] = ()) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / "metrics.jsonl"
        if self.path.exists():
            keep_rows_before(self.path, start_step)
        self._file = self.path.open("a")
        self.sinks = list(sinks)
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
        for sink in self.sinks:
            sink(clean)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if callable(close):
                close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(path: Path, out: Path, keys: list[str], *, title: str = "") -> Path:
    """One run's curves (curves.png): a panel per key it logged, against step."""
    from mint_rl.run.plot import draw, expand_keys

    rows = read_metrics(path)
    return draw({"": rows}, expand_keys(keys, [rows]), out, title=title).path


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


def peak_memory_line(rows: Sequence[dict[str, Any]]) -> str | None:
    """"peak memory: learner X GiB, vLLM engine Y GiB (...)" from a run's metric rows."""
    def peak(key: str) -> float | None:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        return max(values) if values else None

    learner, engine = peak("memory/learner_peak_rss_gib"), peak("memory/engine_peak_rss_gib")
    if learner is None and engine is None:
        return None
    parts = [f"{name} {value:.2f} GiB" for name, value in
             (("learner process", learner), ("vLLM engine process", engine)) if value is not None]
    tokens, recompute = peak("memory/microbatch_tokens"), peak("memory/recompute")
    if tokens is not None:
        parts.append(f"micro-batches of up to {tokens:.0f} tokens"
                     + (", with recompute" if recompute else ""))
    return "peak memory (RSS): " + ", ".join(parts)
