"""The Slurm array task: runs one job, or a stack group's jobs, where ``aebench.launchers.slurm`` submitted it.

It lives apart from the launcher so that a task imports only what it runs; ``slurm.json`` in each job folder
records the task (its Slurm id, host, log and result files) for ``aebench status`` and the launcher.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from aebench.errors import AebenchError
from aebench.runner.job import Outcome
from aebench.runner.settings import RunSettings

SLURM_JSON = "slurm.json"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _submitit():
    try:
        import submitit
    except ImportError:
        raise AebenchError("the slurm launcher needs submitit: pip install 'aebench[slurm]'") from None
    return submitit


def _write_slurm_json(job_dir: Path, info: dict[str, Any]) -> None:
    from aebench.store.atomic import atomic_write_json

    job_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job_dir / SLURM_JSON, info)


# -- the task each array element runs ---------------------------------------------------------------------
class SlurmTask:
    """Run one job, or a stack group's jobs, in a Slurm task; ``checkpoint`` makes submitit requeue it on
    preemption or timeout.

    Nothing needs saving at that moment: training writes ``resume.pt`` every epoch, and the requeued
    task starts the job again, which continues from there.
    """

    def __init__(self) -> None:
        self.interrupted = False

    def __call__(self, configs: list[dict[str, Any]] | dict[str, Any], run: RunSettings,
                 threads: int) -> list[Outcome] | Outcome:
        from aebench.launchers.worker import prepare_process, run_config, train_group

        group = configs if isinstance(configs, list) else [configs]  # a dict: a task queued by an older aebench
        submitit = _submitit()
        env = submitit.JobEnvironment()
        dirs = [run.suite_dir(config["suite"]) / _job_id(config) for config in group]
        for job_dir in dirs:
            _write_slurm_json(job_dir, {
                "job_id": env.job_id, "state": "started", "host": env.hostname, "at": _now(),
                "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
                "log": str(env.paths.stderr), "result": str(env.paths.result_pickle),
            })
        prepare_process(run, threads)
        stacked = train_group(group, run) if len(group) > 1 else {}
        outcomes = []
        for config, job_dir in zip(group, dirs, strict=True):
            outcome = run_config(config, run, stacked)
            if self.interrupted and "not requeued" not in outcome.reason:  # else: out of requeues, a real failure
                # submitit's signal handler requeued this task. run_job lets its SystemExit through, so we
                # get here only when the interruption surfaced as another error (the requeue command killed
                # by Slurm's own stop, say) and was recorded as a failure. It is not one: the requeued task
                # continues from resume.pt.
                _forget_interruption(job_dir)
                raise SystemExit(-1)
            outcomes.append(outcome)
        try:  # under the suite's lock: the last task to finish writes the whole table
            from aebench.store.table import write_results_csv

            write_results_csv(run.suite_dir(config["suite"]))
        except OSError:
            pass  # the table is derived; `aebench run` or `report` regenerates it
        return outcomes if isinstance(configs, list) else outcomes[0]

    def checkpoint(self, configs: list[dict[str, Any]] | dict[str, Any], run: RunSettings, threads: int):
        """Called by submitit on USR2 (preemption, time limit): requeue the same jobs (each resumes)."""
        self.interrupted = True
        return _submitit().helpers.DelayedSubmission(SlurmTask(), configs, run, threads)


def _job_id(config: dict[str, Any]) -> str:
    from aebench.job import Job

    return Job.from_config(config).id


def _forget_interruption(job_dir: Path) -> None:
    """Drop the failure the interruption caused (SystemExit, or a requeue command killed by Slurm's own stop)."""
    from aebench.store.jobdir import FAILED

    (job_dir / FAILED).unlink(missing_ok=True)
