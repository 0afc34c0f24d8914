"""Client set-up, sessions and futures: /client/config ... /retrieve_future."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from mint_rl.models import DEFAULT_MODEL
from mint_rl.process_memory import current_rss, engine_pids, peak_rss
from mint_rl.server import schemas
from mint_rl.server.errors import HTTPError, failure
from mint_rl.server.futures import wait
from mint_rl.server.state import ServerState

# What the SDK can ask for that this server refuses, by name, at the call (docs/server.md).
UNSUPPORTED = (
    "retrieve_futures", "join_sampling_session", "create_custom_loss (server-side custom losses)",
    "copy_weights", "publish_checkpoint", "auth/token (JWT auth, whoami)",
    "image and audio chunks", "target_prompt_logprobs", "prompt_alt_tokens_k",
    "optimizers other than adamw",
)


REFUSED_ROUTES = (
    ("POST", "/retrieve_futures", "retrieve_futures (sample_use_retrieve_futures is off)"),
    ("POST", "/join_sampling_session", "join_sampling_session"),
    ("POST", "/create_custom_loss", "server-side custom losses (forward_backward_custom runs "
                                    "the loss in the client)"),
    ("POST", "/copy_weights", "copy_weights"),
    ("POST", "/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/publish",
     "publishing checkpoints"),
    ("DELETE", "/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/publish",
     "publishing checkpoints"),
    ("POST", "/auth/token", "JWT auth (the server takes API keys)"),
)


def refuse(what: str) -> Callable[[], Awaitable[Any]]:
    async def refused() -> Any:
        raise HTTPError(400, f"{what}: not supported by this server (see "
                             "get_server_capabilities' `unsupported`)")
    return refused


def server_status(state: ServerState) -> dict[str, Any]:
    models = {model.id: {"base_model": model.base_model,
                         "memory_plan": model.client.engine.last_train_metrics,
                         **model.client.engine.own_bytes()}
              for model in list(state.registry.models.values())}
    engines = {str(pid): peak_rss(pid) for pid in engine_pids()}
    return {"models": models, "base_models": state.service.base_models.held(),
            "memory": {"server_peak_rss": peak_rss(), "server_rss": current_rss(),
                       "engine_peak_rss": engines}}


def router(state: ServerState) -> APIRouter:
    api = APIRouter()

    @api.post("/client/config")
    async def client_config() -> dict[str, Any]:
        # Feature flags for the SDK: API keys only, retrieve_future per request, custom losses
        # on the client; everything else at the SDK's defaults.
        flags: dict[str, Any] = {
            "pjwt_auth_enabled": False, "sample_use_retrieve_futures": False,
            "custom_loss_server_side": False, "sample_join_sampling_session": False,
            "proto_compress_fwdbwd": state.config.compress_forward_backward}
        if state.config.forward_backward_chunk_len is not None:
            flags["fwdbwd_max_chunk_len"] = state.config.forward_backward_chunk_len
        return flags

    @api.post("/client/dynamic_config")
    async def dynamic_config() -> dict[str, Any]:
        # A sample the caller stops waiting for is cancelled here (if it has not started).
        return {"sample_cancel_enabled": True}

    add_session_routes(api, state)

    @api.post("/telemetry")
    async def telemetry() -> dict[str, Any]:
        return {"status": "accepted"}  # nothing is collected

    @api.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @api.get("/status")
    async def status() -> dict[str, Any]:
        """The models this server holds and the memory it takes: peak and current RSS of the
        server process and the peak of each vLLM engine process it started, in bytes; the base
        models held (one copy each, shared by their training models); each training model's
        own bytes (adapter with gradients, optimizer moments) and last memory plan."""
        return server_status(state)

    @api.get("/get_server_capabilities")
    async def capabilities() -> dict[str, Any]:
        # `unsupported`: what this server refuses by name (the SDK reads only supported_models).
        return {"supported_models": [{"model_name": DEFAULT_MODEL, "trainable": True,
                                      "sampleable": True}],
                "unsupported": list(UNSUPPORTED)}

    @api.post("/retrieve_future")
    async def retrieve_future(body: schemas.RetrieveFuture) -> Response:
        return await retrieve(state, body.request_id)

    @api.post("/cancel_future")
    async def cancel_future(body: schemas.CancelFuture) -> dict[str, Any]:
        """Cancels a request that has not started; one that runs or ran is left alone (the SDK
        only logs what this answers)."""
        future = state.futures.get(body.request_id)
        return {"cancelled": bool(future is not None and future.cancel())}

    # Routes of features this server does not have: a clear refusal, never a 404.
    for method, path, what in REFUSED_ROUTES:
        api.add_api_route(path, refuse(what), methods=[method])
    return api


def add_session_routes(api: APIRouter, state: ServerState) -> None:
    """create_session, heartbeats, finish, and what the SDK's RestClient asks of sessions."""

    @api.post("/create_session")
    async def create_session(body: schemas.CreateSession) -> dict[str, Any]:
        session = state.registry.new_session(body.user_metadata or {})
        return {"session_id": session.id, "type": "create_session"}

    @api.get("/sessions")
    async def list_sessions(limit: int = 20, offset: int = 0) -> dict[str, Any]:
        ids = [s.id for s in list(state.registry.sessions.values()) if not s.finished]
        return {"sessions": ids[offset:offset + max(limit, 0)]}

    @api.get("/sessions/{session_id}")
    async def get_session(session_id: str) -> dict[str, Any]:
        session = state.registry.session(session_id)
        return {"training_run_ids": [m.id for m in list(state.registry.models.values())
                                     if m.session_id == session.id],
                "sampler_ids": [s.id for s in list(state.registry.samplers.values())
                                if s.session_id == session.id],
                "user_metadata": session.user_metadata}

    @api.post("/session_heartbeat")
    async def heartbeat(body: schemas.SessionRef) -> dict[str, Any]:
        session = state.registry.session(body.session_id)  # 404 unknown, 410 finished
        session.last_heartbeat = time.time()
        return {"type": "session_heartbeat"}

    @api.post("/sessions/{session_id}/finish")
    async def finish(session_id: str, body: schemas.FinishSession) -> dict[str, Any]:
        state.release(state.registry.finish(session_id))
        return {}


async def retrieve(state: ServerState, request_id: str) -> Response:
    """The result (protobuf or JSON), the failure, or 408 once the long poll is over."""
    future = state.futures.get(request_id)
    if future is None:
        raise HTTPError(404, f"request_id: unknown or expired request {request_id!r}")
    if not await wait(future, state.config.long_poll_s):
        # 408 rather than 200 "try_again": the SDK polls again at once either way, but logs a
        # warning for each try_again.
        return JSONResponse({"type": "try_again", "request_id": request_id,
                             "queue_state": "active"}, status_code=408)
    state.futures.retrieved(request_id)
    if future.cancelled():
        return JSONResponse({"error": f"request_id: {request_id!r} was cancelled",
                             "category": "user"})
    error = future.exception()
    if error is not None:
        return JSONResponse(failure(error))
    reply = future.result()
    return Response(reply.body, media_type=reply.media_type)
