"""`mint-rl eval`: a recipe's held-out evaluation of one checkpoint.

The contract: a recipe module may define

    def evaluate_checkpoint(config: Config, adapter_dir: Path) -> dict[str, float]:

which evaluates the base model plus the LoRA adapter in `adapter_dir` (a PEFT folder) and
returns metrics named as in metrics.jsonl (`eval/accuracy`, ...). It is synchronous; the recipe
decides how (an RL recipe samples through `SamplingClient(config.base_model, adapter_dir)` and
runs its evaluator, a supervised one can run a training client's forward). `config` is the
run's own (its config.json), so the evaluation measures what the run measured.

The metrics are written next to the checkpoint: `<run>/checkpoints/eval-step-000010.json` for a
run's checkpoint, `eval-<folder>.json` beside an adapter folder (never inside it: a learner
state's files are checksummed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from mint_rl.errors import InvalidInputError
from mint_rl.run.run_folder import CheckpointRef, load_config


@dataclass(frozen=True)
class EvalResult:
    recipe: str
    checkpoint: CheckpointRef
    metrics: dict[str, float]
    path: Path
    """The JSON file the metrics were written to."""


def eval_path(checkpoint: CheckpointRef) -> Path:
    if checkpoint.manifest is not None:
        return checkpoint.manifest.with_name(f"eval-{checkpoint.manifest.name}")
    return checkpoint.adapter_dir.parent / f"eval-{checkpoint.adapter_dir.name}.json"


def evaluate(module: ModuleType, recipe: str, checkpoint: CheckpointRef) -> EvalResult:
    """Runs `module.evaluate_checkpoint` on `checkpoint` with the run's config; writes and
    returns the metrics."""
    evaluate_checkpoint = getattr(module, "evaluate_checkpoint", None)
    if not callable(evaluate_checkpoint):
        raise InvalidInputError("recipe", f"the {recipe} recipe defines no "
                                "evaluate_checkpoint(config, adapter_dir): it cannot be "
                                "evaluated from a checkpoint")
    config = load_config(module.Config, checkpoint.run_dir, checkpoint.base_model)
    metrics = _checked(evaluate_checkpoint(config, checkpoint.adapter_dir), recipe)
    path = eval_path(checkpoint)
    record = {"recipe": recipe, "step": checkpoint.step,
              "checkpoint": str(checkpoint.adapter_dir), "metrics": metrics}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return EvalResult(recipe, checkpoint, metrics, path)


def _checked(metrics: object, recipe: str) -> dict[str, float]:
    """A recipe's answer as {name: finite float}; anything else is the recipe's bug, named."""
    if not isinstance(metrics, dict) or not all(isinstance(k, str) for k in metrics):
        raise TypeError(f"{recipe}.evaluate_checkpoint returned {type(metrics).__name__}, "
                        "expected dict[str, float]")
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{recipe}.evaluate_checkpoint: {key} is {value!r}, not a number")
        if not math.isfinite(value):
            raise ValueError(f"{recipe}.evaluate_checkpoint: {key} is {value}")
        out[key] = float(value)
    return out
