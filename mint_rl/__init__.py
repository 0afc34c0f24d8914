"""mint_rl: async, actor-based RL post-training with the MinT / Tinker training API.

`import mint_rl as mint` runs code written for MinT / Tinker on this machine.
"""

from mint_rl import types
from mint_rl.client import ServiceClient, TrainingClient
from mint_rl.errors import (
    BadRequestError,
    ConflictError,
    InvalidInputError,
    MintError,
    MissingLossInputError,
    NotFoundError,
    TinkerError,
)
from mint_rl.futures import APIFuture
from mint_rl.learner.engine import LearnerSettings
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

__version__ = "0.1.0"


def __getattr__(name: str):
    # The sampler pulls in vLLM; import it only when asked for.
    if name == "SamplingClient":
        from mint_rl.sampler.sampling_client import SamplingClient

        return SamplingClient
    raise AttributeError(name)


__all__ = [
    "APIFuture", "AdamParams", "BadRequestError", "ConflictError", "Datum",
    "ForwardBackwardOutput", "InvalidInputError", "LearnerSettings", "LoraConfig", "MintError",
    "MissingLossInputError", "ModelInput", "NotFoundError", "SampleResponse", "SamplingClient",
    "SamplingParams", "ServiceClient", "TensorData", "TinkerError", "TrainingClient", "types",
]
