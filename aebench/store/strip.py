"""Slimming a results folder for sharing: weights always, image grids on request.

Neither is vouched for by a job's markers (the weights' hash is dropped from them and the job stays done;
images were never covered), so a stripped job still counts, reports and resumes as done. Images kept are
the ones the report shows: each model's first seed. Tuning trials keep their configs, curves and metrics.
"""

from __future__ import annotations

from pathlib import Path

from aebench.store.jobdir import JobDir
from aebench.store.table import job_dirs


def shown_jobs(jobs: list[JobDir]) -> set[Path]:
    """The jobs whose grids the report shows: the first seed of each (label, dataset), trials excluded."""
    first: dict[tuple, tuple[int, Path]] = {}
    for jd in jobs:
        cfg = jd.read_json("config.json") or {}
        if cfg.get("trial") is not None or "seed" not in cfg:
            continue
        key = (cfg.get("label"), cfg.get("dataset"))
        if key not in first or cfg["seed"] < first[key][0]:
            first[key] = (int(cfg["seed"]), jd.path)
    return {p for _, p in first.values()}


def strip(results_dir: Path, images: bool = False) -> tuple[int, int]:
    """Remove the checkpoints of done jobs and, with ``images``, the PNGs of done jobs the report does not
    show. Returns (checkpoints removed, images removed)."""
    jobs = job_dirs(results_dir)
    checkpoints = sum(jd.strip_checkpoint() for jd in jobs)
    removed = 0
    if images:
        keep = shown_jobs(jobs)
        for jd in jobs:
            if jd.path in keep or not jd.is_done():
                continue
            for png in jd.path.glob("*.png"):
                png.unlink()
                removed += 1
    return checkpoints, removed
