"""The training endpoints (create_model ... load_weights) and the work behind them, each a
`produce() -> Reply` run off the event loop.

Each function checks what can be checked on arrival (the model exists), then hands the rest to
a thread; whatever is wrong with the content (a bad datum, an unknown loss, a path outside the
storage) surfaces there as a typed mint_rl error and becomes the request's failure.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import zstandard
from fastapi import APIRouter, Request

from mint_rl.errors import InvalidInputError
from mint_rl.learner import checkpoint as ckpt
from mint_rl.losses import tinker_loss_config
from mint_rl.models import resolve_model
from mint_rl.server import paths, schemas, wire
from mint_rl.server import tinker_wire_pb2 as pb
from mint_rl.server.errors import HTTPError
from mint_rl.server.futures import Reply
from mint_rl.server.registry import Model, model_id
from mint_rl.server.sequencer import Sequencer
from mint_rl.server.state import ServerState
from mint_rl.types import AdamParams, LoraConfig


def new_model(state: ServerState, mid: str, session_id: str, base_model: str,
              lora: LoraConfig, user_metadata: dict[str, Any] | None) -> Model:
    """A fresh LoRA on the base model (loaded once for all models of it), registered."""
    client = state.service.new_training_client(
        base_model, lora, model_dir=resolve_model(state.model_source(base_model)), run_id=mid)
    model = Model(id=mid, session_id=session_id, base_model=base_model, client=client,
                  sequencer=Sequencer(mid, gap_timeout_s=state.config.seq_gap_timeout_s))
    try:
        state.registry.add_model(model)
    except BaseException:
        client.close()
        raise
    # The run's user_metadata comes back in get_training_run: the cookbook keeps its
    # renderer_name there and reads it when it loads the run's checkpoints.
    paths.write_run_info(mid, {"base_model": base_model, "lora_rank": lora.rank,
                               "lora": dataclasses.asdict(lora), "session_id": session_id,
                               "user_metadata": user_metadata})
    return model


def create_model(state: ServerState, body: schemas.CreateModel) -> dict[str, Any]:
    session = state.registry.session(body.session_id)
    mid = model_id(session.id, body.model_seq_id)
    if mid in state.creations:  # a retried submission
        return {"request_id": state.creations[mid], "model_id": mid}

    def produce() -> Reply:
        if body.optimizer_config.type != "adamw":
            raise InvalidInputError("optimizer_config", f"only 'adamw' is supported, got "
                                                        f"{body.optimizer_config.type!r}")
        lora = LoraConfig(**(body.lora_config or schemas.LoraSettings()).model_dump())
        new_model(state, mid, session.id, body.base_model, lora, body.user_metadata)
        return Reply.json({"model_id": mid, "type": "create_model"})

    state.creations[mid] = state.start(produce)
    return {"request_id": state.creations[mid], "model_id": mid}


def get_info(state: ServerState, body: schemas.ModelRef) -> dict[str, Any]:
    model = state.registry.model(body.model_id)
    info = model.client.get_info()
    return {
        "type": "get_info", "model_id": model.id, "is_lora": True,
        "lora_rank": info.lora_rank, "model_name": model.base_model,
        # The local folder of the model's files: the SDK's get_tokenizer() loads it with no hub.
        "model_data": {"arch": info.model_data.arch, "model_name": model.base_model,
                       "tokenizer_id": str(model.client.engine.model_dir)},
    }


def forward_backward(state: ServerState, msg: pb.ForwardBackwardRequest) -> dict[str, Any]:
    model = state.registry.model(msg.model_id)

    def produce() -> Reply:
        data = wire.decode_data(msg)
        run = model.client.forward if msg.forward_only else model.client.forward_backward
        # Tinker SDK users get Tinker's loss semantics (CISPO: a hard clip on [0, 4]).
        config = tinker_loss_config(msg.loss_fn, wire.loss_config(msg))
        out = run(data, msg.loss_fn, config).result()  # type: ignore[arg-type]
        return Reply.protobuf(wire.encode_forward_backward_output(out))

    return state.start_in_order(model, msg.seq_id, produce)


def optim_step(state: ServerState, body: schemas.OptimStep) -> dict[str, Any]:
    model = state.registry.model(body.model_id)

    def produce() -> Reply:
        if body.adam_params is None:
            raise InvalidInputError("optimizer_params", "only AdamW is supported: send "
                                                        "adam_params")
        result = model.client.optim_step(AdamParams(**body.adam_params.model_dump())).result()
        return Reply.json({"metrics": wire.wire_metrics(result.metrics or {})})

    return state.start_in_order(model, body.seq_id, produce)


def save_weights(state: ServerState, body: schemas.SaveWeights) -> dict[str, Any]:
    """save_state: adapter + optimizer, at tinker://<model_id>/weights/<name>."""
    model = state.registry.model(body.model_id)

    def produce() -> Reply:
        name = paths.check_part("path", body.path or f"seq-{body.seq_id or 0:06d}")
        saved = model.client.save_state(name, overwrite=body.overwrite).result()
        paths.set_ttl(model.id, f"weights/{name}", body.ttl_seconds)
        return Reply.json({"path": paths.from_mint_path(saved.path), "type": "save_weights"})

    return state.start_in_order(model, body.seq_id, produce)


