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
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mint_rl.actors.advantage import AdvantageActor
from mint_rl.actors.pipeline import PipelineConfig, RLPipeline
from mint_rl.rl.types import SavedPolicy, Trajectory, TrajectoryGroup, Transition
from mint_rl.runtime import Actor, RestartPolicy, endpoint, open_system


@dataclass
class Clock:
    learner_version: int = 0
    worst_staleness: int = 0
    trained_groups: int = 0
    sampled: list[TrajectoryGroup] = field(default_factory=list)
    # (learner version when trained, group)
    trained: list[tuple[int, TrajectoryGroup]] = field(default_factory=list)


class TimedSampler(Actor):
    def __init__(self, clock: Clock, rng: random.Random, max_delay: float) -> None:
        self.clock, self.rng, self.max_delay = clock, rng, max_delay
        self.version = -1  # what this sampler serves (several samplers load independently)
        self.changed = anyio.Event()

    @endpoint
    async def probe_tokens(self) -> list[int]:
        return [1, 2, 3]

    @endpoint
    async def load_weights(self, saved: SavedPolicy) -> float:
        await anyio.sleep(self.rng.uniform(0, self.max_delay / 4))
        self.version = saved.policy_version
        self.changed.set()
        self.changed = anyio.Event()
        return 0.0

    @endpoint(concurrent=True)
    async def rollout(self, builder, batch_index, min_version, seed=None) -> TrajectoryGroup:
        while self.version < min_version:
            await self.changed.wait()
        start = self.version
        await anyio.sleep(self.rng.uniform(0, self.max_delay))
        end = self.version  # weights may have changed mid-sequence
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
        return SavedPolicy(Path("unused"), self.clock.learner_version, [])

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
               groups: int, samplers: int = 1) -> tuple[Clock, list[dict]]:
    clock = Clock()
    rng = random.Random(seed)
    logged: list[dict] = []
    with anyio.fail_after(20):
        await _run_inner(k, clock, rng, sampler_delay, learner_delay, steps, groups, logged,
                         samplers)
    return clock, logged


async def _run_inner(k, clock, rng, sampler_delay, learner_delay, steps, groups, logged,
                     samplers):
    async with open_system() as system:
        actors = [await system.spawn(functools.partial(TimedSampler, clock, rng, sampler_delay))
                  for _ in range(samplers)]
        advantage = await system.spawn(functools.partial(CheckingAdvantage, clock))
        learner = await system.spawn(functools.partial(TimedLearner, clock, rng, learner_delay))
        cfg = PipelineConfig(steps=steps, groups_per_batch=groups, max_steps_off_policy=k)
        await RLPipeline(cfg, Dataset(groups), actors, learner, advantage.build,
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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.sampled_from([0, 1, 2]),
    seed=st.integers(0, 10_000),
    sampler_delay=st.sampled_from([0.0, 0.001, 0.004]),
    learner_delay=st.sampled_from([0.0, 0.001, 0.004]),
    steps=st.integers(1, 5),
    groups=st.integers(1, 4),
    samplers=st.integers(2, 3),
)
def test_staleness_holds_across_several_samplers(k, seed, sampler_delay, learner_delay, steps,
                                                 groups, samplers):
    """Each sampler loads each version on its own timing; the bound holds for all of them,
    and the per-sampler metrics account for the sampled groups and served versions."""
    clock, logged = anyio.run(_run, k, seed, sampler_delay, learner_delay, steps, groups,
                              samplers)
    assert clock.worst_staleness <= k
    assert clock.trained_groups == steps * groups
    assert all(m["staleness/max"] <= k for m in logged)
    _check_sampled_trained_and_dropped(clock, logged, k, groups)
    rows = [m for m in logged if "groups/trained" in m]
    counted = sum(m[f"sampler/{i}/groups"] for m in rows for i in range(samplers))
    assert steps * groups <= counted <= len(clock.sampled)
    for m in rows:
        assert f"sampler/{samplers}/groups" not in m
        for i in range(samplers):
            # Batch `step` was sampled only once every sampler served >= step - K.
            assert m["step"] - k <= m[f"sampler/{i}/policy_version"] <= m["step"] + 1
            assert m[f"sampler/{i}/tokens"] == 8 * m[f"sampler/{i}/groups"]  # 4 x 2 tokens


def test_several_samplers_share_the_prompt_stream():
    """Least-loaded dispatch: with four groups per batch, both samplers sample."""
    clock, logged = anyio.run(_run, 1, 0, 0.004, 0.004, 3, 4, 2)
    assert all(sum(m[f"sampler/{i}/groups"] for m in logged) > 0 for i in range(2))
    assert all(m["sampler/0/tokens_per_s"] >= 0 for m in logged)


def test_async_mode_actually_runs_ahead():
    """With K = 1 and a slow learner, some batches are sampled by the previous policy."""
    clock, logged = anyio.run(_run, 1, 0, 0.0, 0.01, 6, 2)
    assert max(m["staleness/max"] for m in logged) == 1


