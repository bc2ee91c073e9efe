"""The von Mises-Fisher distribution on the sphere S^{d-1} in R^d, for the hyperspherical VAE.

vMF(z; mu, kappa) = C_d(kappa) exp(kappa mu^T z), C_d(kappa) = kappa^{d/2-1} / ((2 pi)^{d/2} I_{d/2-1}(kappa)).

- ``log_iv``: log I_v(x), the modified Bessel function of the first kind, differentiable in x. Values from
  ``scipy.special.ive`` in float64 (no overflow for large x); where that underflows (large order v, small x)
  the uniform (Debye) asymptotic expansion takes over. d/dx log I_v(x) = I_{v+1}(x) / I_v(x) + v / x.
- ``VonMisesFisher.rsample``: Wood's (1994) rejection sampler for w = mu^T z, then a Householder reflection
  e1 -> mu (Davidson et al. 2018, Algorithms 1-3). The gradient is g_rep of Davidson et al.: w = h(eps, kappa)
  for the accepted eps, differentiated with eps held fixed, as in their code and in pythae;
  ``rsample_with_score`` also gives what g_cor needs (Naesseth et al. 2017), the term the rejection step adds.
- ``entropy`` and ``kl_to_uniform``, in closed form via A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ive


# -- log Bessel function ----------------------------------------------------------------------------------------
def _log_iv_debye(v: float, x: np.ndarray) -> np.ndarray:
    """log I_v(x) from the uniform asymptotic expansion in large v (DLMF 10.41.3), four correction terms."""
    z = x / v
    s = np.sqrt(1.0 + z * z)
    p = 1.0 / s
    eta = s + np.log(z / (1.0 + s))
    p2 = p * p
    u1 = p * (3 - 5 * p2) / 24
    u2 = p2 * (81 - 462 * p2 + 385 * p2**2) / 1152
    u3 = p * p2 * (30375 - 369603 * p2 + 765765 * p2**2 - 425425 * p2**3) / 414720
    u4 = p2 * p2 * (4465125 - 94121676 * p2 + 349922430 * p2**2 - 446185740 * p2**3
                    + 185910725 * p2**4) / 39813120
    series = 1 + u1 / v + u2 / v**2 + u3 / v**3 + u4 / v**4
    return v * eta - 0.5 * np.log(2 * np.pi * v) - 0.5 * np.log(s) + np.log(series)


def log_iv_numpy(v: float, x: np.ndarray) -> np.ndarray:
    """log I_v(x) for v >= 0 and x > 0 in float64, finite where scipy's scaled value underflows."""
    x = np.asarray(x, dtype=np.float64)
    scaled = ive(v, x)
    with np.errstate(divide="ignore"):
        out = np.log(scaled) + x
    low = ~(scaled > 1e-290)  # underflow (or nan): only for large orders, where the expansion is accurate
    if low.any() and v > 0:
        out = np.where(low, _log_iv_debye(v, np.where(low, x, 1.0)), out)
    return out


