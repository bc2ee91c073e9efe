"""Flows, the VampPrior and the flow samplers against independent references: autograd Jacobians, scipy
densities, exact marginal likelihoods of linear-Gaussian decoders (closed form or quadrature)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp
from torch import nn

from aebench.errors import AebenchError
from aebench.models.backbones import Unflatten
from aebench.models.base import build_model
from aebench.models.flow_samplers import IAFSampler, MAFSampler, VampPriorSampler
from aebench.models.flows import MADE, AutoregressiveAffine, AutoregressiveFlow, FlowSequence, Planar, Radial
from aebench.models.likelihood import Gaussian
from aebench.models.vae_flows import VAEIAF, VAEIAFConfig, VAELinNF, VAELinNFConfig
from aebench.models.vamp import VampConfig, VampVAE

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


def jacobians(fn, x: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobians (B, D, D) of a batched map, from torch.autograd.functional.jacobian."""
    return torch.stack([torch.autograd.functional.jacobian(lambda v: fn(v.unsqueeze(0))[0].squeeze(0), xb)
                        for xb in x])


def check_log_det(flow: nn.Module, x: torch.Tensor, inverse: bool = False) -> None:
    fn = flow.inverse if inverse else flow
    _, log_det = fn(x)
    ref = torch.linalg.slogdet(jacobians(fn, x)).logabsdet
    assert torch.allclose(log_det, ref, rtol=1e-7, atol=1e-9), (log_det, ref)


# -- log-determinants ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize("kind", ["planar", "radial", "affine", "gated", "stack", "sequence"])
def test_flow_log_det_matches_autograd_jacobian(kind: str, dim: int):
    torch.manual_seed(dim)
    flow = {"planar": lambda: Planar(dim), "radial": lambda: Radial(dim),
            "affine": lambda: AutoregressiveAffine(dim, [16, 16]),
            "gated": lambda: AutoregressiveAffine(dim, [16], gated=True),
            "stack": lambda: AutoregressiveFlow(dim, n_blocks=3, n_hidden=2, hidden_size=16),
            "sequence": lambda: FlowSequence(dim, ["planar", "radial", "planar"])}[kind]().double()
    x = torch.randn(6, dim, dtype=torch.float64)
    check_log_det(flow, x)
    if hasattr(flow, "inverse"):
        check_log_det(flow, x, inverse=True)
        y, log_det = flow(x)
        back, log_det_inv = flow.inverse(y)
        assert torch.allclose(back, x, atol=1e-10) and torch.allclose(log_det_inv, -log_det, atol=1e-10)


def test_made_is_autoregressive_and_uses_its_inputs():
    torch.manual_seed(0)
    dim = 5
    made = MADE(dim, [32, 32, 32], n_params=2).double()
    x = torch.randn(3, dim, dtype=torch.float64)
    for out in range(2):
        jac = jacobians(lambda v, o=out: (made(v)[o],), x)  # (B, D_out, D_in)
        assert torch.all(jac.triu() == 0), "output i must not depend on inputs i, i+1, ..."
        assert torch.all(jac.tril(-1).abs().sum(0)[torch.tril_indices(dim, dim, -1).unbind()] > 0)
    block = AutoregressiveAffine(dim, [32]).double()
    jac = jacobians(block, x)
    assert torch.all(jac.triu(1) == 0)  # lower triangular, diagonal = the scales
    scale = block.scale_shift(x)[0].exp()
    assert torch.allclose(torch.diagonal(jac, dim1=1, dim2=2), scale)


def test_planar_flow_stays_invertible_for_an_adversarial_u():
    flow = Planar(3).double()
    with torch.no_grad():
        flow.w.copy_(torch.tensor([1.0, 2.0, -1.0]))
        flow.u.copy_(-5 * flow.w)  # w.u = -30: the raw flow would fold space
    assert float((flow.w @ flow.u_hat()).detach()) > -1
    z = torch.linspace(-4, 4, 401, dtype=torch.float64)[:, None] * flow.w / flow.w.norm()
    proj = flow(z)[0] @ flow.w  # f is monotone along w
    assert torch.all(proj.diff() > 0)


