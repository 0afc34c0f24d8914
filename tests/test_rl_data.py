"""RL building blocks: advantage centering and the trajectory -> datum shift."""

from __future__ import annotations

import pytest

from mint_rl.rl.data import center_per_batch, center_per_group, is_constant, trajectory_datum


def test_center_per_group():
    adv = center_per_group([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    assert adv[0] == [0.5, -0.5, -0.5, 0.5]
    assert adv[1] == pytest.approx([0.25, 0.25, 0.25, -0.75])
    assert all(abs(sum(g)) < 1e-12 for g in adv)
    normed = center_per_group([[1.0, 0.0]], normalize_std=True)
    assert normed[0] == pytest.approx([1.0, -1.0], abs=1e-5)


def test_center_per_batch_uses_the_batch_mean():
    adv = center_per_batch([[1.0, 1.0], [0.0, 0.0]])
    assert adv == [[0.5, 0.5], [-0.5, -0.5]]  # per group these would all be 0
    assert is_constant([1.0, 1.0]) and not is_constant([1.0, 0.0])


def test_trajectory_datum_shifts_once_and_masks_the_prompt():
    d = trajectory_datum(prompt=[10, 11, 12], completion=[20, 21], completion_logprobs=[-0.1, -0.2],
                         advantage=0.5)
    assert d.model_input.to_ints() == [10, 11, 12, 20]
    x = {k: v.tolist() for k, v in d.loss_fn_inputs.items()}
    assert x["target_tokens"] == [11, 12, 20, 21]
    assert x["weights"] == [0.0, 0.0, 1.0, 1.0]
    assert x["logprobs"] == pytest.approx([0.0, 0.0, -0.1, -0.2])
    assert x["advantages"] == [0.0, 0.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="completion_logprobs"):
        trajectory_datum([1], [2, 3], [-0.1], 1.0)


def test_multi_turn_trajectory_is_one_datum_when_observations_extend():
    from mint_rl.rl.data import trajectory_datums
    from mint_rl.rl.types import Trajectory, Transition

    first = Transition(observation=[1, 2], action=[3, 4], logprobs=[-0.3, -0.4],
                       policy_versions=[0, 0], reward=0.0)
    # The next observation repeats the conversation so far and adds the env's reply [5].
    second = Transition(observation=[1, 2, 3, 4, 5], action=[6], logprobs=[-0.6],
                        policy_versions=[1], reward=1.0)
    traj = Trajectory([first, second])
    assert traj.total_reward == 1.0 and traj.oldest_policy_version == 0
    (d,) = trajectory_datums(traj, advantage=2.0)
    x = {k: v.tolist() for k, v in d.loss_fn_inputs.items()}
    assert d.model_input.to_ints() == [1, 2, 3, 4, 5]
    assert x["target_tokens"] == [2, 3, 4, 5, 6]
    assert x["weights"] == [0.0, 1.0, 1.0, 0.0, 1.0]  # env tokens never train
    assert x["logprobs"] == pytest.approx([0.0, -0.3, -0.4, 0.0, -0.6])
    assert x["advantages"] == [0.0, 2.0, 2.0, 0.0, 2.0]

    # An observation that rewrites history starts a new datum.
    rewritten = Transition(observation=[9, 9], action=[7], logprobs=[-0.7], policy_versions=[1],
                           reward=0.0)
    assert len(trajectory_datums(Trajectory([first, rewritten]), 1.0)) == 2


def test_batch_from_groups_skips_constant_groups_and_zero_advantages_when_asked():
    from mint_rl.rl.data import batch_from_groups
    from mint_rl.rl.types import Trajectory, TrajectoryGroup, Transition

    def group(rewards: list[float]) -> TrajectoryGroup:
        return TrajectoryGroup([Trajectory([Transition([1, 2], [3], [-0.5], [0], r)])
                                for r in rewards], batch_index=0)

    groups = [group([1.0, 0.0, 0.5]), group([1.0, 1.0, 1.0])]
    advantages = center_per_group([g.rewards for g in groups])  # [[.5, -.5, 0], [0, 0, 0]]
    batch = batch_from_groups(groups, advantages, skip_constant=True, drop_zero=True)
    assert batch.metrics == {"reward/mean": pytest.approx(4.5 / 6), "datums": 2,
                             "groups/skipped_constant": 1}
    assert [d.loss_fn_inputs["advantages"].tolist() for d in batch.datums] == [[0.0, 0.5],
                                                                             [0.0, -0.5]]
    # Without skipping, every trajectory makes its datum, a zero advantage included.
    kept = batch_from_groups(groups, advantages, skip_constant=False)
    assert kept.metrics["datums"] == 6 and "groups/skipped_constant" not in kept.metrics
    with pytest.raises(ValueError, match="advantages"):
        batch_from_groups(groups, advantages[:1], skip_constant=True)
