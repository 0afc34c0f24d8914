"""The actor system: one task group that owns every actor, so none outlives the `async with`.

    async with open_system(restart=RestartPolicy(max_restarts=3)) as system:
        learner = await system.spawn(Learner, config, device="cuda:0")
        sampler = await system.spawn(Sampler, config, learner)
        ...
    # here every actor has drained its mailbox, run teardown() and exited

Leaving the block normally stops the actors gracefully, last spawned first (later actors usually
hold handles to earlier ones). Leaving it with an exception, or an actor escalating a crash,
cancels the whole tree instead; teardown() still runs, shielded.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from anyio import TASK_STATUS_IGNORED, create_task_group
from anyio.abc import TaskGroup, TaskStatus

from mint_rl.runtime.actor import Actor
from mint_rl.runtime.cell import ActorCell, ActorStats, CellConfig
from mint_rl.runtime.handle import ActorHandle
from mint_rl.runtime.supervisor import FailureCallback, FailureReport, RestartPolicy, Supervisor
from mint_rl.runtime.threads import DeviceLimiters, LimiterStats

A = TypeVar("A", bound=Actor)


@dataclass
class _Shared:
    """What every spawner of one system shares: supervisor, limiters, names, defaults."""

    supervisor: Supervisor
    limiters: DeviceLimiters
    restart: RestartPolicy
    teardown_timeout: float
    check_pickle: bool
    cells: dict[str, ActorCell] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)


class Spawner:
    """Starts actors in one task group: the system's, or a parent actor's for its children."""

    def __init__(self, tg: TaskGroup, shared: _Shared, prefix: str = "") -> None:
        self._tg = tg
        self._shared = shared
        self._prefix = prefix
        self._cells: list[ActorCell] = []

    async def spawn(
        self,
        actor_cls: Callable[..., A],
        *args: Any,
        name: str | None = None,
        restart: RestartPolicy | None = None,
        mailbox_size: int = 64,
        device: str = "cpu",
        setup_timeout: float | None = None,
    ) -> ActorHandle[A]:
        """Start an actor and return its handle once its `setup()` has finished.

        Args:
            actor_cls: the actor class (or a picklable factory such as `functools.partial`).
            args: positional arguments for it; use `functools.partial` for keyword ones.
            name: unique within the system; defaults to the class name and a number.
            restart: what to do when it crashes; defaults to the system's policy.
            mailbox_size: messages that may wait before senders block.
            device: selects the thread limiter used by `ctx.run_blocking`.
            setup_timeout: seconds `setup()` may take.

        Raises:
            ActorSetupError: the constructor or `setup()` raised or timed out.
            ValueError: the name is taken.
        """
        shared = self._shared
        if name is None:
            name = f"{getattr(actor_cls, '__name__', 'actor')}-{next(shared.counter)}"
        name = self._prefix + name
        if name in shared.cells:
            raise ValueError(f"an actor named {name!r} is already running")
        config = CellConfig(
            name=name,
            restart=restart or shared.restart,
            mailbox_size=mailbox_size,
            device=device,
            setup_timeout=setup_timeout,
            teardown_timeout=shared.teardown_timeout,
            check_pickle=shared.check_pickle,
        )
        cell = ActorCell(
            actor_cls,
            args,
            config,
            shared.supervisor,
            shared.limiters.get(device),
            lambda tg, prefix: Spawner(tg, shared, prefix),
        )
        shared.cells[name] = cell
        return await self._tg.start(self._run_cell, cell, name=f"actor:{name}")

    async def _run_cell(
        self, cell: ActorCell, *, task_status: TaskStatus[ActorHandle[Any]] = TASK_STATUS_IGNORED
    ) -> None:
        self._cells.append(cell)
        try:
            await cell.run(task_status=task_status)
        finally:
            self._cells.remove(cell)
            del self._shared.cells[cell.name]

    async def stop_all(self, grace: float | None) -> None:
        """Stop this spawner's actors gracefully, last spawned first."""
        for cell in reversed(list(self._cells)):
            await cell.stop(grace)


@dataclass(frozen=True)
class SystemStats:
    """Snapshot of a whole system: every live actor, every device limiter, crash count."""

    actors: tuple[ActorStats, ...]
    limiters: tuple[LimiterStats, ...]
    failures: int


class ActorSystem:
    """Spawns actors into the system's task group and reports on them. Made by `open_system`."""

    def __init__(self, tg: TaskGroup, shared: _Shared) -> None:
        self._tg = tg
        self._shared = shared
        self._spawner = Spawner(tg, shared)
        self.spawn = self._spawner.spawn

    @property
    def failures(self) -> tuple[FailureReport, ...]:
        """Every crash so far, oldest first."""
        return tuple(self._shared.supervisor.reports)

    def actors(self) -> tuple[ActorHandle[Any], ...]:
        """Handles of every live actor, children included."""
        return tuple(cell.handle for cell in self._shared.cells.values())

    def statistics(self) -> SystemStats:
        return SystemStats(
            actors=tuple(cell.statistics() for cell in self._shared.cells.values()),
            limiters=self._shared.limiters.statistics(),
            failures=len(self._shared.supervisor.reports),
        )

    async def shutdown(self, grace: float | None = 5.0) -> None:
        """Stop every top-level actor gracefully (each stops its children), last spawned first."""
        await self._spawner.stop_all(grace)

    def cancel(self) -> None:
        """Cancel the whole actor tree now; teardown() hooks still run, shielded."""
        self._tg.cancel_scope.cancel()


@asynccontextmanager
async def open_system(
    *,
    restart: RestartPolicy | None = None,
    on_failure: FailureCallback | None = None,
    device_capacity: Mapping[str, int] | None = None,
    stop_grace: float | None = 5.0,
    teardown_timeout: float = 5.0,
    check_pickle: bool = False,
) -> AsyncIterator[ActorSystem]:
    """Open an actor system; every actor spawned in it is stopped when the block exits.

    Args:
        restart: default restart policy; `RestartPolicy.never()` (fail fast) if None.
        on_failure: called with each `FailureReport` (may be async).
        device_capacity: threads per device for `run_blocking`, e.g. {"cpu": 2}; default 1.
        stop_grace: per actor, how long a graceful stop may take before it is cancelled.
        teardown_timeout: how long each `teardown()` may take.
        check_pickle: pickle every message and reply, to catch what would break on Ray.
    """
    async with create_task_group() as tg:
        shared = _Shared(
            supervisor=Supervisor(on_failure),
            limiters=DeviceLimiters(device_capacity),
            restart=restart or RestartPolicy.never(),
            teardown_timeout=teardown_timeout,
            check_pickle=check_pickle,
        )
        system = ActorSystem(tg, shared)
        yield system
        await system.shutdown(stop_grace)