def save_weights_for_sampler(state: ServerState,
                             body: schemas.SaveWeightsForSampler) -> dict[str, Any]:
    """Named: a sampler checkpoint's tinker path. Unnamed: a sampling session on the current
    weights (loaded into this process's vLLM engine and checked there)."""
    model = state.registry.model(body.model_id)

    def produce() -> Reply:
        if body.path is not None:
            name = paths.check_part("path", body.path)
            saved = model.client.save_weights_for_sampler(name).result()
            paths.set_ttl(model.id, f"sampler_weights/{name}", body.ttl_seconds)
            return Reply.json({"path": paths.from_mint_path(saved.path),
                               "type": "save_weights_for_sampler"})
        if body.sampling_session_seq_id is None:
            raise InvalidInputError("path", "give a name, or sampling_session_seq_id")
        from mint_rl.server.sampling import snapshot_sampler

        sampler = snapshot_sampler(state, model, body.sampling_session_seq_id)
        return Reply.json({"sampling_session_id": sampler.id, "type": "save_weights_for_sampler"})

    return state.start_in_order(model, body.seq_id, produce)


def save_weights_external(state: ServerState,
                          body: schemas.SaveWeightsExternal) -> dict[str, Any]:
    """The adapter to take away, at tinker://<model_id>/external_weights/<name> (age-encrypted
    to the recipients when given); get_external_weights_urls then hands out links to it."""
    model = state.registry.model(body.model_id)

    def produce() -> Reply:
        name = paths.check_part("path", body.path)
        saved = model.client.save_weights_external(
            name, age_encryption_recipients=body.age_encryption_recipients).result()
        paths.set_ttl(model.id, f"external_weights/{name}", body.ttl_seconds)
        folder = paths.existing_checkpoint(model.id, f"external_weights/{name}")
        return Reply.json({"path": paths.from_mint_path(saved.path),
                           "size_bytes": sum(f.stat().st_size for f in folder.iterdir()),
                           "type": "save_weights_external"})

    return state.start_in_order(model, body.seq_id, produce)


def load_weights(state: ServerState, body: schemas.LoadWeights) -> dict[str, Any]:
    """Into an existing model (model_id), or into a new one (session_id + model_seq_id: the
    SDK's create_training_client_from_state*, which derives the model id itself)."""
    if body.model_id is not None:
        model = state.registry.model(body.model_id)
        return state.start_in_order(model, body.seq_id, lambda: _load(model, body))
    if body.session_id is None or body.model_seq_id is None:
        raise InvalidInputError("model_id", "give model_id, or session_id and model_seq_id")
    session = state.registry.session(body.session_id)
    mid = model_id(session.id, body.model_seq_id)
    if mid in state.creations:
        return {"request_id": state.creations[mid], "model_id": mid}

    def produce() -> Reply:
        meta = ckpt.read_meta(paths.existing_folder(body.path))  # a save_state checkpoint
        lora = LoraConfig(**meta["lora"])
        model = new_model(state, mid, session.id, body.base_model or meta["base_model"], lora,
                          body.user_metadata)
        try:
            return _load(model, body)
        except BaseException:  # the SDK gets no client for a model it could not load
            state.release(state.registry.remove_model(mid))
            raise

    state.creations[mid] = state.start(produce)
    return {"request_id": state.creations[mid], "model_id": mid}


def _load(model: Model, body: schemas.LoadWeights) -> Reply:
    folder = str(paths.existing_folder(body.path))
    load = model.client.load_state_with_optimizer if body.optimizer else model.client.load_state
    load(folder).result()
    return Reply.json({"path": body.path, "model_id": model.id, "type": "load_weights"})


# --------------------------------------------------------------------------------------------
# the endpoints


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
    async def create_model_endpoint(body: schemas.CreateModel) -> dict[str, Any]:
        return create_model(state, body)

    @api.post("/get_info")
    async def get_info_endpoint(body: schemas.ModelRef) -> dict[str, Any]:
        return get_info(state, body)

    @api.post("/forward_backward")
    async def forward_backward_endpoint(request: Request) -> dict[str, Any]:
        body = await read_protobuf_body(request, state.config.max_request_bytes)
        try:
            msg = wire.parse_forward_backward(body)
        except ValueError as e:
            raise HTTPError(400, str(e)) from None
        return forward_backward(state, msg)

    @api.post("/optim_step")
    async def optim_step_endpoint(body: schemas.OptimStep) -> dict[str, Any]:
        return optim_step(state, body)

    @api.post("/save_weights")
    async def save_weights_endpoint(body: schemas.SaveWeights) -> dict[str, Any]:
        return save_weights(state, body)

    @api.post("/save_weights_for_sampler")
    async def save_for_sampler_endpoint(body: schemas.SaveWeightsForSampler) -> dict[str, Any]:
        return save_weights_for_sampler(state, body)

    @api.post("/save_weights_external")
    async def save_weights_external_endpoint(body: schemas.SaveWeightsExternal) -> dict[str, Any]:
        return save_weights_external(state, body)

    @api.post("/load_weights")
    async def load_weights_endpoint(body: schemas.LoadWeights) -> dict[str, Any]:
        return load_weights(state, body)

    return api
