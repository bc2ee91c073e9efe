"""A full-covariance Gaussian mixture fitted by EM in torch, on whatever device the codes are on.

scikit-learn's ``GaussianMixture`` runs on the CPU only, one component at a time, in float64. This EM runs on
the job's device, all components at once: the E-step is one (N, d) x (d, k d) product, the M-step one batched
(k, d, N) x (k, N, d) product. The per-point work is float32 (float64 products are 3-4x slower on many CPUs and
most GPUs); the parameters (means, covariances, Cholesky factors, the log-likelihood) are float64.

It follows scikit-learn's algorithm step for step, so its converged log-likelihood agrees with
``GaussianMixture.score`` (``tests/test_gmm_torch.py``): responsibilities start one-hot from k-means (seeded
greedy k-means++, then Lloyd), every covariance gets ``reg_covar`` on its diagonal, empty components keep a weight
of ``10 * eps``, and EM stops when the mean log-likelihood changes by less than ``tol`` or after ``max_iter``
iterations. Deterministic given the seed on a given device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class GaussianMixtureFit:
    """The fitted mixture: weights (k,), means (k, d), covariances (k, d, d) and their Cholesky factors."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    chol: torch.Tensor
    n_iter: int
    converged: bool
    lower_bound: float  # the mean log-likelihood at the last E-step, as scikit-learn's ``lower_bound_``

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per row of ``x`` (N, d) under the mixture, in the parameters' precision."""
        x = x.to(self.means.device, self.means.dtype)
        prec = _precision_cholesky(self.chol)
        y = torch.einsum("ni,kij->nkj", x, prec) - torch.einsum("ki,kij->kj", self.means, prec)
        return torch.logsumexp(_log_weighted(self.weights, prec, y.pow(2).sum(2)), dim=1)

    def score(self, x: torch.Tensor) -> float:
        """The mean log-likelihood per sample, as scikit-learn's ``GaussianMixture.score``."""
        return float(self.log_prob(x).mean())


def _precision_cholesky(chol: torch.Tensor) -> torch.Tensor:
    """P_k = L_k^-T: (x - mu)^T Sigma^-1 (x - mu) = |(x - mu) P_k|^2 (scikit-learn's ``precisions_cholesky_``)."""
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device).expand_as(chol)
    return torch.linalg.solve_triangular(chol, eye, upper=False).mT


def _log_weighted(weights: torch.Tensor, prec: torch.Tensor, maha: torch.Tensor) -> torch.Tensor:
    """log w_k + log N(x_n; mu_k, Sigma_k) from the squared Mahalanobis distances (N, k)."""
    d = prec.shape[-1]
    const = weights.log() + prec.diagonal(dim1=1, dim2=2).log().sum(1) - 0.5 * d * math.log(2 * math.pi)
    return const.to(maha.dtype) - 0.5 * maha


def _e_step(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor
            ) -> tuple[torch.Tensor, float]:
    """Responsibilities (N, k) in ``x``'s dtype and the mean log-likelihood (float64) of the current parameters."""
    (n, d), k = x.shape, means.shape[0]
    prec = _precision_cholesky(chol)  # (k, d, d)
    proj = prec.permute(1, 0, 2).reshape(d, k * d)
    shift = -torch.einsum("ki,kij->kj", means, prec).reshape(k * d)
    y = torch.addmm(shift.to(x.dtype), x, proj.to(x.dtype)).view(n, k, d)  # (x - mu_k) P_k for every k at once
    wlp = _log_weighted(weights, prec, y.pow(2).sum(2))
    log_norm = torch.logsumexp(wlp, dim=1, keepdim=True)
    return (wlp - log_norm).exp_(), float(log_norm.double().mean())


def _m_step(x: torch.Tensor, resp: torch.Tensor, reg: float, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Weights, means, covariances (``reg`` on the diagonal) and Cholesky factors, in ``dtype``, from responsibilities.

    The covariances sum weighted outer products of the residuals x - mu_k (no E[x x^T] - mu mu^T cancellation).
    """
    n, d = x.shape
    nk = resp.sum(0, dtype=dtype) + 10 * torch.finfo(dtype).eps  # scikit-learn's guard against empty components
    means = (resp.T @ x).to(dtype) / nk[:, None]
    diff = x.unsqueeze(0) - means.to(x.dtype).unsqueeze(1)  # (k, N, d)
    cov = ((diff * resp.T.unsqueeze(2)).mT @ diff).to(dtype) / nk[:, None, None]
    cov = 0.5 * (cov + cov.mT) + reg * torch.eye(d, dtype=dtype, device=x.device)
    return nk / n, means, cov, _cholesky(cov, reg)


def _cholesky(cov: torch.Tensor, reg: float) -> torch.Tensor:
    """Cholesky factors of (k, d, d) covariances; a factor that fails gets more jitter until it succeeds."""
    chol, info = torch.linalg.cholesky_ex(cov)
    jitter = max(reg, 1e-10)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    for _ in range(16):
        bad = info > 0
        if not bool(bad.any()):
            break
        chol[bad], info[bad] = torch.linalg.cholesky_ex(cov[bad] + jitter * eye)
        jitter *= 10
    return chol


def kmeans_labels(x: torch.Tensor, k: int, generator: torch.Generator, n_iter: int = 100) -> torch.Tensor:
    """Cluster labels of ``x`` by k-means: seeded greedy k-means++ centres (as scikit-learn's), then Lloyd."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))  # scikit-learn's number of local trials per centre
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    closest = (x - x[first]).pow(2).sum(1)
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0:  # every point already sits on a centre: take any
            idx = torch.randint(n, (trials,), generator=generator).to(x.device)
        else:
            u = (torch.rand(trials, generator=generator, dtype=torch.float64) * total).to(x.device, x.dtype)
            idx = torch.searchsorted(closest.cumsum(0), u).clamp_(max=n - 1)
        cand = torch.minimum(closest.unsqueeze(0), torch.cdist(x[idx], x).pow(2))  # (trials, N)
        best = int(cand.sum(1).argmin())
        centres.append(x[idx[best]])
        closest = cand[best]
    c = torch.stack(centres)
    labels = torch.cdist(x, c).argmin(1)
    for _ in range(n_iter):
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)
        counts = onehot.sum(0)
        c = torch.where(counts[:, None] > 0, (onehot.T @ x) / counts.clamp(min=1)[:, None], c)
        new = torch.cdist(x, c).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def fit_gmm(x: torch.Tensor, k: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-3,
            reg_covar: float = 1e-6) -> GaussianMixtureFit:
    """Fit a k-component full-covariance mixture to ``x`` (N, d) by EM on ``x``'s device (scikit-learn's defaults).

    Per-point work in float32, parameters in float64 (float32 on MPS, which has no float64).
    """
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    centre = x.to(dtype).mean(0)
    xs = (x.to(dtype) - centre).float()  # centred: the log-likelihood is the same, float32 loses less
    generator = torch.Generator().manual_seed(int(seed))
    resp = torch.nn.functional.one_hot(kmeans_labels(xs, k, generator), k).float()
    weights, means, cov, chol = _m_step(xs, resp, reg_covar, dtype)
    lower_bound, converged, n_iter = -math.inf, False, 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
        previous = lower_bound
        resp, lower_bound = _e_step(xs, weights, means, chol)
        weights, means, cov, chol = _m_step(xs, resp, reg_covar, dtype)
        if abs(lower_bound - previous) < tol:
            converged = True
            break
    return GaussianMixtureFit(weights, means + centre, cov, chol, n_iter, converged, lower_bound)
