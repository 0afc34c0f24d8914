"""`SamplingClient`: the MinT / Tinker sampling surface over a shared vLLM engine.

A client is an immutable snapshot of one policy version: clients made before a training step keep
sampling that step's weights, clients made after it sample the new ones (see weight_sync.py for
how each strategy honours this).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from mint_rl.errors import InvalidInputError
from mint_rl.models import model_config
from mint_rl.sampler.config import EngineConfig
from mint_rl.sampler.engine import SamplerEngine, get_engine
from mint_rl.sampler.vllm_engine import top_k
from mint_rl.stability import RECORDED
from mint_rl.types import (
    ModelInput,
    SampledSequence,
    SampleResponse,
    SamplingParams,
    new_sequence_id,
)


class SamplingClient:
    """Samples from `base_model` + the LoRA adapter at `model_path` (None: the base weights).

    `policy_version` labels the tokens this client produces (`SampledSequence.policy_versions`);
    None reuses the version the folder was loaded or added under, or numbers it (negative =
    untracked). The engine is shared by every client of `base_model` in the process: when
    another folder already holds that number (another learner at the same step), the engine
    serves this one under a private number and its tokens still carry `policy_version`.
    `record_stability_info`: every sample records its stability info (the
    stable_reinforce loss reads it; mint_rl/stability.py), unless a `sample` call says otherwise.
    """

    def __init__(
        self, base_model: str | None = None, model_path: str | Path | None = None,
        policy_version: int | None = None, *, engine_config: EngineConfig | None = None,
        record_stability_info: bool = False,
    ) -> None:
        if base_model is None:
            if model_path is None:
                raise InvalidInputError("base_model", "give base_model or model_path")
            base_model = _adapter_base_model(model_path)
        engine = get_engine(base_model, engine_config)
        served_as = engine.add(model_path, policy_version, exclusive=False)
        self._attach(engine, base_model, model_path, served_as,
                     served_as if policy_version is None else policy_version,
                     record_stability_info)

    def _attach(self, engine: SamplerEngine, base_model: str, model_path: str | Path | None,
                served_as: int, policy_version: int, record_stability_info: bool) -> None:
        self._base_model = base_model
        self._model_path = str(model_path) if model_path is not None else None
        self._engine = engine
        self._served_as = served_as  # the number the engine serves this folder under
        self.policy_version = policy_version
        self.record_stability_info = bool(record_stability_info)

    @classmethod
    def load(
        cls, engine: SamplerEngine, adapter_dir: str | Path | None, policy_version: int,
        expected_probe_logprobs: Sequence[float] | None = None, timeout: float | None = 120.0,
    ) -> SamplingClient:
        """Loads the saved policy `adapter_dir` (a PEFT folder; None: the base weights) into
        `engine` as `policy_version`, makes it the served policy and returns its client: the
        learner's side of a weight sync (a sampler actor calls it for each saved version).

        With `expected_probe_logprobs` (the learner's logprobs of `engine.probe_tokens()[1:]`,
        each given its prefix), also checks the served weights against them and raises
        WeightSyncError on a mismatch (the loaded weights are then not to be trusted).
        """
        engine.run(engine.load(adapter_dir, policy_version, expected_probe_logprobs), timeout)
        client = cls.__new__(cls)  # no second entry in the engine's version store
        client._attach(engine, engine.base_model, adapter_dir, policy_version, policy_version,
                       False)
        return client

    def probe_tokens(self) -> list[int]:
        """The fixed tokens `check_weights` scores (BOS + a probe text)."""
        return self._engine.probe_tokens()

    def check_weights(self, expected_probe_logprobs: Sequence[float],
                      timeout: float | None = 120.0) -> None:
        """Raises WeightSyncError unless this client's weights give the learner's logprobs of
        the probe sequence (`SamplerEngine.probe_tokens`). Waits its turn like any request, so
        other clients' requests in flight keep their weights."""
        self._engine.run(self._engine.check_arrival(self._served_as, expected_probe_logprobs),
                         timeout)

    def __reduce__(self) -> tuple[Any, ...]:
        # Another process gets its own engine and serves the same folder under the same version
        # (and records there: stability info stays in the process that sampled).
        return (_restore, (self._base_model, self._model_path, self.policy_version,
                           self.record_stability_info))

    def __repr__(self) -> str:
        return (f"SamplingClient(base_model={self._base_model!r}, model_path={self._model_path!r}, "
                f"policy_version={self.policy_version})")

    # ------------------------------------------------------------------ Tinker surface

    def sample(
        self, prompt: ModelInput, num_samples: int, sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False, topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0, *,
        record_stability_info: bool | None = None, sequence_ids: Sequence[str] | None = None,
    ) -> Future[SampleResponse]:
        """Starts sampling and returns at once; `.result()` gives the SampleResponse.

        Every sequence gets a fresh `sequence_id`; `sequence_ids` fixes them instead (one per
        sample, non-empty, distinct: the server answers with the ids before sampling starts).
        `topk_sample_logprobs` k > 0: each sequence's `topk_logprobs`, the k most likely
        (token, logprob) at every generated position. `record_stability_info` None: the
        client's setting.
        """
        ids = _sequence_ids(sequence_ids, num_samples)
        record = (self.record_stability_info if record_stability_info is None
                  else bool(record_stability_info))
        top = _check_top_k("topk_sample_logprobs", topk_sample_logprobs,
                           self._engine.config.max_logprobs)
        coro = self._sample(prompt, num_samples, sampling_params, include_prompt_logprobs,
                            topk_prompt_logprobs, ids, record, top)
        return self._engine.submit(coro)

    async def sample_async(
        self, prompt: ModelInput, num_samples: int, sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False, topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0, *,
        record_stability_info: bool | None = None, sequence_ids: Sequence[str] | None = None,
    ) -> SampleResponse:
        """Same as `sample`, awaited once, from any asyncio loop."""
        return await asyncio.wrap_future(self.sample(
            prompt, num_samples, sampling_params, include_prompt_logprobs, topk_prompt_logprobs,
            topk_sample_logprobs, record_stability_info=record_stability_info,
            sequence_ids=sequence_ids))

    def compute_logprobs(self, prompt: ModelInput) -> Future[list[float | None]]:
        """Logprob of each prompt token given the ones before it; the first entry is None."""
        tokens = _prompt_tokens(prompt, self._engine)
        return self._engine.submit(self._engine.prompt_logprobs(tokens, self._served_as))

    async def compute_logprobs_async(self, prompt: ModelInput) -> list[float | None]:
        return await asyncio.wrap_future(self.compute_logprobs(prompt))

    def get_tokenizer(self) -> Any:
        return self._engine.tokenizer

    def get_base_model(self) -> str:
        return self._base_model

    # ------------------------------------------------------------------ internals

    async def _sample(
        self, prompt: ModelInput, num_samples: int, params: SamplingParams,
        include_prompt_logprobs: bool, topk_prompt_logprobs: int,
        sequence_ids: list[str] | None, record: bool, topk_sample_logprobs: int = 0,
    ) -> SampleResponse:
        tokens = _prompt_tokens(prompt, self._engine)
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise InvalidInputError("num_samples", f"must be a positive int, got {num_samples!r}")
        if not isinstance(params, SamplingParams):
            raise InvalidInputError("sampling_params", "must be a mint_rl.types.SamplingParams")
        params = dataclasses.replace(params)  # its checks again: it may have been altered
        if not isinstance(topk_prompt_logprobs, int) or topk_prompt_logprobs < 0:
            raise InvalidInputError("topk_prompt_logprobs", "must be an int >= 0")
        if topk_prompt_logprobs > self._engine.config.max_logprobs:
            raise InvalidInputError(
                "topk_prompt_logprobs", f"at most {self._engine.config.max_logprobs}")
        want_prompt = include_prompt_logprobs or topk_prompt_logprobs > 0
        max_len = self._engine.config.max_model_len or 1 << 30
        room = max_len - len(tokens)
        if room < 1:
            raise InvalidInputError("prompt", f"{len(tokens)} tokens leave no room (max {max_len})")
        if params.max_tokens is not None and params.max_tokens > room:
            raise InvalidInputError(
                "max_tokens", f"{params.max_tokens} + {len(tokens)} prompt tokens > {max_len}")
        jobs = [
            self._engine.generate(tokens, _vllm_params(
                params, i, room, topk_prompt_logprobs if want_prompt and i == 0 else None,
                topk_sample_logprobs), self._served_as)
            for i in range(num_samples)
        ]
        gens = await asyncio.gather(*jobs)  # one vLLM request each: the engine batches them
        ids = sequence_ids or [new_sequence_id() for _ in gens]
        response = SampleResponse(sequences=[
            SampledSequence(tokens=g.tokens, logprobs=g.logprobs,
                            stop_reason="length" if g.finish_reason == "length" else "stop",
                            policy_versions=self._labels(g.policy_versions),
                            sequence_id=sequence_id, topk_logprobs=g.sampled_topk)
            for g, sequence_id in zip(gens, ids, strict=True)
        ])
        if record:
            for seq in response.sequences:
                RECORDED.record(seq.sequence_id, tokens, seq.tokens, seq.logprobs)
        if want_prompt:
            steps = gens[0].scored_prompt()
            response.prompt_logprobs = [None, *(
                d[t].logprob for d, t in zip(steps, tokens[1:], strict=True)
            )]
            if topk_prompt_logprobs > 0:
                response.topk_prompt_logprobs = [
                    None, *(top_k(d, topk_prompt_logprobs) for d in steps)]
        return response

    def _labels(self, served_as: list[int]) -> list[int]:
        return [self.policy_version if v == self._served_as else v for v in served_as]


