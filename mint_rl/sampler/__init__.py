"""The sampler: vLLM serving policy versions with behaviour logprobs and per-token version stamps.

Public API: `SamplingClient` (MinT/Tinker surface), `SamplerWeights` (the learner's hook to load a
saved policy version), `EngineConfig`, `chat_prompt`, `close_all`. See docs/sampling.md.
"""

from mint_rl.sampler.chat import chat_prompt
from mint_rl.sampler.config import EngineConfig
from mint_rl.sampler.engine import close_all, get_engine, running_engine
from mint_rl.sampler.probe import PROBE_TEXT
from mint_rl.sampler.sampler_weights import SamplerWeights
from mint_rl.sampler.sampling_client import SamplingClient

__all__ = [
    "PROBE_TEXT",
    "EngineConfig",
    "SamplerWeights",
    "SamplingClient",
    "chat_prompt",
    "close_all",
    "get_engine",
    "running_engine",
]