# -- the VampPrior ---------------------------------------------------------------------------------------------
def tiny_vamp(k: int = 5, latent: int = 3) -> VampVAE:
    torch.manual_seed(0)
    model = build_model("vamp", (1, 4, 4), latent, {"pseudo_inputs": k}, "mlp", {"hidden": [8]})
    with torch.no_grad():
        model.pseudo_inputs.uniform_(-0.2, 1.2)  # some outside [0, 1], so hardtanh matters
    return model.double()


def test_vamp_prior_density_matches_scipy_mixture():
    model = tiny_vamp()
    u = model.pseudo_inputs.detach().clamp(0, 1)
    h = model.encoder(u).detach()
    mean, var = h[:, :3].numpy(), h[:, 3:].exp().numpy()
    z = torch.randn(7, 3, dtype=torch.float64) * 2
    ref = logsumexp([stats.multivariate_normal(mean[j], np.diag(var[j])).logpdf(z.numpy()) for j in range(5)],
                    axis=0) - math.log(5)
    assert np.allclose(model.log_prior(z).detach().numpy(), ref, rtol=1e-10, atol=1e-10)
    assert model.log_prior(z.view(7, 1, 3)).shape == (7, 1)  # batched (k, B, D) codes


def test_vamp_kl_term_is_the_single_sample_estimate():
    model = tiny_vamp()
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    torch.manual_seed(5)
    terms = model.loss(x)
    torch.manual_seed(5)
    enc = model.encode(x)
    z = enc.mean + enc.std * torch.randn_like(enc.std)
    q = stats.norm(enc.mean.detach().numpy(), enc.std.detach().numpy()).logpdf(z.detach().numpy()).sum(1)
    expected = q - model.log_prior(z).detach().numpy()
    assert math.isclose(float(terms["kl"].detach()), expected.mean(), rel_tol=1e-9)


def test_vamp_pseudo_inputs_leave_batch_norm_running_stats_alone():
    torch.manual_seed(0)
    model = build_model("vamp", (1, 16, 16), 2, {"pseudo_inputs": 6}, "conv", {"channels": [2, 2, 2, 2]})
    reference = copy.deepcopy(model.encoder)
    x = torch.rand(5, 1, 16, 16)
    model.train(), reference.train()
    model.loss(x)
    reference(x)
    ours = [m.running_mean for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    theirs = [m.running_mean for m in reference.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.allclose(a, b) for a, b in zip(ours, theirs))
    assert all(m.momentum == 0.1 for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d))


def test_vamp_prior_sampler_draws_the_mixture_and_refuses_other_models():
    model = tiny_vamp(k=4, latent=2).float()
    sampler = VampPriorSampler()
    assert sampler.applies_to(model) is None
    reason = sampler.applies_to(build_model("vae", (1, 4, 4), 2, {}, "mlp", {"hidden": [8]}))
    assert reason and "VampPrior" in reason
    with pytest.raises(AebenchError):
        VampPriorSampler().fit(torch.zeros(3, 2), None)
    sampler.fit(torch.zeros(3, 2), model)
    z = sampler.sample(200_000, torch.Generator().manual_seed(0))
    assert z.dtype == torch.float32 and z.shape == (200_000, 2)
    comp = model.prior_components()
    mean = comp.mean.detach().double().mean(0)
    second = (comp.mean.detach().double() ** 2 + comp.logvar.detach().double().exp()).mean(0)
    assert torch.allclose(z.double().mean(0), mean, atol=0.02)
    assert torch.allclose(z.double().pow(2).mean(0), second, rtol=0.03)
    again = sampler.sample(50, torch.Generator().manual_seed(0))
    assert torch.equal(again, sampler.sample(50, torch.Generator().manual_seed(0)))
    assert not torch.equal(again, sampler.sample(50, torch.Generator().manual_seed(1)))


# -- importance-sampled NLL against the exact marginal likelihood ---------------------------------------------
def linear_gaussian(latent: int, w: torch.Tensor, b: torch.Tensor, enc_a: torch.Tensor, enc_c: torch.Tensor,
                    logvar: float) -> tuple[nn.Module, nn.Module]:
    """Encoder x -> (A x + c, logvar) and decoder z -> W z + b, shaped (1, 1, d) images."""
    d = w.shape[0]
    enc_lin, dec_lin = nn.Linear(d, 2 * latent).double(), nn.Linear(latent, d).double()
    with torch.no_grad():
        enc_lin.weight.copy_(torch.cat([enc_a, torch.zeros(latent, d, dtype=torch.float64)]))
        enc_lin.bias.copy_(torch.cat([enc_c, torch.full((latent,), logvar, dtype=torch.float64)]))
        dec_lin.weight.copy_(w), dec_lin.bias.copy_(b)
    return nn.Sequential(nn.Flatten(), enc_lin), nn.Sequential(dec_lin, Unflatten((1, 1, d)))


