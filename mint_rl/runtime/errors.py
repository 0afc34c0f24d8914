"""Errors the actor runtime raises to callers.

Each one is also the stdlib error it stands for (a call timeout is a `TimeoutError`), so code
that does not know the runtime still catches it. All of them pickle, because a Ray backend ships
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


class ActorCallTimeout(ActorError, TimeoutError):
    """No reply came within the caller's timeout. The message may still be handled later."""

    def __init__(self, actor: str, endpoint: str, timeout: float) -> None:
        self.actor = actor
        self.endpoint = endpoint
        self.timeout = timeout
        super().__init__(f"{actor}.{endpoint} gave no reply within {timeout} s")

    def __reduce__(self) -> tuple[type, tuple[str, str, float]]:
        return (type(self), (self.actor, self.endpoint, self.timeout))


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


class MessageNotPicklableError(ActorError, TypeError):
    """A message or reply would not survive a process boundary (checked with `check_pickle`)."""

    def __init__(self, where: str, cause: BaseException) -> None:
        self.where = where
        self.cause = cause
        super().__init__(f"{where} is not picklable: {cause!r}")

    def __reduce__(self) -> tuple[type, tuple[str, BaseException]]:
        return (type(self), (self.where, self.cause))
