"""The Poincaré VAE (Mathieu et al. 2019): a wrapped normal posterior and prior on the Poincaré ball.

The ball B_c^d = {z : c |z|^2 < 1} with metric lambda_z^2 I, lambda_z = 2 / (1 - c |z|^2) (curvature -c).
Maps follow Ganea et al. (2018) and geoopt / pvae / pythae:

- Möbius addition x (+) y; distance d(x, y) = (2 / sqrt c) artanh(sqrt c |(-x) (+) y|);
- exp_x(u) = x (+) tanh(sqrt c lambda_x |u| / 2) u / (sqrt c |u|), and its inverse log_x;
- parallel transport from the origin to x is the scaling lambda_0 / lambda_x (no rotation on the ball).

Wrapped normal WN(mu, sigma): v ~ N(0, diag sigma^2) in T_0 with the metric's norm, z = exp_mu(v / lambda_mu)
= mu (+) exp_0(v / 2). Its density w.r.t. the Riemannian volume (lambda_z^d dz):
log N(v; 0, sigma^2) - (d - 1) log(sinh(sqrt c r) / (sqrt c r)), r = d(mu, z) = |v|, v = lambda_mu log_mu(z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, Encoding, ModelConfig

BALL_EPS = {torch.float32: 4e-3, torch.float64: 1e-5}  # distance to the boundary kept (geoopt, pythae)


# -- the manifold --------------------------------------------------------------------------------------------------
def _sqnorm(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).sum(-1, keepdim=True)


def _artanh(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(-1 + 1e-7, 1 - 1e-7) if x.dtype == torch.float64 else x.clamp(-1 + 1e-6, 1 - 1e-6)
    return torch.atanh(x)


def project(x: torch.Tensor, c: float) -> torch.Tensor:
    """Pull points with c |x|^2 >= 1 back inside the ball (to norm (1 - eps) / sqrt c)."""
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    maxnorm = (1 - BALL_EPS.get(x.dtype, 4e-3)) / math.sqrt(c)
    return torch.where(norm > maxnorm, x / norm * maxnorm, x)


def conformal_factor(x: torch.Tensor, c: float) -> torch.Tensor:
    """lambda_x = 2 / (1 - c |x|^2), shaped (..., 1)."""
    return 2 / (1 - c * _sqnorm(x)).clamp_min(1e-15)


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """x (+) y = ((1 + 2c<x,y> + c|y|^2) x + (1 - c|x|^2) y) / (1 + 2c<x,y> + c^2 |x|^2 |y|^2)."""
    x2, y2, xy = _sqnorm(x), _sqnorm(y), (x * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c * c * x2 * y2).clamp_min(1e-15)


def expmap0(u: torch.Tensor, c: float) -> torch.Tensor:
    """exp_0(u) = tanh(sqrt c |u|) u / (sqrt c |u|)."""
    sc = math.sqrt(c)
    norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return torch.tanh(sc * norm) * u / (sc * norm)


def logmap0(y: torch.Tensor, c: float) -> torch.Tensor:
    """log_0(y) = artanh(sqrt c |y|) y / (sqrt c |y|), the inverse of ``expmap0``."""
    sc = math.sqrt(c)
    norm = y.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return _artanh(sc * norm) * y / (sc * norm)


def expmap(x: torch.Tensor, u: torch.Tensor, c: float) -> torch.Tensor:
    """exp_x(u) = x (+) tanh(sqrt c lambda_x |u| / 2) u / (sqrt c |u|)."""
    sc = math.sqrt(c)
    norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return mobius_add(x, torch.tanh(sc * conformal_factor(x, c) * norm / 2) * u / (sc * norm), c)


def logmap(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """log_x(y) = 2 / (sqrt c lambda_x) artanh(sqrt c |w|) w / |w|, w = (-x) (+) y."""
    sc = math.sqrt(c)
    w = mobius_add(-x, y, c)
    norm = w.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return 2 / (sc * conformal_factor(x, c)) * _artanh(sc * norm) * w / norm


def distance(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Geodesic distance (2 / sqrt c) artanh(sqrt c |(-x) (+) y|), shaped (...)."""
    sc = math.sqrt(c)
    return 2 / sc * _artanh(sc * mobius_add(-x, y, c).norm(dim=-1))


def log_sinhc(x: torch.Tensor) -> torch.Tensor:
    """log(sinh(x) / x) for x >= 0, by its series near 0 and x + log1p(-e^{-2x}) - log(2x) elsewhere."""
    small = x < 1e-2
    xs = torch.where(small, torch.ones_like(x), x)
    big = xs + torch.log1p(-torch.exp(-2 * xs)) - torch.log(2 * xs)
    x2 = x * x
    return torch.where(small, x2 / 6 - x2 * x2 / 180, big)


