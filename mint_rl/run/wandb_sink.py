"""Optional Weights & Biases logging: `mint-rl run RECIPE --wandb PROJECT` sends every metrics row
to wandb as well as to metrics.jsonl.

wandb is not a dependency (`pip install wandb`, or the `wandb` extra): it is imported only when a
run asks for it, and a run that asks without it installed stops before any engine starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from mint_rl.errors import InvalidInputError
from mint_rl.run.metrics import MetricSink


def import_wandb(project: str) -> ModuleType:
    """The wandb package, or InvalidInputError naming the `wandb` option."""
    try:
        return importlib.import_module("wandb")
    except ImportError:
        raise InvalidInputError(
            "wandb", f"logging to the wandb project {project!r} needs the wandb package, which "
            "is not installed (pip install wandb, or leave --wandb out)") from None


class WandbSink:
    """One wandb run per run folder: a resumed run continues the same wandb run."""

    def __init__(self, project: str, log_dir: Path, config: dict[str, Any]) -> None:
        wandb = import_wandb(project)
        folder = log_dir.resolve()
        self._run = wandb.init(project=project, name=folder.name, dir=str(folder),
                               config=config, id=wandb_run_id(folder), resume="allow")

    def __call__(self, row: dict[str, Any]) -> None:
        values = {k: v for k, v in row.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._run.log(values, step=row.get("step"))

    def close(self) -> None:
        self._run.finish()


def wandb_run_id(log_dir: Path) -> str:
    """A stable id per run folder (wandb ids: letters and digits)."""
    return hashlib.sha256(str(log_dir.resolve()).encode()).hexdigest()[:16]


def metric_sinks(config: Any, log_dir: Path) -> list[MetricSink]:
    """The extra sinks a run's config asks for: wandb when its `wandb` option names a project."""
    project = getattr(config, "wandb", None)
    if not project:
        return []
    return [WandbSink(project, log_dir, dataclasses.asdict(config))]


def check_sinks(config: Any) -> None:
    """Fails early (before engines start) when a sink the config asks for cannot be made."""
    project = getattr(config, "wandb", None)
    if project:
        import_wandb(project)
