"""ServiceClient and TrainingClient: the MinT / Tinker training API on a local learner.

Every TrainingClient owns one worker thread; its calls are validated at once (a bad request raises
here and queues nothing), then applied strictly in submission order. Calls return APIFutures, so
`forward_backward` and `optim_step` can be submitted back to back and awaited later, as the
Tinker cookbook does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import uuid
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from mint_rl.errors import InvalidInputError
from mint_rl.learner import checkpoint as ckpt
from mint_rl.learner.base_models import BaseModels
from mint_rl.learner.engine import CustomLossFn, LearnerEngine, LearnerSettings
from mint_rl.learner.inputs import join_2d_outputs, split_2d_targets
from mint_rl.models import DEFAULT_MODEL, resolve_model
from mint_rl.types import (
    AdamParams,
    Datum,
    ForwardBackwardOutput,
    GetInfoResponse,
    GetServerCapabilitiesResponse,
    LoadWeightsResponse,
    LoraConfig,
    ModelData,
    ModelInput,
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    SupportedModel,
)

T = TypeVar("T")


class APIFuture(Generic[T]):
    """Wraps a concurrent.futures.Future so both sync and asyncio code can wait on it."""

    def __init__(self, future: concurrent.futures.Future[T]) -> None:
        self._future = future

    def result(self, timeout: float | None = None) -> T:
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"no result within {timeout} s") from None

    async def result_async(self, timeout: float | None = None) -> T:
        wrapped = asyncio.wrap_future(self._future)
        if timeout is None:
            return await asyncio.shield(wrapped)
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), timeout)
        except TimeoutError:
            raise TimeoutError(f"no result within {timeout} s") from None

    def __await__(self) -> Generator[Any, None, T]:
        return self.result_async().__await__()

    def done(self) -> bool:
        return self._future.done()

    def future(self) -> concurrent.futures.Future[T]:
        return self._future


class ServiceClient:
    """Entry point. Keyword arguments of the hosted service (api_key, base_url, ...) are accepted
    and ignored: everything runs on this machine."""

    def __init__(
        self,
        user_metadata: dict[str, str] | None = None,
        project_id: str | None = None,
        *,
        learner_settings: LearnerSettings | None = None,
        **_hosted_service_options: Any,
    ) -> None:
        self.user_metadata = user_metadata or {}
        self.project_id = project_id
        self.learner_settings = learner_settings or LearnerSettings()
        # The training clients it creates share each base model's frozen weights, and one
        # thread for their torch work.
        self.base_models = BaseModels()
        self.learner_worker = learner_thread(self.learner_settings)

    def get_server_capabilities(self) -> GetServerCapabilitiesResponse:
        return GetServerCapabilitiesResponse([SupportedModel(DEFAULT_MODEL, 8192)])

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
    ) -> TrainingClient:
        lora = LoraConfig(rank=rank, seed=seed, train_mlp=train_mlp, train_attn=train_attn,
                          train_unembed=train_unembed)
        return self.new_training_client(base_model, lora, user_metadata=user_metadata)

    def new_training_client(self, base_model: str, lora: LoraConfig, *,
                            model_dir: Path | None = None, run_id: str | None = None,
                            user_metadata: dict[str, str] | None = None) -> TrainingClient:
        """A training client on this ServiceClient's shared base weights and learner thread.
        `model_dir`: where the weights of `base_model` are (default: resolve_model of it; the
        server passes an alias's folder); `run_id`: the client's id (default: a new one)."""
        engine = LearnerEngine(model_dir or resolve_model(base_model), lora,
                               self.learner_settings, base_models=self.base_models)
        return TrainingClient(engine, base_model=base_model, user_metadata=user_metadata,
                              run_id=run_id, worker=self.learner_worker)

    def close(self) -> None:
        """Waits for the learner work queued on its thread, then stops the thread."""
        self.learner_worker.shutdown(wait=True)

    def create_training_client_from_state(
        self, path: str, base_model: str | None = None, **_: Any
    ) -> TrainingClient:
        """A new client with the weights of a save_state checkpoint and a fresh optimizer."""
        return self._from_state(path, base_model, with_optimizer=False)

    def create_training_client_from_state_with_optimizer(
        self, path: str, base_model: str | None = None, **_: Any
    ) -> TrainingClient:
        """A new client that continues exactly where the checkpoint left off."""
        return self._from_state(path, base_model, with_optimizer=True)

    def _from_state(self, path: str, base_model: str | None, *, with_optimizer: bool):
        folder = ckpt.resolve_path(path)
        meta = ckpt.read_meta(folder)
        lora = LoraConfig(**meta["lora"])
        client = self.create_lora_training_client(
            base_model or meta["base_model"], rank=lora.rank, seed=lora.seed,
            train_mlp=lora.train_mlp, train_attn=lora.train_attn,
            train_unembed=lora.train_unembed,
        )
        load = client.load_state_with_optimizer if with_optimizer else client.load_state
        load(path).result()
        return client

    def create_sampling_client(
        self, model_path: str | None = None, base_model: str | None = None,
        record_stability_info: bool = False, **_: Any
    ):
        """`record_stability_info`: its samples record what stable_reinforce reads."""
        if model_path is None and base_model is None:
            raise InvalidInputError("model_path", "give model_path or base_model")
        from mint_rl.sampler.sampling_client import SamplingClient

        if model_path is not None:
            folder = ckpt.resolve_path(model_path)
            # Without base_model, SamplingClient reads it from adapter_config.json.
            return SamplingClient(base_model=base_model, model_path=str(folder),
                                  record_stability_info=record_stability_info)
        return SamplingClient(base_model=base_model, record_stability_info=record_stability_info)

    # Async forms: single await, as in Tinker.
    async def create_lora_training_client_async(self, *args: Any, **kw: Any) -> TrainingClient:
        import anyio

        return await anyio.to_thread.run_sync(
            lambda: self.create_lora_training_client(*args, **kw)
        )


def learner_thread(settings: LearnerSettings,
                   name: str = "mint-learner") -> concurrent.futures.ThreadPoolExecutor:
    """One thread for the torch work of training clients, pinned as `settings` say.

    The clients of one ServiceClient (and of one server) take turns on one such thread: every
    thread that runs torch keeps a malloc arena of its own with the freed activations (~37 MiB
    per extra SmolLM2 client, measured: bench/bench_server_clients.py), and on a CPU their work
    would contend for the same cores anyway."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name,
                                                 initializer=settings.bind_thread)


