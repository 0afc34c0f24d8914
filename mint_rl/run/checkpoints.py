"""Whole-run checkpoints: what a run needs to continue exactly where it stopped.

    <run folder>/checkpoints/step-000010.json    one manifest per checkpoint

A manifest names the learner state (adapter + Adam moments + policy version, written by
`save_state`), the step the run resumes at, the batches that were sampled or in flight but not
trained (the resumed run samples them again, once: batches are a function of the seed and their
index, so no prompt is skipped or repeated), and a SHA-256 of every file of the learner state.

Writing is ordered so that a crash at any point leaves the previous checkpoint usable: the
learner state is written atomically first, the manifest last (temp file, fsync, rename). Reading
takes the newest manifest whose files all exist and match their checksums; a half-written or
corrupt checkpoint is reported and skipped, never loaded. The newest `keep_last` are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mint_rl.learner.checkpoint import resolve_path
from mint_rl.terminal import console

FORMAT = 1


@dataclass(frozen=True)
class RunCheckpoint:
    step: int
    """Steps completed: the run resumes at this step."""
    state_path: str
    """The learner's save_state path (mint://...): adapter, optimizer, policy version."""
    policy_version: int
    pending_batches: list[int] = field(default_factory=list)
    """Batches sampled or in flight at the checkpoint but not trained: sampled again on resume."""
    files: dict[str, str] = field(default_factory=dict)
    """File of the learner state (relative to its folder) -> SHA-256."""
    format: int = FORMAT


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _sha256(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_json_atomically(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())  # the rename below must not land before the bytes do
    os.replace(tmp, path)


class RunCheckpoints:
    """The checkpoints of one run folder."""

    def __init__(self, log_dir: Path, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last: must be >= 1, got {keep_last}")
        self.folder = log_dir / "checkpoints"
        self.keep_last = keep_last

    def manifests(self) -> list[Path]:
        """Manifest files, newest step first."""
        return sorted(self.folder.glob("step-*.json"), reverse=True)

    def record(self, step: int, state_path: str, policy_version: int,
               pending_batches: list[int]) -> RunCheckpoint:
        """Writes the manifest of a learner state just saved; drops checkpoints past keep_last."""
        checkpoint = RunCheckpoint(step, state_path, policy_version, sorted(pending_batches),
                                   _checksums(resolve_path(state_path)))
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(self.folder / f"step-{step:06d}.json", asdict(checkpoint))
        for old in self.manifests()[self.keep_last:]:
            self._delete(old)
        return checkpoint

    def latest(self) -> RunCheckpoint | None:
        """The newest checkpoint that is whole and unchanged; None for a new run."""
        for manifest in self.manifests():
            problem, checkpoint = self.verify(manifest)
            if checkpoint is not None:
                return checkpoint
            console.print(f"[yellow]skipping checkpoint {manifest.name}: {problem}[/]")
        return None

    def verify(self, manifest: Path) -> tuple[str, RunCheckpoint | None]:
        """("", the checkpoint) when whole and unchanged, else (what is wrong, None)."""
        try:
            checkpoint = RunCheckpoint(**json.loads(manifest.read_text()))
        except (ValueError, TypeError) as e:
            return f"unreadable manifest ({e})", None
        if checkpoint.format != FORMAT:
            return f"format {checkpoint.format}, expected {FORMAT}", None
        try:
            folder = resolve_path(checkpoint.state_path)
        except Exception as e:  # the learner state is gone
            return str(e), None
        for name, expected in checkpoint.files.items():
            file = folder / name
            if not file.is_file():
                return f"{file} is missing", None
            if _sha256(file) != expected:
                return f"{file} does not match its checksum", None
        return "", checkpoint

    def _delete(self, manifest: Path) -> None:
        """Removes a manifest and the learner state it names."""
        try:
            state = json.loads(manifest.read_text()).get("state_path")
            if state:
                shutil.rmtree(resolve_path(state), ignore_errors=True)
        except Exception:  # an unreadable manifest: its state cannot be found anyway
            pass
        manifest.unlink(missing_ok=True)
