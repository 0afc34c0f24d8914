"""Learner work of all models on the server, one operation at a time, in arrival order.

Each model's operations already run one by one (its Sequencer); across models they would run in
parallel threads, each torch op using every core, so two busy clients would slow each other down
more than they gain, and a client with many queued operations could starve one with few. With
one turn at a time in arrival order, models with work waiting take turns, one operation each:
A's next operation queues behind B's, which arrived while A's ran.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Turns:
    """A first-come, first-served lock (threading.Lock promises no order)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._serving = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._cond:
            ticket = next(self._tickets)
            self._cond.wait_for(lambda: self._serving == ticket)
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()
