"""From scored groups to a training batch: advantages, then Datums (tinker-cookbook's
`rl/data_processing.py`).

Advantages are rewards zero-centered per group (GRPO-style) or per batch (the seed's rule),
optionally shaped per token by a KL penalty against a reference policy. `batch_from_groups` is
the one way from scored groups and their advantages to a training batch: the advantage actor,
the reference loop (recipes/rl_loop.py) and advantage steps of your own (recipes/composed.py) all
call it. The one-token shift happens in `_datum`, only there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mint_rl import types
from mint_rl.rl.types import Trajectory, TrajectoryGroup

# ------------------------------------------------------------------ advantages


def center_per_group(rewards: Sequence[Sequence[float]], *, normalize_std: bool = False,
                     eps: float = 1e-6) -> list[list[float]]:
    """A_i = R_i - mean(R of its group); optionally divided by the group's std."""
    out = []
    for group in rewards:
        r = np.asarray(group, dtype=np.float64)
        a = r - r.mean()
        if normalize_std:
            a = a / (r.std() + eps)
        out.append(a.tolist())
    return out


def center_per_batch(rewards: Sequence[Sequence[float]], *, normalize_std: bool = False,
                     eps: float = 1e-6) -> list[list[float]]:
    """A_i = R_i - mean(R of the whole batch); group structure kept for the caller."""
    flat = np.asarray([x for group in rewards for x in group], dtype=np.float64)
    mean, std = flat.mean(), flat.std()
    return [[(x - mean) / (std + eps if normalize_std else 1.0) for x in group]
            for group in rewards]


def is_constant(group: Sequence[float]) -> bool:
    """A group whose rewards are all equal teaches nothing after centering."""
    return len(set(group)) <= 1


def apply_kl_penalty(
    datums: Sequence[types.Datum], reference_logprobs: Sequence[Sequence[float]], coef: float
) -> tuple[list[types.Datum], float]:
    """Shapes per-token advantages with a KL penalty against a reference policy.

    On action tokens (weight != 0), kl_t = behaviour logprob - reference logprob, a sample of
    KL(policy || reference); A_t += coef * (mean kl - kl_t), the mean taken over every action
    token of the batch, so the penalty moves credit between tokens without shifting the mean
    advantage (tinker-cookbook's rule). Returns the new datums and the mean kl.
    """
    if len(reference_logprobs) != len(datums):
        raise ValueError(f"reference_logprobs: {len(reference_logprobs)} rows for "
                         f"{len(datums)} datums")
    masks, kls = [], []
    for d, ref in zip(datums, reference_logprobs, strict=True):
        mask = d.loss_fn_inputs["weights"].to_numpy() != 0
        ref = np.asarray(ref, dtype=np.float64)
        if ref.shape != mask.shape:
            raise ValueError(f"reference_logprobs: {ref.shape[0]} values for a datum of "
                             f"{mask.shape[0]} targets")
        masks.append(mask)
        kls.append(np.where(mask, d.loss_fn_inputs["logprobs"].to_numpy() - ref, 0.0))
    n_action = sum(int(m.sum()) for m in masks)
    mean_kl = float(sum(k.sum() for k in kls) / max(n_action, 1))
    out = []
    for d, mask, kl in zip(datums, masks, kls, strict=True):
        advantages = d.loss_fn_inputs["advantages"].to_numpy().astype(np.float64)
        advantages += coef * np.where(mask, mean_kl - kl, 0.0)
        inputs: dict[str, types.LossFnInput] = dict(d.loss_fn_inputs)
        inputs["advantages"] = types.TensorData.from_numpy(advantages.astype(np.float32))
        out.append(types.Datum(model_input=d.model_input, loss_fn_inputs=inputs))
    return out, mean_kl


# ------------------------------------------------------------------ datums


@dataclass
class TrainingBatch:
    """What one training step trains on, and what the batch looked like (metrics)."""

    datums: list[types.Datum]
    metrics: dict[str, float] = field(default_factory=dict)


