"""KL penalty against a reference policy: the shaping rule, and the reference actor on a model."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from mint_rl.rl.data import apply_kl_penalty, trajectory_datum
from mint_rl.rl.types import Trajectory, TrajectoryGroup, Transition


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _inputs(d) -> dict[str, list]:
    return {k: v.tolist() for k, v in d.loss_fn_inputs.items()}


def test_kl_penalty_moves_credit_between_tokens_without_shifting_the_mean() -> None:
    a = trajectory_datum([1, 2], [3, 4], [-1.0, -2.0], advantage=1.0)
    b = trajectory_datum([1, 2], [5], [-0.5], advantage=-1.0)
    ref = [[0.0, -1.5, -1.0], [0.0, -1.5]]  # action targets: (-1.5, -1.0) and (-1.5)
    out, mean_kl = apply_kl_penalty([a, b], ref, coef=0.1)
    kl = [-1.0 + 1.5, -2.0 + 1.0, -0.5 + 1.5]  # behaviour - reference per action token
    assert mean_kl == pytest.approx(np.mean(kl))
    adv_a, adv_b = _inputs(out[0])["advantages"], _inputs(out[1])["advantages"]
    assert adv_a[0] == 0.0 and adv_b[0] == 0.0  # the prompt target keeps no advantage
    assert adv_a[1:] == pytest.approx([1.0 + 0.1 * (mean_kl - kl[0]),
                                       1.0 + 0.1 * (mean_kl - kl[1])])
    assert adv_b[1:] == pytest.approx([-1.0 + 0.1 * (mean_kl - kl[2])])
    shift = sum(x - y for x, y in zip(adv_a[1:] + adv_b[1:], [1.0, 1.0, -1.0], strict=True))
    assert shift == pytest.approx(0.0, abs=1e-6)
    assert _inputs(out[0])["logprobs"] == _inputs(a)["logprobs"]  # nothing else changes
    with pytest.raises(ValueError, match="reference_logprobs"):
        apply_kl_penalty([a], [[0.0, -1.5]], coef=0.1)
    with pytest.raises(ValueError, match="reference_logprobs"):
        apply_kl_penalty([a, b], ref[:1], coef=0.1)


def _group(prompt: list[int], actions: list[list[int]], logprobs: list[list[float]],
           rewards: list[float]) -> TrajectoryGroup:
    return TrajectoryGroup(
        trajectories=[Trajectory([Transition(observation=prompt, action=act, logprobs=lp,
                                             policy_versions=[0] * len(act), reward=r)])
                      for act, lp, r in zip(actions, logprobs, rewards, strict=True)],
        batch_index=0)


@pytest.mark.anyio
async def test_reference_actor_gives_base_model_logprobs_and_shapes_advantages(tiny_model):
    from transformers import AutoModelForCausalLM

    from mint_rl.actors.advantage import AdvantageActor
    from mint_rl.actors.reference import ReferenceActor
    from mint_rl.runtime import open_system

    prompt, actions = [1, 5, 9], [[11, 12, 13], [14, 15, 16]]
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()

    def base_logprobs(action: list[int]) -> list[float]:
        tokens = torch.tensor([prompt + action])
        with torch.no_grad():
            lp = torch.log_softmax(base(tokens).logits[0, :-1].float(), -1)
        return lp.gather(-1, tokens[0, 1:, None])[:, 0].tolist()[len(prompt) - 1:]

    exact = [base_logprobs(a) for a in actions]
    async with open_system() as system:
        reference = await system.spawn(functools.partial(ReferenceActor, str(tiny_model)))
        with pytest.raises(ValueError, match="reference"):
            AdvantageActor(kl_coef=0.5)
        advantage = await system.spawn(functools.partial(AdvantageActor, kl_coef=0.5,
                                                         reference=reference))
        # Behaviour logprobs == the reference's: no KL, advantages exactly the centered rewards.
        batch = await advantage.build([_group(prompt, actions, exact, [1.0, 0.0])])
        assert batch.metrics["kl/policy_reference"] == pytest.approx(0.0, abs=1e-5)
        for d, adv in zip(batch.datums, [0.5, -0.5], strict=True):
            x = _inputs(d)
            assert x["advantages"][len(prompt) - 1:] == pytest.approx([adv] * 3, abs=1e-5)
        # Behaviour 0.3 nats above the reference on the first sample's tokens.
        shifted = [[v + 0.3 for v in exact[0]], exact[1]]
        batch = await advantage.build([_group(prompt, actions, shifted, [1.0, 0.0])])
        assert batch.metrics["kl/policy_reference"] == pytest.approx(0.15, abs=1e-5)
        first = _inputs(batch.datums[0])["advantages"][len(prompt) - 1:]
        second = _inputs(batch.datums[1])["advantages"][len(prompt) - 1:]
        assert first == pytest.approx([0.5 + 0.5 * (0.15 - 0.3)] * 3, abs=1e-5)
        assert second == pytest.approx([-0.5 + 0.5 * 0.15] * 3, abs=1e-5)
