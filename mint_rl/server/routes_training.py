"""Training endpoints: create_model ... load_weights. Each answers with a future at once."""

from __future__ import annotations

import io
from typing import Any

import zstandard
from fastapi import APIRouter, Request

from mint_rl.server import schemas, training, wire
from mint_rl.server.errors import HTTPError
from mint_rl.server.state import ServerState


async def read_protobuf_body(request: Request, limit: int) -> bytes:
    """The raw body, zstd-decompressed when Content-Encoding says so (bounded by `limit`)."""
    content_type = request.headers.get("content-type", "")
    if "protobuf" not in content_type:
        raise HTTPError(415, f"forward_backward takes application/x-protobuf, got "
                             f"{content_type or 'no content type'!r}")
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding == "identity":
        return body
    if encoding != "zstd":
        raise HTTPError(415, f"Content-Encoding {encoding!r} is not supported (zstd only)")
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
            raw = reader.read(limit + 1)
    except zstandard.ZstdError as e:
        raise HTTPError(400, f"body is not valid zstd: {e}") from None
    if len(raw) > limit:
        raise HTTPError(413, f"decompressed body over {limit} bytes")
    return raw


def router(state: ServerState) -> APIRouter:
    api = APIRouter()

    @api.post("/create_model")
    async def create_model(body: schemas.CreateModel) -> dict[str, Any]:
        return training.create_model(state, body)

    @api.post("/get_info")
    async def get_info(body: schemas.ModelRef) -> dict[str, Any]:
        return training.get_info(state, body)

    @api.post("/forward_backward")
    async def forward_backward(request: Request) -> dict[str, Any]:
        body = await read_protobuf_body(request, state.config.max_request_bytes)
        try:
            msg = wire.parse_forward_backward(body)
        except ValueError as e:
            raise HTTPError(400, str(e)) from None
        return training.forward_backward(state, msg)

    @api.post("/optim_step")
    async def optim_step(body: schemas.OptimStep) -> dict[str, Any]:
        return training.optim_step(state, body)

    @api.post("/save_weights")
    async def save_weights(body: schemas.SaveWeights) -> dict[str, Any]:
        return training.save_weights(state, body)

    @api.post("/save_weights_for_sampler")
    async def save_for_sampler(body: schemas.SaveWeightsForSampler) -> dict[str, Any]:
        return training.save_weights_for_sampler(state, body)

    @api.post("/save_weights_external")
    async def save_weights_external(body: schemas.SaveWeightsExternal) -> dict[str, Any]:
        return training.save_weights_external(state, body)

    @api.post("/load_weights")
    async def load_weights(body: schemas.LoadWeights) -> dict[str, Any]:
        return training.load_weights(state, body)

    return api
