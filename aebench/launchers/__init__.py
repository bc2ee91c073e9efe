"""Launchers run a list of jobs somewhere (this process, worker processes, Slurm) and report outcomes.

Contract: ``launcher = LAUNCHERS.get(name)(**options)``; ``launcher.launch(jobs, run) -> list[Outcome]``.
Every launcher writes the same job folders, so resume works the same everywhere.
"""

from aebench.launchers.base import Launcher

__all__ = ["Launcher"]