def _restore(base_model: str, model_path: str | None, policy_version: int,
             record_stability_info: bool) -> SamplingClient:
    return SamplingClient(base_model, model_path, policy_version,
                          record_stability_info=record_stability_info)


def _sequence_ids(given: Sequence[str] | None, num_samples: int) -> list[str] | None:
    if given is None:
        return None
    ids = list(given)
    if len(ids) != num_samples:
        raise InvalidInputError("sequence_ids", f"has {len(ids)} ids for {num_samples} samples")
    if not all(isinstance(i, str) and i for i in ids) or len(set(ids)) != len(ids):
        raise InvalidInputError("sequence_ids", "must be distinct non-empty strings")
    return ids


def _prompt_tokens(prompt: ModelInput, engine: SamplerEngine) -> list[int]:
    if not isinstance(prompt, ModelInput):
        raise InvalidInputError("prompt", f"must be a ModelInput, got {type(prompt).__name__}")
    tokens = prompt.to_ints()
    if not tokens:
        raise InvalidInputError("prompt", "is empty")
    # vLLM's own bound (else it raises its own error from inside the engine).
    vocab = max(len(engine.tokenizer),
                int(model_config(engine.vllm.model_dir).get("vocab_size", 0)))
    for j, t in enumerate(tokens):
        if t >= vocab:
            raise InvalidInputError("prompt", f"token id {t} at position {j} is outside the "
                                              f"vocabulary [0, {vocab})")
    return tokens


