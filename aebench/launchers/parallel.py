"""Run jobs in worker processes on this machine: one per GPU, or N CPU workers, each pinned to its device.

Workers are started with the ``spawn`` method (CUDA cannot be used in a forked child) and import
nothing heavy until they know their device. The parent hands out one job at a time, so it always
knows which job a worker holds: a worker that dies (killed, out of memory, segfault) fails only that
job, and a fresh worker takes its place for the rest.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aebench.errors import AebenchError, ResultsUnwritable, SuiteError
from aebench.launchers.base import Launcher
from aebench.launchers.worker import portable, prepare_process, run_config, train_group
from aebench.runner.job import Outcome
from aebench.runner.settings import RunSettings


def _worker_main(slot: int, gpu: str | None, run: RunSettings, threads: int, tasks: Any, results: Any,
                 parent: int) -> None:
    """A worker's life: pin the device before torch loads, import plugins, then run jobs until told to stop
    (or until the parent is gone: a killed parent must not leave workers waiting forever)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        prepare_process(run, threads)
    except Exception as e:  # noqa: BLE001 - a plugin that fails to import fails every job: say why, once
        results.put(("setup-failed", slot, f"worker setup failed: {e}"))
        return
    try:
        while True:
            try:
                item = tasks.get(timeout=2.0)
            except queue.Empty:
                if os.getppid() != parent:
                    return
                continue
            if item is None:
                return
            indices, configs = item
            stacked = train_group(configs, run) if len(configs) > 1 else {}  # a stack group: train them together
            for index, config in zip(indices, configs, strict=True):
                try:
                    outcome = run_config(config, run, stacked)
                except AebenchError as e:  # a full or read-only results folder: the parent stops the suite
                    results.put(("fatal", slot, index, e.__class__.__name__, str(e)))
                    return
                results.put(("done", slot, index, outcome))
    except KeyboardInterrupt:  # ^C reaches the whole process group; the parent reports it
        return


def _record_failure(job_dir: Path, reason: str) -> None:
    """Write failed.json for a job whose worker died before it could (so `aebench status` says why)."""
    from aebench.store.jobdir import JobDir

    jd = JobDir(job_dir)
    try:
        if jd.path.exists() and not jd.is_done() and not jd.is_locked():
            jd.mark_failed(reason)
    except OSError:
        pass


@dataclass
class _Worker:
    process: Any
    tasks: Any
    gpu: str | None
    task: tuple[int, ...] = ()  # indices of the jobs it holds (several: a stack group)


