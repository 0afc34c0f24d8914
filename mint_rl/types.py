"""The MinT / Tinker data types: model inputs, datums, tensors, optimizer and sampling settings.

Plain dataclasses. Each one checks its own fields when built, and errors name the field, so bad
input fails at the call site instead of deep inside a training step.
"""

from __future__ import annotations

import math
import operator
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np

from mint_rl.errors import BadRequestError, InvalidInputError

if TYPE_CHECKING:
    import torch

LossFnType = Literal["cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo",
                     "stable_reinforce"]
StopReason = Literal["length", "stop"]
TensorDtype = Literal["int64", "float32"]

# Keys whose plain-list values have a known dtype (Tinker's table, plus `mask`).
_KEY_DTYPES: dict[str, TensorDtype] = {
    "target_tokens": "int64",
    "weights": "float32",
    "advantages": "float32",
    "logprobs": "float32",
    "mask": "float32",
    "clip_low_threshold": "float32",
    "clip_high_threshold": "float32",
    "sequence_ratio_mask": "float32",
}


# --------------------------------------------------------------------------------------------
# Tensors


@dataclass(frozen=True)
class TensorData:
    """A flat list of numbers with a dtype and a shape: how arrays cross the API."""

    data: list[int] | list[float]
    dtype: TensorDtype
    shape: list[int] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("int64", "float32"):
            raise InvalidInputError("dtype", f"must be 'int64' or 'float32', got {self.dtype!r}")
        if self.shape is not None and not (
                isinstance(self.shape, (list, tuple))
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                        for n in self.shape)):
            raise InvalidInputError("shape", f"must be a list of sizes >= 0, got {self.shape!r}")
        if self.shape is not None and math.prod(self.shape) != len(self.data):
            raise InvalidInputError(
                "shape", f"{self.shape} does not hold {len(self.data)} elements"
            )

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> TensorData:
        array = np.asarray(array)
        if array.dtype.kind in "iub":
            dtype: TensorDtype = "int64"
            flat = array.astype(np.int64).reshape(-1).tolist()
        elif array.dtype.kind == "f":
            dtype = "float32"
            flat = array.astype(np.float32).reshape(-1).tolist()
        else:
            raise InvalidInputError("data", f"unsupported array dtype {array.dtype}")
        return cls(data=flat, dtype=dtype, shape=list(array.shape))

    @classmethod
    def from_torch(cls, tensor: Any) -> TensorData:
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():  # numpy has no bfloat16; float32 is what is kept anyway
            tensor = tensor.float()
        return cls.from_numpy(tensor.numpy())

    @classmethod
    def from_list(cls, values: Sequence[Any], dtype: TensorDtype,
                  field: str = "data") -> TensorData:
        np_dtype = np.int64 if dtype == "int64" else np.float32
        # numpy would read "7" as 7 and True as 1 (and 7.5 as 7 for int64) without a word.
        odd = [v for v in _leaves(values) if isinstance(v, (str, bytes))
               or (dtype == "int64" and isinstance(v, (bool, np.bool_)))]
        if odd:
            kind = "integers" if dtype == "int64" else "numbers"
            raise InvalidInputError(field, f"must be {kind}, got {odd[0]!r}")
        try:
            if dtype == "int64":
                raw = np.asarray(values)
                if raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw)):
                    j = int(np.flatnonzero(raw.reshape(-1) != np.round(raw.reshape(-1)))[0])
                    raise InvalidInputError(field, f"must be integers, got {raw.reshape(-1)[j]} "
                                                   f"at position {j}")
            with np.errstate(over="ignore"):  # 1e39 -> inf, refused where it is used
                array = np.asarray(values, dtype=np_dtype)
        except (TypeError, ValueError, OverflowError) as e:
            if isinstance(e, InvalidInputError):
                raise
            raise InvalidInputError(field, f"cannot be read as {dtype}: {e}") from None
        return cls(data=array.reshape(-1).tolist(), dtype=dtype, shape=list(array.shape))

    def to_numpy(self) -> np.ndarray:
        np_dtype = np.int64 if self.dtype == "int64" else np.float32
        array = np.asarray(self.data, dtype=np_dtype)
        return array.reshape(self.shape) if self.shape is not None else array

    def to_torch(self) -> Any:
        import torch

        return torch.from_numpy(self.to_numpy())

    def tolist(self) -> list[Any]:
        return self.to_numpy().tolist()

    def __len__(self) -> int:
        return self.shape[0] if self.shape else len(self.data)


