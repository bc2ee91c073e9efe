"""The evaluation context shared by all metrics, and ``evaluate`` which runs a suite's metric list.

A metric is a function ``metric(ctx, **settings) -> dict[str, value]``; scalar values go to the
results table under ``"<metric>/<key>"``, lists (per-dimension variances, say) to the details.
A metric that does not apply raises ``NotApplicable(reason)``; the reason is recorded, never a zero.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aebench.data.base import ImageSet
from aebench.models.base import Autoencoder, Encoding


class NotApplicable(Exception):
    """The metric does not apply to this model or dataset; the message says why."""


NEEDS = {
    "encoder": lambda ctx: None if getattr(ctx.model, "has_encoder", True) else "the model has no encoder",
    "labels": lambda ctx: None if ctx.test.has_labels and ctx.train.has_labels else "the dataset has no labels",
    "probabilistic": lambda ctx: None if ctx.model.probabilistic else "the encoder is deterministic",
    "log_likelihood": lambda ctx: None if hasattr(ctx.model, "log_importance_weights")
    or hasattr(ctx.model, "log_likelihood")
    else "the model defines no importance weights (log_importance_weights) nor log_likelihood",
}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


@dataclass
class EvalContext:
    """Everything a metric may look at, computed once and cached."""

    model: Autoencoder
    train: ImageSet
    test: ImageSet
    device: torch.device
    seed: int = 0
    samplers: tuple[str, ...] = ("prior",)
    n_samples: int = 10_000
    batch_size: int = 1000
    cache_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    sampler_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped_samplers: dict[str, str] = field(default_factory=dict)  # sampler -> why it cannot serve this model
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        """Keep only the samplers that can serve this model; the others are recorded with the reason."""
        from aebench.registry import SAMPLERS

        usable = []
        for name in self.samplers:
            sampler = SAMPLERS.get(name)(**self.sampler_options.get(name, {}))
            reason = sampler.applies_to(self.model) if hasattr(sampler, "applies_to") else None
            if reason:
                self.skipped_samplers[name] = reason
            else:
                usable.append(name)
                self._cache[("sampler-unfitted", name)] = sampler
        self.samplers = tuple(usable)

    @property
    def has_encoder(self) -> bool:
        """False for a generator without an encoder (a GAN): reconstructions and codes do not exist."""
        return bool(getattr(self.model, "has_encoder", True))

    def generator(self, tag: str) -> torch.Generator:
        """A CPU generator seeded by the job's seed and ``tag``: reruns draw the same numbers."""
        digest = hashlib.sha256(f"{self.seed}:{tag}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))

    def _batched(self, images: torch.Tensor, fn) -> list[torch.Tensor]:
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            x = images[i : i + self.batch_size].to(self.device).float().div_(255.0)
            out.append(fn(x))
        return out

    @torch.no_grad()
    def codes(self, split: str = "test") -> Encoding:
        """Encodings of a split (posterior means and log-variances), float32 on the CPU."""
        key = ("codes", split)
        if key not in self._cache:
            data = self.train if split == "train" else self.test
            self.model.eval()
            encs = self._batched(data.images, self.model.encode)
            mean = torch.cat([e.mean.float().cpu() for e in encs])
            logvar = None if encs[0].logvar is None else torch.cat([e.logvar.float().cpu() for e in encs])
            self._cache[key] = Encoding(mean, logvar)
        return self._cache[key]

    @torch.no_grad()
    def reconstructions(self, split: str = "test") -> torch.Tensor:
        """uint8 reconstructions of a split, on the CPU."""
        key = ("recon", split)
        if key not in self._cache:
            data = self.train if split == "train" else self.test
            self.model.eval()
            recons = self._batched(data.images, self.model.reconstruct)
            self._cache[key] = torch.cat([to_uint8(r).cpu() for r in recons])
        return self._cache[key]

    def sampler(self, name: str):
        """Registered sampler ``name`` with the suite's options, fitted to the training codes (and the model)."""
        key = ("sampler", name)
        if key not in self._cache:
            if name in self.skipped_samplers:
                raise NotApplicable(f"sampler {name!r}: {self.skipped_samplers[name]}")
            sampler = self._cache.pop(("sampler-unfitted", name), None)
            if sampler is None:
                from aebench.registry import SAMPLERS

                sampler = SAMPLERS.get(name)(**self.sampler_options.get(name, {}))
            if getattr(self.model, "has_encoder", True):
                codes = self.codes("train").mean
            else:  # a generator without an encoder: only samplers that need no codes get here
                codes = torch.empty(0, self.model.latent_dim)
            try:
                self._cache[key] = sampler.fit(codes, self.model)
            except TypeError:  # a plugin sampler written for the one-argument contract
                self._cache[key] = sampler.fit(codes)
        return self._cache[key]

    @torch.no_grad()
    def samples(self, sampler: str, n: int | None = None) -> torch.Tensor:
        """n uint8 generated images (n_samples by default) from ``sampler``, on the CPU."""
        n = n or self.n_samples
        key = ("samples", sampler, n)
        if key not in self._cache:
            z = self.sampler(sampler).sample(n, self.generator(f"samples/{sampler}"))
            self.model.eval()
            out = []
            for i in range(0, n, self.batch_size):
                out.append(to_uint8(self.model.generate(z[i : i + self.batch_size].to(self.device))).cpu())
            self._cache[key] = torch.cat(out)
        return self._cache[key]


def check_metric_dependencies(name: str, options: dict[str, Any], where: str) -> None:
    """Resolve what a metric depends on (a weights file, say) now, so a missing one is refused before training."""
    from aebench.errors import AebenchError, SuiteError
    from aebench.settings_types import canonical_metric_settings, metric_depends

    try:
        metric_depends(name, canonical_metric_settings(name, options))
    except SuiteError as e:
        if e.field and not e.field.startswith(where):
            e.field = f"{where}.{e.field}"
        raise
    except AebenchError as e:
        raise SuiteError(None, where, str(e)) from None


def _split_values(name: str, out: dict[str, Any], values: dict, details: dict) -> None:
    for key, value in out.items():
        full = f"{name}/{key}"
        if isinstance(value, torch.Tensor):
            value = value.tolist() if value.numel() > 1 else float(value)
        if isinstance(value, (list, tuple, dict)):
            details[full] = value
        elif isinstance(value, bool) or value is None:
            details[full] = value
        else:
            value = float(value)
            values[full] = value if math.isfinite(value) else None
            if not math.isfinite(value):
                details.setdefault("non_finite", []).append(full)


@contextlib.contextmanager
def blas_threads() -> Iterator[None]:
    """numpy's, scipy's and scikit-learn's BLAS on half the job's torch threads (at least one) while a metric runs.

    By default OpenBLAS starts a thread per core beside torch's OpenMP threads, and on a busy machine the two pools
    stall each other at every barrier: scikit-learn's logistic fit of the probe (10,000 codes) took 5.3 s so on a
    loaded 2-core machine, 0.13 s on one BLAS thread. Thread counts change no result beyond float rounding.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it, BLAS keeps its own count
        yield
        return
    with threadpool_limits(limits=max(1, torch.get_num_threads() // 2), user_api="blas"):
        yield


def evaluate_metric(ctx: EvalContext, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """One metric's record: ``{"values", "details", "not_applicable" (reason or None), "seconds"}``."""
    from aebench.registry import METRICS

    meta = METRICS.meta(name)
    reason = next((r for need in meta.get("needs", ()) if (r := NEEDS[need](ctx))), None)
    values: dict[str, float | None] = {}
    details: dict[str, Any] = {}
    if reason:
        return {"values": values, "details": details, "not_applicable": reason, "seconds": 0.0}
    t0 = time.perf_counter()
    try:
        with blas_threads():
            out = METRICS.get(name)(ctx, **settings)
    except NotApplicable as na:
        return {"values": values, "details": details, "not_applicable": str(na), "seconds": 0.0}
    seconds = time.perf_counter() - t0
    _split_values(name, out, values, details)
    return {"values": values, "details": details, "not_applicable": None, "seconds": seconds}


def merge(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``metrics.json``'s view of metric records (metric name -> record), as ``evaluate`` returns it."""
    values: dict[str, float | None] = {}
    details: dict[str, Any] = {}
    not_applicable: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, rec in records.items():
        if rec.get("not_applicable"):
            not_applicable[name] = rec["not_applicable"]
            continue
        values.update(rec["values"])
        for k, v in rec["details"].items():
            if k == "non_finite":
                details.setdefault("non_finite", []).extend(v)
            else:
                details[k] = v
        seconds[name] = rec["seconds"]
    return {"values": values, "details": details, "not_applicable": not_applicable, "seconds": seconds}


def evaluate(ctx: EvalContext, metrics: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Run each (metric, settings) pair; returns ``{"values", "details", "not_applicable", "seconds"}``."""
    out = merge({name: evaluate_metric(ctx, name, settings) for name, settings in metrics})
    out["not_applicable"].update({f"sampler/{k}": v for k, v in ctx.skipped_samplers.items()})
    return out
