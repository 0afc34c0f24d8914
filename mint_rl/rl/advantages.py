"""Advantages: rewards zero-centered per group (GRPO-style) or per batch (the seed's rule),
optionally shaped per token by a KL penalty against a reference policy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mint_rl import types


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
