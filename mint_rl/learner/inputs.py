"""Checking a batch of datums against a loss and turning it into tensors.

Everything that can be wrong with a request is found here, before the model runs, so a rejected
call leaves the accumulated gradient exactly as it was.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mint_rl.errors import InvalidInputError, MissingLossInputError
from mint_rl.losses import Loss
from mint_rl.stability import behaviour_logprobs
from mint_rl.types import Datum, ForwardBackwardOutput, ModelInput, TensorData, check_provenance

log = logging.getLogger(__name__)
_warned_keys: set[tuple[str, str]] = set()


@dataclass
class PreparedDatum:
    tokens: list[int]  # model_input as ints, length N
    targets: torch.Tensor  # (N,) int64
    x: dict[str, torch.Tensor]  # per-token float inputs of the loss, each (N,)

    def to(self, device: torch.device) -> PreparedDatum:
        """This datum with its tensors on `device` (itself when they are there already)."""
        if self.targets.device == device:
            return self
        return PreparedDatum(self.tokens, self.targets.to(device),
                             {k: v.to(device) for k, v in self.x.items()})


def prepare_batch(
    data: Sequence[Datum], loss: Loss | None, vocab_size: int
) -> list[PreparedDatum]:
    """Validates `data` for `loss` (None = custom loss: only target_tokens needed)."""
    if not isinstance(data, (list, tuple)) or len(data) == 0:
        raise InvalidInputError("data", "must be a non-empty list of types.Datum")
    return [_prepare(i, d, loss, vocab_size) for i, d in enumerate(data)]


def _prepare(i: int, datum: Datum, loss: Loss | None, vocab_size: int) -> PreparedDatum:
    if not isinstance(datum, Datum):
        raise InvalidInputError(f"data[{i}]", f"must be a types.Datum, got {type(datum).__name__}")
    where = f"data[{i}]"
    inputs = datum.loss_fn_inputs
    # A Datum's fields can be reassigned after it checked them when built.
    if not isinstance(datum.model_input, ModelInput):
        raise InvalidInputError(f"{where}.model_input", "must be a types.ModelInput")
    if not isinstance(inputs, dict):
        raise InvalidInputError(f"{where}.loss_fn_inputs", "must be a dict of key -> array")
    required = loss.required if loss is not None else ("target_tokens",)
    missing = [k for k in required if k not in inputs]
    if missing:
        hint = ""
        if "logprobs" in missing and "target_logprobs" in inputs:
            hint = "'target_logprobs' is the learner's output; pass the sampler's as 'logprobs'"
        name = loss.name if loss is not None else "custom"
        raise MissingLossInputError(name, missing, list(required), hint)

    tokens = datum.model_input.to_ints()
    n = len(tokens)
    if n == 0:
        raise InvalidInputError(f"{where}.model_input", "is empty")
    _check_ids(f"{where}.model_input", np.asarray(tokens), vocab_size)

    field = f"{where}.loss_fn_inputs['target_tokens']"
    targets = _to_numpy(field, inputs["target_tokens"])
    if targets.ndim != 1:
        raise InvalidInputError(field, f"must be 1-D, got shape {list(targets.shape)}")
    _check_length(field, len(targets), n)
    _check_ids(field, targets, vocab_size)
    # Checked when the Datum was built too; again here because its fields can be reassigned.
    check_provenance(f"{where}.", n, n, datum.model_input_spans, datum.loss_fn_input_spans)

    x = _loss_inputs(where, datum, loss, n) if loss is not None else {}
    return PreparedDatum(tokens=tokens, targets=torch.from_numpy(targets.astype(np.int64)), x=x)


def split_2d_targets(data: Sequence[Datum]) -> tuple[Sequence[Datum], list[int]]:
    """Cross-entropy datums with [N, K] `target_tokens` and `weights` (K candidate tokens per
    position: top-k distillation) as K datums of [N] each, with the same model input.

    Tinker's 2-D cross-entropy is -sum_n sum_k w[n,k]·logp(target[n,k] | input[:n+1]): the
    summed loss of those K datums. Their sequences are identical, so the learner's prefix
    sharing computes them once. `widths[i]` is datum i's K (0 for a 1-D datum)."""
    out: list[Datum] = []
    widths: list[int] = []
    if not isinstance(data, (list, tuple)):
        return data, widths  # not a batch: the learner's validation says so, naming `data`
    for i, datum in enumerate(data):
        # Anything malformed passes through untouched: the learner's validation names its field.
        inputs = getattr(datum, "loss_fn_inputs", None)
        targets = inputs.get("target_tokens") if isinstance(inputs, dict) else None
        if not isinstance(targets, TensorData) or targets.shape is None or len(targets.shape) < 2:
            out.append(datum)
            widths.append(0)
            continue
        field = f"data[{i}].loss_fn_inputs"
        t = _to_numpy(f"{field}['target_tokens']", targets)
        weights = datum.loss_fn_inputs.get("weights")
        if t.ndim != 2 or not isinstance(weights, TensorData):
            raise InvalidInputError(f"{field}['target_tokens']", "2-D targets must be [N, K] "
                                    "with weights of the same shape")
        w = _to_numpy(f"{field}['weights']", weights).astype(np.float32)
        if w.shape != t.shape:
            raise InvalidInputError(f"{field}['weights']", f"must have the targets' shape "
                                                           f"{list(t.shape)}, got {list(w.shape)}")
        for k in range(t.shape[1]):
            out.append(Datum(model_input=datum.model_input,
                             loss_fn_inputs={"target_tokens": t[:, k].astype(np.int64),
                                             "weights": w[:, k]}))
        widths.append(t.shape[1])
    return out, widths


