"""Running the server with uvicorn (what `mint-rl serve` calls)."""

from __future__ import annotations

from mint_rl.server.app import create_app
from mint_rl.server.config import ServerConfig
from mint_rl.terminal import console


def serve(config: ServerConfig, *, log_level: str = "info") -> None:
    """Serves until interrupted. The config was checked when built: a non-loopback host has an
    API key."""
    import uvicorn

    app = create_app(config)
    where = f"http://{config.host}:{config.port}"
    console.print(f"Tinker-protocol server on {where}: TINKER_BASE_URL={where} "
                  + ("(X-API-Key required)" if config.api_key else "(loopback, no API key)"))
    # No access log: the SDK polls retrieve_future continuously. A held poll (long_poll_s)
    # must not delay stopping either.
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level,
                access_log=False, timeout_graceful_shutdown=5)
