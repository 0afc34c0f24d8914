"""The sampling endpoints (create_sampling_session, samplers/{id}, asample) and the work behind
them, served by mint_rl's SamplingClient (one vLLM engine per base model in this process).

`compute_logprobs` needs nothing of its own: the SDK sends it as an asample with max_tokens=1
and prompt_logprobs=true.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter

from mint_rl.errors import InvalidInputError
from mint_rl.server import paths, schemas
from mint_rl.server.futures import Reply, ReplyFuture, settle_from
from mint_rl.server.registry import Model, Sampler, sampler_id
from mint_rl.server.state import ServerState
from mint_rl.server.wire import encode_sample_response
from mint_rl.types import ModelInput, SampleResponse, SamplingParams

# One asample makes one vLLM request per sample: a huge count must not exhaust the server.
MAX_SAMPLES = 1024


def snapshot_sampler(state: ServerState, model: Model, seq_id: int) -> Sampler:
    """A sampling session frozen on the model's current weights (runs in the model's order)."""
    client = model.client.save_weights_and_get_sampling_client()
    sampler = Sampler(id=sampler_id(model.session_id, seq_id), session_id=model.session_id,
                      base_model=model.base_model, model_path=None, folder=None, client=client)
    state.registry.add_sampler(sampler)
    return sampler


def create_sampling_session(state: ServerState,
                            body: schemas.CreateSamplingSession) -> dict[str, Any]:
    session = state.registry.session(body.session_id)
    sid = sampler_id(session.id, body.sampling_session_seq_id)
    sampler = _sampler(sid, session.id, body.model_path, body.base_model)
    sampler.source = state.model_source(sampler.base_model)
    state.registry.add_sampler(sampler)
    return {"sampling_session_id": sid, "type": "create_sampling_session"}


def _sampler(sid: str, session_id: str, model_path: str | None,
             base_model: str | None) -> Sampler:
    if model_path is None:
        if not base_model:
            raise InvalidInputError("base_model", "give model_path or base_model")
        return Sampler(sid, session_id, base_model, None, None)
    folder = paths.existing_folder(model_path)
    run = paths.parse(model_path)[0]
    base = base_model or (paths.read_run_info(run) or {}).get("base_model")
    if not base:  # a checkpoint the server did not write: its adapter names its base model
        config = json.loads((folder / "adapter_config.json").read_text())
        base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise InvalidInputError("base_model", f"{model_path!r} does not say its base model; "
                                              "give base_model")
    return Sampler(sid, session_id, base, model_path, folder)


def get_sampler(state: ServerState, sid: str) -> dict[str, Any]:
    sampler = state.registry.sampler(sid)
    return {"sampler_id": sampler.id, "base_model": sampler.base_model,
            "model_path": sampler.model_path}


def asample(state: ServerState, body: schemas.Sample) -> dict[str, Any]:
    """Answers at once with one sequence id per sample; the samples come via retrieve_future."""
    if body.sampling_session_id is not None:
        sampler = state.registry.sampler(body.sampling_session_id)
    else:  # the older form: the model named in the request itself
        key = f"adhoc:{body.model_path or body.base_model}"
        sampler = _sampler(key, "", body.model_path, body.base_model)
        sampler.source = state.model_source(sampler.base_model)
    if not 1 <= body.num_samples <= MAX_SAMPLES:
        raise InvalidInputError("num_samples", f"must be in [1, {MAX_SAMPLES}], "
                                               f"got {body.num_samples}")
    request_id, future = state.futures.create()
    # The SDK stamps these on the sequences (the result does not repeat them). The request id is
    # a uuid, so they are unique server-wide; the sampler records stability info under them.
    sequence_ids = [f"{request_id}:{i}" for i in range(body.num_samples)]
    state.pool.submit(_run, sampler, body, sequence_ids, future)
    return {"request_id": request_id, "sample_sequence_ids": sequence_ids}


def _run(sampler: Sampler, body: schemas.Sample, sequence_ids: list[str],
         future: ReplyFuture) -> None:
    """Starts the sampling (the engine batches it with everyone else's) and returns."""
    if not future.set_running_or_notify_cancel():  # cancelled while it waited for the pool
        return
    try:
        prompt = _prompt(body)
        params = SamplingParams(**body.sampling_params.model_dump())
        _check_supported(body, len(prompt.to_ints()))
        inner = sampler.sampling_client().sample(
            prompt, body.num_samples, params, include_prompt_logprobs=bool(body.prompt_logprobs),
            topk_prompt_logprobs=body.topk_prompt_logprobs,
            topk_sample_logprobs=body.topk_sample_logprobs,
            record_stability_info=bool(body.record_stability_info), sequence_ids=sequence_ids)
    except BaseException as e:  # noqa: BLE001 — the request's failure
        future.set_exception(e)
        return
    settle_from(future, inner, lambda r: _encode(r, body))


def _prompt(body: schemas.Sample) -> ModelInput:
    tokens: list[int] = []
    for i, chunk in enumerate(body.prompt.chunks):
        if chunk.type != "encoded_text" or chunk.tokens is None:
            raise InvalidInputError(f"prompt.chunks[{i}]",
                                    f"{chunk.type} chunks are not supported (text only)")
        tokens.extend(chunk.tokens)
    return ModelInput.from_ints(tokens)


def _check_supported(body: schemas.Sample, prompt_length: int) -> None:
    if body.target_prompt_logprobs is not None:  # vLLM scores its top k, not chosen ids
        raise InvalidInputError("target_prompt_logprobs", "is not supported by this server "
                                "(topk_prompt_logprobs is)")
    if body.prompt_alt_tokens_k:
        raise InvalidInputError("prompt_alt_tokens_k", "is not supported by this server")
    last_n = body.prompt_logprobs_last_n
    if last_n is not None and not 1 <= last_n <= prompt_length - 1:
        raise InvalidInputError("prompt_logprobs_last_n",
                                f"must be in [1, {prompt_length - 1}], got {last_n}")


def _encode(response: SampleResponse, body: schemas.Sample) -> Reply:
    last_n = body.prompt_logprobs_last_n
    if last_n is not None and response.prompt_logprobs is not None:
        # Scored in full, sent as asked: positions before the last N carry no logprob.
        cut = len(response.prompt_logprobs) - last_n
        response.prompt_logprobs = [None] * cut + response.prompt_logprobs[cut:]
        if response.topk_prompt_logprobs is not None:
            response.topk_prompt_logprobs = ([None] * cut
                                             + response.topk_prompt_logprobs[cut:])
    return Reply.protobuf(encode_sample_response(response, body.topk_prompt_logprobs,
                                                 body.topk_sample_logprobs))


# --------------------------------------------------------------------------------------------
# the endpoints


def router(state: ServerState) -> APIRouter:
    api = APIRouter()

    @api.post("/create_sampling_session")
    async def create_sampling_session_endpoint(
            body: schemas.CreateSamplingSession) -> dict[str, Any]:
        return create_sampling_session(state, body)

    @api.get("/samplers/{sampler_id}")
    async def get_sampler_endpoint(sampler_id: str) -> dict[str, Any]:
        return get_sampler(state, sampler_id)

    @api.post("/asample")
    async def asample_endpoint(body: schemas.Sample) -> dict[str, Any]:
        return asample(state, body)

    return api
