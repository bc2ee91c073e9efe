"""Run the jobs one after another in this process."""

from __future__ import annotations

from aebench.launchers.base import Launcher


class LocalLauncher(Launcher):
    """The jobs one after another in this process."""

    name = "local"

    def launch(self, jobs, run):
        from tqdm.auto import tqdm

        from aebench.runner.job import run_job

        outcomes = []
        bar = tqdm(jobs, desc="jobs", unit="job", disable=not run.progress or len(jobs) < 2, dynamic_ncols=True)
        for job in bar:
            outcome = run_job(job, run, progress_position=1 if not bar.disable else 0)
            outcomes.append(outcome)
            if outcome.status == "failed":
                bar.write(f"FAILED {job.label} {job.dataset} seed {job.seed}: {outcome.reason}")
        return outcomes
