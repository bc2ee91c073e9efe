"""Model selection during training: the validation loss per epoch, the best epoch's weights, early stopping
and learning-rate schedules. Selection only ever sees the validation split.

- ``validation_terms``: every loss term averaged over the validation images, under a random stream seeded by
  (seed, epoch) and forked from the training one, so validating changes nothing in training.
- ``Selector``: remembers the epoch with the lowest validation ``loss`` and its weights (``select: best``),
  and says when ``patience`` epochs went by without a better one.
- ``make_schedulers``: ReduceLROnPlateau on the validation loss (as the RAE code), or cosine annealing over
  the epochs; one per optimiser.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from aebench.data.base import ImageSet


def validation_terms(model: Any, val: ImageSet, batch_size: int, seed: int, epoch: int,
                     device: torch.device) -> dict[str, float]:
    """Mean of each loss term over the validation split, in eval mode.

    Gradients stay enabled (some objectives differentiate inside: a contractive penalty, a gradient penalty,
    leapfrog steps) but nothing is stepped. The draws are seeded by (seed, epoch) on a forked random stream.
    """
    model.eval()
    sums: dict[str, float] = {}
    n = len(val)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed * 1_000_003 + epoch)
        for i in range(0, n, batch_size):
            x = val.floats(slice(i, i + batch_size)).to(device)
            with torch.enable_grad():
                terms = model.loss(x)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * x.shape[0]
    model.train()
    return {f"val_{k}": v / n for k, v in sums.items()}


@dataclass
class Selector:
    """The best validation loss so far, its epoch and (for ``select: best``) its weights, and the patience count."""

    keep_weights: bool = False
    patience: int | None = None
    best: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def update(self, epoch: int, val_loss: float, model: Any) -> None:
        if val_loss < self.best:
            self.best, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            if self.keep_weights:
                self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.bad_epochs, self.weights = int(state["bad_epochs"]), state["weights"]

    def restore(self, model: Any) -> None:
        """Load the best epoch's weights into ``model`` (``select: best``)."""
        if self.weights is not None:
            model.load_state_dict(copy.deepcopy(self.weights))


def make_schedulers(optimizers: list, schedule: str, epochs: int, factor: float, patience: int,
                    min_lr: float) -> list:
    """One learning-rate scheduler per optimiser, stepped once per epoch."""
    if schedule == "plateau":
        return [torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="min", factor=factor, patience=patience,
                                                           min_lr=min_lr) for o in optimizers]
    if schedule == "cosine":
        return [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs, eta_min=min_lr) for o in optimizers]
    return []


def step_schedulers(schedulers: list, val_loss: float | None) -> None:
    for s in schedulers:
        if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
            s.step(val_loss)
        else:
            s.step()
