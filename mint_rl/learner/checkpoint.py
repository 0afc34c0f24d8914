"""Checkpoints on disk: safetensors + JSON, written atomically, loaded without pickle.

    <run>/weights/<name>/           resumable state (save_state)
        adapter_model.safetensors   LoRA tensors (PEFT names)
        adapter_config.json         PEFT config: the folder is a standard PEFT adapter
        optimizer.safetensors       AdamW moments and step counts, keyed "<param>::<field>"
        mint_state.json             base model, LoRA settings, optimizer step
    <run>/sampler_weights/<name>/   adapter only (save_weights_for_sampler): vLLM and peft load it
    <run>/external_weights/<name>/  adapter only, to take away (save_weights_external); each file
                                    age-encrypted to <file>.age when recipients are given

safetensors records no device: tensors are read onto the device asked for, so a checkpoint saved
on a GPU loads on a CPU and the other way round.

Paths handed to users look like Tinker's: `mint://<run_id>/weights/<name>` (`tinker://` accepted),
or a plain local folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from mint_rl.errors import ConflictError, CorruptCheckpointError, InvalidInputError, NotFoundError
from mint_rl.models import mint_home
from mint_rl.types import LoraConfig

KINDS = ("weights", "sampler_weights", "external_weights")


def runs_dir() -> Path:
    """Where run checkpoints live: `$MINT_RL_RUNS`, default `$MINT_RL_HOME/runs`."""
    override = os.environ.get("MINT_RL_RUNS")
    return Path(override) if override else mint_home() / "runs"


def checkpoint_dir(run_id: str, kind: str, name: str) -> Path:
    if not name or "/" in name or name in (".", ".."):
        raise InvalidInputError("name", f"must be a plain folder name, got {name!r}")
    return runs_dir() / run_id / kind / name


def public_path(run_id: str, kind: str, name: str) -> str:
    return f"mint://{run_id}/{kind}/{name}"


def resolve_path(path: str) -> Path:
    """mint://run/kind/name, tinker://run/kind/name, or a local folder -> existing folder."""
    if not isinstance(path, str) or not path:
        raise InvalidInputError("path", f"must be a non-empty string, got {path!r}")
    for scheme in ("mint://", "tinker://"):
        if path.startswith(scheme):
            parts = path[len(scheme):].strip("/").split("/")
            if len(parts) != 3 or parts[1] not in KINDS:
                raise InvalidInputError(
                    "path", f"{path!r} is not of the form {scheme}<run_id>/<weights|"
                    "sampler_weights|external_weights>/<name>"
                )
            local = runs_dir() / parts[0] / parts[1] / parts[2]
            break
    else:
        local = Path(path).expanduser()
    if not (local / "adapter_model.safetensors").exists():
        raise NotFoundError(f"path: no checkpoint at {path!r} (looked in {local})")
    return local


def write_atomically(target: Path, write: Any, *, overwrite: bool) -> None:
    """Calls write(tmp_folder), then renames it to `target`: readers never see half a folder."""
    if target.exists() and not overwrite:
        raise ConflictError(f"name: a checkpoint already exists at {target}; pass overwrite=True")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_adapter(folder: Path, model: Any) -> None:
    """A standard PEFT adapter folder (peft writes safetensors by default)."""
    model.save_pretrained(folder, safe_serialization=True)


def check_age_recipients(recipients: list[str]) -> list[Any]:
    """age recipients (X25519 `age1...` or SSH public keys) parsed, or a typed error naming the
    bad one; at most 10, as Tinker allows."""
    import pyrage.ssh  # pyright: ignore[reportMissingImports]
    import pyrage.x25519  # pyright: ignore[reportMissingImports]

    if not isinstance(recipients, list) or not 1 <= len(recipients) <= 10:
        raise InvalidInputError("age_encryption_recipients", "must be a list of 1 to 10 keys")
    parsed = []
    for i, key in enumerate(recipients):
        kind = pyrage.ssh if isinstance(key, str) and key.startswith("ssh-") else pyrage.x25519
        try:
            parsed.append(kind.Recipient.from_str(key))
        except Exception as e:  # pyrage.RecipientError and type errors alike
            raise InvalidInputError(f"age_encryption_recipients[{i}]",
                                    f"is not an age or SSH public key ({e})") from None
    return parsed


def encrypt_files(folder: Path, recipients: list[Any]) -> None:
    """Replaces each file of `folder` by `<file>.age`, encrypted to every recipient."""
    from pyrage import encrypt_file  # pyright: ignore[reportAttributeAccessIssue]

    for file in sorted(f for f in folder.iterdir() if f.is_file()):
        encrypt_file(str(file), str(file.with_name(file.name + ".age")), recipients)
        file.unlink()


def write_state(folder: Path, meta: dict[str, Any], optimizer: dict[str, Any]) -> None:
    save_file({k: v.contiguous() for k, v in optimizer.items()}, folder / "optimizer.safetensors")
    (folder / "mint_state.json").write_text(json.dumps(meta, indent=2))


def state_meta(base_model: str, lora: LoraConfig, step: int) -> dict[str, Any]:
    return {"format": 1, "base_model": base_model, "lora": asdict(lora), "step": step}


def read_meta(folder: Path) -> dict[str, Any]:
    meta_file = folder / "mint_state.json"
    if not meta_file.exists():
        raise NotFoundError(f"path: {folder} is a sampler checkpoint (no mint_state.json); "
                            "resume needs a save_state checkpoint")
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as e:
        raise CorruptCheckpointError(f"path: {meta_file} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CorruptCheckpointError(f"path: {meta_file} does not hold a state description")
    return meta


def read_adapter(folder: Path, device: Any = "cpu") -> dict[str, Any]:
    """The LoRA tensors, loaded onto `device` (the files do not record one)."""
    return _read_tensors(folder / "adapter_model.safetensors", device)


def read_optimizer(folder: Path, device: Any = "cpu") -> dict[str, Any]:
    file = folder / "optimizer.safetensors"
    if not file.exists():
        raise NotFoundError(f"path: {folder} holds no optimizer state")
    return _read_tensors(file, device)


def _read_tensors(file: Path, device: Any) -> dict[str, Any]:
    try:
        return load_file(file, device=str(device))
    except FileNotFoundError:
        raise NotFoundError(f"path: {file} is missing") from None
    except Exception as e:  # safetensors' own error types: truncated, bad header, ...
        raise CorruptCheckpointError(
            f"path: {file} cannot be read ({type(e).__name__}: {e})") from None
