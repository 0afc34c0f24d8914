"""The sampler: vLLM serving policy versions with behaviour logprobs and per-token version stamps.

Public API: `SamplingClient` (MinT/Tinker surface; `SamplingClient.load` puts a saved policy
version into an engine), `SamplerEngines` (who owns the engines: a run's, or `IN_PROCESS`, the
in-process API's), `get_engine`, `EngineConfig`, `chat_prompt`, `close_all`. See
docs/sampling.md.
"""

from mint_rl.sampler.chat import chat_prompt
from mint_rl.sampler.config import EngineConfig
from mint_rl.sampler.engine import IN_PROCESS, SamplerEngines, close_all, get_engine
from mint_rl.sampler.sampling_client import SamplingClient
from mint_rl.sampler.weight_sync import PROBE_TEXT

__all__ = [
    "IN_PROCESS",
    "PROBE_TEXT",
    "EngineConfig",
    "SamplerEngines",
    "SamplingClient",
    "chat_prompt",
    "close_all",
    "get_engine",
]
