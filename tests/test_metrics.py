"""Metrics against independent references: scipy for KL/W2 and convolutions, closed forms, synthetic encoders
with a known answer, and a linear Gaussian model whose marginal likelihood is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg, signal, stats
from torch import nn

from aebench.data.base import ImageSet
from aebench.metrics.base import EvalContext, evaluate
from aebench.metrics.latent import (
    active_units,
    gaussian_fit,
    kl_to_standard,
    kl_w2,
    probe,
    sqrtm_psd,
    w2_gaussians,
    w2_to_standard,
)
from aebench.metrics.sharpness import laplace_variance, sharpness
from aebench.models.base import Autoencoder, Encoding
from aebench.models.likelihood import Bernoulli, Gaussian
from aebench.models.vae import VAE
from aebench.registry import metric_direction as key_direction


def images(n: int, shape=(1, 4, 4), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def make_ctx(model: Autoencoder, test: torch.Tensor, train: torch.Tensor | None = None, labels_test=None,
             labels_train=None, **kw) -> EvalContext:
    train = test if train is None else train
    return EvalContext(model=model, train=ImageSet("toy", "train", train, labels_train),
                       test=ImageSet("toy", "test", test, labels_test), device=torch.device("cpu"), **kw)


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def spd(d: int, rng: np.random.Generator, cond: float = 10.0) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * np.geomspace(1.0 / cond, 1.0, d) * rng.uniform(0.5, 2.0)) @ q.T


# -- KL and W2 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 3, 16])
def test_kl_matches_scipy_entropy(d):
    rng = np.random.default_rng(d)
    mean, cov = rng.normal(size=d), spd(d, rng)
    # KL(q || N(0, I)) = -H(q) - E_q[log N(z; 0, I)], with scipy's entropy as the reference
    ref = -stats.multivariate_normal(mean, cov).entropy() + 0.5 * (d * math.log(2 * math.pi) + np.trace(cov)
                                                                    + mean @ mean)
    assert kl_to_standard(torch.tensor(mean), torch.tensor(cov)) == pytest.approx(ref, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("d", [2, 8, 32])
def test_w2_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(100 + d)
    m1, m2, s1, s2 = rng.normal(size=d), rng.normal(size=d), spd(d, rng, 1e3), spd(d, rng)
    r2 = linalg.sqrtm(s2).real
    ref = math.sqrt((m1 - m2) @ (m1 - m2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(r2 @ s1 @ r2).real))
    got = w2_gaussians(*(torch.tensor(a) for a in (m1, s1, m2, s2)))
    assert got == pytest.approx(ref, rel=1e-8)
    ref0 = math.sqrt(m1 @ m1 + np.trace(s1) + d - 2 * np.trace(linalg.sqrtm(s1).real))
    assert w2_to_standard(torch.tensor(m1), torch.tensor(s1)) == pytest.approx(ref0, rel=1e-8)


def test_closed_forms_isotropic():
    d, s = 5, 0.3
    m = torch.arange(d, dtype=torch.float64) / 10
    cov = s**2 * torch.eye(d, dtype=torch.float64)
    assert kl_to_standard(m, cov) == pytest.approx(0.5 * d * (s**2 - 1 - 2 * math.log(s)) + 0.5 * float(m @ m))
    assert w2_to_standard(m, cov) == pytest.approx(math.sqrt(float(m @ m) + d * (s - 1) ** 2))
    eye = torch.eye(d, dtype=torch.float64)
    assert kl_to_standard(torch.zeros(d), eye) == pytest.approx(0.0, abs=1e-12)
    assert w2_to_standard(torch.zeros(d), eye) == pytest.approx(0.0, abs=1e-7)


def test_singular_covariance_gives_infinite_kl_and_finite_w2():
    cov = torch.diag(torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert kl_to_standard(torch.zeros(2), cov) == math.inf
    assert w2_to_standard(torch.zeros(2), cov) == pytest.approx(1.0)  # the collapsed axis moves by 1


def test_sqrtm_psd_is_symmetric_root_even_with_round_off_negative_eigenvalues():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 3))
    s = torch.tensor(a @ a.T)  # rank 3: eigenvalues ~ +-1e-16 where scipy may go complex
    r = sqrtm_psd(s)
    assert torch.allclose(r, r.T)
    assert torch.allclose(r @ r, s, atol=1e-10)
    assert float(torch.linalg.eigvalsh(r).min()) >= -1e-12


def test_gaussian_fit_of_the_aggregate_posterior_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(400, 3, generator=g) * torch.tensor([1.0, 0.1, 2.0])
    logvar = torch.randn(400, 3, generator=g) * 0.3 - 1.0
    mu, cov = gaussian_fit(Encoding(mean, logvar))
    z = (mean + (0.5 * logvar).exp() * torch.randn(2000, 400, 3, generator=g)).reshape(-1, 3).double().numpy()
    assert np.allclose(mu.numpy(), z.mean(0), atol=0.01)
    assert np.allclose(cov.numpy(), np.cov(z, rowvar=False), atol=0.02)


class DiagGaussEncoderAE(VAE):
    """A 'VAE' whose encoder returns given means and log-variances for the given images (by index)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor | None, shape=(1, 4, 4)):
        d = mean.shape[1]
        super().__init__(nn.Identity(), nn.Sequential(nn.Linear(d, int(np.prod(shape))), nn.Unflatten(1, shape)),
                         Bernoulli(), d)
        self.table = (mean, logvar)

    def encode(self, x):  # the first pixel of each test image holds its index (see indexed_images)
        idx = (x[:, 0, 0, 0] * 255).round().long() + 256 * (x[:, 0, 0, 1] * 255).round().long()
        mean, logvar = self.table
        return Encoding(mean[idx], None if logvar is None else logvar[idx])


