"""ReferenceActor: logprobs of sampled tokens under a frozen reference policy (the base model).

The reference is a TrainingClient that never steps: its LoRA's B matrices start at zero, so it
computes exactly the base model (same packing, same kernels as the learner). It holds its own copy
of the weights and runs on its own worker thread, pinned like the learner's when cores are given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mint_rl import types
from mint_rl.runtime import Actor, endpoint

if TYPE_CHECKING:  # torch-heavy: imported when the reference starts, not with this module
    from mint_rl.learner.engine import LearnerSettings


class ReferenceActor(Actor):
    def __init__(self, base_model: str, settings: LearnerSettings | None = None) -> None:
        self.base_model = base_model
        self.settings = settings

    async def setup(self) -> None:
        import mint_rl as mint

        service = mint.ServiceClient(learner_settings=self.settings)
        # Rank 1: the smallest adapter; with B = 0 it adds nothing to the base model's output.
        self.client = await self.ctx.run_blocking(
            lambda: service.create_lora_training_client(self.base_model, rank=1, seed=0))

    @endpoint(raises=(ValueError, KeyError))
    async def logprobs(self, datums: list[types.Datum]) -> list[list[float]]:
        """Per datum, log p_ref(target_t | input[:t+1]) for every target position."""
        plain = [types.Datum(model_input=d.model_input,
                             loss_fn_inputs={"target_tokens": d.loss_fn_inputs["target_tokens"],
                                             "weights": d.loss_fn_inputs["weights"]})
                 for d in datums]
        out = await self.client.forward(plain, "cross_entropy")
        return [o["logprobs"].tolist() for o in out.loss_fn_outputs]

    async def teardown(self) -> None:
        self.client.close()
