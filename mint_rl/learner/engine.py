"""The learner: a LoRA model (torch + peft) with forward, forward_backward, and optim_step.

Blocking and single-threaded by design: the TrainingClient runs these methods one at a time, in
submission order, on its worker thread. A step reads top to bottom:

    prepare (validate) -> plan micro-batches for the memory there is (memory.py)
    -> per micro-batch: pack rows -> decoder forward -> logprobs at the needed positions
       -> loss per datum (summed) -> backward (gradients accumulate until optim_step)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from mint_rl.errors import InvalidInputError
from mint_rl.learner.base_models import BaseModels, load_base, sharing_weights, tensor_bytes
from mint_rl.learner.device import check_device, resolve_device
from mint_rl.learner.inputs import PreparedDatum, prepare_batch
from mint_rl.learner.lora import add_lora
from mint_rl.learner.memory import (
    EFFICIENT_POSITIONS,
    RECOMPUTE_MODES,
    RESIDENT_PER_SAVED_BYTE,
    ActivationCost,
    IdleRelease,
    MemoryPlan,
    Microbatch,
    Recompute,
    SavedBytes,
    estimated_cost,
    free_memory,
    longest_trainable,
    plan_memory,
    split_microbatches,
)
from mint_rl.learner.packing import PackedBatch, pack, prompt_groups
from mint_rl.losses import Loss, get_loss
from mint_rl.placement import parse_cores, pin_current_thread
from mint_rl.types import AdamParams, Datum, ForwardBackwardOutput, LoraConfig, TensorData

log = logging.getLogger(__name__)

CustomLossFn = Callable[[list[Datum], list[torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class LearnerSettings:
    """How the learner computes; none of this changes the maths beyond float rounding."""

    dtype: str = "float32"  # "float32" (exact reference) or "bfloat16" (autocast, fp32 softmax)
    # Tokens per packed row. Masked attention costs the square of a row's width: on an RL batch
    # (8 groups of ~110 tokens) rows of 256 made the step 7% faster than rows of 512, and on
    # mixed-length SFT sequences no slower (docs/learner.md).
    row_capacity: int = 256
    # Micro-batches (gradients accumulate across them) are sized so their activations fit half
    # the memory free at each call, and at most `activation_memory` bytes (None = by device: what
    # 512 positions take on a CPU, where bigger ones compute no faster; on CUDA free memory only).
    # tokens_per_microbatch fixes the packed positions per micro-batch instead. See
    # mint_rl/learner/memory.py.
    activation_memory: int | None = None
    tokens_per_microbatch: int | None = None
    # Per-layer activation recompute in the backward pass: "auto" when the longest datum would not
    # fit the free memory's share without it, "on" always (least memory, ~30% slower), "off"
    # never.
    recompute: Recompute = "auto"
    share_prefixes: bool = True  # compute a prompt shared by several samples once
    num_threads: int | None = None  # torch intra-op threads (None = torch's default)
    # CPU cores the learner's compute thread is pinned to (None = not pinned); with cores given,
    # num_threads defaults to their number. See mint_rl/placement.py for why this matters.
    cpu_cores: tuple[int, ...] | None = None
    # The longest datum forward_backward accepts. None: what 80% of the memory available at
    # submission holds (estimated per token from the model's shape), and never more than the
    # model's context. A longer datum is refused before it can get the process killed.
    max_tokens_per_datum: int | None = None
    # "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N". Resolved where the
    # learner starts, not here: settings may be built on a machine without its GPU.
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.max_tokens_per_datum is not None and self.max_tokens_per_datum < 1:
            raise InvalidInputError("max_tokens_per_datum",
                                    f"must be >= 1, got {self.max_tokens_per_datum}")
        if self.dtype not in ("float32", "bfloat16"):
            raise InvalidInputError("dtype", f"must be 'float32' or 'bfloat16', got {self.dtype!r}")
        check_device(self.device)
        if self.row_capacity < 1:
            raise InvalidInputError("row_capacity", f"must be >= 1, got {self.row_capacity}")
        if self.tokens_per_microbatch is not None and self.tokens_per_microbatch < 1:
            raise InvalidInputError("tokens_per_microbatch",
                                    f"must be >= 1, got {self.tokens_per_microbatch}")
        if self.activation_memory is not None and self.activation_memory < 1 << 20:
            raise InvalidInputError("activation_memory", "must be at least 1 MiB (in bytes), "
                                                         f"got {self.activation_memory}")
        if self.recompute not in RECOMPUTE_MODES:
            raise InvalidInputError("recompute", f"must be one of {', '.join(RECOMPUTE_MODES)}, "
                                                 f"got {self.recompute!r}")
        if self.num_threads is not None and self.num_threads < 1:
            raise InvalidInputError("num_threads", f"must be >= 1, got {self.num_threads}")
        if self.cpu_cores is not None:
            object.__setattr__(self, "cpu_cores", parse_cores(self.cpu_cores, "cpu_cores"))

    def resolve_device(self) -> torch.device:
        """The device `device` names on this machine; a CUDA device that is absent is refused."""
        return resolve_device(self.device)

    def bind_thread(self) -> None:
        """Applies cpu_cores / num_threads to the calling thread (the learner's worker)."""
        if self.cpu_cores is not None:
            pin_current_thread(self.cpu_cores)
        if self.num_threads:
            torch.set_num_threads(self.num_threads)


class LearnerEngine:
    def __init__(
        self, model_dir: Path, lora: LoraConfig, settings: LearnerSettings | None = None,
        base_models: BaseModels | None = None,
    ) -> None:
        """`base_models`: where engines of the same base model share its frozen weights (the
        server's, a ServiceClient's); without it this engine loads a copy of its own."""
        self.model_dir = Path(model_dir)
        self.lora_config = lora
        self.settings = settings or LearnerSettings()
        self.device = self.settings.resolve_device()  # before loading: a bad device fails fast
        # Held for this engine's lifetime: it is what keeps shared weights loaded.
        self.shared_base: PreTrainedModel | None = None
        if base_models is None:
            base = load_base(self.model_dir, self.device)
        else:
            self.shared_base = base_models.get(self.model_dir, self.device)
            base = sharing_weights(self.shared_base)
        self.model = add_lora(base, lora)
        self.model.to(self.device)  # the LoRA layers; the base is there already
        self.model.train()
        self.vocab_size = int(base.config.vocab_size)
        # Pads follow each packed row's last token, where the causal mask hides them from every
        # trained position: any id in range does. The model's own pad (or eos) id is one.
        pad = base.config.pad_token_id
        pad = base.config.eos_token_id if pad is None else pad
        self.pad_id = int((pad[0] if isinstance(pad, list) else pad) or 0)
        self.decoder = self.hf_model().get_decoder()
        lm_head = self.hf_model().get_output_embeddings()
        assert isinstance(lm_head, torch.nn.Module)  # None only for models without an LM head
        self.lm_head = lm_head
        self.params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=1e-4, betas=(0.9, 0.95),
                                           eps=1e-12, weight_decay=0.0)
        self.step = 0  # optimizer steps taken: the policy version
        self.context = int(getattr(base.config, "max_position_embeddings", 0) or 1 << 30)
        # Activation bytes per position: estimated from the shape, then measured (memory.py).
        self.activation_cost: ActivationCost = estimated_cost(base.config)
        self._saved = SavedBytes(self.model.parameters())
        self._recompute_on = False
        self._idle_release = IdleRelease(self.device)
        # The memory metrics of the last call that trained (for runs that read them here).
        self.last_train_metrics: dict[str, float] = {}

    def hf_model(self) -> PreTrainedModel:
        """The transformers model inside the peft wrapper (its layers carry the LoRA)."""
        # peft types get_base_model() as nn.Module; for a LoRA it is the model add_lora wrapped.
        return cast(PreTrainedModel, self.model.get_base_model())

    # ----------------------------------------------------------------------------------------
    # forward / forward_backward

    def prepare(self, data: Sequence[Datum], loss_fn: str, *,
                backward: bool = True) -> tuple[Loss, list[PreparedDatum]]:
        """Validates `data` for the named loss and, for a backward pass, for the memory it will
        take."""
        loss = get_loss(loss_fn)  # a loss_fn that is not a known name (None too) is refused there
        batch = prepare_batch(data, loss, self.vocab_size)
        self._check_lengths(batch, backward)
        return loss, batch

    def prepare_custom(self, data: Sequence[Datum]) -> list[PreparedDatum]:
        """Validates `data` for a user's loss function (only target_tokens needed) and for the
        memory its backward pass will take."""
        batch = prepare_batch(data, None, self.vocab_size)
        self._check_lengths(batch, backward=True)
        return batch

    def _check_lengths(self, batch: list[PreparedDatum], backward: bool) -> None:
        """Each datum within the model's context and, when training (activations are kept for
        the backward pass), within what memory can train on."""
        limit, why = self.context, f"the model's context ({self.context} tokens)"
        if backward:
            memory_limit, memory_why = self._trainable_tokens()
            if memory_limit < limit:
                limit, why = memory_limit, memory_why
        for i, datum in enumerate(batch):
            if len(datum.tokens) > limit:
                raise InvalidInputError(f"data[{i}].model_input",
                                        f"{len(datum.tokens)} tokens is longer than {why}")

    def _trainable_tokens(self) -> tuple[int, str]:
        """The longest datum a backward pass can hold, and where that limit comes from."""
        if self.settings.max_tokens_per_datum is not None:
            limit = self.settings.max_tokens_per_datum
            return limit, f"LearnerSettings.max_tokens_per_datum ({limit})"
        available = free_memory(self.device)
        recompute = self.settings.recompute
        per_token = self.activation_cost.per_position(recompute != "off")
        how = "with per-layer recompute" if recompute != "off" else "without recompute"
        return longest_trainable(self.activation_cost, available, recompute), (
            f"what the {available / 2**30:.1f} GiB of free memory holds at "
            f"~{per_token / 2**20:.2f} MiB per token {how} "
            "(LearnerSettings.max_tokens_per_datum overrides)")

    def plan(self, batch: list[PreparedDatum], trained: list[torch.Tensor] | None,
             backward: bool) -> tuple[MemoryPlan, list[Microbatch]]:
        """Micro-batches for `batch`, and the plan they follow (memory.py)."""
        units = self._units(batch)
        lengths = [len(d.tokens) for d in batch]
        positions = sum(shared + sum(lengths[d] - shared for d in members)
                        for shared, members in units)
        n_trained = sum(int(t.sum()) for t in trained) if trained is not None else sum(lengths)
        share = min(1.0, n_trained / max(1, positions))
        cap = self.settings.activation_memory
        efficient = EFFICIENT_POSITIONS.get(self.device.type)
        if cap is None and efficient is not None:
            cap = math.ceil(efficient * self.activation_cost.per_position(False, share))
        plan = plan_memory(self.activation_cost, share, free_memory(self.device), cap,
                           self.settings.recompute, backward)
        if self.settings.tokens_per_microbatch is not None:
            fixed = self.settings.tokens_per_microbatch
            plan = dataclasses.replace(plan, microbatch_positions=fixed,
                                       recompute_positions=fixed if plan.recompute_all else None)
        return plan, split_microbatches(units, lengths, plan)

    def _units(self, batch: list[PreparedDatum]) -> list[tuple[int, list[int]]]:
        """Datums as the packer groups them: (shared prompt length, datum indices)."""
        seqs = [d.tokens for d in batch]
        if not self.settings.share_prefixes:
            return [(0, [d]) for d in range(len(seqs))]
        return prompt_groups(seqs)

    def forward_backward(
        self, batch: list[PreparedDatum], loss: Loss, config: dict[str, float], *, backward: bool,
        full_precision: bool = False,
    ) -> ForwardBackwardOutput:
        """Loss (summed) and per-datum logprobs; with `backward`, gradients accumulate.
        `full_precision` computes in fp32 even when the settings say bf16."""
        logprobs: list[torch.Tensor] = [torch.empty(0)] * len(batch)
        total = 0.0
        metric_sums: dict[str, float] = {}
        trained = [loss.trained(d.x) for d in batch] if backward else None
        plan, parts = self.plan(batch, trained, backward)
        self._idle_release.busy()
        with self._gradients_kept_unless_finite() if backward else contextlib.nullcontext():
            for part in parts:
                self._set_recompute(part.recompute)
                total += self._forward_backward_part(batch, part.datums, loss, config, trained,
                                                     full_precision, logprobs, metric_sums)
            if backward and not math.isfinite(total):
                raise FloatingPointError("the loss is not finite")
        self._after_call(plan, parts, backward)
        metrics = {"loss:sum": total, **_finish_metrics(metric_sums), **plan.metrics(parts)}
        return _output(logprobs, metrics)

    def _set_recompute(self, on: bool) -> None:
        if on != self._recompute_on:
            if on:
                self.hf_model().gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.hf_model().gradient_checkpointing_disable()
            self._recompute_on = on

    def _after_call(self, plan: MemoryPlan, parts: list[Microbatch], backward: bool) -> None:
        if backward:
            self.last_train_metrics = plan.metrics(parts)
        self._idle_release.idle()  # memory back to the system if no call follows soon

    def _forward_backward_part(
        self, batch: list[PreparedDatum], indices: list[int], loss: Loss,
        config: dict[str, float], batch_trained: list[torch.Tensor] | None,
        full_precision: bool, logprobs: list[torch.Tensor], metric_sums: dict[str, float],
    ) -> float:
        """One micro-batch: logprobs into `logprobs`, metrics into `metric_sums`; its loss.
        `batch_trained`: the batch's trained-token masks (None: a forward pass only)."""
        part = [batch[i].to(self.device) for i in indices]
        trained = (None if batch_trained is None
                   else [batch_trained[i].to(self.device) for i in indices])
        # A micro-batch that trains no token (all weights 0) needs no graph.
        backward = trained is not None and any(bool(t.any()) for t in trained)
        with contextlib.nullcontext() if backward else torch.no_grad():
            lps = self._logprobs(part, trained, full_precision, measure=backward)
            per_datum = [loss.per_token(lp, d.x, config).sum()
                         for lp, d in zip(lps, part, strict=True)]
            part_loss = torch.stack(per_datum).sum()
            if backward and part_loss.requires_grad:
                part_loss.backward()
        for i, lp in zip(indices, lps, strict=True):
            logprobs[i] = lp.detach()
        _accumulate(metric_sums, _loss_metrics(loss, part, lps, config))
        return float(part_loss.detach())

    @contextlib.contextmanager
    def _gradients_kept_unless_finite(self) -> Iterator[None]:
        """Gradients accumulate across calls until optim_step. A call whose loss or gradient is
        not finite would poison all of them (optim_step could only throw everything away):
        such a call is refused and its own contribution undone, earlier ones kept."""
        saved = {n: None if p.grad is None else p.grad.clone() for n, p in self.params.items()}
        try:
            yield
            grads = [p.grad for p in self.params.values() if p.grad is not None]
            if grads and not torch.isfinite(
                    torch.stack([torch.linalg.vector_norm(g) for g in grads]).sum()):
                raise FloatingPointError("the gradient is not finite")
        except FloatingPointError as e:
            self._restore_grads(saved)
            raise InvalidInputError(
                "data", f"{e} for this batch (check the behaviour logprobs and advantages); "
                "its gradient was discarded, the gradients accumulated before it are kept"
            ) from None
        except BaseException:
            self._restore_grads(saved)
            raise

    def _restore_grads(self, saved: dict[str, torch.Tensor | None]) -> None:
        for name, p in self.params.items():
            p.grad = saved[name]

    def forward_backward_custom(
        self, data: Sequence[Datum], batch: list[PreparedDatum], fn: CustomLossFn
    ) -> ForwardBackwardOutput:
        """Any differentiable function of the per-datum logprobs, in one forward/backward pass.

        The function gets the logprobs on the CPU, as Tinker's client does, so it can mix them
        with tensors built from the data whatever the learner's device; dL/dlogp is carried
        back onto the device's graph."""
        plan, parts = self.plan(batch, None, backward=True)
        self._idle_release.busy()
        one_pass = len(parts) == 1
        # One micro-batch: the graph of the logprobs is kept for the backward pass. More: the
        # logprobs are computed without a graph, and each micro-batch is computed again with one
        # to carry dL/dlogp back (one more forward pass, memory of one micro-batch).
        lps: list[torch.Tensor] = [torch.empty(0)] * len(batch)
        for part in parts:
            self._set_recompute(part.recompute and one_pass)
            with contextlib.nullcontext() if one_pass else torch.no_grad():
                found = self._logprobs([batch[i].to(self.device) for i in part.datums],
                                       trained=None, measure=one_pass)
            for i, lp in zip(part.datums, found, strict=True):
                lps[i] = lp
        handed = [lp.detach().cpu().requires_grad_() for lp in lps]
        loss, metrics = _custom_result(fn(list(data), handed))
        with self._gradients_kept_unless_finite():
            if not torch.isfinite(loss):
                raise FloatingPointError("the custom loss is not finite")
            grads = torch.autograd.grad(loss, handed, allow_unused=True)
            # Tinker reports the linear surrogate sum(dL/dlogp * logp) as loss:sum; same here.
            surrogate = sum(float((g * h.detach()).sum())
                            for g, h in zip(grads, handed, strict=True) if g is not None)
            for part in parts:
                used = [i for i in part.datums if grads[i] is not None]
                if not used:
                    continue
                self._set_recompute(part.recompute)
                live = lps if one_pass else self._logprobs(
                    [batch[i].to(self.device) for i in part.datums], trained=None, measure=True)
                by_datum = dict(zip(part.datums, live, strict=True)) if not one_pass else None
                outputs = [lps[i] if by_datum is None else by_datum[i] for i in used]
                torch.autograd.backward(outputs, [grads[i].to(lp.device)  # type: ignore[union-attr]
                                                  for i, lp in zip(used, outputs, strict=True)])
        self._after_call(plan, parts, backward=True)
        metrics = {"loss:sum": surrogate, "custom_loss:sum": float(loss.detach()), **metrics,
                   **plan.metrics(parts)}
        return _output([h.detach() for h in handed], metrics)

    def _logprobs(
        self, batch: list[PreparedDatum], trained: list[torch.Tensor] | None,
        full_precision: bool = False, measure: bool = False,
    ) -> list[torch.Tensor]:
        """Per-datum logprobs of one micro-batch. With `measure` (and a graph being built, no
        recompute) the activation bytes it keeps update `activation_cost`."""
        packed = self.pack([d.tokens for d in batch])
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if self.settings.dtype == "bfloat16" and not full_precision
            else contextlib.nullcontext()
        )
        measure = measure and torch.is_grad_enabled() and not self._recompute_on
        counting = self._saved.counting if measure else contextlib.nullcontext
        with autocast:
            with counting():
                hidden = self.decoder(
                    input_ids=packed.input_ids,
                    attention_mask=packed.attention_mask,
                    position_ids=packed.position_ids,
                ).last_hidden_state
            decoder_bytes = self._saved.bytes
            hidden_flat = hidden.reshape(-1, hidden.shape[-1])
            targets = torch.cat(trained) if trained is not None else None
            with counting():
                flat = selective_logprobs(
                    hidden_flat,
                    self.lm_head,
                    torch.cat(packed.columns),
                    torch.cat([d.targets for d in batch]),
                    targets,
                )
        if measure:
            n_trained = int(targets.sum()) if targets is not None else len(flat)
            resident = RESIDENT_PER_SAVED_BYTE
            self.activation_cost = dataclasses.replace(
                self.activation_cost, decoder=resident * decoder_bytes / packed.real_tokens,
                head=(resident * self._saved.bytes / n_trained if n_trained
                      else self.activation_cost.head),
                measured=True)
        return list(flat.split([len(d.tokens) for d in batch]))

    @functools.cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """Loaded when first asked for: a server's learner never tokenizes (its clients send
        tokens), and each tokenizer costs ~16 MiB of native memory per training client."""
        return AutoTokenizer.from_pretrained(self.model_dir)

    def pack(self, seqs: list[list[int]]) -> PackedBatch:
        return pack(
            seqs,
            row_capacity=self.settings.row_capacity,
            share_prefixes=self.settings.share_prefixes,
            pad_id=self.pad_id,
            device=self.device,
        )

    # ----------------------------------------------------------------------------------------
    # optimizer

    def optim_step(self, adam: AdamParams) -> dict[str, float]:
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = [torch.linalg.vector_norm(g) for g in grads]
        grad_norm = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError("optim_step: gradient norm is not finite; step skipped")
        if adam.grad_clip_norm > 0 and grad_norm > adam.grad_clip_norm:
            for g in grads:
                g.mul_(adam.grad_clip_norm / (grad_norm + 1e-6))
        for group in self.optimizer.param_groups:
            group.update(lr=adam.learning_rate, betas=(adam.beta1, adam.beta2), eps=adam.eps,
                         weight_decay=adam.weight_decay)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"grad_norm:mean": grad_norm, "learning_rate:mean": adam.learning_rate,
                "step:max": float(self.step)}

    # ----------------------------------------------------------------------------------------
    # state: LoRA tensors and Adam moments, keyed by parameter name. Snapshots are CPU copies
    # and loads accept tensors on any device, so a checkpoint moves between devices.

    def lora_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().to("cpu", copy=True)
                for k, v in get_peft_model_state_dict(self.model).items()}

    def load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, {k: v.to(self.device) for k, v in state.items()})

    def optimizer_state(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, p in self.params.items():
            for key, value in self.optimizer.state.get(p, {}).items():
                out[f"{name}::{key}"] = torch.as_tensor(value).detach().to("cpu", copy=True)
        return out

    def load_optimizer_state(self, state: dict[str, torch.Tensor]) -> None:
        # Through torch's own load_state_dict: it puts each value where AdamW keeps it (moments
        # on the parameter's device and dtype, the step count where AdamW's options want it).
        index = {id(p): i for i, p in enumerate(
            p for group in self.optimizer.param_groups for p in group["params"])}
        by_index: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            name, _, field = key.partition("::")
            if field and name in self.params:
                by_index.setdefault(index[id(self.params[name])], {})[field] = value.clone()
        self.optimizer.load_state_dict(
            {"state": by_index, "param_groups": self.optimizer.state_dict()["param_groups"]})

    def reset_optimizer(self) -> None:
        self.optimizer.state.clear()

    def own_bytes(self) -> dict[str, int]:
        """What this engine holds beyond the base weights: its adapter with its gradients, and
        the optimizer's moments."""
        adapter = list(self.params.values())
        grads = [p.grad for p in adapter if p.grad is not None]
        moments = [v for state in self.optimizer.state.values() for v in state.values()
                   if isinstance(v, torch.Tensor)]
        return {"adapter_bytes": tensor_bytes(adapter) + tensor_bytes(grads),
                "optimizer_bytes": tensor_bytes(moments)}

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)


