"""Runs one model's operations in seq_id order, one at a time.

The SDK numbers a training client's requests 1, 2, 3, ... and relies on the server to apply them
in that order, but they can arrive out of order: the chunks of one large forward_backward are
sent together, the first one last. So an operation waits here until every lower seq_id has been
started. A seq_id that never arrives (its request was lost, or refused before it could be read)
is skipped after `gap_timeout_s`, so it cannot hold the model forever.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], None]


class Sequencer:
    def __init__(self, name: str, *, next_seq: int = 1, gap_timeout_s: float = 60.0) -> None:
        self.name = name
        self._next = next_seq
        self._waiting: dict[int, Job] = {}
        self._lock = threading.Lock()
        # One thread: a job starts only after the one before it has finished.
        self._runner = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"mint-server-{name}")
        self._gap_timeout_s = gap_timeout_s
        self._gap_timer: threading.Timer | None = None

    def submit(self, seq_id: int | None, job: Job) -> None:
        """Runs `job` once every lower seq_id has run. None (no order asked for) and a seq_id
        already passed run after what is queued."""
        with self._lock:
            if seq_id is None or seq_id < self._next:
                self._runner.submit(job)
                return
            self._waiting[seq_id] = job
            self._release()

    def _release(self) -> None:
        """Hands the jobs that are next in line to the runner (lock held)."""
        advanced = False
        while self._next in self._waiting:
            self._runner.submit(self._waiting.pop(self._next))
            self._next += 1
            advanced = True
        # The gap's clock starts when the line stops moving.
        if self._gap_timer is not None and (advanced or not self._waiting):
            self._gap_timer.cancel()
            self._gap_timer = None
        if self._waiting and self._gap_timer is None:
            self._gap_timer = threading.Timer(self._gap_timeout_s, self._skip_gap)
            self._gap_timer.daemon = True
            self._gap_timer.start()

    def _skip_gap(self) -> None:
        with self._lock:
            self._gap_timer = None
            if not self._waiting or self._next in self._waiting:
                return
            first = min(self._waiting)
            log.warning("%s: seq_id %d..%d never arrived; running seq_id %d", self.name,
                        self._next, first - 1, first)
            self._next = first
            self._release()

    def close(self, wait: bool = True) -> None:
        with self._lock:
            if self._gap_timer is not None:
                self._gap_timer.cancel()
            self._waiting.clear()
        self._runner.shutdown(wait=wait)
