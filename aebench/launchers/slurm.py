"""Submit a suite's jobs to Slurm through submitit, as one job array (``pip install 'aebench[slurm]'``).

Each array task runs one job (or one stack group, ``runner.stacked``: with ``--stack on``, or by default where
the tasks get GPUs) into the same ``results/<suite>/<job-id>/`` folders as ``local`` does, so
resume works alike everywhere: a done job is never submitted again, and an interrupted one continues
from its last epoch (``resume.pt``). On preemption or at its time limit, Slurm signals the task
(``USR2``, ``signal_delay_s`` before the end); submitit calls ``SlurmTask.checkpoint`` and requeues the
task, which then resumes from ``resume.pt``.

Job states are read with ``squeue`` (not ``sacct``, which needs Slurm's accounting database), and each
job's outcome from its folder. The Slurm job id of every submitted job is kept in its folder
(``slurm.json``) for ``aebench status``, and to avoid submitting a job that is still queued twice.
submitit's own files (scripts, pickles, logs) go to ``results/<suite>/.submitit/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aebench.errors import AebenchError, SuiteError
from aebench.launchers.base import Launcher
from aebench.launchers.slurm_task import SLURM_JSON, SlurmTask, _now, _submitit, _write_slurm_json
from aebench.runner.job import Outcome
from aebench.runner.settings import RunSettings

SUBMITIT_DIR = ".submitit"
# squeue states of a job that has not ended (https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES)
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                 "RESIZING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED", "PREEMPTED", "RESV_DEL_HOLD"}


# -- what `aebench status` and the launcher read ------------------------------------------------------------
def slurm_job_id(job_dir: str | os.PathLike) -> str | None:
    """The Slurm job id last recorded for a job folder (``1234_5`` for an array task), if any."""
    import json

    try:
        return str(json.loads((Path(job_dir) / SLURM_JSON).read_text())["job_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """Slurm's state of each job id still known to ``squeue`` (ended ones drop out after MinJobAge).

    None when Slurm cannot be asked (no ``squeue``, controller down): the caller must not conclude.
    """
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        return None
    states: dict[str, str] = {}
    for array in sorted({j.split("_")[0] for j in job_ids}):  # one query each: an unknown id fails a query
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", array],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode != 0:
            if "Invalid job id" in out.stderr:  # forgotten by the controller: long ended
                continue
            return None
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
    return states


# -- the launcher -------------------------------------------------------------------------------------
class SlurmLauncher(Launcher):
    """Submit the jobs as one Slurm job array through submitit; wait for them, or return at once."""

    name = "slurm"

    def __init__(
        self,
        partition: str | None = None,
        time: int = 60,
        gpus_per_job: int = 0,
        cpus_per_job: int = 1,
        mem_gb: float | None = None,
        array_parallelism: int = 256,
        sbatch_options: dict[str, Any] | None = None,
        setup: list[str] | None = None,
        wait: bool = True,
        poll_seconds: float = 10.0,
        max_requeues: int = 3,
        signal_delay_s: int = 90,
        job_name: str | None = None,
        **options: Any,
    ):
        super().__init__(**options)

        def need(key: str, ok: bool, what: str, value: Any) -> None:
            if not ok:
                raise SuiteError(None, f"launcher.{key}", f"{what}, got {value!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need("partition", partition is None or isinstance(partition, str), "expected a partition name", partition)
        need("time", is_int(time) and time > 0, "expected minutes, an integer > 0", time)
        need("gpus_per_job", is_int(gpus_per_job) and gpus_per_job >= 0, "expected an integer >= 0", gpus_per_job)
        need("cpus_per_job", is_int(cpus_per_job) and cpus_per_job > 0, "expected an integer > 0", cpus_per_job)
        need("mem_gb", mem_gb is None or (isinstance(mem_gb, (int, float)) and not isinstance(mem_gb, bool)
                                         and mem_gb > 0), "expected a number of GB > 0", mem_gb)
        need("array_parallelism", is_int(array_parallelism) and array_parallelism > 0, "expected an integer > 0",
             array_parallelism)
        need("sbatch_options", sbatch_options is None or isinstance(sbatch_options, dict),
             "expected a mapping of sbatch options (e.g. {account: lab, qos: high})", sbatch_options)
        need("setup", setup is None or (isinstance(setup, list) and all(isinstance(s, str) for s in setup)),
             "expected a list of shell lines", setup)
        need("wait", isinstance(wait, bool), "expected true or false", wait)
        need("poll_seconds", isinstance(poll_seconds, (int, float)) and poll_seconds > 0, "expected seconds > 0",
             poll_seconds)
        need("max_requeues", is_int(max_requeues) and max_requeues >= 0, "expected an integer >= 0", max_requeues)
        need("signal_delay_s", is_int(signal_delay_s) and signal_delay_s >= 0, "expected seconds >= 0",
             signal_delay_s)
        need("job_name", job_name is None or isinstance(job_name, str), "expected a string", job_name)
        self.partition, self.time, self.gpus_per_job = partition, time, gpus_per_job
        self.cpus_per_job, self.mem_gb, self.array_parallelism = cpus_per_job, mem_gb, array_parallelism
        self.sbatch_options = {str(k): v for k, v in (sbatch_options or {}).items()}
        self.setup, self.wait, self.poll_seconds = list(setup or []), wait, float(poll_seconds)
        self.max_requeues, self.signal_delay_s, self.job_name = max_requeues, signal_delay_s, job_name

    @classmethod
    def notes(cls, suite_dir, rows):
        return slurm_notes(suite_dir, rows)

    def parameters(self, suite: str) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters for these options."""
        params: dict[str, Any] = {
            "job_name": self.job_name or f"aebench-{suite}", "time": self.time, "nodes": 1, "ntasks_per_node": 1,
            "cpus_per_task": self.cpus_per_job, "array_parallelism": self.array_parallelism,
            "signal_delay_s": self.signal_delay_s,
            "setup": [f"export OMP_NUM_THREADS={self.cpus_per_job}", *self.setup],
        }
        if self.partition:
            params["partition"] = self.partition
        if self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}M"
        if self.sbatch_options:
            params["additional_parameters"] = dict(self.sbatch_options)
        return params

    def launch(self, jobs, run):
        if not jobs:
            return []
        submitit = _submitit()
        if shutil.which("sbatch") is None:
            raise AebenchError("the slurm launcher needs Slurm's sbatch on PATH (run on a cluster's login node, "
                               "or use --launcher local)")
        from aebench.launchers.worker import portable
        from aebench.store.jobdir import CONFIG, JobDir

        wrun = portable(run)
        suite = jobs[0].suite
        suite_dir = wrun.suite_dir(suite)
        outcomes: dict[int, Outcome] = {}
        watch: dict[int, str] = {}  # job index -> Slurm job id

        # jobs queued or running elsewhere are not submitted again
        recorded = {i: slurm_job_id(suite_dir / job.id) for i, job in enumerate(jobs)}
        states = queue_states([s for s in recorded.values() if s]) or {}
        todo = []
        for i, job in enumerate(jobs):
            sid = recorded[i]
            if sid and states.get(sid) in ACTIVE_STATES:
                watch[i] = sid
            elif JobDir(suite_dir / job.id).is_locked():
                outcomes[i] = Outcome(job.id, job.label, "locked", "another aebench process is running this job")
            else:
                todo.append(i)

        if watch:
            print(f"aebench: {len(watch)} jobs are already queued or running on Slurm "
                  f"({', '.join(sorted(watch.values()))}); not submitting them again", file=sys.stderr)
        if todo:
            for i in todo:  # before sbatch, so that a task that starts at once finds the folder as it left it
                jd = JobDir(suite_dir / jobs[i].id)
                jd.path.mkdir(parents=True, exist_ok=True)
                jd.reset()  # an earlier failure is no longer this job's state: it is queued again
                jd.write_json(CONFIG, jobs[i].config())  # so that `aebench status` lists it as pending
            executor = submitit.SlurmExecutor(folder=suite_dir / SUBMITIT_DIR / "%j",
                                              max_num_timeout=self.max_requeues)
            executor.update_parameters(**self.parameters(suite))
            units = self._units(jobs, todo, run)
            try:
                submitted = executor.map_array(SlurmTask(), [[jobs[i].payload() for i in u] for u in units],
                                               [wrun] * len(units), [self.cpus_per_job] * len(units))
            except Exception as e:  # noqa: BLE001 - sbatch refused: say why in one line
                raise AebenchError(f"sbatch refused the jobs: {str(e).strip().splitlines()[-1]}") from None
            for unit, sub in zip(units, submitted, strict=True):
                for i in unit:
                    job_dir = suite_dir / jobs[i].id
                    if slurm_job_id(job_dir) != sub.job_id:  # the task, if already started, wrote more
                        _write_slurm_json(job_dir, {"job_id": sub.job_id, "state": "submitted", "at": _now(),
                                                    "log": str(sub.paths.stderr),
                                                    "result": str(sub.paths.result_pickle)})
                    watch[i] = sub.job_id
            arrays = sorted({s.job_id.split("_")[0] for s in submitted})
            stacks = sum(len(u) > 1 for u in units)
            print(f"aebench: submitted {len(todo)} jobs to Slurm as array {', '.join(arrays)}"
                  + (f" ({len(units)} tasks, {stacks} of them stacks)" if stacks else "")
                  + f" (logs in {suite_dir / SUBMITIT_DIR})", file=sys.stderr)

        if not self.wait:
            for i, sid in watch.items():
                outcomes[i] = Outcome(jobs[i].id, jobs[i].label, "submitted", f"slurm {sid}")
            print(f"aebench: not waiting; follow with `aebench status {suite_dir}`", file=sys.stderr)
        else:
            try:
                outcomes.update(self._wait(jobs, watch, suite_dir, run.progress))
            except KeyboardInterrupt:
                ids = sorted({s.split("_")[0] for s in watch.values()})
                print(f"\naebench: the Slurm jobs go on (scancel {' '.join(ids)} stops them); "
                      f"follow with `aebench status {suite_dir}`", file=sys.stderr)
                raise
        return [outcomes[i] for i in range(len(jobs))]

    def _units(self, jobs: list, todo: list[int], run: RunSettings) -> list[list[int]]:
        """The array's tasks, as indices into ``jobs``: one job each, except a stack group, one task whole.
        Stacked with ``--stack on``, or by default (auto) where each task gets GPUs."""
        from dataclasses import replace

        from aebench.runner.stacked import stacking, task_units

        stacking(run)  # refuses a bad --stack value
        on = run.stack == "on" or (run.stack == "auto" and self.gpus_per_job > 0)
        units = task_units([jobs[i] for i in todo], replace(run, stack="on" if on else "off"))
        return [[todo[k] for k in unit] for unit in units]

    def _wait(self, jobs, watch: dict[int, str], suite_dir: Path, progress: bool) -> dict[int, Outcome]:
        """Poll until every watched job has ended; each job's outcome is read from its folder."""
        from tqdm.auto import tqdm

        outcomes: dict[int, Outcome] = {}
        gone: dict[int, int] = {}  # polls in a row a job was missing from squeue
        bar = tqdm(total=len(watch), desc="slurm jobs", unit="job", disable=not progress, dynamic_ncols=True)
        try:
            while len(outcomes) < len(watch):
                states = queue_states(list(watch.values()))
                for i, sid in watch.items():
                    if i in outcomes:
                        continue
                    job = jobs[i]
                    state = None if states is None else states.get(sid, "GONE")
                    if state == "GONE":
                        gone[i] = gone.get(i, 0) + 1
                    ended = state is not None and state not in ACTIVE_STATES and (state != "GONE" or gone[i] >= 2)
                    ended = ended or _finished_files(suite_dir / job.id)  # also when squeue cannot be asked
                    if not ended:
                        continue
                    outcomes[i] = o = _outcome_from_folder(job, suite_dir / job.id, sid, state)
                    bar.update(1)
                    line = f"{o.status.upper()} {job.label} {job.dataset} seed {job.seed} (slurm {sid})"
                    bar.write(line + (f": {o.reason}" if o.reason else ""), file=sys.stderr)
                if len(outcomes) < len(watch):
                    time.sleep(self.poll_seconds)
        finally:
            bar.close()
        return outcomes


