"""Run one job end to end: lock, load data, train (resuming), evaluate, write results, mark done."""

from __future__ import annotations

import datetime as dt
import errno
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from aebench import faults
from aebench.errors import AebenchError, Diverged, JobFailed, ResultsLocked, ResultsUnwritable
from aebench.job import Job
from aebench.runner.settings import RunSettings
from aebench.store import jobdir as files
from aebench.store.jobdir import JobDir

GRID_N = 100  # images per sample grid


@dataclass
class Outcome:
    job_id: str
    label: str
    status: str  # done (trained and evaluated), evaluated (evaluation only), skipped, failed, locked, untrained
    reason: str = ""
    seconds: float = 0.0
    computed: list[str] = field(default_factory=list)  # the metrics computed (not reused from records)


def run_after_stack(job: Job, run: RunSettings, stacked: dict[str, str | None], position: int = 0) -> Outcome:
    """``run_job`` for a job its stack (``runner.stacked.train_stack``) may have finished: one that failed there
    is not trained again, and one trained there and evaluated here is, for the run, done."""
    if stacked.get(job.id) is not None:
        return Outcome(job.id, job.label, "failed", stacked[job.id])
    outcome = run_job(job, run, progress_position=position)
    return replace(outcome, status="done") if outcome.status == "evaluated" and job.id in stacked else outcome


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("aebench", "torch", "torchvision", "torch-fidelity", "numpy", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"


def load_split(job: Job, split: str, run: RunSettings, device):
    """``train`` (less the validation images, then ``train_limit``), ``val`` (the last ``job.val`` training images)
    or ``test``; ``test_limit`` applies to the split that is evaluated."""
    from aebench.data import load

    if split in ("train", "val"):
        train, val = load(job.dataset, "train", run.data_root, run.download, job.dataset_options).split_off(job.val)
        data = train.subset(job.train_limit) if split == "train" else val.subset(job.evaluation.test_limit)
    else:
        data = load(job.dataset, "test", run.data_root, run.download, job.dataset_options)
        data = data.subset(job.evaluation.test_limit)
    return data.to(device)


def _write_curve(jd: JobDir, curve: list[dict[str, float]]) -> None:
    from aebench.store.atomic import atomic_write_text

    keys = list(dict.fromkeys(k for row in curve for k in row))
    lines = [",".join(keys)] + [",".join(repr(float(r.get(k, float("nan")))) for k in keys) for r in curve]
    atomic_write_text(jd / files.CURVE, "\n".join(lines) + "\n")


def _oom_types() -> tuple[type, ...]:
    import torch

    return (torch.cuda.OutOfMemoryError, MemoryError) if hasattr(torch.cuda, "OutOfMemoryError") else (MemoryError,)


# A full disk or a read-only folder fails every job after this one too: stop the suite instead.
FATAL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def log(message: str) -> None:
    """A line on stderr that does not tear the progress bars."""
    from tqdm.auto import tqdm

    tqdm.write(f"aebench: {message}", file=sys.stderr)


def run_job(job: Job, run: RunSettings, progress_position: int = 0, train: bool = True) -> Outcome:
    """Train ``job`` if its training is not done, then compute what its evaluation lacks; a failure is recorded,
    never raised. ``train=False`` (``aebench evaluate``) evaluates finished trainings only.

    Raised are Ctrl-C, and ``ResultsUnwritable`` for a full disk or read-only results folder, which
    would fail every later job as well.
    """
    jd = JobDir(run.suite_dir(job.suite) / job.id)
    requests = job.evaluation.requests(job.hash)
    if up_to_date(jd, requests):
        return Outcome(job.id, job.label, "skipped")
    if not train and not jd.is_trained():
        return Outcome(job.id, job.label, "untrained", "not trained yet: `aebench run` trains it")
    try:
        jd.lock()
    except ResultsLocked as e:
        return Outcome(job.id, job.label, "locked", str(e))
    except OSError as e:
        raise _unwritable(e, jd.path) from None
    t0 = time.perf_counter()
    try:
        if up_to_date(jd, requests):  # finished by another process while we waited for the lock
            return Outcome(job.id, job.label, "skipped")
        from aebench.runner.evaluate import evaluate_job, missing_requests

        trained = jd.is_trained()
        if trained and not has_weights(job, jd) and missing_requests(jd, requests):
            if job.evaluated_only:
                raise JobFailed(f"the weights of this outside model are gone from {jd.path}; score it again with "
                                "aebench evaluate --checkpoint/--pythae")
            if not train:
                return Outcome(job.id, job.label, "untrained", "its weights were stripped (aebench strip): "
                               "`aebench run` retrains it to compute the new metrics")
            log(f"{job.label} ({job.id}): its weights were stripped; retraining to compute "
                f"{', '.join(r.name for r in missing_requests(jd, requests))}")
            trained = False
        model = None
        if not trained:
            jd.reset()
            jd.write_json(files.CONFIG, job.config())
            faults.point("job_start")
            model = train_job(job, jd, run, progress_position)
        (jd / files.FAILED).unlink(missing_ok=True)
        faults.point("eval_start")
        computed = evaluate_job(job, jd, run, requests, model)
        jd.mark_done()
        return Outcome(job.id, job.label, "done" if not trained else "evaluated", seconds=time.perf_counter() - t0,
                       computed=computed)
    except (KeyboardInterrupt, SystemExit):  # ^C, or a Slurm requeue: not a failure of the job
        raise
    except BaseException as exc:  # noqa: BLE001 - one job's failure must not stop the suite
        _release_memory()
        if isinstance(exc, OSError) and exc.errno in FATAL_ERRNOS:
            raise _unwritable(exc, jd.path) from None
        reason = _reason(exc)
        try:
            record_failure(jd, exc)
        except OSError:
            pass
        if run.debug:
            traceback.print_exc()
        return Outcome(job.id, job.label, "failed", reason, time.perf_counter() - t0)
    finally:
        jd.unlock()


def record_failure(jd: JobDir, exc: BaseException, extra: dict | None = None) -> None:
    """``failed.json``: the reason, the traceback, when, and ``kind: diverged`` for a NaN or infinite loss."""
    jd.mark_failed(_reason(exc), {"traceback": "".join(traceback.format_exception(exc)), "at": _now(),
                                  **({"kind": "diverged"} if isinstance(exc, Diverged) else {}), **(extra or {})})


def has_weights(job: Job, jd: JobDir) -> bool:
    """Whether the folder still holds the weights (``aebench strip`` removes them; a pythae model keeps its own)."""
    if job.origin and job.origin.get("kind") == "pythae":
        return (jd / job.origin["path"] / "model.pt").exists()
    return (jd / files.CHECKPOINT).exists()


def up_to_date(jd: JobDir, requests) -> bool:
    """Done, and evaluated with exactly these metric keys."""
    return jd.is_done() and jd.evaluated_keys() == {r.name: r.key for r in requests}


def _unwritable(exc: OSError, where: Path) -> ResultsUnwritable:
    what = exc.filename or where
    return ResultsUnwritable(f"cannot write {what} ({exc.strerror or exc}); free some space or choose "
                             "another folder with --results, then run again: finished jobs are kept")


def _release_memory() -> None:
    """Free what a failed job held (after an out-of-memory error the next job needs it back)."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (JobFailed, AebenchError)):
        return str(exc)
    if isinstance(exc, _oom_types()) or "out of memory" in str(exc).lower():
        return "out of memory: try a smaller train.batch_size or eval.batch_size (--set train.batch_size=64)"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {first}"[:500]


def train_job(job: Job, jd: JobDir, run: RunSettings, position: int = 0):
    """The training stage: train (resuming), save the weights, curve and provenance, mark trained.
    Returns the trained model (the evaluation stage uses it without reloading)."""
    from tqdm.auto import tqdm

    from aebench.runner.settings import prepare_device
    from aebench.runner.train import seed_everything, train

    device = prepare_device(run.device)
    started = _now()
    train_set = load_split(job, "train", run, device)
    val_set = load_split(job, "val", run, device) if job.val else None
    seed_everything(job.seed)
    model = build_job_model(job, train_set.shape, device)
    tcfg = job.train
    steps = -(-len(train_set) // tcfg.batch_size) * tcfg.epochs
    bar = tqdm(total=steps, desc=job.label[:28], position=position, leave=False, unit="step",
               disable=not run.progress, dynamic_ncols=True, mininterval=0.5)
    try:
        state = train(model, train_set, train_settings(job), tcfg.epochs, tcfg.batch_size, job.seed, device,
                      resume_path=jd / files.RESUME, checkpoint_every=tcfg.checkpoint_every,
                      on_epoch=epoch_writer(job, jd, model, None if bar.disable else bar),
                      progress=None if bar.disable else bar.update,
                      log=lambda message: log(f"{job.label} ({job.id}): {message}"),
                      precision=tcfg.precision, compile=tcfg.compile, val=val_set, selection=selection_of(job))
    finally:
        bar.close()
    finish_training(job, jd, model, state, device, started, val_set is not None)
    return model


def build_job_model(job: Job, image_shape, device):
    """The job's model, initialised from the global generator (seeded by the caller)."""
    from aebench.models.base import build_model

    return build_model(job.model, image_shape, job.latent_dim, job.params, job.backbone, job.backbone_options,
                       job.likelihood, job.likelihood_options).to(device)


def train_settings(job: Job):
    from aebench.models.base import TrainSettings

    t = job.train
    return TrainSettings(t.optimizer, t.lr, t.weight_decay, t.grad_clip)


def selection_of(job: Job):
    from aebench.runner.train import Selection

    t = job.train
    return Selection(t.select, t.patience, t.schedule, t.lr_factor, t.lr_patience, t.min_lr)


def epoch_writer(job: Job, jd: JobDir, model, bar=None):
    """What a job writes after an epoch: its curve (as often as the resume state) and, after the first and
    the last epoch, a grid of samples from fixed codes."""
    import torch

    from aebench.runner.grids import save_grid

    tcfg = job.train
    fixed_z = torch.randn(GRID_N, job.latent_dim, generator=torch.Generator().manual_seed(job.seed))

    def on_epoch(epoch: int, state) -> None:
        if epoch % tcfg.checkpoint_every == 0 or epoch == tcfg.epochs:
            _write_curve(jd, state.curve)
        if epoch in (1, tcfg.epochs):
            device = next(iter(model.parameters()), fixed_z).device
            model.eval()
            with torch.no_grad():
                save_grid(model.generate(fixed_z.to(device)),
                          jd / f"samples-epoch-{'first' if epoch == 1 else 'last'}.png")
            model.train()
        if bar is not None:
            bar.set_postfix(epoch=f"{epoch}/{tcfg.epochs}", loss=f"{state.curve[-1]['loss']:.4g}")

    return on_epoch


def finish_training(job: Job, jd: JobDir, model, state, device, started: str, validated: bool,
                    extra: dict | None = None) -> None:
    """Save the trained weights and their provenance, then mark the job trained."""
    from aebench.store.atomic import atomic_torch_save

    faults.point("train_done")
    atomic_torch_save(model.state_dict(), jd / files.CHECKPOINT)
    best = job.train.select == "best" and validated
    jd.write_json(files.PROVENANCE, {
        "versions": versions(), "git_commit": git_commit(), "device": device_name(device),
        "seed": job.seed, "started": started, "finished": _now(), "train_seconds": state.seconds,
        "python": platform.python_version(), "host": platform.node(), "epochs": state.epoch,
        "params": sum(p.numel() for p in model.parameters()), "origin": "trained by aebench",
        "selected_epoch": state.selector.best_epoch if best else state.epoch,
        "best_val_loss": state.selector.best if validated else None, "stopped_early": state.stopped_early,
        **(extra or {}),
    })
    jd.mark_trained()
