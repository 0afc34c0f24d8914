"""Reading a run folder after the run: the recipe that made it, the config it ran with, and the
checkpoint a command means (`mint-rl eval`, `mint-rl export`).

A checkpoint can be named as
- a run folder: its newest intact checkpoint (or the one of a given step);
- a manifest, `<run>/checkpoints/step-000010.json`;
- an adapter folder: a learner state or sampler weights folder (`mint://...` too), or an
  exported adapter.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from mint_rl.errors import CorruptCheckpointError, InvalidInputError, NotFoundError
from mint_rl.learner.checkpoint import read_adapter, resolve_path
from mint_rl.run.checkpoints import RunCheckpoint, RunCheckpoints

C = TypeVar("C")

RUN_INFO = "run.json"


def write_run_info(log_dir: Path, recipe: str) -> None:
    """`run.json`: the recipe that made the run (a name of `mint-rl list`, or a file's path)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / RUN_INFO).write_text(json.dumps({"recipe": recipe}, indent=2) + "\n")


def recorded_recipe(log_dir: Path | None) -> str | None:
    """The recipe a run folder records in run.json; None when it records none."""
    if log_dir is None or not (log_dir / RUN_INFO).is_file():
        return None
    try:
        recipe = json.loads((log_dir / RUN_INFO).read_text()).get("recipe")
    except (ValueError, AttributeError):
        raise InvalidInputError("run.json", f"{log_dir / RUN_INFO} is not a JSON object "
                                "with a recipe") from None
    return recipe if isinstance(recipe, str) and recipe else None


def load_config(config_cls: type[C], log_dir: Path | None, base_model: str | None = None) -> C:
    """The config a run folder ran with (its config.json); defaults where it says nothing
    (options added since are left at their defaults, options since removed are ignored).
    `base_model` fills in a base model the folder does not name."""
    values: dict[str, Any] = {}
    if log_dir is not None and (log_dir / "config.json").is_file():
        try:
            values = json.loads((log_dir / "config.json").read_text())
        except ValueError as e:
            raise InvalidInputError("config.json", f"{log_dir / 'config.json'}: {e}") from None
        if not isinstance(values, dict):
            raise InvalidInputError("config.json", f"{log_dir / 'config.json'} is not an object")
    names = {f.name for f in dataclasses.fields(cast(Any, config_cls)) if f.init}
    known = {k: v for k, v in values.items() if k in names}
    if base_model and "base_model" in names and "base_model" not in known:
        known["base_model"] = base_model
    try:
        return config_cls(**known)
    except (TypeError, ValueError) as e:
        raise InvalidInputError("config.json", f"does not make a {config_cls.__name__}: "
                                f"{e}") from None


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint found on disk, checked to be whole."""

    adapter_dir: Path
    """A PEFT adapter folder (adapter_config.json + adapter_model.safetensors)."""
    base_model: str
    """The model id or folder the adapter was trained on."""
    step: int | None = None
    run_dir: Path | None = None
    manifest: Path | None = None

    @property
    def name(self) -> str:
        """`step-000010` for a run's checkpoint, else the adapter folder's name."""
        return self.manifest.stem if self.manifest is not None else self.adapter_dir.name


def find_checkpoint(target: str | Path, step: int | None = None) -> CheckpointRef:
    """The checkpoint `target` names (see the module docstring); `step` picks one of a run's."""
    text = str(target)
    path = Path(text).expanduser()
    is_run = path.is_dir() and not _is_adapter(path)
    if step is not None and not is_run:
        raise InvalidInputError("step", f"picks a checkpoint of a run folder; {text} is not one")
    if is_run:
        return _from_run(path, step)
    if path.is_file():
        return _from_manifest(path)
    if path.is_dir() or text.startswith(("mint://", "tinker://")):
        return _from_adapter(resolve_path(text))
    raise NotFoundError(f"checkpoint: {text} does not exist")


def _is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def _from_run(run_dir: Path, step: int | None) -> CheckpointRef:
    checkpoints = RunCheckpoints(run_dir)
    manifests = checkpoints.manifests()
    if not manifests:
        raise NotFoundError(f"checkpoint: {run_dir} holds no checkpoint "
                            "(no checkpoints/step-*.json)")
    if step is not None:
        manifest = checkpoints.folder / f"step-{step:06d}.json"
        if not manifest.is_file():
            steps = sorted(int(m.stem.removeprefix("step-")) for m in manifests)
            raise NotFoundError(f"step: {run_dir} has no checkpoint of step {step} "
                                f"(it has steps {steps})")
        return _from_manifest(manifest)
    latest = checkpoints.latest()  # says which ones it skipped, and why
    if latest is None:
        raise CorruptCheckpointError(f"checkpoint: none of the {len(manifests)} checkpoints "
                                     f"in {checkpoints.folder} is intact")
    return _ref(latest, checkpoints.folder / f"step-{latest.step:06d}.json", run_dir)


def _from_manifest(manifest: Path) -> CheckpointRef:
    if manifest.suffix != ".json" or manifest.parent.name != "checkpoints":
        raise InvalidInputError("checkpoint", f"{manifest} is not a run's checkpoint manifest "
                                "(<run>/checkpoints/step-*.json)")
    run_dir = manifest.parent.parent
    problem, checkpoint = RunCheckpoints(run_dir).verify(manifest)
    if checkpoint is None:
        raise CorruptCheckpointError(f"checkpoint: {manifest}: {problem}")
    return _ref(checkpoint, manifest, run_dir)


def _ref(checkpoint: RunCheckpoint, manifest: Path, run_dir: Path) -> CheckpointRef:
    adapter = _from_adapter(resolve_path(checkpoint.state_path))
    return dataclasses.replace(adapter, step=checkpoint.step, run_dir=run_dir,
                               manifest=manifest)


def _from_adapter(folder: Path) -> CheckpointRef:
    """An adapter folder: its base model (the id a learner state records, else the adapter
    config's) and step (a learner state's); tensors and config must read."""
    read_adapter(folder)  # a damaged file raises CorruptCheckpointError here, not later
    config = _read_json(folder / "adapter_config.json")
    state = _read_json(folder / "mint_state.json") if (folder / "mint_state.json").is_file() else {}
    base = state.get("base_model") or config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise CorruptCheckpointError(f"checkpoint: {folder} names no base model")
    step = state.get("step")
    return CheckpointRef(folder.resolve(), base, step if isinstance(step, int) else None)


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise CorruptCheckpointError(f"checkpoint: cannot read {file} ({e})") from None
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"checkpoint: {file} is not a JSON object")
    return data
