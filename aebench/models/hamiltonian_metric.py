"""The RHVAE's Riemannian metric (Chadebec et al. 2020) and its closed-form derivatives.

G^-1(z) = sum_i M_i w_i(z) + lambda I with w_i(z) = exp(-|z - c_i|^2 / T^2) and M_i = L_i L_i^T symmetric
positive definite, so G^-1 (and G) is positive definite everywhere. With dw_i/dz = -2 w_i (z - c_i) / T^2:

    d/dz log det G(z)       = -sum_i tr(G(z) M_i) dw_i/dz
    d/dz rho^T G^-1(z) rho  =  sum_i (rho^T M_i rho) dw_i/dz

Every sum over centroids is one matrix product against the (N, d^2) stack of M_i, so a batch of B points costs
O(B N d^2) time and O(B N) memory, without building autograd graphs for the metric. Outside autograd (evaluation,
the ``rhvae`` sampler's thousands of metric gradients) the stack keeps only the M_i's upper triangles,
(N, d(d+1)/2), an off-diagonal entry counting twice in tr(A M_i) = sum_jk A_jk M_i,jk, so the two products that
dominate (sum_i w_i M_i and tr(G M_i) for every i) cost B N d(d+1)/2 multiply-adds each instead of B N d^2, and
the (B, N) kernel matrix is built in place from one product. Training keeps the plain products (same numbers,
no indexing in its graph).
"""

from __future__ import annotations

from functools import cached_property

import torch


