"""Actors on their own: method calls, ordering, readiness, cancel-scope timeouts, stop, threads."""

from __future__ import annotations

import pickle
import threading
import time

import anyio
import anyio.lowlevel
import pytest

from mint_rl.runtime import (
    Actor,
    ActorCrashedError,
    ActorHandle,
    ActorSetupError,
    ActorStats,
    ActorStoppedError,
    ActorSystem,
    actor_name,
    endpoint,
    open_system,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def stats_of(system: ActorSystem, actor: object) -> ActorStats | None:
    """The live actor's statistics, or None once it is gone from the system."""
    name = actor_name(actor)
    return next((s for s in system.statistics().actors if s.name == name), None)


SLEPT: list[float] = []  # delays of the `sleep` calls that ran to the end


class Recorder(Actor):
    """Appends what it is sent; tracks how many messages overlap."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.active = 0
        self.max_active = 0
        self.loaded = False
        self.torn_down = 0

    async def setup(self) -> None:
        await anyio.sleep(0.02)  # "loading a model"
        self.loaded = True

    async def teardown(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.torn_down += 1
        TEARDOWNS.append(self.seen[:])

    @endpoint
    async def record(self, x: int) -> int:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await anyio.lowlevel.checkpoint()  # give other messages every chance to overlap
        self.seen.append(x)
        self.active -= 1
        return x

    @endpoint(concurrent=True, max_concurrency=3)
    async def slow(self, delay: float) -> int:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await anyio.sleep(delay)
        self.active -= 1
        return self.max_active

    @endpoint
    async def sleep(self, delay: float) -> None:
        await anyio.sleep(delay)
        SLEPT.append(delay)

    @endpoint
    async def state(self) -> dict[str, object]:
        return {"seen": self.seen[:], "max_active": self.max_active, "loaded": self.loaded}

    @endpoint(raises=(ValueError,))
    async def checked(self, x: int) -> int:
        if x < 0:
            raise ValueError(f"x must be >= 0, got {x}")
        self.seen.append(x)
        return x

    async def helper(self) -> None:
        """A plain method: not an endpoint, so not reachable through a handle."""


TEARDOWNS: list[list[int]] = []


async def test_an_endpoint_is_called_like_a_method_and_runs_in_the_actor() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder, name="rec")
        assert isinstance(rec, ActorHandle)  # typed as Recorder, really a handle
        assert await rec.record(1) == 1
        assert await rec.record(x=2) == 2
        assert (await rec.state())["seen"] == [1, 2]
        assert rec.record is rec.record  # bound once per handle
        assert actor_name(rec) == "rec"


async def test_messages_to_ordered_endpoints_run_one_at_a_time_in_order() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder, mailbox_size=8)
        async with anyio.create_task_group() as tg:
            for i in range(101):  # callers post in start order; 8 fit, the rest wait in line
                tg.start_soon(rec.record, i)
        state = await rec.state()
        assert state["seen"] == list(range(101))
        assert state["max_active"] == 1


async def test_concurrent_endpoint_overlaps_up_to_its_bound() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        results: list[int] = []

        async def one() -> None:
            results.append(await rec.slow(0.05))

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one)
        assert max(results) == 3  # overlapped, but never more than max_concurrency


async def test_spawn_returns_only_once_setup_has_finished() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        stats = stats_of(system, rec)
        assert stats is not None and stats.state == "running"
        assert (await rec.state())["loaded"] is True


class BrokenSetup(Actor):
    async def setup(self) -> None:
        raise OSError("weights not found")


async def test_setup_failure_raises_from_spawn_and_leaves_the_system_usable() -> None:
    async with open_system() as system:
        with pytest.raises(ActorSetupError) as info:
            await system.spawn(BrokenSetup, name="broken")
        assert isinstance(info.value.cause, OSError)
        assert system.actors() == ()
        rec = await system.spawn(Recorder)
        assert await rec.record(7) == 7


async def test_a_cancel_scope_times_out_a_call_and_the_unstarted_message_is_skipped() -> None:
    SLEPT.clear()
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        async with anyio.create_task_group() as tg:
            tg.start_soon(rec.sleep, 0.1)  # keeps the actor busy
            await anyio.sleep(0.01)  # every caller above has posted its message
            with pytest.raises(TimeoutError):
                with anyio.fail_after(0.02):
                    await rec.record(1)
        assert SLEPT == [0.1]
        assert (await rec.state())["seen"] == []  # queued, abandoned, never run
        stats = stats_of(system, rec)
        assert stats is not None and stats.handled == 2  # sleep and state only


async def test_bad_input_errors_reach_the_caller_without_a_crash() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        await rec.checked(1)
        with pytest.raises(ValueError, match="x must be >= 0"):
            await rec.checked(-1)
        assert await rec.checked(2) == 2
        assert (await rec.state())["seen"] == [1, 2]
        stats = stats_of(system, rec)
        assert stats is not None and stats.restarts == 0
        assert system.failures == ()


async def test_a_non_endpoint_attribute_through_a_handle_names_the_actor() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder, name="rec")
        for attribute in ("nope", "helper", "seen", "setup", "ctx"):
            with pytest.raises(AttributeError, match=r"'rec' \(Recorder\).*only @endpoint"):
                getattr(rec, attribute)
        assert not hasattr(rec, "_cell")
        assert await rec.record(3) == 3  # the handle still works


def test_endpoint_keeps_the_method_and_rejects_what_a_handle_cannot_call() -> None:
    async def ping(self: object) -> str:
        return "pong"

    assert endpoint(ping) is ping  # an actor calling its own method runs it directly
    assert endpoint(concurrent=True)(ping) is ping
    with pytest.raises(TypeError, match="async def"):
        endpoint(lambda self: None)

    async def numbers(self: object):  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(TypeError, match="async def"):
        endpoint(numbers)

    async def _private(self: object) -> None: ...

    with pytest.raises(TypeError, match="cannot start with '_'"):
        endpoint(_private)


async def test_graceful_stop_drains_the_mailbox_then_tears_down() -> None:
    TEARDOWNS.clear()
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        replies: list[int] = []

        async def record(i: int) -> None:
            replies.append(await rec.record(i))

        async with anyio.create_task_group() as tg:
            tg.start_soon(rec.sleep, 0.1)  # keeps the five below queued until stop
            for i in range(5):
                tg.start_soon(record, i)
            await anyio.sleep(0.01)  # every caller above has posted its message
            await system.stop(rec)
        assert TEARDOWNS == [[0, 1, 2, 3, 4]]
        assert replies == [0, 1, 2, 3, 4]
        assert stats_of(system, rec) is None
        assert system.actors() == ()
        with pytest.raises(ActorStoppedError):
            await rec.record(9)
        await system.stop(rec)  # stopping a stopped actor is a no-op


async def test_stop_after_grace_cancels_and_fails_pending_callers() -> None:
    TEARDOWNS.clear()
    SLEPT.clear()
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        errors: list[str] = []

        async def pending(endpoint: str, *args: object) -> None:
            try:
                await getattr(rec, endpoint)(*args)
            except ActorStoppedError:
                errors.append(endpoint)

        async with anyio.create_task_group() as tg:
            tg.start_soon(pending, "sleep", 10)
            await anyio.sleep(0.01)  # every caller above has posted its message
            tg.start_soon(pending, "record", 1)
            await anyio.sleep(0.01)  # every caller above has posted its message
            await system.stop(rec, grace=0.05)
        assert SLEPT == []  # the 10 s sleep was cancelled after the grace, not waited out
        assert sorted(errors) == ["record", "sleep"]  # in flight and queued: both told
        assert TEARDOWNS == [[]]  # teardown ran although the actor was cancelled


class Blocking(Actor):
    """Runs blocking work in threads through its device limiter."""

    def __init__(self, log: list[tuple[str, float, float]]) -> None:
        self.log = log

    def _work(self, tag: str, seconds: float) -> str:
        start = time.monotonic()
        time.sleep(seconds)
        self.log.append((tag, start, time.monotonic()))
        return threading.current_thread().name

    @endpoint(concurrent=True)
    async def work(self, tag: str, seconds: float) -> str:
        return await self.ctx.run_blocking(self._work, tag, seconds)


async def test_blocking_work_runs_in_threads_limited_per_device_and_never_stalls_the_loop() -> None:
    log: list[tuple[str, float, float]] = []
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.005)
            ticks += 1

    async with open_system() as system:
        gpu0 = await system.spawn(Blocking, log, device="cuda:0")
        gpu0b = await system.spawn(Blocking, log, device="cuda:0")
        gpu1 = await system.spawn(Blocking, log, device="cuda:1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            async with anyio.create_task_group() as calls:
                calls.start_soon(gpu0.work, "a", 0.1)
                calls.start_soon(gpu0b.work, "b", 0.1)
                calls.start_soon(gpu1.work, "c", 0.1)
            tg.cancel_scope.cancel()
    spans = {tag: (start, end) for tag, start, end in log}
    a, b, c = spans["a"], spans["b"], spans["c"]
    assert a[1] <= b[0] + 0.01 or b[1] <= a[0] + 0.01  # same device: one after the other
    assert c[0] < max(a[1], b[1])  # another device ran alongside
    assert ticks >= 10  # the event loop kept running during ~0.2 s of blocking work


def test_runtime_errors_survive_pickling() -> None:
    errors = [
        ActorStoppedError("a", "why"),
        ActorCrashedError("a", "ep", ValueError("bad")),
        ActorSetupError("a", OSError("gone")),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)


class Trainer(Actor):
    """A blocking 'training step' in a worker thread, as the learner will run torch."""

    def __init__(self, started: threading.Event, finished: threading.Event) -> None:
        self.started = started
        self.finished = finished

    def _step(self) -> None:
        self.started.set()
        time.sleep(0.1)
        self.finished.set()

    @endpoint
    async def train(self) -> None:
        await self.ctx.run_blocking(self._step)


def test_cancelled_shutdown_leaves_no_task_and_no_thread_behind() -> None:
    started, finished = threading.Event(), threading.Event()
    threads_before = set(threading.enumerate())
    tasks_after: list[int] = []

    async def main() -> None:
        tasks_before = len(anyio.get_running_tasks())
        async with open_system() as system:
            trainer = await system.spawn(Trainer, started, finished)
            async with anyio.create_task_group() as callers:
                callers.start_soon(trainer.train)
                await anyio.to_thread.run_sync(started.wait)
                system.cancel()  # mid-step: the cancelled actor still waits for its thread
        assert finished.is_set()
        tasks_after.append(len(anyio.get_running_tasks()) - tasks_before)

    anyio.run(main, backend="asyncio")
    assert tasks_after == [0]
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(timeout=2)  # anyio's idle workers exit when their event loop closes
    assert set(threading.enumerate()) - threads_before == set()
