"""What a job needs in another process (a worker, a Slurm job): settings that survive the move, and the entry.

A fresh process has neither this process's working directory guarantees, its environment, nor the
plugins it imported, so everything is made explicit before the jobs leave: absolute paths, the data
root, and every plugin to re-import.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from aebench.runner.job import Outcome
from aebench.runner.settings import RunSettings


def plugin_specs(run: RunSettings) -> tuple[str, ...]:
    """The plugins a worker must import: those named for this run, and every one loaded here (suite plugins).

    Files become absolute paths so that a worker started elsewhere finds them; entry points are left
    out (the worker loads its own).
    """
    from aebench.plugins import _loaded

    specs: list[str] = []
    for spec in (*run.plugins, *_loaded):
        if spec.startswith("entry-point:"):
            continue
        if spec.endswith(".py") or "/" in spec or "\\" in spec:
            spec = str(Path(spec).resolve())
        if spec not in specs:
            specs.append(spec)
    return tuple(specs)


def portable(run: RunSettings) -> RunSettings:
    """``run`` with absolute paths, an explicit data root and the plugin list, for another process."""
    data_root = run.data_root or os.environ.get("AEBENCH_DATA")
    return replace(
        run,
        results=Path(run.results).resolve(),
        data_root=str(Path(data_root).expanduser().resolve()) if data_root else None,
        progress=False,
        plugins=plugin_specs(run),
    )


def prepare_process(run: RunSettings, threads: int | None = None) -> None:
    """Set up a fresh worker process: thread count, then plugins (so their models and metrics resolve)."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
    from aebench.plugins import load_entry_points, load_plugins

    load_entry_points()
    load_plugins(list(run.plugins))


def run_config(config: dict[str, Any], run: RunSettings, stacked: dict[str, str | None] | None = None) -> Outcome:
    """Run the job described by ``config`` (``Job.payload()``: its configuration and evaluation), as ``local``
    would; ``stacked``: what its stack group's training (``train_stack``) did to it, if it had one."""
    from aebench.job import Job
    from aebench.runner.job import run_after_stack

    return run_after_stack(Job.from_config(config), run, stacked or {})


def train_group(configs: list[dict[str, Any]], run: RunSettings) -> dict[str, str | None]:
    """Train a stack group (``runner.stacked.train_stack``) in this process; for ``run_config``'s ``stacked``."""
    from aebench.job import Job
    from aebench.runner.job import log
    from aebench.runner.stacked import train_stack

    return train_stack([Job.from_config(c) for c in configs], run, log)
