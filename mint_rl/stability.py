"""Stability info: what a sampler records about each sequence, for the stable_reinforce loss.

A SamplingClient asked to `record_stability_info` keeps, per sampled sequence, its prompt, its
sampled tokens and the behaviour logprobs it sampled them with, under the sequence's
`sequence_id`. A stable_reinforce datum whose provenance spans name a recorded sequence then
trains against those logprobs, and the spans are checked against the recorded tokens: the
importance ratio is measured against what the sampler really did, whatever the client sends
in `logprobs` (padding, a lossy round trip, a mix-up of sequences).

Records live in this process (the in-process equivalent of Tinker's sampling session) for a day
after their last use, as in Tinker, and the oldest are dropped first once they hold more than
`max_tokens` tokens. A span naming a sequence that is not recorded (never, expired, or sampled
in another process) falls back to the datum's own `logprobs`; the `recorded_frac:mean` metric
shows how many trained tokens used recorded logprobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mint_rl.errors import InvalidInputError
from mint_rl.types import Datum, PromptProvenanceSpan, SampledProvenanceSpan

log = logging.getLogger(__name__)

DAY_S = 24 * 3600.0


@dataclass
class Recorded:
    prompt: np.ndarray  # int64, the request's prompt (shared by its samples)
    tokens: np.ndarray  # int64, the sampled tokens
    logprobs: np.ndarray  # float32, the behaviour logprob of each sampled token
    last_used: float


class StabilityStore:
    """sequence_id -> Recorded, thread-safe (samplers record from the engine's thread, learners
    read from their worker threads)."""

    def __init__(self, ttl_s: float = DAY_S, max_tokens: int = 1 << 26,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_tokens = max_tokens  # ~0.8 GB of int64 + float32 at most
        self._clock = clock
        self._lock = threading.Lock()
        self._records: OrderedDict[str, Recorded] = OrderedDict()  # least recently used first
        self._tokens = 0

    def record(self, sequence_id: str, prompt: Sequence[int], tokens: Sequence[int],
               logprobs: Sequence[float]) -> None:
        rec = Recorded(np.asarray(prompt, dtype=np.int64), np.asarray(tokens, dtype=np.int64),
                       np.asarray(logprobs, dtype=np.float32), self._clock())
        with self._lock:
            self._drop(sequence_id)
            self._records[sequence_id] = rec
            self._tokens += _size(rec)
            self._expire()

    def get(self, sequence_id: str) -> Recorded | None:
        """The record, or None; a use restarts its time to live."""
        with self._lock:
            self._expire()
            rec = self._records.get(sequence_id)
            if rec is not None:
                rec.last_used = self._clock()
                self._records.move_to_end(sequence_id)
            return rec

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def _expire(self) -> None:
        now = self._clock()
        while self._records:
            oldest_id, oldest = next(iter(self._records.items()))
            if now - oldest.last_used <= self.ttl_s and self._tokens <= self.max_tokens:
                return
            self._drop(oldest_id)

    def _drop(self, sequence_id: str) -> None:
        rec = self._records.pop(sequence_id, None)
        if rec is not None:
            self._tokens -= _size(rec)


def _size(rec: Recorded) -> int:
    return len(rec.prompt) + len(rec.tokens)


RECORDED = StabilityStore()  # this process's records (SamplingClient writes, learners read)
_warned_missing = False


def behaviour_logprobs(where: str, datum: Datum, logprobs: np.ndarray, advantages: np.ndarray,
                       store: StabilityStore = RECORDED) -> tuple[np.ndarray, np.ndarray]:
    """stable_reinforce's behaviour logprobs for one datum: the recorded ones where its
    loss_fn_input_spans name recorded sampled tokens, the datum's `logprobs` elsewhere; and a
    0/1 array marking the recorded positions. Spans that name a recorded sequence must match
    its tokens. A datum without spans is returned as it is."""
    spans = datum.loss_fn_input_spans
    recorded = np.zeros(len(logprobs), dtype=np.float32)
    if spans is None or datum.model_input_spans is None:
        return logprobs, recorded
    _check_inputs(f"{where}.model_input_spans", datum.model_input_spans,
                  np.asarray(datum.model_input.to_ints()), store)
    out = logprobs.copy()
    targets = datum.loss_fn_inputs["target_tokens"].to_numpy().reshape(-1)
    pos = 0
    for j, span in enumerate(spans):
        here = slice(pos, pos + span.length)
        pos += span.length
        if isinstance(span, PromptProvenanceSpan):
            # The cookbook's rule: stable_reinforce trains sampled tokens only.
            if np.any(advantages[here] != 0):
                raise InvalidInputError(f"{where}.loss_fn_inputs['advantages']", f"is nonzero at "
                                        f"a prompt position (loss_fn_input_spans[{j}], positions "
                                        f"{here.start}..{here.stop - 1}); stable_reinforce "
                                        "trains sampled tokens only")
            continue
        rec = _lookup(span.sequence_id, store)
        if rec is None:
            continue
        field = f"{where}.loss_fn_input_spans[{j}]"
        _check_match(field, targets[here], rec.tokens, span, "sampled tokens")
        out[here] = rec.logprobs[span.offset:span.offset + span.length]
        recorded[here] = 1.0
    return out, recorded


def _check_inputs(field: str, spans: Sequence[PromptProvenanceSpan | SampledProvenanceSpan],
                  tokens: np.ndarray, store: StabilityStore) -> None:
    """model_input positions that name a recorded sequence hold its prompt / sampled tokens."""
    pos = 0
    for j, span in enumerate(spans):
        here = tokens[pos:pos + span.length]
        pos += span.length
        rec = _lookup(span.sequence_id, store)
        if rec is None:
            continue
        if isinstance(span, PromptProvenanceSpan):
            _check_match(f"{field}[{j}]", here, rec.prompt, span, "prompt")
        else:
            _check_match(f"{field}[{j}]", here, rec.tokens, span, "sampled tokens")


def _check_match(field: str, got: np.ndarray, source: np.ndarray,
                 span: PromptProvenanceSpan | SampledProvenanceSpan, what: str) -> None:
    end = span.offset + span.length
    if end > len(source):
        raise InvalidInputError(field, f"covers positions {span.offset}..{end - 1} of the {what} "
                                       f"of sequence {span.sequence_id!r}, which has "
                                       f"{len(source)}")
    if not np.array_equal(got, source[span.offset:end]):
        raise InvalidInputError(field, f"the datum's tokens there are not the {what} of "
                                       f"sequence {span.sequence_id!r} at {span.offset}..{end - 1}")


def _lookup(sequence_id: str, store: StabilityStore) -> Recorded | None:
    global _warned_missing
    rec = store.get(sequence_id)
    if rec is None and not _warned_missing:
        _warned_missing = True
        log.warning("provenance names sequence %r, which has no stability info here (sample "
                    "with record_stability_info=True; records expire a day after last use): "
                    "its tokens train against the datum's own logprobs", sequence_id)
    return rec
