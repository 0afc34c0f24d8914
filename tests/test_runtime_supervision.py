"""Crashes, restarts, escalation, and cancelling a whole system."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mint_rl.runtime import (
    Actor,
    ActorCrashedError,
    ActorStoppedError,
    FailureReport,
    RestartPolicy,
    actor_name,
    endpoint,
    open_system,
)

pytestmark = pytest.mark.anyio

FAST = RestartPolicy(max_restarts=3, backoff_s=0.001)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Flaky(Actor):
    """Crashes on demand; counts instances so a restart is visible."""

    instances = 0

    def __init__(self) -> None:
        Flaky.instances += 1
        self.generation = Flaky.instances
        self.total = 0

    @endpoint
    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    @endpoint
    async def crash(self, why: str) -> None:
        raise RuntimeError(why)

    @endpoint(concurrent=True)
    async def wait(self, seconds: float) -> str:
        await anyio.sleep(seconds)
        return "waited"

    @endpoint(concurrent=True)
    async def crash_soon(self) -> None:
        await anyio.sleep(0.01)
        raise RuntimeError("concurrent crash")

    @endpoint
    async def generation_no(self) -> int:
        return self.generation


async def test_crash_informs_the_caller_and_the_supervisor_then_restarts_fresh() -> None:
    reports: list[FailureReport] = []
    async with open_system(restart=FAST, on_failure=reports.append) as system:
        actor = await system.spawn(Flaky, name="flaky")
        assert await actor.add(5) == 5
        first = await actor.generation_no()
        with pytest.raises(ActorCrashedError) as info:
            await actor.crash("disk full")
        assert isinstance(info.value.cause, RuntimeError)
        assert info.value.endpoint == "crash"
        assert await actor.add(1) == 1  # a fresh instance: state reset
        assert await actor.generation_no() == first + 1
    [report] = reports
    assert (report.actor, report.endpoint, report.action) == ("flaky", "crash", "restart")
    assert (report.error_type, report.message) == ("RuntimeError", "disk full")
    assert "disk full" in report.traceback
    assert report.failed_callers == 1


async def test_messages_queued_behind_a_crash_are_handled_by_the_new_instance() -> None:
    async with open_system(restart=FAST) as system:
        actor = await system.spawn(Flaky)
        first = await actor.generation_no()
        outcomes: list[object] = []

        async def crash() -> None:
            try:
                await actor.crash("boom")
            except ActorCrashedError as exc:
                outcomes.append(exc.endpoint)

        async def add() -> None:
            outcomes.append(await actor.add(1))

        async with anyio.create_task_group() as tg:
            tg.start_soon(crash)  # callers post in start order: the crash first, then the adds
            for _ in range(4):
                tg.start_soon(add)
        assert outcomes == ["crash", 1, 2, 3, 4]  # the fresh instance started from 0
        assert await actor.generation_no() == first + 1
        [report] = system.failures
        assert report.failed_callers == 1  # the crash's own caller was told, not left waiting


async def test_a_crash_fails_the_other_concurrent_messages_in_flight() -> None:
    async with open_system(restart=FAST) as system:
        actor = await system.spawn(Flaky)
        outcomes: list[str] = []

        async def wait() -> None:
            try:
                outcomes.append(await actor.wait(1.0))
            except ActorCrashedError as exc:
                outcomes.append(f"crashed in {exc.endpoint}")

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            tg.start_soon(wait)
            await anyio.sleep(0.005)
            with pytest.raises(ActorCrashedError):
                await actor.crash_soon()
        assert outcomes == ["crashed in crash_soon"] * 2
        assert system.failures[0].failed_callers == 3


async def test_too_many_crashes_escalate_and_stop_the_whole_system() -> None:
    policy = RestartPolicy(max_restarts=2, backoff_s=0.001)
    teardowns: list[str] = []

    class Bystander(Actor):
        async def teardown(self) -> None:
            teardowns.append("bystander")

    with pytest.RaisesGroup(ActorCrashedError):
        async with open_system(restart=policy) as system:
            await system.spawn(Bystander)
            actor = await system.spawn(Flaky)
            for _ in range(3):
                with pytest.raises(ActorCrashedError):
                    await actor.crash("again")
            await anyio.sleep(10)  # the escalation cancels this
    assert [r.action for r in system.failures] == ["restart", "restart", "escalate"]
    assert teardowns == ["bystander"]


async def test_give_up_with_stop_stops_only_that_actor() -> None:
    async with open_system(restart=RestartPolicy.never(on_give_up="stop")) as system:
        actor = await system.spawn(Flaky)
        other = await system.spawn(Flaky)
        with pytest.raises(ActorCrashedError):
            await actor.crash("fatal")
        with pytest.raises(ActorStoppedError):
            await actor.add(1)
        assert await other.add(2) == 2
        assert [actor_name(a) for a in system.actors()] == [actor_name(other)]


@given(
    restarts=st.lists(st.floats(0, 100, allow_nan=False), max_size=10),
    now=st.floats(100, 200, allow_nan=False),
    max_restarts=st.integers(0, 5),
)
def test_restart_policy_bounds_restarts_in_its_window_and_backoff(
    restarts: list[float], now: float, max_restarts: int
) -> None:
    policy = RestartPolicy(max_restarts=max_restarts, window_s=50, backoff_s=0.1, max_backoff_s=1)
    action, backoff = policy.decide(restarts, now)
    recent = sum(1 for t in restarts if now - t < 50)
    assert (action == "restart") == (recent < max_restarts)
    assert 0 <= backoff <= 1
    if action == "restart":
        assert backoff == min(1, 0.1 * 2**recent)


def test_restart_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(ValueError):
        RestartPolicy(on_give_up="retry")  # type: ignore[arg-type]


class Node(Actor):
    """Logs its start and its (shielded) teardown; `hang` never returns."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def setup(self) -> None:
        self.log.append(f"up {self.ctx.name}")

    async def teardown(self) -> None:
        await anyio.lowlevel.checkpoint()  # a checkpoint: proves the cleanup is shielded
        self.log.append(f"down {self.ctx.name}")

    @endpoint
    async def hang(self) -> None:
        await anyio.sleep_forever()


async def test_cancelling_the_system_cancels_every_actor_and_leaves_no_task() -> None:
    tasks_before = len(anyio.get_running_tasks())
    log: list[str] = []
    async with open_system() as system:
        for i in range(7):
            await system.spawn(Node, log, name=f"n{i}")
        assert len(system.actors()) == 7
        hung = system.actors()[0]
        async with anyio.create_task_group() as callers:
            callers.start_soon(hung.hang)
            await anyio.sleep(0.01)
            system.cancel()
    ups = sorted(e.removeprefix("up ") for e in log if e.startswith("up"))
    downs = sorted(e.removeprefix("down ") for e in log if e.startswith("down"))
    assert len(ups) == 7
    assert downs == ups
    assert len(anyio.get_running_tasks()) == tasks_before
