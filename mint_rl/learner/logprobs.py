"""Selective log-probabilities: the LM head only where a token is asked for, in chunks.

On a small model with a large vocabulary, the (tokens x vocab) logits dominate a step. We never
materialise them for the whole batch: hidden states are gathered at the requested positions, and
the LM head + log-softmax run in chunks. Positions that train go through autograd; the rest are
computed under no_grad (their values are still returned to the user).
"""

from __future__ import annotations

import torch

CHUNK = 512  # positions per LM-head chunk: 512 x 49k fp32 logits = 100 MB


def token_logprobs(
    hidden: torch.Tensor, lm_head: torch.nn.Module, targets: torch.Tensor, *, chunk: int = CHUNK
) -> torch.Tensor:
    """log p(targets[i] | hidden[i]) for (M, H) hidden states; log-softmax in fp32."""
    out = []
    for start in range(0, hidden.shape[0], chunk):
        logits = lm_head(hidden[start : start + chunk]).float()
        picked = logits.gather(-1, targets[start : start + chunk, None]).squeeze(-1)
        out.append(picked - torch.logsumexp(logits, dim=-1))
    if not out:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(out)


def selective_logprobs(
    hidden_flat: torch.Tensor,
    lm_head: torch.nn.Module,
    columns: torch.Tensor,
    targets: torch.Tensor,
    trained: torch.Tensor | None,
) -> torch.Tensor:
    """Logprobs (N,) of one datum: with grad at `trained` positions (None = all), else without."""
    if trained is None:
        return token_logprobs(hidden_flat[columns], lm_head, targets)
    result = torch.empty(len(columns), dtype=torch.float32, device=hidden_flat.device)
    frozen = ~trained
    if frozen.any():
        with torch.no_grad():
            # A shared prompt maps several datums onto the same (column, target): compute once.
            cols, tgts = columns[frozen], targets[frozen]
            pairs, inverse = torch.unique(torch.stack([cols, tgts]), dim=1, return_inverse=True)
            unique = token_logprobs(hidden_flat[pairs[0]], lm_head, pairs[1])
            result[frozen] = unique[inverse]
    if trained.any():
        live = token_logprobs(hidden_flat[columns[trained]], lm_head, targets[trained])
        # Scatter into a fresh tensor so autograd sees one differentiable (N,) vector.
        result = result.index_put((trained.nonzero().squeeze(-1),), live)
    return result
