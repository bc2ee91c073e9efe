"""The training loop: batches drawn from uint8 tensors on the device, epoch checkpoints, divergence checks.

Per step it does only what a hand-written PyTorch loop does (index, convert, step); loss terms are
summed on the device and read once per epoch, so there is no host sync in the hot loop.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aebench import faults
from aebench.data.base import ImageSet
from aebench.errors import Diverged
from aebench.models.base import Autoencoder, TrainSettings
from aebench.runner.selection import Selector, make_schedulers, step_schedulers, validation_terms
from aebench.store.atomic import atomic_torch_save


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The batch order of an epoch depends only on (seed, epoch), so a resumed run sees the same data."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def gather_batch(images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] of uint8 ``images`` at ``idx`` (any shape: a stack's (members, batch)), in one
    pass: the gather, then uint8 -> float / 255."""
    x = torch.div(images.index_select(0, idx.flatten()), 255.0)
    return x.view(*idx.shape, *images.shape[1:])


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    selector: Selector = field(default_factory=Selector)
    schedulers: list = field(default_factory=list)


@dataclass
class Selection:
    """How the epochs are judged on the validation split (``train.select``, ``patience``, ``schedule``)."""

    select: str = "last"
    patience: int | None = None
    schedule: str = "none"
    lr_factor: float = 0.5
    lr_patience: int = 3
    min_lr: float = 0.0


def save_resume(path: Path, model: Autoencoder, optimizers: list, state: TrainState) -> None:
    """Save everything the next epoch depends on, every random generator included, so that a resumed
    run continues bit for bit as the uninterrupted one would have."""
    np_state = np.random.get_state()
    blob = {
        "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers],
        "epoch": state.epoch,
        "curve": state.curve,
        "seconds": state.seconds,
        "stopped_early": state.stopped_early,
        "selector": state.selector.state_dict(),
        "schedulers": [s.state_dict() for s in state.schedulers],
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_python": random.getstate(),
        "rng_numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    atomic_torch_save(blob, path)


def load_resume(path: Path, model: Autoencoder, optimizers: list, device: torch.device,
                log: Callable[[str], None] | None = None, selector: Selector | None = None,
                schedulers: list | None = None) -> TrainState | None:
    """Restore a training state; None (start afresh, saying why) if there is none or it is damaged."""
    if not path.exists():
        return None
    model_before = {k: v.clone() for k, v in model.state_dict().items()}
    selector = selector or Selector()
    schedulers = schedulers if schedulers is not None else []
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(blob["model"])
        for opt, sd in zip(optimizers, blob["optimizers"], strict=True):
            opt.load_state_dict(sd)
        state = TrainState(int(blob["epoch"]), list(blob["curve"]), float(blob["seconds"]),
                           bool(blob.get("stopped_early", False)), selector, schedulers)
        if "selector" in blob:
            selector.load_state_dict(blob["selector"])
        for sched, sd in zip(schedulers, blob.get("schedulers", []), strict=False):
            sched.load_state_dict(sd)
        rng_cpu, rng_cuda, rng_python, rng_numpy = (blob["rng_cpu"], blob["rng_cuda"], blob["rng_python"],
                                                    blob["rng_numpy"])
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file: retrain from scratch
        model.load_state_dict(model_before)  # a partial load must not leak into the fresh start
        for opt in optimizers:
            opt.state.clear()
        (log or _stderr)(f"damaged resume state {path} ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); training from scratch")
        path.unlink(missing_ok=True)
        return None
    torch.set_rng_state(rng_cpu.cpu())
    if rng_cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng_cuda])
    random.setstate(rng_python)
    np.random.set_state(("MT19937", rng_numpy["keys"].numpy().astype(np.uint32), rng_numpy["pos"],
                         rng_numpy["has_gauss"], rng_numpy["cached_gaussian"]))
    (log or _stderr)(f"resuming from epoch {state.epoch} ({path})")
    return state


def _stderr(message: str) -> None:
    print(f"aebench: {message}", file=sys.stderr)


def _non_finite_parameter(model: Autoencoder) -> str | None:
    """The name of a parameter holding NaN or inf (what exploding gradients leave behind), if any."""
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            return name
    return None


def start_training(model: Autoencoder, settings: TrainSettings, sel: Selection, epochs: int, device: torch.device,
                   resume_path: Path | None, log: Callable[[str], None] | None = None) -> tuple[list, TrainState]:
    """The model's optimisers and its training state: resumed from ``resume_path`` if one is saved there, else
    fresh (with the selector and schedules ``sel`` asks for). The one-job loop and each stack member start here."""
    optimizers = model.configure_optimizers(settings)
    selector = Selector(keep_weights=sel.select == "best", patience=sel.patience)
    schedulers = make_schedulers(optimizers, sel.schedule, epochs, sel.lr_factor, sel.lr_patience, sel.min_lr)
    state = load_resume(resume_path, model, optimizers, device, log, selector, schedulers) if resume_path else None
    return optimizers, state or TrainState(selector=selector, schedulers=schedulers)


