"""Reports and leaderboards built from a results folder (``results/<suite>/``).

Importing this package is cheap; pandas, seaborn and torch load only inside the functions that need them.
``build_report`` writes ``index.html`` (self-contained) and ``README.md`` with PNG figures beside it;
``build_leaderboard`` ranks same-protocol runs by one metric.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "build_leaderboard"]


def build_report(*args: Any, **kwargs: Any):
    """See ``aebench.report.build.build_report``."""
    from aebench.report.build import build_report as _build

    return _build(*args, **kwargs)


def build_leaderboard(*args: Any, **kwargs: Any):
    """See ``aebench.report.leaderboard.build_leaderboard``."""
    from aebench.report.leaderboard import build_leaderboard as _build

    return _build(*args, **kwargs)
