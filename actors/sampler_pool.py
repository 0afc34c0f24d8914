"""SamplerPool: the run's sampler actors behind one call each.

    pool = SamplerPool(samplers, served)
    await pool.load(saved)                       # into every serving sampler; then served >= it
    group = await pool.sample_group(builder, batch_index, min_policy_version, seed)
    tg.start_soon(pool.restore_crashed)          # for the run's lifetime

Dispatch: a group goes to the sampler with the fewest groups in flight. A sampler that crashes
(its engine died, its env raised or hung) is restarted by the runtime; the pool then loads the
newest weights into the new instance in the background, and until that is done sends it nothing
and does not wait for it, so its groups go to the others at once (or wait for it, if it is the
only one). `served` is the version every serving sampler serves: the pool advances it, the
pipeline's loops wait on it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mint_rl import types
from mint_rl.rl.types import EnvGroupBuilder, LatestVersion, Sampler, SavedPolicy, TrajectoryGroup
from mint_rl.runtime import ActorCrashedError


class PolicySampler(Protocol):
    """What the pool asks of a sampler: `SamplerActor` (actors/sampler.py), or a test's
    stand-in."""

    async def probe_tokens(self) -> list[int]: ...

    async def load_weights(self, saved: SavedPolicy) -> float: ...

    async def rollout(self, builder: EnvGroupBuilder, batch_index: int,
                      min_policy_version: int, seed: int | None = None) -> TrajectoryGroup: ...

    async def sample(self, prompt: types.ModelInput, num_samples: int,
                     params: types.SamplingParams) -> types.SampleResponse: ...


class SamplerActorClient:
    """Samples through a sampler actor: its engine and the version it serves, wherever it runs
    (in this process, or a Ray actor on another node). The run's evaluation samples with it;
    it is a `mint_rl.rl.types.Sampler`, as a `SamplingClient` is."""

    def __init__(self, sampler: PolicySampler, policy_version: int) -> None:
        self.sampler = sampler
        self.policy_version = policy_version

    async def sample_async(self, prompt: types.ModelInput, num_samples: int,
                           sampling_params: types.SamplingParams) -> types.SampleResponse:
        return await self.sampler.sample(prompt, num_samples, sampling_params)


class SamplerPool:
    def __init__(self, samplers: Sequence[PolicySampler], served: LatestVersion) -> None:
        if not samplers:
            raise ValueError("samplers: at least one sampler actor is needed")
        self.samplers = list(samplers)
        self.served = served
        self.groups_resampled = 0  # sampled again after their sampler crashed
        n = len(self.samplers)
        self._in_flight = [0] * n  # groups in flight per sampler
        self._versions = [-1] * n  # the newest version loaded into each sampler
        self._newest = LatestVersion()  # the newest version any sampler serves
        self._restoring: set[int] = set()  # crashed samplers not yet serving again
        self._restarts = [0] * n  # crashes seen per sampler
        self._last_crash: list[BaseException | None] = [None] * n
        self._sampled = [[0, 0] for _ in range(n)]  # groups, tokens since the last metrics
        self._sampled_since = time.perf_counter()
        self._load_times: dict[str, float] = {}
        self._latest_saved: SavedPolicy | None = None  # the newest version handed to `load`
        crashed: tuple[MemoryObjectSendStream[int], MemoryObjectReceiveStream[int]] = (
            anyio.create_memory_object_stream[int](math.inf))
        self._crashed_send, self._crashed_receive = crashed

    async def probe_tokens(self) -> list[int]:
        """The tokens whose logprobs show which weights a sampler serves (the same for all)."""
        return await self.samplers[0].probe_tokens()

    # ------------------------------------------------------------------ weights

    async def load(self, saved: SavedPolicy) -> None:
        """Loads one saved policy into every serving sampler at once (each load is checked on
        the probe); then `served` advances to it. A restarting sampler is not waited for (its
        restore loads the newest version) unless no sampler serves the version yet."""
        engine_seconds: list[float] = []

        async def load_into(i: int) -> None:
            with self._crash_restores(i):
                engine_seconds.append(await self.samplers[i].load_weights(saved))
                self._loaded(i, saved.policy_version)

        self._latest_saved = saved
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(len(self.samplers)):
                if i not in self._restoring:
                    tg.start_soon(load_into, i)
        await self._newest.wait_for(saved.policy_version)  # all had crashed: one is back
        self._load_times = {"total": time.perf_counter() - start,
                            "engine": max(engine_seconds, default=0.0)}
        self.served.advance(saved.policy_version)

    def _loaded(self, i: int, policy_version: int) -> None:
        self._versions[i] = max(self._versions[i], policy_version)
        self._newest.advance(policy_version)

    async def restore_crashed(self) -> None:
        """Restores each crashed sampler as its crash is seen; runs for the run's lifetime."""
        async with anyio.create_task_group() as tg:
            async for i in self._crashed_receive:
                tg.start_soon(self._restore, i)

    async def _restore(self, i: int) -> None:
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
            self._loaded(i, saved.policy_version)
            if saved is self._latest_saved:
                break
        self._restoring.discard(i)

    @contextlib.contextmanager
    def _crash_restores(self, i: int) -> Iterator[None]:
        """A crash of sampler `i` inside the block is counted and its restore queued; the
        caller goes on (the block's work is lost)."""
        try:
            yield
        except ActorCrashedError as e:
            self._count_crash(i, e)
            if i not in self._restoring:  # else another call saw the same crash first
                self._restoring.add(i)
                self._crashed_send.send_nowait(i)

    def _count_crash(self, i: int, crash: ActorCrashedError) -> None:
        # Every caller in flight at one crash gets an error with the same cause.
        if crash.cause is not self._last_crash[i]:
            self._last_crash[i] = crash.cause
            self._restarts[i] += 1

    # ------------------------------------------------------------------ sampling

    async def sample_group(self, builder: EnvGroupBuilder, batch_index: int,
                           min_policy_version: int, seed: int | None) -> TrajectoryGroup:
        """One group from the least busy sampler, by a policy version >= `min_policy_version`.
        If that sampler crashes meanwhile, the group is sampled again (same seed) on the least
        busy one that is not restarting, or on the restarted one once it serves. The runtime
        gives up, stopping the run, after a few crashes."""
        while True:
            i = self._least_busy()
            self._in_flight[i] += 1
            try:
                with self._crash_restores(i):
                    group = await self.samplers[i].rollout(builder, batch_index,
                                                           min_policy_version, seed)
                    self._sampled[i][0] += 1
                    self._sampled[i][1] += sum(len(t.action) for tr in group.trajectories
                                               for t in tr.transitions)
                    return group
            finally:
                self._in_flight[i] -= 1
            self.groups_resampled += 1

    def client(self) -> Sampler:
        """Samples from the served version on the least busy sampler (the run's evaluation)."""
        return SamplerActorClient(self.samplers[self._least_busy()], self.served.value)

    def _least_busy(self) -> int:
        """The sampler with the fewest groups in flight, skipping restarting ones (unless all
        are: a group sent to a restarting sampler waits until it serves again)."""
        everyone = range(len(self.samplers))
        ready = [i for i in everyone if i not in self._restoring] or everyone
        return min(ready, key=self._in_flight.__getitem__)

    # ------------------------------------------------------------------ metrics

    def reset_metrics(self) -> None:
        """Starts the per-sampler counts and rates afresh (the run's start)."""
        self._sampled = [[0, 0] for _ in self.samplers]
        self._sampled_since = time.perf_counter()

    def metrics(self) -> dict[str, float]:
        """Per sampler i, since the previous call: the groups it finished, the tokens it
        generated and their rate over the wall time; the newest policy version loaded into it,
        how often it crashed (restarted) in this run, and whether it serves now (0 while it
        restarts). Plus the time the latest finished load took (it overlaps the next step when
        K >= 1)."""
        seconds = max(time.perf_counter() - self._sampled_since, 1e-9)
        metrics: dict[str, float] = {
            "time/load_weights": self._load_times.get("total", 0.0),
            "time/load_weights_engine": self._load_times.get("engine", 0.0),
        }
        for i, (groups, tokens) in enumerate(self._sampled):
            metrics[f"sampler/{i}/groups"] = groups
            metrics[f"sampler/{i}/tokens"] = tokens
            metrics[f"sampler/{i}/tokens_per_s"] = tokens / seconds
            metrics[f"sampler/{i}/policy_version"] = self._versions[i]
            metrics[f"sampler/{i}/restarts"] = self._restarts[i]
            metrics[f"sampler/{i}/serving"] = float(i not in self._restoring)
        self.reset_metrics()
        return metrics
