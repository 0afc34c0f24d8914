"""Advantages: rewards zero-centered per group (GRPO-style) or per batch (the seed's rule)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
