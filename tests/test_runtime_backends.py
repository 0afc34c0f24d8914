"""The runtime's contract on both backends: the same actor classes in this process (local) and
as Ray actors in processes of their own, on a local Ray cluster the test session starts (CPU).

Calls and replies, ordering, concurrency bounds, bad input, setup failures, crashes, restarts
and escalation must behave the same; Ray adds one fault of its own (the actor's process dies),
which must be a crash like any other. The local backend never imports Ray.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psutil
import pytest
from runtime_actors import BrokenSetup, Recorder

from mint_rl.runtime import (
    ActorCrashedError,
    ActorSetupError,
    ActorSystem,
    FailureReport,
    RayBackend,
    Resources,
    RestartPolicy,
    open_system,
)

pytestmark = pytest.mark.anyio
FAST = RestartPolicy(max_restarts=3, backoff_s=0.001)
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the session; its workers import the test actors from tests/."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    yield
    ray.shutdown()


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return request.param


@asynccontextmanager
async def system_on(backend: str, **options: object) -> AsyncIterator[ActorSystem]:
    async with open_system(backend=RayBackend() if backend == "ray" else None,
                           **options) as system:  # type: ignore[arg-type]
        yield system


async def spawn(system: ActorSystem, factory: object, **options: object) -> Recorder:
    """Spawns with a small Ray resource ask (ignored by the local backend)."""
    return await system.spawn(factory, resources=Resources(num_cpus=0.1),  # type: ignore
                              **options)


async def test_calls_run_in_the_actor_in_order_and_concurrent_ones_to_their_bound(
        backend: str) -> None:
    async with system_on(backend) as system:
        rec = await spawn(system, functools.partial(Recorder, label="a"), mailbox_size=4)
        async with anyio.create_task_group() as tg:
            for i in range(30):  # posted in start order; 4 fit in the mailbox, the rest wait
                tg.start_soon(rec.record, i)
        state = await rec.state()
        assert state["seen"] == list(range(30)) and state["max_active"] == 1
        assert state["label"] == "a"  # built from the factory's keyword argument
        assert (state["pid"] == os.getpid()) == (backend == "local")  # Ray: its own process

        results: list[int] = []

        async def one() -> None:
            results.append(await rec.slow(0.2))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
        assert max(results) == 2  # overlapped, never past max_concurrency


async def test_stop_drains_the_mailbox_then_runs_teardown_in_the_actor(
        backend: str, tmp_path: Path) -> None:
    log = tmp_path / "teardown.log"
    async with system_on(backend) as system:
        rec = await spawn(system, functools.partial(Recorder, "b", str(log)))
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(rec.record, i)
            await anyio.sleep(0.1)  # the calls are posted (a few are handled already)
            await system.stop(rec)
        assert system.actors() == ()
    assert log.read_text() == "b seen [0, 1, 2, 3, 4]\n"


async def test_bad_input_reaches_the_caller_with_its_type_and_the_actor_lives(
        backend: str) -> None:
    async with system_on(backend) as system:
        rec = await spawn(system, Recorder)
        assert await rec.checked(1) == 1
        with pytest.raises(ValueError, match="x must be >= 0, got -1"):
            await rec.checked(-1)
        assert await rec.checked(2) == 2
        assert (await rec.state())["seen"] == [1, 2]  # the same instance, nothing lost
        assert system.failures == ()


async def test_a_setup_failure_raises_from_spawn_with_its_cause(backend: str) -> None:
    async with system_on(backend) as system:
        with pytest.raises(ActorSetupError) as caught:
            await spawn(system, BrokenSetup, name="broken")
        assert isinstance(caught.value.cause, OSError)
        assert "weights not found" in str(caught.value.cause)
        rec = await spawn(system, Recorder, name="broken")  # the name is free again
        assert await rec.record(3) == 3


async def test_a_crash_fails_its_callers_is_reported_and_restarts_a_fresh_instance(
        backend: str) -> None:
    reports: list[FailureReport] = []
    async with system_on(backend, restart=FAST, on_failure=reports.append) as system:
        rec = await spawn(system, Recorder, name="rec")
        await rec.record(1)
        before = await rec.state()
        in_flight: list[BaseException] = []

        async def wait_long() -> None:
            try:
                await rec.slow(30)
            except ActorCrashedError as e:
                in_flight.append(e)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_long)
            await anyio.sleep(0.3)  # the slow call is running in the actor
            with pytest.raises(ActorCrashedError) as caught:
                await rec.crash("boom")
        assert isinstance(caught.value.cause, RuntimeError) and "boom" in str(caught.value)
        assert len(in_flight) == 1  # the concurrent call in flight failed too, at once
        after = await rec.state()
        assert after["seen"] == [] and after["restarts"] == 1  # a fresh instance
        # Ray: the process lived, so the new instance started in it (as a local restart does).
        assert after["pid"] == before["pid"]
    assert [(r.actor, r.endpoint, r.error_type, r.action, r.failed_callers)
            for r in reports] == [("rec", "crash", "RuntimeError", "restart", 2)]


async def test_too_many_crashes_escalate_and_stop_the_system(backend: str) -> None:
    with pytest.RaisesGroup(pytest.RaisesExc(ActorCrashedError, match="fatal")):
        async with system_on(backend, restart=RestartPolicy.never()) as system:
            rec = await spawn(system, Recorder, name="rec")
            with pytest.raises(ActorCrashedError):
                await rec.crash("fatal")
            await anyio.sleep(30)  # the escalation cancels this
    assert [r.action for r in system.failures] == ["escalate"]


@pytest.mark.slow
async def test_a_killed_ray_process_is_a_crash_and_the_actor_restarts_in_a_new_one(
        ray_cluster: None) -> None:
    reports: list[FailureReport] = []
    async with system_on("ray", restart=FAST, on_failure=reports.append) as system:
        rec = await spawn(system, Recorder, name="rec")
        await rec.record(1)
        pid = (await rec.state())["pid"]
        assert isinstance(pid, int)
        failed: list[ActorCrashedError] = []

        async def sleep_long() -> None:
            try:
                await rec.sleep(30)
            except ActorCrashedError as e:
                failed.append(e)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sleep_long)  # in flight when its process dies
            await anyio.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
        assert len(failed) == 1 and type(failed[0].cause).__name__ == "ActorDiedError"
        after = await rec.state()  # the restarted actor, in a new process
        assert after["pid"] != pid and after["seen"] == [] and after["restarts"] == 1
        await system.stop(rec)
        new = psutil.Process(int(after["pid"]))  # type: ignore[arg-type]
        with anyio.fail_after(30):  # stopped for good: its process goes
            while new.is_running() and new.status() != psutil.STATUS_ZOMBIE:
                await anyio.sleep(0.1)
    assert [(r.actor, r.endpoint, r.action) for r in reports] == [("rec", "sleep", "restart")]


def test_the_local_backend_never_imports_ray() -> None:
    script = textwrap.dedent("""
        import sys
        import anyio
        from mint_rl.runtime import open_system
        import mint_rl.run.train  # the RL run's module, with its actors
        from runtime_actors import Recorder

        async def main():
            async with open_system() as system:
                rec = await system.spawn(Recorder)
                assert await rec.record(1) == 1

        anyio.run(main)
        assert "ray" not in sys.modules, "the local backend imported ray"
    """)
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
