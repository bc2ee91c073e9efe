"""The launcher contract: every launcher runs jobs and says how each ended; some also report on jobs they
handed to a scheduler (``notes``), which ``aebench status`` asks of the launcher that ran the suite only."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aebench.job import Job
    from aebench.runner.job import Outcome
    from aebench.runner.settings import RunSettings


class Launcher(ABC):
    """Run jobs and say how each ended. Subclasses take their options as typed keyword arguments of
    ``__init__`` (checked by ``aebench validate``; construction has no side effects)."""

    name = "base"

    def __init__(self, **options: Any):
        if options:
            from aebench.errors import SuiteError

            raise SuiteError(None, f"launcher.{sorted(options)[0]}", f"unknown option of launcher {self.name!r}")

    @abstractmethod
    def launch(self, jobs: list[Job], run: RunSettings) -> list[Outcome]:
        """Run (or submit) ``jobs``; one outcome each."""

    @classmethod
    def notes(cls, suite_dir: Path, rows: list[dict[str, Any]]) -> dict[str, str]:
        """For ``aebench status``: a note per unfinished job id (a scheduler's job id and state, say)."""
        return {}
