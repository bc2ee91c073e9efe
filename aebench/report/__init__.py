"""Reports and leaderboards built from a results folder (``results/<suite>/``).

Importing this package is cheap; pandas, seaborn and torch load only inside the functions that need them.
``build_report`` writes ``index.html`` and ``README.md`` with the PNG figures they link beside them: the
comparison table, the ranking with ranks within noise over seeds, the lecture's claims checked per seed
(``claims``), and the figures each metric registers (meta ``figures=``). ``build_leaderboard`` ranks
same-protocol runs by one metric. All of them read one aggregation over seeds (``aggregate``).
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
