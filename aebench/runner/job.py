"""Run one job end to end: lock, load data, train (resuming), evaluate, write results, mark done."""

from __future__ import annotations

import datetime as dt
import errno
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from aebench import faults
from aebench.errors import AebenchError, JobFailed, ResultsLocked, ResultsUnwritable
from aebench.runner.settings import RunSettings
from aebench.store import jobdir as files
from aebench.store.jobdir import JobDir
from aebench.suite import Job

GRID_N = 100  # images per sample grid


@dataclass
class Outcome:
    job_id: str
    label: str
    status: str  # done, skipped (already done), failed, locked
    reason: str = ""
    seconds: float = 0.0


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
    from aebench.data import load

    limit = job.data.get(f"{split}_limit")
    data = load(job.dataset, split, run.data_root, run.download, job.dataset_options).subset(limit)
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


def run_job(job: Job, run: RunSettings, progress_position: int = 0) -> Outcome:
    """Run ``job`` into ``results/<suite>/<job-id>/``; a failure is recorded, never raised.

    Raised are Ctrl-C, and ``ResultsUnwritable`` for a full disk or read-only results folder, which
    would fail every later job as well.
    """
    jd = JobDir(run.suite_dir(job.suite) / job.id)
    if jd.is_done():
        return Outcome(job.id, job.label, "skipped")
    try:
        jd.lock()
    except ResultsLocked as e:
        return Outcome(job.id, job.label, "locked", str(e))
    except OSError as e:
        raise _unwritable(e, jd.path) from None
    t0 = time.perf_counter()
    try:
        if jd.is_done():  # finished by another process while we waited for the lock
            return Outcome(job.id, job.label, "skipped")
        jd.reset()
        jd.write_json(files.CONFIG, job.config())
        faults.point("job_start")
        _train_and_evaluate(job, jd, run, progress_position)
        jd.mark_done()
        return Outcome(job.id, job.label, "done", seconds=time.perf_counter() - t0)
    except (KeyboardInterrupt, SystemExit):  # ^C, or a Slurm requeue: not a failure of the job
        raise
    except BaseException as exc:  # noqa: BLE001 - one job's failure must not stop the suite
        _release_memory()
        if isinstance(exc, OSError) and exc.errno in FATAL_ERRNOS:
            raise _unwritable(exc, jd.path) from None
        reason = _reason(exc)
        try:
            jd.mark_failed(reason, {"traceback": traceback.format_exc(), "at": _now()})
        except OSError:
            pass
        if run.debug:
            traceback.print_exc()
        return Outcome(job.id, job.label, "failed", reason, time.perf_counter() - t0)
    finally:
        jd.unlock()


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


