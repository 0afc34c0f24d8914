"""The life of one actor: its mailbox, its incarnations, and what a crash does to its messages.

The cell is the part of an actor that survives a restart: name, mailbox, handle and restart
history. Each incarnation is a fresh instance of the actor class running in its own task group:

    construct -> setup() -> ready -> serve the mailbox -> (mailbox closed) teardown(), shielded

Ordered endpoints run inline in the serving task, so messages are handled one at a time in
mailbox order without a task per message. Concurrent endpoints get a task each in the
incarnation's task group, bounded by a semaphore so the mailbox keeps its back-pressure.

An endpoint that crashes records the crash and cancels the incarnation; the cell then fails the
callers of the messages that were in flight, reports to the supervisor, and either starts a new
incarnation after a backoff or gives up.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from anyio import TASK_STATUS_IGNORED, CancelScope, CapacityLimiter
from anyio.abc import TaskGroup, TaskStatus

from mint_rl.runtime.actor import Actor, ActorContext, actor_class, endpoints_of
from mint_rl.runtime.channel import ChannelReceiver, ChannelSender, ChannelStats, channel
from mint_rl.runtime.errors import ActorCrashedError, ActorSetupError, ActorStoppedError
from mint_rl.runtime.handle import ActorHandle, Message
from mint_rl.runtime.supervisor import Action, FailureReport, RestartPolicy, Supervisor

log = logging.getLogger("mint_rl.runtime")

State = Literal["starting", "running", "restarting", "stopping", "stopped"]
Bound = dict[str, Callable[..., Any]]


@dataclass(frozen=True)
class ActorStats:
    """A snapshot of one actor, for metrics and the live status line."""

    name: str
    state: State
    mailbox: ChannelStats
    handled: int
    """Messages handled to completion, over all incarnations."""
    in_flight: int
    restarts: int
    failures: int


@dataclass(frozen=True)
class CellConfig:
    """Everything `spawn` decided about one actor."""

    name: str
    restart: RestartPolicy
    mailbox_size: int
    device: str
    setup_timeout: float | None
    teardown_timeout: float


class _Crash:
    __slots__ = ("endpoint", "error", "traceback")

    def __init__(self, endpoint: str, error: BaseException) -> None:
        self.endpoint = endpoint
        self.error = error
        self.traceback = "".join(traceback.format_exception(error))


class ActorCell:
    """Runs one actor for its whole life; `run` is the task the system starts."""

    def __init__(
        self,
        actor_cls: Callable[..., Actor],
        args: tuple[Any, ...],
        config: CellConfig,
        supervisor: Supervisor,
        limiter: CapacityLimiter,
    ) -> None:
        self.name = config.name
        cls = actor_class(actor_cls)
        self.specs = endpoints_of(cls)
        self.mailbox: ChannelSender[Message]
        self._inbox: ChannelReceiver[Message]
        self.mailbox, self._inbox = channel(config.mailbox_size, f"{self.name}.mailbox")
        self.handle = ActorHandle(self.name, cls.__name__, self.specs, self.mailbox)
        self.state: State = "starting"
        self.handled = 0
        self._cls = actor_cls
        self._args = args
        self._config = config
        self._supervisor = supervisor
        self._limiter = limiter
        self._in_flight: set[Message] = set()
        self._restart_times: list[float] = []
        self._failures = 0
        self._crash: _Crash | None = None
        self._tg: TaskGroup | None = None
        self._scope: CancelScope | None = None
        self._stopping = False
        self._stopped = anyio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[ActorHandle] = TASK_STATUS_IGNORED) -> None:
        """Run incarnations until stopped or given up; `task_status.started` once ready."""
        try:
            with CancelScope() as self._scope:
                await self._live(task_status)
        finally:
            self.state = "stopped"
            self._reject_leftovers()
            self._stopped.set()

    async def stop(self, grace: float | None) -> None:
        """Close the mailbox, let the actor drain it, cancel it after `grace` seconds."""
        self._stopping = True
        self.mailbox.close()
        with anyio.move_on_after(grace):
            await self._stopped.wait()
        if not self._stopped.is_set():
            if self._scope is not None:
                self._scope.cancel()
            await self._stopped.wait()

    async def _live(self, task_status: TaskStatus[ActorHandle]) -> None:
        first: TaskStatus[ActorHandle] | None = task_status
        while True:
            crash = await self._incarnation(first)
            first = None
            if crash is None:
                return
            now = time.monotonic()
            action, backoff = self._config.restart.decide(self._restart_times, now)
            if self._stopping:
                action = "stop"
            await self._supervisor.report(self._settle(crash, action, backoff))
            if action == "escalate":
                raise ActorCrashedError(self.name, crash.endpoint, crash.error)
            if action == "stop":
                return
            self._restart_times.append(now)
            self.state = "restarting"
            await anyio.sleep(backoff)

    async def _incarnation(self, task_status: TaskStatus[ActorHandle] | None) -> _Crash | None:
        """One fresh instance, from construction to teardown. Returns its crash, if any."""
        self._crash = None
        try:
            instance = self._cls(*self._args)
        except Exception as exc:
            if task_status is not None:
                raise ActorSetupError(self.name, exc) from exc
            return _Crash("__init__", exc)
        instance._ctx = ActorContext(self.name, self._config.device, self._limiter,
                                     len(self._restart_times))
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if await self._setup(instance):
                    if task_status is not None:
                        task_status.started(self.handle)
                        task_status = None
                    self.state = "running"
                    # Serving in a task of its own keeps its await chain short: every message
                    # resumes each frame of that chain twice, which is most of the hop cost.
                    tg.start_soon(self._serve, instance, tg, name=f"actor:{self.name}")
        finally:
            self._tg = None
            with CancelScope(shield=True):
                await self._teardown(instance)
        if self._crash is not None and task_status is not None:
            raise ActorSetupError(self.name, self._crash.error) from self._crash.error
        return self._crash

    async def _setup(self, instance: Actor) -> bool:
        try:
            with anyio.fail_after(self._config.setup_timeout):
                await instance.setup()
        except Exception as exc:
            self._fail("setup", exc)
            return False
        return True

    async def _teardown(self, instance: Actor) -> None:
        try:
            with anyio.move_on_after(self._config.teardown_timeout) as scope:
                await instance.teardown()
            if scope.cancelled_caught:
                log.warning("actor %s: teardown() timed out", self.name)
        except Exception:
            log.exception("actor %s: teardown() failed", self.name)

    # -- the mailbox loop (hot path) ---------------------------------------------------------

    async def _serve(self, instance: Actor, tg: TaskGroup) -> None:
        """Handle messages until the mailbox is closed and drained."""
        bound: Bound = {name: getattr(instance, name) for name in self.specs}
        slots = {
            n: anyio.Semaphore(s.max_concurrency) for n, s in self.specs.items() if s.concurrent
        }
        in_flight = self._in_flight
        async for msg in self._inbox:
            spec = msg.spec
            if spec.concurrent:
                # In flight while it waits for a slot, so that a crash meanwhile fails its caller.
                in_flight.add(msg)
                await slots[spec.name].acquire()
                tg.start_soon(self._handle_concurrent, msg, bound, slots[spec.name])
                continue
            # An ordered message, handled inline: this loop is the hot path.
            if msg.abandoned:
                continue  # the caller was cancelled before we got to it
            in_flight.add(msg)
            try:
                result = await bound[spec.name](*msg.args, **msg.kwargs)
            except Exception as exc:
                self._finish_with_error(msg, exc)
                continue
            in_flight.discard(msg)
            self.handled += 1
            msg.set_result(result)
        self.state = "stopping"

    async def _handle_concurrent(self, msg: Message, bound: Bound, slot: anyio.Semaphore) -> None:
        try:
            if msg.abandoned:  # the caller was cancelled before we got to it
                self._in_flight.discard(msg)
                return
            try:
                result = await bound[msg.spec.name](*msg.args, **msg.kwargs)
            except Exception as exc:
                self._finish_with_error(msg, exc)
                return
            self._in_flight.discard(msg)
            self.handled += 1
            msg.set_result(result)
        finally:
            slot.release()

    def _finish_with_error(self, msg: Message, exc: Exception) -> None:
        """A bad-request error (listed in `raises=`) goes to the caller; anything else crashes."""
        if not isinstance(exc, msg.spec.raises):
            self._fail(msg.spec.name, exc)  # the message stays in flight until the crash is settled
            return
        self._in_flight.discard(msg)
        msg.set_error(exc)

    # -- crashes -----------------------------------------------------------------------------

    def _fail(self, endpoint: str, exc: Exception) -> None:
        """Record the first crash of this incarnation and cancel it."""
        if self._crash is None:
            self._crash = _Crash(endpoint, exc)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _settle(self, crash: _Crash, action: Action, backoff: float) -> FailureReport:
        """Fail the caller of every message in flight at the crash, and describe the crash."""
        self._failures += 1
        for msg in self._in_flight:
            msg.set_error(ActorCrashedError(self.name, crash.endpoint, crash.error))
        failed = len(self._in_flight)
        self._in_flight.clear()
        return FailureReport(
            actor=self.name,
            endpoint=crash.endpoint,
            error_type=type(crash.error).__name__,
            message=str(crash.error),
            traceback=crash.traceback,
            action=action,
            restarts=len(self._restart_times),
            backoff_s=backoff,
            failed_callers=failed,
        )

    def _reject_leftovers(self) -> None:
        """Fail every message this actor will never handle, so no caller waits forever."""
        self.mailbox.close()
        leftovers = list(self._in_flight)
        self._in_flight.clear()
        while True:
            try:
                leftovers.append(self._inbox.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self._inbox.close()
        for msg in leftovers:
            msg.set_error(ActorStoppedError(self.name, "stopped before handling it"))

    def statistics(self) -> ActorStats:
        return ActorStats(
            name=self.name,
            state=self.state,
            mailbox=self.mailbox.statistics(),
            handled=self.handled,
            in_flight=len(self._in_flight),
            restarts=len(self._restart_times),
            failures=self._failures,
        )
