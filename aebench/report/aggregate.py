"""The one aggregation over seeds that the table, the leaderboard, the figures and the claims all read.

Done jobs are grouped by dataset, model label and protocol; for every metric key a group holds the mean,
the sample standard deviation (ddof=1; NaN for fewer than two values), the number of finite values and
the per-seed values themselves, so a test over seeds (the leaderboard's) or a per-seed rule (the claims')
works from the same numbers the table shows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

GROUP = ("dataset", "label", "protocol")


@dataclass(frozen=True)
class Stat:
    """One key of one group over its seeds."""

    mean: float = math.nan
    sd: float = math.nan
    n: int = 0
    seeds: tuple[int, ...] = ()
    values: tuple[float, ...] = ()  # finite values, in the order of ``seeds``

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.values))


EMPTY = Stat()


@dataclass
class Group:
    """One model (label) on one dataset under one protocol, with every key's statistics."""

    dataset: str
    label: str
    protocol: str
    model: str  # the registered model name(s), comma-joined
    job_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    origins: tuple[str, ...] = ()
    stats: dict[str, Stat] = field(default_factory=dict)

    def stat(self, key: str) -> Stat:
        return self.stats.get(key, EMPTY)

    @property
    def ident(self) -> tuple[str, str, str]:
        return (self.dataset, self.label, self.protocol)


def stat_of(seeds: Iterable[int], values: Iterable[float | None]) -> Stat:
    """Mean, sd (ddof=1), count and per-seed values of the finite values."""
    pairs = [(int(s), float(v)) for s, v in zip(seeds, values) if v is not None and math.isfinite(float(v))]
    if not pairs:
        return EMPTY
    vals = [v for _, v in pairs]
    sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return Stat(math.fsum(vals) / len(vals), sd, len(vals), tuple(s for s, _ in pairs), tuple(vals))


def _seed(v: object) -> int:
    try:
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1


def aggregate(jobs: pd.DataFrame, keys: Iterable[str]) -> list[Group]:
    """Groups of ``jobs`` (done jobs of a results table) in order of first appearance, with ``keys``' stats."""
    import pandas as pd

    keys = list(keys)
    out = []
    if jobs.empty:
        return out
    cols = [c for c in GROUP if c in jobs.columns]
    for ident, g in jobs.groupby(cols, sort=False, dropna=False):
        ident = dict(zip(cols, ident if isinstance(ident, tuple) else (ident,)))
        seeds = tuple(_seed(s) for s in g["seed"]) if "seed" in g else tuple(range(len(g)))
        origins = tuple(o for o in g["origin"] if isinstance(o, str)) if "origin" in g else ()
        grp = Group(str(ident.get("dataset")), str(ident.get("label")), str(ident.get("protocol")),
                    ", ".join(dict.fromkeys(map(str, g["model"]))) if "model" in g else str(ident.get("label")),
                    tuple(map(str, g["job_id"])), seeds, origins)
        for key in keys:
            if key in g:
                vals = pd.to_numeric(g[key], errors="coerce")
                grp.stats[key] = stat_of(seeds, [None if pd.isna(v) else float(v) for v in vals])
        out.append(grp)
    return out
