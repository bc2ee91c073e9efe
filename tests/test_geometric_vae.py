"""The non-Euclidean latents against independent references: mpmath and scipy Bessel functions, quadrature on
the circle, sphere and disk, Monte-Carlo moments, finite differences, autograd Jacobians and the peer library
pythae; and each model's importance-sampled NLL against the exact marginal by quadrature (2-D latents)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import special, stats

from aebench.errors import AebenchError, SuiteError
from aebench.models.base import build_model
from aebench.models.poincare import (
    WrappedNormal,
    conformal_factor,
    distance,
    expmap,
    expmap0,
    logmap,
    logmap0,
    mobius_add,
)
from aebench.models.sphere_samplers import HypersphereSampler, PoincareSampler
from aebench.models.vmf import VonMisesFisher, log_iv, log_sphere_area

D64 = torch.float64


def scipy_ratio(d: int, k: float) -> float:
    """A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) from scipy's scaled Bessel functions."""
    return float(special.ive(d / 2, k) / special.ive(d / 2 - 1, k))


def vmf(mu, k: float) -> VonMisesFisher:
    mu = torch.as_tensor(mu, dtype=D64)
    return VonMisesFisher(mu / mu.norm(), torch.tensor([k], dtype=D64))


# -- the log Bessel function ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("v,x", [(0, 0.3), (0.5, 2.0), (1, 50.0), (15, 1e4), (63, 0.5), (300, 0.1), (1000, 20.0)])
def test_log_iv_matches_mpmath_including_where_scipy_underflows(v, x):
    ref = float(mpmath.log(mpmath.besseli(v, x, maxterms=10**6)))
    got = float(log_iv(v, torch.tensor([x], dtype=D64)))
    assert got == pytest.approx(ref, rel=1e-10, abs=1e-10)
    xt = torch.tensor([x], dtype=D64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_iv(v, xt).sum(), xt)
    dref = float(mpmath.diff(lambda t: mpmath.log(mpmath.besseli(v, t, maxterms=10**6)), x))
    assert float(grad) == pytest.approx(dref, rel=1e-7, abs=1e-10)


# -- the von Mises-Fisher distribution ---------------------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 3, 10])
@pytest.mark.parametrize("k", [0.5, 5.0, 200.0])
def test_vmf_samples_have_the_mean_resultant_length_and_axis_variances(d, k):
    torch.manual_seed(d)
    mu = torch.randn(d, dtype=D64)
    q = vmf(mu, k)
    z = q.rsample((20_000,))
    assert torch.allclose(z.norm(dim=-1), torch.ones(20_000, dtype=D64), atol=1e-12)
    w = z @ q.loc
    a = scipy_ratio(d, k)
    assert float(q.mean_resultant_length) == pytest.approx(a, rel=1e-10)
    assert abs(float(w.mean()) - a) < 4 * float(w.std()) / math.sqrt(len(w)) + 1e-12
    # E[z] = A mu: the component orthogonal to mu averages to zero
    perp = z - w.unsqueeze(1) * q.loc
    assert float(perp.mean(0).norm()) < 5 * math.sqrt(max(1 - a * a, 1e-12) / len(w))
    var = z.var(0)
    rel = (var - q.axis_variance()).abs() / q.axis_variance()
    assert float(rel.max()) < 0.1, (var, q.axis_variance())


def test_vmf_on_s2_matches_the_closed_form_cdf_of_w():
    """On S^2 the density of w = mu^T z is kappa e^{kappa w} / (2 sinh kappa): a KS test of Wood's sampler."""
    torch.manual_seed(0)
    k = 3.0
    w = (vmf([0.3, -1.0, 0.5], k).rsample((5000,)) @ vmf([0.3, -1.0, 0.5], k).loc).numpy()
    cdf = lambda t: (np.exp(k * (t + 1)) - 1) / (np.exp(2 * k) - 1)  # noqa: E731
    assert stats.kstest(w, cdf).pvalue > 1e-3


