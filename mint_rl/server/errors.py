"""Turning exceptions into what the SDK expects, without tracebacks going to the client.

- A failed asynchronous request becomes the retrieve_future answer `{"error", "category"}`,
  which the SDK raises as `tinker.RequestFailedError`; "user" when the request itself was wrong
  (mint_rl's typed errors name the field), "server" otherwise.
- A request refused on arrival gets an HTTP status with a JSON `detail`: 400 bad body, 401 bad
  API key, 404 unknown id, 413 too large. Never 409 or 5xx for a client's mistake: the SDK
  retries those for minutes.
- The OpenAI-compatible routes (/v1, openai.py) answer errors as OpenAI does:
  `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mint_rl.errors import (
    BadRequestError,
    CorruptCheckpointError,
    ModelNotAvailableError,
    NotFoundError,
)

log = logging.getLogger(__name__)

# Raised by mint_rl (and numpy/pydantic checks) when the request's content is wrong.
USER_ERRORS: tuple[type[Exception], ...] = (
    BadRequestError, CorruptCheckpointError, ModelNotAvailableError, ValueError, KeyError,
    FloatingPointError,
)


class HTTPError(Exception):
    """A request refused on arrival, with its status code."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def message(exc: BaseException) -> str:
    # KeyError's str() quotes its argument; mint_rl's messages read better without.
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def failure(exc: BaseException) -> dict[str, Any]:
    """The retrieve_future answer for a request that raised `exc`."""
    if isinstance(exc, USER_ERRORS) or (isinstance(exc, HTTPError) and exc.status < 500):
        return {"error": message(exc), "category": "user"}
    log.error("request failed", exc_info=exc)  # the traceback stays in the server's log
    return {"error": f"internal error ({type(exc).__name__}): {message(exc)}",
            "category": "server"}


def openai_error_body(message: str, *, param: str | None = None, code: str | None = None,
                      type_: str = "invalid_request_error") -> dict[str, Any]:
    """The error body OpenAI clients read (the /v1 routes answer in this shape)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def status_of(exc: BaseException) -> int:
    if isinstance(exc, HTTPError):
        return exc.status
    if isinstance(exc, NotFoundError):
        return 404
    return 400 if isinstance(exc, USER_ERRORS) else 500


def install_handlers(app: FastAPI) -> None:
    """Every exception a handler lets out becomes a JSON answer."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
            return JSONResponse({"detail": "internal server error"}, status_code=status)
        return JSONResponse({"detail": message(exc)}, status_code=status)

    for kind in (HTTPError, *USER_ERRORS, Exception):
        app.add_exception_handler(kind, handle)
