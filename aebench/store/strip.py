"""Slimming a results folder for sharing: weights always, image grids on request.

Neither is vouched for by a job's markers (the weights' hash is dropped from them and the job stays done;
images were never covered), so a stripped job still counts, reports and resumes as done. Tuning trials keep
their configs, curves and metrics.
"""

from __future__ import annotations

from pathlib import Path

from aebench.store.table import job_dirs


def strip(results_dir: Path, keep_images: set[str] | None = None) -> tuple[int, int]:
    """Remove the checkpoints of done jobs and, unless ``keep_images`` is None, the PNGs of every done job not
    in it (the caller passes the jobs whose grids the report shows). Returns (checkpoints, images) removed."""
    jobs = job_dirs(results_dir)
    checkpoints = sum(jd.strip_checkpoint() for jd in jobs)
    removed = 0
    if keep_images is not None:
        for jd in jobs:
            if jd.path.name in keep_images or not jd.is_done():
                continue
            for png in jd.path.glob("*.png"):
                png.unlink()
                removed += 1
    return checkpoints, removed
