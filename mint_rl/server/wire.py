"""The protobuf bodies of the protocol <-> mint_rl's types (layout: tinker_wire.proto).

forward_backward arrives as a ForwardBackwardRequest; results of forward_backward and sample go
back as ForwardBackwardOutput and SampleResponse. Everything else is JSON (schemas.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from google.protobuf.message import DecodeError

from mint_rl.errors import InvalidInputError
from mint_rl.server import tinker_wire_pb2 as pb
from mint_rl.server.tensors import decode_tensor, encode_batched, read_array
from mint_rl.types import (
    Datum,
    EncodedTextChunk,
    ForwardBackwardOutput,
    ModelInput,
    PromptProvenanceSpan,
    ProvenanceSpan,
    SampledProvenanceSpan,
    SampleResponse,
)

# Reductions the SDK knows when it merges the metrics of several chunks (`name:reduction`).
REDUCTIONS = ("sum", "mean", "min", "max", "slack", "hash2", "unique")
# TopkLogprobs marks an empty slot with token 0 and this logprob (the SDK's MASK_LOGPROB).
MASK_LOGPROB = -99999.0


def parse_forward_backward(body: bytes) -> pb.ForwardBackwardRequest:
    """The request message; a body that is not one raises ValueError (-> HTTP 400)."""
    msg = pb.ForwardBackwardRequest()
    try:
        msg.ParseFromString(body)
    except DecodeError as e:
        raise ValueError(f"body is not a ForwardBackwardRequest protobuf: {e}") from None
    if not msg.model_id:
        raise ValueError("model_id: missing")
    return msg


def decode_data(msg: pb.ForwardBackwardRequest) -> list[Datum]:
    return [decode_datum(f"data[{i}]", d) for i, d in enumerate(msg.data)]


def decode_datum(field: str, msg: pb.Datum) -> Datum:
    inputs = {key: decode_tensor(f"{field}.loss_fn_inputs[{key!r}]", tensor)
              for key, tensor in msg.loss_fn_inputs.items()}
    # proto3 cannot tell an empty repeated field from an absent one: no spans means no
    # provenance (the SDK sends none for a datum without it). Datum checks pairing and tiling.
    has_spans = bool(msg.model_input_spans) or bool(msg.loss_fn_input_spans)
    try:
        return Datum(
            model_input=decode_model_input(f"{field}.model_input", msg.model_input),
            loss_fn_inputs=inputs,  # type: ignore[arg-type]
            model_input_spans=decode_spans(f"{field}.model_input_spans", msg.model_input_spans)
            if has_spans else None,
            loss_fn_input_spans=decode_spans(f"{field}.loss_fn_input_spans",
                                             msg.loss_fn_input_spans) if has_spans else None,
        )
    except InvalidInputError as e:
        if e.field.startswith(field):
            raise
        raise InvalidInputError(f"{field}.{e.field}", e.problem) from None


def decode_spans(field: str, spans: Sequence[pb.ProvenanceSpan]) -> list[ProvenanceSpan]:
    out: list[ProvenanceSpan] = []
    for j, span in enumerate(spans):
        kind = span.WhichOneof("span")
        if kind is None:
            raise InvalidInputError(f"{field}[{j}]", "is empty (prompt_tokens or sampled_tokens)")
        arm = getattr(span, kind)
        cls = PromptProvenanceSpan if kind == "prompt_tokens" else SampledProvenanceSpan
        try:
            out.append(cls(sequence_id=arm.sequence_id, offset=arm.offset, length=arm.length))
        except InvalidInputError as e:
            raise InvalidInputError(f"{field}[{j}].{e.field.split('.')[-1]}",
                                    e.problem) from None
    return out


def decode_model_input(field: str, chunks: Sequence[pb.Chunk]) -> ModelInput:
    out: list[EncodedTextChunk] = []
    for i, chunk in enumerate(chunks):
        kind = chunk.WhichOneof("chunk")
        if kind != "encoded_text":
            raise InvalidInputError(f"{field}.chunks[{i}]",
                                    f"{kind or 'empty'} chunks are not supported (text only)")
        tokens = read_array(f"{field}.chunks[{i}].tokens", chunk.encoded_text.tokens, np.int32)
        out.append(EncodedTextChunk(tokens=tokens.astype(np.int64).tolist()))
    return ModelInput(chunks=out)


def loss_config(msg: pb.ForwardBackwardRequest) -> dict[str, float | str] | None:
    """loss_fn_config: the v2 map (numbers and strings) when sent, else the legacy one."""
    if msg.loss_fn_config_v2:
        return {key: (value.text if value.WhichOneof("value") == "text" else value.number)
                for key, value in msg.loss_fn_config_v2.items()}
    return dict(msg.loss_fn_config) or None


def wire_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Keys as `name:reduction` with exactly one colon: the SDK splits on it and fails
    otherwise. A key that is not of that form is sent as a mean."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name, sep, reduction = key.rpartition(":")
        if not sep or reduction not in REDUCTIONS:
            name, reduction = key, "mean"
        out[f"{name.replace(':', '_')}:{reduction}"] = float(value)
    return out


def encode_forward_backward_output(out: ForwardBackwardOutput) -> bytes:
    """One ArrayRecord holding every datum's outputs (per field, one BatchedTensor)."""
    record = pb.ArrayRecord(num_datums=len(out.loss_fn_outputs))
    keys = list(out.loss_fn_outputs[0]) if out.loss_fn_outputs else []
    for key in keys:
        tensors = [datum[key] for datum in out.loss_fn_outputs]
        record.fields[key].CopyFrom(
            encode_batched(key, [t.to_numpy() for t in tensors], tensors[0].dtype))
    msg = pb.ForwardBackwardOutput(loss_fn_output_type=out.loss_fn_output_type,
                                   loss_fn_outputs=[record])
    msg.metrics.update(wire_metrics(out.metrics))
    return msg.SerializeToString()


