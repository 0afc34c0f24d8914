"""The life of one actor: its mailbox, its incarnations, and what a crash does to its messages.

The cell is the part of an actor that survives a restart: name, mailbox and restart history.
Each incarnation is a fresh instance of the actor class running in its own task group:

    construct -> setup() -> ready -> serve the mailbox -> (mailbox closed) stop children
                                                       -> teardown(), shielded

Ordered endpoints run inline in the serving task, so messages are handled one at a time in
mailbox order without a task per message. Concurrent endpoints get a task each in the
incarnation's task group, bounded by a semaphore so the mailbox keeps its back-pressure.

An endpoint that crashes records the crash and cancels the incarnation; the cell then settles the
messages that were in flight (redeliver, or fail their callers), reports to the supervisor, and
either starts a new incarnation after a backoff or gives up.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from anyio import TASK_STATUS_IGNORED, CancelScope, CapacityLimiter
from anyio.abc import TaskGroup, TaskStatus

from mint_rl.runtime.actor import Actor, ActorContext, endpoints_of
from mint_rl.runtime.channel import ChannelReceiver, ChannelSender, ChannelStats, channel
from mint_rl.runtime.errors import ActorCrashedError, ActorSetupError, ActorStoppedError
from mint_rl.runtime.handle import (
    ActorHandle,
    CallReply,
    Envelope,
    StreamReply,
    check_picklable,
)
from mint_rl.runtime.supervisor import Action, FailureReport, RestartPolicy, Supervisor

log = logging.getLogger("mint_rl.runtime")

State = Literal["starting", "running", "restarting", "stopping", "stopped"]


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
    check_pickle: bool


class _Crash:
    __slots__ = ("endpoint", "error", "traceback")

    def __init__(self, endpoint: str, error: BaseException) -> None:
        self.endpoint = endpoint
        self.error = error
        self.traceback = "".join(traceback.format_exception(error))


class ActorCell:
    """Runs one actor for its whole life; `run` is the task the spawner starts."""

    def __init__(
        self,
        actor_cls: Callable[..., Actor],
        args: tuple[Any, ...],
        config: CellConfig,
        supervisor: Supervisor,
        limiter: CapacityLimiter,
        new_spawner: Callable[[TaskGroup, str], Any],
    ) -> None:
        self.name = config.name
        self.specs = endpoints_of(_actor_class(actor_cls))
        self.check_pickle = config.check_pickle
        self.mailbox: ChannelSender[Envelope]
        self._inbox: ChannelReceiver[Envelope]
        self.mailbox, self._inbox = channel(config.mailbox_size, f"{self.name}.mailbox")
        self.handle: ActorHandle[Any] = ActorHandle(self)
        self.state: State = "starting"
        self.handled = 0
        self._cls = actor_cls
        self._args = args
        self._config = config
        self._supervisor = supervisor
        self._limiter = limiter
        self._new_spawner = new_spawner
        self._in_flight: dict[Envelope, None] = {}  # a dict keeps arrival order for redelivery
        self._redeliver: deque[Envelope] = deque()
        self._restart_times: list[float] = []
        self._failures = 0
        self._crash: _Crash | None = None
        self._tg: TaskGroup | None = None
        self._scope: CancelScope | None = None
        self._stopping = False
        self._stopped = anyio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[ActorHandle[Any]] = TASK_STATUS_IGNORED) -> None:
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

    async def _live(self, task_status: TaskStatus[ActorHandle[Any]]) -> None:
        first: TaskStatus[ActorHandle[Any]] | None = task_status
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

    async def _incarnation(self, task_status: TaskStatus[ActorHandle[Any]] | None) -> _Crash | None:
        """One fresh instance, from construction to teardown. Returns its crash, if any."""
        self._crash = None
        try:
            instance = self._cls(*self._args)
        except Exception as exc:
            return self._early_crash("__init__", exc, task_status)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                children = self._new_spawner(tg, self.name + "/")
                instance._ctx = ActorContext(
                    self.name, self.handle, self._config.device, self._limiter, children
                )
                if await self._setup(instance):
                    if task_status is not None:
                        task_status.started(self.handle)
                        task_status = None
                    self.state = "running"
                    # Serving in a task of its own keeps its await chain short: every message
                    # resumes each frame of that chain twice, which is most of the hop cost.
                    tg.start_soon(self._serve, instance, tg, children, name=f"actor:{self.name}")
        except Exception as exc:  # a child actor escalated into this actor's task group
            if self._crash is None:
                self._crash = _Crash("children", _unwrap(exc))
        finally:
            self._tg = None
            with CancelScope(shield=True):
                await self._teardown(instance)
        if self._crash is not None and task_status is not None:
            raise ActorSetupError(self.name, self._crash.error) from self._crash.error
        return self._crash

    def _early_crash(
        self, where: str, exc: Exception, task_status: TaskStatus[Any] | None
    ) -> _Crash:
        if task_status is not None:
            raise ActorSetupError(self.name, exc) from exc
        return _Crash(where, exc)

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

    async def _serve(self, instance: Actor, tg: TaskGroup, children: Any) -> None:
        """Handle messages until the mailbox is closed and drained, then stop the children."""
        bound = {name: getattr(instance, name) for name in self.specs}
        slots = {
            n: anyio.Semaphore(s.max_concurrency) for n, s in self.specs.items() if s.concurrent
        }
        while self._redeliver:
            await self._dispatch(self._redeliver.popleft(), bound, slots, tg)
        in_flight = self._in_flight
        async for env in self._inbox:
            spec = env.spec
            if spec.concurrent or spec.streaming:
                await self._dispatch(env, bound, slots, tg)
                continue
            # An ordered call or cast: `_handle` inlined, as this loop is the hot path.
            if env.reply is not None and env.reply.abandoned:
                continue
            in_flight[env] = None
            try:
                result = await bound[spec.name](*env.args, **env.kwargs)
            except Exception as exc:
                self._finish_with_error(env, exc)
                continue
            del in_flight[env]
            self.handled += 1
            if env.reply is not None:
                self._reply(env, result)
        self.state = "stopping"
        await children.stop_all(self._config.teardown_timeout)

    async def _dispatch(
        self,
        env: Envelope,
        bound: dict[str, Any],
        slots: dict[str, anyio.Semaphore],
        tg: TaskGroup,
    ) -> None:
        """Deliver one message: inline if ordered, in a new task if concurrent."""
        spec = env.spec
        fn = bound[spec.name]
        handle = self._handle_stream if spec.streaming else self._handle
        if not spec.concurrent:
            await handle(env, fn)
            return
        await slots[spec.name].acquire()
        tg.start_soon(self._handle_concurrent, handle, env, fn, slots[spec.name])

    async def _handle_concurrent(
        self, handle: Any, env: Envelope, fn: Any, slot: anyio.Semaphore
    ) -> None:
        try:
            await handle(env, fn)
        finally:
            slot.release()

    async def _handle(self, env: Envelope, fn: Any) -> None:
        if env.reply is not None and env.reply.abandoned:
            return  # the caller timed out or was cancelled before we got to it
        self._in_flight[env] = None
        try:
            result = await fn(*env.args, **env.kwargs)
        except Exception as exc:
            self._finish_with_error(env, exc)
            return
        del self._in_flight[env]
        self.handled += 1
        if env.reply is not None:
            self._reply(env, result)

    def _reply(self, env: Envelope, result: Any) -> None:
        assert isinstance(env.reply, CallReply)
        if self.check_pickle:
            try:
                check_picklable(f"reply of {self.name}.{env.spec.name}", result)
            except Exception as exc:
                env.reply.set_error(exc)
                return
        env.reply.set_result(result)

    def _finish_with_error(self, env: Envelope, exc: Exception) -> None:
        """A bad-request error (listed in `raises=`) goes to the caller; anything else crashes."""
        if not isinstance(exc, env.spec.raises):
            self._fail(env.spec.name, exc)  # the message stays in flight until the crash is settled
            return
        del self._in_flight[env]
        if env.reply is None:
            log.warning("actor %s: cast to %s failed: %r", self.name, env.spec.name, exc)
        else:
            env.reply.set_error(exc)

    async def _handle_stream(self, env: Envelope, fn: Any) -> None:
        reply = env.reply
        assert isinstance(reply, StreamReply)
        if reply.abandoned:
            return
        self._in_flight[env] = None
        try:
            with reply.send:
                agen = fn(*env.args, **env.kwargs)
                try:
                    async for item in agen:
                        await reply.send.send(item)
                finally:
                    await agen.aclose()
        except anyio.BrokenResourceError:
            pass  # the caller left the loop early; nothing to report
        except env.spec.raises as exc:
            reply.set_error(exc)
        except Exception as exc:
            self._fail(env.spec.name, exc)
            return
        del self._in_flight[env]
        self.handled += 1

    # -- crashes -----------------------------------------------------------------------------

    def _fail(self, endpoint: str, exc: Exception) -> None:
        """Record the first crash of this incarnation and cancel it."""
        if self._crash is None:
            self._crash = _Crash(endpoint, exc)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _settle(self, crash: _Crash, action: Action, backoff: float) -> FailureReport:
        """Decide the fate of every message in flight at the crash, and describe it."""
        self._failures += 1
        failed, redelivered, lost = 0, 0, []
        for env in self._in_flight:
            if action == "restart" and env.spec.idempotent:
                self._redeliver.append(env)
                redelivered += 1
            elif env.reply is None:
                lost.append(env.spec.name)
            else:
                env.reply.set_error(ActorCrashedError(self.name, crash.endpoint, crash.error))
                failed += 1
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
            redelivered=redelivered,
            lost_casts=tuple(lost),
        )

    def _reject_leftovers(self) -> None:
        """Fail every message this actor will never handle, so no caller waits forever."""
        self.mailbox.close()
        leftovers = [*self._in_flight, *self._redeliver]
        self._in_flight.clear()
        self._redeliver.clear()
        while True:
            try:
                leftovers.append(self._inbox.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self._inbox.close()
        casts = [env.spec.name for env in leftovers if env.reply is None]
        if casts:
            log.warning("actor %s stopped; casts never handled: %s", self.name, casts)
        for env in leftovers:
            if env.reply is not None:
                env.reply.set_error(ActorStoppedError(self.name, "stopped before handling it"))

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


def _unwrap(exc: Exception) -> Exception:
    """A task group wraps even one error in a group; report the single error itself."""
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _actor_class(factory: Any) -> type:
    """The class a factory builds: the class itself, or the one inside a functools.partial."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory if isinstance(factory, type) else type(factory)
