"""`tinker://<run_id>/<kind>/<name>` paths <-> folders in the server's storage.

Clients name checkpoints and send these paths, so each part is checked to be a plain folder
name and the final folder must lie inside the storage root: `..`, absolute parts, separators and
unknown kinds are refused, and nothing outside the root is ever read, listed or deleted.

The storage root is mint_rl's runs folder (`$MINT_RL_RUNS`): the training clients write their
checkpoints there as `<run_id>/<kind>/<name>`, and the server's run ids are its model ids.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mint_rl.errors import InvalidInputError, NotFoundError
from mint_rl.learner import checkpoint as ckpt

SCHEME = "tinker://"
# path segment -> the SDK's checkpoint_type
KINDS = {"weights": "training", "sampler_weights": "sampler", "external_weights": "external"}
RUN_INFO = "server_run.json"  # what the server knows of a run, next to its checkpoint folders
TTLS = "checkpoint_ttl.json"  # checkpoint_id -> when it expires (ISO time), per run


def storage_root() -> Path:
    return ckpt.runs_dir()


def check_part(field: str, part: str) -> str:
    """A single, plain folder name: no separators, no `.`/`..`, nothing hidden or odd."""
    if (not part or part in (".", "..") or part.startswith(".") or "/" in part or "\\" in part
            or "\0" in part or len(part) > 200 or not part.isprintable()):
        raise InvalidInputError(field, f"{part!r} is not a plain name (no '/', '\\', '..', "
                                       "leading '.', or control characters)")
    return part


def parse(path: str) -> tuple[str, str, str]:
    """`tinker://run/kind/name` -> (run, kind, name), every part checked."""
    if not isinstance(path, str) or not path.startswith(SCHEME):
        raise InvalidInputError("path", f"must be a tinker://<run_id>/<weights|sampler_weights>/"
                                        f"<name> path, got {path!r}")
    parts = path[len(SCHEME):].split("/")
    if len(parts) != 3:
        raise InvalidInputError("path", f"{path!r} must have exactly three parts after tinker://")
    run, kind, name = parts
    if kind not in KINDS:
        raise InvalidInputError("path", f"{path!r}: kind must be one of {sorted(KINDS)}")
    return check_part("path", run), kind, check_part("path", name)


def folder(run: str, kind: str, name: str) -> Path:
    """The checkpoint's folder, proven to lie inside the storage root (symlinks resolved)."""
    root = storage_root().resolve()
    target = (root / check_part("run_id", run) / kind / check_part("name", name)).resolve()
    if kind not in KINDS or not target.is_relative_to(root):
        raise InvalidInputError("path", "does not name a checkpoint inside the server's storage")
    return target


def existing_folder(path: str) -> Path:
    """The folder of an existing checkpoint named by a tinker path."""
    target = folder(*parse(path))
    if not (target / "adapter_model.safetensors").is_file():
        raise NotFoundError(f"path: no checkpoint at {path!r}")
    return target


def existing_checkpoint(run: str, checkpoint_id: str) -> Path:
    """The folder of checkpoint `<kind>/<name>` of a run (encrypted or not)."""
    kind, _, name = checkpoint_id.partition("/")
    if kind not in KINDS:
        raise InvalidInputError("checkpoint_id", f"must be <{'|'.join(KINDS)}>/<name>, "
                                                 f"got {checkpoint_id!r}")
    target = folder(run, kind, name)
    if not target.is_dir():
        raise NotFoundError(f"checkpoint_id: no checkpoint {checkpoint_id!r} in run {run!r}")
    return target


def public_path(run: str, kind: str, name: str) -> str:
    return f"{SCHEME}{run}/{kind}/{name}"


def from_mint_path(mint_path: str) -> str:
    """mint_rl's `mint://run/kind/name` (what its TrainingClient returns) as a tinker path."""
    run, kind, name = mint_path.removeprefix("mint://").split("/")
    return public_path(run, kind, name)


