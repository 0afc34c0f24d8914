"""The RL pipeline: sampler(s) -> [stages] -> advantages -> learner -> new weights -> sampler(s).

    sample_batches:  for each batch b, once the samplers serve policy version >= b - K, start its
                     group rollouts; each finished group passes the stages (a reward model, a
                     filter) and goes into a bounded channel.
    train_step:      collect fresh groups from the channel (a group older than K versions is
                     dropped and re-sampled), compute advantages, train, save the new weights.
    load_weights:    load each saved policy version into every sampler, in order, while training
                     goes on (with K >= 1 the load is off the learner's critical path).

K = `max_steps_off_policy`. K = 0 is synchronous on-policy training: batch b is sampled only by
policy version b. With K >= 1 the samplers run up to K batches ahead while the learner trains. The
bound is strict: sampling is paced so groups are fresh by construction, and every group is checked
again before it is trained on. Tokens produced while weights changed mid-sequence carry the newer
version and their own behaviour logprobs, so the importance ratio stays exact.

The two loops share one state object, `PipelineState`: the training loop advances the learner's
version, the `SamplerPool` (actors/sampler_pool.py: several samplers behind one call, each with
its own vLLM engine; dispatch, loading, restore after a crash, per-sampler metrics) advances the
served one, and pacing waits on it.

Extension points (docs/composition.md): `stages` run on every sampled group, `compute_advantages`
replaces the advantage step, and several samplers share the prompt stream.

Faults: a sampler that crashes is restarted (the pool loads the current weights into it) and its
groups in flight are sampled again. A learner that fails during a step leaves its weights at the
last completed step: the run checkpoints them and stops with LearnerFailedError.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from mint_rl import types
from mint_rl.actors.sampler_pool import PolicySampler, SamplerPool
from mint_rl.errors import LearnerFailedError
from mint_rl.rl.data import TrainingBatch
from mint_rl.rl.types import (
    EnvGroupBuilder,
    LatestVersion,
    RLDataset,
    Sampler,
    SavedPolicy,
    TrajectoryGroup,
)
from mint_rl.runtime import ChannelReceiver, ChannelSender, channel
from mint_rl.terminal import StartupTimeline

GroupStage = Callable[[TrajectoryGroup], Awaitable[TrajectoryGroup | None]]
"""Runs on each sampled group before advantages; returns it (changed or not), or None to drop it."""
ComputeAdvantages = Callable[[list[TrajectoryGroup]], Awaitable[TrainingBatch]]
"""A batch of groups -> the datums to train on (with advantages) and metrics."""
Evaluate = Callable[[Sampler, int], Awaitable[dict[str, float]]]
"""(a sampler of the current policy, step) -> metrics such as eval/accuracy."""


class PolicyLearner(Protocol):
    """What the pipeline asks of a learner: `LearnerActor` (actors/learner.py), or a test's
    stand-in."""

    async def train(self, datums: list[types.Datum]) -> dict[str, float]: ...

    async def save_weights_for_sampler(self, probe_tokens: list[int]) -> SavedPolicy: ...

    async def save_state(self, name: str) -> str: ...


@dataclass(frozen=True)
class PipelineConfig:
    steps: int
    groups_per_batch: int
    max_steps_off_policy: int = 0
    start_step: int = 0
    eval_every: int = 0  # 0 = never
    save_every: int = 0  # 0 = never
    seed: int | None = None
    """Sampling seeds derive from (seed, batch, group, sample): a resumed run samples what an
    uninterrupted one would. None: unseeded."""

    def __post_init__(self) -> None:
        for name in ("steps", "groups_per_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_steps_off_policy < 0:
            raise ValueError("max_steps_off_policy: must be >= 0")


@dataclass
class PipelineState:
    """What both loops and the live view share; updated by the loops as they go."""

    learner_policy_version: int = 0  # the newest version the learner saved
    served: LatestVersion = field(default_factory=LatestVersion)
    """The version every serving sampler serves (restarting ones aside): the pool advances it,
    pacing and evaluation wait on it."""
    step: int = 0
    stopped_early: bool = False  # a stop was requested (Ctrl-C): the run ends at a step boundary
    groups_dropped_stale: int = 0
    groups_filtered: int = 0
    groups_in_flight: int = 0
    queue_depth: int = 0
    last_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def sampler_policy_version(self) -> int:
        return self.served.value


@contextlib.contextmanager
def timed(metrics: dict[str, Any], key: str) -> Iterator[None]:
    """Sets `metrics[key]` to the seconds the block took."""
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics[key] = time.perf_counter() - start


def _ignore(*args: Any) -> None:
    pass


@dataclass
class RLPipeline:
    """One run of the pipeline over running actors. `run` reads as the whole loop; each step of
    the algorithm is a method named for it."""

    config: PipelineConfig
    dataset: RLDataset
    samplers: Sequence[PolicySampler]
    learner: PolicyLearner
    compute_advantages: ComputeAdvantages
    stages: Sequence[GroupStage] = ()
    evaluate: Evaluate | None = None
    on_step: Callable[[dict[str, Any]], None] = _ignore
    on_groups: Callable[[int, list[TrajectoryGroup]], None] = _ignore
    """(step, the groups it trains): what the run shows of the model's samples."""
    on_checkpoint: Callable[[int, str, list[int]], None] = _ignore
    """(steps completed, learner state path, batches sampled but not trained)."""
    state: PipelineState = field(default_factory=PipelineState)
    timeline: StartupTimeline | None = None

    def __post_init__(self) -> None:
        self.pool = SamplerPool(self.samplers, self.state.served)
        k = self.config.max_steps_off_policy
        self._group_send: ChannelSender[Any]
        self._group_receive: ChannelReceiver[Any]
        self._group_send, self._group_receive = channel(
            self.config.groups_per_batch * (k + 1), "rollouts")
        # One version waits while one loads: the learner is at most two versions ahead of the
        # samplers, and pacing plus the staleness check keep every trained group within K.
        self._saved_send: ChannelSender[SavedPolicy]
        self._saved_receive: ChannelReceiver[SavedPolicy]
        self._saved_send, self._saved_receive = channel(1, "saved weights")
        self._probe: list[int] = []
        self._tg: TaskGroup | None = None
        self._next_batch = self.config.start_step  # the first batch not yet sent to sampling
        self._stop_requested = False
        self._checkpointed_step = self.config.start_step

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def request_stop(self) -> None:
        """Ends the run after the step in progress, with a checkpoint (what Ctrl-C does)."""
        self._stop_requested = True

    def _mark(self, phase: str) -> None:
        if self.timeline is not None:
            self.timeline.mark(phase)

    async def run(self) -> PipelineState:
        """Trains steps `start_step` .. `steps - 1`; returns the final state."""
        await self.load_initial_weights()
        self.pool.reset_metrics()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self.pool.restore_crashed)
            tg.start_soon(self.load_weights)
            tg.start_soon(self.sample_batches)
            for step in range(self.config.start_step, self.config.steps):
                await self.train_step(step)
                if self._stop_requested:
                    await self.save_checkpoint(step + 1)
                    self.state.stopped_early = True
                    break
            else:
                await self.finish()
            tg.cancel_scope.cancel()  # rollouts started for batches past the last step
        return self.state

    # ------------------------------------------------------------------ the training side

    async def train_step(self, step: int) -> None:
        self.state.step = step
        metrics: dict[str, Any] = {"step": step}
        with timed(metrics, "time/step"):
            if self._evaluates_at(step):
                with timed(metrics, "time/eval"):
                    metrics.update(await self.evaluate_policy(step))
            with timed(metrics, "time/sample_wait"):
                groups = await self.collect_fresh_groups()
            self.on_groups(step, groups)
            metrics.update(self._pipeline_metrics(groups))
            batch = await self.compute_advantages(groups)
            with timed(metrics, "time/train"):
                # Always a step, even with no datums (every group constant): versions then
                # count steps, which the pacing relies on; the weights simply stay the same.
                metrics.update(await self.train_or_checkpoint(step, batch))
            with timed(metrics, "time/save_weights"):
                await self.save_weights()
            metrics.update(batch.metrics)
            metrics.update(self.pool.metrics())
        if self.config.save_every and (step + 1) % self.config.save_every == 0:
            await self.save_checkpoint(step + 1)
        self.state.last_metrics = metrics
        if step == self.config.start_step:
            self._mark(f"step {step} done")
        self.on_step(metrics)

    async def train_or_checkpoint(self, step: int, batch: TrainingBatch) -> dict[str, float]:
        """One learner step. If it fails, the learner still holds the weights of the steps
        before: they are checkpointed, and the run stops with a message saying so."""
        try:
            return await self.learner.train(batch.datums)
        except Exception as e:
            await self.save_checkpoint(step)
            raise LearnerFailedError(
                f"the learner failed at step {step} ({type(e).__name__}: {e}); the run was "
                f"checkpointed after {step} steps: run the same command again to resume "
                "there") from e

    async def collect_fresh_groups(self) -> list[TrajectoryGroup]:
        """A batch of groups, none sampled by a policy more than K versions old. A group a stage
        dropped counts towards the batch (the batch is smaller, never late)."""
        state, k = self.state, self.config.max_steps_off_policy
        groups: list[TrajectoryGroup] = []
        received = 0
        while received < self.config.groups_per_batch:
            builder, group_index, group = await self._group_receive.receive()
            state.queue_depth = self._group_receive.statistics().depth
            if group is None:
                received += 1
                continue
            if state.learner_policy_version - group.oldest_policy_version > k:
                # Defence in depth: pacing makes this rare, but it is never trained on.
                state.groups_dropped_stale += 1
                self._start_rollout(builder, group.batch_index, group_index,
                                    state.learner_policy_version - k)
                continue
            groups.append(group)
            received += 1
        return groups

    async def load_initial_weights(self) -> None:
        """The learner's starting weights, loaded and checked by every sampler before anything."""
        self._probe = await self.pool.probe_tokens()
        saved = await self.learner.save_weights_for_sampler(self._probe)
        await self.pool.load(saved)
        self._mark(f"sampler serves policy v{saved.policy_version} (checked against the learner)")
        self.state.learner_policy_version = saved.policy_version

    async def save_weights(self) -> None:
        """Saves the new weights for the samplers and queues them (load_weights loads them)."""
        saved = await self.learner.save_weights_for_sampler(self._probe)
        self.state.learner_policy_version = saved.policy_version
        await self._saved_send.send(saved)

    async def save_checkpoint(self, steps_done: int) -> None:
        """The learner's state after `steps_done` steps, and the batches to sample again."""
        if self._checkpointed_step == steps_done:
            return
        path = await self.learner.save_state(f"step-{steps_done:06d}")
        self._checkpointed_step = steps_done
        self.on_checkpoint(steps_done, path, list(range(steps_done, self._next_batch)))

    async def evaluate_policy(self, step: int) -> dict[str, float]:
        assert self.evaluate is not None
        await self.state.served.wait_for(self.state.learner_policy_version)
        return await self.evaluate(self.pool.client(), step)

    async def finish(self) -> None:
        """The samplers end serving the final policy (also for whoever samples after the run),
        which is evaluated once more."""
        await self.state.served.wait_for(self.state.learner_policy_version)
        if self.evaluate is not None and self.config.eval_every:
            final = {"step": self.config.steps, **await self.evaluate_policy(self.config.steps)}
            self.state.last_metrics = final
            self.on_step(final)

    def _evaluates_at(self, step: int) -> bool:
        return (self.evaluate is not None and self.config.eval_every > 0
                and step % self.config.eval_every == 0)

    def _pipeline_metrics(self, groups: list[TrajectoryGroup]) -> dict[str, float]:
        """Staleness of the batch about to be trained (in policy versions) and queue sizes."""
        state = self.state
        staleness = [state.learner_policy_version - tr.oldest_policy_version
                     for g in groups for tr in g.trajectories] or [0]
        batches = [g.batch_index for g in groups] or [-1]
        return {
            # Which batches the trained groups came from: at K = 0 exactly this step's.
            "groups/trained": len(groups),
            "groups/oldest_batch": min(batches),
            "groups/newest_batch": max(batches),
            "staleness/max": max(staleness),
            "staleness/mean": sum(staleness) / len(staleness),
            "groups/dropped_stale": state.groups_dropped_stale,
            "groups/filtered": state.groups_filtered,
            "groups/resampled": self.pool.groups_resampled,
            "queue/rollouts": state.queue_depth,
            "queue/in_flight": state.groups_in_flight,
        }

    # ------------------------------------------------------------------ the sampling side

    async def sample_batches(self) -> None:
        k = self.config.max_steps_off_policy
        for b in range(self.config.start_step, self.config.steps):
            # Pacing: batch b may only be sampled by a policy at most K versions behind b.
            await self.state.served.wait_for(b - k)
            self._mark(f"step {self.config.start_step} starts sampling")
            for j, builder in enumerate(self.dataset.get_batch(b)):
                self._start_rollout(builder, b, j, b - k)
            self._next_batch = b + 1

    def _start_rollout(self, builder: EnvGroupBuilder, batch_index: int, group_index: int,
                       min_policy_version: int) -> None:
        assert self._tg is not None
        self._tg.start_soon(self.rollout, builder, batch_index, group_index, min_policy_version)

    def _sampling_seed(self, batch_index: int, group_index: int) -> int | None:
        if self.config.seed is None:
            return None
        return random.Random(f"{self.config.seed}-{batch_index}-{group_index}").getrandbits(31)

    async def rollout(self, builder: EnvGroupBuilder, batch_index: int, group_index: int,
                      min_policy_version: int) -> None:
        """One group: sampled by the pool, passed through the stages, queued."""
        self.state.groups_in_flight += 1
        try:
            group: TrajectoryGroup | None = await self.pool.sample_group(
                builder, batch_index, min_policy_version,
                self._sampling_seed(batch_index, group_index))
        finally:
            self.state.groups_in_flight -= 1
        self._mark("first group sampled")
        for stage in self.stages:
            if group is None:
                break
            group = await stage(group)
        if group is None:
            self.state.groups_filtered += 1
        await self._group_send.send((builder, group_index, group))

    async def load_weights(self) -> None:
        async for saved in self._saved_receive:
            await self.pool.load(saved)
