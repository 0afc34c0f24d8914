"""Composing actors (and plain functions) into a pipeline, in ordinary Python.

    pipeline = (
        Pipeline(prompts, capacity=8)
        .stage(sampler, "sample", workers=4)      # an actor endpoint, called once per item
        .stage(reward_model, "score")            # a user's extra actor, no library change
        .filter(lambda group: group.has_signal)  # drop items
        .stage(advantage, "compute")
        .batch(4)
    )
    async with pipeline.open() as batches:
        async for batch in batches:
            ...

Stages are connected by bounded channels, so the slowest stage sets the pace and memory stays
flat. Each stage runs `workers` tasks (output order is kept only with one worker). The stream ends
when the source is exhausted and every stage has drained; a stage that raises stops the whole
pipeline and the error comes out of `open()`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio

from mint_rl.runtime.channel import ChannelReceiver, ChannelSender, ChannelStats, channel
from mint_rl.runtime.handle import ActorRef

Worker = Callable[[ChannelReceiver[Any], ChannelSender[Any]], Awaitable[None]]


@dataclass(frozen=True)
class _Stage:
    name: str
    worker: Worker
    workers: int
    capacity: int | None


# Each worker owns (and closes) its clones of the two channel ends. A closed downstream means it
# failed, and reports that itself, or the consumer left early: either way, stop quietly.


async def _map(fn: Callable[[Any], Any], rx: ChannelReceiver[Any], tx: ChannelSender[Any]) -> None:
    with rx, tx, _quiet_if_downstream_gone():
        async for item in rx:
            result = fn(item)
            if inspect.isawaitable(result):
                result = await result
            await tx.send(result)


async def _filter(
    keep: Callable[[Any], Any], rx: ChannelReceiver[Any], tx: ChannelSender[Any]
) -> None:
    with rx, tx, _quiet_if_downstream_gone():
        async for item in rx:
            verdict = keep(item)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict:
                await tx.send(item)


async def _batch(size: int, rx: ChannelReceiver[Any], tx: ChannelSender[Any]) -> None:
    with rx, tx, _quiet_if_downstream_gone():
        batch: list[Any] = []
        async for item in rx:
            batch.append(item)
            if len(batch) == size:
                await tx.send(batch)
                batch = []
        if batch:
            await tx.send(batch)


@contextmanager
def _quiet_if_downstream_gone() -> Iterator[None]:
    with suppress(anyio.BrokenResourceError):
        yield


class Pipeline:
    """A source followed by stages; build it with `stage`, `filter`, `batch`, run it with `open`.

    Each builder method returns a new pipeline, so a pipeline can be extended without changing
    the one it came from.
    """

    def __init__(
        self,
        source: Iterable[Any] | AsyncIterable[Any],
        *,
        capacity: int = 16,
        stages: tuple[_Stage, ...] = (),
    ) -> None:
        """
        Args:
            source: the items to feed in (a list, a generator, an async generator...).
            capacity: default bound of the channel after each stage.
        """
        self._source = source
        self._capacity = capacity
        self._stages = stages
        self._channels: list[ChannelSender[Any]] = []

    def stage(
        self,
        target: ActorRef[Any] | Callable[[Any], Any],
        endpoint: str | Callable[..., Any] | None = None,
        *,
        workers: int = 1,
        name: str | None = None,
        capacity: int | None = None,
    ) -> Pipeline:
        """Transform every item with `target(item)`, or `target.call(endpoint, item)` for an actor.

        Args:
            target: an actor handle (with `endpoint`) or a sync or async function.
            workers: items handled at once; more than 1 may reorder the output.
            capacity: bound of this stage's output channel (default: the pipeline's).
        """
        if endpoint is not None:
            fn: Callable[[Any], Any] = partial(target.call, endpoint)  # type: ignore[union-attr]
            label = f"{target.name}.{endpoint if isinstance(endpoint, str) else endpoint.__name__}"  # type: ignore[union-attr]
        else:
            fn = target  # type: ignore[assignment]
            label = getattr(target, "__name__", "stage")
        return self._then(name or label, partial(_map, fn), workers, capacity)

    def filter(self, keep: Callable[[Any], Any], *, name: str | None = None) -> Pipeline:
        """Pass on only the items for which `keep(item)` (sync or async) is true."""
        label = f"filter({getattr(keep, '__name__', '')})"
        return self._then(name or label, partial(_filter, keep))

    def batch(self, size: int, *, name: str | None = None) -> Pipeline:
        """Group items into lists of `size`; the last list may be shorter."""
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        return self._then(name or f"batch({size})", partial(_batch, size))

    def _then(
        self, name: str, worker: Worker, workers: int = 1, capacity: int | None = None
    ) -> Pipeline:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        stage = _Stage(name, worker, workers, capacity)
        return Pipeline(self._source, capacity=self._capacity, stages=(*self._stages, stage))

    @asynccontextmanager
    async def open(self) -> AsyncIterator[ChannelReceiver[Any]]:
        """Run the pipeline; yields the channel of final items. Leaving early cancels it."""
        tx, rx = channel(self._capacity, "source")
        self._channels = [tx]
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._feed, tx, name="pipeline:source")
            for stage in self._stages:
                out_tx, out_rx = channel(stage.capacity or self._capacity, stage.name)
                self._channels.append(out_tx)
                with rx, out_tx:  # each worker owns clones; the originals close here
                    for _ in range(stage.workers):
                        tg.start_soon(stage.worker, rx.clone(), out_tx.clone())
                rx = out_rx
            try:
                with rx:
                    yield rx
            finally:
                tg.cancel_scope.cancel()

    async def collect(self) -> list[Any]:
        """Run the pipeline to the end and return every final item."""
        async with self.open() as items:
            return [item async for item in items]

    def statistics(self) -> tuple[ChannelStats, ...]:
        """Depth of the channel after the source and after each stage, of the current run."""
        return tuple(tx.statistics() for tx in self._channels)

    async def _feed(self, tx: ChannelSender[Any]) -> None:
        with tx, _quiet_if_downstream_gone():
            if isinstance(self._source, AsyncIterable):
                async for item in self._source:
                    await tx.send(item)
            else:
                for item in self._source:
                    await tx.send(item)