def _leaves(values: Any) -> list[Any]:
    """The elements of a (nested) list."""
    if isinstance(values, (list, tuple)):
        return [leaf for v in values for leaf in _leaves(v)]
    return [values]


# What a Datum's `loss_fn_inputs` accepts per key: TensorData, an array, or numbers in a list
# (nested for more dimensions), tuple or alone; the last three only under a key of _KEY_DTYPES,
# which gives their dtype.
LossFnInput: TypeAlias = (
    "TensorData | np.ndarray | torch.Tensor | list[Any] | tuple[Any, ...] | float"
)


def _as_tensor_data(key: str, value: LossFnInput) -> TensorData:
    """Converts what users pass in `loss_fn_inputs` (list, numpy, torch, TensorData)."""
    if isinstance(value, TensorData):
        return value
    field = f"loss_fn_inputs[{key!r}]"
    if isinstance(value, np.ndarray) or type(value).__module__.startswith("torch"):
        if _KEY_DTYPES.get(key) == "int64" and "bool" in str(getattr(value, "dtype", "")):
            raise InvalidInputError(field, "must be integers, got a bool array")
        try:
            if isinstance(value, np.ndarray):
                return TensorData.from_numpy(value)
            return TensorData.from_torch(value)
        except InvalidInputError as e:  # name the key, not TensorData's own field
            raise InvalidInputError(field, e.problem) from None
    if isinstance(value, (list, tuple)):
        if key not in _KEY_DTYPES:
            # Tinker raises KeyError here too: a plain list under an unknown key has no dtype.
            raise UnknownInputKeyError(key)
        return TensorData.from_list(value, _KEY_DTYPES[key], field)
    if isinstance(value, (int, float)) and key in _KEY_DTYPES:
        return TensorData.from_list([value], _KEY_DTYPES[key], field)
    raise InvalidInputError(field, f"unsupported type {type(value).__name__}")


class UnknownInputKeyError(BadRequestError, KeyError):
    def __init__(self, key: str) -> None:
        known = ", ".join(sorted(_KEY_DTYPES))
        super().__init__(
            f"loss_fn_inputs[{key!r}]: unknown key for a plain list (known: {known}); "
            "pass a numpy array or torch tensor to send other keys"
            + (" — the sampler's logprobs go under 'logprobs'" if key == "target_logprobs" else "")
        )

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0])


# --------------------------------------------------------------------------------------------
# Model inputs


@dataclass(frozen=True)
class EncodedTextChunk:
    tokens: list[int]
    type: Literal["encoded_text"] = "encoded_text"

    def __post_init__(self) -> None:
        if not isinstance(self.tokens, (list, tuple)):
            raise InvalidInputError("tokens", f"must be a list of ints, got "
                                              f"{type(self.tokens).__name__}")
        for i, t in enumerate(self.tokens):
            if not isinstance(t, (int, np.integer)) or isinstance(t, bool):
                raise InvalidInputError(f"tokens[{i}]", f"must be an int, got {t!r}")
            if t < 0:
                raise InvalidInputError(f"tokens[{i}]", f"token ids are >= 0, got {t}")

    @property
    def length(self) -> int:
        return len(self.tokens)


ModelInputChunk = EncodedTextChunk


def _as_int(value: Any) -> Any:
    """`value` as an int if it is an integer (numpy, torch, ...); otherwise unchanged."""
    if isinstance(value, bool):
        return value
    try:
        return operator.index(value)
    except TypeError:
        return value


