"""Hamiltonian VAEs: the HVAE (Caterini et al. 2018) and the Riemannian HVAE (Chadebec et al. 2020).

A Gaussian encoder's sample z_0 ~ q(z | x) is moved by K leapfrog steps of Hamiltonian dynamics with
potential U(z) = -log p(x, z), the momentum drawn at inverse temperature beta_0 and tempered to 1 along the
way. The map (z_0, rho_0) -> (z_K, rho_K) is volume-preserving up to the tempering's known factor
beta_0^(d/2), so the ELBO of the extended space (z, rho) is exact: no learned Jacobian.

Both models are trained on that extended-space ELBO and estimate log p(x) by importance sampling with the
same flow as proposal: w = p(x, z_K) p(rho_K | z_K) / q(z_K, rho_K | x), whose mean over draws is p(x) exactly
(see ``log_importance_weights``). The decoder's gradient dU/dz is taken with ``create_graph`` only when the
loss itself needs gradients; it is evaluated once per position (K + 1 times) and the final decoder pass is
reused for the reconstruction term. The RHVAE's metric terms are closed form (``hamiltonian_metric``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from aebench.errors import AebenchError
from aebench.models.backbones import make_activation
from aebench.models.base import ModelConfig
from aebench.models.hamiltonian_metric import Geometry, Metric
from aebench.models.vae import VAE, log_normal

LOG_2PI = math.log(2 * math.pi)
Potential = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]  # z -> (dU/dz, anything to keep from the last call)


# -- integrators --------------------------------------------------------------------------------------------
def tempering_schedule(sqrt_beta_zero: torch.Tensor | float, n_steps: int) -> list[torch.Tensor | float]:
    """sqrt(beta_k), k = 0..K, on Caterini et al.'s quadratic schedule: sqrt(beta_0) at k = 0, 1 at k = K."""
    inv = 1.0 / sqrt_beta_zero
    return [1.0 / ((1.0 - inv) * (k / n_steps) ** 2 + inv) for k in range(n_steps + 1)]


