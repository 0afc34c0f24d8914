"""Everything one running server holds, and how asynchronous requests are started.

Request handlers run on the event loop and never compute: they check the request, start its work
on a thread and answer with a request_id at once (see futures.py). A model's operations go to
its Sequencer, in seq_id order, and take turns with other models' (turns.py); other work
(creating a model, sampling) to a shared pool.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from mint_rl.client import ServiceClient
from mint_rl.learner.engine import LearnerSettings
from mint_rl.server.config import ServerConfig
from mint_rl.server.downloads import Signer
from mint_rl.server.futures import FutureStore, Reply, settle
from mint_rl.server.registry import Model, Registry
from mint_rl.server.turns import Turns

log = logging.getLogger(__name__)

# A model remembers this many seq_id -> request_id pairs for retried submissions.
_REMEMBERED_REQUESTS = 4096


class ServerState:
    def __init__(self, config: ServerConfig, learner_settings: LearnerSettings | None = None):
        self.config = config
        self.learner_settings = learner_settings or LearnerSettings()
        self.registry = Registry()
        # Training models are built as the in-process API builds them: the models of one base
        # model share its frozen weights (many LoRAs, one base) and all take turns on one
        # learner thread (learner_turns orders them).
        self.service = ServiceClient(learner_settings=self.learner_settings)
        self.downloads = Signer()  # links to external weights that need no API key
        self.futures = FutureStore()
        # model id -> request_id of its create_model / load_weights, so a retried one is no-op.
        self.creations: dict[str, str] = {}
        self.learner_turns = Turns()  # learner work of all models, in arrival order
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="mint-server-work")

    def model_source(self, base_model: str) -> str:
        """What to load for a client's `base_model`: its alias's folder, or the name itself."""
        return dict(self.config.model_aliases).get(base_model, base_model)

    def start(self, produce: Callable[[], Reply]) -> str:
        """Runs `produce` on the shared pool; returns the request_id of its result."""
        request_id, future = self.futures.create()
        self.pool.submit(settle, future, produce)
        return request_id

    def start_in_order(self, model: Model, seq_id: int | None,
                       produce: Callable[[], Reply]) -> dict[str, Any]:
        """Queues a model operation by seq_id; the submission's answer (request_id, model_id).

        A seq_id seen before is a retried submission: it gets the first one's request_id and
        runs nothing again."""
        seq = seq_id or None  # protobuf sends 0 for "not set"; the SDK numbers from 1
        if seq is not None and seq in model.requests:
            return {"request_id": model.requests[seq], "model_id": model.id}
        request_id, future = self.futures.create()
        if seq is not None:
            model.requests[seq] = request_id
            if len(model.requests) > 2 * _REMEMBERED_REQUESTS:
                for old in sorted(model.requests)[:_REMEMBERED_REQUESTS]:
                    del model.requests[old]

        def take_turn() -> None:
            with self.learner_turns.turn():
                settle(future, produce)

        model.sequencer.submit(seq, take_turn)
        return {"request_id": request_id, "model_id": model.id}

    def release(self, models: list[Model]) -> None:
        """Lets the models finish what is queued, then frees them (in the background)."""
        def close() -> None:
            for model in models:
                model.sequencer.close(wait=True)
                model.client.close()

        if models:
            self.pool.submit(close)

    def close(self) -> None:
        for model in list(self.registry.models.values()):
            model.sequencer.close(wait=False)
            model.client.close()
        self.service.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
