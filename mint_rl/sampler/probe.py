"""The probe: a fixed token sequence whose logprobs tell which weights an engine serves.

After loading a policy version, the sampler scores the probe and compares the result with the
learner's logprobs of it (docs/sampling.md, "Probe convention").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mint_rl.errors import InvalidInputError, WeightSyncError

PROBE_TEXT = "The capital of France is Paris. What is 3 + 4? The answer is 7."


def probe_tokens(tokenizer: Any) -> list[int]:
    """BOS + the tokens of PROBE_TEXT."""
    tokens = tokenizer.encode(PROBE_TEXT, add_special_tokens=False)
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + list(tokens)


def check_expected_count(probe: Sequence[int], expected: Sequence[float]) -> None:
    """`expected` holds one logprob per probe token after the first."""
    if len(expected) != len(probe) - 1:
        raise InvalidInputError(
            "expected_probe_logprobs",
            f"needs {len(probe) - 1} values (logprobs of probe[1:]), got {len(expected)}",
        )


def check_arrival(
    policy_version: int, got: Sequence[float], expected: Sequence[float], tolerance: float,
    exact: bool = True,
) -> None:
    """Raises WeightSyncError unless the sampler's probe logprobs `got` match `expected`: at
    every position (`exact`, fp32), else on average over the positions (bf16, whose rounding
    alone moves single positions by over 0.5 nats while the mean moves by a few hundredths)."""
    diffs = [abs(g - float(e)) for g, e in zip(got, expected, strict=True)]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    if exact and not diffs[worst] <= tolerance:  # also catches NaN
        raise WeightSyncError(
            f"policy version {policy_version}: the sampler's probe logprobs differ from the "
            f"learner's by {diffs[worst]:.3g} nats at position {worst + 1} (tolerance "
            f"{tolerance}); the sampler is not serving the loaded weights"
        )
    mean = sum(diffs) / len(diffs)
    if not exact and not mean <= tolerance:
        raise WeightSyncError(
            f"policy version {policy_version}: the sampler's probe logprobs differ from the "
            f"learner's by {mean:.3g} nats on average (at most {diffs[worst]:.3g}, tolerance "
            f"{tolerance} on the mean); the sampler is not serving the loaded weights"
        )
