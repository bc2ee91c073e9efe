"""Samplers from the priors of the non-Euclidean latent spaces: the hypersphere (svae) and the Poincaré ball
(poincare-vae). Each applies only to models whose ``latent_space`` is its manifold."""

from __future__ import annotations

from typing import Any

import torch

from aebench.errors import AebenchError
from aebench.models.samplers import Sampler


def _latent_space(model: Any) -> str:
    return getattr(model, "latent_space", "euclidean")


class HypersphereSampler(Sampler):
    """The uniform distribution on S^{d-1}: normalised N(0, I) draws (the svae prior)."""

    def applies_to(self, model: Any) -> str | None:
        space = _latent_space(model)
        return None if space == "sphere" else f"the model's latent space is {space}, not the hypersphere"

    def fit(self, codes: torch.Tensor, model: Any = None) -> HypersphereSampler:
        self.dim = int(codes.shape[1])
        if self.dim < 2:
            raise AebenchError(f"the hypersphere sampler needs codes of dimension >= 2, got {self.dim}")
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (z / z.norm(dim=1, keepdim=True).clamp_min(1e-300)).float()


class PoincareSampler(Sampler):
    """The wrapped normal prior WN(0, scale) on the Poincaré ball of curvature -c (the poincare-vae prior).

    ``curvature`` and ``scale`` default to the fitted model's (its ``curvature`` and ``prior_scale``).
    """

    def __init__(self, curvature: float | None = None, scale: float | None = None):
        for name, value in (("curvature", curvature), ("scale", scale)):
            if value is not None and not value > 0:
                raise AebenchError(f"{name} must be > 0, got {value}")
        self.curvature, self.scale = curvature, scale

    def applies_to(self, model: Any) -> str | None:
        space = _latent_space(model)
        return None if space == "poincare" else f"the model's latent space is {space}, not the Poincaré ball"

    def fit(self, codes: torch.Tensor, model: Any = None) -> PoincareSampler:
        config = getattr(model, "config", None)
        self.c = self.curvature if self.curvature is not None else getattr(config, "curvature", None)
        self.s = self.scale if self.scale is not None else getattr(config, "prior_scale", None)
        if self.c is None or self.s is None:
            raise AebenchError("the poincare sampler needs the model (or its curvature and scale options)")
        self.dim = int(codes.shape[1])
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        from aebench.models.poincare import expmap0, project

        v = self.s * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return project(expmap0(v / 2, float(self.c)), float(self.c)).float()
