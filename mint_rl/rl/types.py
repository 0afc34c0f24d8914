"""The RL vocabulary, as in tinker-cookbook: environments, groups of them, datasets, trajectories.

An `Env` is one episode: it gives an observation (prompt tokens), takes the model's action
(sampled tokens) and returns a reward, until done. Multi-turn envs return a next observation that
extends the conversation. An `EnvGroupBuilder` makes the envs that share a prompt, so their
rewards can be compared (group-relative advantages). An `RLDataset` hands out batches of builders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import anyio

from mint_rl import types


@dataclass(frozen=True)
class StepResult:
    reward: float
    episode_done: bool
    next_observation: list[int] | None = None  # the whole context for the next turn
    metrics: dict[str, float] = field(default_factory=dict)


class Sampler(Protocol):
    """What rollouts and evaluations sample with: a `SamplingClient`, or a sampler actor's
    `SamplerActorClient` (actors/sampler_pool.py), which samples wherever that actor runs."""

    policy_version: int
    """The version a token is labelled with when the response does not say."""

    async def sample_async(self, prompt: types.ModelInput, num_samples: int,
                           sampling_params: types.SamplingParams) -> types.SampleResponse:
        ...


class Env(Protocol):
    async def initial_observation(self) -> list[int]:
        """Prompt tokens of the first turn."""
        ...

    async def step(self, action: list[int]) -> StepResult:
        """Reward for the sampled tokens; `next_observation` when the episode goes on."""
        ...


class EnvGroupBuilder(Protocol):
    async def make_envs(self) -> Sequence[Env]:
        """Envs of one group: same task, sampled independently."""
        ...

    def logging_tag(self) -> str:
        ...


class RLDataset(Protocol):
    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        ...

    def __len__(self) -> int:
        ...


@dataclass(frozen=True)
class Transition:
    """One turn: what the model saw, what it sampled (with behaviour logprobs and the policy
    version of each token), and the reward it got."""

    observation: list[int]
    action: list[int]
    logprobs: list[float]
    policy_versions: list[int]
    reward: float


@dataclass(frozen=True)
class Trajectory:
    transitions: list[Transition]

    @property
    def total_reward(self) -> float:
        return sum(t.reward for t in self.transitions)

    @property
    def oldest_policy_version(self) -> int:
        """The oldest policy that produced any of its tokens: what staleness is measured on."""
        return min((v for t in self.transitions for v in t.policy_versions), default=0)


@dataclass(frozen=True)
class TrajectoryGroup:
    """The trajectories of one env group, and the batch they were sampled for."""

    trajectories: list[Trajectory]
    batch_index: int
    tag: str = ""

    @property
    def rewards(self) -> list[float]:
        return [t.total_reward for t in self.trajectories]

    @property
    def oldest_policy_version(self) -> int:
        return min(t.oldest_policy_version for t in self.trajectories)

    def add_rewards(self, extra: Sequence[float]) -> TrajectoryGroup:
        """A copy with `extra[i]` added to trajectory i's last turn: how a reward model's scores
        join the environment's rewards."""
        if len(extra) != len(self.trajectories):
            raise ValueError(f"extra: {len(extra)} rewards for {len(self.trajectories)} "
                             "trajectories")
        return replace(self, trajectories=[
            Trajectory([*t.transitions[:-1],
                        replace(t.transitions[-1], reward=t.transitions[-1].reward + r)])
            for t, r in zip(self.trajectories, extra, strict=True)])


@dataclass(frozen=True)
class SavedPolicy:
    """A policy version the learner saved for samplers: its adapter folder, and the logprobs of
    the probe tokens that the sampler must reproduce to show it loaded these weights."""

    adapter_dir: Path
    policy_version: int
    probe_logprobs: list[float]


# A policy version that only goes up, shared by the side that advances it and the sides that
# wait for it (anyio's memory streams share one state object between their two ends in the
# same way: neither end imports or holds the other).
class LatestVersion:
    """The newest policy version reached so far (-1: none yet). `advance` moves it up (never
    down); `wait_for(v)` returns once it is >= v."""

    def __init__(self, value: int = -1) -> None:
        self._value = value
        self._changed = anyio.Event()

    @property
    def value(self) -> int:
        return self._value

    def advance(self, value: int) -> None:
        if value <= self._value:
            return
        self._value = value
        # An anyio.Event fires once: every waiter wakes, and the next wait gets a fresh one.
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, value: int) -> None:
        while self._value < value:
            await self._changed.wait()

    def __repr__(self) -> str:
        return f"LatestVersion({self._value})"
