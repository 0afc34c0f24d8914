"""The learner's side: loading a saved policy version into this process's sampler engine.

    from mint_rl.sampler import SamplerWeights
    weights = SamplerWeights(base_model)
    probe = weights.probe_tokens()                   # fixed tokens, BOS + PROBE_TEXT
    expected = learner_logprobs(probe)               # len(probe) - 1 floats:
                                                     # expected[i] = log p(probe[i+1] | probe[:i+1])
    client = weights.load(adapter_dir, policy_version, expected)  # serving it on return
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mint_rl.sampler.config import EngineConfig
from mint_rl.sampler.engine import SamplerEngine, get_engine
from mint_rl.sampler.sampling_client import SamplingClient


class SamplerWeights:
    """Loads saved policy versions (PEFT adapter folders) into the sampler engine of
    `base_model`."""

    def __init__(self, base_model: str, engine_config: EngineConfig | None = None) -> None:
        self.base_model = base_model
        self._config = engine_config
        self._engine: SamplerEngine | None = None

    @property
    def engine(self) -> SamplerEngine:
        if self._engine is None or self._engine.closed:
            self._engine = get_engine(self.base_model, self._config)
        return self._engine

    def probe_tokens(self) -> list[int]:
        """Tokens whose next-token logprobs (probe[1:] given each prefix) `load` checks."""
        return self.engine.probe_tokens()

    def load(
        self, adapter_dir: str | Path | None, policy_version: int,
        expected_probe_logprobs: Sequence[float] | None = None, timeout: float | None = 120.0,
    ) -> SamplingClient:
        """Makes `policy_version` the served policy; returns the client that samples it.

        With `expected_probe_logprobs`, also checks the served weights against them and raises
        WeightSyncError on a mismatch (the loaded weights are then not to be trusted).
        """
        engine = self.engine
        engine.run(engine.load(adapter_dir, policy_version, expected_probe_logprobs), timeout)
        return SamplingClient.of_loaded(engine, adapter_dir, policy_version)
