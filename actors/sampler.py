"""SamplerActor: rolls out env groups through vLLM and loads each saved policy version.

`rollout` is concurrent (many groups in flight; the engine batches them). `load_weights` is an
ordered control message: it loads the saved version into the engine, checks it arrived (probe
logprobs against the learner's), and only then lets rollouts that wait for that version start.

Each sampler actor of a run has its own vLLM engine (`EngineConfig.slot`: its own engine
process and cores), held by the `SamplerEngines` the run hands it. A rollout that fails (the
engine process died, the env raised or timed out) crashes the actor; the runtime's supervision
builds a new one from the same arguments, so from the same `SamplerEngines`: it takes its slot's
engine over (a new one if it died) without forgetting the run's policy versions, and serves
nothing until the pool loads the current weights into it again (SamplerPool.restore_crashed; the
group is sampled again).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from mint_rl import types
from mint_rl.errors import InvalidInputError
from mint_rl.rl.rollout import rollout_group
from mint_rl.rl.types import EnvGroupBuilder, LatestVersion, SavedPolicy, TrajectoryGroup
from mint_rl.runtime import Actor, endpoint

if TYPE_CHECKING:  # vLLM-heavy: imported when the sampler starts, not with this module
    from mint_rl.sampler import EngineConfig, SamplingClient
    from mint_rl.sampler.engine import SamplerEngine, SamplerEngines


T = TypeVar("T")


class SamplerActor(Actor):
    def __init__(self, base_model: str, params: types.SamplingParams,
                 engine_config: EngineConfig | None = None,
                 env_timeout_s: float | None = None, *,
                 engines: SamplerEngines | None = None) -> None:
        self.base_model = base_model
        self.params = params
        self.engine_config = engine_config
        self.engines = engines  # None: the in-process API's (mint_rl.sampler.IN_PROCESS)
        self.env_timeout_s = env_timeout_s  # an env.step (the reward) taking longer fails
        self.served = LatestVersion()  # -1: nothing loaded yet; rollouts wait on it
        self._client: SamplingClient | None = None
        self._engine: SamplerEngine | None = None  # set once setup has one
        self._crashed = False

    async def setup(self) -> None:
        from mint_rl.sampler import IN_PROCESS

        # The engine is taken once, here, and held: every load and rollout below uses this
        # one. A run numbers policy versions from 0. An engine already running in this sampler's
        # slot (a second run in a notebook, a test session) is reset and reused instead of
        # restarted (a start costs 20-60 s); one this actor starts, it also shuts down. A
        # restarted actor keeps the run's versions: it resets nothing.
        # Starting vLLM takes a while and blocks: keep the event loop free meanwhile.
        engines = self.engines if self.engines is not None else IN_PROCESS
        self._engine, self._owns_engine = await self.ctx.run_blocking(
            engines.acquire, self.base_model, self.engine_config)
        engine = self._engine
        if not self._owns_engine and self.ctx.restarts == 0:
            await self.ctx.run_blocking(engine.reset)
        self._probe = await self.ctx.run_blocking(engine.probe_tokens)

    @endpoint
    async def probe_tokens(self) -> list[int]:
        """The tokens whose logprobs show which weights an engine serves (BOS + PROBE_TEXT)."""
        return self._probe

    @endpoint
    async def load_weights(self, saved: SavedPolicy) -> float:
        """Serves `saved` from now on; returns the seconds the engine took to load it. A version
        older than the one served is ignored: the served version never goes back."""
        from mint_rl.sampler import SamplingClient

        if saved.policy_version <= self.served.value:
            return 0.0
        assert self._engine is not None
        start = time.perf_counter()
        self._client = await self._failing(self.ctx.run_blocking(
            SamplingClient.load, self._engine, saved.adapter_dir, saved.policy_version,
            saved.probe_logprobs))
        seconds = time.perf_counter() - start
        self.served.advance(saved.policy_version)
        return seconds

    @endpoint(concurrent=True)
    async def rollout(self, builder: EnvGroupBuilder, batch_index: int,
                      min_policy_version: int, seed: int | None = None) -> TrajectoryGroup:
        """Rolls out one group with a policy version >= `min_policy_version` (waits for it);
        `seed` makes its samples reproducible."""
        await self.served.wait_for(max(min_policy_version, 0))
        assert self._client is not None
        return await self._failing(rollout_group(builder, self._client, self.params,
                                                 batch_index, seed, self.env_timeout_s))

    async def _failing(self, work: Awaitable[T]) -> T:
        """Awaits `work`; if it fails, this instance is about to crash (see teardown)."""
        try:
            return await work
        except Exception:
            self._crashed = True
            raise

    @endpoint(concurrent=True, raises=(InvalidInputError,))
    async def sample(self, prompt: types.ModelInput, num_samples: int,
                     params: types.SamplingParams) -> types.SampleResponse:
        """Samples from the version being served (the run's evaluation: `SamplerPool.client`)."""
        await self.served.wait_for(0)
        assert self._client is not None
        try:
            return await self._client.sample_async(prompt, num_samples, params)
        except InvalidInputError:
            raise  # the caller's mistake: this actor lives on
        except Exception:
            self._crashed = True
            raise

    async def teardown(self) -> None:
        if self._engine is None:  # setup failed before an engine was up
            return
        if self._crashed:  # the restarted actor takes the engine over (acquire replaces it
            return         # if it died): stopping or resetting it would lose the run's versions
        engine = self._engine
        if self._owns_engine:
            await self.ctx.run_blocking(engine.close)
        elif not engine.closed:  # its owner (another actor) may have closed it
            await self.ctx.run_blocking(engine.reset)
