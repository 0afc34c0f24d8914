"""The policy versions a sampler serves, and the version of every token it samples.

`VersionStore`: policy_version -> the local copy of its adapter folder. A version's folder is
copied when it is added, because the learner may overwrite its folder (the next save under the
same name) while clients of that version still sample it. The newest `keep_versions` adapter
versions are kept; older ones are evicted and their clients get `PolicyVersionNotFoundError`.
The base weights (version 0 unless numbered otherwise, no folder) and folders nobody numbered
(negative versions) are never evicted.

`VersionStamps`: per-token policy-version stamps. A request starts on the policy version it was
admitted under. When the engine's weights change while it runs (only the `merged` strategy does
that), the worker reports how many tokens each request had produced at that moment; tokens from
that index on belong to the new version.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mint_rl.errors import InvalidInputError, NotFoundError
from mint_rl.sampler.lora_merge import check_adapter_dir


class PolicyVersionNotFoundError(NotFoundError):
    """A policy version that was evicted, or never loaded."""


class VersionStore:
    """policy_version -> local adapter copy (None: the base weights), in a temporary folder."""

    def __init__(self, keep_versions: int) -> None:
        self.keep_versions = keep_versions
        self._copies: dict[int, Path | None] = {}
        # policy_version -> the folder it was added from. Outlives eviction (until `reset`), so a
        # folder looked up again keeps its number and its clients learn it was evicted, rather
        # than get a new copy of a folder the learner may have overwritten since.
        self._sources: dict[int, Path | None] = {}
        self._unnumbered = itertools.count(-1, -1)
        self._copy_ids = itertools.count()
        self._root = Path(tempfile.mkdtemp(prefix="mint-sampler-"))

    def add(self, adapter_dir: str | Path | None, policy_version: int | None, *,
            exclusive: bool = True) -> int:
        """Makes `adapter_dir` (None: the base weights) servable as `policy_version`; returns the
        number it is served under.

        `policy_version` None: the version the folder was added under before, or else a new
        negative (untracked) one; 0 for the base weights. A number another folder holds is an
        error, unless `exclusive` is False: then the folder gets an untracked number (several
        learners share one engine, and each numbers its own steps). Does not evict (see `evict`).
        """
        source = check_adapter_dir(adapter_dir, "model_path") if adapter_dir is not None else None
        if policy_version is not None and (
            not isinstance(policy_version, int) or isinstance(policy_version, bool)
        ):
            raise InvalidInputError("policy_version", f"must be an int, got {policy_version!r}")
        if policy_version is None:
            known = [v for v, s in self._sources.items() if s == source]
            if known:
                return known[-1]
            free_zero = source is None and 0 not in self._sources
            policy_version = 0 if free_zero else next(self._unnumbered)
        if policy_version in self._copies:
            if self._sources.get(policy_version) != source:
                if not exclusive:
                    return self.add(adapter_dir, None)
                raise InvalidInputError(
                    "policy_version",
                    f"{policy_version} is already taken by {self._sources[policy_version]}",
                )
            return policy_version
        self._copies[policy_version] = self._copy(source, policy_version)
        self._sources[policy_version] = source
        return policy_version

    def _copy(self, source: Path | None, policy_version: int) -> Path | None:
        if source is None:
            return None
        dest = self._root / f"v{policy_version}-{next(self._copy_ids)}"
        shutil.copytree(source, dest)
        return dest

    def folder(self, policy_version: int) -> Path | None:
        """The local copy of `policy_version`'s adapter (None: the base weights)."""
        try:
            return self._copies[policy_version]
        except KeyError:
            raise PolicyVersionNotFoundError(
                f"policy_version: {policy_version} is not served (evicted, or never loaded); "
                f"the sampler keeps the newest {self.keep_versions} versions"
            ) from None

    def __contains__(self, policy_version: object) -> bool:
        return policy_version in self._copies

    def evict(self, in_use: Path | None = None) -> list[int]:
        """Removes the adapter versions older than the newest `keep_versions`; returns them.

        The files of `in_use` (the folder the served weights come from) stay.
        """
        adapters = sorted(v for v, p in self._copies.items() if p is not None and v >= 0)
        evicted = adapters[: -self.keep_versions]
        for policy_version in evicted:
            self._remove(policy_version, in_use)
        return evicted

    def reset(self, in_use: Path | None = None) -> list[int]:
        """Removes every version and forgets every folder's number; returns the versions."""
        removed = list(self._copies)
        for policy_version in removed:
            self._remove(policy_version, in_use)
        self._sources.clear()
        return removed

    def _remove(self, policy_version: int, in_use: Path | None) -> None:
        path = self._copies.pop(policy_version)
        if path is not None and path != in_use:
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        """Deletes every copy. Safe to call twice."""
        shutil.rmtree(self._root, ignore_errors=True)


# ---------------------------------------------------------------- per-token stamps


@dataclass
class _Track:
    start_policy_version: int
    switches: list[tuple[int, int]] = field(default_factory=list)  # (token index, version)


def engine_request_key(engine_request_id: str) -> str:
    """vLLM appends `-<random suffix>` to the id we pass; strip it to get ours back."""
    return engine_request_id.rpartition("-")[0] or engine_request_id


class VersionStamps:
    """Tracks the requests in flight and the weight switches each one saw."""

    def __init__(self) -> None:
        self._active: dict[str, _Track] = {}

    def start(self, key: str, policy_version: int) -> None:
        self._active[key] = _Track(start_policy_version=policy_version)

    def switch(self, token_counts: dict[str, int], policy_version: int) -> None:
        """Weights changed to `policy_version`; `token_counts` maps engine request ids to tokens
        made.

        A request the worker does not know had not been scheduled yet: all its tokens are new.
        """
        ours = {engine_request_key(k): n for k, n in token_counts.items()}
        for key, track in self._active.items():
            track.switches.append((ours.get(key, 0), policy_version))

    def finish(self, key: str, num_tokens: int) -> list[int]:
        """The policy version of each of the request's `num_tokens` tokens; stops tracking it."""
        track = self._active.pop(key)
        versions = [track.start_policy_version] * num_tokens
        for index, version in track.switches:
            for i in range(min(index, num_tokens), num_tokens):
                versions[i] = version
        return versions

    def discard(self, key: str) -> None:
        self._active.pop(key, None)

    def __len__(self) -> int:
        return len(self._active)
