"""The training loop: batches drawn from uint8 tensors on the device, epoch checkpoints, divergence checks.

Per step it does only what a hand-written PyTorch loop does (index, convert, step); loss terms are
summed on the device and read once per epoch, so there is no host sync in the hot loop.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aebench.data.base import ImageSet
from aebench.errors import JobFailed
from aebench.models.base import Autoencoder, TrainSettings
from aebench.store.atomic import atomic_torch_save


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The batch order of an epoch depends only on (seed, epoch), so a resumed run sees the same data."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def save_resume(path: Path, model: Autoencoder, optimizers: list, state: TrainState) -> None:
    blob = {
        "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers],
        "epoch": state.epoch,
        "curve": state.curve,
        "seconds": state.seconds,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    atomic_torch_save(blob, path)


def load_resume(path: Path, model: Autoencoder, optimizers: list, device: torch.device) -> TrainState | None:
    """Restore a training state; None (start afresh) if there is none or it is damaged."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(blob["model"])
        for opt, sd in zip(optimizers, blob["optimizers"], strict=True):
            opt.load_state_dict(sd)
        torch.set_rng_state(blob["rng_cpu"].cpu())
        if blob["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in blob["rng_cuda"]])
        return TrainState(int(blob["epoch"]), list(blob["curve"]), float(blob["seconds"]))
    except Exception:  # noqa: BLE001 - truncated or foreign file: retrain from scratch
        path.unlink(missing_ok=True)
        return None


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
) -> TrainState:
    """Train ``model`` for ``epochs`` over ``data`` (uint8 on ``device``); resumes from ``resume_path``.

    Raises ``JobFailed`` when a loss term turns NaN or infinite.
    """
    optimizers = model.configure_optimizers(settings)
    state = load_resume(resume_path, model, optimizers, device) if resume_path else None
    state = state or TrainState()
    n = len(data)
    steps = math.ceil(n / batch_size)
    images = data.images
    for epoch in range(state.epoch + 1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = epoch_permutation(n, seed, epoch, device)
        sums: dict[str, torch.Tensor] = {}
        for i in range(steps):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = images[idx].float().div_(255.0)
            terms = model.train_step(x, optimizers, settings.grad_clip)
            for k, v in terms.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            if progress is not None:
                progress(1)
        row = {k: float(v) / steps for k, v in sums.items()}
        bad = [k for k, v in row.items() if not math.isfinite(v)]
        if bad:
            raise JobFailed(f"loss term {bad[0]!r} became {row[bad[0]]} in epoch {epoch}; "
                            "try a smaller learning rate or train.grad_clip")
        state.seconds += time.perf_counter() - t0
        state.epoch = epoch
        state.curve.append({"epoch": epoch, "seconds": state.seconds, **row})
        if on_epoch is not None:
            on_epoch(epoch, state)
        if resume_path is not None and (epoch % checkpoint_every == 0) and epoch < epochs:
            save_resume(resume_path, model, optimizers, state)
    return state
