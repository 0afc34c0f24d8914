"""A recipe's configuration is one dataclass; its command-line options are derived from it.

    @dataclass(frozen=True)
    class Config(RLConfig):
        max_operand: int = option(9, "largest operand of the additions", at_least=1)

    config = parse_config(Config, ["--steps", "5", "--max-operand", "20"])

Each field becomes `--field-name` with the field's type, default and help text; a `bool` field
becomes `--flag / --no-flag`, a `Literal[...]` field a choice. The dataclass is the single place
where an option is named, typed, defaulted, bounded and explained; `RunConfig` checks
every field once, for every recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from mint_rl.errors import InvalidInputError
from mint_rl.learner.device import check_device
from mint_rl.models import DEFAULT_MODEL

if TYPE_CHECKING:
    from mint_rl.learner.engine import LearnerSettings

C = TypeVar("C")


def option(default: Any, help: str, *, at_least: float | None = None,  # noqa: A002
           above: float | None = None, at_most: float | None = None) -> Any:
    """A config field with its command-line help text and the bounds `RunConfig` checks
    (None values are not bounded: an optional field's None means "the default")."""
    bounds = {k: v for k, v in (("at_least", at_least), ("above", above), ("at_most", at_most))
              if v is not None}
    return dataclasses.field(default=default, metadata={"help": help, **bounds})


# The policy-gradient losses of mint_rl.losses: every loss that takes advantages
# (tests/test_losses.py::test_rl_recipes_accept_every_policy_gradient_loss keeps the two in step).
LossName = Literal["cispo", "dro", "gspo", "importance_sampling", "ppo", "stable_reinforce"]
Dtype = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class RunConfig:
    """What every training run configures, RL or on a fixed dataset. `RLConfig` and
    `OfflineConfig` extend it, a recipe extends one of those (and may change a default by
    declaring the field again). Every field of the final class is checked here, once: its type
    (built from Python nothing else checks it; argparse does for the command line), its bounds
    (`option(at_least=, above=, at_most=)`) and, for a float, that it is finite."""

    base_model: str = option(DEFAULT_MODEL, "model id or local folder")
    steps: int = option(30, "training steps (one optimizer step each)", at_least=1)
    lr: float = option(1e-3, "Adam learning rate", above=0)
    rank: int = option(16, "LoRA rank", at_least=1)
    eval_every: int = option(5, "evaluate every N steps (0 = never)", at_least=0)
    save_every: int = option(10, "checkpoint every N steps (a run resumes from the last one)",
                             at_least=0)
    keep_checkpoints: int = option(3, "checkpoints kept (the newest); older ones are deleted",
                                   at_least=1)
    learner_dtype: Dtype = option(
        "float32", "bfloat16 autocasts the learner (faster on AMX/GPU; the probe stays fp32)")
    learner_threads: int | None = option(
        None, "torch threads of the learner (default: one per core it may use); 1 is much "
              "faster on cores other jobs are busy on", at_least=1)
    learner_device: str = option(
        "auto", "device of the learner: auto (cuda when available, else cpu), cpu, cuda or "
                "cuda:N")
    seed: int = option(0, "seed of the data (order, split), the LoRA init and sampling")

    def __post_init__(self) -> None:
        hints, bounds = _field_types(type(self)), _bounds(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _has_type(value, hints[f.name]):
                raise InvalidInputError(f.name, f"must be {_describe(hints[f.name])}, got "
                                                f"{value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidInputError(f.name, f"must be finite, got {value}")
            _check_bounds(f.name, bounds[f.name], value)
        check_device(self.learner_device, "learner_device")

    def learner_settings(self, cpu_cores: tuple[int, ...] | None = None) -> LearnerSettings:
        """The learner's settings from this config (`cpu_cores`: where the run pins it)."""
        from mint_rl.learner.engine import LearnerSettings  # torch: not for parsing options

        return LearnerSettings(dtype=self.learner_dtype, num_threads=self.learner_threads,
                               cpu_cores=cpu_cores, device=self.learner_device)


_BOUNDS = ("at_least", "above", "at_most")


@functools.cache
def _bounds(config_cls: type) -> dict[str, dict[str, float]]:
    """Each field's bounds; a field declared again (a recipe's own default) keeps the bounds
    its first declaration gave, unless it gives its own."""
    out: dict[str, dict[str, float]] = {}
    for klass in reversed(config_cls.__mro__):
        for f in getattr(klass, "__dataclass_fields__", {}).values():
            out.setdefault(f.name, {}).update(
                {k: v for k, v in f.metadata.items() if k in _BOUNDS})
    return out


def _check_bounds(name: str, bounds: dict[str, float], value: Any) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    if "at_least" in bounds and not value >= bounds["at_least"]:
        raise InvalidInputError(name, f"must be >= {bounds['at_least']}, got {value}")
    if "above" in bounds and not value > bounds["above"]:
        raise InvalidInputError(name, f"must be > {bounds['above']}, got {value}")
    if "at_most" in bounds and not value <= bounds["at_most"]:
        raise InvalidInputError(name, f"must be <= {bounds['at_most']}, got {value}")


@dataclass(frozen=True)
class RLConfig(RunConfig):
    """What every RL recipe on the actor pipeline configures; a recipe subclasses it."""

    max_steps_off_policy: int = option(
        0, "K: 0 = synchronous on-policy; K >= 1 lets samplers run K policy versions ahead",
        at_least=0)
    # PPO ended K = 1 and K = 2 at least as well as importance_sampling, stable_reinforce and
    # CISPO over five seeds each (docs/off_policy.md); on-policy all but CISPO are one gradient.
    loss: LossName = option("ppo", "policy-gradient loss")
    group_size: int = option(8, "samples per prompt (advantages are centered per group)",
                             at_least=1)
    groups_per_batch: int = option(8, "prompts per training step", at_least=1)
    max_tokens: int = option(6, "reply length limit in tokens", at_least=1)
    temperature: float = option(1.0, "sampling temperature", at_least=0)
    samplers: int = option(1, "sampler actors sharing the prompt stream", at_least=1)
    backend: Literal["local", "ray"] = option(
        "local", "where the sampler(s), learner and reference model run: local (this process "
                 "and its engine processes) or ray (Ray actors, each in a process of its own; "
                 "needs `pip install mint-rl[ray]`)")
    ray_address: str | None = option(
        None, "with --backend ray: the Ray cluster to join (auto, or HOST:6379); default: "
              "start a local one for the run")
    env_timeout_s: float = option(
        120.0, "seconds one env.step (the reward) may take; a longer one fails the rollout, "
               "which restarts the sampler and samples the group again", above=0)
    kl_coef: float = option(0.0, "per-token KL penalty against the base model (0 = off)",
                            at_least=0)
    sampler_dtype: Dtype = option(
        "float32", "vLLM's weights and compute; bfloat16 is faster on AMX/GPU, and the "
                   "importance ratio corrects the sampler/learner mismatch it adds")
    cpus: Literal["auto", "shared", "split"] = option(
        "auto", "CPU cores of sampler and learner: shared, split in halves, or auto "
                "(split when K > 0, so overlapping phases do not compete)")
    reproducible: bool = option(
        False, "seed every sample from (seed, batch, group, sample), so a K = 0 run replays "
               "exactly, also after a resume (turns vLLM's chunked prefill off: on CPU it "
               "cannot replay seeded requests)")
    wandb: str | None = option(
        None, "also log every step's metrics to this Weights & Biases project "
              "(needs `pip install wandb`)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ray_address is not None and self.backend != "ray":
            raise InvalidInputError("ray_address", "needs --backend ray")
        if self.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise InvalidInputError("backend", "ray is not installed: pip install 'mint-rl[ray]'")


@dataclass(frozen=True)
class OfflineConfig(RunConfig):
    """What every fixed-dataset recipe (supervised fine-tuning, DPO) configures; a recipe
    subclasses it."""

    steps: int = option(40, "training steps (one optimizer step each)")
    batch_size: int = option(8, "examples per step", at_least=1)
    lr: float = option(5e-4, "Adam learning rate")
    eval_every: int = option(10, "held-out evaluation every N steps (0 = only at the start and "
                                 "the end, which are always evaluated)")
    save_every: int = option(20, "checkpoint every N steps (0 = only at the end); the same "
                                 "--log-dir resumes from the newest")


@functools.cache
def _field_types(config_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(config_cls)


def _has_type(value: Any, hint: Any) -> bool:
    """`value` is of the field type `hint` (bool is not an int; an int is a float)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_has_type(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return isinstance(value, str) and value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return not isinstance(value, bool) and isinstance(value, int if hint is int else
                                                          (int, float))
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def config_parser(config_cls: type, prog: str) -> argparse.ArgumentParser:
    """An argument parser with one option per field of the dataclass `config_cls`."""
    parser = argparse.ArgumentParser(prog=prog,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _argument_kind(hints[f.name], f.name)
        if f.default is not dataclasses.MISSING:
            kind["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kind["default"] = f.default_factory()
        else:
            kind["required"] = True
        parser.add_argument(flag, dest=f.name, help=f.metadata.get("help", ""), **kind)
    return parser


def parse_config(config_cls: type[C], argv: list[str], prog: str = "mint-rl run") -> C:
    """`config_cls` built from command-line options; errors exit with argparse's message."""
    options = config_parser(config_cls, prog).parse_args(argv)
    try:
        return config_cls(**vars(options))
    except ValueError as e:  # the dataclass's own checks, shown like a bad option
        config_parser(config_cls, prog).error(str(e))
        raise  # unreachable: error() exits


def _argument_kind(hint: Any, name: str) -> dict[str, Any]:
    """argparse keywords (type / choices / action) for a field's type."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{name}: only `X | None` unions become options, got {hint}")
        hint, optional = args[0], True
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return {"type": type(choices[0]), "choices": choices}
    if hint in (int, float, str):
        return {"type": _or_none(hint) if optional else hint, "metavar": hint.__name__.upper()}
    raise TypeError(f"{name}: a {hint} field cannot be a command-line option")


def _or_none(kind: type) -> Any:
    def convert(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    convert.__name__ = kind.__name__
    return convert


def write_config(log_dir: Path, config: Any) -> None:
    """`config.json` in the run folder: the options a run was started with."""
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
