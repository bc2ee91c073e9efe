"""Fault injection for the reliability tests: kill this process at a named point of the core.

``AEBENCH_FAULT=<point>:<n>[:<signal>]`` (several separated by commas) sends ``<signal>`` (``KILL`` by
default, or ``INT`` for a Ctrl-C) to this process the ``n``-th time it passes ``<point>``. The points:

- ``job_start``: a job holds its lock and is about to train
- ``train_step``: after each optimisation step
- ``epoch_end``: after an epoch's curve and grids, before its resume state is saved
- ``epoch_saved``: after an epoch's resume state is saved
- ``train_done``: after training, before the final checkpoint
- ``eval_start``: after the final checkpoint, before the metrics run
- ``metrics_write`` / ``metrics_written``: just before / after ``metrics.json`` is written
- ``done_write`` / ``done_written``: just before / after the done marker is written
- ``results_csv``: while regenerating ``results.csv``, before the rename
- ``metrics_swap``: ``aebench strip`` rewriting ``metrics.json``: the marker vouches for the new file, not renamed yet
- ``write`` and ``write:<file name>``: inside any atomic write, the data written but not yet renamed

Unset, ``point`` costs one global lookup and a comparison; hot loops hoist ``enabled()`` out anyway.
"""

from __future__ import annotations

import os
import signal

ENV = "AEBENCH_FAULT"


def _parse(text: str | None) -> dict[str, tuple[int, int]] | None:
    if not text:
        return None
    plan = {}
    for item in text.split(","):
        parts = item.strip().rsplit(":", 2)
        # "write:metrics.json:2" splits into three parts, as does "epoch_end:2:INT"
        if len(parts) == 3 and not parts[2].isdigit():
            name, n, sig = parts
        elif len(parts) == 3:
            name, n, sig = f"{parts[0]}:{parts[1]}", parts[2], "KILL"
        elif len(parts) == 2:
            (name, n), sig = parts, "KILL"
        else:
            raise ValueError(f"{ENV}={text!r}: expected <point>:<n>[:<signal>]")
        plan[name] = (int(n), int(getattr(signal, f"SIG{sig.upper()}")))
    return plan


_PLAN = _parse(os.environ.get(ENV))
_COUNTS: dict[str, int] = {}


def enabled() -> bool:
    """Whether any fault is planned in this process."""
    return _PLAN is not None


def point(name: str) -> None:
    """Pass the named point; if a fault is planned for its ``n``-th passage, send the signal now."""
    if _PLAN is None or name not in _PLAN:
        return
    _COUNTS[name] = count = _COUNTS.get(name, 0) + 1
    n, sig = _PLAN[name]
    if count == n:
        os.kill(os.getpid(), sig)


def reload() -> None:
    """Re-read ``AEBENCH_FAULT`` (in-process tests set it after import)."""
    global _PLAN
    _PLAN = _parse(os.environ.get(ENV))
    _COUNTS.clear()