class _LogIv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, v: float) -> torch.Tensor:
        xs = x.detach().cpu().double().numpy()
        out = log_iv_numpy(v, xs)
        ratio = np.exp(log_iv_numpy(v + 1, xs) - out)  # I_{v+1} / I_v, kept for the backward pass
        ctx.save_for_backward(x, torch.as_tensor(ratio, device=x.device, dtype=x.dtype))
        ctx.v = v
        return torch.as_tensor(out, device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, ratio = ctx.saved_tensors
        return grad * (ratio + ctx.v / x), None


def log_iv(v: float, x: torch.Tensor) -> torch.Tensor:
    """log I_v(x), differentiable in x (first derivatives), stable for large x and large v."""
    return _LogIv.apply(x, float(v))


def bessel_ratio(d: int, kappa: torch.Tensor) -> torch.Tensor:
    """A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) = E[mu^T z] under vMF(mu, kappa) on S^{d-1}."""
    return torch.exp(log_iv(d / 2, kappa) - log_iv(d / 2 - 1, kappa))


def log_sphere_area(d: int) -> float:
    """log of the surface area of S^{d-1} in R^d: log(2 pi^{d/2} / Gamma(d/2))."""
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def log_normaliser(d: int, kappa: torch.Tensor) -> torch.Tensor:
    """log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa)."""
    return (d / 2 - 1) * torch.log(kappa) - (d / 2) * math.log(2 * math.pi) - log_iv(d / 2 - 1, kappa)


# -- the distribution -------------------------------------------------------------------------------------------
class VonMisesFisher:
    """vMF(loc, concentration) on S^{d-1}: loc (..., d) unit vectors, concentration (..., 1) positive.

    Computations run in float64 (the Bessel terms cancel for large kappa) and return loc's dtype.
    """

    def __init__(self, loc: torch.Tensor, concentration: torch.Tensor):
        if concentration.shape != loc.shape[:-1] + (1,):
            raise ValueError(f"concentration must be shaped {(*loc.shape[:-1], 1)}, got {tuple(concentration.shape)}")
        self.loc, self.concentration = loc, concentration
        self.d = loc.shape[-1]

    @property
    def mean_resultant_length(self) -> torch.Tensor:
        """A_d(kappa), shaped like ``concentration``: E[z] = A_d(kappa) loc."""
        return bessel_ratio(self.d, self.concentration.double()).to(self.loc.dtype)

    def axis_variance(self) -> torch.Tensor:
        """Var[z_i] per coordinate: A/kappa + (1 - d A/kappa - A^2) mu_i^2 (from E[z z^T], Mardia & Jupp 9.3)."""
        k = self.concentration.double()
        a = bessel_ratio(self.d, k)
        mu = self.loc.double()
        var = a / k + (1 - self.d * a / k - a * a) * mu * mu
        return var.clamp_min(1e-30).to(self.loc.dtype)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log density w.r.t. the surface measure of S^{d-1}; z (..., d) broadcasts against loc."""
        k = self.concentration.double()
        dot = (z.double() * self.loc.double()).sum(-1, keepdim=True)
        return (log_normaliser(self.d, k) + k * dot).squeeze(-1).to(z.dtype)

    def entropy(self) -> torch.Tensor:
        """H = -log C_d(kappa) - kappa A_d(kappa), shaped like concentration without its last axis."""
        k = self.concentration.double()
        return (-log_normaliser(self.d, k) - k * bessel_ratio(self.d, k)).squeeze(-1).to(self.loc.dtype)

    def kl_to_uniform(self) -> torch.Tensor:
        """KL(vMF || uniform on S^{d-1}) = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}| (Davidson et al.)."""
        k = self.concentration.double()
        kl = k * bessel_ratio(self.d, k) + log_normaliser(self.d, k) + log_sphere_area(self.d)
        return kl.squeeze(-1).to(self.loc.dtype)

    # -- sampling ------------------------------------------------------------------------------------------------
    def _wood_constants(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m1 = self.d - 1
        root = torch.sqrt(4 * k * k + m1 * m1)
        b = m1 / (2 * k + root)  # = (-2 kappa + root) / (d - 1), without the cancellation at large kappa
        a = (m1 + 2 * k + root) / 4
        dd = 4 * a * b / (1 + b) - m1 * math.log(m1)
        return a, b, dd

    def _accepted_eps(self, sample_shape: tuple[int, ...], max_rounds: int = 1000) -> torch.Tensor:
        """Wood's rejection step: the accepted Beta((d-1)/2, (d-1)/2) draws eps, shaped (*sample, *batch, 1)."""
        k = self.concentration.detach().double()
        a, b, dd = self._wood_constants(k)
        shape = tuple(sample_shape) + tuple(k.shape)
        a, b, dd = (t.expand(shape) for t in (a, b, dd))
        half = torch.full((), 0.5 * (self.d - 1), dtype=torch.float64, device=k.device)
        beta = torch.distributions.Beta(half, half)
        eps = torch.zeros(shape, dtype=torch.float64, device=k.device)
        todo = torch.ones(shape, dtype=torch.bool, device=k.device)
        for _ in range(max_rounds):
            e = beta.sample(shape)
            t = 2 * a * b / (1 - (1 - b) * e)
            u = torch.rand(shape, dtype=torch.float64, device=k.device)
            accept = todo & ((self.d - 1) * torch.log(t) - t + dd >= torch.log(u))
            eps = torch.where(accept, e, eps)
            todo = todo & ~accept
            if not bool(todo.any()):
                return eps
        raise RuntimeError(f"vMF rejection sampler: no acceptance after {max_rounds} rounds")

    def rsample(self, sample_shape: tuple[int, ...] = (), eps: torch.Tensor | None = None) -> torch.Tensor:
        """z ~ vMF, shaped (*sample_shape, *loc.shape); differentiable in loc and concentration (g_rep)."""
        if eps is None:
            eps = self._accepted_eps(tuple(sample_shape))
        k = self.concentration.double()
        _, b, _ = self._wood_constants(k)
        denom = 1 - (1 - b) * eps
        w = (1 - (1 + b) * eps) / denom
        # sqrt(1 - w^2) = 2 sqrt(b eps (1 - eps)) / denom, without cancellation when w is near 1
        radial = 2 * torch.sqrt(b * (eps * (1 - eps)).clamp_min(1e-300)) / denom
        shape = eps.shape[:-1] + (self.d - 1,)
        v = torch.randn(shape, dtype=torch.float64, device=eps.device)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        z = torch.cat([w, radial * v], dim=-1)
        return householder_e1_to(self.loc.double(), z).to(self.loc.dtype)

    def rsample_with_score(self, sample_shape: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """z as ``rsample`` and s = log(q(w)/r(w)) at w = h(eps, kappa), eps fixed, for the g_cor term.

        grad E[f(z)] = E[grad f(z)] + E[f(z) grad s] (Naesseth et al. 2017): add f(z).detach() * (s - s.detach())
        to the objective to get the unbiased gradient g_rep + g_cor. q(w) is the density of w = mu^T z under
        the vMF, r(w) = s(eps) / |dh/deps| the proposal's; log s(eps) does not depend on kappa and is left out.
        """
        eps = self._accepted_eps(tuple(sample_shape))
        z = self.rsample(sample_shape, eps)
        k = self.concentration.double()
        _, b, _ = self._wood_constants(k)
        denom = 1 - (1 - b) * eps
        one_minus_w = 2 * b * eps / denom
        one_plus_w = 2 * (1 - eps) / denom
        log_q = (log_normaliser(self.d, k) + log_sphere_area(self.d - 1) + k * (1 - one_minus_w)
                 + 0.5 * (self.d - 3) * (torch.log(one_minus_w.clamp_min(1e-300)) + torch.log(one_plus_w)))
        log_jac = torch.log(2 * b) - 2 * torch.log(denom)  # |dh/deps| = 2b / (1 - (1 - b) eps)^2
        return z, (log_q + log_jac).squeeze(-1).to(self.loc.dtype)


def householder_e1_to(mu: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Apply the reflection H = I - 2 u u^T, u = (e1 - mu) / |e1 - mu|, which maps e1 to mu, to z (..., d)."""
    e1 = torch.zeros_like(mu)
    e1[..., 0] = 1
    u = e1 - mu
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # mu = e1: u = 0 and H = I
    return z - 2 * u * (u * z).sum(-1, keepdim=True)


def uniform_log_prob(d: int) -> float:
    """log density of the uniform distribution on S^{d-1}: -log |S^{d-1}|."""
    return -log_sphere_area(d)