def _finished_files(job_dir: Path) -> bool:
    """Cheap signs that the task is through: the done marker, or submitit's result file."""
    from aebench.store.jobdir import DONE

    if (job_dir / DONE).exists():
        return True
    result = (_read_json(job_dir / SLURM_JSON) or {}).get("result")
    return bool(result) and Path(result).exists()


def _read_json(path: Path) -> dict[str, Any] | None:
    import json

    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _outcome_from_folder(job, job_dir: Path, sid: str, state: str | None) -> Outcome:
    """How a job ended, from its folder (the truth), else from the task's result, else from Slurm's state."""
    from aebench.store.jobdir import FAILED, PROVENANCE, JobDir

    jd = JobDir(job_dir)
    if jd.is_done():
        prov = jd.read_json(PROVENANCE) or {}
        return Outcome(job.id, job.label, "done", seconds=float(prov.get("wall_seconds", 0.0) or 0.0))
    failed = jd.read_json(FAILED)
    if failed and failed.get("reason"):
        return Outcome(job.id, job.label, "failed", str(failed["reason"]))
    info = jd.read_json(SLURM_JSON) or {}
    log = info.get("log", "")
    where = f" (log: {log})" if log else ""
    kind, value = _task_result(info.get("result"))
    mine = [o for o in (value if isinstance(value, list) else [value]) if isinstance(o, Outcome) and o.job_id == job.id]
    if kind == "success" and mine:  # skipped or locked: another process had the job
        return mine[0]
    if kind == "error":
        lines = [line.strip() for line in str(value).splitlines() if line.strip()]
        return Outcome(job.id, job.label, "failed", (lines[-1][:500] if lines else "the Slurm task failed") + where)
    what = "left the queue" if state in (None, "GONE") else f"ended {state}"
    return Outcome(job.id, job.label, "failed",
                   f"Slurm job {sid} {what} before the job finished; rerun to continue from its last epoch{where}")


def _task_result(result_pickle: str | None) -> tuple[str | None, Any]:
    """What submitit saved when the task returned (``success``, outcome) or raised (``error``, traceback)."""
    if not result_pickle or not Path(result_pickle).exists():
        return None, None
    try:
        from submitit.core.utils import pickle_load

        kind, value = pickle_load(Path(result_pickle))
    except Exception:  # noqa: BLE001 - unreadable: the log says more
        return None, None
    return kind, value


def slurm_notes(suite_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> dict[str, str]:
    """For ``aebench status``: ``slurm 1234_5 RUNNING`` for each unfinished job that was submitted to Slurm.

    One ``squeue`` call per array; without Slurm at hand only the recorded job id is shown.
    """
    ids = {r["job_id"]: slurm_job_id(Path(suite_dir) / r["job_id"])
           for r in rows if r.get("status") in ("running", "pending")}
    ids = {k: v for k, v in ids.items() if v}
    states = queue_states(list(ids.values())) if ids else {}
    notes = {}
    for job_id, sid in ids.items():
        state = "" if states is None else f" {states.get(sid, 'no longer queued')}"
        notes[job_id] = f"slurm {sid}{state}"
    return notes
