"""A job and its two identities: what determines the weights, and what each metric computed on them.

- The **training id** (``Job.hash``, the folder name's suffix) hashes only what determines the weights:
  model and params, dataset and its options, backbone, likelihood, latent size, the training budget (not
  ``checkpoint_every``), precision, compile, the training split's limit and the seed. Metrics and evaluation
  settings never change it, so adding a metric never retrains.
- An **evaluation key** per metric (``Evaluation.requests``) hashes the training id, the metric's canonical
  settings and version, and what it depends on: the test split's limit, and for metrics that use samples the
  samplers with their options and ``n_samples``; a metric may add more (FID adds its extractor's weights hash).
  A record whose key is unchanged is reused; only what changed is computed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from aebench.specs import NamedSpec, TrainSpec

LAYOUT = 2  # job folder layout: 2 = training id + evaluation records (1: one hash over everything)
NOT_TRAINING = ("checkpoint_every",)  # train fields that do not change the weights
# Fields added since layout 2 began, with the value that reproduces the earlier behaviour: hashed only when set
# otherwise, so a new option never changes the id of a training that does not use it.
ADDED_DEFAULTS: dict[str, Any] = {"val": 0, "trial": None}
ADDED_TRAIN_DEFAULTS: dict[str, Any] = {"select": "last", "patience": None, "schedule": "none", "lr_factor": 0.5,
                                        "lr_patience": 3, "min_lr": 0.0}


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON form (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sampler_version(name: str) -> list[int]:
    """A sampler's ``version`` meta, hashed only from 2 on (bumped when its draws change; 1 keeps older keys)."""
    from aebench.registry import SAMPLERS

    version = int(SAMPLERS.meta(name).get("version", 1))
    return [version] if version > 1 else []


@dataclass
class MetricRequest:
    """One metric to compute on a trained job, with the key its record is stored under."""

    name: str
    settings: dict[str, Any]  # canonical: every setting, defaults filled
    depends: dict[str, Any]
    version: int
    key: str  # digest of the training id, the metric, its version, settings and dependencies

    @property
    def setting_id(self) -> str:
        """The key without the training id: jobs scored under the same settings share it (leaderboards)."""
        return digest({"metric": self.name, "version": self.version, "settings": self.settings,
                       "depends": self.depends})[:12]


@dataclass
class Evaluation:
    """What is computed on trained weights: never part of the training id."""

    metrics: list[NamedSpec] = field(default_factory=lambda: [NamedSpec("recon")])
    samplers: list[NamedSpec] = field(default_factory=lambda: [NamedSpec("prior"), NamedSpec("gaussian")])
    n_samples: int = 10_000
    batch_size: int = 1000
    test_limit: int | None = None
    split: str = "test"  # or val: what model selection sees

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": [m.as_pair() for m in self.metrics], "samplers": [s.as_pair() for s in self.samplers],
                "n_samples": self.n_samples, "batch_size": self.batch_size, "test_limit": self.test_limit,
                "split": self.split}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evaluation:
        return cls([NamedSpec(n, dict(o)) for n, o in d["metrics"]], [NamedSpec(n, dict(o)) for n, o in d["samplers"]],
                   int(d["n_samples"]), int(d["batch_size"]), d.get("test_limit"), d.get("split", "test"))

    def requests(self, train_id: str) -> list[MetricRequest]:
        """The metrics to compute for the job with training id ``train_id``, each with its record key."""
        from aebench.registry import METRICS
        from aebench.settings_types import canonical_metric_settings, canonical_sampler_options, metric_depends

        samplers = [[s.name, canonical_sampler_options(s.name, s.options), *_sampler_version(s.name)]
                    for s in self.samplers]
        out = []
        for m in self.metrics:
            meta = METRICS.meta(m.name)
            settings = canonical_metric_settings(m.name, m.options)
            depends: dict[str, Any] = {"test_limit": self.test_limit}
            if self.split != "test":
                depends["split"] = self.split
            if "samples" in meta.get("uses", ("samples",)):
                depends.update(samplers=samplers, n_samples=self.n_samples)
            depends.update(metric_depends(m.name, settings))
            version = int(meta.get("version", 1))
            key = digest({"train": train_id, "metric": m.name, "version": version, "settings": settings,
                          "depends": depends})
            out.append(MetricRequest(m.name, settings, depends, version, key))
        return out