def leapfrog(z: torch.Tensor, rho: torch.Tensor, potential: Potential, eps: torch.Tensor | float, n_steps: int,
             sqrt_betas: Sequence[torch.Tensor | float] | None = None,
             start: tuple[torch.Tensor, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """``n_steps`` leapfrog steps of dz/dt = rho, drho/dt = -dU/dz (unit mass), the momentum multiplied by
    sqrt(beta_{k-1} / beta_k) after step k when ``sqrt_betas`` is given. The gradient at the end of a step is
    reused at the start of the next (n_steps + 1 evaluations; n_steps when the caller passes ``start``, the
    potential's value at z it already has). Returns z, rho and the last call's extra."""
    grad, extra = potential(z) if start is None else start
    for k in range(n_steps):
        rho = rho - 0.5 * eps * grad
        z = z + eps * rho
        grad, extra = potential(z)
        rho = rho - 0.5 * eps * grad
        if sqrt_betas is not None:
            rho = rho * (sqrt_betas[k] / sqrt_betas[k + 1])
    return z, rho, extra


def generalized_leapfrog(z: torch.Tensor, rho: torch.Tensor, potential: Potential, metric: Metric,
                         eps: torch.Tensor | float, n_steps: int,
                         sqrt_betas: Sequence[torch.Tensor | float] | None = None, fixed_point_steps: int = 3,
                         geometry: Geometry | None = None) -> tuple[torch.Tensor, torch.Tensor, Any, Geometry]:
    """Girolami & Calderhead's generalised leapfrog for H = U(z) + log det G(z) / 2 + rho^T G(z)^-1 rho / 2:

        rho' = rho - eps/2 dH/dz(z, rho')                   implicit, ``fixed_point_steps`` iterations
        z'   = z + eps/2 (G^-1(z) + G^-1(z')) rho'           implicit, ``fixed_point_steps`` iterations
        rho''= rho' - eps/2 dH/dz(z', rho')                 explicit

    then tempering as in ``leapfrog``. dU/dz is evaluated once per position; the metric's terms are closed form.
    Returns z, rho, the potential's last extra and the metric geometry at the final z.
    """
    grad, extra = potential(z)
    geo = metric.at(z) if geometry is None else geometry
    for k in range(n_steps):
        fixed = grad + 0.5 * geo.grad_logdet_g  # the part of dH/dz that does not depend on rho
        half = rho
        for _ in range(fixed_point_steps):
            half = rho - 0.5 * eps * (fixed + 0.5 * geo.grad_quad(half))
        velocity = geo.ginv_times(half)
        new = z
        for _ in range(fixed_point_steps):
            new = z + 0.5 * eps * (velocity + metric.ginv_times(new, half))
        z = new
        grad, extra = potential(z)
        geo = metric.at(z)
        rho = half - 0.5 * eps * (grad + 0.5 * geo.grad_logdet_g + 0.5 * geo.grad_quad(half))
        if sqrt_betas is not None:
            rho = rho * (sqrt_betas[k] / sqrt_betas[k + 1])
    return z, rho, extra, geo


def potential_grad(model: nn.Module, x: torch.Tensor, z: torch.Tensor, create_graph: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """dU/dz for U(z) = -log p(x | z) - log N(z; 0, I) per sample, and -log p(x | z) (B,).

    With ``create_graph`` the gradient stays differentiable (the loss backpropagates through the dynamics);
    otherwise the position is detached and nothing is kept, as evaluation needs values only.
    """
    with torch.enable_grad():
        if not (create_graph and z.requires_grad):
            z = z.detach().requires_grad_(True)
        nll = model.likelihood.nll(model.decode(z), x)
        (grad,) = torch.autograd.grad(nll.sum(), z, create_graph=create_graph)
    if not create_graph:
        return grad + z.detach(), nll.detach()
    return grad + z, nll


def _negative_entropy(logvar: torch.Tensor) -> torch.Tensor:
    """E_q[log q(z_0 | x)] = -H(q) per sample, in closed form."""
    return -0.5 * (1.0 + LOG_2PI + logvar).sum(1)


def _repeat(t: torch.Tensor, k: int) -> torch.Tensor:
    return t.repeat(k, *([1] * (t.dim() - 1)))


def _scalar(module: nn.Module, name: str, value: float, learn: bool) -> None:
    """A scalar that is a parameter when learned and a buffer otherwise (both are checkpointed)."""
    t = torch.tensor(float(value))
    if learn:
        setattr(module, name, nn.Parameter(t))
    else:
        module.register_buffer(name, t)


# -- HVAE ---------------------------------------------------------------------------------------------------
@dataclass
class HVAEConfig(ModelConfig):
    n_lf: int = 3  # leapfrog steps K (pythae's default)
    eps_lf: float = 0.001  # leapfrog step size
    beta_zero: float = 0.3  # initial inverse temperature of the momentum, 0 < beta_0 <= 1
    tempering: bool = True  # False: rho_0 ~ N(0, I) and no tempering (beta_0 is ignored)
    learn_eps_lf: bool = False  # learned through log eps
    learn_beta_zero: bool = False  # learned through logit beta_0

    def __post_init__(self) -> None:
        if self.n_lf < 1:
            raise AebenchError(f"n_lf must be >= 1, got {self.n_lf}")
        if not self.eps_lf > 0:
            raise AebenchError(f"eps_lf must be > 0, got {self.eps_lf}")
        if not 0 < self.beta_zero <= 1:
            raise AebenchError(f"beta_zero must be in (0, 1], got {self.beta_zero}")
        if self.learn_beta_zero and not (self.tempering and self.beta_zero < 1):
            raise AebenchError("learn_beta_zero needs tempering: true and beta_zero < 1 (it is learned as a logit)")


class HVAE(VAE):
    """Hamiltonian VAE: the encoder's sample refined by K tempered leapfrog steps on U(z) = -log p(x, z).

    ``loss`` is the extended-space -ELBO; its terms sum to it: ``reconstruction`` -log p(x | z_K), ``prior``
    -log N(z_K; 0, I), ``momentum`` |rho_K|^2 / 2 - d/2 (-log N(rho_K; 0, I) + E log N(gamma_0; 0, I)) and
    ``neg_entropy`` E log q(z_0 | x), the last two in expectation over the parameter-free noise.
    """

    Config = HVAEConfig
    card = {
        "objective": "-E[log p(x|z_K) + log N(z_K;0,I) + log N(rho_K;0,I) - log q(z_0|x) - log N(gamma_0;0,I)], "
                     "(z_K, rho_K) = K tempered leapfrog steps of H = -log p(x,z) + |rho|^2/2 from z_0 ~ q(z|x), "
                     "rho_0 = gamma_0 / sqrt(beta_0), sqrt(beta_k) = 1/((1 - 1/sqrt(beta_0)) (k/K)^2 + "
                     "1/sqrt(beta_0)); log q(z_0|x) and log N(gamma_0) in expectation (-entropy, -d/2 - d/2 log 2pi)",
        "reduction": "sum over pixels and latent dimensions, mean over batch",
        "weights": "n_lf=3, eps_lf=0.001, beta_zero=0.3, tempering=true, learn_eps_lf=false, learn_beta_zero=false",
        "optimisers": "one optimiser (train.optimizer) for encoder, decoder and the learned eps_lf / beta_zero",
        "paper": "Caterini, Doucet & Sejdinovic, Hamiltonian Variational Auto-Encoder, NeurIPS 2018",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Any, latent_dim: int,
                 config: HVAEConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        c = self.config
        _scalar(self, "log_eps_lf", math.log(c.eps_lf), c.learn_eps_lf)
        if c.learn_beta_zero:
            _scalar(self, "beta_zero_logit", math.log(c.beta_zero / (1 - c.beta_zero)), True)
        else:
            _scalar(self, "beta_zero_value", c.beta_zero, False)

    @property
    def eps_lf(self) -> torch.Tensor:
        return self.log_eps_lf.exp()

    @property
    def beta_zero(self) -> torch.Tensor:
        return torch.sigmoid(self.beta_zero_logit) if self.config.learn_beta_zero else self.beta_zero_value

    def flow(self, x: torch.Tensor, z0: torch.Tensor, gamma: torch.Tensor, create_graph: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_K, rho_K, -log p(x | z_K)) from z_0 and the momentum noise gamma_0 ~ N(0, I)."""
        betas = tempering_schedule(self.beta_zero.sqrt(), self.config.n_lf) if self.config.tempering else None
        rho0 = gamma / betas[0] if betas is not None else gamma
        return leapfrog(z0, rho0, lambda z: potential_grad(self, x, z, create_graph), self.eps_lf,
                        self.config.n_lf, betas)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        z0 = enc.mean + enc.std * torch.randn_like(enc.mean)
        zk, rhok, nll = self.flow(x, z0, torch.randn_like(z0), torch.is_grad_enabled())
        rec = nll.mean()
        prior = (0.5 * zk.pow(2) + 0.5 * LOG_2PI).sum(1).mean()
        momentum = (0.5 * rhok.pow(2).sum(1) - 0.5 * self.latent_dim).mean()
        neg_entropy = _negative_entropy(enc.logvar).mean()
        return {"loss": rec + prior + momentum + neg_entropy, "reconstruction": rec, "prior": prior,
                "momentum": momentum, "neg_entropy": neg_entropy}

    @torch.no_grad()
    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x, z_K) + log N(rho_K; 0, I) - log q(z_0 | x) - log N(gamma_0; 0, I), shaped (k, B).

        The flow has Jacobian determinant beta_0^(d/2) and rho_0 = gamma_0 / sqrt(beta_0), so the proposal's
        density at (z_K, rho_K) is q(z_0 | x) N(gamma_0; 0, I): each weight's mean over draws is p(x) exactly
        (the HVAE as importance sampler of the extended space, momentum marginalised), not the bare encoder's.
        """
        enc = self.encode(x)
        mean, logvar = _repeat(enc.mean, k), _repeat(enc.logvar, k)
        z0 = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        gamma = torch.randn_like(z0)
        zk, rhok, nll = self.flow(_repeat(x, k), z0, gamma, create_graph=False)
        log_w = -nll + log_normal(zk) + log_normal(rhok) - log_normal(z0, mean, logvar) - log_normal(gamma)
        return log_w.view(k, x.shape[0])


# -- RHVAE --------------------------------------------------------------------------------------------------
@dataclass
class RHVAEConfig(ModelConfig):
    n_lf: int = 3  # generalised leapfrog steps K
    eps_lf: float = 0.001  # step size
    beta_zero: float = 0.3  # initial inverse temperature, 0 < beta_0 <= 1
    temperature: float = 1.5  # T of the metric's kernels exp(-|z - c_i|^2 / T^2)
    regularization: float = 0.01  # lambda: G^-1(z) = sum_i M_i exp(...) + lambda I
    metric_hidden: list[int] = field(default_factory=lambda: [400])  # pythae's Metric_MLP on the image
    metric_points: int | None = None  # centroids kept for the final metric; None: min(10000, 2^22 / d^2)
    fixed_point_steps: int = 3  # iterations solving the implicit leapfrog equations (pythae: 3)

    def __post_init__(self) -> None:
        for name in ("n_lf", "fixed_point_steps"):
            if getattr(self, name) < 1:
                raise AebenchError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eps_lf", "temperature", "regularization"):
            if not getattr(self, name) > 0:
                raise AebenchError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.beta_zero <= 1:
            raise AebenchError(f"beta_zero must be in (0, 1], got {self.beta_zero}")
        if any(w <= 0 for w in self.metric_hidden):
            raise AebenchError(f"metric_hidden widths must be positive, got {self.metric_hidden}")
        if self.metric_points is not None and self.metric_points < 1:
            raise AebenchError(f"metric_points must be >= 1, got {self.metric_points}")


class MetricNet(nn.Module):
    """x -> M = L L^T, L lower triangular with a positive (exponential) diagonal (pythae's Metric_MLP)."""

    def __init__(self, in_features: int, latent_dim: int, hidden: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for w in hidden:
            layers += [nn.Linear(prev, w), make_activation("relu")]
            prev = w
        self.body = nn.Sequential(*layers)
        self.diag = nn.Linear(prev, latent_dim)
        n_lower = latent_dim * (latent_dim - 1) // 2
        self.lower = nn.Linear(prev, n_lower) if n_lower else None
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        d = self.latent_dim
        low = torch.diag_embed(self.diag(h).exp())
        if self.lower is not None:
            rows, cols = torch.tril_indices(d, d, offset=-1, device=x.device)
            flat = torch.zeros(x.shape[0], d * d, dtype=h.dtype, device=h.device)
            low = low + flat.index_copy(1, rows * d + cols, self.lower(h)).view(-1, d, d)
        return low @ low.transpose(1, 2)


class RHVAE(VAE):
    """Riemannian HVAE: generalised leapfrog on H = -log p(x, z) + log det G(z) / 2 + rho^T G^-1(z) rho / 2,
    with G^-1(z) = sum_i L_i L_i^T exp(-|z - c_i|^2 / T^2) + lambda I learned from centroids c_i = mu(x_i) and a
    metric network x_i -> L_i. Training uses the batch as centroids; evaluation and the ``rhvae`` sampler use the
    last ``metric_points`` training centroids, kept in checkpointed buffers (pythae keeps the last epoch's).

    Loss terms sum to the extended-space -ELBO: ``reconstruction``, ``prior`` (as the HVAE), ``momentum``
    rho_K^T G_K^-1 rho_K / 2 + log det G_K / 2 - log det G_0 / 2 - d/2 and ``neg_entropy``.
    """

    Config = RHVAEConfig
    card = {
        "objective": "-E[log p(x|z_K) + log N(z_K;0,I) + log N(rho_K;0,G(z_K)) - log q(z_0|x) - log N(gamma_0;0,I) "
                     "+ log det G(z_0)/2], (z_K, rho_K) = K tempered generalised leapfrog steps from z_0 ~ q(z|x), "
                     "rho_0 ~ N(0, G(z_0)/beta_0); G^-1(z) = sum_i L_psi(x_i) L_psi(x_i)^T exp(-|z - mu(x_i)|^2/T^2) "
                     "+ lambda I over the batch; log q and log N(gamma_0) in expectation",
        "reduction": "sum over pixels and latent dimensions, mean over batch",
        "weights": "n_lf=3, eps_lf=0.001, beta_zero=0.3, temperature=1.5, regularization=0.01, "
                   "metric_hidden=[400], fixed_point_steps=3, metric_points=null (centroids kept for evaluation: "
                   "min(10000, 2^22 / d^2))",
        "optimisers": "one optimiser (train.optimizer) for encoder, decoder and metric network",
        "paper": "Chadebec, Mantoux & Allassonniere, Geometry-Aware Hamiltonian Variational Auto-Encoder, "
                 "arXiv:2010.11518 (2020)",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Any, latent_dim: int,
                 config: RHVAEConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        c, d = self.config, self.latent_dim
        was_training = decoder.training
        decoder.eval()
        with torch.no_grad():  # the image size, which the metric network reads, from one decoder pass
            in_features = decoder(torch.zeros(1, d)).numel()
        decoder.train(was_training)
        self.metric_net = MetricNet(in_features, d, c.metric_hidden)
        points = c.metric_points if c.metric_points is not None else max(1, min(10_000, 2**22 // d**2))
        self.register_buffer("metric_centroids", torch.zeros(points, d))
        self.register_buffer("metric_factors", torch.zeros(points, d, d))
        self.register_buffer("metric_count", torch.zeros((), dtype=torch.long))

    def remember(self, centroids: torch.Tensor, factors: torch.Tensor) -> None:
        """Keep a batch's centroids and M_i in the ring buffer of the final metric (no host sync)."""
        cap = self.metric_centroids.shape[0]
        centroids, factors = centroids.detach()[-cap:], factors.detach()[-cap:]
        idx = (self.metric_count + torch.arange(centroids.shape[0], device=centroids.device)) % cap
        self.metric_centroids.index_copy_(0, idx, centroids.to(self.metric_centroids.dtype))
        self.metric_factors.index_copy_(0, idx, factors.to(self.metric_factors.dtype))
        self.metric_count += centroids.shape[0]

    def stored_metric(self) -> Metric:
        """The metric of the kept training centroids; before any training, pythae's starting metric
        G^-1(z) = exp(-|z|^2) I + lambda I."""
        n = min(int(self.metric_count), self.metric_centroids.shape[0])
        if n == 0:
            eye = torch.eye(self.latent_dim, dtype=self.metric_factors.dtype, device=self.metric_factors.device)
            return Metric(torch.zeros_like(eye[:1]), eye[None], 1.0, self.config.regularization)
        return Metric(self.metric_centroids[:n], self.metric_factors[:n], self.config.temperature,
                      self.config.regularization)

    def flow(self, x: torch.Tensor, z0: torch.Tensor, gamma: torch.Tensor, metric: Metric, create_graph: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Geometry, Geometry]:
        """(z_K, rho_K, -log p(x | z_K), geometry at z_0, geometry at z_K) from z_0 and gamma_0 ~ N(0, I)."""
        c = self.config
        betas = tempering_schedule(math.sqrt(c.beta_zero), c.n_lf)
        geo0 = metric.at(z0)
        rho0 = geo0.momentum(gamma) / betas[0]  # ~ N(0, G(z_0) / beta_0)
        zk, rhok, nll, geok = generalized_leapfrog(
            z0, rho0, lambda z: potential_grad(self, x, z, create_graph), metric, c.eps_lf, c.n_lf, betas,
            c.fixed_point_steps, geo0)
        return zk, rhok, nll, geo0, geok

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        if self.training:
            factors = self.metric_net(x)
            metric = Metric(enc.mean, factors, self.config.temperature, self.config.regularization)
            self.remember(enc.mean, factors)
        else:
            metric = self.stored_metric()
        z0 = enc.mean + enc.std * torch.randn_like(enc.mean)
        zk, rhok, nll, geo0, geok = self.flow(x, z0, torch.randn_like(z0), metric, torch.is_grad_enabled())
        rec = nll.mean()
        prior = (0.5 * zk.pow(2) + 0.5 * LOG_2PI).sum(1).mean()
        momentum = (0.5 * (geok.quad(rhok) + geok.logdet_g - geo0.logdet_g) - 0.5 * self.latent_dim).mean()
        neg_entropy = _negative_entropy(enc.logvar).mean()
        return {"loss": rec + prior + momentum + neg_entropy, "reconstruction": rec, "prior": prior,
                "momentum": momentum, "neg_entropy": neg_entropy}

    @torch.no_grad()
    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x, z_K) + log N(rho_K; 0, G(z_K)) - log q(z_0 | x) - log N(gamma_0; 0, I) + log det G(z_0) / 2,
        (k, B), under the stored metric: the proposal density of (z_K, rho_K) is q(z_0 | x) N(rho_0; 0,
        G(z_0)/beta_0) beta_0^(-d/2), so each weight's mean is p(x) (exact when the implicit steps converge)."""
        enc = self.encode(x)
        mean, logvar = _repeat(enc.mean, k), _repeat(enc.logvar, k)
        z0 = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        gamma = torch.randn_like(z0)
        zk, rhok, nll, geo0, geok = self.flow(_repeat(x, k), z0, gamma, self.stored_metric(), create_graph=False)
        log_rho = -0.5 * (self.latent_dim * LOG_2PI + geok.logdet_g + geok.quad(rhok))
        log_w = (-nll + log_normal(zk) + log_rho - log_normal(z0, mean, logvar) - log_normal(gamma)
                 + 0.5 * geo0.logdet_g)
        return log_w.view(k, x.shape[0])
