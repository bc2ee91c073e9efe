"""Run a whole suite: skip what is done, launch the rest, regenerate results.csv, summarise."""

from __future__ import annotations

import sys
from collections import Counter
from typing import TextIO

from aebench.runner.job import Outcome
from aebench.runner.settings import RunSettings
from aebench.store.atomic import atomic_write_text
from aebench.suite import Job, Suite


def snapshot_suite(suite: Suite, run: RunSettings) -> None:
    """Keep the suite file beside its results (provenance) and check the folder is writable first."""
    import yaml

    from aebench.errors import AebenchError

    d = run.suite_dir(suite.name)
    try:
        d.mkdir(parents=True, exist_ok=True)
        text = open(suite.path, encoding="utf-8").read() if suite.path else yaml.safe_dump({"name": suite.name})
        atomic_write_text(d / "suite.yaml", text)
    except OSError as e:
        raise AebenchError(f"results folder {d} is not writable ({e.strerror or e}); choose another with --results") from None


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
        if JobDir(run.suite_dir(suite.name) / job.id).is_done():
            outcomes.append(Outcome(job.id, job.label, "skipped"))
        else:
            todo.append(job)
    print(f"aebench: suite {suite.name!r}: {len(jobs)} jobs, {len(jobs) - len(todo)} already done, "
          f"{len(todo)} to run", file=out)
    if launcher is None:
        launcher = LAUNCHERS.get(suite.launcher.name)(**suite.launcher.options)
    try:
        if todo:
            outcomes += launcher.launch(todo, run)
    finally:
        write_results_csv(run.suite_dir(suite.name))
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