def encode_sample_response(response: SampleResponse, top_k: int = 0,
                           sample_top_k: int = 0) -> bytes:
    """`top_k`: the prompt's top-k rows; `sample_top_k`: each sequence's generated tokens'."""
    msg = pb.SampleResponse()
    for seq in response.sequences:
        added = msg.sequences.add(
            stop_reason=pb.STOP_REASON_LENGTH if seq.stop_reason == "length"
            else pb.STOP_REASON_STOP,
            tokens=np.asarray(seq.tokens, dtype="<i4").tobytes(),
            logprobs=np.asarray(seq.logprobs, dtype="<f4").tobytes(),
        )
        if sample_top_k > 0 and seq.topk_logprobs:
            added.topk_sampled_logprobs.CopyFrom(encode_topk(seq.topk_logprobs, sample_top_k))
    if response.prompt_logprobs is not None:
        values = [math.nan if lp is None else lp for lp in response.prompt_logprobs]
        msg.prompt_logprobs = np.asarray(values, dtype="<f4").tobytes()
    if response.topk_prompt_logprobs is not None and top_k > 0:
        msg.topk_prompt_logprobs.CopyFrom(encode_topk(response.topk_prompt_logprobs, top_k))
    return msg.SerializeToString()


def encode_topk(rows: Sequence[Sequence[tuple[int, float]] | None], k: int) -> pb.TopkLogprobs:
    """(length x k) matrices; a missing row or slot holds the SDK's sentinel (0, -99999)."""
    ids = np.zeros((len(rows), k), dtype="<i4")
    logprobs = np.full((len(rows), k), MASK_LOGPROB, dtype="<f4")
    for i, row in enumerate(rows):
        for j, (token, lp) in enumerate((row or [])[:k]):
            ids[i, j], logprobs[i, j] = token, lp
    return pb.TopkLogprobs(token_ids=ids.tobytes(), logprobs=logprobs.tobytes(), k=k,
                           length=len(rows))
