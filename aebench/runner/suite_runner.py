"""Run a whole suite: skip what is done, launch the rest, regenerate results.csv, summarise."""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from typing import TextIO

from aebench.errors import AebenchError, SuiteError
from aebench.job import Job
from aebench.runner.job import Outcome
from aebench.runner.settings import RunSettings
from aebench.store.atomic import atomic_write_text
from aebench.suite import Suite, loader_options

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


def refuse_legacy(suite_dir, out: TextIO | None = None) -> None:
    """Job folders of the previous layout are never retrained silently, nor mixed with the new ones."""
    from aebench.store.table import legacy_dirs

    old = legacy_dirs(suite_dir)
    if old:
        raise AebenchError(f"{suite_dir} holds {len(old)} job folder(s) of the previous layout "
                           f"(e.g. {old[0].path.name}); "
                           f"convert them first with `aebench migrate {suite_dir}` (nothing is retrained), or "
                           "choose another folder with --results")


def run_suite(suite: Suite, run: RunSettings, launcher=None, jobs: list[Job] | None = None,
              out: TextIO | None = None, train: bool = True) -> list[Outcome]:
    """Train every job of ``suite`` whose training is not done, then compute what each evaluation lacks;
    ``train=False`` (``aebench evaluate``) only evaluates finished trainings. Returns every job's outcome.

    With a ``tune:`` block, the trials run first (evaluated on val), the selection is written to
    ``tuning.json``, and then the suite's seeds run with each entry's selected point.
    """
    out = out or sys.stderr
    if jobs is not None or not any(suite.tuned(spec) for spec in suite.models):
        return _run_jobs(suite, run, launcher, suite.jobs() if jobs is None else jobs, out, train)
    import json

    from aebench.tuning import TUNING_JSON, select_all

    trials = suite.trial_jobs()
    print(f"aebench: tuning: {len(trials)} trial jobs, selection by {suite.tune.metric} on the validation split",
          file=out)
    outcomes = _run_jobs(suite, run, launcher, trials, out, train)
    selected, record = select_all(suite, run.suite_dir(suite.name))
    if suite.narrowed:  # a --models run speaks for its entries only: keep the others' records
        try:
            earlier = json.loads((run.suite_dir(suite.name) / TUNING_JSON).read_text()).get("models") or {}
        except (OSError, ValueError, AttributeError):
            earlier = {}
        record["models"] = {**{k: v for k, v in earlier.items() if k not in record["models"]}, **record["models"]}
    atomic_write_text(run.suite_dir(suite.name) / TUNING_JSON, json.dumps(record, indent=2, sort_keys=True) + "\n")
    waiting = [label for label, r in record["models"].items() if r["selected"] is None]
    if waiting:
        print(f"aebench: no selection yet for {', '.join(waiting)} (trials unfinished or failed); run again to go on",
              file=out)
    return outcomes + _run_jobs(suite, run, launcher, suite.jobs(selected), out, train)


def _run_jobs(suite: Suite, run: RunSettings, launcher, jobs: list[Job], out: TextIO, train: bool) -> list[Outcome]:
    from aebench.registry import LAUNCHERS
    from aebench.runner.job import up_to_date
    from aebench.store.jobdir import JobDir
    from aebench.store.table import write_results_csv

    refuse_legacy(run.suite_dir(suite.name))
    snapshot_suite(suite, run)
    todo, outcomes = [], []
    to_train = 0
    for job in jobs:
        jd = JobDir(run.suite_dir(suite.name) / job.id)
        problem = jd.done_problem() if jd.path.exists() else "not finished"
        if problem is None and up_to_date(jd, job.evaluation.requests(job.hash)):
            jd.tidy()
            outcomes.append(Outcome(job.id, job.label, "skipped"))
            continue
        if problem not in (None, "not finished"):
            print(f"aebench: {job.label} ({job.id}): {problem}; redoing the job", file=out)
        trained = jd.path.exists() and jd.is_trained()
        if not train and not trained:
            outcomes.append(Outcome(job.id, job.label, "untrained", "not trained yet: `aebench run` trains it"))
            continue
        to_train += not trained
        todo.append(job)
    if launcher is None:
        launcher = LAUNCHERS.get(suite.launcher.name)(**suite.launcher.options)
    if todo:
        check_data(suite, todo, run)
    print(f"aebench: suite {suite.name!r}: {len(jobs)} jobs, {len(jobs) - len(todo)} already done, {len(todo)} to run "
          f"({to_train} to train, {len(todo) - to_train} to evaluate)", file=out)
    try:
        if todo:
            record_launcher(run.suite_dir(suite.name), suite.launcher.name)
            outcomes += launcher.launch(todo, run)
    finally:
        try:
            write_results_csv(run.suite_dir(suite.name))
        except OSError as e:  # a full disk must not hide what went before; the job folders hold the truth
            print(f"aebench: could not regenerate {run.suite_dir(suite.name) / 'results.csv'} "
                  f"({e.strerror or e}); it is rebuilt by the next run", file=out)
    return outcomes


def record_launcher(suite_dir, name: str) -> None:
    """Remember which launcher ran the suite, so `aebench status` asks only that launcher for notes."""
    import json

    atomic_write_text(suite_dir / "launcher.json", json.dumps({"name": name}) + "\n")


def summarize(outcomes: list[Outcome], out: TextIO | None = None) -> int:
    """Print what finished and what failed; the exit code: 0 if nothing failed, 1 otherwise."""
    out = out or sys.stderr
    counts = Counter(o.status for o in outcomes)
    parts = [f"{counts[s]} {s}" for s in ("done", "evaluated", "skipped", "untrained", "failed", "locked",
                                         "submitted") if counts[s]]
    print(f"aebench: {', '.join(parts) or 'nothing to do'}", file=out)
    for o in outcomes:
        if o.status in ("failed", "locked", "untrained"):
            print(f"  {o.status.upper()} {o.label} ({o.job_id}): {o.reason}", file=out)
    return 1 if counts["failed"] or counts["locked"] else 0
