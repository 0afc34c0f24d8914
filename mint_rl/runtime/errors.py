"""Errors the actor runtime raises to callers.

Each one is also the stdlib error it stands for (a `RuntimeError`), so code that does not know
the runtime still catches it. A call has no timeout error of its own: `anyio.fail_after` around
the call raises the stdlib `TimeoutError`. All of them pickle, because a Ray backend ships
them between processes.
"""

from __future__ import annotations

from mint_rl.errors import MintError


class ActorError(MintError):
    """Base of every error raised by the actor runtime."""


class ActorStoppedError(ActorError, RuntimeError):
    """The actor was stopped (or gave up after crashing) before it could handle the message."""

    def __init__(self, actor: str, detail: str = "") -> None:
        self.actor = actor
        self.detail = detail
        super().__init__(f"actor {actor!r} is stopped" + (f": {detail}" if detail else ""))

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.actor, self.detail))


class ActorCrashedError(ActorError, RuntimeError):
    """The actor crashed while it held this message; `cause` is what it raised.

    `endpoint` names where the crash happened, which may be another message's endpoint when
    several ran concurrently, or "setup" when a restart failed to load.
    """

    def __init__(self, actor: str, endpoint: str, cause: BaseException) -> None:
        self.actor = actor
        self.endpoint = endpoint
        self.cause = cause
        super().__init__(f"actor {actor!r} crashed in {endpoint}: {cause!r}")
        self.__cause__ = cause

    def __reduce__(self) -> tuple[type, tuple[str, str, BaseException]]:
        return (type(self), (self.actor, self.endpoint, self.cause))


class ActorSetupError(ActorError, RuntimeError):
    """`setup()` raised (or timed out) on the first start, so `spawn` has no handle to return."""

    def __init__(self, actor: str, cause: BaseException) -> None:
        self.actor = actor
        self.cause = cause
        super().__init__(f"actor {actor!r} failed in setup(): {cause!r}")
        self.__cause__ = cause

    def __reduce__(self) -> tuple[type, tuple[str, BaseException]]:
        return (type(self), (self.actor, self.cause))
