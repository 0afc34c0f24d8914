"""Per-token policy-version stamps.

A request starts on the policy version it was admitted under. When the engine's weights change
while it runs (only the `merged` strategy does that), the worker reports how many tokens each
request had produced at that moment; tokens from that index on belong to the new version.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