def test_vmf_density_integrates_to_one_on_the_circle_and_the_sphere():
    theta = torch.linspace(0, 2 * math.pi, 20_001, dtype=D64)[:-1]
    circle = torch.stack([theta.cos(), theta.sin()], -1)
    for k in (0.5, 8.0, 60.0):
        p = vmf([1.0, 2.0], k).log_prob(circle).exp()
        assert float(p.sum() * 2 * math.pi / len(theta)) == pytest.approx(1.0, abs=1e-9)
    n = 800
    th = (torch.arange(n, dtype=D64) + 0.5) * math.pi / n  # midpoint rule in the polar angle
    ph = torch.arange(2 * n, dtype=D64) * math.pi / n
    t, f = torch.meshgrid(th, ph, indexing="ij")
    sphere = torch.stack([t.sin() * f.cos(), t.sin() * f.sin(), t.cos()], -1)
    for k in (0.5, 8.0, 60.0):
        p = vmf([0.2, -0.4, 1.0], k).log_prob(sphere).exp()
        assert float((p * t.sin()).sum() * (math.pi / n) ** 2) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("d,k", [(2, 1.0), (3, 10.0), (8, 4.0), (32, 50.0)])
def test_vmf_entropy_and_kl_to_uniform_match_monte_carlo_and_pythae(d, k):
    from pythae.models.svae.svae_model import SVAE as PythaeSVAE

    torch.manual_seed(1)
    q = vmf(torch.randn(d, dtype=D64), k)
    z = q.rsample((20_000,))
    log_q = q.log_prob(z)
    se = float(log_q.std()) / math.sqrt(len(log_q))
    assert abs(float(q.entropy()) + float(log_q.mean())) < 4 * se + 1e-9
    kl = float(q.kl_to_uniform())
    assert abs(kl - float(log_q.mean() + log_sphere_area(d))) < 4 * se + 1e-9
    assert kl == pytest.approx(-float(q.entropy()) + log_sphere_area(d), rel=1e-12)
    peer = PythaeSVAE._compute_kl(None, d, torch.tensor([[k]], dtype=D64))
    assert kl == pytest.approx(float(peer), rel=1e-6, abs=1e-9)


def test_vmf_kl_is_finite_and_exact_for_large_kappa_and_dimension():
    """Closed form against mpmath at 50 digits where float64 Bessel values overflow or underflow (scipy's ive is
    good to ~1e-11 relative, which kappa A_d(kappa) multiplies by kappa: hence rel 1e-7 at kappa = 1e6)."""
    for d, k in ((512, 1.0), (512, 3e4), (64, 1e6)):
        mp_k, v = mpmath.mpf(k), mpmath.mpf(d) / 2
        with mpmath.workdps(50):
            i0, i1 = mpmath.besseli(v - 1, mp_k, maxterms=10**6), mpmath.besseli(v, mp_k, maxterms=10**6)
            ref = (mp_k * i1 / i0 + (v - 1) * mpmath.log(mp_k) - v * mpmath.log(2 * mpmath.pi) - mpmath.log(i0)
                   + mpmath.log(2) + v * mpmath.log(mpmath.pi) - mpmath.loggamma(v))
        kappa = torch.tensor([k], dtype=D64, requires_grad=True)
        kl = VonMisesFisher(torch.ones(d, dtype=D64) / math.sqrt(d), kappa).kl_to_uniform()
        assert float(kl.detach()) == pytest.approx(float(ref), rel=1e-7)
        (grad,) = torch.autograd.grad(kl, kappa)
        assert math.isfinite(float(grad)) and float(grad) > 0  # the KL grows with kappa


