"""Results of asynchronous requests, held until the client retrieves them.

Every training and sampling request answers at once with a request_id; its work settles a
concurrent Future here, and `retrieve_future` long-polls it. A result is dropped a while after it
was first handed out (a client whose answer got lost on the way polls again within that time).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """A finished request's answer, encoded and ready to send."""

    media_type: str
    body: bytes

    @classmethod
    def json(cls, payload: dict[str, Any]) -> Reply:
        return cls(JSON, json.dumps(payload).encode())

    @classmethod
    def protobuf(cls, body: bytes) -> Reply:
        return cls(PROTOBUF, body)


ReplyFuture = concurrent.futures.Future[Reply]


class FutureStore:
    def __init__(self, keep_after_retrieval_s: float = 120.0) -> None:
        self._lock = threading.Lock()
        self._futures: dict[str, ReplyFuture] = {}
        self._retrieved_at: dict[str, float] = {}
        self._keep_s = keep_after_retrieval_s

    def create(self) -> tuple[str, ReplyFuture]:
        request_id = uuid.uuid4().hex
        future: ReplyFuture = concurrent.futures.Future()
        with self._lock:
            self._drop_expired()
            self._futures[request_id] = future
        return request_id, future

    def get(self, request_id: str) -> ReplyFuture | None:
        with self._lock:
            return self._futures.get(request_id)

    def retrieved(self, request_id: str) -> None:
        """Starts the countdown after which the result is forgotten."""
        with self._lock:
            self._retrieved_at.setdefault(request_id, time.monotonic())

    def pending(self) -> int:
        with self._lock:
            return sum(not f.done() for f in self._futures.values())

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for request_id, at in list(self._retrieved_at.items()):
            if now - at > self._keep_s:
                del self._retrieved_at[request_id]
                self._futures.pop(request_id, None)


async def wait(future: ReplyFuture, timeout: float) -> bool:
    """True once the future is done; False if `timeout` seconds pass first (it keeps running)."""
    if future.done():
        return True
    # An event rather than asyncio.wrap_future: a poll that times out must neither cancel the
    # work nor leave behind an asyncio future whose exception nobody reads.
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()

    def wake(_: ReplyFuture) -> None:
        try:
            loop.call_soon_threadsafe(finished.set)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    future.add_done_callback(wake)
    try:
        await asyncio.wait_for(finished.wait(), timeout)
    except TimeoutError:
        return False
    return True


def settle(target: ReplyFuture, produce: Callable[[], Reply]) -> None:
    """Runs `produce` and settles `target` with its reply or with the exception it raised;
    a request cancelled before it started (cancel_future) runs nothing."""
    if not (target.running() or target.set_running_or_notify_cancel()):
        return
    try:
        reply = produce()
    except BaseException as e:  # noqa: BLE001 — every failure is the request's answer
        target.set_exception(e)
    else:
        target.set_result(reply)


def settle_from(target: ReplyFuture, source: concurrent.futures.Future[Any],
                encode: Callable[[Any], Reply]) -> None:
    """When `source` finishes, settles `target` with encode(its result) or its exception."""
    def done(finished: concurrent.futures.Future[Any]) -> None:
        settle(target, lambda: encode(finished.result()))

    source.add_done_callback(done)