def check_finite(row: dict[str, float], model: Autoencoder, epoch: int) -> None:
    """Raise ``Diverged`` when an epoch's mean loss term or a parameter is NaN or infinite."""
    bad = [k for k, v in row.items() if not math.isfinite(v)]
    param = _non_finite_parameter(model)
    if bad or param is not None:
        loss = f"loss term {bad[0]!r} became {row[bad[0]]} in epoch {epoch}" if bad else ""
        weights = (f"parameter {param!r} became NaN or infinite{'' if bad else f' in epoch {epoch}'} "
                   "(exploding gradients)") if param is not None else ""
        raise Diverged(f"{' and '.join(filter(None, (loss, weights)))}; "
                       "try a smaller learning rate or train.grad_clip")


def close_epoch(model: Autoencoder, optimizers: list, state: TrainState, row: dict[str, float], epoch: int,
                epochs: int, val: ImageSet | None, batch_size: int, seed: int, device: torch.device,
                on_epoch: Callable[[int, TrainState], None] | None, resume_path: Path | None,
                checkpoint_every: int) -> None:
    """After an epoch's steps: validate and select, step the schedules, record the curve row, save the resume
    state. Shared by the one-job loop and the stack (which calls it per member, with the member's generators)."""
    fault = faults.point if faults.enabled() else None
    if val is not None:
        row.update(validation_terms(model, val, batch_size, seed, epoch, device))
        state.selector.update(epoch, row["val_loss"], model)
        state.stopped_early = state.selector.stop and epoch < epochs
    step_schedulers(state.schedulers, row.get("val_loss", row.get("loss")))
    if state.schedulers:
        row["lr"] = float(optimizers[0].param_groups[0]["lr"])
    state.epoch = epoch
    state.curve.append({"epoch": epoch, "seconds": state.seconds, **row})
    if on_epoch is not None:
        on_epoch(epoch, state)
    if fault is not None:
        fault("epoch_end")
    if resume_path is not None and (epoch % checkpoint_every == 0 or epoch == epochs or state.stopped_early):
        save_resume(resume_path, model, optimizers, state)
        if fault is not None:
            fault("epoch_saved")


def train(
    model: Autoencoder,
    data: ImageSet,
    settings: TrainSettings,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    resume_path: Path | None = None,
    checkpoint_every: int = 1,
    on_epoch: Callable[[int, TrainState], None] | None = None,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
    precision: str = "fp32",
    compile: bool = False,
    val: ImageSet | None = None,
    selection: Selection | None = None,
) -> TrainState:
    """Train ``model`` for ``epochs`` over ``data`` (uint8 on ``device``); resumes from ``resume_path``.

    The resume state is saved every ``checkpoint_every`` epochs and after the last one, so a run killed
    during evaluation does not train again. Raises ``JobFailed`` when a loss term or a parameter turns
    NaN or infinite (divergence, exploding gradients). ``precision="bf16"`` runs the steps under
    autocast; ``compile=True`` compiles the model's ``train_step`` with ``torch.compile``.
    """
    sel = selection or Selection()
    optimizers, state = start_training(model, settings, sel, epochs, device, resume_path, log)
    step = model.train_step
    if compile:  # what the loop calls: the whole step (a two-player model's both updates), not only the loss
        step = torch.compile(model.train_step)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    validate = val is not None and len(val) > 0
    fault = faults.point if faults.enabled() else None
    n = len(data)
    steps = math.ceil(n / batch_size)
    images = data.images
    for epoch in range(state.epoch + 1, epochs + 1):
        if state.stopped_early:
            break
        model.train()
        t0 = time.perf_counter()
        perm = epoch_permutation(n, seed, epoch, device)
        sums: dict[str, torch.Tensor] = {}
        for i in range(steps):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = gather_batch(images, idx)
            with autocast():
                terms = step(x, optimizers, settings.grad_clip)
            for k, v in terms.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            if progress is not None:
                progress(1)
            if fault is not None:
                fault("train_step")
        row = {k: float(v) / steps for k, v in sums.items()}
        check_finite(row, model, epoch)
        state.seconds += time.perf_counter() - t0
        close_epoch(model, optimizers, state, row, epoch, epochs, val if validate else None, batch_size, seed,
                    device, on_epoch, resume_path, checkpoint_every)
    if sel.select == "best" and validate:
        state.selector.restore(model)
    return state
