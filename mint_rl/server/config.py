"""How a server is set up, and the safety rules checked before it starts."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from mint_rl.errors import InvalidInputError

API_KEY_ENV = "MINT_RL_API_KEY"
# The tinker SDK refuses, before sending anything, an API key that does not start with this.
API_KEY_PREFIX = "tml-"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # None: anyone who can reach the port may train; allowed on a loopback address only.
    api_key: str | None = None
    # Largest request body, compressed or not (the SDK sends forward_backward in ~5 MB chunks).
    max_request_bytes: int = 64 * 2**20
    # retrieve_future holds a poll this long before answering "not ready" (the SDK waits 45 s).
    long_poll_s: float = 40.0
    # A model's operations run in seq_id order; a seq_id that has not arrived after this long
    # (its request was lost or refused unread) is skipped so later ones are not held forever.
    seq_gap_timeout_s: float = 60.0
    # Tell the SDK to zstd-compress forward_backward bodies (worth it off-machine only).
    compress_forward_backward: bool = False
    # Datums per forward_backward request the SDK sends (None: its default, 1024). A batch
    # over this goes as several requests at once, which the server applies in seq_id order.
    forward_backward_chunk_len: int | None = None
    # A session with no heartbeat and no request for this long is finished and its models are
    # freed (the SDK heartbeats every 10 s and warns after 2 minutes without one).
    session_timeout_s: float = 600.0
    # (name, folder): a client asking for base model `name` gets the model in `folder`, for
    # recipes that hard-code a hub model name (the cookbook's twenty_questions answerer).
    model_aliases: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name, folder in self.model_aliases:
            if not name or not (Path(folder).expanduser() / "config.json").is_file():
                raise InvalidInputError("model_aliases", f"{name}={folder}: give NAME=FOLDER, "
                                                         "FOLDER a model folder with config.json")
        if self.api_key is not None and not self.api_key.startswith(API_KEY_PREFIX):
            raise InvalidInputError(
                "api_key", f"must start with {API_KEY_PREFIX!r}: the tinker SDK sends no other key")
        if not is_loopback(self.host) and self.api_key is None:
            raise InvalidInputError(
                "host", f"{self.host!r} is reachable from other machines; set an API key "
                f"(--api-key or ${API_KEY_ENV}) to serve on it, or bind 127.0.0.1")
        if not self.session_timeout_s > 0:
            raise InvalidInputError("session_timeout_s", f"must be > 0, got "
                                                         f"{self.session_timeout_s}")
        if self.max_request_bytes < 1024:
            raise InvalidInputError("max_request_bytes", f"must be >= 1024, got "
                                                         f"{self.max_request_bytes}")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything, so treat it as public
        return False


def api_key_from_env(explicit: str | None) -> str | None:
    """The --api-key value, else $MINT_RL_API_KEY, else None (an empty value counts as unset)."""
    return explicit or os.environ.get(API_KEY_ENV) or None


def parse_alias(text: str) -> tuple[str, str]:
    """`NAME=FOLDER` (the --model-alias option) -> (NAME, absolute FOLDER)."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise InvalidInputError("model_alias", f"must be NAME=FOLDER, got {text!r}")
    return name, str(Path(folder).expanduser().resolve())
