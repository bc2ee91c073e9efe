"""Metrics of the latent codes: active units, the aggregate posterior against the prior, a linear probe.

- ``active_units`` (Burda et al. 2016): A_u = Cov_x(E_q(u|x)[u]) per dimension, over the test set; a
  dimension is active when A_u exceeds ``threshold``. Deterministic encoders: the variance of the codes
  (their scale is arbitrary, so read the count with care).
- ``kl_w2``: a Gaussian fitted by moments to the test set's aggregate posterior q(z) = mean_x q(z|x)
  (mean of the codes; covariance of the posterior means plus the mean posterior variance), then, in closed
  form and float64, KL(q || N(0, I)) and the 2-Wasserstein distance W2(q, N(0, I)). For probabilistic
  encoders also the mean per-sample KL(q(z|x) || p(z)) and its split over dimensions.
- ``probe``: test accuracy of a logistic regression trained on (standardised) training codes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from aebench.metrics.base import EvalContext
from aebench.models.base import Encoding


# -- active units ---------------------------------------------------------------------------------------------
def unit_variances(codes: torch.Tensor) -> torch.Tensor:
    """Per-dimension variance of the posterior means over the data (float64)."""
    return codes.double().var(0, unbiased=True)


def active_units(ctx: EvalContext, threshold: float = 0.01) -> dict[str, Any]:
    """How many latent dimensions the encoder uses: Burda et al.'s A_u > threshold on the test set."""
    var = unit_variances(ctx.codes("test").mean)
    active = var > threshold
    return {"count": int(active.sum()), "fraction": float(active.double().mean()),
            "variances": var.tolist(), "active": [bool(a) for a in active]}


# -- Gaussian fit, KL and W2 ------------------------------------------------------------------------------------
def codes(ctx: EvalContext, max_items: int = 64) -> dict[str, Any]:
    """The code of each of the first ``max_items`` test items, with its label: for small tasks such as
    the N-M-N encoder, where the learned hidden-unit code of every pattern is the result itself."""
    enc = ctx.codes("test")
    n = min(max_items, enc.mean.shape[0])
    out: dict[str, Any] = {"items": [[round(float(v), 6) for v in row] for row in enc.mean[:n]]}
    if ctx.test.labels is not None:
        out["labels"] = [int(v) for v in ctx.test.labels[:n]]
    return out


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix by eigendecomposition.

    Stable where ``scipy.linalg.sqrtm`` (Schur) may return complex noise: the matrix is symmetrised and
    round-off negative eigenvalues are clipped to 0, so the root is real, symmetric and PSD.
    """
    w, v = torch.linalg.eigh(_sym(a.double()))
    return _sym((v * w.clamp(min=0).sqrt()) @ v.T)


def gaussian_fit(enc: Encoding) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (float64) of the aggregate posterior mean_x q(z|x) by moment matching."""
    m = enc.mean.double()
    mean = m.mean(0)
    cov = torch.cov(m.T).reshape(m.shape[1], m.shape[1])
    if enc.logvar is not None:
        cov = cov + torch.diag(enc.logvar.double().exp().mean(0))
    return mean, _sym(cov)


def kl_to_standard(mean: torch.Tensor, cov: torch.Tensor) -> float:
    """KL(N(mean, cov) || N(0, I)) = (tr cov + |mean|^2 - d - log det cov) / 2; inf for a singular cov."""
    mean, cov = mean.double(), _sym(cov.double())
    eig = torch.linalg.eigvalsh(cov)
    if float(eig.min()) <= 0:
        return math.inf
    d = mean.shape[0]
    return float(0.5 * (eig.sum() + mean.dot(mean) - d - eig.log().sum()))


def w2_gaussians(m1: torch.Tensor, s1: torch.Tensor, m2: torch.Tensor, s2: torch.Tensor) -> float:
    """W2(N(m1, s1), N(m2, s2)): sqrt(|m1 - m2|^2 + tr(s1 + s2 - 2 (s2^1/2 s1 s2^1/2)^1/2))."""
    m1, s1, m2, s2 = (t.double() for t in (m1, s1, m2, s2))
    r2 = sqrtm_psd(s2)
    cross = sqrtm_psd(r2 @ s1 @ r2)
    sq = float((m1 - m2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * torch.trace(cross))
    return math.sqrt(max(sq, 0.0))


def w2_to_standard(mean: torch.Tensor, cov: torch.Tensor) -> float:
    """W2(N(mean, cov), N(0, I)) = sqrt(|mean|^2 + tr cov + d - 2 tr cov^1/2)."""
    d = mean.shape[0]
    return w2_gaussians(mean, cov, torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64))


def kl_w2(ctx: EvalContext) -> dict[str, Any]:
    """KL and W2 between a Gaussian fitted to the test aggregate posterior and the prior N(0, I)."""
    from aebench.models.vae import gaussian_kl

    enc = ctx.codes("test")
    mean, cov = gaussian_fit(enc)
    out: dict[str, Any] = {"kl": kl_to_standard(mean, cov), "w2": w2_to_standard(mean, cov),
                           "cov_eigenvalues": torch.linalg.eigvalsh(cov).tolist()}
    if enc.logvar is not None:
        per_dim = gaussian_kl(Encoding(enc.mean.double(), enc.logvar.double())).mean(0)
        out["sample_kl"] = float(per_dim.sum())
        out["sample_kl_per_dim"] = per_dim.tolist()
    return out


# -- linear probe -----------------------------------------------------------------------------------------------
def probe(ctx: EvalContext, max_train: int = 10_000, max_iter: int = 1000, C: float = 1.0) -> dict[str, Any]:
    """Test accuracy of multinomial logistic regression on the codes (posterior means).

    ``max_train``: at most this many training codes, a fixed random subset (the fit is then about a second).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ztr, zte = ctx.codes("train").mean, ctx.codes("test").mean
    ytr, yte = ctx.train.labels.cpu(), ctx.test.labels.cpu()
    if len(ztr) > max_train:
        idx = torch.randperm(len(ztr), generator=ctx.generator("probe"))[:max_train]
        ztr, ytr = ztr[idx], ytr[idx]
    scaler = StandardScaler().fit(ztr.double().numpy())
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit(scaler.transform(ztr.double().numpy()), ytr.numpy())
    pred = clf.predict(scaler.transform(zte.double().numpy()))
    counts = np.bincount(yte.numpy())
    return {"accuracy": float((pred == yte.numpy()).mean()), "chance": float(counts.max() / counts.sum()),
            "fit": {"n_train": int(len(ztr)), "iterations": int(np.max(clf.n_iter_)), "max_iter": max_iter}}
