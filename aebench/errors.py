"""Errors a user can act on. The CLI prints them on one line and exits with code 2, no traceback."""

from __future__ import annotations


class AebenchError(Exception):
    """A refusal caused by the user's input or environment, not by a bug in aebench."""

    exit_code = 2


class SuiteError(AebenchError):
    """A suite (or config) is malformed; the message names the file, the field path and what is allowed.

    Code that checks a piece of config raises it with ``file=None``; the suite loader fills the file in.
    """

    def __init__(self, file: str | None, field: str | None, message: str):
        self.file, self.field, self.message = file, field, message
        super().__init__(message)

    def __str__(self) -> str:
        return ": ".join(p for p in (self.file, self.field, self.message) if p)


class UnknownNameError(AebenchError, KeyError):
    """A registry lookup failed; the message lists close names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class JobFailed(Exception):
    """A job could not finish (divergence, out of memory, ...); the suite goes on."""


class Diverged(JobFailed):
    """The training's loss or weights turned NaN or infinite: an outcome of its hyperparameters, which a
    tuning search counts as a losing trial (a rerun with the same seed diverges again)."""


class ResultsLocked(AebenchError):
    """Another aebench process holds the lock of a job or results folder."""


class ResultsUnwritable(AebenchError):
    """The results folder is full or read-only: every later job would fail too, so the suite stops."""
