"""What the model says: `samples.jsonl` in the run folder, and `mint-rl show DIR`.

Each training step appends one row per trained group (up to `per_step`): the prompt and one
completion as text, that completion's reward, the rewards of the whole group, and the policy
version that sampled it. A person reads what the model does; a test checks the rewards against
the step's metrics.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from mint_rl.rl.types import TrajectoryGroup
from mint_rl.run.metrics import keep_rows_before, peak_memory_line, read_metrics
from mint_rl.terminal import console


class SampleLogger:
    """Appends `samples.jsonl` rows; a resumed run first drops rows of steps it will redo."""

    def __init__(self, log_dir: Path, tokenizer: Any, *, per_step: int = 4,
                 start_step: int = 0) -> None:
        self.path = log_dir / "samples.jsonl"
        self.tokenizer, self.per_step = tokenizer, per_step
        if self.path.exists():
            keep_rows_before(self.path, start_step)

    def log(self, step: int, groups: list[TrajectoryGroup]) -> None:
        with self.path.open("a") as f:
            for group in groups[: self.per_step]:
                f.write(json.dumps(self._row(step, group)) + "\n")

    def _row(self, step: int, group: TrajectoryGroup) -> dict[str, Any]:
        first = group.trajectories[0]
        decode = self.tokenizer.decode
        return {
            "step": step,
            "batch": group.batch_index,
            "tag": group.tag,
            "prompt": decode(first.transitions[0].observation, skip_special_tokens=True),
            # Every turn's reply; a multi-turn episode's env messages are in the next prompts.
            "completion": " ⏎ ".join(decode(t.action, skip_special_tokens=True)
                                     for t in first.transitions),
            "reward": first.total_reward,
            "group_rewards": group.rewards,
            "policy_version": first.oldest_policy_version,
        }


def _closest_to_zero(values: list[float]) -> float:
    return min(values, key=abs)


# The metrics `mint-rl show` summarises, with what "best" means for each: the largest, the
# smallest (a loss), or the closest to 0 (a KL estimate can dip below it; staleness).
SUMMARY: list[tuple[str, Callable[[list[float]], float]]] = [
    ("reward/mean", max), ("eval/accuracy", max), ("eval/exact_match", max),
    ("eval/margin", max), ("eval/loss", min), ("train/loss", min),
    ("kl/sampler_learner", _closest_to_zero), ("staleness/max", _closest_to_zero),
]


def show_run(log_dir: Path, samples: int = 4) -> None:
    """The latest step's samples and a summary of the metrics, on the terminal."""
    rows = read_metrics(log_dir / "metrics.jsonl")
    steps = [r for r in rows if "time/step" in r]
    table = Table(title=f"{log_dir} · {len(steps)} steps", show_header=True)
    for column in ("metric", "first", "last", "best"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, best_of in SUMMARY:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        if values:
            best = best_of(values)
            table.add_row(key, f"{values[0]:.3g}", f"{values[-1]:.3g}", f"{best:.3g}")
    if steps:
        median = statistics.median(r["time/step"] for r in steps)
        table.add_row("time/step (median s)", "", f"{median:.2f}", "")
    console.print(table)
    memory = peak_memory_line(rows)
    if memory:
        console.print(memory)
    path = log_dir / "samples.jsonl"
    if not path.exists():
        return
    recorded = read_metrics(path)
    latest = [r for r in recorded if r["step"] == recorded[-1]["step"]][-samples:]
    shown = Table(title=f"samples of step {latest[-1]['step']}" if latest else "samples",
                  show_lines=True)
    for column in ("prompt", "completion", "reward", "policy version"):
        shown.add_column(column, overflow="fold")
    for r in latest:
        shown.add_row(r["prompt"][-200:], r["completion"], f"{r['reward']:.3g}",
                      str(r["policy_version"]))
    console.print(shown)
