"""Stacked training: the jobs of a suite that differ only in their seed, or in float hyperparameters of their
model (the trials of a search over beta, lam, a noise level...), train together in one process.

Their weights are stacked on a leading member dimension (``torch.func.stack_module_state``), one vmapped
step computes every member's loss on its own batch, and one optimiser step updates the stack. It is exact:
each member sees its own seed's batch order, its own float hyperparameters (``stack_floats.MemberFloats``) and,
through ``stack_tape``, the random draws its separate job would make, so its weights, curve and metrics equal a
separately trained job's within float rounding (vmapped products sum in another order). Each member keeps its
own job folder, resume state (in the separate job's format, so either kind of run resumes the other),
validation, best-epoch selection and early stopping; a member that diverges or stops early leaves the stack
and the others go on. Members share the training settings but the learning rate (Adam, AdamW, SGD or RMSprop
without weight decay: the update at rate 1 is scaled by each member's rate).

Stacked only where that is exact: the model's step is the base class's single-optimiser step, every random
draw of its loss can be replayed and its hyperparameters stay tensors in it (the probe says so), the schedule
is none or cosine (a plateau schedule gives each member its own learning rate), fp32 and not compiled.
Anything else trains one job at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from aebench.errors import Diverged, ResultsLocked
from aebench.job import Job, digest
from aebench.runner.settings import RunSettings
from aebench.runner.stack_tape import NotStackable
from aebench.store import jobdir as files
from aebench.store.jobdir import JobDir

# torch optimisers whose update without weight decay reads no weight: the update at lr 1, scaled, is the update
LR_FREE_UPDATES = ("adam", "adamw", "sgd", "rmsprop")


def stack_key(job: Job) -> str | None:
    """Jobs with equal keys can train in one stack; None for a job that must train alone."""
    from aebench.models.base import Autoencoder, model_config
    from aebench.registry import MODELS

    t = job.train
    if job.origin or job.evaluated_only or t.precision != "fp32" or t.compile or t.schedule == "plateau":
        return None
    try:
        cls = MODELS.get(job.model)
    except Exception:  # noqa: BLE001 - an unknown model fails in its own job, with its own message
        return None
    if not isinstance(cls, type) or cls.train_step is not Autoencoder.train_step \
            or cls.configure_optimizers is not Autoencoder.configure_optimizers:
        return None
    identity = job.identity()
    identity.pop("seed", None)
    identity.pop("trial", None)
    # float hyperparameters (a search's beta, lam, level...) change no shapes: each member's own values enter
    # its loss through the stack (``stack_floats.MemberFloats``); anything else must be equal
    try:  # with the model's defaults filled in: trial 0 (the entry's own parameters) stacks with the others
        params = asdict(model_config(job.model, job.params))
    except Exception:  # noqa: BLE001 - invalid parameters fail in their own job, with their own message
        return None
    identity["params"] = {k: "float" if type(v) is float else v for k, v in params.items()}
    train = identity["train"]
    if train.get("optimizer", "adam") in LR_FREE_UPDATES and not train.get("weight_decay"):
        train.pop("lr", None)  # trials of a learning rate: each member steps at its own (``Stack.lrs``)
    return digest(identity)


def stacking(run: RunSettings) -> bool:
    """``run.stack``: on, off, or auto (on where the jobs run on a GPU)."""
    if run.stack not in ("auto", "on", "off"):
        from aebench.errors import AebenchError

        raise AebenchError(f"--stack {run.stack!r}: expected auto, on or off")
    if run.stack == "auto":
        from aebench.runner.settings import resolve_device

        return resolve_device(run.device).type == "cuda"
    return run.stack == "on"


def plan_stacks(jobs: list[Job], run: RunSettings) -> list[list[Job]]:
    """Groups of two or more untrained jobs that differ only in their seed or their model's float
    hyperparameters, in the order the jobs come (none where ``run.stack`` says not to stack)."""
    if not stacking(run):
        return []
    groups: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        key = stack_key(job)
        jd = JobDir(run.suite_dir(job.suite) / job.id)
        if key is not None and not (jd.path.exists() and jd.is_trained()):
            groups[key].append(job)
    return [g for g in groups.values() if len(g) > 1]


def task_units(jobs: list[Job], run: RunSettings) -> list[list[int]]:
    """The jobs as a launcher's tasks, by index into ``jobs`` in their order: one job each, except a stack group
    (``plan_stacks``), which is one task whole (a worker's, a Slurm array task's)."""
    index = {job.id: i for i, job in enumerate(jobs)}
    groups = {g[0].id: [index[j.id] for j in g] for g in plan_stacks(jobs, run)}
    grouped = {i for g in groups.values() for i in g}
    return [groups.get(job.id, [i]) for i, job in enumerate(jobs) if job.id in groups or i not in grouped]


def members_named(jobs: list[Job]) -> str:
    """``vae: seeds 0, 1, 2`` or, for trials, ``beta-vae: beta-vae@t0 s0, beta-vae@t1 s0``."""
    if len({j.label for j in jobs}) == 1:
        return f"{jobs[0].label}: seeds {', '.join(str(j.seed) for j in jobs)}"
    return f"{jobs[0].model}: {', '.join(f'{j.label} s{j.seed}' for j in jobs)}"


@dataclass
class _Member:
    job: Job
    jd: JobDir
    model: Any
    optimizers: list
    state: Any  # TrainState
    rng: dict[str, torch.Tensor]
    on_epoch: Callable[[int, Any], None]
    started: str


def train_stack(jobs: list[Job], run: RunSettings, log: Callable[[str], None],
                position: int = 0) -> dict[str, str | None]:
    """Train ``jobs`` (one stack group) together; returns, for each job it finished, None (trained) or the reason
    it failed (diverged), so that no job is trained twice.

    The others (locked by another process, or the whole group when the model turns out not to be stackable,
    or the members still training when the stack fails) are left to the ordinary one-job-at-a-time path.
    """
    finished: dict[str, str | None] = {}
    held: list[JobDir] = []
    mine: list[Job] = []
    for job in jobs:
        jd = JobDir(run.suite_dir(job.suite) / job.id)
        try:
            jd.lock()
        except ResultsLocked:
            continue
        if jd.is_trained():
            jd.unlock()
            continue
        held.append(jd)
        mine.append(job)
    try:
        if len(mine) < 2:
            return finished
        try:
            _train_locked(mine, held, run, log, position, finished)
        except NotStackable as e:
            log(f"{members_named(mine)} train one at a time ({e})")
        except (KeyboardInterrupt, SystemExit, OSError):
            raise
        except Exception as e:  # noqa: BLE001 - the jobs resume one at a time from their last saved epoch
            log(f"{members_named(mine)}: the stack failed ({e.__class__.__name__}: {str(e)[:200]}); the "
                "unfinished ones go on one at a time")
        return finished
    finally:
        for jd in held:
            jd.unlock()


def _train_locked(jobs: list[Job], dirs: list[JobDir], run: RunSettings, log: Callable[[str], None],
                  position: int, finished: dict[str, str | None]) -> None:
    from tqdm.auto import tqdm

    from aebench.runner.job import (
        _now,
        build_job_model,
        epoch_writer,
        finish_training,
        load_split,
        record_failure,
        selection_of,
        train_settings,
    )
    from aebench.runner.settings import prepare_device
    from aebench.runner.stack_tape import get_rng
    from aebench.runner.train import seed_everything, start_training

    device = prepare_device(run.device)
    first = jobs[0]
    train_set = load_split(first, "train", run, device)
    val_set = load_split(first, "val", run, device) if first.val else None
    settings, sel, tcfg = train_settings(first), selection_of(first), first.train
    members = []
    for job, jd in zip(jobs, dirs, strict=True):
        seed_everything(job.seed)
        model = build_job_model(job, train_set.shape, device)
        optimizers, state = start_training(model, train_settings(job), sel, tcfg.epochs, device, jd / files.RESUME,
                                           lambda m, job=job: log(f"{job.label} ({job.id}): {m}"))
        members.append(_Member(job, jd, model, optimizers, state, get_rng(), epoch_writer(job, jd, model), _now()))
    if len({m.state.epoch for m in members}) > 1 or any(m.state.stopped_early for m in members):
        raise NotStackable("their resume states are at different epochs")
    if members[0].state.epoch >= tcfg.epochs:
        raise NotStackable("their training is over; each job only saves its weights")
    from aebench.runner.stack_loop import Stack

    stack = Stack(members, settings, device)
    stack.probe(train_set, tcfg.batch_size)  # raises NotStackable before anything is written
    for m in members:
        m.jd.reset()
        m.jd.write_json(files.CONFIG, m.job.config())
    log(f"{members_named(jobs)}: training as one stack")
    steps = -(-len(train_set) // tcfg.batch_size) * (tcfg.epochs - members[0].state.epoch)
    bar = tqdm(total=steps, desc=f"{first.label[:20]} x{len(members)}", position=position, leave=False,
               unit="step", disable=not run.progress, dynamic_ncols=True, mininterval=0.5)
    try:
        for m, outcome in stack.run(train_set, val_set, tcfg.epochs, tcfg.batch_size, sel,
                                    None if bar.disable else bar.update):
            if isinstance(outcome, Diverged):
                record_failure(m.jd, outcome, {"stacked": True})
                finished[m.job.id] = str(outcome)
            else:  # written as soon as it leaves the stack: a member that stopped early waits for no one
                finish_training(m.job, m.jd, m.model, m.state, device, m.started, val_set is not None,
                                {"stacked_with": [o.job.id for o in members if o is not m]})
                finished[m.job.id] = None
    finally:
        bar.close()

