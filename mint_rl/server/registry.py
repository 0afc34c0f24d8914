"""What the server holds: sessions, training models and sampling sessions, by id.

Ids follow the SDK: a model is `<session_id>:train:<model_seq_id>` (the SDK derives it itself
when it creates a model by loading a checkpoint), a sampling session
`<session_id>:sample:<sampling_session_seq_id>`. A model id is also its run id in tinker paths.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mint_rl.server.errors import HTTPError
from mint_rl.server.sequencer import Sequencer

if TYPE_CHECKING:
    from mint_rl.client import TrainingClient
    from mint_rl.sampler.sampling_client import SamplingClient


def model_id(session_id: str, model_seq_id: int) -> str:
    return f"{session_id}:train:{model_seq_id}"


def sampler_id(session_id: str, seq_id: int) -> str:
    return f"{session_id}:sample:{seq_id}"


@dataclass
class Session:
    id: str
    user_metadata: dict[str, Any]
    last_heartbeat: float = field(default_factory=time.time)
    finished: bool = False


@dataclass
class Model:
    id: str
    session_id: str
    base_model: str
    client: TrainingClient
    sequencer: Sequencer
    # seq_id -> request_id: a submission the SDK retries gets the request_id it was first given.
    requests: dict[int, str] = field(default_factory=dict)
    last_request_time: float = field(default_factory=time.time)


@dataclass
class Sampler:
    id: str
    session_id: str
    base_model: str
    model_path: str | None  # the tinker path it samples, None for the base model
    folder: Path | None
    client: SamplingClient | None = None  # made on first use: it may start a vLLM engine
    source: str | None = None  # what to load for base_model (its alias's folder), if not itself
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sampling_client(self) -> SamplingClient:
        with self.lock:
            if self.client is None:
                from mint_rl.sampler.sampling_client import SamplingClient

                self.client = SamplingClient(self.source or self.base_model, self.folder)
            return self.client


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sessions: dict[str, Session] = {}
        self.models: dict[str, Model] = {}
        self.samplers: dict[str, Sampler] = {}

    def new_session(self, user_metadata: dict[str, Any]) -> Session:
        session = Session(id=uuid.uuid4().hex[:16], user_metadata=user_metadata)
        with self._lock:
            self.sessions[session.id] = session
        return session

    def session(self, session_id: str) -> Session:
        with self._lock:
            session = self.sessions.get(session_id)
        if session is None:
            raise HTTPError(404, f"session_id: unknown session {session_id!r}")
        if session.finished:
            raise HTTPError(410, f"session_id: session {session_id!r} has finished")
        return session

    def model(self, model_id: str) -> Model:
        with self._lock:
            model = self.models.get(model_id)
        if model is None:
            raise HTTPError(404, f"model_id: unknown model {model_id!r}")
        model.last_request_time = time.time()
        return model

    def add_model(self, model: Model) -> None:
        with self._lock:
            if model.id in self.models:  # the SDK never reuses a model_seq_id
                raise HTTPError(400, f"model_seq_id: model {model.id!r} already exists")
            self.models[model.id] = model

    def remove_model(self, model_id: str) -> list[Model]:
        with self._lock:
            model = self.models.pop(model_id, None)
        return [model] if model is not None else []

    def sampler(self, sampler_id: str) -> Sampler:
        with self._lock:
            sampler = self.samplers.get(sampler_id)
        if sampler is None:
            raise HTTPError(404, f"sampling_session_id: unknown sampling session {sampler_id!r}")
        return sampler

    def add_sampler(self, sampler: Sampler) -> None:
        with self._lock:
            self.samplers[sampler.id] = sampler

    def expire(self, timeout_s: float) -> list[Model]:
        """Finishes the sessions that showed no sign of life (heartbeat, or a request to one of
        their models) for `timeout_s`; returns their models, as `finish` does."""
        now = time.time()
        with self._lock:
            alive = {s.id: s.last_heartbeat for s in self.sessions.values() if not s.finished}
            for m in self.models.values():
                if m.session_id in alive:
                    alive[m.session_id] = max(alive[m.session_id], m.last_request_time)
        return [m for sid, seen in alive.items() if now - seen > timeout_s
                for m in self.finish(sid)]

    def finish(self, session_id: str) -> list[Model]:
        """Marks the session finished and forgets its models and samplers; returns the models
        (their checkpoints stay on disk) so the caller can release them."""
        with self._lock:
            session = self.sessions.get(session_id)
            if session is None:
                raise HTTPError(404, f"session_id: unknown session {session_id!r}")
            session.finished = True
            models = [m for m in self.models.values() if m.session_id == session_id]
            for m in models:
                del self.models[m.id]
            for s in [s for s in self.samplers.values() if s.session_id == session_id]:
                del self.samplers[s.id]
        return models
