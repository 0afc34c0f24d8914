"""Expiring download links for external weights (Tinker's `get_external_weights_urls`).

The cookbook's `weights.download` fetches each file with a plain `urllib` GET and no API key,
as it would a cloud store's signed URL. So a link carries its own proof: an HMAC, under a key
that lives only in this server process, of the file it names and the time it expires. A link
is good for that one file until then (or until the server restarts), and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from mint_rl.errors import InvalidInputError, NotFoundError
from mint_rl.server import paths

PREFIX = "/downloads"  # outside /api/v1: the signature, not the API key, admits a request
LINK_LIFETIME_S = 3600


class Signer:
    def __init__(self, lifetime_s: float = LINK_LIFETIME_S) -> None:
        self._key = secrets.token_bytes(32)
        self.lifetime_s = lifetime_s

    def _signature(self, run: str, name: str, file: str, expires: int) -> str:
        message = "\0".join((run, name, file, str(expires))).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def links(self, base_url: str, run: str, name: str) -> tuple[dict[str, str], datetime]:
        """{file name: URL} for every file of external checkpoint `name`, and their expiry."""
        folder = paths.existing_checkpoint(run, f"external_weights/{name}")
        expires = int(time.time() + self.lifetime_s)
        urls = {}
        for file in sorted(f.name for f in folder.iterdir() if f.is_file()):
            signature = self._signature(run, name, file, expires)
            urls[file] = (f"{base_url.rstrip('/')}{PREFIX}/{quote(run, safe='')}/"
                          f"{quote(name, safe='')}/{quote(file, safe='')}"
                          f"?expires={expires}&signature={signature}")
        return urls, datetime.fromtimestamp(expires, UTC)

    def file(self, run: str, name: str, file: str, expires: int, signature: str) -> Path:
        """The file a link names, once its signature and expiry check out."""
        good = self._signature(run, name, file, expires)
        if not hmac.compare_digest(good, signature):
            raise InvalidInputError("signature", "does not match this link")
        if time.time() > expires:
            raise InvalidInputError("expires", "this link has expired; ask for new ones")
        folder = paths.existing_checkpoint(run, f"external_weights/{name}")
        target = folder / paths.check_part("file", file)
        if not target.is_file():
            raise NotFoundError(f"file: {file!r} is not in external weights {name!r}")
        return target