def test_reparameterised_gradients_match_finite_differences_of_the_closed_form():
    """E[(a^T z)^2] = A/kappa |a|^2 + (1 - d A/kappa)(a^T mu)^2. The mu-gradient needs g_rep only; the
    kappa-gradient needs g_rep + g_cor (the rejection step's score term) and g_rep alone is biased here."""
    torch.manual_seed(2)
    d, k0, n = 2, 3.0, 50_000
    a = torch.tensor([0.6, -0.8], dtype=D64)

    def expect(m: torch.Tensor, k: float) -> torch.Tensor:
        mu = m / m.norm()
        r = scipy_ratio(d, k)
        return r / k * a.dot(a) + (1 - d * r / k) * a.dot(mu) ** 2

    m = torch.tensor([0.5, 0.4], dtype=D64, requires_grad=True)
    kappa = torch.tensor([k0], dtype=D64, requires_grad=True)
    q = VonMisesFisher(m / m.norm(), kappa)
    z, score = q.rsample_with_score((n,))
    f = (z @ a) ** 2
    g_m, g_rep = torch.autograd.grad(f.mean(), (m, kappa), retain_graph=True)
    (g_cor,) = torch.autograd.grad((f.detach() * score).mean(), kappa)
    ref_m = torch.autograd.functional.jacobian(lambda mm: expect(mm, k0), m.detach())  # about (-0.03, 0.035)
    h = 1e-4
    ref_k = float((expect(m.detach(), k0 + h) - expect(m.detach(), k0 - h)) / (2 * h))  # about -0.065
    assert torch.allclose(g_m, ref_m, atol=0.015), (g_m, ref_m)  # ~5 standard errors at n = 50k
    assert float(g_rep + g_cor) == pytest.approx(ref_k, abs=1.5e-3)  # sd about 2e-4
    assert abs(float(g_rep) - ref_k) > 5e-3  # g_rep's bias here is about 0.015