def indexed_images(n: int) -> torch.Tensor:
    x = images(n)
    x[:, 0, 0, 0] = torch.arange(n) % 256
    x[:, 0, 0, 1] = torch.arange(n) // 256
    return x


def test_kl_w2_metric_uses_codes_and_analytic_per_sample_kl():
    g = torch.Generator().manual_seed(1)
    n, d = 300, 4
    mean, logvar = torch.randn(n, d, generator=g) * 0.5, torch.randn(n, d, generator=g) * 0.2 - 0.5
    ctx = make_ctx(DiagGaussEncoderAE(mean, logvar), indexed_images(n))
    out = kl_w2(ctx)
    m, lv = mean.double().numpy(), logvar.double().numpy()
    per_dim = (0.5 * (m**2 + np.exp(lv) - 1 - lv)).mean(0)
    assert np.allclose(out["sample_kl_per_dim"], per_dim, rtol=1e-6)
    assert out["sample_kl"] == pytest.approx(per_dim.sum(), rel=1e-6)
    cov = np.cov(m, rowvar=False) + np.diag(np.exp(lv).mean(0))
    ref = -stats.multivariate_normal(m.mean(0), cov).entropy() + 0.5 * (
        d * math.log(2 * math.pi) + np.trace(cov) + m.mean(0) @ m.mean(0))
    assert out["kl"] == pytest.approx(ref, rel=1e-5)
    det = kl_w2(make_ctx(DiagGaussEncoderAE(mean, None), indexed_images(n)))
    assert "sample_kl" not in det and det["kl"] > 0


# -- active units -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 3, 8])
def test_active_units_counts_exactly_the_dimensions_that_vary(k):
    n, d = 500, 8
    g = torch.Generator().manual_seed(k)
    mean = torch.zeros(n, d)
    mean[:, :k] = torch.randn(n, k, generator=g) * torch.linspace(0.2, 2.0, max(k, 1))[:k]
    mean[:, k:] = 0.3 + 0.02 * torch.randn(n, d - k, generator=g)  # variance 4e-4: inactive
    logvar = torch.randn(n, d, generator=g)  # the posterior spread must not matter (Burda: variance of the means)
    out = active_units(make_ctx(DiagGaussEncoderAE(mean, logvar), indexed_images(n)))
    assert out["count"] == k
    assert out["fraction"] == pytest.approx(k / d)
    assert np.allclose(out["variances"], mean.double().numpy().var(0, ddof=1), rtol=1e-6)
    assert out["active"] == [True] * k + [False] * (d - k)


def test_active_units_threshold_is_a_setting():
    n = 400
    mean = torch.randn(n, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.05, 1.0])  # var 0.0025
    ctx = make_ctx(DiagGaussEncoderAE(mean, None), indexed_images(n))
    assert active_units(ctx)["count"] == 1
    assert active_units(ctx, threshold=0.001)["count"] == 2


# -- sharpness ----------------------------------------------------------------------------------------------------
LAPLACE = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float)


def test_constant_images_have_zero_sharpness():
    x = torch.full((3, 1, 10, 10), 77, dtype=torch.uint8)
    assert torch.all(laplace_variance(x) == 0)