class ParallelLauncher(Launcher):
    """Worker processes on this machine: one per GPU (or ``workers`` CPU workers), each job pinned to its device.

    Options: ``workers`` (default: one per visible GPU, else 2), ``threads`` (torch threads per CPU
    worker; default: this machine's cores shared evenly).
    """

    name = "local-parallel"

    def __init__(self, workers: int | None = None, threads: int | None = None, **options: Any):
        super().__init__(**options)
        for key, value in (("workers", workers), ("threads", threads)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise SuiteError(None, f"launcher.{key}", f"must be an integer >= 1, got {value!r}")
        self.workers = workers
        self.threads = threads

    # -- devices ----------------------------------------------------------------------------------------
    def _gpus(self, run: RunSettings) -> list[str]:
        """The GPUs to spread workers over (as CUDA_VISIBLE_DEVICES entries); empty for CPU workers."""
        if run.device not in ("auto", "cuda"):
            return []
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        return (visible or [str(i) for i in range(n)])[:n]

    def plan(self, run: RunSettings) -> tuple[int, list[str | None], int]:
        """(workers, the GPU of each worker or None, torch threads per worker)."""
        gpus = self._gpus(run)
        workers = self.workers or len(gpus) or 2
        threads = self.threads or max(1, (os.cpu_count() or 1) // workers)
        return workers, [gpus[i % len(gpus)] if gpus else None for i in range(workers)], threads

    # -- running ----------------------------------------------------------------------------------------
    @staticmethod
    def _tasks(jobs: list, run: RunSettings) -> list[tuple[tuple[int, ...], list[dict[str, Any]]]]:
        """One task per job, except a stack group (``runner.stacked``), which one worker takes whole."""
        from aebench.runner.stacked import task_units

        return [(tuple(unit), [jobs[i].payload() for i in unit]) for unit in task_units(jobs, run)]

    def launch(self, jobs, run):
        from tqdm.auto import tqdm

        if not jobs:
            return []
        n_workers, gpus, threads = self.plan(run)
        n_workers = min(n_workers, len(jobs))
        wrun = portable(run)
        if gpus[0] is not None:
            wrun = replace(wrun, device="cuda")  # each worker sees only its own GPU
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        todo = deque(self._tasks(jobs, run))
        outcomes: dict[int, Outcome] = {}
        workers: dict[int, _Worker] = {}

        def start(slot: int) -> None:
            tasks = ctx.Queue()
            p = ctx.Process(target=_worker_main, args=(slot, gpus[slot], wrun, threads, tasks, results, os.getpid()),
                            name=f"aebench-worker-{slot}", daemon=True)
            p.start()
            workers[slot] = _Worker(p, tasks, gpus[slot])

        def feed(slot: int) -> None:
            w = workers[slot]
            if todo:
                w.task, configs = todo.popleft()
                w.tasks.put((w.task, configs))
            else:
                w.task = ()
                w.tasks.put(None)

        bar = tqdm(total=len(jobs), desc=f"jobs ({n_workers} workers)", unit="job",
                   disable=not run.progress, dynamic_ncols=True)

        def record(index: int, outcome: Outcome) -> None:
            outcomes[index] = outcome
            bar.update(1)
            if outcome.status == "failed":
                bar.write(f"FAILED {outcome.label} ({outcome.job_id}): {outcome.reason}")

        def handle(msg: tuple) -> None:
            if msg[0] == "done":
                _, slot, index, outcome = msg
                record(index, outcome)
                if all(i in outcomes for i in workers[slot].task):
                    feed(slot)
            elif msg[0] == "fatal":
                _, slot, index, kind, message = msg
                raise (ResultsUnwritable if kind == "ResultsUnwritable" else AebenchError)(message)
            elif msg[0] == "setup-failed":  # the same for every worker: fail what is left and stop
                _, slot, reason = msg
                held, workers[slot].task = workers[slot].task, ()
                lost = [i for i in [*held, *(i for t, _ in todo for i in t)] if i not in outcomes]
                todo.clear()
                for i in lost:
                    record(i, Outcome(jobs[i].id, jobs[i].label, "failed", reason))

        try:
            for slot in range(n_workers):
                start(slot)
                feed(slot)
            while len(outcomes) < len(jobs):
                try:
                    handle(results.get(timeout=1.0))
                    continue
                except queue.Empty:
                    pass
                for slot, w in list(workers.items()):
                    if w.process.is_alive() or w.process.exitcode is None:
                        continue
                    self._drain(results, handle)  # its last message may still be in flight
                    for i in w.task:
                        if i not in outcomes:
                            job = jobs[i]
                            reason = f"worker process died (exit code {w.process.exitcode})"
                            _record_failure(wrun.suite_dir(job.suite) / job.id, reason)
                            record(i, Outcome(job.id, job.label, "failed", reason))
                    del workers[slot]
                    if todo:
                        start(slot)
                        feed(slot)
                if not workers and len(outcomes) < len(jobs):  # cannot happen unless a setup failure raced
                    for i in [i for t, _ in todo for i in t]:
                        record(i, Outcome(jobs[i].id, jobs[i].label, "failed", "no worker left"))
                    todo.clear()
        finally:
            bar.close()
            self._stop(workers)
        return [outcomes[i] for i in range(len(jobs))]

    @staticmethod
    def _drain(results: Any, handle) -> None:
        while True:
            try:
                handle(results.get(timeout=0.2))
            except queue.Empty:
                return

    @staticmethod
    def _stop(workers: dict[int, _Worker]) -> None:
        """Let idle workers exit; end the ones still busy (after ^C) by their process, never by name."""
        for w in workers.values():
            if w.process.is_alive():
                try:
                    w.tasks.put(None)
                except (OSError, ValueError):
                    pass
        for w in workers.values():
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
