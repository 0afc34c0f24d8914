"""How much the learner computes at once: micro-batches sized to the memory there is.

A backward pass needs what the forward pass kept: every layer's activations, for every packed
position of the micro-batch (~3.2 MiB per position on SmolLM2-135M, ~6 MiB on Qwen3-0.6B's shape,
in fp32). So the memory of a step is set by the micro-batch, not by the batch: a batch is cut into
micro-batches whose activations fit a budget, and gradients accumulate across them (the result is
the same up to float rounding). When even one datum would not fit, each layer recomputes its
activations during the backward pass and keeps only its input (per-layer checkpointing: about one
more forward pass of compute, activation memory of roughly one layer).

The budget is the smaller of
- a share of the memory free when the call starts (the vLLM engine's KV cache, other clients'
  models and anything else in the machine are already taken out of it), and
- `LearnerSettings.activation_memory` where set; by default a device-dependent cap: on a CPU,
  micro-batches past ~1,000 positions buy no speed (the matmuls are already compute-bound), so
  a larger one would only hold memory.

The cost per position starts as an estimate from the model's shape and is then measured: the
bytes autograd keeps for the backward pass (saved tensors, parameters excluded) divided by the
positions of the micro-batch, times RESIDENT_PER_SAVED_BYTE for what the process really holds at
its peak (the backward pass's own temporaries, the allocator's free lists).
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

Recompute = Literal["auto", "on", "off"]
RECOMPUTE_MODES = ("auto", "on", "off")
GiB = 1 << 30

# Share of the free memory one learner call may fill with activations: the rest covers what the
# estimate leaves out (gradients of activations in flight, the LM head's chunk, allocator slack).
FREE_MEMORY_SHARE = 0.5
# By device, the packed positions past which a bigger micro-batch computes no faster: on this
# project's CPU, micro-batches of 512 positions ran as fast per token as ones of ~1,900
# (docs/memory.md). The budget is what that many positions take. None: free memory only.
EFFICIENT_POSITIONS = {"cpu": 512, "cuda": None}
# Peak memory per position with per-layer recompute, as a share of it without. Measured on this
# project's CPU (2026-12-07, SmolLM2-135M, one micro-batch of 1,984 positions: 2 samples of
# 1,024 tokens sharing a prompt): peak RSS 3.20 GiB with recompute, 6.48 without, over ~1.0
# loaded: 1.1 against 2.8 MiB per position. Counting layers (inputs kept, one layer live) gave
# half that: the backward pass's temporaries and wide rows' attention are not in that count.
RECOMPUTE_SHARE = 0.4
# Peak resident memory per byte autograd saves. Measured on this project's 2-core CPU box
# (2026-12-07, fp32, micro-batches of 512 positions): Qwen3-0.6B's shape saves 3.2 MiB per
# position and its peak RSS grew by 6.6 MiB per position beyond the weights and the LM head's
# chunk (docs/memory.md).
RESIDENT_PER_SAVED_BYTE = 2.0


@dataclass(frozen=True)
class ActivationCost:
    """Bytes the backward pass keeps, per packed position of the decoder and per trained position
    of the LM head; `measured` once a call has measured them."""

    decoder: float
    head: float
    layers: int
    measured: bool = False

    def per_position(self, recompute: bool, trained_share: float = 1.0) -> float:
        """Bytes kept per packed position (the LM head's at `trained_share` of positions)."""
        plain = self.decoder + trained_share * self.head
        return RECOMPUTE_SHARE * plain if recompute else plain


def estimated_cost(config: Any) -> ActivationCost:
    """The cost per position from a model's shape (fp32), before anything is measured.

    Per layer ~20 hidden-sized and ~10 intermediate-sized tensors are kept for the backward
    pass, plus the logits row of a trained position. Measured on SmolLM2-135M on CPU: 3.2 MiB per
    token; this estimate gives 3.5 MiB.
    """
    hidden = int(getattr(config, "hidden_size", 1024))
    inter = int(getattr(config, "intermediate_size", 4 * hidden))
    layers = int(getattr(config, "num_hidden_layers", 24))
    vocab = int(getattr(config, "vocab_size", 32000))
    return ActivationCost(decoder=4 * layers * (20 * hidden + 10 * inter), head=8 * vocab,
                          layers=layers)


@dataclass(frozen=True)
class MemoryPlan:
    """How one forward_backward call computes: micro-batches of at most `microbatch_positions`
    packed positions, and those holding a datum longer than that with per-layer recompute, at
    most `recompute_positions` (None: never recompute; `recompute_all`: every micro-batch)."""

    budget_bytes: int  # what one micro-batch's activations may take
    microbatch_positions: int
    recompute_positions: int | None
    recompute_all: bool = False

    def metrics(self, parts: Sequence[Microbatch]) -> dict[str, float]:
        """The plan as forward_backward metrics (Tinker's `name:reduction` keys)."""
        recomputed = sum(part.recompute for part in parts)
        return {"memory/microbatch_tokens:max": float(self.microbatch_positions),
                "memory/microbatches:sum": float(len(parts)),
                "memory/recompute:max": float(recomputed > 0),
                "memory/recomputed_microbatches:sum": float(recomputed),
                "memory/budget_gib:max": self.budget_bytes / GiB}


@dataclass(frozen=True)
class Microbatch:
    datums: list[int]  # indices into the batch
    recompute: bool


def plan_memory(cost: ActivationCost, trained_share: float, free_bytes: int,
                cap_bytes: int | None, recompute: Recompute, backward: bool = True) -> MemoryPlan:
    """The budget is FREE_MEMORY_SHARE of the free memory, at most `cap_bytes` (past which
    bigger micro-batches compute no faster). Micro-batches hold what fits it without recompute;
    with "auto", a datum longer than that gets a micro-batch of its own that recomputes (~30%
    more compute, so only where needed). A forward pass without backward keeps nothing: one
    layer's activations at a time."""
    budget = max(1, int(FREE_MEMORY_SHARE * free_bytes))
    if cap_bytes is not None:
        budget = min(budget, cap_bytes)
    if not backward:
        forward_only = cost.decoder / cost.layers + trained_share * cost.head
        return MemoryPlan(budget, max(1, int(budget // forward_only)), None)
    plain = max(1, int(budget // cost.per_position(False, trained_share)))
    if recompute == "on":
        recomputing = max(1, int(budget // cost.per_position(True, trained_share)))
        return MemoryPlan(budget, recomputing, recomputing, recompute_all=True)
    # "auto": a datum too long for a micro-batch gets one of its own, recomputing; it fits the
    # budget up to ~1 / RECOMPUTE_SHARE times a micro-batch's positions.
    return MemoryPlan(budget, plain, plain if recompute == "auto" else None)


def longest_trainable(cost: ActivationCost, free_bytes: int, recompute: Recompute) -> int:
    """The longest datum a backward pass can hold in `free_bytes` (all of it trained)."""
    per_position = cost.per_position(recompute != "off")
    return int(0.8 * free_bytes / per_position)


# ------------------------------------------------------------------------------------------------
# micro-batches


def split_microbatches(units: Sequence[tuple[int, list[int]]], lengths: Sequence[int],
                       plan: MemoryPlan) -> list[Microbatch]:
    """The batch's micro-batches under `plan`.

    `units` are (shared prefix length, datum indices) as the packer groups them: a group that
    shares a prompt counts it once. A datum longer than the plan's micro-batches goes to one
    that recomputes (where the plan allows; else it gets one of its own); a group too big for
    one micro-batch is cut into parts, each computing the prompt again.
    """
    if plan.recompute_all:
        assert plan.recompute_positions is not None
        return [Microbatch(d, True) for d in _pack(units, lengths, plan.recompute_positions)]
    if plan.recompute_positions is None:
        return [Microbatch(d, False) for d in _pack(units, lengths, plan.microbatch_positions)]
    fits, long = [], []
    for shared, members in units:
        short = [d for d in members if lengths[d] <= plan.microbatch_positions]
        longer = [d for d in members if lengths[d] > plan.microbatch_positions]
        fits += [(shared, short)] if short else []
        long += [(shared, longer)] if longer else []
    return ([Microbatch(d, False) for d in _pack(fits, lengths, plan.microbatch_positions)]
            + [Microbatch(d, True) for d in _pack(long, lengths, plan.recompute_positions)])


def _pack(units: Sequence[tuple[int, list[int]]], lengths: Sequence[int],
          capacity: int) -> list[list[int]]:
    """Datum indices per micro-batch of at most `capacity` positions (a longer datum alone)."""
    parts: list[tuple[int, list[int]]] = []  # (positions, datums)
    for shared, members in units:
        current: list[int] = []
        used = shared
        for d in members:
            own = lengths[d] - shared
            if current and used + own > capacity:
                parts.append((used, current))
                current, used = [], shared
            current.append(d)
            used += own
        parts.append((used, current))
    out: list[list[int]] = []
    used = 0
    for size, datums in parts:  # in the packer's order: groups stay together where they fit
        if not out or used + size > capacity:
            out.append([])
            used = 0
        out[-1].extend(datums)
        used += size
    return out


# ------------------------------------------------------------------------------------------------
# measuring and giving back


class SavedBytes:
    """Counts the bytes autograd saves for the backward pass inside a `with` block (parameters
    excluded: they are in memory anyway). Storages are counted once, however many views."""

    def __init__(self, parameters: Iterator[torch.nn.Parameter]) -> None:
        self._params = {p.untyped_storage().data_ptr() for p in parameters}
        self.bytes = 0
        self._seen: set[int] = set()

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        self.bytes, self._seen = 0, set()

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self._params and ptr not in self._seen:
                self._seen.add(ptr)
                self.bytes += storage.nbytes()
            # Detached (a view, no copy): a tensor saved by its own grad_fn (exp's result) and
            # kept as itself would hold that grad_fn, which holds it: a cycle Python cannot
            # collect, leaking the whole graph of a call whose backward never runs.
            return t.detach()

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield


def free_memory(device: torch.device) -> int:
    """Bytes free on `device`: what a CUDA device reports, or the machine's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


# Seconds without learner work after which freed memory goes back to the system.
IDLE_RELEASE_S = 10.0


class IdleRelease:
    """Gives freed memory back to the system once the learner has been idle for `after_s`: a
    long-lived server does not sit at its peak between batches, while a training loop that
    calls again within seconds keeps its pages (faulting 2 GiB back in costs ~0.3 s on this
    project's CPU, as much as a quarter of a small model's step)."""

    def __init__(self, device: torch.device, after_s: float = IDLE_RELEASE_S) -> None:
        self.device, self.after_s = device, after_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def busy(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def idle(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.after_s, give_back_memory, (self.device,))
            self._timer.daemon = True
            self._timer.start()


def give_back_memory(device: torch.device) -> None:
    """Returns freed memory to the system, so a long-lived process does not sit at its peak.

    glibc keeps freed heap memory for reuse (only blocks of 32 MB and more go straight back), so
    after a large batch the resident set stays at its peak; malloc_trim releases the free pages.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
