"""The live view of a run (rich): step, reward, eval accuracy, staleness, queues, throughput.

A hung step and a slow step look alike in a log; here the queue depths, the groups in flight
and the time since the last step show which one it is.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mint_rl.terminal import console


class RunDisplay:
    def __init__(self, title: str, total_steps: int, start_step: int = 0) -> None:
        self.title = title
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 console=console)
        self.task = self.progress.add_task("steps", total=total_steps, completed=start_step)
        self.metrics: dict[str, Any] = {}
        self.state: Any = None
        self.message = ""
        self.best_eval: float | None = None
        self.last_step_at = time.perf_counter()
        self.live = Live(self._render(), refresh_per_second=2, get_renderable=self._render,
                         console=console)

    def __enter__(self) -> RunDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.live.__exit__(exc_type, exc, traceback)

    def status(self, message: str) -> None:
        self.message = message

    def update(self, metrics: dict[str, Any], state: Any) -> None:
        self.metrics = {**self.metrics, **metrics}
        self.state = state
        if "eval/accuracy" in metrics:
            acc = metrics["eval/accuracy"]
            self.best_eval = acc if self.best_eval is None else max(self.best_eval, acc)
        if "time/step" in metrics:
            self.progress.update(self.task, completed=metrics["step"] + 1)
            self.last_step_at = time.perf_counter()

    def _render(self) -> Group:
        m = self.metrics
        table = Table(title=self.title, show_header=False, expand=False)
        table.add_column("metric")
        table.add_column("value", justify="right")

        def row(name: str, key: str, fmt: str = "{:.3f}") -> None:
            if key in m and m[key] is not None:
                table.add_row(name, fmt.format(m[key]))

        row("reward (mean)", "reward/mean")
        row("eval accuracy", "eval/accuracy")
        if self.best_eval is not None:
            table.add_row("best eval accuracy", f"{self.best_eval:.3f}")
        row("staleness max / mean", "staleness/max", "{:.0f}")
        row("kl sampler-learner", "kl/sampler_learner", "{:.2e}")
        row("step time (s)", "time/step", "{:.2f}")
        row("  waiting for samples (s)", "time/sample_wait", "{:.2f}")
        row("  training (s)", "time/train", "{:.2f}")
        row("  loading weights (s)", "time/load_weights", "{:.2f}")
        row("groups dropped as stale", "groups/dropped_stale", "{:.0f}")
        row("groups skipped (constant reward)", "groups/skipped_constant", "{:.0f}")
        row("groups dropped by a stage", "groups/filtered", "{:.0f}")
        samplers = sorted(int(k.split("/")[1]) for k in m
                          if k.startswith("sampler/") and k.endswith("/tokens_per_s"))
        if len(samplers) > 1:  # several samplers: each one's rate and served version
            for i in samplers:
                table.add_row(f"sampler {i}: tokens/s, policy version",
                              f"{m[f'sampler/{i}/tokens_per_s']:.0f}, "
                              f"{m.get(f'sampler/{i}/policy_version')}")
        if self.state is not None:
            table.add_row("rollout queue depth", str(self.state.queue_depth))
            table.add_row("groups in flight", str(self.state.groups_in_flight))
            table.add_row("policy version: learner / sampler",
                          f"{self.state.learner_policy_version} / "
                          f"{self.state.sampler_policy_version}")
        table.add_row("since last step (s)", f"{time.perf_counter() - self.last_step_at:.0f}")
        if self.message:
            table.add_row("status", self.message)
        return Group(table, self.progress)
