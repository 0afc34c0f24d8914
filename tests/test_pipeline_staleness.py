"""Property: with randomised sampler and learner timings, no group older than K versions ever
reaches the learner, for K in {0, 1, 2}; and K = 0 is exactly on-policy.

The pipeline drops a stale group before training (defence in depth), so the trained batches
alone cannot show that pacing works: the test also checks what was sampled (every group within
K of its batch when it started), that each dropped group was really stale, and that sampled =
trained + dropped.

The pipeline wiring and the advantage actor are the real ones; the sampler and learner are
timing stand-ins (random sleeps, version counters) so thousands of interleavings run in seconds.
The same wiring runs on vLLM + peft in tests/test_pipeline_e2e.py.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mint_rl.actors.advantage import AdvantageActor
from mint_rl.actors.pipeline import PipelineConfig, RLPipeline
from mint_rl.rl.types import SavedPolicy, Trajectory, TrajectoryGroup, Transition
from mint_rl.runtime import Actor, endpoint, open_system


@dataclass
class Clock:
    learner_version: int = 0
    sampler_version: int = -1
    worst_staleness: int = 0
    trained_groups: int = 0
    sampled: list[TrajectoryGroup] = field(default_factory=list)
    # (learner version when trained, group)
    trained: list[tuple[int, TrajectoryGroup]] = field(default_factory=list)


class TimedSampler(Actor):
    def __init__(self, clock: Clock, rng: random.Random, max_delay: float) -> None:
        self.clock, self.rng, self.max_delay = clock, rng, max_delay
        self.changed = anyio.Event()

    @endpoint
    async def probe_tokens(self) -> list[int]:
        return [1, 2, 3]

    @endpoint
    async def load_weights(self, saved: SavedPolicy) -> float:
        await anyio.sleep(self.rng.uniform(0, self.max_delay / 4))
        self.clock.sampler_version = saved.policy_version
        self.changed.set()
        self.changed = anyio.Event()
        return 0.0

    @endpoint(concurrent=True)
    async def sampling_client(self):
        return None

    @endpoint(concurrent=True)
    async def rollout(self, builder, batch_index, min_version, seed=None) -> TrajectoryGroup:
        while self.clock.sampler_version < min_version:
            await self.changed.wait()
        start = self.clock.sampler_version
        await anyio.sleep(self.rng.uniform(0, self.max_delay))
        end = self.clock.sampler_version  # weights may have changed mid-sequence
        trajectories = [
            Trajectory([Transition(observation=[1, 2], action=[3, 4], logprobs=[-1.0, -1.0],
                                   policy_versions=[start, end],
                                   reward=float(self.rng.random() < 0.5))])
            for _ in range(4)
        ]
        group = TrajectoryGroup(trajectories, batch_index, tag=f"group-{len(self.clock.sampled)}")
        self.clock.sampled.append(group)
        return group


class CheckingAdvantage(AdvantageActor):
    """The real advantage actor, recording how stale each group it receives is."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    @endpoint
    async def build(self, groups):
        for g in groups:
            self.clock.worst_staleness = max(self.clock.worst_staleness,
                                             self.clock.learner_version - g.oldest_policy_version)
        self.clock.trained_groups += len(groups)
        self.clock.trained += [(self.clock.learner_version, g) for g in groups]
        return await AdvantageActor.build(self, groups)


class TimedLearner(Actor):
    def __init__(self, clock: Clock, rng: random.Random, max_delay: float) -> None:
        self.clock, self.rng, self.max_delay = clock, rng, max_delay

    @endpoint
    async def save_weights_for_sampler(self, probe) -> SavedPolicy:
        return SavedPolicy("unused", self.clock.learner_version, [])

    @endpoint
    async def train(self, datums) -> dict:
        await anyio.sleep(self.rng.uniform(0, self.max_delay))
        self.clock.learner_version += 1
        return {}

    @endpoint
    async def save_state(self, name) -> str:
        return name