def _check_top_k(field: str, k: object, most: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= most:
        raise InvalidInputError(field, f"must be an int in [0, {most}], got {k!r}")
    return k


def _vllm_params(
    p: SamplingParams, index: int, room: int, prompt_logprobs: int | None,
    sample_logprobs: int = 0,
) -> Any:
    from vllm import SamplingParams as VllmSamplingParams
    from vllm.sampling_params import RequestOutputKind

    return VllmSamplingParams(
        n=1,
        max_tokens=p.max_tokens if p.max_tokens is not None else room,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k if p.top_k > 0 else 0,
        seed=None if p.seed is None else p.seed + index,  # distinct samples, reproducible
        stop=p.stop_strings() or None,
        detokenize=bool(p.stop_strings()),  # tokens are returned; text only to match stops
        stop_token_ids=p.stop_token_id_list() or None,
        logprobs=sample_logprobs,  # 0: the sampled token's logprob only; k: and the top k
        prompt_logprobs=prompt_logprobs,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def _adapter_base_model(model_path: str | Path) -> str:
    config = Path(model_path) / "adapter_config.json"
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise InvalidInputError("model_path", f"cannot read {config}: {e}") from None
    if not base:
        raise InvalidInputError("base_model", f"not given and {config} does not name one")
    return base
