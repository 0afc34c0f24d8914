"""AdvantageActor: rewards -> zero-centered advantages -> datums.

Centering per group (GRPO-style, the default) compares samples of the same prompt; per batch is
the seed's rule. Groups whose rewards are all equal carry no signal after centering: they are
dropped and counted rather than trained on with zero advantage. With `kl_coef > 0` and a
reference actor (actors/reference.py), advantages are shaped per token by a KL penalty against
the reference policy.
"""

from __future__ import annotations

from mint_rl.actors.reference import ReferenceActor
from mint_rl.rl.data import (
    TrainingBatch,
    apply_kl_penalty,
    batch_from_groups,
    center_per_batch,
    center_per_group,
)
from mint_rl.rl.types import TrajectoryGroup
from mint_rl.runtime import Actor, endpoint


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
        center = center_per_group if self.center == "group" else center_per_batch
        advantages = center([g.rewards for g in groups], normalize_std=self.normalize_std)
        batch = batch_from_groups(groups, advantages, skip_constant=self.center == "group",
                                  drop_zero=True)
        if self.kl_coef > 0 and batch.datums:
            assert self.reference is not None  # checked in __init__
            reference_logprobs = await self.reference.logprobs(batch.datums)
            batch.datums, kl = apply_kl_penalty(batch.datums, reference_logprobs, self.kl_coef)
            batch.metrics["kl/policy_reference"] = kl
        return batch
