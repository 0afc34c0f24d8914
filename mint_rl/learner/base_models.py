"""Many LoRAs on one base: the frozen weights of a base model, loaded once and shared.

A LoRA trains only its adapter; the base weights are read, never written. So every learner
engine of one base model can compute with the same weight tensors: each engine gets its own
module tree (its own LoRA layers, gradient-checkpointing flags and hooks) whose parameters are
the shared copy's. At 0.6B in fp32 that saves ~2 GiB per extra training client; what a client
costs on its own is its adapter, its optimizer state and its activations.

A `BaseModels` is owned by whoever creates engines (the server's state, a ServiceClient) and
passed to them: there is no process-wide registry. It holds each base model only while an engine
uses it (weak references), so the last client to close frees the weights.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel


def load_base(model_dir: Path, device: torch.device) -> PreTrainedModel:
    """The model's weights in fp32 on `device`, frozen."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.requires_grad_(False)
    torch.nn.Module.to(model, device)  # (transformers' typing of .to is narrower than torch's)
    return model


def sharing_weights(base: PreTrainedModel) -> PreTrainedModel:
    """A new module tree over `base`'s parameters (the same tensors, not copies). Buffers
    (rotary tables and the like: small) are copied, so nothing an engine does to its modules
    reaches another engine's."""
    shared = {id(p): p for p in base.parameters()}
    return copy.deepcopy(base, memo=shared)


class BaseModels:
    """Base models by folder and device, each loaded once while some engine uses it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: weakref.WeakValueDictionary[tuple[str, str], PreTrainedModel] = (
            weakref.WeakValueDictionary())

    def get(self, model_dir: Path, device: torch.device) -> PreTrainedModel:
        """The shared, frozen model. The caller keeps a reference for as long as it builds on it
        (that is what keeps the weights loaded) and never writes to its parameters."""
        key = (str(Path(model_dir).resolve()), str(device))
        with self._lock:  # two clients of a new base model load it once, not twice
            model = self._loaded.get(key)
            if model is None:
                model = load_base(Path(model_dir), device)
                self._loaded[key] = model
            return model

    def loaded(self) -> list[tuple[str, str]]:
        """(folder, device) of the base models held now."""
        with self._lock:
            return list(self._loaded.keys())

    def held(self) -> list[dict[str, str | int]]:
        """The base models held now: folder, device and the bytes of their weights."""
        with self._lock:
            items = list(self._loaded.items())
        return [{"folder": folder, "device": device, "bytes": tensor_bytes(model.parameters())}
                for (folder, device), model in items]


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of distinct tensors (a tied weight counts once)."""
    seen = {t.data_ptr(): t.numel() * t.element_size() for t in tensors}
    return sum(seen.values())