def _custom_result(result: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """A custom loss function's (loss, metrics), checked before any gradient is computed."""
    expected = "must return (scalar tensor, dict of metrics)"
    if not isinstance(result, tuple) or len(result) != 2:
        raise InvalidInputError("loss_fn", f"{expected}, got {type(result).__name__}")
    loss, metrics = result
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise InvalidInputError("loss_fn", expected)
    if metrics is not None and not isinstance(metrics, dict):
        raise InvalidInputError("loss_fn", f"{expected}; metrics is a {type(metrics).__name__}")
    numbers: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        try:
            numbers[str(key)] = float(value)
        except (TypeError, ValueError):
            raise InvalidInputError("loss_fn", f"metric {key!r} is not a number: "
                                               f"{value!r}") from None
    return loss, numbers


def _output(logprobs: list[torch.Tensor], metrics: dict[str, float]) -> ForwardBackwardOutput:
    return ForwardBackwardOutput(
        loss_fn_output_type="target_logprobs",
        loss_fn_outputs=[{"logprobs": TensorData.from_torch(lp)} for lp in logprobs],
        metrics=metrics,
    )


def _loss_metrics(
    loss: Loss, batch: list[PreparedDatum], lps: list[torch.Tensor], config: dict[str, float]
) -> dict[str, Any]:
    """Sums for mean metrics over trained tokens: ratio, clip fraction, sampler-learner KL, and
    where the loss has them the trust-band mask and the share of recorded behaviour logprobs."""
    if not loss.is_rl:
        return {}
    sums = {"tokens": 0.0, "ratio": 0.0, "clipped": 0.0, "kl": 0.0}
    # A loss with only an upper clip (stable_reinforce's truncation) clips nothing below.
    lo = config.get("clip_low_threshold", 0.0)
    hi = config.get("clip_high_threshold")
    band = (config.get("mask_low_threshold"), config.get("mask_high_threshold"))
    for d, lp in zip(batch, lps, strict=True):
        mask = d.x["weights"] != 0
        if not mask.any():
            continue
        log_ratio = lp.detach()[mask] - d.x["logprobs"][mask]
        ratio = log_ratio.exp()
        sums["tokens"] += float(mask.sum())
        sums["ratio"] += float(ratio.sum())
        sums["kl"] += float((-log_ratio).sum())
        if hi is not None:
            clip_on = ratio if loss.clip_ratio is None else loss.clip_ratio(lp.detach(), d.x)[mask]
            sums["clipped"] += float(((clip_on < lo) | (clip_on > hi)).sum())
        if band[0] is not None and band[1] is not None:
            outside = (ratio < band[0]) | (ratio > band[1])
            sums["masked"] = sums.get("masked", 0.0) + float(outside.sum())
        if "recorded" in d.x:
            sums["recorded"] = sums.get("recorded", 0.0) + float(d.x["recorded"][mask].sum())
    return sums


def _accumulate(into: dict[str, float], part: dict[str, float]) -> None:
    for k, v in part.items():
        into[k] = into.get(k, 0.0) + v


def _finish_metrics(sums: dict[str, float]) -> dict[str, float]:
    n = sums.get("tokens", 0.0)
    if not n:
        return {}
    out = {
        "ratio:mean": sums["ratio"] / n,
        "clip_frac:mean": sums["clipped"] / n,
        "kl_sample_train:mean": sums["kl"] / n,
    }
    for key, name in (("masked", "mask_frac:mean"), ("recorded", "recorded_frac:mean")):
        if key in sums:
            out[name] = sums[key] / n
    return out


# ---------------------------------------------------------------- logprobs
# The LM head only where a token is asked for, in chunks. On a small model with a large
# vocabulary, the (tokens x vocab) logits dominate a step, so they are never materialised for the
# whole batch: hidden states are gathered at the requested positions, and the LM head +
# log-softmax run in chunks. Positions that train go through autograd; the rest are computed
# under no_grad (their values are still returned to the user).

CHUNK = 512  # positions per LM-head chunk: 512 x 49k fp32 logits = 100 MB


def token_logprobs(
    hidden: torch.Tensor, lm_head: torch.nn.Module, targets: torch.Tensor, *, chunk: int = CHUNK
) -> torch.Tensor:
    """log p(targets[i] | hidden[i]) for (M, H) hidden states; log-softmax in fp32."""
    out = []
    for start in range(0, hidden.shape[0], chunk):
        logits = lm_head(hidden[start : start + chunk]).float()
        picked = logits.gather(-1, targets[start : start + chunk, None]).squeeze(-1)
        out.append(picked - torch.logsumexp(logits, dim=-1))
    if not out:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(out)


def selective_logprobs(
    hidden_flat: torch.Tensor,
    lm_head: torch.nn.Module,
    columns: torch.Tensor,
    targets: torch.Tensor,
    trained: torch.Tensor | None,
) -> torch.Tensor:
    """Logprobs (N,) of one datum: with grad at `trained` positions (None = all), else without."""
    if trained is None:
        return token_logprobs(hidden_flat[columns], lm_head, targets)
    result = torch.empty(len(columns), dtype=torch.float32, device=hidden_flat.device)
    frozen = ~trained
    if frozen.any():
        with torch.no_grad():
            # A shared prompt maps several datums onto the same (column, target): compute once.
            cols, tgts = columns[frozen], targets[frozen]
            pairs, inverse = torch.unique(torch.stack([cols, tgts]), dim=1, return_inverse=True)
            unique = token_logprobs(hidden_flat[pairs[0]], lm_head, pairs[1])
            result[frozen] = unique[inverse]
    if trained.any():
        live = token_logprobs(hidden_flat[columns[trained]], lm_head, targets[trained])
        # Scatter into a fresh tensor so autograd sees one differentiable (N,) vector.
        result = result.index_put((trained.nonzero().squeeze(-1),), live)
    return result
