"""Latent samplers: how a trained model generates. Deterministic AEs generate through densities fitted
to their training codes, so every model can be compared as a generator with every sampler.

Contract: ``sampler = cls(); sampler.fit(codes)`` (codes: (N, D) float tensor on CPU), then
``sampler.sample(n, generator) -> (n, D)`` float32 tensor.
"""

from __future__ import annotations

import torch


class PriorSampler:
    """The prior N(0, I)."""

    def fit(self, codes: torch.Tensor) -> PriorSampler:
        self.dim = codes.shape[1]
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.dim, generator=generator)


class GaussianSampler:
    """A full-covariance Gaussian fitted to the training codes (Ghosh et al. 2020's ex-post density)."""

    def fit(self, codes: torch.Tensor) -> GaussianSampler:
        c = codes.double()
        self.mean = c.mean(0)
        cov = torch.cov(c.T).reshape(c.shape[1], c.shape[1])
        jitter = 1e-6 * max(float(cov.diagonal().mean()), 1e-12)
        self.chol = torch.linalg.cholesky(cov + jitter * torch.eye(c.shape[1], dtype=c.dtype))
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, self.mean.shape[0], generator=generator, dtype=torch.float64)
        return (self.mean + eps @ self.chol.T).float()
