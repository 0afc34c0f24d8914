"""Actors on their own: call/cast/stream, ordering, readiness, timeouts, stop, threads, pickling."""

from __future__ import annotations

import pickle
import threading
import time

import anyio
import anyio.lowlevel
import pytest

from mint_rl.runtime import (
    Actor,
    ActorCallTimeout,
    ActorCrashedError,
    ActorSetupError,
    ActorStoppedError,
    MessageNotPicklableError,
    endpoint,
    open_system,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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

    @endpoint
    async def count(self, n: int):
        try:
            for i in range(n):
                yield i
        finally:
            self.seen.append(-1)  # marks that the generator was closed


TEARDOWNS: list[list[int]] = []


async def test_call_cast_and_stream_reach_the_endpoint() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        assert await rec.call("record", 1) == 1
        assert await rec.call(Recorder.record, 2) == 2  # by method reference
        await rec.cast("record", 3)
        assert [x async for x in rec.stream("count", 4)] == [0, 1, 2, 3]
        assert (await rec.call("state"))["seen"] == [1, 2, 3, -1]


async def test_messages_to_ordered_endpoints_run_one_at_a_time_in_order() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder, mailbox_size=8)
        async with anyio.create_task_group() as tg:
            for i in range(100):
                await rec.cast("record", i)
            tg.start_soon(rec.call, "record", 100)
        state = await rec.call("state")
        assert state["seen"] == list(range(101))
        assert state["max_active"] == 1


async def test_concurrent_endpoint_overlaps_up_to_its_bound() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        results: list[int] = []

        async def one() -> None:
            results.append(await rec.call("slow", 0.05))

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one)
        assert max(results) == 3  # overlapped, but never more than max_concurrency


async def test_spawn_returns_only_once_setup_has_finished() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        assert rec.statistics().state == "running"
        assert (await rec.call("state"))["loaded"] is True


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
        assert await rec.call("record", 7) == 7


async def test_call_timeout_is_a_timeout_error_and_the_late_message_is_dropped() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        await rec.cast("sleep", 0.1)  # keeps the actor busy
        with pytest.raises(ActorCallTimeout) as info:
            await rec.call("record", 1, timeout=0.02)
        assert isinstance(info.value, TimeoutError)
        assert (await rec.call("state"))["seen"] == []  # queued, abandoned, never run


async def test_bad_input_errors_reach_the_caller_without_a_crash() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        await rec.call("checked", 1)
        with pytest.raises(ValueError, match="x must be >= 0"):
            await rec.call("checked", -1)
        assert await rec.call("checked", 2) == 2
        assert (await rec.call("state"))["seen"] == [1, 2]
        assert rec.statistics().restarts == 0
        assert system.failures == ()


async def test_wrong_endpoint_or_verb_fails_at_the_call_site() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        with pytest.raises(AttributeError, match="no endpoint 'nope'"):
            await rec.call("nope")
        with pytest.raises(TypeError, match="stream"):
            await rec.call("count", 3)
        with pytest.raises(TypeError):
            _ = [x async for x in rec.stream("record", 1)]


def test_endpoint_rejects_sync_methods_and_the_reserved_timeout_name() -> None:
    with pytest.raises(TypeError, match="async def"):
        endpoint(lambda self: None)

    async def takes_timeout(self: object, timeout: float) -> None: ...  # noqa: ASYNC109

    with pytest.raises(TypeError, match="reserved"):
        endpoint(takes_timeout)


async def test_leaving_a_stream_early_closes_the_actor_generator() -> None:
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        async for x in rec.stream("count", 1000):
            if x == 2:
                break
        assert await rec.call("record", 5) == 5  # the actor moved on
        assert (await rec.call("state"))["seen"] == [-1, 5]


async def test_graceful_stop_drains_the_mailbox_then_tears_down() -> None:
    TEARDOWNS.clear()
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        for i in range(5):
            await rec.cast("record", i)
        await rec.stop()
        assert TEARDOWNS == [[0, 1, 2, 3, 4]]
        assert rec.statistics().state == "stopped"
        with pytest.raises(ActorStoppedError):
            await rec.call("record", 9)


async def test_stop_after_grace_cancels_and_fails_pending_callers() -> None:
    TEARDOWNS.clear()
    SLEPT.clear()
    async with open_system() as system:
        rec = await system.spawn(Recorder)
        errors: list[BaseException] = []

        async def pending() -> None:
            try:
                await rec.call("record", 1)
            except ActorStoppedError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            await rec.cast("sleep", 10)
            tg.start_soon(pending)
            await anyio.sleep(0.01)
            await rec.stop(grace=0.05)
        assert SLEPT == []  # the 10 s sleep was cancelled after the grace, not waited out
        assert len(errors) == 1
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
                calls.start_soon(gpu0.call, "work", "a", 0.1)
                calls.start_soon(gpu0b.call, "work", "b", 0.1)
                calls.start_soon(gpu1.call, "work", "c", 0.1)
            tg.cancel_scope.cancel()
    spans = {tag: (start, end) for tag, start, end in log}
    a, b, c = spans["a"], spans["b"], spans["c"]
    assert a[1] <= b[0] + 0.01 or b[1] <= a[0] + 0.01  # same device: one after the other
    assert c[0] < max(a[1], b[1])  # another device ran alongside
    assert ticks >= 10  # the event loop kept running during ~0.2 s of blocking work


class Unpicklable(Actor):
    @endpoint
    async def echo(self, x: object) -> object:
        return x

    @endpoint
    async def make_lock(self) -> object:
        return threading.Lock()


async def test_check_pickle_catches_messages_that_would_break_on_ray() -> None:
    async with open_system(check_pickle=True) as system:
        actor = await system.spawn(Unpicklable)
        assert await actor.call("echo", {"a": [1, 2]}) == {"a": [1, 2]}
        with pytest.raises(MessageNotPicklableError):
            await actor.call("echo", lambda: 1)
        with pytest.raises(MessageNotPicklableError):
            await actor.call("make_lock")


def test_runtime_errors_survive_pickling() -> None:
    errors = [
        ActorStoppedError("a", "why"),
        ActorCallTimeout("a", "ep", 1.5),
        ActorCrashedError("a", "ep", ValueError("bad")),
        ActorSetupError("a", OSError("gone")),
        MessageNotPicklableError("msg", TypeError("lambda")),
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
            await trainer.cast("train")
            await anyio.to_thread.run_sync(started.wait)
            system.cancel()  # mid-step: the cancelled actor still waits for its thread
        assert finished.is_set()
        tasks_after.append(len(anyio.get_running_tasks()) - tasks_before)

    anyio.run(main, backend="asyncio")
    assert tasks_after == [0]
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(timeout=2)  # anyio's idle workers exit when their event loop closes
    assert set(threading.enumerate()) - threads_before == set()
