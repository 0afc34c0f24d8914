"""Methods mixed into vLLM's worker (`worker_extension_cls`), called with `collective_rpc`.

They run inside the worker process, between two engine steps, so new weights never land in
the middle of a forward pass. Only the LoRA-targeted matrices are recomputed: W0 of a matrix is
read (lazily, once) from the base checkpoint and kept in memory; each load builds W0 + s·B@A and
hands it to the layer's own post-load processing (on CPU that repacks it for oneDNN).

`mint_load_merged` also reports how many tokens each request had produced when the weights
changed, which is what makes per-token policy-version stamps exact.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from mint_rl.sampler.lora_merge import merged_weight, read_adapter, shard_names, targets_of

_FINISHED_MEMORY = 65536


class _TrackingRequests(dict):
    """The model runner's request table, remembering token counts of recently finished ones."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.finished: OrderedDict[str, int] = OrderedDict()

    def pop(self, key: Any, *default: Any) -> Any:
        state = super().pop(key, *default)
        if state is not None and hasattr(state, "output_token_ids"):
            self.finished[key] = len(state.output_token_ids)
            while len(self.finished) > _FINISHED_MEMORY:
                self.finished.popitem(last=False)
        return state


class MintWorkerExtension:
    """Adds `mint_*` methods to the vLLM worker."""

    def mint_exit_with_parent(self) -> bool:
        """Asks Linux to SIGKILL this process when the thread that started it dies, even by
        SIGKILL, so no engine outlives a killed trainer. Returns whether it is armed.

        SIGKILL, not SIGTERM: with its parent gone, vLLM's SIGTERM handler starts a shutdown
        that can block for ever on the dead parent's sockets (an orphan engine was found alive
        37 minutes later). There is nothing left to shut down in order: the parent is dead."""
        import ctypes
        import os
        import signal
        import sys

        if not sys.platform.startswith("linux"):
            return False
        pr_set_pdeathsig = 1
        if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0):
            return False
        if os.getppid() == 1:  # the parent died before the call: no signal will come
            os.kill(os.getpid(), signal.SIGKILL)
        return True

    def mint_setup(self) -> dict[str, Any]:
        """Wraps the runner's request table to count tokens; returns facts the sampler checks."""
        runner = self.model_runner  # type: ignore[attr-defined]
        if not isinstance(runner.requests, _TrackingRequests):
            runner.requests = _TrackingRequests(runner.requests)
        model = runner.get_model()
        self._mint_w0: dict[str, torch.Tensor] = {}
        self._mint_dirty: set[str] = set()
        self._mint_files = sorted(Path(runner.model_config.model).glob("*.safetensors"))
        self._mint_index: dict[str, Path] = {}
        for file in self._mint_files:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    self._mint_index[key] = file
        return {
            "async_scheduling": bool(getattr(runner, "use_async_scheduling", False)),
            "packed": dict(getattr(model, "packed_modules_mapping", {}) or {}),
            "dtype": str(runner.model_config.dtype),
        }

    def mint_token_counts(self) -> dict[str, int]:
        """Tokens produced so far by every request the worker knows (running or just finished)."""
        requests = self.model_runner.requests  # type: ignore[attr-defined]
        counts = dict(getattr(requests, "finished", {}))
        counts.update({k: len(v.output_token_ids) for k, v in requests.items()})
        return counts

    @torch.no_grad()
    def mint_load_merged(self, adapter_dir: str | None) -> dict[str, Any]:
        """Serves base + `adapter_dir` merged (None = plain base weights) from the next step on."""
        start = time.perf_counter()
        runner = self.model_runner  # type: ignore[attr-defined]
        model = runner.get_model()
        packed = getattr(model, "packed_modules_mapping", {}) or {}
        dtype = runner.model_config.dtype
        adapter = read_adapter(adapter_dir, dtype=dtype) if adapter_dir else None
        targets = targets_of(adapter, packed)
        modules = dict(model.named_modules())
        missing = sorted(t for t in targets if t not in modules)
        if missing:
            raise KeyError(f"adapter targets modules the served model lacks: {missing[:3]}")
        for name in sorted(targets | self._mint_dirty):
            weight = merged_weight(name, adapter, packed, lambda s: self._mint_base(s, dtype))
            _load_linear_weight(modules[name], weight)
        self._mint_dirty = targets
        return {
            "counts": self.mint_token_counts(),
            "seconds": time.perf_counter() - start,
            "modules": len(targets),
        }

    def _mint_base(self, checkpoint_name: str, dtype: torch.dtype) -> torch.Tensor:
        if checkpoint_name not in self._mint_w0:
            key = f"{checkpoint_name}.weight"
            if key not in self._mint_index:
                raise KeyError(f"base checkpoint has no {key}")
            with safe_open(str(self._mint_index[key]), framework="pt") as f:
                self._mint_w0[checkpoint_name] = f.get_tensor(key).to(dtype).contiguous()
        return self._mint_w0[checkpoint_name]


def _load_linear_weight(layer: torch.nn.Module, weight: torch.Tensor) -> None:
    """Puts a full (unsharded, TP=1) weight into a vLLM linear layer and re-runs its processing."""
    base = getattr(layer, "base_layer", layer)
    current = base.weight
    assert isinstance(current, torch.Tensor)  # a Parameter; torch types module attributes loosely
    if current.numel() == weight.numel():  # weight kept as is (GPU): copy in place
        current.data.copy_(weight.to(current.device).view_as(current))
        return
    # CPU: the layer packed its weight (oneDNN / sgl) and emptied `weight`; rebuild the pack.
    base.weight = torch.nn.Parameter(weight.to(current.device), requires_grad=False)
    quant_method = getattr(base, "quant_method", None)
    if quant_method is not None:
        quant_method.process_weights_after_loading(base)


__all__ = ["MintWorkerExtension", "shard_names"]
