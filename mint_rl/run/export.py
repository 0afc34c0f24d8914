"""`mint-rl export`: a checkpoint as a folder that transformers, peft and vLLM load as it is.

    export_adapter(find_checkpoint("runs/arithmetic"), Path("out/adapter"))
    export_merged(find_checkpoint("runs/arithmetic"), Path("out/merged"))

- An adapter folder: `adapter_config.json` + `adapter_model.safetensors` (a standard PEFT
  adapter, the learner's optimizer state left out) and the base model's tokenizer files, so the
  folder names and carries everything but the base weights. `base_model_name_or_path` is the hub
  id for hub models, and the local folder the adapter was trained on otherwise. That includes the
  bundled default model: it is a dequantized Q4_1 GGUF of SmolLM2-135M-Instruct, not the hub's
  weights, so the adapter names the folder holding the weights it was trained with.
- A merged model folder: the LoRA folded into the base weights (peft's `merge_and_unload`),
  `config.json`, `model.safetensors`, `generation_config.json` and the tokenizer. It is written
  in float32, the precision the learner trains in, so it computes the learner's logprobs.

Everything is written into a temporary folder and renamed into place. An existing non-empty
`out` is refused unless `force` is set, and then only if it holds an earlier export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mint_rl.errors import ConflictError
from mint_rl.learner.checkpoint import write_atomically
from mint_rl.models import DEFAULT_MODEL, resolve_model
from mint_rl.run.run_folder import CheckpointRef


def export(checkpoint: CheckpointRef, out: Path, *, merged: bool = False,
           force: bool = False) -> Path:
    """The adapter folder, or with `merged` the merged model folder, written to `out`."""
    if merged:
        return export_merged(checkpoint, out, force=force)
    return export_adapter(checkpoint, out, force=force)


def export_adapter(checkpoint: CheckpointRef, out: Path, *, force: bool = False) -> Path:
    _check_out(out, force)
    config = json.loads((checkpoint.adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_model_reference(checkpoint.base_model)
    tokenizer = _tokenizer(checkpoint.base_model)

    def write(folder: Path) -> None:
        shutil.copyfile(checkpoint.adapter_dir / "adapter_model.safetensors",
                        folder / "adapter_model.safetensors")
        (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        tokenizer.save_pretrained(folder)

    write_atomically(out, write, overwrite=True)
    return out


def export_merged(checkpoint: CheckpointRef, out: Path, *, force: bool = False) -> Path:
    _check_out(out, force)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(resolve_model(checkpoint.base_model),
                                                dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(checkpoint.adapter_dir)).merge_and_unload()
    tokenizer = _tokenizer(checkpoint.base_model)

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    write_atomically(out, write, overwrite=True)
    return out


def base_model_reference(base_model: str) -> str:
    """What an exported adapter calls its base: a hub id where the hub's weights are the ones
    trained on, else the absolute local folder."""
    if Path(base_model).expanduser().is_dir() or base_model == DEFAULT_MODEL:
        return str(resolve_model(base_model))
    return base_model


def _tokenizer(base_model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(base_model))


def _check_out(out: Path, force: bool) -> None:
    if out.is_file():
        raise ConflictError(f"out: {out} is a file; give a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise ConflictError(f"out: {out} is not empty; pass --force (force=True) to replace "
                            "an earlier export")
    if not any((out / name).is_file() for name in ("adapter_config.json", "config.json")):
        raise ConflictError(f"out: {out} is not empty and holds no earlier export "
                            "(no adapter_config.json or config.json); not replacing it")