def batch_from_groups(groups: Sequence[TrajectoryGroup],
                      advantages: Sequence[Sequence[float]], *,
                      skip_constant: bool, drop_zero: bool = False) -> TrainingBatch:
    """The datums of every trajectory with its advantage (`advantages[g][i]` for trajectory i of
    group g), and the batch's `reward/mean` and `datums`.

    `skip_constant`: a group whose rewards are all equal is left out, and counted in
    `groups/skipped_constant` (centered per group, it carries no signal). `drop_zero`: a
    trajectory whose advantage is exactly 0 makes no datum (it adds nothing to the
    advantage-weighted losses; DRO's penalty term would still see it)."""
    if len(advantages) != len(groups):
        raise ValueError(f"advantages: {len(advantages)} rows for {len(groups)} groups")
    datums: list[types.Datum] = []
    skipped = 0
    for group, group_advantages in zip(groups, advantages, strict=True):
        if skip_constant and is_constant(group.rewards):
            skipped += 1
            continue
        for trajectory, advantage in zip(group.trajectories, group_advantages, strict=True):
            if advantage != 0.0 or not drop_zero:
                datums.extend(trajectory_datums(trajectory, advantage))
    rewards = [r for group in groups for r in group.rewards]
    metrics: dict[str, float] = {"reward/mean": sum(rewards) / max(len(rewards), 1),
                                 "datums": len(datums)}
    if skip_constant:
        metrics["groups/skipped_constant"] = skipped
    return TrainingBatch(datums, metrics)


def _datum(tokens: list[int], logprobs: list[float], is_action: list[bool],
           advantage: float) -> types.Datum:
    """Position i of the input predicts token i+1: inputs drop the last token, targets the first.

    Observation (prompt) targets get weight 0, advantage 0 and logprob 0; action targets carry
    the sampler's behaviour logprobs and the trajectory's advantage.
    """
    weights = [1.0 if a else 0.0 for a in is_action[1:]]
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "weights": weights,
            "logprobs": logprobs[1:],
            "advantages": [advantage * w for w in weights],
        },
    )


def trajectory_datum(
    prompt: Sequence[int],
    completion: Sequence[int],
    completion_logprobs: Sequence[float],
    advantage: float,
) -> types.Datum:
    """A single-turn trajectory: prompt + completion."""
    if len(completion) != len(completion_logprobs):
        raise ValueError(
            f"completion_logprobs: length {len(completion_logprobs)} != completion length "
            f"{len(completion)}"
        )
    if not prompt or not completion:
        raise ValueError("prompt and completion must both be non-empty")
    return _datum(
        list(prompt) + list(completion),
        [0.0] * len(prompt) + list(completion_logprobs),
        [False] * len(prompt) + [True] * len(completion),
        advantage,
    )


def trajectory_datums(trajectory: Trajectory, advantage: float) -> list[types.Datum]:
    """A (multi-turn) trajectory: one datum while each observation extends the conversation so
    far, a new datum where it does not (e.g. an env that rewrites the history)."""
    datums: list[types.Datum] = []
    tokens: list[int] = []
    logprobs: list[float] = []
    is_action: list[bool] = []
    for t in trajectory.transitions:
        if tokens and t.observation[: len(tokens)] == tokens:
            new_observation = t.observation[len(tokens):]
        else:
            if tokens:
                datums.append(_datum(tokens, logprobs, is_action, advantage))
            tokens, logprobs, is_action = [], [], []
            new_observation = t.observation
        tokens += new_observation + t.action
        logprobs += [0.0] * len(new_observation) + list(t.logprobs)
        is_action += [False] * len(new_observation) + [True] * len(t.action)
    if len(tokens) >= 2 and any(is_action[1:]):
        datums.append(_datum(tokens, logprobs, is_action, advantage))
    return datums
