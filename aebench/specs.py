"""The typed settings of a suite: the training budget, data limits, evaluation, and named registry entries.

Each is a dataclass checked on construction (``aebench.config.from_dict`` checks types and unknown keys,
``__post_init__`` checks values), so ``aebench validate`` catches every mistyped field before training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aebench.errors import SuiteError


def positive(obj: Any, *names: str) -> None:
    """Refuse a non-positive value of any of ``names`` (None passes: it means 'no limit' or 'default')."""
    for n in names:
        v = getattr(obj, n)
        if v is not None and v <= 0:
            raise SuiteError(None, n, f"must be > 0, got {v}")


@dataclass
class TrainSpec:
    """The training budget, the same for every model of the suite."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = None
    checkpoint_every: int = 1  # how often the resume state is saved: not part of the training identity
    precision: str = "fp32"  # or bf16: autocast on GPUs that have it
    compile: bool = False  # torch.compile the model's train_step
    select: str = "last"  # or best: the epoch with the best validation loss (needs data.val)
    patience: int | None = None  # stop after this many epochs without a better validation loss
    schedule: str = "none"  # or plateau (ReduceLROnPlateau on the validation loss) or cosine (over the epochs)
    lr_factor: float = 0.5  # plateau: multiply the learning rate by this
    lr_patience: int = 3  # plateau: epochs without improvement before it does
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        positive(self, "epochs", "batch_size", "lr", "checkpoint_every", "patience", "lr_patience")
        if self.select not in ("last", "best"):
            raise SuiteError(None, "select", f"unknown selection {self.select!r}; allowed: last, best")
        if self.schedule not in ("none", "plateau", "cosine"):
            raise SuiteError(None, "schedule", f"unknown schedule {self.schedule!r}; allowed: none, plateau, cosine")
        if not 0 < self.lr_factor < 1:
            raise SuiteError(None, "lr_factor", f"must be between 0 and 1, got {self.lr_factor}")
        if self.min_lr < 0:
            raise SuiteError(None, "min_lr", f"must be >= 0, got {self.min_lr}")
        if self.precision not in ("fp32", "bf16"):
            raise SuiteError(None, "precision", f"unknown precision {self.precision!r}; allowed: fp32, bf16")
        if self.weight_decay < 0:
            raise SuiteError(None, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise SuiteError(None, "grad_clip", f"must be > 0 or null, got {self.grad_clip}")
        from aebench.registry import OPTIMIZERS

        if self.optimizer not in OPTIMIZERS:
            raise SuiteError(None, "optimizer", f"unknown optimizer {self.optimizer!r}; allowed: "
                             f"{', '.join(OPTIMIZERS.names())}")

    @property
    def needs_validation(self) -> str | None:
        """The setting that needs a validation split, if any."""
        if self.select == "best":
            return "select"
        if self.patience is not None:
            return "patience"
        return "schedule" if self.schedule == "plateau" else None


@dataclass
class DataSpec:
    """Where data lives and how much of it to use (limits make quick tries and tests cheap)."""

    root: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    val: int | None = None  # images held out of the training split (the last ones); None: the dataset's default

    def __post_init__(self) -> None:
        positive(self, "train_limit", "test_limit")
        if self.val is not None and self.val < 0:
            raise SuiteError(None, "val", f"must be >= 0, got {self.val}")


@dataclass
class NamedSpec:
    """A registry name plus its options (a dataset, backbone, metric, sampler, likelihood or launcher)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def as_pair(self) -> list[Any]:
        """``[name, options]``: the JSON form in configs and evaluation records."""
        return [self.name, dict(self.options)]


@dataclass
class EvalSpec:
    """How generated images are drawn for the metrics; samplers are names or ``{name: gmm, components: 10}``."""

    samplers: list[Any] = field(default_factory=lambda: ["prior", "gaussian"])
    n_samples: int = 10_000
    batch_size: int = 1000
    split: str = "test"  # the split the metrics are computed on: test, or val (what model selection sees)

    def __post_init__(self) -> None:
        positive(self, "n_samples", "batch_size")
        if self.split not in ("test", "val"):
            raise SuiteError(None, "split", f"unknown split {self.split!r}; allowed: test, val")


@dataclass
class ModelSpec:
    """A model entry: fixed hyperparameters, and a grid whose every combination becomes its own job."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    label: str | None = None
    search: dict[str, dict] = field(default_factory=dict)  # param or train field -> {log_uniform|uniform|choice: ...}
    train: dict[str, Any] = field(default_factory=dict)  # this entry's own lr, weight_decay... (a tuned value)


@dataclass
class TuneSpec:
    """Random search with the same number of trials for every model; selection on the validation split."""

    trials: int = 0  # per model entry (0: no tuning); trial 0 is always the entry's own parameters
    seeds: list[int] = field(default_factory=lambda: [0])  # the seeds each trial is trained with
    metric: str = "recon/mse"  # selection key, computed on val, with its registered direction
    seed: int = 0  # seeds the random search
    epochs: int | None = None  # a trial's training epochs (None: train.epochs); the same for every model

    def __post_init__(self) -> None:
        positive(self, "epochs")
        if self.trials < 0:
            raise SuiteError(None, "trials", f"must be >= 0, got {self.trials}")
        if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise SuiteError(None, "seeds", f"must be distinct integers >= 0, got {self.seeds}")
        if "/" not in self.metric:
            raise SuiteError(None, "metric", f"expected a results key <metric>/<key> (e.g. recon/mse, fid/gmm), "
                             f"got {self.metric!r}")