def is_log_px(model, x: torch.Tensor, k: int) -> np.ndarray:
    torch.manual_seed(1)
    log_w = model.log_importance_weights(x, k)
    assert log_w.shape == (k, x.shape[0])
    return (torch.logsumexp(log_w, 0) - math.log(k)).numpy()


SIGMA = 0.7


def test_vamp_importance_sampled_nll_matches_quadrature():
    """1-D latent, linear decoder: log p(x) = log int N(x; w z + b, sigma^2 I) p_vamp(z) dz by quadrature."""
    w = torch.tensor([[1.0], [-0.5], [0.8]], dtype=torch.float64)
    b = torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64)
    a = w.T / (w.pow(2).sum() + SIGMA**2)  # roughly E[z | x]; the posterior std is ~0.45, q's exp(-0.5) ~0.6
    enc, dec = linear_gaussian(1, w, b, a, torch.tensor([-0.3], dtype=torch.float64), -1.0)
    model = VampVAE(enc, dec, Gaussian(SIGMA), 1, VampConfig(pseudo_inputs=3)).double()
    with torch.no_grad():
        model.pseudo_inputs.copy_(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.5, 0.2, 0.9]]).view(3, 1, 1, 3))
    x = torch.tensor([[1.5, -0.8, 0.9], [-1.0, 0.6, -1.1], [0.1, 0.0, 0.2]], dtype=torch.float64).view(3, 1, 1, 3)
    comp = model.prior_components()
    mu, sd = comp.mean.detach().numpy()[:, 0], comp.std.detach().numpy()[:, 0]
    assert np.ptp(mu) > 0.5  # the mixture is not one Gaussian

    z = np.linspace(-12, 12, 48_001)
    log_prior = logsumexp(stats.norm(mu[:, None], sd[:, None]).logpdf(z[None]), axis=0) - math.log(3)
    xs = x.view(3, 3).numpy()
    log_lik = stats.norm(w.numpy()[:, 0][None, :, None] * z + b.numpy()[None, :, None], SIGMA).logpdf(
        xs[:, :, None]).sum(1)
    exact = logsumexp(log_lik + log_prior, axis=1) + math.log(z[1] - z[0])
    std_normal = logsumexp(log_lik + stats.norm.logpdf(z), axis=1) + math.log(z[1] - z[0])
    assert np.abs(exact - std_normal).max() > 0.2  # the prior matters: N(0, 1) would fail the test
    estimate = is_log_px(model, x, 50_000)  # effective sample size ~30k: standard error ~0.004 nats
    assert np.allclose(estimate, exact, atol=0.02), (estimate, exact)


class SignFlipped(nn.Module):
    """A flow reporting the wrong sign of its log-determinant."""

    def __init__(self, flow: nn.Module):
        super().__init__()
        self.inner = flow

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, log_det = self.inner(z)
        return y, -log_det


