"""The RHVAE's Riemannian metric (Chadebec et al. 2020) and its closed-form derivatives.

G^-1(z) = sum_i M_i w_i(z) + lambda I with w_i(z) = exp(-|z - c_i|^2 / T^2) and M_i = L_i L_i^T symmetric
positive definite, so G^-1 (and G) is positive definite everywhere. With dw_i/dz = -2 w_i (z - c_i) / T^2:

    d/dz log det G(z)       = -sum_i tr(G(z) M_i) dw_i/dz
    d/dz rho^T G^-1(z) rho  =  sum_i (rho^T M_i rho) dw_i/dz

Every sum over centroids is one matrix product against the (N, d^2) stack of M_i, so a batch of B points costs
O(B N d^2) time and O(B N) memory, without building autograd graphs for the metric.
"""

from __future__ import annotations

import torch


class Metric:
    """G^-1(z) from centroids (N, d), matrices M_i (N, d, d), temperature T and regularisation lambda."""

    def __init__(self, centroids: torch.Tensor, factors: torch.Tensor, temperature: float, regularization: float):
        self.centroids = centroids
        self.flat = factors.flatten(1)  # (N, d^2)
        self.t2 = float(temperature) ** 2
        self.lam = float(regularization)
        self.dim = centroids.shape[1]

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """w_i(z) for each point and centroid, (B, N)."""
        sq = z.pow(2).sum(1, keepdim=True) + self.centroids.pow(2).sum(1) - 2 * z @ self.centroids.T
        return torch.exp(-sq.clamp_min(0) / self.t2)

    def inverse(self, z: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """G^-1(z), (B, d, d)."""
        w = self.weights(z) if w is None else w
        eye = torch.eye(self.dim, dtype=z.dtype, device=z.device)
        return (w @ self.flat).view(-1, self.dim, self.dim) + self.lam * eye

    def ginv_times(self, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """G^-1(z) v per point, (B, d)."""
        return (self.inverse(z) @ v.unsqueeze(-1)).squeeze(-1)

    def offsets(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """sum_i a_bi (z_b - c_i), (B, d)."""
        return a.sum(1, keepdim=True) * z - a @ self.centroids

    def at(self, z: torch.Tensor) -> Geometry:
        return Geometry(self, z)


class Geometry:
    """The metric evaluated at a batch of points: G^-1, its Cholesky factor, G, log det G and its gradient."""

    def __init__(self, metric: Metric, z: torch.Tensor):
        self.metric, self.z = metric, z
        self.w = metric.weights(z)
        self.ginv = metric.inverse(z, self.w)
        self.chol = torch.linalg.cholesky_ex(self.ginv).L  # G^-1 = C C^T; a diverged flow gives NaN, not a raise
        self.g = torch.cholesky_inverse(self.chol)
        self.logdet_g = -2.0 * self.chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        trace = self.g.flatten(1) @ metric.flat.T  # tr(G M_i) (M_i symmetric), (B, N)
        self.grad_logdet_g = (2.0 / metric.t2) * metric.offsets(z, self.w * trace)

    def ginv_times(self, rho: torch.Tensor) -> torch.Tensor:
        return (self.ginv @ rho.unsqueeze(-1)).squeeze(-1)

    def quad(self, rho: torch.Tensor) -> torch.Tensor:
        """rho^T G^-1(z) rho per point, (B,)."""
        return (rho * self.ginv_times(rho)).sum(-1)

    def grad_quad(self, rho: torch.Tensor) -> torch.Tensor:
        """d/dz rho^T G^-1(z) rho at fixed rho, (B, d)."""
        outer = (rho.unsqueeze(2) * rho.unsqueeze(1)).flatten(1)
        q = outer @ self.metric.flat.T  # rho^T M_i rho, (B, N)
        return (-2.0 / self.metric.t2) * self.metric.offsets(self.z, self.w * q)

    def momentum(self, gamma: torch.Tensor) -> torch.Tensor:
        """C^-T gamma: distributed N(0, G(z)) for gamma ~ N(0, I), as G = C^-T C^-1."""
        return torch.linalg.solve_triangular(self.chol.transpose(1, 2), gamma.unsqueeze(-1), upper=True).squeeze(-1)