# -- the wrapped normal ---------------------------------------------------------------------------------------------
class WrappedNormal:
    """WN(loc, scale) on the Poincaré ball of curvature -c; loc (..., d) in the ball, scale broadcastable to it."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, c: float):
        self.loc, self.scale, self.c = loc, scale, float(c)
        self.d = loc.shape[-1]

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """z = loc (+) exp_0(v / 2), v ~ N(0, diag scale^2): shaped (*sample_shape, *loc.shape), differentiable."""
        shape = tuple(sample_shape) + torch.broadcast_shapes(self.loc.shape, self.scale.shape)
        v = self.scale * torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return project(mobius_add(self.loc, expmap0(v / 2, self.c), self.c), self.c)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log density w.r.t. the Riemannian volume, summed over the last axis: shaped (...)."""
        v = 2 * logmap0(mobius_add(-self.loc, z, self.c), self.c)  # = lambda_loc log_loc(z), |v| = d(loc, z)
        r = v.norm(dim=-1)
        log_normal = -0.5 * ((v / self.scale).pow(2) + 2 * torch.log(self.scale) + math.log(2 * math.pi))
        return log_normal.sum(-1) - (self.d - 1) * log_sinhc(math.sqrt(self.c) * r)


# -- the model ------------------------------------------------------------------------------------------------------
@dataclass
class PoincareVAEConfig(ModelConfig):
    curvature: float = 1.0  # c: the ball has curvature -c (pythae's and the pvae code's default 1)
    prior_scale: float = 1.0  # sigma of the wrapped normal prior at the origin (pvae, pythae: 1)
    beta: float = 1.0  # weight of the KL (1: the ELBO)

    def __post_init__(self) -> None:
        if not self.curvature > 0:
            raise AebenchError(f"curvature must be > 0, got {self.curvature}")
        if not self.prior_scale > 0:
            raise AebenchError(f"prior_scale must be > 0, got {self.prior_scale}")
        if self.beta < 0:
            raise AebenchError(f"beta must be >= 0, got {self.beta}")


class PoincareVAE(Autoencoder):
    """Poincaré VAE: wrapped normal posterior WN(exp_0(e_mu), exp(logvar / 2)), wrapped normal prior at 0.

    ``encode(x).mean`` is the ball point mu and ``logvar`` the tangent-space log-variance; the decoder takes
    the ball point z itself. ``generate`` first pulls codes outside the ball (samplers fitted in R^d) inside.
    """

    Config = PoincareVAEConfig
    probabilistic = True
    stats_per_dim = 2
    latent_space = "poincare"
    card = {
        "objective": "E_q[-log p(x|z)] + beta * (log q(z|x) - log p(z)), one z ~ WN(mu(x), sigma(x)) for both; "
                     "p(z) = WN(0, prior_scale) on the ball of curvature -c",
        "reduction": "sum over pixels, single-sample KL, mean over batch",
        "weights": "beta = 1, curvature c = 1, prior_scale = 1",
        "optimisers": "one optimiser for encoder and decoder",
        "paper": "Mathieu et al. 2019, Continuous Hierarchical Representations with Poincaré VAEs (NeurIPS)",
    }

    @property
    def c(self) -> float:
        return float(self.config.curvature)

    def prior(self, like: torch.Tensor) -> WrappedNormal:
        zero = torch.zeros(self.latent_dim, dtype=like.dtype, device=like.device)
        return WrappedNormal(zero, torch.full_like(zero, self.config.prior_scale), self.c)

    def encode(self, x: torch.Tensor) -> Encoding:
        e_mu, logvar = self.encoder(x).chunk(2, dim=1)
        return Encoding(project(expmap0(e_mu, self.c), self.c), logvar)

    def posterior(self, enc: Encoding) -> WrappedNormal:
        return WrappedNormal(enc.mean, torch.exp(0.5 * enc.logvar), self.c)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decode(project(z, self.c)))

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        q = self.posterior(self.encode(x))
        z = q.rsample()
        rec = self.likelihood.nll(self.decode(z), x).mean()
        kl = (q.log_prob(z) - self.prior(z).log_prob(z)).mean()
        return {"loss": rec + self.config.beta * kl, "reconstruction": rec, "kl": kl}

    @torch.no_grad()
    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x|z_i) + log p(z_i) - log q(z_i|x), z_i ~ q, shaped (k, B); both densities on the same volume."""
        q = self.posterior(self.encode(x))
        z = q.rsample((k,))  # (k, B, D)
        nll = self.likelihood.nll(self.decode(z.flatten(0, 1)), x.repeat(k, *([1] * (x.dim() - 1)))).view(k, -1)
        return -nll + self.prior(z).log_prob(z) - q.log_prob(z)

