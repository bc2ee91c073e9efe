"""The launcher contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aebench.runner.job import Outcome
    from aebench.runner.settings import RunSettings
    from aebench.suite import Job


class Launcher:
    """Run jobs and say how each ended. Subclasses take their options as keyword arguments."""

    def __init__(self, **options):
        if options:
            from aebench.errors import SuiteError

            raise SuiteError(None, f"launcher.{sorted(options)[0]}", f"unknown option of launcher {self.name!r}")

    name = "base"

    def launch(self, jobs: list[Job], run: RunSettings) -> list[Outcome]:
        raise NotImplementedError
