"""Training and evaluation of jobs, and running whole suites through a launcher."""

from aebench.runner.settings import RunSettings

__all__ = ["RunSettings"]
