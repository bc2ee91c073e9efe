"""Run the jobs one after another in this process."""

from __future__ import annotations

from aebench.launchers.base import Launcher


class LocalLauncher(Launcher):
    """The jobs one after another in this process."""

    name = "local"

    def launch(self, jobs, run):
        from tqdm.auto import tqdm

        from aebench.runner.job import log, run_after_stack
        from aebench.runner.stacked import plan_stacks, train_stack

        outcomes, stacked = [], {}
        stacks = {job.id: group for group in plan_stacks(jobs, run) for job in group}
        bar = tqdm(jobs, desc="jobs", unit="job", disable=not run.progress or len(jobs) < 2, dynamic_ncols=True)
        for job in bar:
            group = stacks.pop(job.id, None)
            if group is not None:  # the first of its group: train them all, then each is evaluated in turn
                for other in group:
                    stacks.pop(other.id, None)
                stacked.update(train_stack(group, run, log, position=1 if not bar.disable else 0))
            outcome = run_after_stack(job, run, stacked, position=1 if not bar.disable else 0)
            outcomes.append(outcome)
            if outcome.status == "failed":
                bar.write(f"FAILED {job.label} {job.dataset} seed {job.seed}: {outcome.reason}")
        return outcomes