def _autograd(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an operation on these tensors (training; the loss outside ``no_grad``)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class Metric:
    """G^-1(z) from centroids (N, d), matrices M_i (N, d, d), temperature T and regularisation lambda.

    Under autograd every term is the plain product against the (N, d^2) stack; outside it (evaluation, the
    ``rhvae`` sampler) the packed upper triangles and the in-place kernel matrix below, the same numbers up to
    float rounding.
    """

    def __init__(self, centroids: torch.Tensor, factors: torch.Tensor, temperature: float, regularization: float):
        self.centroids = centroids
        self.flat = factors.flatten(1)  # (N, d^2)
        self.t2 = float(temperature) ** 2
        self.lam = float(regularization)
        self.dim = centroids.shape[1]

    # -- the packed form, built on first use outside autograd ------------------------------------------------
    @cached_property
    def _triangle(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat positions of the upper triangle (P,), P = d(d+1)/2; trace weights (1 on the diagonal, 2 off it);
        each flat position's packed index (d^2,)."""
        d, dev = self.dim, self.centroids.device
        rows, cols = torch.triu_indices(d, d, device=dev)
        unpack = torch.empty(d * d, dtype=torch.long, device=dev)
        unpack[rows * d + cols] = torch.arange(len(rows), device=dev)
        unpack[cols * d + rows] = torch.arange(len(rows), device=dev)
        return rows * d + cols, 2.0 - (rows == cols).to(self.flat.dtype), unpack

    @cached_property
    def _packed(self) -> torch.Tensor:
        """The upper triangles of the M_i, (N, P)."""
        return self.flat.detach()[:, self._triangle[0]].contiguous()

    @cached_property
    def _exponent_rhs(self) -> torch.Tensor:
        """-|z - c_i|^2 / T^2 = (z, 1, |z|^2) . (2 c_i, -|c_i|^2, -1) / T^2: the kernel's exponent as one product
        with this (d + 2, N) matrix."""
        c = self.centroids.detach()
        sq = c.pow(2).sum(1)
        return torch.cat([2.0 * c.T, -sq[None], -torch.ones_like(sq)[None]]) / self.t2

    @cached_property
    def _centroids_one(self) -> torch.Tensor:
        """(c_i, 1), (N, d + 1): sum_i a_bi c_i and sum_i a_bi in one pass over a."""
        c = self.centroids.detach()
        return torch.cat([c, torch.ones_like(c[:, :1])], 1)

    # -- the terms --------------------------------------------------------------------------------------------
    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """w_i(z) for each point and centroid, (B, N)."""
        if _autograd(z, self.centroids):
            sq = z.pow(2).sum(1, keepdim=True) + self.centroids.pow(2).sum(1) - 2 * z @ self.centroids.T
            return torch.exp(-sq.clamp_min(0) / self.t2)
        lhs = torch.cat([z, torch.ones_like(z[:, :1]), z.pow(2).sum(1, keepdim=True)], 1)
        return (lhs @ self._exponent_rhs).clamp_max_(0).exp_()

    def traces(self, a: torch.Tensor) -> torch.Tensor:
        """tr(A_b M_i) = sum_jk A_bjk M_i,jk for symmetric A (B, d, d): (B, N)."""
        if _autograd(a, self.flat):
            return a.flatten(1) @ self.flat.T
        upper, twice, _ = self._triangle
        return (a.flatten(1)[:, upper] * twice) @ self._packed.T

    def inverse(self, z: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """G^-1(z), (B, d, d)."""
        w = self.weights(z) if w is None else w
        eye = torch.eye(self.dim, dtype=z.dtype, device=z.device)
        if _autograd(w, self.flat):
            return (w @ self.flat).view(-1, self.dim, self.dim) + self.lam * eye
        return (w @ self._packed)[:, self._triangle[2]].view(-1, self.dim, self.dim) + self.lam * eye

    def ginv_times(self, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """G^-1(z) v per point, (B, d)."""
        return (self.inverse(z) @ v.unsqueeze(-1)).squeeze(-1)

    def offsets(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """sum_i a_bi (z_b - c_i), (B, d)."""
        if _autograd(z, a, self.centroids):
            return a.sum(1, keepdim=True) * z - a @ self.centroids
        sums = a @ self._centroids_one
        return sums[:, -1:] * z - sums[:, :-1]

    def at(self, z: torch.Tensor) -> Geometry:
        return Geometry(self, z)


def _times(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """w * t, into t outside autograd (t is a fresh product that nothing else holds)."""
    return w * t if _autograd(w, t) else t.mul_(w)


class Geometry:
    """The metric evaluated at a batch of points: G^-1, its Cholesky factor, G, log det G and its gradient."""

    def __init__(self, metric: Metric, z: torch.Tensor):
        self.metric, self.z = metric, z
        self.w = metric.weights(z)
        self.ginv = metric.inverse(z, self.w)
        self.chol = torch.linalg.cholesky_ex(self.ginv).L  # G^-1 = C C^T; a diverged flow gives NaN, not a raise
        self.g = torch.cholesky_inverse(self.chol)
        self.logdet_g = -2.0 * self.chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        trace = metric.traces(self.g)  # tr(G M_i), (B, N)
        self.grad_logdet_g = (2.0 / metric.t2) * metric.offsets(z, _times(self.w, trace))

    def ginv_times(self, rho: torch.Tensor) -> torch.Tensor:
        return (self.ginv @ rho.unsqueeze(-1)).squeeze(-1)

    def quad(self, rho: torch.Tensor) -> torch.Tensor:
        """rho^T G^-1(z) rho per point, (B,)."""
        return (rho * self.ginv_times(rho)).sum(-1)

    def grad_quad(self, rho: torch.Tensor) -> torch.Tensor:
        """d/dz rho^T G^-1(z) rho at fixed rho, (B, d)."""
        q = self.metric.traces(rho.unsqueeze(2) * rho.unsqueeze(1))  # rho^T M_i rho, (B, N)
        return (-2.0 / self.metric.t2) * self.metric.offsets(self.z, _times(self.w, q))

    def momentum(self, gamma: torch.Tensor) -> torch.Tensor:
        """C^-T gamma: distributed N(0, G(z)) for gamma ~ N(0, I), as G = C^-T C^-1."""
        return torch.linalg.solve_triangular(self.chol.transpose(1, 2), gamma.unsqueeze(-1), upper=True).squeeze(-1)