def join_2d_outputs(out: ForwardBackwardOutput, widths: list[int]) -> ForwardBackwardOutput:
    """The outputs of split_2d_targets' datums as one per original datum: [N, K] logprobs."""
    outputs, start = [], 0
    for width in widths:
        if width == 0:
            outputs.append(out.loss_fn_outputs[start])
            start += 1
            continue
        columns = [o["logprobs"].to_numpy() for o in out.loss_fn_outputs[start:start + width]]
        outputs.append({"logprobs": TensorData.from_numpy(np.stack(columns, axis=1))})
        start += width
    return dataclasses.replace(out, loss_fn_outputs=outputs)


def _loss_inputs(where: str, datum: Datum, loss: Loss, n: int) -> dict[str, torch.Tensor]:
    """The loss's per-token float inputs, checked, defaulted and broadcast to length n."""
    inputs = datum.loss_fn_inputs
    known = ("weights", "mask", "logprobs", "advantages", *loss.optional)
    arrays = {k: _float_array(f"{where}.loss_fn_inputs[{k!r}]", inputs[k])
              for k in known if k in inputs}
    for key, array in arrays.items():
        if key == "advantages" and len(array) == 1 and n > 1:
            continue  # one advantage per trajectory: broadcast in _rl_inputs
        _check_length(f"{where}.loss_fn_inputs[{key!r}]", len(array), n)
    if loss.is_rl:
        x_arrays = _rl_inputs(where, datum, loss, arrays, n)
    else:
        x_arrays = {"weights": arrays["weights"]}
    _warn_unused(inputs.keys(), {*loss.required, "weights", "mask", *loss.optional}, loss.name)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in x_arrays.items()}


def _rl_inputs(where: str, datum: Datum, loss: Loss, arrays: dict[str, np.ndarray],
               n: int) -> dict[str, np.ndarray]:
    weights = arrays.get("weights", arrays.get("mask"))
    adv = arrays["advantages"]
    if len(adv) == 1 and n > 1:
        spread = weights != 0 if weights is not None else np.ones(n, dtype=bool)
        adv = np.where(spread, adv[0], 0.0).astype(np.float32)
    if weights is None:
        weights = (adv != 0).astype(np.float32)
    _check_logprobs(f"{where}.loss_fn_inputs['logprobs']", arrays["logprobs"], weights)
    out = {"weights": weights, "advantages": adv, "logprobs": arrays["logprobs"]}
    if "sequence_ratio_mask" in loss.optional:
        out["sequence_ratio_mask"] = _ratio_mask(
            f"{where}.loss_fn_inputs['sequence_ratio_mask']",
            arrays.get("sequence_ratio_mask"), weights, adv)
    if loss.reads_stability_info:
        out["logprobs"], out["recorded"] = behaviour_logprobs(where, datum, out["logprobs"], adv)
    return out


