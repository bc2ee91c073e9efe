"""Density and coverage (Naeem et al. 2020) of generated images and reconstructions, in fid's feature space.

With r_i the distance of real point i to its k-th nearest other real point (the real set's k-NN balls):

- density = 1/(k M) sum_j sum_i [ |y_j - x_i| < r_i ]: how many real balls hold each generated point, over k;
  1 means as dense as the real data around it, above 1 crowding, below 1 sparse (unlike precision it does not
  saturate on outliers).
- coverage = 1/N sum_i [ min_j |y_j - x_i| < r_i ]: the share of real balls holding at least one generated point.

The real set is the first ``min(n_samples, len(test))`` test images, with the features (and radii) that fid
caches; generated features are shared with the other fid-family metrics. Equal to the ``prdc`` package's
``compute_prdc`` on the same arrays (tests check it).

Keys, for each source ``s`` (every sampler, and ``recon``): ``prdc/density_<s>``, ``prdc/coverage_<s>``;
higher is better.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aebench.errors import SuiteError
from aebench.metrics.base import EvalContext
from aebench.metrics.fid_inf import check_extractor


@dataclass
class PRDCSettings:
    """``k``: the neighbourhood size (Naeem et al.: 5). ``n_samples``: generated images per sampler (default: the
    suite's). ``recon``: also score the test reconstructions. ``extractor`` etc. as fid's."""

    k: int = 5
    n_samples: int | None = None
    recon: bool = True
    extractor: str = "auto"
    feature_extractor_weights_path: str | None = None

    def __post_init__(self) -> None:
        check_extractor(self.extractor)
        if self.k < 1:
            raise SuiteError(None, "k", f"must be >= 1, got {self.k}")
        if self.n_samples is not None and self.n_samples < 2:
            raise SuiteError(None, "n_samples", f"must be >= 2, got {self.n_samples}")


def density_coverage(real: torch.Tensor, fake: torch.Tensor, real_radii: torch.Tensor, k: int,
                     batch: int = 1000) -> tuple[float, float]:
    """Density and coverage of ``fake`` against ``real`` with the real k-NN radii (strict '<', as prdc)."""
    inside = torch.zeros(len(fake), dtype=torch.float64)
    nearest = torch.full((len(real),), float("inf"), device=real.device)
    for i in range(0, len(fake), batch):
        d = torch.cdist(real, fake[i : i + batch])  # (N real, batch)
        inside[i : i + batch] = (d < real_radii[:, None]).sum(0).double().cpu()
        nearest = torch.minimum(nearest, d.min(1).values)
    return float(inside.mean() / k), float((nearest < real_radii).double().mean())


def prdc(ctx: EvalContext, **options: Any) -> dict[str, Any]:
    """Density and coverage per sampler and for the reconstructions (settings: ``PRDCSettings``)."""
    from aebench.metrics.extractors import context_extractor, image_features, sample_features
    from aebench.metrics.fidelity import _cached, knn_radii, reference

    s = PRDCSettings(**options)
    ext = context_extractor(ctx, s.extractor, s.feature_extractor_weights_path)
    n = int(s.n_samples or ctx.n_samples)
    n_ref = min(n, len(ctx.test))
    real, _, stem = reference(ctx, ext, n_ref)
    real = real.to(ctx.device)
    radii = _cached(ctx, f"{stem}-radii-k{s.k}.pt", lambda: knn_radii(real, s.k).cpu()).to(ctx.device)
    sources = {name: sample_features(ctx, ext, name, n) for name in ctx.samplers}
    if s.recon and getattr(ctx.model, "has_encoder", True):
        sources["recon"] = image_features(ctx, ext, "recon", ctx.reconstructions("test")[:n_ref])
    out: dict[str, Any] = {}
    for name, feats in sources.items():
        out[f"density_{name}"], out[f"coverage_{name}"] = density_coverage(real, feats.to(ctx.device), radii, s.k)
    out["setup"] = {"extractor": ext.name, "weights_sha256": ext.weights_hash, "k": s.k, "n_samples": n,
                    "n_reference": n_ref}
    return out
