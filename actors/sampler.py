"""SamplerActor: rolls out env groups through vLLM and loads each new policy version.

`rollout` is concurrent (many groups in flight; the engine batches them). `load_weights` is an
ordered control message: it pushes the version to the engine, checks it arrived (probe logprobs
against the learner's), and only then lets rollouts that wait for that version start.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from mint_rl import types
from mint_rl.rl.rollout import rollout_group
from mint_rl.rl.types import EnvGroupBuilder, TrajectoryGroup
from mint_rl.runtime import Actor, endpoint


class SamplerActor(Actor):
    def __init__(self, base_model: str, params: types.SamplingParams, engine_config=None) -> None:
        self.base_model = base_model
        self.params = params
        self.engine_config = engine_config
        self.version = -1  # nothing loaded yet
        self._version_changed = anyio.Event()
        self.tokens_sampled = 0

    async def setup(self) -> None:
        from mint_rl.sampler import SamplerWeights, running_engine

        # A run numbers policy versions from 0. An engine already running in this process (a
        # second run in a notebook, a test session) is reset and reused instead of restarted;
        # one this actor starts, it also shuts down.
        self._owns_engine = running_engine(self.base_model) is None
        # Starting vLLM takes a while and blocks: keep the event loop free meanwhile.
        self.weights = await self.ctx.run_blocking(SamplerWeights, self.base_model,
                                                   self.engine_config)
        if not self._owns_engine:
            await self.ctx.run_blocking(self.weights.engine.reset)
        self._probe = await self.ctx.run_blocking(self.weights.probe_tokens)
        self.client = None

    @endpoint
    async def probe_tokens(self) -> list[int]:
        return self._probe

    @endpoint
    async def load_weights(self, adapter_dir: str | Path, version: int,
                           expected_probe_logprobs: list[float] | None) -> float:
        """Serves `version` from now on; returns the seconds the push took."""
        from mint_rl.sampler import SamplingClient

        seconds = await self.ctx.run_blocking(self.weights.load, adapter_dir, version,
                                              expected_probe_logprobs)
        self.client = await self.ctx.run_blocking(
            lambda: SamplingClient(self.base_model, adapter_dir, version,
                                   engine_config=self.engine_config)
        )
        self.version = version
        self._version_changed.set()
        self._version_changed = anyio.Event()
        return seconds

    @endpoint(concurrent=True)
    async def rollout(self, builder: EnvGroupBuilder, batch_index: int,
                      min_version: int) -> TrajectoryGroup:
        """Rolls out one group with a policy no older than `min_version` (waits for it)."""
        while self.version < min_version or self.client is None:
            await self._version_changed.wait()
        group = await rollout_group(builder, self.client, self.params, batch_index)
        self.tokens_sampled += sum(len(t.action) for tr in group.trajectories
                                   for t in tr.transitions)
        return group

    @endpoint(concurrent=True)
    async def sampling_client(self):
        """The client of the version being served (for evaluation)."""
        return self.client

    async def teardown(self) -> None:
        engine = self.weights.engine
        await self.ctx.run_blocking(engine.close if self._owns_engine else engine.reset)

    @endpoint(concurrent=True)
    async def stats(self) -> dict[str, float]:
        return {"version": self.version, "tokens_sampled": self.tokens_sampled}
