"""mint_rl: async, actor-based RL post-training with the MinT / Tinker training API.

`import mint_rl as mint` runs code written for MinT / Tinker on this machine. Names are imported
on first use, so `import mint_rl.runtime` does not pay for torch, and the sampler (vLLM) loads
only when a SamplingClient is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors (never run)
    from mint_rl import types
    from mint_rl.client import APIFuture, ServiceClient, TrainingClient
    from mint_rl.errors import (
        BadRequestError,
        ConflictError,
        CorruptCheckpointError,
        InvalidInputError,
        MintError,
        MissingLossInputError,
        NotFoundError,
        TinkerError,
        WeightSyncError,
    )
    from mint_rl.learner.engine import LearnerSettings
    from mint_rl.sampler.sampling_client import SamplingClient
    from mint_rl.types import (
        AdamParams,
        Datum,
        ForwardBackwardOutput,
        LoraConfig,
        ModelInput,
        SampleResponse,
        SamplingParams,
        TensorData,
    )

_LAZY = {
    "types": "mint_rl.types",
    "ServiceClient": "mint_rl.client",
    "TrainingClient": "mint_rl.client",
    "SamplingClient": "mint_rl.sampler.sampling_client",
    "APIFuture": "mint_rl.client",
    "LearnerSettings": "mint_rl.learner.engine",
    "BadRequestError": "mint_rl.errors",
    "ConflictError": "mint_rl.errors",
    "InvalidInputError": "mint_rl.errors",
    "MintError": "mint_rl.errors",
    "MissingLossInputError": "mint_rl.errors",
    "NotFoundError": "mint_rl.errors",
    "CorruptCheckpointError": "mint_rl.errors",
    "TinkerError": "mint_rl.errors",
    "WeightSyncError": "mint_rl.errors",
    "AdamParams": "mint_rl.types",
    "Datum": "mint_rl.types",
    "ForwardBackwardOutput": "mint_rl.types",
    "LoraConfig": "mint_rl.types",
    "ModelInput": "mint_rl.types",
    "SampleResponse": "mint_rl.types",
    "SamplingParams": "mint_rl.types",
    "TensorData": "mint_rl.types",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mint_rl' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if name == "types" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


# Spelled out (not sorted(_LAZY)) so type checkers can read it; the assert keeps the two in step.
__all__ = [
    "APIFuture", "AdamParams", "BadRequestError", "ConflictError", "CorruptCheckpointError",
    "Datum", "ForwardBackwardOutput", "InvalidInputError", "LearnerSettings", "LoraConfig",
    "MintError", "MissingLossInputError", "ModelInput", "NotFoundError", "SampleResponse",
    "SamplingClient", "SamplingParams", "ServiceClient", "TensorData", "TinkerError",
    "TrainingClient", "WeightSyncError", "types"
]
assert __all__ == sorted(_LAZY)
