"""FID extrapolated to infinitely many samples (FID_inf, Chong & Forsyth 2020), and KID at stated sample sizes.

FID estimated from N generated images is biased upwards, by an amount that falls as 1/N and depends on the
model, so FIDs at different N, or of models with different bias, do not compare. Chong & Forsyth fit
FID_N = FID_inf + b / N over several N and report the intercept. Here the generated features of
``max(sizes)`` images per sampler are permuted once (seeded); FID_N uses the first N of them (nested
subsets, so the sizes share their noise), against fixed reference statistics: the first
``min(max(sizes), len(test))`` test images, as ``fid`` uses. Features, reference and FID are fid's
(``fidelity.Extractor``, ``reference``, ``compare``): torch-fidelity's numbers.

Keys, for each sampler ``s``: ``fid_inf/<s>`` (the intercept, lower is better) and ``fid_inf/kid_<s>_n<N>``
(torch-fidelity's KID from the first N generated images: ``kid_subsets`` subsets of
``min(kid_subset_size, N)``); details ``fid_inf/curve_<s>`` (FID_N per N and the fitted slope b).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from aebench.errors import SuiteError
from aebench.metrics.base import EvalContext


def check_extractor(extractor: str) -> None:
    """The extractor setting names ``auto`` or a registered extractor (as fid's settings check)."""
    from aebench.registry import EXTRACTORS

    if extractor != "auto" and extractor not in EXTRACTORS:
        raise SuiteError(None, "extractor", f"unknown extractor {extractor!r}; allowed: auto, "
                         f"{', '.join(EXTRACTORS.names())}")


@dataclass
class FIDInfSettings:
    """``sizes``: the generated-sample counts N to fit over (at least two distinct, each >= 2); the largest is
    how many images each sampler generates. ``extractor`` and ``feature_extractor_weights_path`` as fid's."""

    sizes: list[int] = field(default_factory=lambda: [2000, 4000, 6000, 8000, 10_000])
    extractor: str = "auto"
    feature_extractor_weights_path: str | None = None
    kid: bool = True
    kid_subsets: int = 100
    kid_subset_size: int = 1000

    def __post_init__(self) -> None:
        check_extractor(self.extractor)
        if len(set(self.sizes)) < 2 or min(self.sizes) < 2:
            raise SuiteError(None, "sizes", f"needs at least two distinct sample counts >= 2, got {self.sizes}")
        for name in ("kid_subsets", "kid_subset_size"):
            if getattr(self, name) < 1:
                raise SuiteError(None, name, f"must be >= 1, got {getattr(self, name)}")


def extrapolate(fids: dict[int, float]) -> tuple[float, float]:
    """Least-squares fit of FID_N = a + b / N: returns (a, b); a is FID_inf."""
    inv = np.array([1.0 / n for n in fids], dtype=np.float64)
    y = np.array(list(fids.values()), dtype=np.float64)
    b, a = np.polyfit(inv, y, 1)
    return float(a), float(b)


def fid_curve(gen: torch.Tensor, real: torch.Tensor, real_stats: dict[str, np.ndarray], sizes: list[int],
              order: torch.Tensor | None = None, kid: bool = False, kid_subsets: int = 100,
              kid_subset_size: int = 1000, kid_ref: Any = None) -> dict[int, dict[str, float]]:
    """fid's ``compare`` on the first N rows of ``gen[order]`` for each N in ``sizes`` (N capped at len(gen));
    ``kid_ref``: the real features' ``KIDReference``."""
    from aebench.metrics.fidelity import compare

    gen = gen if order is None else gen[order]
    out = {}
    for n in sorted({min(int(n), len(gen)) for n in sizes}):
        out[n] = compare(gen[:n], real, real_stats, kid, False, kid_subsets, kid_subset_size, kid_ref=kid_ref)
    return out


def fid_inf(ctx: EvalContext, **options: Any) -> dict[str, Any]:
    """FID_inf per sampler, by regression of FID_N on 1/N (settings: ``FIDInfSettings``)."""
    from aebench.metrics.extractors import context_extractor, sample_features
    from aebench.metrics.fidelity import kid_reference, reference

    s = FIDInfSettings(**options)
    ext = context_extractor(ctx, s.extractor, s.feature_extractor_weights_path)
    n_max = max(s.sizes)
    real, real_stats, stem = reference(ctx, ext, min(n_max, len(ctx.test)))
    kid_ref = kid_reference(ctx, real, stem) if s.kid else None
    out: dict[str, Any] = {}
    for sampler in ctx.samplers:
        gen = sample_features(ctx, ext, sampler, n_max)
        order = torch.randperm(len(gen), generator=ctx.generator(f"fid_inf/{sampler}"))
        curve = fid_curve(gen, real, real_stats, s.sizes, order, s.kid, s.kid_subsets, s.kid_subset_size, kid_ref)
        out[sampler], slope = extrapolate({n: r["fid"] for n, r in curve.items()})
        out[f"curve_{sampler}"] = {"fid_n": {str(n): r["fid"] for n, r in curve.items()}, "slope": slope}
        if s.kid:
            for n, r in curve.items():
                out[f"kid_{sampler}_n{n}"] = r["kid"]
    out["setup"] = {"extractor": ext.name, "weights_sha256": ext.weights_hash, "sizes": sorted(set(s.sizes)),
                    "n_reference": len(real)}
    return out
