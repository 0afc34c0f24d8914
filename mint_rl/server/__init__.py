"""A local server of the Tinker HTTP protocol over mint_rl: the unmodified `tinker` SDK trains
and samples through it (`mint-rl serve`; see docs/server.md).

The server needs fastapi, uvicorn, protobuf and zstandard; it never imports `tinker`.
"""

from mint_rl.server.app import create_app
from mint_rl.server.config import ServerConfig
from mint_rl.server.run import serve

__all__ = ["ServerConfig", "create_app", "serve"]
