"""Typed errors. Names follow Tinker's SDK so code written against it catches the same things."""

from __future__ import annotations


class MintError(Exception):
    """Base of every error mint_rl raises on purpose."""


TinkerError = MintError


class BadRequestError(MintError):
    """The request was wrong; retrying it unchanged will fail again."""


class InvalidInputError(BadRequestError, ValueError):
    """A value is out of range, of the wrong length, not finite, ... The message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class MissingLossInputError(BadRequestError, KeyError):
    """`loss_fn_inputs` lacks a key the loss needs."""

    def __init__(
        self, loss_fn: str, missing: list[str], required: list[str], hint: str = ""
    ) -> None:
        self.missing = missing
        message = (
            f"loss_fn={loss_fn!r} needs loss_fn_inputs keys {required}; missing {missing}"
            + (f" ({hint})" if hint else "")
        )
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0])


class ConflictError(BadRequestError):
    """The request conflicts with the current state: a checkpoint with that name exists and
    `overwrite` was not set, an engine reset while requests are in flight, ..."""


class NotFoundError(BadRequestError):
    """A checkpoint path or model id that does not exist."""


class CorruptCheckpointError(MintError):
    """A checkpoint's files are damaged or half-written; nothing was loaded from them."""


class ModelNotAvailableError(MintError):
    """The base model cannot be found locally nor downloaded."""


class WeightSyncError(MintError):
    """A sampler did not end up serving the weights it was asked to load."""


class EnvTimeoutError(MintError, TimeoutError):
    """An environment's `step` (its reward function) ran past the run's `env_timeout_s`."""


class LearnerFailedError(MintError):
    """The learner failed during a training step; the run stopped after checkpointing the last
    completed step (running the same command again resumes there)."""


class SamplerEngineDeadError(MintError, RuntimeError):
    """The vLLM engine process of a sampler died (killed, out of memory); a new one is needed."""
