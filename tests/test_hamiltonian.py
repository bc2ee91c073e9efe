"""The Hamiltonian VAEs against independent references: the harmonic oscillator's closed-form trajectory,
autograd Jacobians (volume), torch.linalg (the metric), autograd of an independently written log p(x, z), and
quadrature of the exact marginal likelihood of a 1-D latent model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aebench.errors import AebenchError
from aebench.models.base import TrainSettings, build_model
from aebench.models.hamiltonian import (
    HVAEConfig,
    MetricNet,
    RHVAEConfig,
    generalized_leapfrog,
    leapfrog,
    potential_grad,
    tempering_schedule,
)
from aebench.models.hamiltonian_metric import Metric
from aebench.models.rhvae_sampler import RHVAESampler

D64 = torch.float64


def anharmonic(z: torch.Tensor) -> tuple[torch.Tensor, None]:
    """dU/dz of U(z) = sum z^4 / 4 + log cosh(z_1 + z_2): a non-quadratic, coupled potential."""
    s = torch.tanh(z[:, :1] + z[:, 1:2])
    return z.pow(3) + torch.cat([s, s, torch.zeros_like(z[:, 2:])], 1), None


def random_metric(n: int = 7, d: int = 3, seed: int = 0, lam: float = 0.1, temperature: float = 1.3) -> Metric:
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, d, d, generator=g, dtype=D64).tril()
    low.diagonal(dim1=1, dim2=2).copy_(torch.rand(n, d, generator=g, dtype=D64) + 0.5)
    return Metric(torch.randn(n, d, generator=g, dtype=D64), low @ low.transpose(1, 2), temperature, lam)


# -- the standard leapfrog --------------------------------------------------------------------------------
def test_leapfrog_follows_the_harmonic_oscillator_to_second_order_and_conserves_energy():
    torch.manual_seed(0)
    omega = torch.tensor([0.5, 1.0, 2.0], dtype=D64)
    z0, rho0 = torch.randn(4, 3, dtype=D64), torch.randn(4, 3, dtype=D64)
    exact_z = z0 * torch.cos(omega) + rho0 / omega * torch.sin(omega)  # at t = 1
    exact_rho = -z0 * omega * torch.sin(omega) + rho0 * torch.cos(omega)
    energy = lambda z, r: 0.5 * (omega.pow(2) * z.pow(2) + r.pow(2)).sum(1)  # noqa: E731
    errors = []
    for n in (50, 100):
        z, rho, _ = leapfrog(z0, rho0, lambda z: (omega.pow(2) * z, None), 1.0 / n, n)
        errors.append(max((z - exact_z).abs().max(), (rho - exact_rho).abs().max()))
        assert (energy(z, rho) - energy(z0, rho0)).abs().max() < 2e-3 * energy(z0, rho0).max()
    assert errors[0] < 2e-3
    assert 3.6 < errors[0] / errors[1] < 4.4  # halving eps quarters the error: a second-order integrator


@pytest.mark.parametrize("tempered", [False, True])
def test_leapfrog_is_volume_preserving_and_reversible(tempered: bool):
    beta0 = 0.3
    betas = tempering_schedule(math.sqrt(beta0), 4) if tempered else None

    def step(state: torch.Tensor) -> torch.Tensor:
        z, rho, _ = leapfrog(state[None, :3], state[None, 3:], anharmonic, 0.2, 4, betas)
        return torch.cat([z, rho], 1)[0]

    state = torch.tensor([0.3, -0.8, 1.1, 0.5, 0.2, -1.0], dtype=D64)
    det = torch.linalg.det(torch.autograd.functional.jacobian(step, state))
    assert float(det) == pytest.approx(beta0 ** 1.5 if tempered else 1.0, rel=1e-10)  # beta_0^(d/2), d = 3
    assert betas is None or (float(betas[0]) == pytest.approx(math.sqrt(beta0)) and float(betas[-1]) == 1.0)
    if not tempered:
        out = step(state)
        back = step(torch.cat([out[:3], -out[3:]]))
        assert torch.allclose(torch.cat([back[:3], -back[3:]]), state, atol=1e-12)


def test_potential_gradient_is_autograd_of_an_independently_written_log_joint():
    torch.manual_seed(0)
    model = build_model("hvae", (1, 4, 4), 3, {}, "mlp", {"hidden": [16]}).double()
    x = (torch.rand(5, 1, 4, 4) > 0.5).double()
    z = torch.randn(5, 3, dtype=D64)

    def neg_log_joint(zb: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        logits = model.decoder(zb[None]).flatten()
        log_px = (xb.flatten() * F.logsigmoid(logits) + (1 - xb.flatten()) * F.logsigmoid(-logits)).sum()
        return -log_px + 0.5 * zb.pow(2).sum() + 1.5 * math.log(2 * math.pi)

    ref = torch.stack([torch.autograd.functional.jacobian(lambda zb, xb=xb: neg_log_joint(zb, xb), zb)
                       for zb, xb in zip(z, x)])
    for create_graph in (False, True):
        grad, nll = potential_grad(model, x, z.clone().requires_grad_(create_graph), create_graph)
        assert torch.allclose(grad, ref, atol=1e-10)
        assert torch.allclose(nll + 0.5 * z.pow(2).sum(1) + 1.5 * math.log(2 * math.pi),
                              torch.stack([neg_log_joint(z[b], x[b]) for b in range(5)]), atol=1e-10)
        assert grad.requires_grad == create_graph


# -- the RHVAE metric and the generalised leapfrog ----------------------------------------------------------
def test_metric_is_spd_and_its_inverse_and_log_det_match_torch_linalg():
    metric = random_metric()
    z = torch.randn(6, 3, dtype=D64, generator=torch.Generator().manual_seed(1))
    geo = metric.at(z)
    naive = torch.stack([sum(m * torch.exp(-(zb - c).pow(2).sum() / 1.3**2)
                             for c, m in zip(metric.centroids, metric.flat.view(-1, 3, 3))) + 0.1 * torch.eye(3)
                         for zb in z])
    assert torch.allclose(geo.ginv, naive, atol=1e-12)
    assert torch.allclose(geo.ginv, geo.ginv.transpose(1, 2)) and (torch.linalg.eigvalsh(geo.ginv) > 0).all()
    assert torch.allclose(geo.g, torch.linalg.inv(naive), atol=1e-10)
    assert torch.allclose(geo.logdet_g, -torch.linalg.slogdet(naive).logabsdet, atol=1e-10)
    rho = torch.randn(6, 3, dtype=D64)
    basis = torch.stack([geo.momentum(torch.eye(3, dtype=D64)[j].expand(6, 3)) for j in range(3)], 2)
    assert torch.allclose(basis @ basis.transpose(1, 2), geo.g, atol=1e-10)  # C^-T C^-1 = G: rho ~ N(0, G)
    assert torch.allclose(geo.quad(rho), torch.einsum("bi,bij,bj->b", rho, naive, rho))


def test_metric_network_outputs_spd_matrices_from_its_cholesky_heads():
    torch.manual_seed(0)
    net = MetricNet(6, 3, [5]).double()
    x = torch.randn(4, 6, dtype=D64)
    m = net(x)
    low = torch.linalg.cholesky(m)  # unique factor with a positive diagonal
    h = net.body(x)
    assert torch.allclose(m, m.transpose(1, 2)) and (torch.linalg.eigvalsh(m) > 0).all()
    assert torch.allclose(low.diagonal(dim1=1, dim2=2), net.diag(h).exp())
    rows, cols = torch.tril_indices(3, 3, offset=-1)
    assert torch.allclose(low[:, rows, cols], net.lower(h))


def test_metric_gradients_match_autograd():
    metric = random_metric(seed=2)
    z = torch.randn(5, 3, dtype=D64, generator=torch.Generator().manual_seed(3))
    rho = torch.randn(5, 3, dtype=D64)
    zg = z.clone().requires_grad_(True)
    ginv = metric.inverse(zg)
    (g_logdet,) = torch.autograd.grad(-torch.linalg.slogdet(ginv).logabsdet.sum(), zg, retain_graph=True)
    (g_quad,) = torch.autograd.grad(torch.einsum("bi,bij,bj->b", rho, ginv, rho).sum(), zg)
    geo = metric.at(z)
    assert torch.allclose(geo.grad_logdet_g, g_logdet, atol=1e-10)
    assert torch.allclose(geo.grad_quad(rho), g_quad, atol=1e-10)


@pytest.mark.parametrize("tempered", [False, True])
def test_generalized_leapfrog_reduces_to_leapfrog_under_the_identity_metric(tempered: bool):
    identity = Metric(torch.randn(4, 3, dtype=D64), torch.zeros(4, 3, 3, dtype=D64), 1.0, 1.0)  # G = I
    betas = tempering_schedule(math.sqrt(0.5), 5) if tempered else None
    z0, rho0 = torch.randn(6, 3, dtype=D64), torch.randn(6, 3, dtype=D64)
    z, rho, _ = leapfrog(z0, rho0, anharmonic, 0.1, 5, betas)
    gz, grho, _, geo = generalized_leapfrog(z0, rho0, anharmonic, identity, 0.1, 5, betas)
    assert torch.allclose(gz, z, atol=1e-13) and torch.allclose(grho, rho, atol=1e-13)
    assert torch.allclose(geo.logdet_g, torch.zeros(6, dtype=D64))


def test_generalized_leapfrog_is_symplectic_reversible_and_conserves_energy_under_a_varying_metric():
    metric = random_metric(n=5, d=2, seed=4, lam=0.3, temperature=1.0)
    quadratic = lambda z: (z, None)  # noqa: E731  U = |z|^2 / 2

    def step(state: torch.Tensor, eps: float = 0.05, n: int = 4) -> torch.Tensor:
        z, rho, _, _ = generalized_leapfrog(state[None, :2], state[None, 2:], quadratic, metric, eps, n,
                                            fixed_point_steps=40)
        return torch.cat([z, rho], 1)[0]

    def energy(state: torch.Tensor) -> torch.Tensor:
        geo = metric.at(state[None, :2])
        return 0.5 * (state[:2].pow(2).sum() + geo.logdet_g[0] + geo.quad(state[None, 2:])[0])

    state = torch.tensor([0.4, -0.7, 0.9, 0.3], dtype=D64)
    jac = torch.autograd.functional.jacobian(step, state)
    assert float(torch.linalg.det(jac)) == pytest.approx(1.0, abs=1e-9)
    out = step(state)
    back = step(torch.cat([out[:2], -out[2:]]))
    assert torch.allclose(torch.cat([back[:2], -back[2:]]), state, atol=1e-10)
    assert float((out[:2] - state[:2]).abs().max()) > 0.05  # it moved
    drift = [abs(float(energy(step(state, 0.2 / m, 5 * m)) - energy(state))) for m in (1, 2)]
    assert drift[0] < 0.05 and 3.5 < drift[0] / drift[1] < 4.5  # an O(eps^2) energy error


# -- the models' importance-sampled likelihood against quadrature --------------------------------------------
def exact_log_marginal(model, x: torch.Tensor) -> torch.Tensor:
    """log int p(x | z) N(z; 0, 1) dz for a 1-D latent, by the trapezoid rule on [-12, 12]."""
    grid = torch.linspace(-12, 12, 6001, dtype=D64)
    with torch.no_grad():
        nll = torch.stack([model.likelihood.nll(model.decode(grid[:, None]), xb.expand(len(grid), *xb.shape))
                           for xb in x])  # (B, G)
    log_f = -nll - 0.5 * grid.pow(2) - 0.5 * math.log(2 * math.pi)
    dz = float(grid[1] - grid[0])
    return torch.logsumexp(log_f, 1) + math.log(dz)  # the integrand is ~1e-31 at the ends: no end correction


def tiny_1d(name: str, params: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, (1, 1, 4), 1, params, "mlp", {"hidden": [8]}).double()
    model.eval()
    return model


def check_importance_sampling(model, x: torch.Tensor, k: int = 10_000) -> None:
    torch.manual_seed(1)
    log_w = model.log_importance_weights(x, k)  # (k, B)
    estimate = torch.logsumexp(log_w, 0) - math.log(k)
    w = torch.exp(log_w - log_w.max(0).values)
    rel_se = w.std(0) / w.mean(0) / math.sqrt(k)  # standard error of log mean(w), to first order
    exact = exact_log_marginal(model, x)
    assert ((estimate - exact).abs() < 5 * rel_se + 1e-3).all(), (estimate, exact, rel_se)
    assert (rel_se < 0.05).all()  # tight enough that a missing log-det term (>= 0.3 nats here) would fail
    # the loss is the mean of -log w in expectation (its entropy and gamma terms are closed form); 8 batches
    # of k/8 copies give its standard error
    torch.manual_seed(2)
    with torch.no_grad():
        loss = torch.stack([torch.stack([model.loss(xb.expand(k // 8, *xb.shape))["loss"] for _ in range(8)])
                            for xb in x])  # (B, 8)
    se = (loss.var(1) / 8 + log_w.var(0) / k).sqrt()
    assert ((loss.mean(1) + log_w.mean(0)).abs() < 5 * se).all(), (loss.mean(1), -log_w.mean(0), se)
    assert (-loss.mean(1) < exact).all()


def test_hvae_importance_weights_estimate_the_exact_marginal_likelihood():
    model = tiny_1d("hvae", {"eps_lf": 0.25, "n_lf": 3, "beta_zero": 0.3})
    x = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1], [1, 1, 1, 1]], dtype=D64).view(3, 1, 1, 4)
    z0 = torch.randn(50, 1, dtype=D64)
    zk, _, _ = model.flow(x[:1].expand(50, 1, 1, 4), z0, torch.randn_like(z0), create_graph=False)
    assert (zk - z0).abs().mean() > 0.1  # the dynamics move the sample: the Jacobian bookkeeping matters
    check_importance_sampling(model, x)


def test_rhvae_importance_weights_estimate_the_exact_marginal_likelihood():
    model = tiny_1d("rhvae", {"eps_lf": 0.05, "n_lf": 3, "metric_hidden": [4], "metric_points": 8,
                              "fixed_point_steps": 30})
    g = torch.Generator().manual_seed(5)
    model.remember(torch.randn(8, 1, generator=g, dtype=D64), torch.rand(8, 1, 1, generator=g, dtype=D64) * 3)
    geo = model.stored_metric().at(torch.linspace(-2, 2, 5, dtype=D64)[:, None])
    assert float(geo.logdet_g.max() - geo.logdet_g.min()) > 0.5  # a metric that really varies
    x = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1], [1, 1, 1, 1]], dtype=D64).view(3, 1, 1, 4)
    z0 = torch.randn(50, 1, dtype=D64)
    zk = model.flow(x[:1].expand(50, 1, 1, 4), z0, torch.randn_like(z0), model.stored_metric(), False)[0]
    assert (zk - z0).abs().mean() > 0.1
    check_importance_sampling(model, x, k=4000)


# -- training-side details ------------------------------------------------------------------------------
def test_learned_step_size_and_temperature_get_gradients_and_configs_are_checked():
    torch.manual_seed(0)
    model = build_model("hvae", (1, 4, 4), 2, {"learn_eps_lf": True, "learn_beta_zero": True, "eps_lf": 0.05},
                        "mlp", {"hidden": [8]})
    assert model.eps_lf.item() == pytest.approx(0.05) and model.beta_zero.item() == pytest.approx(0.3)
    model.loss(torch.rand(4, 1, 4, 4))["loss"].backward()
    assert model.log_eps_lf.grad is not None and model.beta_zero_logit.grad.abs() > 0
    fixed = build_model("hvae", (1, 4, 4), 2, {}, "mlp", {"hidden": [8]})
    assert "log_eps_lf" not in dict(fixed.named_parameters()) and "log_eps_lf" in fixed.state_dict()
    for bad in ({"n_lf": 0}, {"eps_lf": 0.0}, {"beta_zero": 1.5}, {"learn_beta_zero": True, "beta_zero": 1.0}):
        with pytest.raises(AebenchError):
            HVAEConfig(**bad)
    for bad in ({"temperature": 0.0}, {"regularization": -1.0}, {"metric_points": 0}, {"fixed_point_steps": 0}):
        with pytest.raises(AebenchError):
            RHVAEConfig(**bad)


def test_rhvae_keeps_the_last_training_centroids_in_a_ring_buffer():
    model = build_model("rhvae", (1, 4, 4), 2, {"metric_points": 5, "metric_hidden": [8]}, "mlp", {"hidden": [8]})
    assert float(model.stored_metric().at(torch.zeros(1, 2)).logdet_g) == pytest.approx(-2 * math.log(1.01), rel=1e-5)
    c = torch.arange(14.0).view(7, 2)
    model.remember(c[:3], torch.eye(2).expand(3, 2, 2))
    model.remember(c[3:], torch.eye(2).expand(4, 2, 2))
    assert int(model.metric_count) == 7
    assert sorted(model.stored_metric().centroids[:, 0].tolist()) == [4.0, 6.0, 8.0, 10.0, 12.0]
    model.train()
    model.train_step(torch.rand(3, 1, 4, 4), model.configure_optimizers(TrainSettings()))
    assert int(model.metric_count) == 10


# -- the sampler ------------------------------------------------------------------------------------------
def trained_rhvae():
    torch.manual_seed(0)
    model = build_model("rhvae", (1, 4, 4), 2, {"metric_points": 32, "metric_hidden": [8], "eps_lf": 0.01},
                        "mlp", {"hidden": [8]})
    opt = model.configure_optimizers(TrainSettings(lr=3e-3))
    for _ in range(3):
        model.train_step((torch.rand(16, 1, 4, 4) > 0.5).float(), opt)
    return model.eval()


def test_rhvae_sampler_is_deterministic_finite_and_applies_only_to_rhvae():
    model = trained_rhvae()
    sampler = RHVAESampler(mcmc_steps_nbr=3, n_lf=3, eps_lf=0.05, batch_size=7).fit(torch.zeros(5, 2), model)
    a = sampler.sample(20, torch.Generator().manual_seed(0))
    b = sampler.sample(20, torch.Generator().manual_seed(0))
    c = sampler.sample(20, torch.Generator().manual_seed(1))
    assert a.shape == (20, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sampler.applies_to(model) is None
    vae = build_model("vae", (1, 4, 4), 2, {}, "mlp", {"hidden": [8]})
    assert "RHVAE" in sampler.applies_to(vae)
    with pytest.raises(AebenchError):
        RHVAESampler().fit(torch.zeros(5, 2), vae)
    for bad in ({"mcmc_steps_nbr": 0}, {"n_lf": 0}, {"eps_lf": -0.1}, {"beta_zero": 0.0}):
        with pytest.raises(AebenchError):
            RHVAESampler(**bad)


def test_rhvae_sampler_draws_from_the_volume_element():
    """One centroid, tiny lambda: sqrt(det G^-1(z)) ~ exp(-(z - c)^2 / (2 T^2)), i.e. N(c, T^2) in 1-D."""
    model = build_model("rhvae", (1, 1, 4), 1, {"metric_points": 1, "metric_hidden": [4], "temperature": 0.8,
                                                "regularization": 1e-12}, "mlp", {"hidden": [4]})
    model.remember(torch.tensor([[0.5]]), torch.tensor([[[2.0]]]))
    sampler = RHVAESampler(mcmc_steps_nbr=40, n_lf=5, eps_lf=0.25).fit(torch.zeros(1, 1), model)
    z = sampler.sample(2000, torch.Generator().manual_seed(0)).double()
    assert float(z.mean()) == pytest.approx(0.5, abs=0.07)  # standard errors: 0.018 (mean), 3% (variance)
    assert float(z.var()) == pytest.approx(0.64, rel=0.12)


def naive_inverse_metric(z: torch.Tensor, centroids: torch.Tensor, factors: torch.Tensor, temperature: float,
                         lam: float) -> torch.Tensor:
    """G^-1(z) = sum_i M_i exp(-|z - c_i|^2 / T^2) + lambda I, term by term from the definition, (B, d, d)."""
    w = torch.exp(-(z[:, None, :] - centroids[None]).pow(2).sum(-1) / temperature**2)  # (B, N)
    return (w[:, :, None, None] * factors[None]).sum(1) + lam * torch.eye(z.shape[1], dtype=z.dtype)


def test_metric_terms_and_their_gradients_match_autograd_of_the_naive_formulas():
    """What the generalised leapfrog backpropagates through in training (factors and centroids with gradients),
    against autograd of autograd of the definition; the in-place path outside autograd gives the same values."""
    g = torch.Generator().manual_seed(7)
    low = torch.randn(6, 3, 3, generator=g, dtype=D64).tril().requires_grad_(True)
    centroids = torch.randn(6, 3, generator=g, dtype=D64).requires_grad_(True)
    z = torch.randn(4, 3, generator=g, dtype=D64).requires_grad_(True)
    rho, u, v = (torch.randn(4, 3, generator=g, dtype=D64) for _ in range(3))
    eye = torch.eye(3, dtype=D64)

    def terms(closed_form: bool) -> list[torch.Tensor]:
        factors = low @ low.transpose(1, 2) + 0.5 * eye
        if closed_form:
            geo = Metric(centroids, factors, 1.3, 0.1).at(z)
            return [geo.logdet_g, geo.quad(rho), geo.grad_logdet_g, geo.grad_quad(rho)]
        ginv = naive_inverse_metric(z, centroids, factors, 1.3, 0.1)
        logdet = -torch.linalg.slogdet(ginv).logabsdet
        quad = torch.einsum("bi,bij,bj->b", rho, ginv, rho)
        (grad_logdet,) = torch.autograd.grad(logdet.sum(), z, create_graph=True)
        (grad_quad,) = torch.autograd.grad(quad.sum(), z, create_graph=True)
        return [logdet, quad, grad_logdet, grad_quad]

    fast, naive = terms(True), terms(False)
    for a, b in zip(fast, naive):
        assert torch.allclose(a, b, atol=1e-10)
    objective = lambda t: t[0].sum() + t[1].sum() + (t[2] * u).sum() + (t[3] * v).sum()  # noqa: E731
    grads_fast = torch.autograd.grad(objective(fast), [low, centroids, z])
    grads_naive = torch.autograd.grad(objective(naive), [low, centroids, z])
    for a, b in zip(grads_fast, grads_naive):
        assert torch.allclose(a, b, atol=1e-9)
    with torch.no_grad():  # the evaluation path: kernel matrix and products built in place
        geo = Metric(centroids.detach(), (low @ low.transpose(1, 2) + 0.5 * eye).detach(), 1.3, 0.1).at(z.detach())
        for a, b in zip([geo.logdet_g, geo.quad(rho), geo.grad_logdet_g, geo.grad_quad(rho)], naive):
            assert torch.allclose(a, b.detach(), atol=1e-10)


def reference_rhvae_chains(centroids: torch.Tensor, factors: torch.Tensor, temperature: float, lam: float, n: int,
                           steps: int, n_lf: int, eps: float, beta_zero: float, generator: torch.Generator
                           ) -> tuple[torch.Tensor, float]:
    """pythae's hmc_sampling written out from the paper, one chain at a time: U(z) = -log sqrt(det G^-1(z)) by
    slogdet of the term-by-term G^-1 and dU/dz by autograd; Caterini et al.'s tempering per trajectory. The
    draws come from ``generator`` in the sampler's order (start indices, then per step momenta and uniforms).
    Returns the chains' last states and the acceptance rate."""
    def potential(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            u = -0.5 * torch.linalg.slogdet(naive_inverse_metric(z[None], centroids, factors, temperature,
                                                                lam)[0]).logabsdet
            (grad,) = torch.autograd.grad(u, z)
        return u.detach(), grad

    def sqrt_beta(k: int) -> float:
        return 1.0 / ((1.0 - 1.0 / math.sqrt(beta_zero)) * (k / n_lf) ** 2 + 1.0 / math.sqrt(beta_zero))

    start = torch.randint(len(centroids), (n,), generator=generator)
    chains = [centroids[i].clone() for i in start]
    accepted = 0
    for _ in range(steps):
        rhos = torch.randn(n, centroids.shape[1], generator=generator, dtype=centroids.dtype) / math.sqrt(beta_zero)
        uniforms = torch.rand(n, generator=generator, dtype=centroids.dtype)
        for b in range(n):
            z, rho = chains[b], rhos[b]
            u0, grad = potential(z)
            h0 = u0 + 0.5 * rho.pow(2).sum()
            for k in range(n_lf):
                rho = rho - 0.5 * eps * grad
                z = z + eps * rho
                u, grad = potential(z)
                rho = (rho - 0.5 * eps * grad) * (sqrt_beta(k) / sqrt_beta(k + 1))
            h = u + 0.5 * rho.pow(2).sum()
            if bool(torch.isfinite(h)) and float(uniforms[b].log()) < float(h0 - h):
                chains[b], accepted = z, accepted + 1
    return torch.stack(chains), accepted / (n * steps)


@pytest.mark.parametrize("beta_zero", [1.0, 0.5])
def test_rhvae_sampler_matches_a_reference_hmc_on_the_volume_element(beta_zero: float):
    """The vectorised sampler (closed-form gradients, the gradient reused between MCMC steps, batches) against
    a one-chain-at-a-time reference with autograd gradients, on the same draws, in float64."""
    torch.manual_seed(0)
    model = build_model("rhvae", (1, 4, 4), 2, {"metric_points": 12, "metric_hidden": [8], "temperature": 0.8},
                        "mlp", {"hidden": [8]}).double()
    g = torch.Generator().manual_seed(5)
    low = torch.randn(12, 2, 2, generator=g, dtype=D64).tril()
    model.remember(1.5 * torch.randn(12, 2, generator=g, dtype=D64),
                   low @ low.transpose(1, 2) + 0.1 * torch.eye(2, dtype=D64))
    centroids, factors = model.metric_centroids, model.metric_factors
    sampler = RHVAESampler(mcmc_steps_nbr=6, n_lf=4, eps_lf=1.2, beta_zero=beta_zero, batch_size=7)
    out = sampler.fit(torch.zeros(5, 2), model).sample(17, torch.Generator().manual_seed(3))  # batches 7, 7, 3
    gen = torch.Generator().manual_seed(3)
    refs, rates = [], []
    for size in (7, 7, 3):
        ref, rate = reference_rhvae_chains(centroids, factors, 0.8, model.config.regularization, size, 6, 4, 1.2,
                                           beta_zero, gen)
        refs.append(ref)
        rates.append(rate)
    ref = torch.cat(refs)
    assert 0.2 < sum(rates) / 3 < 0.8  # both branches of the Metropolis step are exercised
    assert (ref - centroids[:, None]).abs().sum(-1).min(0).values.max() > 1.0  # the chains left the centroids
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), ref, rtol=1e-6, atol=1e-6)


def test_rhvae_sampler_defaults_are_pythaes():
    sampler = RHVAESampler()
    assert (sampler.mcmc_steps_nbr, sampler.n_lf, sampler.eps_lf, sampler.beta_zero) == (100, 15, 0.03, 1.0)
    config = pytest.importorskip("pythae.samplers").RHVAESamplerConfig()
    assert (sampler.mcmc_steps_nbr, sampler.n_lf, sampler.eps_lf, sampler.beta_zero) == (
        config.mcmc_steps_nbr, config.n_lf, config.eps_lf, config.beta_zero)
