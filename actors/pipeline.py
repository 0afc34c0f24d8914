"""The RL pipeline, wired in one place: sampler -> advantage -> learner -> new weights -> sampler.

    sample_batches:  for each batch b, once the sampler serves a version >= b - K, start its
                     group rollouts; finished groups go into a bounded channel.
    train_loop:      take fresh groups from the channel (a group older than K versions is
                     dropped and re-sampled), build datums, train one step, export the new
                     weights; log metrics.
    push_weights:    load each exported version into the sampler, in order, while the train
                     loop goes on (with K >= 1 the push is off the learner's critical path).

K = `max_steps_off_policy`. K = 0 is synchronous on-policy training: batch b is sampled only by
version b. With K >= 1 the sampler runs up to K batches ahead while the learner trains. The bound
is strict: sampling is paced so groups are fresh by construction, and every group is checked
again before it reaches forward_backward. Tokens produced while weights changed mid-sequence
carry the newer version and their own behaviour logprobs, so the importance ratio stays exact.

To compose differently (several samplers, a reward model or a filter between sampler and
advantage), copy `run_pipeline` and add a stage: the actors are ordinary classes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

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
    state = state or PipelineState()
    mark = timeline.mark if timeline is not None else lambda phase: None
    k = cfg.max_steps_off_policy
    probe = await sampler.call("probe_tokens")
    export = await learner.call("export", probe)
    await sampler.call("load_weights", export.adapter_dir, export.version, export.probe_logprobs)
    mark(f"sampler serves policy v{export.version} (checked against the learner)")
    state.set_sampler_version(export.version)
    state.learner_version = export.version
    rollouts_send, rollouts_recv = channel(cfg.groups_per_batch * (k + 1), "rollouts")
    # One export waits while one loads: the learner is at most two versions ahead of the
    # sampler, and pacing plus the staleness check below keep every trained group within K.
    exports_send, exports_recv = channel(1, "exports")
    push_times: dict[str, float] = {}

    async with anyio.create_task_group() as tg:

        async def push_weights() -> None:
            async for export in exports_recv:
                t_push = time.perf_counter()
                push_times["engine"] = await sampler.call(
                    "load_weights", export.adapter_dir, export.version, export.probe_logprobs)
                push_times["total"] = time.perf_counter() - t_push
                state.set_sampler_version(export.version)

        async def rollout(builder, batch_index: int, min_version: int) -> None:
            state.groups_in_flight += 1
            try:
                group = await sampler.call("rollout", builder, batch_index, min_version)
                mark("first group sampled")
                await rollouts_send.send((builder, group))
            finally:
                state.groups_in_flight -= 1

        async def sample_batches() -> None:
            for b in range(cfg.start_step, cfg.steps):
                # Pacing: batch b may only be sampled by a policy at most K versions behind b.
                await state.wait_sampler_version(b - k)
                mark(f"step {cfg.start_step} starts sampling")
                for builder in dataset.get_batch(b):
                    tg.start_soon(rollout, builder, b, b - k)

        tg.start_soon(push_weights)
        tg.start_soon(sample_batches)
        for step in range(cfg.start_step, cfg.steps):
            state.step = step
            t_step = time.perf_counter()
            metrics: dict[str, Any] = {"step": step}
            if evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0:
                t_eval = time.perf_counter()
                await state.wait_sampler_version(state.learner_version)  # evaluate this step's
                client = await sampler.call("sampling_client")
                metrics.update(await evaluate(client, step))
                metrics["time/eval"] = time.perf_counter() - t_eval

            # Collect a batch of fresh groups.
            t_wait = time.perf_counter()
            groups: list[TrajectoryGroup] = []
            while len(groups) < cfg.groups_per_batch:
                builder, group = await rollouts_recv.receive()
                state.queue_depth = rollouts_recv.statistics().depth
                if state.learner_version - group.oldest_version > k:
                    # Defence in depth: pacing makes this rare, but it is never trained on.
                    state.groups_dropped_stale += 1
                    tg.start_soon(rollout, builder, group.batch_index,
                                  state.learner_version - k)
                    continue
                groups.append(group)
            sample_wait = time.perf_counter() - t_wait

            staleness = [state.learner_version - tr.oldest_version
                         for g in groups for tr in g.trajectories]
            batch = await advantage.call("build", groups)
            t_train = time.perf_counter()
            # Always a step, even with no datums (every group constant): versions then count
            # steps, which the pacing above relies on; the weights simply stay the same.
            metrics.update(await learner.call("train", batch.datums))
            train_time = time.perf_counter() - t_train
            t_export = time.perf_counter()
            export = await learner.call("export", probe)
            state.learner_version = export.version
            await exports_send.send(export)
            export_time = time.perf_counter() - t_export

            metrics.update(batch.metrics)
            metrics.update({
                "staleness/max": max(staleness),
                "staleness/mean": sum(staleness) / len(staleness),
                "groups/dropped_stale": state.groups_dropped_stale,
                "queue/rollouts": state.queue_depth,
                "queue/in_flight": state.groups_in_flight,
                "time/sample_wait": sample_wait,
                "time/train": train_time,
                "time/export": export_time,
                # The latest push that finished (it overlaps the next step when K >= 1).
                "time/push": push_times.get("total", 0.0),
                "time/push_engine": push_times.get("engine", 0.0),
                "time/step": time.perf_counter() - t_step,
            })
            if cfg.save_every and (step + 1) % cfg.save_every == 0:
                path = await learner.call("save_state", f"step-{step + 1:06d}")
                on_checkpoint(step + 1, path)
            state.last_metrics = metrics
            if step == cfg.start_step:
                mark(f"step {step} done")
            on_step(metrics)

        # The sampler ends serving the final policy (also for whoever samples after the run).
        await state.wait_sampler_version(state.learner_version)
        if evaluate is not None and cfg.eval_every:
            client = await sampler.call("sampling_client")
            final = {"step": cfg.steps, **await evaluate(client, cfg.steps)}
            state.last_metrics = final
            on_step(final)
        tg.cancel_scope.cancel()  # rollouts started for batches past the last step
    return state