# -- the Poincaré ball -----------------------------------------------------------------------------------------------
def ball_points(n: int, d: int, c: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return expmap0(torch.randn(n, d, generator=g, dtype=D64), c)


@pytest.mark.parametrize("c", [0.7, 1.0, 2.0])
def test_poincare_maps_are_inverse_and_distances_match_the_closed_form(c):
    x, y = ball_points(50, 4, c, 0), ball_points(50, 4, c, 1)
    u = logmap(x, y, c)
    assert torch.allclose(expmap(x, u, c), y, atol=1e-9)
    assert torch.allclose(logmap(x, expmap(x, 0.3 * u, c), c), 0.3 * u, atol=1e-9)
    assert torch.allclose(logmap0(expmap0(0.5 * u, c), c), 0.5 * u, atol=1e-9)
    assert torch.allclose(expmap(torch.zeros_like(u), u, c), expmap0(u, c), atol=1e-12)
    assert torch.allclose(mobius_add(-x, x, c), torch.zeros_like(x), atol=1e-12)
    # d(x, y) = arcosh(1 + 2c|x - y|^2 / ((1 - c|x|^2)(1 - c|y|^2))) / sqrt c, and |u|_x = lambda_x |u|
    ref = torch.acosh(1 + 2 * c * (x - y).pow(2).sum(-1) / ((1 - c * x.pow(2).sum(-1)) * (1 - c * y.pow(2).sum(-1))))
    assert torch.allclose(distance(x, y, c), ref / math.sqrt(c), atol=1e-8)
    assert torch.allclose((conformal_factor(x, c) * u).norm(dim=-1), ref / math.sqrt(c), atol=1e-8)


@pytest.mark.parametrize("c,loc,scale", [(1.0, [0.0, 0.0], [1.0, 1.0]), (0.7, [0.4, -0.5], [0.6, 1.3])])
def test_wrapped_normal_density_integrates_to_one_on_the_disk(c, loc, scale):
    """Quadrature of p(z) lambda_z^2 over the disk (polar grid, radius r = tanh(sqrt c rho / 2) / sqrt c)."""
    q = WrappedNormal(torch.tensor(loc, dtype=D64), torch.tensor(scale, dtype=D64), c)
    n_rho, n_phi, rho_max = 1500, 360, 16.0
    rho = (torch.arange(n_rho, dtype=D64) + 0.5) * rho_max / n_rho
    phi = torch.arange(n_phi, dtype=D64) * 2 * math.pi / n_phi
    sc = math.sqrt(c)
    r = torch.tanh(sc * rho / 2) / sc
    dr = (1 - c * r * r) / 2 * (rho_max / n_rho)
    R, P = torch.meshgrid(r, phi, indexing="ij")
    z = torch.stack([R * P.cos(), R * P.sin()], -1)
    p = q.log_prob(z).exp() * conformal_factor(z, c).squeeze(-1) ** 2
    assert float((p * R * dr.unsqueeze(1)).sum() * 2 * math.pi / n_phi) == pytest.approx(1.0, abs=1e-4)


def test_wrapped_normal_log_density_is_the_change_of_variables_and_matches_pythae():
    """log p(z) = log N(v) - log|det dz/dv| - d log lambda_z for z = loc (+) exp_0(v / 2) (autograd Jacobian)."""
    from pythae.models.pvae.pvae_utils import PoincareBall
    from pythae.models.pvae.pvae_utils import WrappedNormal as PythaeWN

    c, d = 0.7, 3
    loc, scale = ball_points(1, d, c, 3)[0] * 0.8, torch.tensor([0.5, 1.0, 1.5], dtype=D64)
    q = WrappedNormal(loc, scale, c)
    torch.manual_seed(4)
    for v in torch.randn(5, d, dtype=D64) * scale:
        fwd = lambda vv: mobius_add(loc, expmap0(vv / 2, c), c)  # noqa: E731
        z = fwd(v)
        logdet = torch.linalg.slogdet(torch.autograd.functional.jacobian(fwd, v))[1]
        ref = torch.distributions.Normal(0, scale).log_prob(v).sum() - logdet - d * conformal_factor(z, c).log()
        assert float(q.log_prob(z)) == pytest.approx(float(ref), abs=1e-8)
    z = q.rsample((7,))
    peer = PythaeWN(loc.unsqueeze(0), scale.unsqueeze(0), PoincareBall(d, c)).log_prob(z)
    assert torch.allclose(q.log_prob(z), peer.view(7), atol=1e-9)


# -- the models: NLL against the exact marginal ----------------------------------------------------------------------
def tiny(name: str, params: dict | None = None):
    torch.manual_seed(5)
    model = build_model(name, (1, 1, 6), 2, params or {}, "mlp", {"hidden": [8]}).double().eval()
    x = (torch.rand(4, 1, 1, 6, generator=torch.Generator().manual_seed(6)) > 0.5).double()
    return model, x


def log_px_by_quadrature(model, x: torch.Tensor, z: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """log sum_j w_j p(x | z_j) over a quadrature rule (z_j, w_j) of the prior."""
    with torch.no_grad():
        out = model.decode(z)
        nll = torch.stack([model.likelihood.nll(out, xi.expand(len(z), *xi.shape)) for xi in x])
    return torch.logsumexp(-nll + log_weights, dim=1)


def assert_importance_estimate_matches(model, x: torch.Tensor, exact: torch.Tensor, k: int = 20_000) -> None:
    """logsumexp(log w) - log k against the exact log p(x), within 4 standard errors (delta method: the weights'
    relative standard error) plus 2e-3 nats."""
    torch.manual_seed(7)
    log_w = model.log_importance_weights(x, k)
    estimate = torch.logsumexp(log_w, 0) - math.log(k)
    w = (log_w - log_w.max(0).values).exp()
    se = w.std(0) / w.mean(0) / math.sqrt(k)
    assert bool(((estimate - exact).abs() < 4 * se + 2e-3).all()), (estimate, exact, se)
    assert float(exact.max() - exact.min()) > 0.1  # the images differ: a constant would not pass


def test_svae_nll_matches_the_exact_marginal_on_the_circle():
    model, x = tiny("svae")
    theta = torch.arange(4000, dtype=D64) * 2 * math.pi / 4000
    z = torch.stack([theta.cos(), theta.sin()], -1)  # uniform prior: equal weights 1 / n
    exact = log_px_by_quadrature(model, x, z, torch.full((4000,), -math.log(4000), dtype=D64))
    assert_importance_estimate_matches(model, x, exact)


def test_poincare_vae_nll_matches_the_exact_marginal_on_the_disk():
    """p(x) = E_{v ~ N(0, s^2 I)} p(x | exp_0(v / 2)): a grid over v, which never uses the density formula."""
    model, x = tiny("poincare-vae", {"curvature": 0.7, "prior_scale": 1.2})
    s, n = 1.2, 241
    grid = torch.linspace(-7 * s, 7 * s, n, dtype=D64)
    v = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    log_w = torch.distributions.Normal(0, s).log_prob(v).sum(-1) + 2 * math.log(float(grid[1] - grid[0]))
    exact = log_px_by_quadrature(model, x, expmap0(v / 2, 0.7), log_w)
    assert_importance_estimate_matches(model, x, exact)


def test_models_put_their_codes_on_the_manifold_and_validate_params():
    model, x = tiny("svae")
    enc = model.encode(x)
    assert torch.allclose(enc.mean.norm(dim=1), torch.ones(4, dtype=D64))
    q = model.posterior(x)
    assert torch.allclose(enc.logvar.exp(), q.axis_variance()) and bool((q.concentration > 1).all())
    with torch.no_grad():  # generate puts any code on the sphere first
        assert torch.allclose(model.generate(3 * enc.mean), model.reconstruct(x))
    pvae, x = tiny("poincare-vae", {"curvature": 2.0})
    enc = pvae.encode(x)
    assert bool((2.0 * enc.mean.pow(2).sum(1) < 1).all()) and enc.logvar.shape == (4, 2)
    with pytest.raises(SuiteError, match="curvature"):
        tiny("poincare-vae", {"curvature": 0})
    with pytest.raises(SuiteError, match="beta"):
        tiny("svae", {"beta": -1})
    with pytest.raises(AebenchError, match="latent_dim"):
        build_model("svae", (1, 1, 6), 1, {}, "mlp", {"hidden": [8]})


def test_svae_score_correction_keeps_the_loss_value_and_trains():
    model, x = tiny("svae", {"score_correction": True})
    torch.manual_seed(8)
    terms = model.loss(x)
    value = {key: float(term.detach()) for key, term in terms.items()}
    assert value["loss"] == pytest.approx(value["reconstruction"] + value["kl"], rel=1e-12)
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# -- the samplers ----------------------------------------------------------------------------------------------------
def test_hypersphere_sampler_is_uniform_deterministic_and_only_for_the_svae():
    svae, _ = tiny("svae")
    vae = build_model("vae", (1, 1, 6), 3, {}, "mlp", {"hidden": [8]})
    sampler = HypersphereSampler()
    assert sampler.applies_to(svae) is None and "not the hypersphere" in sampler.applies_to(vae)
    sampler.fit(torch.randn(10, 3))
    z = sampler.sample(20_000, torch.Generator().manual_seed(0))
    assert z.dtype == torch.float32 and torch.allclose(z.norm(dim=1), torch.ones(20_000))
    assert torch.equal(z, sampler.sample(20_000, torch.Generator().manual_seed(0)))
    # uniform on S^2: each coordinate is uniform on [-1, 1] (Archimedes)
    assert stats.kstest(z[:, 0].double().numpy(), "uniform", args=(-1, 2)).pvalue > 1e-3


def test_poincare_sampler_draws_the_wrapped_normal_prior_and_only_for_the_poincare_vae():
    pvae, _ = tiny("poincare-vae", {"curvature": 0.7, "prior_scale": 0.8})
    sampler = PoincareSampler()
    assert sampler.applies_to(pvae) is None and "Poincaré" in sampler.applies_to(tiny("svae")[0])
    sampler.fit(torch.zeros(5, 2), pvae)
    z = sampler.sample(20_000, torch.Generator().manual_seed(1))
    assert torch.equal(z, sampler.sample(20_000, torch.Generator().manual_seed(1)))
    # d(0, z) = |v| with v ~ N(0, 0.8^2 I_2): a Rayleigh(0.8) radius
    r = distance(torch.zeros(2, dtype=D64), z.double(), 0.7).numpy()
    assert stats.kstest(r, "rayleigh", args=(0, 0.8)).pvalue > 1e-3
    with pytest.raises(AebenchError, match="needs the model"):
        PoincareSampler().fit(torch.zeros(5, 2))
    with pytest.raises(AebenchError, match="scale"):
        PoincareSampler(scale=0.0)