def test_sharpness_equals_a_direct_scipy_convolution():
    x = images(5, (1, 12, 9))
    ref = [signal.convolve2d(img[0].numpy() / 255.0, LAPLACE, mode="valid").var() for img in x]
    assert np.allclose(laplace_variance(x).numpy(), ref, rtol=1e-10)
    rgb = images(4, (3, 8, 8), seed=2)
    gray = np.tensordot([0.2989, 0.5870, 0.1140], rgb.double().numpy() / 255.0, axes=([0], [1]))
    ref = [signal.convolve2d(g, LAPLACE, mode="valid").var() for g in gray]
    assert np.allclose(laplace_variance(rgb).numpy(), ref, rtol=1e-10)


def test_blurring_lowers_sharpness():
    from scipy import ndimage

    x = images(6, (1, 16, 16), seed=3)
    blurred = torch.tensor(np.stack([ndimage.gaussian_filter(i.numpy().astype(float), (0, 1.0, 1.0)) for i in x]))
    assert torch.all(laplace_variance(blurred.round().to(torch.uint8)) < laplace_variance(x))


class Blur(nn.Module):
    """Decoder output = the input image smoothed by a 3x3 box filter (in logit space: probabilities via sigmoid)."""

    def forward(self, x):
        p = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False).clamp(1e-4, 1 - 1e-4)
        return torch.log(p / (1 - p))


class IdentityCodeAE(Autoencoder):
    def __init__(self, shape):
        super().__init__(nn.Flatten(), nn.Unflatten(1, shape), Bernoulli(), int(np.prod(shape)))
        self.blur = Blur()

    def reconstruct(self, x):
        return self.likelihood.mean(self.blur(x))


def test_sharpness_metric_ratios_against_the_data():
    x = images(50, (1, 10, 10), seed=4)
    model = IdentityCodeAE((1, 10, 10))
    ctx = make_ctx(model, x, samplers=("prior",), n_samples=20)
    out = sharpness(ctx)
    data = float(laplace_variance(x).mean())
    assert out["data"] == pytest.approx(data)
    rec = float(laplace_variance(ctx.reconstructions("test")).mean())
    assert out["recon"] == pytest.approx(rec) and out["ratio_recon"] == pytest.approx(rec / data)
    assert out["ratio_recon"] < 0.5  # a box-blurred reconstruction is clearly blurrier than the data
    assert out["prior"] == pytest.approx(float(laplace_variance(ctx.samples("prior", 20)).mean()))


# -- probe --------------------------------------------------------------------------------------------------------
class LinearAE(Autoencoder):
    def __init__(self, shape, d, seed=0):
        torch.manual_seed(seed)
        enc = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), d))
        dec = nn.Sequential(nn.Linear(d, int(np.prod(shape))), nn.Unflatten(1, shape))
        super().__init__(enc, dec, Bernoulli(), d)


def test_probe_is_near_chance_on_codes_unrelated_to_labels():
    g = torch.Generator().manual_seed(5)
    xtr, xte = images(2000, (1, 6, 6), seed=5), images(1000, (1, 6, 6), seed=6)
    ytr, yte = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (1000,), generator=g)
    ctx = make_ctx(LinearAE((1, 6, 6), 8), xte, xtr, yte, ytr)
    out = probe(ctx)
    assert abs(out["accuracy"] - 0.1) < 0.05  # 1000 test labels: chance 0.1, std 0.0095
    assert out["chance"] == pytest.approx(np.bincount(yte.numpy()).max() / 1000)