class CrashingSampler(TimedSampler):
    """Crashes (once per test: `crashes` remembers it across restarts) in the first rollout of
    batch `crash_batch`, as a sampler whose engine process died does."""

    def __init__(self, clock: Clock, rng: random.Random, max_delay: float, crash_batch: int,
                 crashes: list[int]) -> None:
        super().__init__(clock, rng, max_delay)
        self.crash_batch, self.crashes = crash_batch, crashes

    @endpoint(concurrent=True)
    async def rollout(self, builder, batch_index, min_version, seed=None) -> TrajectoryGroup:
        if batch_index == self.crash_batch and not self.crashes:
            while self.version < min_version:
                await self.changed.wait()
            self.crashes.append(batch_index)
            raise RuntimeError("the engine process died")
        return await TimedSampler.rollout(self, builder, batch_index, min_version, seed)


@pytest.mark.parametrize("k", [0, 1])
def test_a_crashed_sampler_is_restored_while_the_others_sample(k: int) -> None:
    """Sampler 1 crashes at batch 1: its group goes to sampler 0 at once, the runtime restarts
    it, the newest weights are loaded into it, and it samples again; every group is trained
    once, within K."""
    clock, rng, crashes, logged = Clock(), random.Random(0), [], []
    steps, groups = 5, 4

    async def run() -> None:
        async with open_system() as system:
            policy = RestartPolicy(max_restarts=2, backoff_s=0.01)
            actors = [
                await system.spawn(functools.partial(TimedSampler, clock, rng, 0.004)),
                await system.spawn(functools.partial(CrashingSampler, clock, rng, 0.004, 1,
                                                     crashes), restart=policy),
            ]
            advantage = await system.spawn(functools.partial(CheckingAdvantage, clock))
            learner = await system.spawn(functools.partial(TimedLearner, clock, rng, 0.004))
            cfg = PipelineConfig(steps=steps, groups_per_batch=groups, max_steps_off_policy=k)
            with anyio.fail_after(20):
                await RLPipeline(cfg, Dataset(groups), actors, learner, advantage.build,
                                 on_step=logged.append).run()

    anyio.run(run)
    assert crashes == [1]
    assert clock.trained_groups == steps * groups and clock.worst_staleness <= k
    _check_sampled_trained_and_dropped(clock, logged, k, groups)
    assert logged[-1]["groups/resampled"] >= 1
    assert [m["sampler/1/restarts"] for m in logged][-1] == 1
    assert all(m["sampler/0/restarts"] == 0 for m in logged)
    first = next(j for j, m in enumerate(logged) if m["sampler/1/restarts"])
    assert sum(m["sampler/1/groups"] for m in logged[first + 1:]) > 0  # sampling again
    assert logged[-1]["sampler/1/policy_version"] >= steps - 1 - k


class SlowToRestartSampler(CrashingSampler):
    """A CrashingSampler whose restarted instance loads nothing until `back` is set, as a new
    vLLM engine takes its start-up time."""

    def __init__(self, *args, back: anyio.Event) -> None:
        super().__init__(*args)
        self.back = back

    @endpoint
    async def load_weights(self, saved: SavedPolicy) -> float:
        if self.crashes and self.version < 0:  # the instance started after the crash
            await self.back.wait()
        return await TimedSampler.load_weights(self, saved)


def test_steps_go_on_while_a_sampler_restarts() -> None:
    """New versions are served by the samplers that serve: sampler 1 crashes and stays away
    until three more steps were trained on sampler 0's groups (within K; a run that waited for
    it would never get there), then serves and samples again."""
    clock, rng, crashes, logged = Clock(), random.Random(1), [], []
    steps, groups, k = 12, 2, 1

    async def run() -> None:
        back = anyio.Event()

        def on_step(metrics: dict) -> None:
            logged.append(metrics)
            if crashes and sum(not m["sampler/1/serving"] for m in logged) >= 3:
                back.set()

        async with open_system() as system:
            policy = RestartPolicy(max_restarts=2, backoff_s=0.01)
            actors = [
                await system.spawn(functools.partial(TimedSampler, clock, rng, 0.004)),
                await system.spawn(functools.partial(SlowToRestartSampler, clock, rng, 0.004, 1,
                                                     crashes, back=back), restart=policy),
            ]
            advantage = await system.spawn(functools.partial(CheckingAdvantage, clock))
            learner = await system.spawn(functools.partial(TimedLearner, clock, rng, 0.004))
            cfg = PipelineConfig(steps=steps, groups_per_batch=groups, max_steps_off_policy=k)
            with anyio.fail_after(20):
                await RLPipeline(cfg, Dataset(groups), actors, learner, advantage.build,
                                 on_step=on_step).run()

    anyio.run(run)
    assert crashes == [1]
    assert clock.trained_groups == steps * groups and clock.worst_staleness <= k
    _check_sampled_trained_and_dropped(clock, logged, k, groups)
    away = [j for j, m in enumerate(logged) if not m["sampler/1/serving"]]
    assert len(away) >= 3 and all(m["sampler/0/serving"] for m in logged)
    assert sum(m["sampler/1/groups"] for m in logged[away[-1] + 1:]) > 0  # it came back