@dataclass(frozen=True)
class ModelInput:
    """A token sequence, stored as chunks (only text chunks are supported locally)."""

    chunks: list[ModelInputChunk] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.chunks, (list, tuple)):
            raise InvalidInputError("chunks", f"must be a list, got {type(self.chunks).__name__}")
        for i, chunk in enumerate(self.chunks):
            if not isinstance(chunk, EncodedTextChunk):
                raise InvalidInputError(f"chunks[{i}]", "must be an EncodedTextChunk, got "
                                                        f"{type(chunk).__name__}")

    @classmethod
    def from_ints(cls, tokens: Sequence[int]) -> ModelInput:
        """Integers of any kind (numpy, torch) become ints; anything else (5.7, True, "5") is
        refused by the chunk, never truncated or parsed."""
        if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__iter__"):
            raise InvalidInputError("tokens", f"must be a list of ints, got "
                                              f"{type(tokens).__name__}")
        return cls(chunks=[EncodedTextChunk(tokens=[_as_int(t) for t in tokens])])

    @classmethod
    def empty(cls) -> ModelInput:
        return cls(chunks=[])

    def to_ints(self) -> list[int]:
        out: list[int] = []
        for chunk in self.chunks:
            if not isinstance(chunk, EncodedTextChunk):
                raise InvalidInputError("chunks", "to_ints() needs text chunks only")
            out.extend(chunk.tokens)
        return out

    @property
    def length(self) -> int:
        return sum(chunk.length for chunk in self.chunks)

    def append(self, chunk: ModelInputChunk) -> ModelInput:
        return ModelInput(chunks=[*self.chunks, chunk])

    def append_int(self, token: int) -> ModelInput:
        return self.append(EncodedTextChunk(tokens=[int(token)]))


# --------------------------------------------------------------------------------------------
# Provenance: which sampled sequence each datum position came from (Tinker's provenance spans)


@dataclass(frozen=True, kw_only=True)
class PromptProvenanceSpan:
    """The covered datum positions are positions [offset, offset + length) of the prompt of the
    request that produced sequence `sequence_id`."""

    sequence_id: str
    offset: int = 0
    length: int

    def __post_init__(self) -> None:
        _check_span(self)


@dataclass(frozen=True, kw_only=True)
class SampledProvenanceSpan:
    """The covered datum positions are positions [offset, offset + length) of the tokens that
    sequence `sequence_id` sampled."""

    sequence_id: str
    offset: int = 0
    length: int

    def __post_init__(self) -> None:
        _check_span(self)


ProvenanceSpan: TypeAlias = "PromptProvenanceSpan | SampledProvenanceSpan"