def test_probe_finds_labels_that_the_codes_carry_and_caps_the_training_set():
    g = torch.Generator().manual_seed(7)

    def labelled(n):
        y = torch.randint(0, 10, (n,), generator=g)
        x = images(n, (1, 6, 6), seed=n) // 4
        x[:, 0, 0, :] = 0
        x[torch.arange(n), 0, 0, y % 6] = 255  # the class shows in the image, so a linear code carries it
        x[:, 0, 1, 0] = (y // 6 * 255).to(torch.uint8)
        return x, y

    (xtr, ytr), (xte, yte) = labelled(3000), labelled(500)
    out = probe(make_ctx(LinearAE((1, 6, 6), 16), xte, xtr, yte, ytr), max_train=1000)
    assert out["accuracy"] > 0.9
    assert out["fit"]["n_train"] == 1000


# -- NLL ----------------------------------------------------------------------------------------------------------
class LinearGaussianVAE(VAE):
    """z ~ N(0, I), x | z ~ N(W z + b, sigma^2 I), W with orthogonal columns so the exact posterior is diagonal."""

    def __init__(self, shape=(1, 2, 3), d=2, sigma=0.2, seed=0, var_scale=1.0):
        D = int(np.prod(shape))
        g = np.random.default_rng(seed)
        q, _ = np.linalg.qr(g.normal(size=(D, d)))
        self.W = q * np.array([0.3, 0.15])[:d]
        self.b = np.full(D, 0.5)
        self.sigma, self.shape, self.var_scale = sigma, shape, var_scale
        dec = nn.Linear(d, D)
        with torch.no_grad():
            dec.weight.copy_(torch.tensor(self.W))
            dec.bias.copy_(torch.tensor(self.b))
        super().__init__(nn.Identity(), nn.Sequential(dec, nn.Unflatten(1, shape)), Gaussian(sigma), d)

    def encode(self, x):
        w, s2 = torch.tensor(self.W, dtype=x.dtype), self.sigma**2
        var = 1.0 / (1.0 + (w * w).sum(0) / s2)  # posterior variance per dimension (W^T W diagonal)
        mean = var * ((x.flatten(1) - torch.tensor(self.b, dtype=x.dtype)) @ w) / s2
        return Encoding(mean, (var * self.var_scale).log().expand_as(mean))

    def exact_log_px(self, x: np.ndarray) -> np.ndarray:
        cov = self.W @ self.W.T + self.sigma**2 * np.eye(len(self.b))
        return stats.multivariate_normal(self.b, cov).logpdf(x.reshape(len(x), -1))


def test_nll_is_exact_with_the_exact_posterior():
    from aebench.metrics.likelihood import nll

    model = LinearGaussianVAE()
    x = images(200, (1, 2, 3), seed=8)
    out = nll(make_ctx(model, x), k=3)
    ref = -model.exact_log_px(x.double().numpy() / 255.0).mean()
    assert out["nats"] == pytest.approx(ref, abs=1e-4)
    assert out["neg_elbo"] == pytest.approx(ref, abs=1e-4) and abs(out["gap"]) < 1e-4
    assert out["bits_per_dim"] == pytest.approx(ref / (6 * math.log(2)))


def test_nll_with_a_wrong_posterior_is_an_upper_bound_that_tightens_with_k():
    from aebench.metrics.likelihood import nll

    model = LinearGaussianVAE(var_scale=3.0)
    x = images(200, (1, 2, 3), seed=9)
    ref = -model.exact_log_px(x.double().numpy() / 255.0).mean()
    ctx = make_ctx(model, x)
    one, many = nll(ctx, k=1), nll(ctx, k=500)
    assert one["nats"] > ref + 0.1  # the ELBO's gap for a posterior 3x too wide
    assert ref - 0.01 < many["nats"] < ref + 0.05
    assert many["nats"] == nll(ctx, k=500)["nats"]  # seeded: reruns give the same estimate
    assert nll(ctx, k=5, max_images=50)["setup"] == {"k": 5, "n_images": 50}


# -- evaluate(): needs, not applicable, key names --------------------------------------------------------------------
def test_evaluate_records_not_applicable_with_reasons_and_writes_keys():
    x = images(60, (1, 4, 4))
    ctx = make_ctx(LinearAE((1, 4, 4), 3), x, samplers=("prior",), n_samples=30,
                   info={"params": 10, "train_seconds": 4.0, "epochs": 2})
    res = evaluate(ctx, [("nll", {}), ("probe", {}), ("active_units", {}), ("kl_w2", {}), ("sharpness", {}),
                         ("cost", {})])
    assert set(res["not_applicable"]) == {"nll", "probe"}
    assert "deterministic" in res["not_applicable"]["nll"] and "labels" in res["not_applicable"]["probe"]
    v = res["values"]
    assert {"active_units/count", "kl_w2/kl", "kl_w2/w2", "sharpness/prior", "sharpness/ratio_recon"} <= set(v)
    assert v["cost/params"] == 10 and v["cost/seconds_per_epoch"] == 2.0
    assert "nll/nats" not in v and "active_units/variances" in res["details"]


def test_key_directions():
    assert key_direction("fid/prior") == "min"
    assert key_direction("fid/precision_my-sampler") == "max"
    assert key_direction("fid/recall_recon") == "max"
    assert key_direction("sharpness/ratio_prior") == "max" and key_direction("sharpness/data") is None
    assert key_direction("probe/accuracy") == "max" and key_direction("probe/chance") is None
    assert key_direction("nll/nats") == "min" and key_direction("unknown/x") is None


def test_metrics_run_with_blas_on_half_the_torch_threads():
    """numpy's BLAS pool is capped while a metric runs (on a busy machine it stalls beside torch's threads),
    and restored after."""
    from threadpoolctl import threadpool_info

    from aebench.metrics.base import blas_threads

    def blas() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas()
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with blas_threads():
            assert blas() and set(blas()) == {2}
    finally:
        torch.set_num_threads(threads)
    assert blas() == before
