"""AdvantageActor: rewards -> zero-centered advantages -> datums.

Centering per group (GRPO-style, the default) compares samples of the same prompt; per batch is
the seed's rule. Groups whose rewards are all equal carry no signal after centering: they are
dropped and counted rather than trained on with zero advantage. With `kl_coef > 0` and a
reference actor (actors/reference.py), advantages are shaped per token by a KL penalty against
the reference policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mint_rl import types
from mint_rl.actors.reference import ReferenceActor
from mint_rl.rl.advantages import (
    apply_kl_penalty,
    center_per_batch,
    center_per_group,
    is_constant,
)
from mint_rl.rl.data import trajectory_datums
from mint_rl.rl.types import TrajectoryGroup
from mint_rl.runtime import Actor, endpoint


@dataclass
class TrainingBatch:
    datums: list[types.Datum]
    metrics: dict[str, float] = field(default_factory=dict)


class AdvantageActor(Actor):
    def __init__(self, center: str = "group", normalize_std: bool = False,
                 kl_coef: float = 0.0, reference: ReferenceActor | None = None) -> None:
        if center not in ("group", "batch"):
            raise ValueError(f"center: must be 'group' or 'batch', got {center!r}")
        if kl_coef < 0:
            raise ValueError(f"kl_coef: must be >= 0, got {kl_coef}")
        if kl_coef > 0 and reference is None:
            raise ValueError("reference: a KL penalty (kl_coef > 0) needs a reference actor")
        self.center = center
        self.normalize_std = normalize_std
        self.kl_coef = kl_coef
        self.reference = reference

    @endpoint(raises=(ValueError,))
    async def build(self, groups: list[TrajectoryGroup]) -> TrainingBatch:
        rewards = [g.rewards for g in groups]
        center = center_per_group if self.center == "group" else center_per_batch
        advantages = center(rewards, normalize_std=self.normalize_std)
        datums: list[types.Datum] = []
        skipped = 0
        for group, group_adv in zip(groups, advantages, strict=True):
            if self.center == "group" and is_constant(group.rewards):
                skipped += 1
                continue
            for trajectory, adv in zip(group.trajectories, group_adv, strict=True):
                if adv != 0.0:
                    datums.extend(trajectory_datums(trajectory, adv))
        flat = [r for g in rewards for r in g]
        metrics = {
            "reward/mean": sum(flat) / max(len(flat), 1),
            "groups/skipped_constant": skipped,
            "datums": len(datums),
        }
        if self.kl_coef > 0 and datums:
            assert self.reference is not None  # checked in __init__
            reference_logprobs = await self.reference.logprobs(datums)
            datums, kl = apply_kl_penalty(datums, reference_logprobs, self.kl_coef)
            metrics["kl/policy_reference"] = kl
        return TrainingBatch(datums, metrics)