def _ratio_mask(field: str, mask: np.ndarray | None, weights: np.ndarray,
                adv: np.ndarray) -> np.ndarray:
    """GSPO's sequence ratio mask: 0/1 per position. Default: the weighted positions, i.e. the
    sampled tokens the loss trains (A != 0 when no weights are given), which is the mask the
    cookbook builds by hand; prompt positions hold no sampler logprob to compare with."""
    if mask is None:
        return (weights != 0).astype(np.float32)
    bad = (mask != 0) & (mask != 1)
    if bad.any():
        j = int(bad.argmax())
        raise InvalidInputError(field, f"must hold 0 or 1, got {float(mask[j])} at position {j}")
    if not mask.any() and ((weights != 0) & (adv != 0)).any():
        raise InvalidInputError(field, "is all 0 but the datum has tokens to train: the "
                                       "sequence ratio needs at least one position")
    return mask


def _to_numpy(field: str, value: object) -> np.ndarray:
    """The values of a loss input; TensorData built by hand may hold anything."""
    if not isinstance(value, TensorData):
        raise InvalidInputError(field, f"must be TensorData, got {type(value).__name__} "
                                       "(set loss_fn_inputs through Datum(...))")
    try:
        return value.to_numpy()
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidInputError(field, f"cannot be read as {value.dtype}: {e}") from None


def _float_array(field: str, tensor_data: TensorData) -> np.ndarray:
    array = _to_numpy(field, tensor_data).astype(np.float32).reshape(-1)
    if tensor_data.shape is not None and len(tensor_data.shape) > 1:
        raise InvalidInputError(field, f"must be 1-D, got shape {tensor_data.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise InvalidInputError(field, f"has a non-finite value at position {int(bad.argmax())}")
    return array


# A sampled token below this is not something a sampler produced (e^-100 ~ 1e-44); on a trained
# token it would only overflow the importance ratio exp(logp - logprob) and poison the step.
MIN_LOGPROB = -100.0


def _check_logprobs(field: str, logprobs: np.ndarray, weights: np.ndarray) -> None:
    """Behaviour logprobs are log-probabilities (<= 0), and plausible where they are trained."""
    bad = (logprobs > 1e-6) | ((weights != 0) & (logprobs < MIN_LOGPROB))
    if bad.any():
        j = int(bad.argmax())
        raise InvalidInputError(field, f"value {float(logprobs[j])} at position {j} is not a "
                                       f"sampled token's log-probability (in [{MIN_LOGPROB}, 0])")


def _check_length(field: str, got: int, expected: int) -> None:
    if got != expected:
        raise InvalidInputError(
            field, f"has length {got} but model_input has length {expected}; they must match"
        )


def _check_ids(field: str, ids: np.ndarray, vocab_size: int) -> None:
    if ids.dtype.kind == "f":  # 3.7 would be truncated to 3 silently
        fractional = ids != np.round(ids)
        if fractional.any():
            j = int(fractional.argmax())
            raise InvalidInputError(field, f"token ids must be integers, got {float(ids[j])} "
                                           f"at position {j}")
    elif ids.dtype.kind not in "iu":
        raise InvalidInputError(field, f"token ids must be integers, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        j = int(bad.argmax())
        raise InvalidInputError(
            field,
            f"token id {int(ids[j])} at position {j} is outside the vocabulary [0, {vocab_size})",
        )


def _warn_unused(keys, used: set[str], loss_name: str) -> None:
    for key in keys:
        if key not in used and (loss_name, key) not in _warned_keys:
            _warned_keys.add((loss_name, key))
            log.warning("loss_fn_inputs[%r] is not used by %s; ignored", key, loss_name)
