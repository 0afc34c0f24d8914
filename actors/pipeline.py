"""The RL pipeline, wired in one place: sampler -> advantage -> learner -> new weights -> sampler.

    sample_batches:  for each batch b, once the sampler serves a version >= b - K, start its
                     group rollouts; finished groups go into a bounded channel.
    train_step:      collect fresh groups from the channel (a group older than K versions is
                     dropped and re-sampled), compute advantages, train, publish the new
                     weights; log metrics.
    push_weights:    load each published version into the sampler, in order, while training
                     goes on (with K >= 1 the push is off the learner's critical path).

K = `max_steps_off_policy`. K = 0 is synchronous on-policy training: batch b is sampled only by
version b. With K >= 1 the sampler runs up to K batches ahead while the learner trains. The bound
is strict: sampling is paced so groups are fresh by construction, and every group is checked
again before it reaches forward_backward. Tokens produced while weights changed mid-sequence
carry the newer version and their own behaviour logprobs, so the importance ratio stays exact.

To compose differently (several samplers, a reward model or a filter between sampler and
advantage), copy `run_pipeline` and add a stage: the actors are ordinary classes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from mint_rl.rl.types import RLDataset, TrajectoryGroup
from mint_rl.runtime import ActorHandle, channel
from mint_rl.terminal import StartupTimeline

EvalFn = Callable[[Any, int], Awaitable[dict[str, float]]]  # (sampling client, step) -> metrics


@dataclass(frozen=True)
class PipelineConfig:
    steps: int
    groups_per_batch: int
    max_steps_off_policy: int = 0
    start_step: int = 0
    eval_every: int = 0  # 0 = never
    save_every: int = 0  # 0 = never

    def __post_init__(self) -> None:
        for name in ("steps", "groups_per_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_steps_off_policy < 0:
            raise ValueError("max_steps_off_policy: must be >= 0")


@dataclass
class PipelineState:
    """What the live view shows; updated by the loops as they go."""

    learner_version: int = 0
    sampler_version: int = -1
    step: int = 0
    groups_dropped_stale: int = 0
    groups_in_flight: int = 0
    queue_depth: int = 0
    last_metrics: dict[str, Any] = field(default_factory=dict)
    version_changed: anyio.Event = field(default_factory=anyio.Event)

    def set_sampler_version(self, version: int) -> None:
        self.sampler_version = version
        self.version_changed.set()
        self.version_changed = anyio.Event()

    async def wait_sampler_version(self, version: int) -> None:
        while self.sampler_version < version:
            await self.version_changed.wait()


@contextlib.contextmanager
def timed(metrics: dict[str, Any], key: str) -> Iterator[None]:
    """Adds the seconds the block took to `metrics[key]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics[key] = time.perf_counter() - start


async def run_pipeline(
    cfg: PipelineConfig,
    dataset: RLDataset,
    sampler: ActorHandle,
    advantage: ActorHandle,
    learner: ActorHandle,
    *,
    on_step: Callable[[dict[str, Any]], None] = lambda m: None,
    evaluate: EvalFn | None = None,
    on_checkpoint: Callable[[int, str], None] = lambda step, path: None,
    state: PipelineState | None = None,
    timeline: StartupTimeline | None = None,
) -> PipelineState:
    """Trains cfg.steps - cfg.start_step steps. Returns the final state."""
    run = _PipelineRun(cfg, dataset, sampler, advantage, learner, on_step, evaluate,
                       on_checkpoint, state or PipelineState(), timeline)
    return await run.run()


class _PipelineRun:
    """One run of the pipeline: its actors, channels and state, and the steps of the algorithm
    as methods. `run` reads as the whole loop."""

    def __init__(self, cfg: PipelineConfig, dataset: RLDataset, sampler: ActorHandle,
                 advantage: ActorHandle, learner: ActorHandle,
                 on_step: Callable[[dict[str, Any]], None], evaluate: EvalFn | None,
                 on_checkpoint: Callable[[int, str], None], state: PipelineState,
                 timeline: StartupTimeline | None) -> None:
        self.cfg, self.dataset, self.state = cfg, dataset, state
        self.sampler, self.advantage, self.learner = sampler, advantage, learner
        self.on_step, self.evaluate, self.on_checkpoint = on_step, evaluate, on_checkpoint
        self.mark = timeline.mark if timeline is not None else lambda phase: None
        self.k = cfg.max_steps_off_policy
        self.rollouts_send, self.rollouts_recv = channel(cfg.groups_per_batch * (self.k + 1),
                                                         "rollouts")
        # One version waits while one loads: the learner is at most two versions ahead of the
        # sampler, and pacing plus the staleness check keep every trained group within K.
        self.exports_send, self.exports_recv = channel(1, "exports")
        self.push_times: dict[str, float] = {}
        self.probe: list[int] = []
        self.tg: TaskGroup | None = None

    async def run(self) -> PipelineState:
        await self.publish_initial_weights()
        async with anyio.create_task_group() as tg:
            self.tg = tg
            tg.start_soon(self.push_weights)
            tg.start_soon(self.sample_batches)
            for step in range(self.cfg.start_step, self.cfg.steps):
                await self.train_step(step)
            await self.finish()
            tg.cancel_scope.cancel()  # rollouts started for batches past the last step
        return self.state

    # ------------------------------------------------------------------ the training side

    async def train_step(self, step: int) -> None:
        state = self.state
        state.step = step
        metrics: dict[str, Any] = {"step": step}
        with timed(metrics, "time/step"):
            if self.evaluate is not None and self.cfg.eval_every \
                    and step % self.cfg.eval_every == 0:
                with timed(metrics, "time/eval"):
                    await state.wait_sampler_version(state.learner_version)  # this step's
                    metrics.update(await self.evaluate_policy(step))
            with timed(metrics, "time/sample_wait"):
                groups = await self.collect_fresh_groups()
            staleness = [state.learner_version - tr.oldest_version
                         for g in groups for tr in g.trajectories]
            batch = await self.advantage.call("build", groups)
            with timed(metrics, "time/train"):
                # Always a step, even with no datums (every group constant): versions then
                # count steps, which the pacing relies on; the weights simply stay the same.
                metrics.update(await self.learner.call("train", batch.datums))
            with timed(metrics, "time/export"):
                await self.publish_weights()
            metrics.update(batch.metrics)
            metrics.update({
                "staleness/max": max(staleness),
                "staleness/mean": sum(staleness) / len(staleness),
                "groups/dropped_stale": state.groups_dropped_stale,
                "queue/rollouts": state.queue_depth,
                "queue/in_flight": state.groups_in_flight,
                # The latest push that finished (it overlaps the next step when K >= 1).
                "time/push": self.push_times.get("total", 0.0),
                "time/push_engine": self.push_times.get("engine", 0.0),
            })
        if self.cfg.save_every and (step + 1) % self.cfg.save_every == 0:
            path = await self.learner.call("save_state", f"step-{step + 1:06d}")
            self.on_checkpoint(step + 1, path)
        state.last_metrics = metrics
        if step == self.cfg.start_step:
            self.mark(f"step {step} done")
        self.on_step(metrics)

    async def collect_fresh_groups(self) -> list[TrajectoryGroup]:
        """A batch of groups, none sampled by a policy more than K versions old."""
        state = self.state
        groups: list[TrajectoryGroup] = []
        while len(groups) < self.cfg.groups_per_batch:
            builder, group = await self.rollouts_recv.receive()
            state.queue_depth = self.rollouts_recv.statistics().depth
            if state.learner_version - group.oldest_version > self.k:
                # Defence in depth: pacing makes this rare, but it is never trained on.
                state.groups_dropped_stale += 1
                assert self.tg is not None
                self.tg.start_soon(self.rollout, builder, group.batch_index,
                                   state.learner_version - self.k)
                continue
            groups.append(group)
        return groups

    async def publish_initial_weights(self) -> None:
        """The learner's starting weights, loaded and checked by the sampler before anything."""
        self.probe = await self.sampler.call("probe_tokens")
        export = await self.learner.call("export", self.probe)
        await self.sampler.call("load_weights", export.adapter_dir, export.version,
                                export.probe_logprobs)
        self.mark(f"sampler serves policy v{export.version} (checked against the learner)")
        self.state.set_sampler_version(export.version)
        self.state.learner_version = export.version

    async def publish_weights(self) -> None:
        """Exports the new weights and queues them for the sampler (push_weights loads them)."""
        export = await self.learner.call("export", self.probe)
        self.state.learner_version = export.version
        await self.exports_send.send(export)

    async def evaluate_policy(self, step: int) -> dict[str, float]:
        assert self.evaluate is not None
        client = await self.sampler.call("sampling_client")
        return await self.evaluate(client, step)

    async def finish(self) -> None:
        """The sampler ends serving the final policy (also for whoever samples after the run),
        which is evaluated once more."""
        await self.state.wait_sampler_version(self.state.learner_version)
        if self.evaluate is not None and self.cfg.eval_every:
            final = {"step": self.cfg.steps, **await self.evaluate_policy(self.cfg.steps)}
            self.state.last_metrics = final
            self.on_step(final)

    # ------------------------------------------------------------------ the sampling side

    async def sample_batches(self) -> None:
        assert self.tg is not None
        for b in range(self.cfg.start_step, self.cfg.steps):
            # Pacing: batch b may only be sampled by a policy at most K versions behind b.
            await self.state.wait_sampler_version(b - self.k)
            self.mark(f"step {self.cfg.start_step} starts sampling")
            for builder in self.dataset.get_batch(b):
                self.tg.start_soon(self.rollout, builder, b, b - self.k)

    async def rollout(self, builder: Any, batch_index: int, min_version: int) -> None:
        self.state.groups_in_flight += 1
        try:
            group = await self.sampler.call("rollout", builder, batch_index, min_version)
            self.mark("first group sampled")
            await self.rollouts_send.send((builder, group))
        finally:
            self.state.groups_in_flight -= 1

    async def push_weights(self) -> None:
        async for export in self.exports_recv:
            with timed(self.push_times, "total"):
                self.push_times["engine"] = await self.sampler.call(
                    "load_weights", export.adapter_dir, export.version, export.probe_logprobs)
            self.state.set_sampler_version(export.version)
