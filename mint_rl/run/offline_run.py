"""A training run on a fixed dataset (supervised fine-tuning, DPO): one LoRA training client on
the public API, and a run folder laid out like an RL run's.

    run = OfflineRun(config, log_dir)          # resumes from log_dir's newest checkpoint
    run.resume()
    run_steps(run, train_step, evaluate, headline="eval/loss", plotted=[...])

The folder holds `config.json`, `metrics.jsonl` (one row per step; held-out metrics in the rows
of the steps they were measured at, before that step trained), `tensorboard/`, `curves.png`,
`checkpoints/step-*.json` manifests naming `save_state` checkpoints (a standard PEFT adapter plus
the optimizer) and, where the recipe writes them, `samples.jsonl`. Held-out metrics are measured
at step 0, every `eval_every` steps and after the last step. Running the same command with the
same folder continues from the newest intact checkpoint (measuring the held-out metrics again
where it resumes); a finished run is left as it is.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mint_rl import types
from mint_rl.client import ServiceClient, TrainingClient
from mint_rl.errors import InvalidInputError
from mint_rl.process_memory import engine_memory_metrics, learner_memory_metrics
from mint_rl.run.checkpoints import RunCheckpoints
from mint_rl.run.config import OfflineConfig, write_config
from mint_rl.run.metrics import (
    MetricsLogger,
    keep_rows_before,
    peak_memory_line,
    plot_metrics,
    read_metrics,
)
from mint_rl.terminal import console

Metrics = dict[str, float]


def training_client(config: OfflineConfig) -> TrainingClient:
    """A fresh LoRA training client for `config` (the adapter starts at zero: base model)."""
    return ServiceClient(learner_settings=config.learner_settings()).create_lora_training_client(
        config.base_model, rank=config.rank, seed=config.seed)


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """The examples of step `step`: passes over the n examples, each pass in its own shuffled
    order. A function of (seed, step) alone, so a resumed run trains on the same data."""
    if n < 1:
        raise InvalidInputError("data", "holds no training examples")
    out: list[int] = []
    position = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(position, n)
        order = list(range(n))
        random.Random(f"{seed}-epoch-{epoch}").shuffle(order)
        take = order[offset: offset + batch_size - len(out)]
        out += take
        position += len(take)
    return out


class OfflineRun:
    """An open run: its config, folder, training client and the step it starts from."""

    def __init__(self, config: OfflineConfig, log_dir: Path) -> None:
        write_config(log_dir, config)  # also for runs started from Python, not `mint-rl run`
        self.config, self.log_dir = config, log_dir
        self.checkpoints = RunCheckpoints(log_dir, keep_last=config.keep_checkpoints)
        latest = self.checkpoints.latest()
        self.start_step = latest.step if latest else 0
        self.resume_path = latest.state_path if latest else None
        self.client = training_client(config)
        self.tokenizer = self.client.get_tokenizer()
        self.samples_path = log_dir / "samples.jsonl"

    @property
    def finished(self) -> bool:
        return self.start_step >= self.config.steps

    def report_finished(self) -> bool:
        """True (and says so) when the folder already holds every step: nothing to do."""
        if self.finished:
            console.print(f"{self.log_dir} already holds all {self.config.steps} steps")
        return self.finished

    def resume(self) -> None:
        """Loads the newest checkpoint (weights and optimizer), if the folder holds one."""
        if self.resume_path is not None and not self.finished:
            console.print(f"resuming from {self.resume_path} at step {self.start_step}")
            self.client.load_state_with_optimizer(self.resume_path).result()

    def adam(self) -> types.AdamParams:
        return types.AdamParams(learning_rate=self.config.lr)

    def batch(self, step: int, n: int) -> list[int]:
        return batch_indices(step, self.config.batch_size, n, self.config.seed)

    def save(self, step: int) -> None:
        path = self.client.save_state(f"step-{step:06d}", overwrite=True).result().path
        self.checkpoints.record(step, path, step, [])

    def log_samples(self, rows: list[dict[str, Any]]) -> None:
        with self.samples_path.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


def run_steps(run: OfflineRun, train_step: Callable[[int], Metrics],
              evaluate: Callable[[int], Metrics], *, headline: str, plotted: list[str]) -> None:
    """Trains the remaining steps with held-out evaluations and checkpoints, then plots.

    `train_step(step)` runs forward_backward + optim_step on step's batch and returns its
    metrics; `evaluate(step)` returns held-out metrics of the current weights.
    """
    cfg = run.config
    if run.report_finished():
        return
    logger = MetricsLogger(run.log_dir, start_step=run.start_step)
    if run.samples_path.exists():
        keep_rows_before(run.samples_path, run.start_step)
    start = time.perf_counter()
    try:
        for step in range(run.start_step, cfg.steps):
            row: dict[str, Any] = {"step": step}
            # A resumed run measures where it starts: the row it drops held that measurement.
            if step == run.start_step or (cfg.eval_every and step % cfg.eval_every == 0):
                row |= _timed_eval(evaluate, step)
            began = time.perf_counter()
            row |= train_step(step)
            row["time/step"] = time.perf_counter() - began
            row |= learner_memory_metrics(run.client.engine.last_train_metrics)
            row |= engine_memory_metrics()
            row["time/elapsed"] = time.perf_counter() - start
            logger.log(row)
            console.print(_line(row, cfg.steps))
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                run.save(step + 1)
        final = {"step": cfg.steps, **_timed_eval(evaluate, cfg.steps)}
        logger.log(final)
        console.print(_line(final, cfg.steps))
        run.save(cfg.steps)
    finally:
        logger.close()
    _summarize(run.log_dir, headline, plotted, f"{run.log_dir.name} · {cfg.base_model}")


def _timed_eval(evaluate: Callable[[int], Metrics], step: int) -> Metrics:
    began = time.perf_counter()
    metrics = evaluate(step)
    return {**metrics, "time/eval": time.perf_counter() - began}


def _line(row: dict[str, Any], steps: int) -> str:
    shown = ", ".join(f"{k} {v:.3g}" for k, v in row.items()
                      if k != "step" and not k.startswith(("time/", "memory/"))
                      and isinstance(v, float))
    seconds = f" ({row['time/step']:.1f} s)" if "time/step" in row else ""
    return f"step {row['step']}/{steps}: {shown}{seconds}"


def _summarize(log_dir: Path, headline: str, plotted: list[str], title: str) -> None:
    """The curves as a PNG, and the headline metric by step on the terminal."""
    metrics = log_dir / "metrics.jsonl"
    plot = plot_metrics(metrics, log_dir / "curves.png", plotted, title=title)
    rows = read_metrics(metrics)
    values = [(r["step"], r[headline]) for r in rows if headline in r]
    console.print(f"{headline} by step: " + ", ".join(f"{s}: {v:.3f}" for s, v in values))
    memory = peak_memory_line(rows)
    if memory:
        console.print(memory)
    console.print(f"metrics: {metrics}  plot: {plot}  tensorboard: {log_dir / 'tensorboard'}")
