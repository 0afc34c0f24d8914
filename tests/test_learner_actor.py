"""The learner actor keeps a run alive when one batch is poisoned."""

from __future__ import annotations

import functools

import pytest

from mint_rl import types
from mint_rl.actors.learner import LearnerActor, LearnerConfig
from mint_rl.runtime import open_system


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_poisoned_batch_costs_a_step_not_the_run(tiny_model) -> None:
    config = LearnerConfig(base_model=str(tiny_model), rank=4, loss="importance_sampling")
    tokens = [5, 6, 7, 8, 9, 10]
    good = types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                       loss_fn_inputs={"target_tokens": tokens[1:], "advantages": [1.0],
                                       "logprobs": [-6.0] * 5})
    # -100 nats against the learner's ~-6: exp(logp - logprob) overflows, the loss with it.
    poisoned = types.Datum(model_input=good.model_input,
                           loss_fn_inputs={"target_tokens": tokens[1:], "advantages": [-1.0],
                                           "logprobs": [-100.0] * 5})
    async with open_system() as system:
        learner = await system.spawn(functools.partial(LearnerActor, config))
        await learner.train([good])  # Adam has moments: a later step could still move
        probe = [1, 5, 9, 13, 17, 21]
        before = await learner.save_weights_for_sampler(probe)

        assert await learner.train([poisoned]) == {"batch/refused": 1.0}
        after = await learner.save_weights_for_sampler(probe)
        assert after.policy_version == before.policy_version + 1  # versions count steps
        assert after.probe_logprobs == before.probe_logprobs  # no weight moved
        metrics = await learner.train([good])  # and training goes on
        assert metrics["loss/sum"] == metrics["loss/sum"]  # finite, not NaN