@dataclass
class Job:
    """One training run (model x dataset x seed) and the evaluation asked of it."""

    suite: str
    model: str
    label: str
    params: dict[str, Any]
    dataset: str
    dataset_options: dict[str, Any]
    seed: int
    backbone: str = "mlp"
    backbone_options: dict[str, Any] = field(default_factory=dict)
    latent_dim: int = 16
    likelihood: str = "bernoulli"
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    train: TrainSpec = field(default_factory=TrainSpec)
    train_limit: int | None = None
    evaluation: Evaluation = field(default_factory=Evaluation)
    val: int = 0  # images held out of the training split for validation (the last ones)
    trial: int | None = None  # a tuning trial (its own training: a trial is scored on val, never reported as final)
    origin: dict[str, Any] | None = None  # set for models aebench did not train: {"kind", "path", "sha256"}

    def config(self) -> dict[str, Any]:
        """The training configuration (JSON-ready), as written to ``config.json``; no evaluation settings."""
        cfg = {k: v for k, v in asdict(self).items() if k != "evaluation"}
        cfg["layout"] = LAYOUT
        return cfg

    def identity(self) -> dict[str, Any]:
        """What determines the weights: the configuration less presentation and resume cadence."""
        cfg = self.config()
        for key in ("suite", "label", "layout"):
            del cfg[key]
        cfg["train"] = {k: v for k, v in cfg["train"].items()
                        if k not in NOT_TRAINING and not (k in ADDED_TRAIN_DEFAULTS and ADDED_TRAIN_DEFAULTS[k] == v)}
        for k, v in ADDED_DEFAULTS.items():
            if cfg.get(k) == v:
                del cfg[k]
        if cfg["origin"]:  # where outside weights were read from does not change them
            cfg["origin"] = {k: v for k, v in cfg["origin"].items() if k not in ("source", "path")}
        return cfg

    @property
    def hash(self) -> str:
        """The training id."""
        return digest(self.identity())

    @property
    def id(self) -> str:
        """Folder name: readable prefix and the training id (``vae-mnist-s0-3f2a9c1b0d``)."""
        return f"{self.model}-{self.dataset}-s{self.seed}-{self.hash[:10]}"

    @property
    def protocol(self) -> str:
        """Fingerprint of the training protocol: all that determines weights but the model, its
        hyperparameters, the seed and the origin. Leaderboards rank together only jobs that share it (and,
        per metric, the metric's settings: ``MetricRequest.setting_id``). The training fields a search may
        tune (lr, weight_decay, batch_size, grad_clip, optimizer) are a model's hyperparameters too: a tuned
        model keeps the protocol of the suite; the budget (epochs, selection, schedule) stays in it."""
        from aebench.tuning import TRAIN_KEYS

        cfg = self.identity()
        for key in ("model", "params", "seed", "origin", "trial"):
            cfg.pop(key, None)
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in TRAIN_KEYS}
        return digest(cfg)[:12]

    @property
    def evaluated_only(self) -> bool:
        return self.origin is not None

    def payload(self) -> dict[str, Any]:
        """What another process (a worker, a Slurm task) needs to run the job: the configuration and the
        evaluation asked of it (``from_config`` reads both)."""
        return {**self.config(), "evaluation": self.evaluation.to_dict()}

    @classmethod
    def from_config(cls, cfg: dict[str, Any], evaluation: Evaluation | None = None) -> Job:
        """The job of a ``config.json`` (layout 2) or a ``payload``; ``evaluation`` is what the current suite asks
        (a payload carries its own)."""
        if cfg.get("layout") != LAYOUT:
            raise ValueError(f"job folder layout {cfg.get('layout', 1)!r}, expected {LAYOUT}")
        if evaluation is None and isinstance(cfg.get("evaluation"), dict):
            evaluation = Evaluation.from_dict(cfg["evaluation"])
        cfg = {k: v for k, v in cfg.items() if k not in ("layout", "evaluation")}
        cfg["train"] = TrainSpec(**cfg["train"])
        cfg.setdefault("val", 0)
        cfg.setdefault("trial", None)
        return cls(**cfg, evaluation=evaluation or Evaluation())
