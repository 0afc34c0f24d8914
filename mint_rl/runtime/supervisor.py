"""Supervision: what happens when an actor crashes, and who hears about it.

A crash is an endpoint raising an exception not listed in its `raises=`, or the constructor or
`setup()` failing on a restart. The actor's `RestartPolicy` then says: start a fresh instance
after a backoff, or give up, which either stops that actor ("stop") or raises out of the
enclosing task group so that the whole system stops ("escalate", the default, as in trio: errors
propagate).

Every crash produces a `FailureReport` (what failed, why, and what was done about the messages
in flight), delivered to the system's `on_failure` callback and kept in `system.failures`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("mint_rl.runtime")

Action = Literal["restart", "stop", "escalate"]


@dataclass(frozen=True)
class RestartPolicy:
    """Restart up to `max_restarts` times within `window_s`, waiting longer each time.

    `RestartPolicy.never()` is the fail-fast default of `open_system`.
    """

    max_restarts: int = 3
    """Restarts allowed within the window; one more crash gives up."""
    window_s: float = 60.0
    """Only restarts this recent count, so a long-lived actor is not doomed by old crashes."""
    backoff_s: float = 0.1
    """Wait before the first restart; multiplied by `backoff_factor` for each further one."""
    backoff_factor: float = 2.0
    max_backoff_s: float = 5.0
    on_give_up: Literal["escalate", "stop"] = "escalate"
    """"escalate": raise `ActorCrashedError` and stop the system; "stop": stop only this actor."""

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.window_s <= 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"window and backoffs must be positive: {self}")
        if self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be >= 1, got {self.backoff_factor}")
        if self.on_give_up not in ("escalate", "stop"):
            raise ValueError(f"on_give_up must be 'escalate' or 'stop', got {self.on_give_up!r}")

    @classmethod
    def never(cls, on_give_up: Literal["escalate", "stop"] = "escalate") -> RestartPolicy:
        """No restarts: the first crash gives up."""
        return cls(max_restarts=0, on_give_up=on_give_up)

    def decide(self, restart_times: list[float], now: float) -> tuple[Action, float]:
        """Return (action, backoff seconds) for a crash at `now`, given earlier restart times."""
        recent = sum(1 for t in restart_times if now - t < self.window_s)
        if recent >= self.max_restarts:
            return self.on_give_up, 0.0
        return "restart", min(self.max_backoff_s, self.backoff_s * self.backoff_factor**recent)


@dataclass(frozen=True)
class FailureReport:
    """One crash, as the supervisor saw it. Plain strings so it pickles and logs anywhere."""

    actor: str
    endpoint: str
    """The endpoint that raised, or "__init__" / "setup" when a restart failed to load."""
    error_type: str
    message: str
    traceback: str
    action: Action
    restarts: int
    """Restarts within the policy window before this crash."""
    backoff_s: float
    failed_callers: int
    """Callers whose messages were in flight: each got `ActorCrashedError`."""


FailureCallback = Callable[[FailureReport], Awaitable[None] | None]


class Supervisor:
    """Receives every failure report of one actor system."""

    def __init__(self, on_failure: FailureCallback | None = None) -> None:
        self.reports: list[FailureReport] = []
        self._on_failure = on_failure

    async def report(self, report: FailureReport) -> None:
        """Record, log and forward one report. An error in the callback propagates."""
        self.reports.append(report)
        log.warning(
            "actor %s crashed in %s: %s: %s -> %s",
            report.actor,
            report.endpoint,
            report.error_type,
            report.message,
            report.action,
        )
        if self._on_failure is not None:
            result = self._on_failure(report)
            if inspect.isawaitable(result):
                await result
