"""Checks every request passes before any handler sees it: the API key and the body size.

Plain ASGI middleware, so a refused request is answered without its body being read. The
OpenAI-compatible routes (/v1/...) also take the key as `Authorization: Bearer <key>`, which is
how OpenAI clients send it, and get their refusals in OpenAI's error shape.
"""

from __future__ import annotations

import hmac
import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mint_rl.server.errors import openai_error_body

OPEN_PATHS = ("/api/v1/healthz",)  # liveness probes need no key
# Download links of external weights carry their own signature (downloads.py): no key.
SIGNED_PREFIX = "/downloads/"
OPENAI_PATHS = "/v1/"  # mint_rl/server/openai.py


def _given_key(headers: dict[bytes, bytes], openai: bool) -> bytes:
    if b"x-api-key" in headers or not openai:
        return headers.get(b"x-api-key", b"")
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


async def _answer(send: Send, status: int, detail: str, openai: bool) -> None:
    code = "invalid_api_key" if status == 401 else None
    payload = openai_error_body(detail, code=code) if openai else {"detail": detail}
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """401 without the right key (when one is set); 413 for a body over the limit."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        openai = scope["path"].startswith(OPENAI_PATHS)
        open_path = scope["path"] in OPEN_PATHS or scope["path"].startswith(SIGNED_PREFIX)
        if self.api_key is not None and not open_path:
            given = _given_key(headers, openai)
            if not hmac.compare_digest(given, self.api_key):  # constant time
                what = "X-API-Key or Authorization: Bearer" if openai else "X-API-Key"
                await _answer(send, 401, f"missing or wrong {what}", openai)
                return
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit()
                                     or int(declared) > self.max_body_bytes):
            await _answer(send, 413, f"request body over {self.max_body_bytes} bytes", openai)
            return
        await self._bounded(scope, receive, send)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Counts a body sent without Content-Length (chunked) as it arrives; the handler
        reading it gets an HTTPException, which FastAPI answers with 413."""
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, f"request body over {self.max_body_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)
