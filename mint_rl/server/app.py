"""The FastAPI application: every endpoint under /api/v1, behind the API-key and size checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from mint_rl.learner.engine import LearnerSettings
from mint_rl.server import openai, paths, runs, sampling, sessions, training
from mint_rl.server.config import ServerConfig
from mint_rl.server.errors import install_handlers
from mint_rl.server.middleware import GuardMiddleware
from mint_rl.server.state import ServerState

PREFIX = "/api/v1"


async def expire_sessions(state: ServerState) -> None:
    """Frees the models of clients that went away without finishing their session, and deletes
    the checkpoints whose TTL has passed."""
    timeout = state.config.session_timeout_s
    while True:
        await anyio.sleep(min(30.0, timeout / 4))
        state.release(state.registry.expire(timeout))
        await anyio.to_thread.run_sync(paths.sweep_expired)


def create_app(config: ServerConfig | None = None, *,
               learner_settings: LearnerSettings | None = None) -> FastAPI:
    """A Tinker-protocol server over mint_rl; `app.state.server` is its ServerState."""
    config = config or ServerConfig()
    state = ServerState(config, learner_settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(expire_sessions, state)
            yield
            tg.cancel_scope.cancel()
        state.close()  # models finish what they run; nothing new starts

    # No /docs or /openapi.json: the protocol is the SDK's, and docs/server.md describes it.
    app = FastAPI(title="mint_rl Tinker server", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.server = state
    install_handlers(app)
    for module in (sessions, training, sampling, runs):
        app.include_router(module.router(state), prefix=PREFIX)
    app.include_router(openai.router(state), prefix=openai.PREFIX)  # OpenAI clients
    app.include_router(runs.downloads_router(state))  # signed links, no API key
    app.add_middleware(GuardMiddleware, api_key=config.api_key,
                       max_body_bytes=config.max_request_bytes)
    return app
