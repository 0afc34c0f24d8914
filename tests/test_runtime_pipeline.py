"""Composition: a user wires actors (their own among them) into a pipeline in plain Python."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from mint_rl.runtime import (
    Actor,
    ActorCrashedError,
    Pipeline,
    RestartPolicy,
    endpoint,
    open_system,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class Group:
    """A prompt and its sampled answers; frozen and picklable, as messages must be."""

    prompt: int
    answers: tuple[int, ...]
    rewards: tuple[float, ...] = ()
    advantages: tuple[float, ...] = ()


class Sampler(Actor):
    """Stands in for vLLM: answers prompt p with p, p+1, ... (concurrent, like `sample`)."""

    def __init__(self, group_size: int) -> None:
        self.group_size = group_size

    @endpoint(concurrent=True)
    async def sample(self, prompt: int) -> Group:
        await anyio.sleep(0.001 * (prompt % 3))  # finish out of order
        return Group(prompt, tuple(prompt + i for i in range(self.group_size)))


class RewardModel(Actor):
    """The user's own actor: reward 1 for even answers. Prompts divisible by 4 get all-equal
    rewards (no learning signal), which the filter below drops."""

    @endpoint
    async def score(self, group: Group) -> Group:
        if group.prompt % 4 == 0:
            return replace(group, rewards=(0.5,) * len(group.answers))
        return replace(group, rewards=tuple(float(a % 2 == 0) for a in group.answers))


class Advantage(Actor):
    """Zero-centres rewards per group."""

    @endpoint
    async def compute(self, group: Group) -> Group:
        mean = statistics.fmean(group.rewards)
        return replace(group, advantages=tuple(r - mean for r in group.rewards))


def has_signal(group: Group) -> bool:
    return len(set(group.rewards)) > 1


async def test_a_user_pipeline_of_three_actors_and_a_filter_gives_the_right_output() -> None:
    async with open_system(check_pickle=True) as system:
        sampler = await system.spawn(Sampler, 2)
        reward = await system.spawn(RewardModel)
        advantage = await system.spawn(Advantage)
        pipeline = (
            Pipeline(range(12), capacity=2)
            .stage(sampler, "sample", workers=4)
            .stage(reward, RewardModel.score)
            .filter(has_signal)
            .stage(advantage, "compute")
            .batch(3)
        )
        batches = await pipeline.collect()
    groups = sorted((g for batch in batches for g in batch), key=lambda g: g.prompt)
    assert [len(b) for b in batches] == [3, 3, 3]
    assert [g.prompt for g in groups] == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    for g in groups:
        even_first = g.prompt % 2 == 0
        assert g.answers == (g.prompt, g.prompt + 1)
        assert g.advantages == ((0.5, -0.5) if even_first else (-0.5, 0.5))


async def test_function_stages_keep_order_with_one_worker_and_accept_async_predicates() -> None:
    async def is_odd(x: int) -> bool:
        await anyio.lowlevel.checkpoint()
        return x % 2 == 1

    async def double(x: int) -> int:
        return 2 * x

    result = await Pipeline(range(10)).filter(is_odd).stage(double).stage(str).collect()
    assert result == ["2", "6", "10", "14", "18"]


async def test_pipeline_channels_are_bounded_and_observable() -> None:
    depths: list[int] = []

    async def slow(x: int) -> int:
        await anyio.sleep(0.001)
        return x

    pipeline = Pipeline(range(200), capacity=3).stage(slow)
    async with pipeline.open() as items:
        async for _ in items:
            depths.extend(s.depth for s in pipeline.statistics())
    assert max(depths) <= 4
    assert [s.name for s in pipeline.statistics()] == ["source", "slow"]


async def test_a_failing_stage_stops_the_pipeline_and_the_error_comes_out() -> None:
    class Crashy(Actor):
        @endpoint
        async def check(self, x: int) -> int:
            if x == 5:
                raise RuntimeError("bad item")
            return x

    async with open_system(restart=RestartPolicy(backoff_s=0.001)) as system:
        crashy = await system.spawn(Crashy)
        seen: list[int] = []
        with pytest.RaisesGroup(ActorCrashedError):
            await Pipeline(range(100)).stage(crashy, "check").stage(seen.append).collect()
        assert seen == [0, 1, 2, 3, 4]


async def test_leaving_the_pipeline_early_cancels_its_tasks() -> None:
    def endless():  # type: ignore[no-untyped-def]
        i = 0
        while True:
            yield i
            i += 1

    tasks_before = len(anyio.get_running_tasks())
    async with Pipeline(endless()).stage(lambda x: x * x).open() as items:
        async for x in items:
            if x > 100:
                break
    assert len(anyio.get_running_tasks()) == tasks_before


async def test_the_custom_pipeline_recipe_runs_and_keeps_only_groups_with_signal() -> None:
    path = Path(__file__).parent.parent / "recipes" / "custom_pipeline.py"
    spec = importlib.util.spec_from_file_location("custom_pipeline", path)
    assert spec is not None and spec.loader is not None
    recipe = importlib.util.module_from_spec(spec)
    sys.modules["custom_pipeline"] = recipe  # so check_pickle can find its message classes
    spec.loader.exec_module(recipe)
    batches = await recipe.main(num_prompts=8, group_size=4, batch_size=2)
    groups = [g for batch in batches for g in batch]
    assert groups and all(len(set(g.rewards)) > 1 for g in groups)
    assert all(abs(sum(g.advantages)) < 1e-9 for g in groups)