def _train_and_evaluate(job: Job, jd: JobDir, run: RunSettings, position: int) -> None:
    import torch
    from tqdm.auto import tqdm

    from aebench.metrics.base import EvalContext, evaluate, to_uint8
    from aebench.models.base import TrainSettings, build_model
    from aebench.runner.grids import interleave, save_grid
    from aebench.runner.settings import resolve_device
    from aebench.runner.train import seed_everything, train
    from aebench.store.atomic import atomic_torch_save

    device = resolve_device(run.device)
    if device.type == "cpu":
        # Weights that weight decay drives towards zero (RAE's decoder, dead units) become subnormal
        # floats, which x86 CPUs compute 10-100x slower: RAE's epochs grew from 2.5 s to 14 s. Flushing
        # them to zero changes nothing a metric can see.
        torch.set_flush_denormal(True)
    started = _now()
    train_set = load_split(job, "train", run, device)
    test_set = load_split(job, "test", run, device)
    seed_everything(job.seed)
    model = build_model(job.model, train_set.shape, job.latent_dim, job.params, job.backbone,
                        job.backbone_options, job.likelihood, job.likelihood_options).to(device)
    tcfg = job.train
    settings = TrainSettings(tcfg["optimizer"], tcfg["lr"], tcfg["weight_decay"], tcfg["grad_clip"])
    steps = -(-len(train_set) // tcfg["batch_size"]) * tcfg["epochs"]
    fixed_z = torch.randn(GRID_N, job.latent_dim, generator=torch.Generator().manual_seed(job.seed)).to(device)

    every = tcfg.get("checkpoint_every", 1)

    def on_epoch(epoch: int, state) -> None:
        if epoch % every == 0 or epoch == tcfg["epochs"]:  # as often as the resume state, no more
            _write_curve(jd, state.curve)
        if epoch in (1, tcfg["epochs"]):
            model.eval()
            with torch.no_grad():
                save_grid(model.generate(fixed_z), jd / f"samples-epoch-{'first' if epoch == 1 else 'last'}.png")
        if bar is not None:
            bar.set_postfix(epoch=f"{epoch}/{tcfg['epochs']}", loss=f"{state.curve[-1]['loss']:.4g}")

    bar = tqdm(total=steps, desc=job.label[:28], position=position, leave=False, unit="step",
               disable=not run.progress, dynamic_ncols=True, mininterval=0.5)
    try:
        state = train(model, train_set, settings, tcfg["epochs"], tcfg["batch_size"], job.seed, device,
                      resume_path=jd / files.RESUME, checkpoint_every=every,
                      on_epoch=on_epoch,
                      progress=None if bar.disable else bar.update,
                      log=lambda message: log(f"{job.label} ({job.id}): {message}"),
                      precision=tcfg.get("precision", "fp32"), compile=tcfg.get("compile", False))
    finally:
        bar.close()
    faults.point("train_done")
    atomic_torch_save(model.state_dict(), jd / files.CHECKPOINT)
    faults.point("eval_start")

    # -- evaluation -------------------------------------------------------------------------------------
    ev = job.eval
    ctx = EvalContext(
        model=model, train=train_set, test=test_set, device=device, seed=job.seed,
        samplers=tuple(ev["samplers"]), n_samples=ev["n_samples"], batch_size=ev["batch_size"],
        cache_dir=Path(run.results) / ".cache",
        info={"train_seconds": state.seconds, "epochs": state.epoch, "dataset": job.dataset,
              "params": sum(p.numel() for p in model.parameters())},
    )
    t_eval = time.perf_counter()
    result = evaluate(ctx, job.metrics)
    eval_seconds = time.perf_counter() - t_eval
    result["values"].update({
        "cost/params": float(ctx.info["params"]),
        "cost/train_seconds": state.seconds,
        "cost/seconds_per_epoch": state.seconds / max(state.epoch, 1),
        "cost/eval_seconds": eval_seconds,
    })
    n_show = min(GRID_N, len(test_set))
    x = test_set.images[:n_show]
    save_grid(interleave(x.cpu(), ctx.reconstructions("test")[:n_show]), jd / "reconstructions.png")
    for name in ctx.samplers:
        save_grid(ctx.samples(name, GRID_N), jd / f"samples-{name}.png")
    with torch.no_grad():
        model.eval()
        codes = ctx.codes("test").mean[:2]
        if len(codes) == 2:
            t = torch.linspace(0, 1, 10).unsqueeze(1)
            z = (1 - t) * codes[0] + t * codes[1]
            save_grid(to_uint8(model.generate(z.to(device))).cpu(), jd / "interpolation.png")
    faults.point("metrics_write")
    jd.write_json(files.METRICS, {**result, "sampled_with": list(ctx.samplers)})
    faults.point("metrics_written")
    jd.write_json(files.PROVENANCE, {
        "versions": versions(), "git_commit": git_commit(), "device": device_name(device),
        "seed": job.seed, "started": started, "finished": _now(),
        "wall_seconds": state.seconds + eval_seconds, "python": platform.python_version(),
        "host": platform.node(), "epochs": state.epoch,
    })