def list_checkpoints(run: str) -> list[dict[str, Any]]:
    """The run's checkpoints, newest last, as the SDK's Checkpoint objects."""
    root = storage_root().resolve() / check_part("run_id", run)
    expiries = read_ttls(run)
    found = []
    for kind, checkpoint_type in KINDS.items():
        base = root / kind
        for entry in sorted(base.iterdir()) if base.is_dir() else []:
            if entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
                continue  # temporary folders of a save in progress, or not ours
            stat = entry.stat()
            found.append({
                "checkpoint_id": f"{kind}/{entry.name}", "checkpoint_type": checkpoint_type,
                "time": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
                "tinker_path": public_path(run, kind, entry.name),
                "size_bytes": sum(f.stat().st_size for f in entry.iterdir() if f.is_file()),
                "expires_at": expiries.get(f"{kind}/{entry.name}"),
            })
    return sorted(found, key=lambda c: c["time"])


def delete_checkpoint(run: str, checkpoint_id: str) -> None:
    shutil.rmtree(existing_checkpoint(run, checkpoint_id))
    set_ttl(run, checkpoint_id, None)


def list_runs() -> list[str]:
    """The runs this server made (they have its run info), most recently active first."""
    root = storage_root()
    runs = [d for d in root.iterdir() if (d / RUN_INFO).is_file()] if root.is_dir() else []
    runs.sort(key=lambda d: max((f.stat().st_mtime for f in d.rglob("*")), default=0.0),
              reverse=True)
    return [d.name for d in runs]


# --------------------------------------------------------------------------------------------
# Checkpoint TTLs: a checkpoint with a TTL is deleted once it has passed (sweep_expired).


def read_ttls(run: str) -> dict[str, str]:
    try:
        ttls = json.loads((storage_root() / check_part("run_id", run) / TTLS).read_text())
    except (OSError, ValueError):
        return {}
    return ttls if isinstance(ttls, dict) else {}


def set_ttl(run: str, checkpoint_id: str, ttl_seconds: int | None) -> str | None:
    """Sets (or with None clears) when a checkpoint expires; returns the expiry time."""
    if ttl_seconds is not None and (isinstance(ttl_seconds, bool) or ttl_seconds <= 0):
        raise InvalidInputError("ttl_seconds", f"must be a positive number of seconds or null, "
                                               f"got {ttl_seconds!r}")
    ttls = read_ttls(run)
    expires = None
    if ttl_seconds is None:
        ttls.pop(checkpoint_id, None)
    else:
        expires = (datetime.now(UTC) + timedelta(seconds=ttl_seconds)).isoformat()
        ttls[checkpoint_id] = expires
    run_dir = storage_root() / check_part("run_id", run)
    if run_dir.is_dir():
        tmp = run_dir / f".{TTLS}.tmp"
        tmp.write_text(json.dumps(ttls, indent=2))
        tmp.replace(run_dir / TTLS)
    return expires


def sweep_expired() -> list[str]:
    """Deletes the checkpoints whose TTL has passed; returns their tinker paths."""
    now = datetime.now(UTC)
    gone = []
    for run in list_runs():
        for checkpoint_id, expires in read_ttls(run).items():
            if datetime.fromisoformat(expires) <= now:
                try:
                    delete_checkpoint(run, checkpoint_id)
                except NotFoundError:
                    set_ttl(run, checkpoint_id, None)
                gone.append(public_path(run, *checkpoint_id.split("/", 1)))
    return gone


def write_run_info(run: str, info: dict[str, Any]) -> None:
    """Remembers a run's base model and LoRA rank, for sampling its checkpoints later."""
    run_dir = storage_root() / check_part("run_id", run)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{RUN_INFO}.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(run_dir / RUN_INFO)


def read_run_info(run: str) -> dict[str, Any] | None:
    file = storage_root() / check_part("run_id", run) / RUN_INFO
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
