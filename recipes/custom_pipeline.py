"""Composing your own actors into a pipeline: a reward model and a filter between sampling and
advantages, without touching the library.

The sampler here is a stand-in (it "answers" arithmetic prompts with random numbers) so the
example runs in a second with no model. It shows the runtime's `Pipeline` on toy actors; the RL
recipes wire the real vLLM sampler and learner differently (`actors/pipeline.py`), so this is a
script to read and run, not a recipe (`mint-rl list` does not offer it).

    .venv/bin/python recipes/custom_pipeline.py
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, replace

import anyio

from mint_rl.runtime import Actor, Pipeline, RestartPolicy, endpoint, open_system


@dataclass(frozen=True)
class Group:
    """One prompt and its sampled answers. Frozen and picklable: it may cross to Ray later."""

    prompt: tuple[int, int]
    answers: tuple[int, ...]
    rewards: tuple[float, ...] = ()
    advantages: tuple[float, ...] = ()


class ToySampler(Actor):
    """Stands in for the vLLM sampler: `concurrent=True`, as generation requests overlap."""

    def __init__(self, group_size: int, seed: int) -> None:
        self.group_size = group_size
        self.rng = random.Random(seed)

    @endpoint(concurrent=True)
    async def sample(self, prompt: tuple[int, int]) -> Group:
        await anyio.sleep(0.01)  # generation takes time
        a, b = prompt
        answers = tuple(a + b + self.rng.choice([-1, 0, 0, 1]) for _ in range(self.group_size))
        return Group(prompt, answers)


class RewardModel(Actor):
    """The user's own actor: scores answers. Loading a real reward model belongs in setup()."""

    async def setup(self) -> None:
        self.calls = 0  # e.g. load weights here; spawn() returns once this is done

    @endpoint
    async def score(self, group: Group) -> Group:
        self.calls += 1
        a, b = group.prompt
        return replace(group, rewards=tuple(float(x == a + b) for x in group.answers))


class Advantage(Actor):
    """Zero-centres rewards within each group."""

    @endpoint
    async def compute(self, group: Group) -> Group:
        mean = statistics.fmean(group.rewards)
        return replace(group, advantages=tuple(r - mean for r in group.rewards))


def has_signal(group: Group) -> bool:
    """All-equal rewards give all-zero advantages: nothing to learn, so drop the group."""
    return len(set(group.rewards)) > 1


async def main(
    num_prompts: int = 32,
    group_size: int = 4,
    batch_size: int = 4,
) -> list[list[Group]]:
    rng = random.Random(0)
    prompts = [(rng.randrange(10), rng.randrange(10)) for _ in range(num_prompts)]
    async with open_system(restart=RestartPolicy(max_restarts=3), check_pickle=True) as system:
        sampler = await system.spawn(ToySampler, group_size, 0, name="sampler")
        reward = await system.spawn(RewardModel, name="reward")
        advantage = await system.spawn(Advantage, name="advantage")
        pipeline = (
            Pipeline(prompts, capacity=8)
            .stage(sampler, "sample", workers=8)
            .stage(reward, "score")
            .filter(has_signal)
            .stage(advantage, "compute")
            .batch(batch_size)
        )
        batches = []
        async with pipeline.open() as stream:
            async for batch in stream:
                batches.append(batch)  # a learner would call forward_backward here
        depths = {s.name: s.high_water for s in pipeline.statistics()}
    kept = sum(len(b) for b in batches)
    print(f"{kept}/{num_prompts} groups had a learning signal, in {len(batches)} batches")
    print(f"deepest queue per channel (bound 8): {depths}")
    return batches


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
