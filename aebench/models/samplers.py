"""Latent samplers: how a trained model generates. Deterministic AEs generate through densities fitted
to their training codes, so every model can be compared as a generator with every sampler.

Contract (``Sampler``): ``sampler = cls(**options)`` (options are typed keyword arguments, checked by
``aebench validate``); ``sampler.applies_to(model)`` is None or the reason the sampler cannot serve that model
(recorded as not applicable); ``sampler.fit(codes, model)`` (codes: (N, D) float tensor on CPU, the
training codes' posterior means); then ``sampler.sample(n, generator) -> (n, D)`` float32 tensor on CPU.
"""

from __future__ import annotations

from typing import Any

import torch


class Sampler:
    """Base class of latent samplers: applies to every model unless ``applies_to`` says why not.

    A sampler fitted to the training codes (``needs_codes``) cannot serve a generator without an encoder.
    """

    needs_codes = True

    def applies_to(self, model: Any) -> str | None:
        """None if this sampler can generate for ``model``; else the reason it cannot."""
        if self.needs_codes and not getattr(model, "has_encoder", True):
            return "it is fitted to the training codes, and the model has no encoder"
        return None

    def fit(self, codes: torch.Tensor, model: Any = None) -> Sampler:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class PriorSampler(Sampler):
    """The prior N(0, I) in R^d.

    Right for Euclidean latent spaces, and for the hypersphere too: a model on S^{d-1} (svae) normalises its
    codes, and a normalised N(0, I) draw is uniform on the sphere, its prior. Any other latent space (the
    Poincaré ball of poincare-vae) has a prior of its own, which N(0, I) is not: refused there.
    """

    needs_codes = False
    latent_spaces = ("euclidean", "sphere")

    def applies_to(self, model: Any) -> str | None:
        space = getattr(model, "latent_space", "euclidean")
        if space not in self.latent_spaces:
            return (f"the prior sampler draws N(0, I) in R^d, not the prior of the model's {space} latent space; "
                    "use that space's own sampler")
        return super().applies_to(model)

    def fit(self, codes: torch.Tensor, model: Any = None) -> PriorSampler:
        self.dim = codes.shape[1]
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.dim, generator=generator)


class GaussianSampler(Sampler):
    """A full-covariance Gaussian fitted to the training codes (Ghosh et al. 2020's ex-post density)."""

    def fit(self, codes: torch.Tensor, model: Any = None) -> GaussianSampler:
        c = codes.double()
        self.mean = c.mean(0)
        cov = torch.cov(c.T).reshape(c.shape[1], c.shape[1])
        jitter = 1e-6 * max(float(cov.diagonal().mean()), 1e-12)
        self.chol = torch.linalg.cholesky(cov + jitter * torch.eye(c.shape[1], dtype=c.dtype))
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, self.mean.shape[0], generator=generator, dtype=torch.float64)
        return (self.mean + eps @ self.chol.T).float()


class GMMSampler(Sampler):
    """A Gaussian mixture fitted to the training codes (10 components, full covariance; Ghosh et al. 2020).

    EM runs in torch on the model's device (``aebench.models.gmm_torch``: scikit-learn's algorithm, batched).
    Deterministic: EM starts from seeded k-means++ on a fixed subset of at most ``max_fit`` codes, and
    sampling uses the caller's generator.
    With fewer distinct codes than components it uses as many components as there are codes; the
    covariance floor scales with the codes' spread, so collapsed or tiny codes still fit.
    """

    def __init__(self, components: int = 10, seed: int = 0, max_iter: int = 200, max_fit: int = 10_000):
        from aebench.errors import AebenchError

        for name, value in (("components", components), ("max_iter", max_iter), ("max_fit", max_fit)):
            if value < 1:
                raise AebenchError(f"{name} must be >= 1, got {value}")
        self.n_components, self.seed, self.max_iter, self.max_fit = components, seed, max_iter, max_fit

    def fit(self, codes: torch.Tensor, model: Any = None) -> GMMSampler:
        import numpy as np

        from aebench.models.gmm_torch import fit_gmm

        c = codes.detach().double().cpu().numpy()
        if len(c) > self.max_fit:  # 10k codes pin down 10 full-covariance components; EM on 60k is 6x slower
            c = c[np.random.default_rng(self.seed).choice(len(c), self.max_fit, replace=False)]
        n, d = c.shape
        distinct = len(np.unique(c, axis=0)) if n <= 100_000 else n
        k = max(1, min(self.n_components, distinct))
        scale = float(c.var(axis=0).mean()) if n > 1 else 0.0
        reg = 1e-6 * scale if scale > 0 else 1e-6
        param = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        device = param.device if param is not None else torch.device("cpu")
        gmm = fit_gmm(torch.from_numpy(c).to(device), k, seed=self.seed, max_iter=self.max_iter, reg_covar=reg)
        self.weights = gmm.weights.detach().cpu().double()
        self.means = gmm.means.detach().cpu().double()
        cov = gmm.covariances.detach().cpu().double()
        self.chol = torch.linalg.cholesky(cov + reg * torch.eye(d, dtype=torch.float64))
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return (self.means[comp] + torch.einsum("nij,nj->ni", self.chol[comp], eps)).float()
