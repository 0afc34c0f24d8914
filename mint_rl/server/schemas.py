"""JSON request bodies, as the tinker SDK sends them (pydantic dumps of its request types).

Only the fields the server uses are declared. Extra keys are ignored: the SDK always adds a
`type` literal and fields this server has no use for, and newer SDKs add more.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class CreateSession(Body):
    tags: list[str] = Field(default_factory=list)
    user_metadata: dict[str, Any] | None = None
    sdk_version: str | None = None


class SessionRef(Body):
    session_id: str


class LoraSettings(Body):
    rank: int = 32
    seed: int | None = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True


class OptimizerSettings(Body):
    type: str = "adamw"


class CreateModel(Body):
    session_id: str
    model_seq_id: int
    base_model: str
    lora_config: LoraSettings | None = None
    optimizer_config: OptimizerSettings = Field(default_factory=OptimizerSettings)
    user_metadata: dict[str, Any] | None = None


class ModelRef(Body):
    model_id: str


class AdamSettings(Body):
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


class OptimStep(Body):
    model_id: str
    seq_id: int | None = None
    adam_params: AdamSettings | None = None
    optimizer_params: dict[str, Any] | None = None  # other optimizer families: refused


class SaveWeights(Body):
    model_id: str
    seq_id: int | None = None
    path: str | None = None  # the checkpoint's name
    overwrite: bool = False
    ttl_seconds: int | None = None
    user_metadata: dict[str, Any] | None = None


class SaveWeightsForSampler(Body):
    model_id: str
    seq_id: int | None = None
    path: str | None = None  # named: a checkpoint; None: a sampling session
    sampling_session_seq_id: int | None = None
    kind: str = "snapshot"
    ttl_seconds: int | None = None


class LoadWeights(Body):
    path: str
    optimizer: bool = False
    # Either an existing model (model_id + seq_id) or a new one (session_id + model_seq_id).
    model_id: str | None = None
    seq_id: int | None = None
    session_id: str | None = None
    model_seq_id: int | None = None
    base_model: str | None = None
    user_metadata: dict[str, Any] | None = None  # of the new model's run


class CreateSamplingSession(Body):
    session_id: str
    sampling_session_seq_id: int
    base_model: str | None = None
    model_path: str | None = None


class Chunk(Body):
    type: str = "encoded_text"
    tokens: list[int] | None = None


class Prompt(Body):
    chunks: list[Chunk]


class SamplingSettings(Body):
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | list[int] | None = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0


class Sample(Body):
    prompt: Prompt
    sampling_params: SamplingSettings
    num_samples: int = 1
    sampling_session_id: str | None = None
    seq_id: int | None = None
    base_model: str | None = None
    model_path: str | None = None
    prompt_logprobs: bool | None = None
    topk_prompt_logprobs: int = 0
    topk_sample_logprobs: int = 0
    target_prompt_logprobs: dict[str, Any] | None = None
    prompt_alt_tokens_k: int = 0
    prompt_logprobs_last_n: int | None = None
    record_stability_info: bool | None = None  # record what stable_reinforce reads


class SetTTL(Body):
    ttl_seconds: int | None = None


class WeightsInfo(Body):
    tinker_path: str


class SaveWeightsExternal(Body):
    model_id: str
    seq_id: int | None = None
    path: str  # the checkpoint's name
    ttl_seconds: int | None = None
    age_encryption_recipients: list[str] | None = None


class CancelFuture(Body):
    request_id: str


class RetrieveFuture(Body):
    request_id: str
    allow_metadata_only: bool = False


class FinishReason(Body):
    type: Literal["success", "errored", "interrupted"] | str = "success"


class FinishSession(Body):
    reason: FinishReason | None = None
    detail: str | None = None
