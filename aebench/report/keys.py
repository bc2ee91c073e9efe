"""How the report reads a metric's registration: its columns, figures, ranking keys and table section.

Metrics write ``"<metric>/<key>"`` values to ``metrics.json`` (and lists to their records' ``details``). Nothing here
names a metric or a dataset: each metric says in its registry meta what the report shows of it

- ``headline``: key patterns shown first (headline bars, leaderboard context columns);
- ``columns``: key patterns of the comparison table (default: ``headline``);
- ``figures``: ``"module:function"`` figures it owns, each ``fn(res, out) -> Figure | None``;
- ``rank_by`` and ``rank_priority``: key patterns a leaderboard ranks by when none is chosen (lowest priority
  first; a metric without ``rank_by`` is never a default);
- ``section``: its keys go to their own table of that name (``cost``) instead of the comparison.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

# Columns that are not metric values in a results row.
NON_METRIC = {"job_id", "suite", "model", "label", "dataset", "seed", "protocol", "origin", "trial", "status",
              "reason", "device"}
SETTINGS_PREFIX = "settings:"  # settings:<metric>: the id of the settings a metric was computed under
ARROWS = {"min": "↓", "max": "↑"}


def is_metric(column: str) -> bool:
    """Whether a results column holds a metric value (not identity, status or settings ids)."""
    return column not in NON_METRIC and not column.startswith(SETTINGS_PREFIX)


def metric_of(key: str) -> str:
    """The metric name of a ``metric/key`` column."""
    return key.partition("/")[0]


def meta(metric: str) -> dict[str, Any]:
    """A metric's registry meta; an unknown (unloaded plugin's) metric has none."""
    from aebench.registry import METRICS

    return METRICS.meta(metric) if metric in METRICS else {}


def matching(pattern: str, keys: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Keys matching a glob pattern (``fid/*``) whose part after the slash matches none of ``exclude``."""
    exclude = tuple(exclude)
    return sorted(k for k in keys if fnmatch.fnmatchcase(k, pattern)
                  and not any(fnmatch.fnmatchcase(k.partition("/")[2], x) for x in exclude))


def direction(key: str) -> str | None:
    """'min', 'max' or None (neither is better) for a ``metric/key`` value (see ``metric_direction``)."""
    from aebench.registry import metric_direction

    return metric_direction(key)


def arrow(key: str) -> str:
    return ARROWS.get(direction(key) or "", "")


def labelled(key: str) -> str:
    """A key with its direction arrow, as axis labels and table headers show it."""
    return f"{key} {arrow(key)}".strip()


def _meta_keys(keys: Iterable[str], field: str, default: str | None = None) -> list[str]:
    """Keys matching each metric's ``field`` patterns (``default`` field when it has none), in registry order."""
    from aebench.registry import METRICS

    keys = list(keys)
    out: list[str] = []
    for entry in METRICS.entries():
        patterns = entry.meta.get(field)
        if patterns is None and default:
            patterns = entry.meta.get(default)
        for h in patterns or ():
            out += [k for k in matching(f"{entry.name}/{h}", keys) if k not in out]
    return out


def headline_keys(keys: Iterable[str]) -> list[str]:
    """The headline keys present among ``keys``, in registry order (each metric's ``headline`` meta)."""
    return _meta_keys(keys, "headline")


def column_keys(keys: Iterable[str]) -> list[str]:
    """The comparison table's keys among ``keys``: each metric's ``columns`` meta, else its headline."""
    return _meta_keys(keys, "columns", "headline")


def section(key: str) -> str | None:
    """The separate table a key belongs to (its metric's ``section`` meta), None for the comparison."""
    return meta(metric_of(key)).get("section")


def rank_candidates(keys: Iterable[str]) -> list[str]:
    """Default ranking keys present among ``keys``: metrics with ``rank_by``, lowest ``rank_priority`` first."""
    from aebench.registry import METRICS

    keys = list(keys)
    entries = sorted((e for e in METRICS.entries() if e.meta.get("rank_by")),
                     key=lambda e: (e.meta.get("rank_priority", 100), e.name))
    out: list[str] = []
    for e in entries:
        for pattern in e.meta["rank_by"]:
            out += [k for k in matching(f"{e.name}/{pattern}", keys) if k not in out]
    return out


def figure_targets(metrics: Iterable[str]) -> list[tuple[str, str]]:
    """(metric, ``"module:function"``) of every figure the given metrics own, in their order, each once."""
    out: list[tuple[str, str]] = []
    for m in metrics:
        for target in meta(m).get("figures", ()) or ():
            if target not in [t for _, t in out]:
                out.append((m, target))
    return out
