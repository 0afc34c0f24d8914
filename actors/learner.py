"""LearnerActor: forward_backward + optim_step per batch, then saves the new policy for samplers.

All torch work runs on the TrainingClient's own worker thread; this actor only awaits its
futures, so the event loop (and sampling) keeps going while the learner trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mint_rl import types
from mint_rl.errors import InvalidInputError
from mint_rl.process_memory import learner_memory_metrics
from mint_rl.rl.types import SavedPolicy
from mint_rl.runtime import Actor, endpoint

if TYPE_CHECKING:  # torch-heavy: imported when the learner starts, not with this module
    from mint_rl.learner.engine import LearnerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnerConfig:
    base_model: str
    rank: int = 16
    seed: int | None = 0
    loss: str = "ppo"
    loss_config: dict[str, float] | None = None
    learning_rate: float = 1e-3
    resume_from: str | None = None  # a save_state path: continue exactly from it
    settings: LearnerSettings | None = None


class LearnerActor(Actor):
    def __init__(self, config: LearnerConfig) -> None:
        self.config = config

    async def setup(self) -> None:
        import mint_rl as mint

        service = mint.ServiceClient(learner_settings=self.config.settings)
        resume_from = self.config.resume_from
        if resume_from:
            make = lambda: service.create_training_client_from_state_with_optimizer(  # noqa: E731
                resume_from)
        else:
            make = lambda: service.create_lora_training_client(  # noqa: E731
                self.config.base_model, rank=self.config.rank, seed=self.config.seed)
        self.client = await self.ctx.run_blocking(make)
        self.adam = types.AdamParams(learning_rate=self.config.learning_rate, eps=1e-8)

    @property
    def policy_version(self) -> int:
        """The number of optimizer steps taken: the version of the weights it holds."""
        return self.client.policy_version

    # Any error reaches the caller and the learner lives on: its weights are still those of the
    # last completed step, which the pipeline checkpoints before it stops the run.
    @endpoint(raises=(Exception,))
    async def train(self, datums: list[types.Datum]) -> dict[str, float]:
        """One optimizer step on `datums`; returns the step's metrics.

        With no datums the step changes nothing but the version number, which stays equal to
        the number of batches consumed.
        """
        if not datums:
            await self.client.optim_step(self.adam)
            return {}
        fb = self.client.forward_backward(datums, self.config.loss, self.config.loss_config)
        step = self.client.optim_step(self.adam)  # queued behind fb: no wait in between
        try:
            out = await fb
        except InvalidInputError as e:
            # The batch's loss turned non-finite (absurd behaviour logprobs, say): the learner
            # refused it and undid its gradient, so the queued step changes no weight. One
            # poisoned batch costs a step, not the run.
            log.warning("learner: batch of %d datums refused: %s", len(datums), e)
            await step
            return {"batch/refused": 1.0}
        optim = await step
        return {
            "loss/sum": out.loss,
            "kl/sampler_learner": out.metrics.get("kl_sample_train:mean", 0.0),
            "ratio/mean": out.metrics.get("ratio:mean", 1.0),
            "clip/frac": out.metrics.get("clip_frac:mean", 0.0),
            "optim/grad_norm": (optim.metrics or {}).get("grad_norm:mean", 0.0),
            # Measured where the learner runs (its own process with the Ray backend).
            **learner_memory_metrics(out.metrics),
        }

    @endpoint
    async def save_weights_for_sampler(self, probe_tokens: list[int]) -> SavedPolicy:
        """Saves the current weights for the samplers, with the logprobs they must reproduce."""
        policy_version = self.policy_version
        folder = self.client.save_sampler_folder(f"v{policy_version:06d}")
        probe_logprobs = self.client.probe_logprobs(probe_tokens)  # queued behind the save
        return SavedPolicy(await folder, policy_version, await probe_logprobs)

    @endpoint
    async def save_state(self, name: str) -> str:
        return (await self.client.save_state(name, overwrite=True)).path

    async def teardown(self) -> None:
        self.client.close()
