"""Run a whole suite: skip what is done, launch the rest, regenerate results.csv, summarise."""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from typing import TextIO

from aebench.errors import AebenchError, SuiteError
from aebench.runner.job import Outcome
from aebench.runner.settings import RunSettings
from aebench.store.atomic import atomic_write_text
from aebench.suite import Job, Suite, loader_options

MIN_FREE_MB = 64  # refuse to start below this much free space in the results folder ($AEBENCH_MIN_FREE_MB)


def snapshot_suite(suite: Suite, run: RunSettings) -> None:
    """Keep the suite file beside its results (provenance), checking first that the folder is writable and
    has room: better a clear refusal now than a full disk in the middle of a job."""
    import yaml

    from aebench.store.atomic import remove_stale_temps
    from aebench.store.table import suite_lock

    d = run.suite_dir(suite.name)
    try:
        d.mkdir(parents=True, exist_ok=True)
        text = open(suite.path, encoding="utf-8").read() if suite.path else yaml.safe_dump({"name": suite.name})
        with suite_lock(d):
            remove_stale_temps(d, "suite.yaml")
            atomic_write_text(d / "suite.yaml", text)
    except OSError as e:
        raise AebenchError(f"results folder {d} is not writable ({e.strerror or e}); "
                           "choose another with --results") from None
    try:
        need_mb = float(os.environ.get("AEBENCH_MIN_FREE_MB", MIN_FREE_MB))
    except ValueError:
        raise AebenchError(f"AEBENCH_MIN_FREE_MB={os.environ['AEBENCH_MIN_FREE_MB']!r}: expected a number") from None
    free_mb = shutil.disk_usage(d).free / 2**20
    if free_mb < need_mb:
        raise AebenchError(f"results folder {d} has only {free_mb:.0f} MB free, at least {need_mb:.0f} MB needed; "
                           "free some space or choose another folder with --results")


def check_data(suite: Suite, jobs: list[Job], run: RunSettings) -> None:
    """Load every split the jobs will read, so that a missing dataset (absent files, no download) is
    refused before the first job trains, naming the suite field. Loading fills the dataset cache the
    jobs then read; a split already in the cache is not loaded again here (the job checks its checksum)."""
    from aebench.data import load
    from aebench.data.base import cache_file

    seen = []
    for job in jobs:
        key = (job.dataset, job.dataset_options)
        if key in seen:
            continue
        seen.append(key)
        index = next((i for i, ds in enumerate(suite.datasets)
                      if ds.name == job.dataset and loader_options(ds) == job.dataset_options), None)
        where = f"datasets[{index}]" if index is not None else "datasets"
        for split in ("train", "test"):
            cache = cache_file(job.dataset, split, run.data_root, job.dataset_options)
            if cache is not None and cache.exists():
                continue
            try:
                load(job.dataset, split, run.data_root, run.download, job.dataset_options)
            except AebenchError as e:
                raise SuiteError(suite.path, where, str(e)) from None
            except Exception as e:  # noqa: BLE001 - a plugin's loader: report it in one line
                first = str(e).splitlines()[0] if str(e) else ""
                raise SuiteError(suite.path, where, f"dataset {job.dataset!r} ({split} split) failed to load "
                                 f"({e.__class__.__name__}: {first[:200]})") from None


def run_suite(suite: Suite, run: RunSettings, launcher=None, jobs: list[Job] | None = None,
              out: TextIO | None = None) -> list[Outcome]:
    """Run every job of ``suite`` not already done; returns every job's outcome."""
    out = out or sys.stderr
    from aebench.registry import LAUNCHERS
    from aebench.store.jobdir import JobDir
    from aebench.store.table import write_results_csv

    jobs = suite.jobs() if jobs is None else jobs
    snapshot_suite(suite, run)
    todo, outcomes = [], []
    for job in jobs:
        jd = JobDir(run.suite_dir(suite.name) / job.id)
        problem = jd.done_problem() if jd.path.exists() else "not finished"
        if problem is None:
            jd.tidy()
            outcomes.append(Outcome(job.id, job.label, "skipped"))
            continue
        if problem != "not finished":
            print(f"aebench: {job.label} ({job.id}): {problem}; redoing the job", file=out)
        todo.append(job)
    if launcher is None:
        launcher = LAUNCHERS.get(suite.launcher.name)(**suite.launcher.options)
    if todo:
        check_data(suite, todo, run)
    print(f"aebench: suite {suite.name!r}: {len(jobs)} jobs, {len(jobs) - len(todo)} already done, "
          f"{len(todo)} to run", file=out)
    try:
        if todo:
            outcomes += launcher.launch(todo, run)
    finally:
        try:
            write_results_csv(run.suite_dir(suite.name))
        except OSError as e:  # a full disk must not hide what went before; the job folders hold the truth
            print(f"aebench: could not regenerate {run.suite_dir(suite.name) / 'results.csv'} "
                  f"({e.strerror or e}); it is rebuilt by the next run", file=out)
    return outcomes


def summarize(outcomes: list[Outcome], out: TextIO | None = None) -> int:
    """Print what finished and what failed; the exit code: 0 if nothing failed, 1 otherwise."""
    out = out or sys.stderr
    counts = Counter(o.status for o in outcomes)
    parts = [f"{counts[s]} {s}" for s in ("done", "skipped", "failed", "locked", "submitted") if counts[s]]
    print(f"aebench: {', '.join(parts) or 'nothing to do'}", file=out)
    for o in outcomes:
        if o.status in ("failed", "locked"):
            print(f"  {o.status.upper()} {o.label} ({o.job_id}): {o.reason}", file=out)
    return 1 if counts["failed"] or counts["locked"] else 0