class Dataset:
    def __init__(self, groups_per_batch: int) -> None:
        self.groups_per_batch = groups_per_batch

    def get_batch(self, index: int):
        return [f"problem-{index}-{i}" for i in range(self.groups_per_batch)]

    def __len__(self) -> int:
        return 1_000


async def _run(k: int, seed: int, sampler_delay: float, learner_delay: float, steps: int,
               groups: int) -> tuple[Clock, list[dict]]:
    clock = Clock()
    rng = random.Random(seed)
    logged: list[dict] = []
    with anyio.fail_after(20):
        await _run_inner(k, clock, rng, sampler_delay, learner_delay, steps, groups, logged)
    return clock, logged


async def _run_inner(k, clock, rng, sampler_delay, learner_delay, steps, groups, logged):
    async with open_system() as system:
        sampler = await system.spawn(functools.partial(TimedSampler, clock, rng, sampler_delay))
        advantage = await system.spawn(functools.partial(CheckingAdvantage, clock))
        learner = await system.spawn(functools.partial(TimedLearner, clock, rng, learner_delay))
        cfg = PipelineConfig(steps=steps, groups_per_batch=groups, max_steps_off_policy=k)
        await RLPipeline(cfg, Dataset(groups), [sampler], learner, advantage.build,
                         on_step=logged.append).run()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.sampled_from([0, 1, 2]),
    seed=st.integers(0, 10_000),
    sampler_delay=st.sampled_from([0.0, 0.001, 0.004]),
    learner_delay=st.sampled_from([0.0, 0.001, 0.004]),
    steps=st.integers(1, 6),
    groups=st.integers(1, 4),
)
def test_staleness_never_exceeds_k(k, seed, sampler_delay, learner_delay, steps, groups):
    clock, logged = anyio.run(_run, k, seed, sampler_delay, learner_delay, steps, groups)
    assert clock.worst_staleness <= k
    assert clock.learner_version == steps
    assert clock.trained_groups == steps * groups
    assert [m["step"] for m in logged] == list(range(steps))
    assert all(m["staleness/max"] <= k for m in logged)
    if k == 0:
        assert all(m["staleness/max"] == 0 for m in logged)  # synchronous = on-policy
    _check_sampled_trained_and_dropped(clock, logged, k, groups)


def _check_sampled_trained_and_dropped(clock: Clock, logged: list[dict], k: int,
                                       groups: int) -> None:
    # Every trained token was sampled by a policy at most K versions behind the learner, and
    # none by a policy the learner had not reached.
    for version, group in clock.trained:
        for trajectory in group.trajectories:
            for t in trajectory.transitions:
                assert all(version - k <= v <= version for v in t.policy_versions)
    # Pacing: every group sampled, trained or not, started within K of its batch.
    for group in clock.sampled:
        assert group.oldest_policy_version >= group.batch_index - k, group.tag
    # Nothing lost: each sampled group was trained once or dropped as stale (and re-sampled).
    trained_tags = [g.tag for _, g in clock.trained]
    assert len(set(trained_tags)) == len(trained_tags)
    untrained = [g for g in clock.sampled if g.tag not in set(trained_tags)]
    dropped = [m["groups/dropped_stale"] for m in logged]
    assert len(untrained) == dropped[-1]
    assert len(clock.sampled) == len(trained_tags) + dropped[-1]
    if k == 0:
        assert dropped[-1] == 0  # pacing alone keeps K = 0 on-policy: nothing to drop
    # Only stale groups are dropped: those a step drops are older than K versions then (the
    # learner is at version `step` while it collects).
    for step, (before, after) in enumerate(zip([0, *dropped], dropped, strict=False)):
        stale_then = [g for g in untrained if step - g.oldest_policy_version > k]
        assert after - before <= len(stale_then), (step, after - before)
    for m in logged:
        assert m["groups/trained"] == groups and m["groups/filtered"] == 0


def test_async_mode_actually_runs_ahead():
    """With K = 1 and a slow learner, some batches are sampled by the previous policy."""
    clock, logged = anyio.run(_run, 1, 0, 0.0, 0.01, 6, 2)
    assert max(m["staleness/max"] for m in logged) == 1
