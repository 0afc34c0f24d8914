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

Extension points (docs/composition.md): `stages` run on every sampled group, `compute_advantages`
replaces the advantage step, and several samplers (each with its own vLLM engine) share the
prompt stream: each group goes to the sampler with the fewest groups in flight.

Faults: a sampler that crashes (its engine died, its env raised or hung) is restarted by the
runtime and the current weights are loaded into it; its groups in flight are sampled again,
once: on another sampler while it restarts, if there is one, else on it once it is back. A
learner that fails during a step leaves its weights at the last completed step: the run
checkpoints them and stops with LearnerFailedError.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from mint_rl.actors.learner import LearnerActor
from mint_rl.actors.sampler import SamplerActor, SamplerActorClient
from mint_rl.errors import LearnerFailedError
from mint_rl.rl.data import TrainingBatch
from mint_rl.rl.types import EnvGroupBuilder, RLDataset, Sampler, SavedPolicy, TrajectoryGroup
from mint_rl.runtime import ActorCrashedError, ChannelReceiver, ChannelSender, channel
from mint_rl.terminal import StartupTimeline

GroupStage = Callable[[TrajectoryGroup], Awaitable[TrajectoryGroup | None]]
"""Runs on each sampled group before advantages; returns it (changed or not), or None to drop it."""
ComputeAdvantages = Callable[[list[TrajectoryGroup]], Awaitable[TrainingBatch]]
"""A batch of groups -> the datums to train on (with advantages) and metrics."""
Evaluate = Callable[[Sampler, int], Awaitable[dict[str, float]]]
"""(a sampler of the current policy, step) -> metrics such as eval/accuracy."""


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
    """What the live view shows; updated by the loops as they go."""

    learner_policy_version: int = 0
    sampler_policy_version: int = -1  # what every serving sampler serves (not restarting ones)
    step: int = 0
    stopped_early: bool = False  # a stop was requested (Ctrl-C): the run ends at a step boundary
    groups_dropped_stale: int = 0
    groups_filtered: int = 0
    groups_resampled: int = 0  # sampled again after their sampler crashed
    groups_in_flight: int = 0
    queue_depth: int = 0
    last_metrics: dict[str, Any] = field(default_factory=dict)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def set_sampler_policy_version(self, policy_version: int) -> None:
        self.sampler_policy_version = policy_version
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_sampler_policy_version(self, policy_version: int) -> None:
        while self.sampler_policy_version < policy_version:
            await self._changed.wait()


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
    samplers: Sequence[SamplerActor]
    learner: LearnerActor
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
        if not self.samplers:
            raise ValueError("samplers: at least one sampler actor is needed")
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
        self._in_flight = [0] * len(self.samplers)  # groups in flight per sampler
        self._restoring: set[int] = set()  # crashed samplers not yet serving again
        self._restored = anyio.Event()  # set (and replaced) whenever one serves again
        self._restarts = [0] * len(self.samplers)  # crashes seen per sampler
        self._last_crash: list[BaseException | None] = [None] * len(self.samplers)
        self._served = [-1] * len(self.samplers)  # the newest version loaded into each sampler
        self._sampled = [[0, 0] for _ in self.samplers]  # groups, tokens since the last step
        self._sampled_since = time.perf_counter()
        self._load_times: dict[str, float] = {}
        self._probe: list[int] = []
        self._latest_saved: SavedPolicy | None = None  # the newest version sent to samplers
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
        self._sampled_since = time.perf_counter()
        async with anyio.create_task_group() as tg:
            self._tg = tg
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
            metrics.update(self._load_metrics())
            metrics.update(self._sampler_metrics())
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
        self._probe = await self.samplers[0].probe_tokens()
        saved = await self.learner.save_weights_for_sampler(self._probe)
        await self._load_everywhere(saved)
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
        await self.state.wait_sampler_policy_version(self.state.learner_policy_version)
        sampler = self.samplers[self._least_busy_sampler()]  # one that serves, if any does
        client = SamplerActorClient(sampler, self.state.sampler_policy_version)
        return await self.evaluate(client, step)

    async def finish(self) -> None:
        """The samplers end serving the final policy (also for whoever samples after the run),
        which is evaluated once more."""
        await self.state.wait_sampler_policy_version(self.state.learner_policy_version)
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
            "groups/resampled": state.groups_resampled,
            "queue/rollouts": state.queue_depth,
            "queue/in_flight": state.groups_in_flight,
        }

    def _sampler_metrics(self) -> dict[str, float]:
        """Per sampler i, since the previous step's metrics: the groups it finished, the tokens
        it generated and their rate over the wall time; the newest policy version loaded into
        it, how often it crashed (restarted) in this run, and whether it serves now (0 while it
        restarts). One sampler has them too."""
        now = time.perf_counter()
        seconds = max(now - self._sampled_since, 1e-9)
        metrics: dict[str, float] = {}
        for i, (groups, tokens) in enumerate(self._sampled):
            metrics[f"sampler/{i}/groups"] = groups
            metrics[f"sampler/{i}/tokens"] = tokens
            metrics[f"sampler/{i}/tokens_per_s"] = tokens / seconds
            metrics[f"sampler/{i}/policy_version"] = self._served[i]
            metrics[f"sampler/{i}/restarts"] = self._restarts[i]
            metrics[f"sampler/{i}/serving"] = float(i not in self._restoring)
        self._sampled = [[0, 0] for _ in self.samplers]
        self._sampled_since = now
        return metrics

    def _load_metrics(self) -> dict[str, float]:
        return {
            # The latest load that finished (it overlaps the next step when K >= 1).
            "time/load_weights": self._load_times.get("total", 0.0),
            "time/load_weights_engine": self._load_times.get("engine", 0.0),
        }

    # ------------------------------------------------------------------ the sampling side

    async def sample_batches(self) -> None:
        k = self.config.max_steps_off_policy
        for b in range(self.config.start_step, self.config.steps):
            # Pacing: batch b may only be sampled by a policy at most K versions behind b.
            await self.state.wait_sampler_policy_version(b - k)
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
        """One group: sampled by the least busy sampler, passed through the stages, queued."""
        group: TrajectoryGroup | None = await self._sample_group(
            builder, batch_index, min_policy_version, self._sampling_seed(batch_index, group_index))
        self._mark("first group sampled")
        for stage in self.stages:
            if group is None:
                break
            group = await stage(group)
        if group is None:
            self.state.groups_filtered += 1
        await self._group_send.send((builder, group_index, group))

    async def _sample_group(self, builder: EnvGroupBuilder, batch_index: int,
                            min_policy_version: int, seed: int | None) -> TrajectoryGroup:
        """Samples on the least busy sampler. If the sampler crashes meanwhile, the runtime
        restarts it and the current weights are loaded into it (`_restore`); the group is
        sampled again (with the same seed) on the least busy sampler that is not restarting,
        or on the restarted one once it serves. The runtime gives up, stopping the run, after
        a few crashes."""
        while True:
            i = self._least_busy_sampler()
            self._in_flight[i] += 1
            self.state.groups_in_flight += 1
            try:
                group = await self.samplers[i].rollout(builder, batch_index, min_policy_version,
                                                       seed)
            except ActorCrashedError as e:
                self.state.groups_resampled += 1
                self._restore(i, e)
                continue
            finally:
                self._in_flight[i] -= 1
                self.state.groups_in_flight -= 1
            self._sampled[i][0] += 1
            self._sampled[i][1] += sum(len(t.action) for tr in group.trajectories
                                       for t in tr.transitions)
            return group

    def _least_busy_sampler(self) -> int:
        """The sampler with the fewest groups in flight, skipping restarting ones (unless all
        are: a group sent to a restarting sampler waits until it serves again)."""
        everyone = range(len(self.samplers))
        ready = [i for i in everyone if i not in self._restoring] or everyone
        return min(ready, key=self._in_flight.__getitem__)

    def _restore(self, i: int, crash: ActorCrashedError) -> None:
        """Sampler `i` crashed; the runtime restarts it. The newest weights are loaded into the
        new instance in the background; until that is done, dispatch skips sampler `i` and new
        versions are served without it, so its groups go to the other samplers at once."""
        self._count_crash(i, crash)
        if i in self._restoring:
            return  # another of its groups (or a load) saw the same crash first
        self._restoring.add(i)
        assert self._tg is not None
        self._tg.start_soon(self._restore_weights, i)

    def _count_crash(self, i: int, crash: ActorCrashedError) -> None:
        # Every caller in flight at one crash gets an error with the same cause.
        if crash.cause is not self._last_crash[i]:
            self._last_crash[i] = crash.cause
            self._restarts[i] += 1

    async def _restore_weights(self, i: int) -> None:
        """Loads the newest saved version into the restarted sampler `i` (again if it crashes
        meanwhile, and again if a newer version was saved during the load); then it serves."""
        while True:
            saved = self._latest_saved
            assert saved is not None
            try:
                await self.samplers[i].load_weights(saved)
            except ActorCrashedError as e:
                self._count_crash(i, e)
                continue
            self._served[i] = max(self._served[i], saved.policy_version)
            if saved is self._latest_saved:
                break
        self._restoring.discard(i)
        self._restored.set()
        self._restored = anyio.Event()

    async def _load_into(self, i: int) -> float:
        """Loads the newest saved version into serving sampler `i` (a no-op where it is served
        already); the load checks it arrived (probe). If the sampler crashes, its restore takes
        over and 0 is returned."""
        saved = self._latest_saved
        assert saved is not None
        try:
            seconds = await self.samplers[i].load_weights(saved)
        except ActorCrashedError as e:
            self._restore(i, e)
            return 0.0
        self._served[i] = max(self._served[i], saved.policy_version)
        return seconds

    async def load_weights(self) -> None:
        async for saved in self._saved_receive:
            await self._load_everywhere(saved)

    async def _load_everywhere(self, saved: SavedPolicy) -> None:
        """Loads one saved policy into every serving sampler at once; then it is the served
        version. A restarting sampler is not waited for (its restore loads the newest version)
        unless no sampler serves it."""
        engine_seconds: list[float] = []

        async def load(i: int) -> None:
            engine_seconds.append(await self._load_into(i))

        self._latest_saved = saved
        with timed(self._load_times, "total"):
            async with anyio.create_task_group() as tg:
                for i in range(len(self.samplers)):
                    if i not in self._restoring:
                        tg.start_soon(load, i)
            while not any(v >= saved.policy_version for v in self._served):
                await self._restored.wait()  # every sampler crashed: wait for one to be back
        self._load_times["engine"] = max(engine_seconds, default=0.0)
        self.state.set_sampler_policy_version(saved.policy_version)
