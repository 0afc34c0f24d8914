"""Turning a sampled trajectory into a Datum: the one-token shift is done here, once."""

from __future__ import annotations

from collections.abc import Sequence

from mint_rl import types


def trajectory_datum(
    prompt: Sequence[int],
    completion: Sequence[int],
    completion_logprobs: Sequence[float],
    advantage: float,
) -> types.Datum:
    """prompt + completion -> (input = all but the last token, targets = all but the first).

    Prompt targets get weight 0, advantage 0 and logprob 0; completion targets carry the
    sampler's (behaviour) logprobs and the trajectory's advantage.
    """
    if len(completion) != len(completion_logprobs):
        raise ValueError(
            f"completion_logprobs: length {len(completion_logprobs)} != completion length "
            f"{len(completion)}"
        )
    if not prompt or not completion:
        raise ValueError("prompt and completion must both be non-empty")
    tokens = list(prompt) + list(completion)
    n_prompt_targets = len(prompt) - 1
    weights = [0.0] * n_prompt_targets + [1.0] * len(completion)
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "weights": weights,
            "logprobs": [0.0] * n_prompt_targets + list(completion_logprobs),
            "advantages": [advantage * w for w in weights],
        },
    )