class TrainingClient:
    def __init__(
        self,
        engine: LearnerEngine,
        *,
        base_model: str,
        user_metadata: dict[str, str] | None = None,
        run_id: str | None = None,
        worker: concurrent.futures.ThreadPoolExecutor | None = None,
    ) -> None:
        """`worker`: the one-thread executor that runs this client's torch work, shared with
        other clients (`learner_thread`); without it the client starts a thread of its own."""
        self.engine = engine
        self.base_model = base_model
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.user_metadata = user_metadata or {}
        self._owns_worker = worker is None
        self._worker = worker or learner_thread(engine.settings, f"mint-learner-{self.run_id}")
        self._submit_lock = threading.Lock()
        self._last: concurrent.futures.Future[Any] | None = None

    @property
    def policy_version(self) -> int:
        """Optimizer steps taken (as of the calls finished so far): the version of the weights."""
        return self.engine.step

    def _submit(self, fn: Callable[..., T], *args: Any, **kw: Any) -> APIFuture[T]:
        with self._submit_lock:  # submission order == execution order
            self._last = self._worker.submit(fn, *args, **kw)
            return APIFuture(self._last)

    # ----------------------------------------------------------------------------------------
    # training

    def forward(
        self, data: Sequence[Datum], loss_fn: str, loss_fn_config: dict[str, float] | None = None
    ) -> APIFuture[ForwardBackwardOutput]:
        """Loss and logprobs without touching gradients."""
        return self._loss_call(data, loss_fn, loss_fn_config, backward=False)

    def forward_backward(
        self, data: Sequence[Datum], loss_fn: str, loss_fn_config: dict[str, float] | None = None
    ) -> APIFuture[ForwardBackwardOutput]:
        """Adds this batch's gradient to the accumulated one; applied by optim_step."""
        return self._loss_call(data, loss_fn, loss_fn_config, backward=True)

    def _loss_call(self, data: Sequence[Datum], loss_fn: str,
                   loss_fn_config: dict[str, float] | None, *,
                   backward: bool) -> APIFuture[ForwardBackwardOutput]:
        widths: list[int] = []
        if loss_fn == "cross_entropy":  # [N, K] targets (top-k distillation): K datums each
            data, widths = split_2d_targets(data)
        loss, batch = self.engine.prepare(data, loss_fn, backward=backward)
        config = loss.config(loss_fn_config)

        def run() -> ForwardBackwardOutput:
            out = self.engine.forward_backward(batch, loss, config, backward=backward)
            return join_2d_outputs(out, widths) if any(widths) else out

        return self._submit(run)

    def forward_backward_custom(
        self, data: Sequence[Datum], loss_fn: CustomLossFn, **_: Any
    ) -> APIFuture[ForwardBackwardOutput]:
        """`loss_fn(data, logprobs) -> (loss, metrics)`; logprobs[d] has one entry per token."""
        if not callable(loss_fn):
            raise InvalidInputError("loss_fn", "must be callable(data, logprobs)")
        batch = self.engine.prepare_custom(data)
        return self._submit(self.engine.forward_backward_custom, list(data), batch, loss_fn)

    def optim_step(self, adam_params: AdamParams) -> APIFuture[OptimStepResponse]:
        if not isinstance(adam_params, AdamParams):
            raise InvalidInputError("adam_params", "must be a types.AdamParams")
        # Rebuilt so its checks run again: an unpickled or altered AdamParams skipped them.
        adam_params = dataclasses.replace(adam_params)
        return self._submit(lambda: OptimStepResponse(self.engine.optim_step(adam_params)))

    # ----------------------------------------------------------------------------------------
    # checkpoints

    def save_state(
        self, name: str, ttl_seconds: int | None = None, overwrite: bool = False
    ) -> APIFuture[SaveWeightsResponse]:
        """Weights + optimizer state, resumable with load_state_with_optimizer."""
        target = ckpt.checkpoint_dir(self.run_id, "weights", name)

        def save() -> SaveWeightsResponse:
            meta = ckpt.state_meta(self.base_model, self.engine.lora_config, self.engine.step)
            optimizer = self.engine.optimizer_state()

            def write(folder: Path) -> None:
                ckpt.write_adapter(folder, self.engine.model)
                ckpt.write_state(folder, meta, optimizer)

            ckpt.write_atomically(target, write, overwrite=overwrite)
            return SaveWeightsResponse(ckpt.public_path(self.run_id, "weights", name))

        return self._submit(save)

    def load_state(self, path: str, **_: Any) -> APIFuture[LoadWeightsResponse]:
        """Weights only; the optimizer starts fresh."""
        return self._load(path, with_optimizer=False)

    def load_state_with_optimizer(self, path: str, **_: Any) -> APIFuture[LoadWeightsResponse]:
        return self._load(path, with_optimizer=True)

    def _load(self, path: str, *, with_optimizer: bool) -> APIFuture[LoadWeightsResponse]:
        folder = ckpt.resolve_path(path)
        adapter = ckpt.read_adapter(folder, self.engine.device)
        mine = self.engine.lora_state()
        if set(adapter) != set(mine) or any(adapter[k].shape != mine[k].shape for k in mine):
            raise InvalidInputError("path", f"{path!r} holds a LoRA of another shape or targets "
                                    "than this client's (rank or train_* flags differ)")
        meta = ckpt.read_meta(folder) if with_optimizer else None
        optimizer = ckpt.read_optimizer(folder, self.engine.device) if with_optimizer else None

        def load() -> LoadWeightsResponse:
            self.engine.load_lora_state(adapter)
            self.engine.zero_grad()
            if optimizer is not None and meta is not None:
                self.engine.load_optimizer_state(optimizer)
                self.engine.step = int(meta["step"])
            else:
                self.engine.reset_optimizer()
            return LoadWeightsResponse(path)

        return self._submit(load)

    def save_weights_for_sampler(
        self, name: str, ttl_seconds: int | None = None, overwrite: bool = True
    ) -> APIFuture[SaveWeightsForSamplerResponse]:
        """A standard PEFT adapter folder that vLLM and peft load as it is."""
        target = ckpt.checkpoint_dir(self.run_id, "sampler_weights", name)

        def save() -> SaveWeightsForSamplerResponse:
            self._write_adapter(target, overwrite)
            return SaveWeightsForSamplerResponse(
                ckpt.public_path(self.run_id, "sampler_weights", name)
            )

        return self._submit(save)

    def save_sampler_folder(self, name: str) -> APIFuture[Path]:
        """`save_weights_for_sampler` for a sampler that reads this machine's (or a shared)
        filesystem: the adapter folder itself rather than its mint:// path."""
        target = ckpt.checkpoint_dir(self.run_id, "sampler_weights", name)
        return self._submit(lambda: self._write_adapter(target, overwrite=True))

    def _write_adapter(self, target: Path, overwrite: bool) -> Path:
        ckpt.write_atomically(target, lambda f: ckpt.write_adapter(f, self.engine.model),
                              overwrite=overwrite)
        return target

    def save_weights_external(
        self, name: str, ttl_seconds: int | None = None,
        age_encryption_recipients: list[str] | None = None,
    ) -> APIFuture[SaveWeightsResponse]:
        """The adapter as a standard PEFT folder to take away (`<run>/external_weights/<name>`),
        each file age-encrypted to the recipients when they are given."""
        target = ckpt.checkpoint_dir(self.run_id, "external_weights", name)
        recipients = (ckpt.check_age_recipients(age_encryption_recipients)
                      if age_encryption_recipients is not None else None)

        def save() -> SaveWeightsResponse:
            def write(folder: Path) -> None:
                ckpt.write_adapter(folder, self.engine.model)
                if recipients is not None:
                    ckpt.encrypt_files(folder, recipients)

            ckpt.write_atomically(target, write, overwrite=True)
            return SaveWeightsResponse(ckpt.public_path(self.run_id, "external_weights", name))

        return self._submit(save)

    def save_weights_and_get_sampling_client(self, name: str | None = None,
                                             record_stability_info: bool = False, **_: Any):
        """A SamplingClient frozen on the current weights; the policy version is the step.
        `record_stability_info`: its samples record what stable_reinforce reads.

        The weights are added to this process's sampler engine and checked there: the engine's
        logprobs of a probe sequence must match the learner's, or WeightSyncError is raised.
        Other clients' requests in flight on the engine keep sampling their own weights.
        """
        from mint_rl.sampler import SamplingClient

        # The step after every operation already queued (an optim_step may still be pending).
        version = self._submit(lambda: self.engine.step).result()
        saved = self.save_weights_for_sampler(name or f"step-{version:06d}").result()
        client = SamplingClient(self.base_model, ckpt.resolve_path(saved.path), version,
                                record_stability_info=record_stability_info)
        client.check_weights(self.probe_logprobs(client.probe_tokens()).result())
        return client

    def probe_logprobs(self, tokens: list[int]) -> APIFuture[list[float]]:
        """log p(tokens[i+1] | tokens[:i+1]) under the current weights (after queued ops)."""
        datum = Datum(model_input=ModelInput.from_ints(tokens[:-1]),
                      loss_fn_inputs={"target_tokens": tokens[1:],
                                      "weights": [0.0] * (len(tokens) - 1)})
        loss, batch = self.engine.prepare([datum], "cross_entropy", backward=False)

        def run() -> list[float]:
            # fp32 always: the sampler (fp32 on CPU) checks these to 1e-3 nats.
            out = self.engine.forward_backward(batch, loss, {}, backward=False,
                                               full_precision=True)
            return out.loss_fn_outputs[0]["logprobs"].tolist()

        return self._submit(run)

    def create_sampling_client(self, model_path: str, record_stability_info: bool = False,
                               **_: Any):
        from mint_rl.sampler.sampling_client import SamplingClient

        return SamplingClient(base_model=self.base_model,
                              model_path=str(ckpt.resolve_path(model_path)),
                              record_stability_info=record_stability_info)

    # ----------------------------------------------------------------------------------------
    # info

    def get_tokenizer(self) -> Any:
        return self.engine.tokenizer

    def get_info(self) -> GetInfoResponse:
        config = self.engine.hf_model().config
        arch = (config.architectures or [config.model_type])[0]
        return GetInfoResponse(
            model_id=self.run_id,
            model_data=ModelData(arch=arch, model_name=self.base_model,
                                 tokenizer_id=self.base_model),
            is_lora=True,
            lora_rank=self.engine.lora_config.rank,
            model_name=self.base_model,
        )

    def close(self) -> None:
        """Finishes queued calls; stops the worker thread if it is this client's own."""
        if self._owns_worker:
            self._worker.shutdown(wait=True)
        elif self._last is not None:
            concurrent.futures.wait([self._last])

    # ----------------------------------------------------------------------------------------
    # async forms: the first await submits (ordering fixed), the second waits for the result

    async def forward_async(self, *a: Any, **kw: Any) -> APIFuture[ForwardBackwardOutput]:
        return self.forward(*a, **kw)

    async def forward_backward_async(self, *a: Any, **kw: Any) -> APIFuture[ForwardBackwardOutput]:
        return self.forward_backward(*a, **kw)

    async def forward_backward_custom_async(
        self, *a: Any, **kw: Any
    ) -> APIFuture[ForwardBackwardOutput]:
        return self.forward_backward_custom(*a, **kw)

    async def optim_step_async(self, *a: Any, **kw: Any) -> APIFuture[OptimStepResponse]:
        return self.optim_step(*a, **kw)

    async def save_state_async(self, *a: Any, **kw: Any) -> APIFuture[SaveWeightsResponse]:
        return self.save_state(*a, **kw)

    async def load_state_async(self, *a: Any, **kw: Any) -> APIFuture[LoadWeightsResponse]:
        return self.load_state(*a, **kw)

    async def load_state_with_optimizer_async(
        self, *a: Any, **kw: Any
    ) -> APIFuture[LoadWeightsResponse]:
        return self.load_state_with_optimizer(*a, **kw)

    async def save_weights_for_sampler_async(
        self, *a: Any, **kw: Any
    ) -> APIFuture[SaveWeightsForSamplerResponse]:
        return self.save_weights_for_sampler(*a, **kw)

    async def save_weights_and_get_sampling_client_async(self, *a: Any, **kw: Any):
        import anyio

        return await anyio.to_thread.run_sync(
            lambda: self.save_weights_and_get_sampling_client(*a, **kw)
        )