def exact_linear_gaussian(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """x ~ N(b, W W^T + sigma^2 I) when z ~ N(0, I) and x | z ~ N(W z + b, sigma^2 I)."""
    cov = (w @ w.T).numpy() + SIGMA**2 * np.eye(w.shape[0])
    return stats.multivariate_normal(b.numpy(), cov).logpdf(x.flatten(1).numpy())


@pytest.mark.parametrize("name", ["vae-iaf", "vae-iaf-affine", "vae-linnf"])
def test_flow_vae_importance_sampled_nll_matches_the_closed_form(name: str):
    """2-D latent, linear-Gaussian decoder: log p(x) is a Gaussian density; IS must reach it whatever the flow."""
    torch.manual_seed(0)
    w = torch.tensor([[1.0, 0.3], [-0.5, 0.9], [0.8, -0.4], [0.2, 0.7]], dtype=torch.float64)
    b = torch.tensor([0.2, 0.1, -0.3, 0.0], dtype=torch.float64)
    a = torch.linalg.solve(w.T @ w + SIGMA**2 * torch.eye(2, dtype=torch.float64), w.T)  # roughly E[z | x]
    enc, dec = linear_gaussian(2, w, b, a, -a @ b, 0.5)
    if name == "vae-linnf":
        model = VAELinNF(enc, dec, Gaussian(SIGMA), 2, VAELinNFConfig(flows=["planar", "radial", "planar"]))
    else:
        model = VAEIAF(enc, dec, Gaussian(SIGMA), 2, VAEIAFConfig(n_hidden_in_made=1, hidden_size=8,
                                                                  gated=name == "vae-iaf"))
    model = model.double()
    x = torch.tensor([[1.2, -0.3, 0.5, 0.4], [-0.6, 0.8, -0.9, 0.1]], dtype=torch.float64).view(2, 1, 1, 4)
    exact = exact_linear_gaussian(x, w, b)
    with torch.no_grad():
        assert not torch.allclose(model.flow(torch.zeros(1, 2, dtype=torch.float64))[1], torch.zeros(1).double())
        estimate = is_log_px(model, x, 100_000)  # spread over seeds <= 0.025 nats
        assert np.allclose(estimate, exact, atol=0.05), (estimate, exact)

        flow = model.flow  # the same model with the log-det's sign flipped must miss: the test can fail
        model.flow = SignFlipped(flow)
        wrong = is_log_px(model, x, 100_000)
        assert np.abs(wrong - exact).max() > 0.5
        model.flow = flow
        enc_x = model.encode(x)
        assert torch.allclose(enc_x.mean, flow(model.base_posterior(x).mean)[0])


# -- ex-post flow samplers -------------------------------------------------------------------------------------
SMALL = {"n_hidden_in_made": 1, "hidden_size": 32, "epochs": 15, "batch_size": 100, "lr": 3e-3}


@pytest.mark.parametrize("cls", [MAFSampler, IAFSampler])
def test_flow_sampler_fits_gaussian_codes_deterministically(cls):
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([2.0, -1.0, 0.5])
    chol = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.3, 0.2, 0.5]])
    codes = mean + torch.randn(1000, 3, generator=g) @ chol.T
    state = torch.get_rng_state()
    sampler = cls(**SMALL).fit(codes)
    assert torch.equal(torch.get_rng_state(), state)  # fitting leaves the global RNG alone
    z = sampler.sample(20_000, torch.Generator().manual_seed(1))
    assert z.dtype == torch.float32 and z.shape == (20_000, 3)
    assert torch.allclose(z.mean(0), mean, atol=0.1)
    assert torch.allclose(torch.cov(z.T), chol @ chol.T, atol=0.15)

    again = cls(**SMALL).fit(codes).sample(100, torch.Generator().manual_seed(1))
    assert torch.equal(again, sampler.sample(100, torch.Generator().manual_seed(1)))
    assert not torch.equal(again, sampler.sample(100, torch.Generator().manual_seed(2)))


def test_flow_samplers_train_under_no_grad_and_check_options():
    codes = torch.randn(50, 2)
    with torch.no_grad():  # the evaluation context fits samplers inside no_grad
        MAFSampler(**{**SMALL, "epochs": 1}).fit(codes)
        model = build_model("vae", (1, 4, 4), 2, {}, "mlp", {"hidden": [8]})  # trains on the model's device
        assert IAFSampler(**{**SMALL, "epochs": 1}).fit(codes, model).sample(5, torch.Generator()).shape == (5, 2)
    for bad in ({"epochs": 0}, {"hidden_size": 0}, {"lr": 0.0}, {"n_hidden_in_made": -1}):
        with pytest.raises(AebenchError):
            IAFSampler(**bad)


def test_model_configs_are_checked():
    with pytest.raises(AebenchError, match="flow"):
        VAELinNFConfig(flows=["planar", "sylvester"])
    with pytest.raises(AebenchError):
        VAELinNFConfig(flows=[])
    with pytest.raises(AebenchError, match="pseudo_inputs"):
        VampConfig(pseudo_inputs=0)
    with pytest.raises(AebenchError):
        VAEIAFConfig(n_made_blocks=0)