def _check_span(span: PromptProvenanceSpan | SampledProvenanceSpan) -> None:
    kind = type(span).__name__
    if not isinstance(span.sequence_id, str) or not span.sequence_id:
        raise InvalidInputError(f"{kind}.sequence_id", f"must be a non-empty string, got "
                                                       f"{span.sequence_id!r}")
    for name in ("offset", "length"):
        value = getattr(span, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InvalidInputError(f"{kind}.{name}", f"must be an int >= 0, got {value!r}")


def check_provenance(where: str, model_input_length: int, target_length: int | None,
                     model_input_spans: Sequence[Any] | None,
                     loss_fn_input_spans: Sequence[Any] | None) -> None:
    """Spans come as a pair, and each list tiles its field exactly (lengths sum to its length).
    `target_length` None: target_tokens is absent or not 1-D, so its tiling is not checked."""
    if (model_input_spans is None) != (loss_fn_input_spans is None):
        missing = "model_input_spans" if model_input_spans is None else "loss_fn_input_spans"
        raise InvalidInputError(f"{where}{missing}", "provenance comes as a pair: set "
                                "model_input_spans and loss_fn_input_spans, or neither")
    for name, spans, expected, what in (
        ("model_input_spans", model_input_spans, model_input_length, "model_input"),
        ("loss_fn_input_spans", loss_fn_input_spans, target_length,
         "loss_fn_inputs['target_tokens']"),
    ):
        if spans is None:
            continue
        if not isinstance(spans, (list, tuple)):
            raise InvalidInputError(f"{where}{name}", "must be a list of provenance spans")
        for j, span in enumerate(spans):
            if not isinstance(span, (PromptProvenanceSpan, SampledProvenanceSpan)):
                raise InvalidInputError(f"{where}{name}[{j}]", "must be a PromptProvenanceSpan "
                                        f"or SampledProvenanceSpan, got {type(span).__name__}")
        total = sum(span.length for span in spans)
        if expected is not None and total != expected:
            raise InvalidInputError(f"{where}{name}", f"cover {total} positions but {what} has "
                                    f"{expected}; the spans must tile it exactly")


@dataclass(init=False)
class Datum:
    """One training example: the model's input and the per-token inputs of the loss.

    `loss_fn_inputs` takes any LossFnInput per key and holds TensorData once built. The optional
    provenance spans (set both or neither; `with_provenance` is the usual way) say which sampled
    sequence each position of `model_input` and of `target_tokens` came from.
    """

    model_input: ModelInput
    loss_fn_inputs: dict[str, TensorData]
    model_input_spans: list[ProvenanceSpan] | None
    loss_fn_input_spans: list[ProvenanceSpan] | None

    def __init__(self, model_input: ModelInput,
                 loss_fn_inputs: dict[str, LossFnInput],
                 model_input_spans: Sequence[ProvenanceSpan] | None = None,
                 loss_fn_input_spans: Sequence[ProvenanceSpan] | None = None) -> None:
        if not isinstance(model_input, ModelInput):
            raise InvalidInputError("model_input", "must be a types.ModelInput")
        if not isinstance(loss_fn_inputs, dict):
            raise InvalidInputError("loss_fn_inputs", "must be a dict of key -> array")
        self.model_input = model_input
        self.loss_fn_inputs = {k: _as_tensor_data(k, v) for k, v in loss_fn_inputs.items()}
        # Checked when built, like every field: a miscounted tiling fails at the call site.
        check_provenance("", model_input.length, self.target_length(), model_input_spans,
                         loss_fn_input_spans)
        self.model_input_spans = None if model_input_spans is None else list(model_input_spans)
        self.loss_fn_input_spans = (None if loss_fn_input_spans is None
                                    else list(loss_fn_input_spans))

    def target_length(self) -> int | None:
        """Length of a 1-D target_tokens (what loss_fn_input_spans tile); None otherwise."""
        targets = self.loss_fn_inputs.get("target_tokens")
        if targets is None or (targets.shape is not None and len(targets.shape) != 1):
            return None
        return len(targets)

    def with_provenance(self, model_input: Sequence[ProvenanceSpan],
                        loss_fn_inputs: Sequence[ProvenanceSpan]) -> Datum:
        """A copy carrying provenance: `model_input` spans tile the input tokens,
        `loss_fn_inputs` spans tile `loss_fn_inputs["target_tokens"]`."""
        return Datum(self.model_input, dict(self.loss_fn_inputs), model_input, loss_fn_inputs)


# --------------------------------------------------------------------------------------------
# Optimizer and sampling settings


def _is_int(value: Any, lo: int, hi: int | None = None) -> bool:
    """An int (not a bool) in [lo, hi]."""
    return (isinstance(value, int) and not isinstance(value, bool) and value >= lo
            and (hi is None or value <= hi))


def _check_range(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False,
                 hi_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(name, f"must be a finite number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise InvalidInputError(name, f"must be in {interval}, got {value}")


@dataclass(frozen=True)
class AdamParams:
    """AdamW settings for one `optim_step` (Tinker defaults; same update as torch.optim.AdamW)."""

    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0  # 0 = no global-norm clipping

    def __post_init__(self) -> None:
        _check_range("learning_rate", self.learning_rate, 0.0, math.inf)
        # beta = 1 divides by zero in Adam's bias correction (1 - beta^t); eps = 0 by sqrt(v).
        _check_range("beta1", self.beta1, 0.0, 1.0, hi_open=True)
        _check_range("beta2", self.beta2, 0.0, 1.0, hi_open=True)
        _check_range("eps", self.eps, 0.0, math.inf, lo_open=True)
        _check_range("weight_decay", self.weight_decay, 0.0, math.inf)
        _check_range("grad_clip_norm", self.grad_clip_norm, 0.0, math.inf)


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `stop` takes strings or token ids; MinT's `stop_token_ids` is accepted too."""

    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | list[int] | None = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    stop_token_ids: list[int] | None = None

    def __post_init__(self) -> None:
        if self.max_tokens is not None and not _is_int(self.max_tokens, 1):
            raise InvalidInputError("max_tokens", f"must be a positive int, got "
                                                  f"{self.max_tokens!r}")
        # vLLM reads seed -1 as "unseeded", and sample i uses seed + i.
        if self.seed is not None and not _is_int(self.seed, 0, 2**63 - 1):
            raise InvalidInputError("seed", f"must be an int in [0, 2^63), got {self.seed!r}")
        _check_range("temperature", self.temperature, 0.0, math.inf)
        _check_range("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        if not _is_int(self.top_k, -1) or (self.top_k < 1 and self.top_k not in (-1, 0)):
            raise InvalidInputError("top_k", f"must be -1 (no limit) or >= 1, got {self.top_k!r}")
        self._check_stops()

    def _check_stops(self) -> None:
        stop = self.stop
        if isinstance(stop, list):
            if len({isinstance(s, str) for s in stop}) > 1:
                raise InvalidInputError("stop", "mixes strings and token ids")
            for i, s in enumerate(stop):
                if not (isinstance(s, str) and s) and not _is_int(s, 0):
                    raise InvalidInputError(f"stop[{i}]", "must be a non-empty string or a "
                                                          f"token id >= 0, got {s!r}")
        elif stop is not None and not (isinstance(stop, str) and stop):
            raise InvalidInputError("stop", "must be a non-empty string or a list of strings or "
                                            f"token ids, got {stop!r}")
        ids = self.stop_token_ids
        if ids is not None and not (isinstance(ids, list) and all(_is_int(t, 0) for t in ids)):
            raise InvalidInputError("stop_token_ids", f"must be a list of token ids >= 0, got "
                                                      f"{ids!r}")

    def stop_strings(self) -> list[str]:
        if isinstance(self.stop, str):
            return [self.stop]
        return [s for s in (self.stop or []) if isinstance(s, str)]

    def stop_token_id_list(self) -> list[int]:
        ids = [s for s in (self.stop or []) if isinstance(s, int) and not isinstance(s, str)]
        return ids + list(self.stop_token_ids or [])


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 32
    seed: int | None = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True

    def __post_init__(self) -> None:
        if not _is_int(self.rank, 1):
            raise InvalidInputError("rank", f"must be a positive int, got {self.rank!r}")
        if not (self.train_mlp or self.train_attn or self.train_unembed):
            raise InvalidInputError("train_attn", "at least one of attn/mlp/unembed must train")


# --------------------------------------------------------------------------------------------
# Outputs


@dataclass
class ForwardBackwardOutput:
    loss_fn_output_type: str
    loss_fn_outputs: list[dict[str, TensorData]]
    metrics: dict[str, float]

    @property
    def loss(self) -> float:
        """The summed loss of the call (the seed reads `result.loss`)."""
        return self.metrics["loss:sum"]


@dataclass
class OptimStepResponse:
    metrics: dict[str, float] | None = None


@dataclass
class SaveWeightsResponse:
    path: str


@dataclass
class SaveWeightsForSamplerResponse:
    path: str


@dataclass
class LoadWeightsResponse:
    path: str


@dataclass
class ModelData:
    arch: str
    model_name: str
    tokenizer_id: str


@dataclass
class GetInfoResponse:
    model_id: str
    model_data: ModelData
    is_lora: bool
    lora_rank: int
    model_name: str


def new_sequence_id() -> str:
    """A sequence id no other sequence of this process (or server) has: a random uuid."""
    return uuid.uuid4().hex


@dataclass
class SampledSequence:
    tokens: list[int]
    logprobs: list[float]  # Tinker allows None; this sampler always returns them
    stop_reason: StopReason
    # Policy version that produced each token (mint_rl extension; see docs/sampling.md).
    policy_versions: list[int] | None = None
    # Names this sequence in provenance spans (and, when recorded, its stability info). Never
    # empty: a sequence built without one gets a fresh id.
    sequence_id: str = field(default_factory=new_sequence_id)
    # topk_sample_logprobs=k: the k most likely (token, logprob) at each generated position.
    topk_logprobs: list[list[tuple[int, float]]] | None = None


@dataclass
class SampleResponse:
    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None = None
    topk_prompt_logprobs: list[list[tuple[int, float]] | None] | None = None


@dataclass
class SupportedModel:
    model_name: str
    max_context_length: int | None = None


@dataclass
class GetServerCapabilitiesResponse:
    supported_models: list[SupportedModel]
