"""The VAE variants' mathematics against independent references: torch.distributions densities, exact marginals
of a linear-Gaussian model, exact enumeration of minibatches, scipy, torchmetrics, naive double loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import norm
from torch.distributions import Bernoulli, MultivariateNormal, Normal

from aebench.errors import AebenchError
from aebench.models.base import TrainSettings, build_model
from aebench.models.disentangle import aggregate_log_q, permute_dims
from aebench.models.msssim import default_weights, ms_ssim
from aebench.models.two_stage_sampler import TwoStageSampler
from aebench.models.vae_variants import LearnedGaussian, rbf_mmd
from aebench.registry import SAMPLERS


def bars(n: int = 6, size: int = 6) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size)
    for i in range(n):
        x[i, 0, :, i % (size - 1) : i % (size - 1) + 2] = 1.0
    return x


def tiny(name: str, params: dict | None = None, **kw):
    torch.manual_seed(0)
    return build_model(name, (1, 6, 6), 3, params or {}, "mlp", {"hidden": [16]}, **kw)


# -- exact marginals of a linear-Gaussian model: the shared helper -------------------------------------------
P, SIGMA = 3, 0.5  # observed dimensions, decoder noise


def linear_gaussian(name: str, params: dict | None = None):
    """Model ``name`` made a linear-Gaussian model with 1-D latent: x = w z + b + sigma eps, its encoder set to
    the exact posterior. Returns (model, exact log p(x) function, posterior variance)."""
    torch.manual_seed(1)
    w, b = torch.tensor([0.8, -1.2, 0.5], dtype=torch.float64), torch.tensor([0.1, 0.3, -0.2], dtype=torch.float64)
    post_var = 1.0 / (1.0 + float(w @ w) / SIGMA**2)
    params = dict(params or {})
    if name == "cv-vae":
        params["sigma"] = math.sqrt(post_var)  # the fixed encoder spread is the exact posterior's
    model = build_model(name, (1, 1, P), 1, params, "mlp", {"hidden": []}, "gaussian", {"sigma": SIGMA}).double()
    enc, dec = model.encoder[-1], model.decoder[0]
    with torch.no_grad():
        dec.weight.copy_(w.view(P, 1))
        dec.bias.copy_(b)
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[0] = post_var * w / SIGMA**2  # posterior mean = post_var * w.(x - b) / sigma^2
        enc.bias[0] = -post_var * float(w @ b) / SIGMA**2
        if enc.out_features == 2:
            enc.bias[1] = math.log(post_var)
    cov = torch.outer(w, w) + SIGMA**2 * torch.eye(P, dtype=torch.float64)
    exact = MultivariateNormal(b, covariance_matrix=cov)
    return model, lambda x: exact.log_prob(x.flatten(1)), post_var


WITH_WEIGHTS = ["miwae", "piwae", "ciwae", "disentangled-beta-vae", "factor-vae", "beta-tc-vae", "info-vae",
                "cv-vae", "two-stage-vae"]


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_importance_weights_are_the_exact_marginal_under_the_exact_posterior(name: str):
    """With q(z|x) = p(z|x) every weight p(x, z) / q(z|x) is p(x): log w = log p(x) for every draw."""
    model, log_px, _ = linear_gaussian(name, {"disc_hidden": [4]} if name == "factor-vae" else None)
    model.eval()
    x = torch.randn(5, 1, 1, P, dtype=torch.float64) + 0.3
    log_w = model.log_importance_weights(x, 7)
    assert log_w.shape == (7, 5)
    assert torch.allclose(log_w, log_px(x).expand(7, -1), atol=1e-9)


def test_importance_weights_with_a_wrong_posterior_still_estimate_the_marginal():
    model, log_px, _ = linear_gaussian("miwae")
    with torch.no_grad():
        model.encoder[-1].bias[1] += 1.0  # too wide a posterior: each weight varies, their mean does not
    torch.manual_seed(0)
    x = torch.randn(3, 1, 1, P, dtype=torch.float64)
    log_w = model.log_importance_weights(x, 20_000)
    estimate = torch.logsumexp(log_w, 0) - math.log(20_000)
    assert torch.allclose(estimate, log_px(x), atol=0.02)  # Monte Carlo: the relative sd of w is ~0.5 here
    assert (log_w.std(0) > 0.1).all()


# -- the IWAE family against torch.distributions --------------------------------------------------------------
def reference_log_w(model, x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) by torch.distributions, on the draws the model makes after ``seed``."""
    with torch.no_grad():
        enc = model.encode(x)
        std = (0.5 * enc.logvar).exp()
        torch.manual_seed(seed)
        z = enc.mean + std * torch.randn(k, *enc.mean.shape)
        logits = model.decode(z.flatten(0, 1)).view(k, x.shape[0], -1)
        log_px = Bernoulli(logits=logits).log_prob(x.flatten(1).expand(k, -1, -1)).sum(-1)
        return log_px + Normal(0.0, 1.0).log_prob(z).sum(-1) - Normal(enc.mean, std).log_prob(z).sum(-1)


def seeded_loss(model, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.loss(x)


def test_ciwae_is_the_elbo_at_beta_one_and_the_iwae_bound_at_beta_zero():
    x = bars()
    ref = reference_log_w(tiny("ciwae", {"k": 6}), x, 6, seed=3)
    elbo, iwae = ref.mean(0).mean(), (torch.logsumexp(ref, 0) - math.log(6)).mean()
    for beta, expected in ((1.0, -elbo), (0.0, -iwae), (0.3, -(0.3 * elbo + 0.7 * iwae))):
        terms = seeded_loss(tiny("ciwae", {"k": 6, "beta": beta}), x, seed=3)
        assert torch.allclose(terms["loss"], expected, rtol=1e-5), beta
    assert torch.allclose(terms["neg_elbo"], -elbo, rtol=1e-5) and torch.allclose(terms["neg_iwae"], -iwae, rtol=1e-5)


def test_miwae_with_m_one_is_the_iwae_and_otherwise_the_mean_of_m_bounds():
    x = bars()
    one = seeded_loss(tiny("miwae", {"m": 1, "k": 5}), x, seed=4)["loss"]
    iwae = seeded_loss(tiny("iwae", {"k": 5}), x, seed=4)["loss"]
    assert torch.allclose(one, iwae, rtol=1e-6)
    ref = reference_log_w(tiny("miwae"), x, 6, seed=5).view(3, 2, -1)
    expected = -(torch.logsumexp(ref, 1) - math.log(2)).mean()
    assert torch.allclose(seeded_loss(tiny("miwae", {"m": 3, "k": 2}), x, seed=5)["loss"], expected, rtol=1e-5)


def test_piwae_sends_the_miwae_gradient_to_the_encoder_and_the_iwae_gradient_to_the_decoder():
    x = bars()
    model = tiny("piwae", {"m": 2, "k": 3})
    ref = reference_log_w(model, x, 6, seed=6)
    terms = seeded_loss(model, x, seed=6)
    assert torch.allclose(terms["miwae"], -(torch.logsumexp(ref.view(2, 3, -1), 1) - math.log(3)).mean(), rtol=1e-5)
    assert torch.allclose(terms["iwae"], -(torch.logsumexp(ref, 0) - math.log(6)).mean(), rtol=1e-5)

    torch.manual_seed(7)
    terms = model.loss(x)
    enc, dec = model.encoder_parameters(), model.decoder_parameters()
    g_enc = torch.autograd.grad(terms["miwae"], enc, retain_graph=True)
    g_dec = torch.autograd.grad(terms["iwae"], dec)
    before = [p.detach().clone() for p in (*enc, *dec)]
    optimizers = model.configure_optimizers(TrainSettings(optimizer="sgd", lr=1.0))
    torch.manual_seed(7)
    model.train_step(x, optimizers)
    for p, b, g in zip((*enc, *dec), before, (*g_enc, *g_dec), strict=True):
        assert torch.allclose(p.detach(), b - g, atol=1e-6)


# -- capacity-annealed beta-VAE ---------------------------------------------------------------------------------
def test_capacity_follows_the_linear_schedule_and_survives_a_state_dict_round_trip():
    params = {"beta": 3.0, "c_max": 5.0, "warmup_steps": 10}
    model, x = tiny("disentangled-beta-vae", params), bars()
    optimizers = model.configure_optimizers(TrainSettings())
    for t in range(14):
        terms = seeded_loss(model, x, seed=t)
        assert float(terms["capacity"]) == pytest.approx(5.0 * min(t / 10, 1.0)), t
        model.train_step(x, optimizers)
    assert "steps_done" in model.state_dict() and int(model.state_dict()["steps_done"]) == 14

    resumed = tiny("disentangled-beta-vae", params)
    assert float(seeded_loss(resumed, x, 0)["capacity"]) == 0.0
    resumed.load_state_dict(model.state_dict())
    assert float(seeded_loss(resumed, x, 0)["capacity"]) == 5.0

    model = tiny("disentangled-beta-vae", {**params, "warmup_steps": 20})
    model.steps_done.fill_(5)
    terms = seeded_loss(model, x, seed=9)
    with torch.no_grad():
        enc = model.encode(x)
    kl = torch.distributions.kl_divergence(Normal(enc.mean, (0.5 * enc.logvar).exp()), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(terms["loss"], terms["reconstruction"] + 3.0 * (kl - 1.25).abs().mean(), rtol=1e-5)


# -- FactorVAE ----------------------------------------------------------------------------------------------------
def test_factor_vae_optimisers_each_move_only_their_own_parameters():
    model = tiny("factor-vae", {"disc_hidden": [8, 8]})
    opt_ae, opt_disc = model.configure_optimizers(TrainSettings(lr=0.1))
    disc = {id(p) for p in model.discriminator.parameters()}
    ae = {id(p) for p in model.parameters()} - disc
    assert {id(p) for g in opt_ae.param_groups for p in g["params"]} == ae
    assert {id(p) for g in opt_disc.param_groups for p in g["params"]} == disc
    assert opt_disc.param_groups[0]["betas"] == (0.5, 0.9)

    terms = model.loss(bars())
    (terms["loss"] + terms["discriminator"]).backward()  # every parameter gets a gradient
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    for opt, own in ((opt_ae, ae), (opt_disc, disc)):
        opt.step()
        for n, p in model.named_parameters():
            moved = not torch.equal(p.detach(), snapshot[n])
            assert moved == (id(p) in own and bool(p.grad.abs().sum() > 0)), n
        snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}


def test_factor_vae_train_step_leaves_the_discriminator_to_its_own_term():
    model, x = tiny("factor-vae", {"disc_hidden": [8]}), bars()
    optimizers = model.configure_optimizers(TrainSettings(optimizer="sgd", lr=1.0))
    torch.manual_seed(2)
    terms = model.loss(x)
    expected = torch.autograd.grad(terms["discriminator"], list(model.discriminator.parameters()))
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    torch.manual_seed(2)
    model.train_step(x, optimizers)
    for p, b, g in zip(model.discriminator.parameters(), before, expected, strict=True):
        assert torch.allclose(p.detach(), b - g, atol=1e-6)


def test_permute_dims_shuffles_each_dimension_independently():
    torch.manual_seed(0)
    z = torch.arange(40.0).view(10, 4)
    p = permute_dims(z)
    assert torch.equal(p.sort(0).values, z)
    assert not torch.equal(p, z)


# -- beta-TCVAE estimators against exact mixtures --------------------------------------------------------------
def exact_log_q(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> tuple[float, list[float]]:
    """log q(z) and log q(z_d) of the mixture (1/N) sum_n N(mean_n, diag std_n^2), by scipy."""
    dens = norm.pdf(z.numpy()[None, :], mean.numpy(), std.numpy())  # (N, D)
    return math.log(dens.prod(1).mean()), [math.log(v) for v in dens.mean(0)]


def small_dataset(n: int = 5, d: int = 2):
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(n, d, generator=g, dtype=torch.float64)
    logvar = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.3
    return mean, logvar


def test_mss_is_unbiased_for_q_z_over_every_batch_of_a_small_dataset():
    """Enumerate every ordered batch that holds x_0 first (its own row) and 2 of the 4 others: the mean of the
    MSS estimates of q(z) and of each q(z_d) is the exact mixture density."""
    mean, logvar = small_dataset()
    z = torch.tensor([0.4, -0.7], dtype=torch.float64)
    joint, dims = [], []
    for others in itertools.permutations(range(1, 5), 2):
        idx = torch.tensor([0, *others])
        zb = torch.stack([z, mean[others[0]], mean[others[1]]])  # rows 1, 2 do not enter row 0
        log_qz, log_qz_dims = aggregate_log_q(zb, mean[idx], logvar[idx], 5, "mss")
        joint.append(log_qz[0].exp())
        dims.append(log_qz_dims[0].exp())
    ref_joint, ref_dims = exact_log_q(z, mean, (0.5 * logvar).exp())
    assert float(torch.stack(joint).mean()) == pytest.approx(math.exp(ref_joint), rel=1e-10)
    assert torch.stack(dims).mean(0).tolist() == pytest.approx([math.exp(v) for v in ref_dims], rel=1e-10)


def test_mws_with_the_whole_dataset_as_batch_is_the_exact_density_less_log_n():
    """Chen et al.'s MWS divides by N*B: with B = N it is log q(z) - log N, so its TC exceeds the exact TC by the
    constant (D - 1) log N and its MI by log N (biased, but by constants when the batch is the data set)."""
    mean, logvar = small_dataset(n=4, d=3)
    z = mean + 0.3 * torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_qz, log_qz_dims = aggregate_log_q(z, mean, logvar, 4, "mws")
    for i in range(4):
        ref_joint, ref_dims = exact_log_q(z[i], mean, (0.5 * logvar).exp())
        assert float(log_qz[i]) == pytest.approx(ref_joint - math.log(4), abs=1e-10)
        assert log_qz_dims[i].tolist() == pytest.approx([v - math.log(4) for v in ref_dims], abs=1e-10)
        tc = float(log_qz[i] - log_qz_dims[i].sum())
        assert tc == pytest.approx(ref_joint - sum(ref_dims) + 2 * math.log(4), abs=1e-10)


def test_tc_estimators_refuse_a_dataset_smaller_than_the_batch():
    mean, logvar = small_dataset()
    with pytest.raises(AebenchError, match="dataset_size"):
        aggregate_log_q(mean, mean, logvar, 3, "mss")
    model = tiny("beta-tc-vae")
    assert model.config.dataset_size == 60_000 and model.config.estimator == "mss"
    terms = seeded_loss(model, bars(), seed=0)
    assert torch.allclose(terms["mi"] + terms["tc"] + terms["dimwise_kl"] + terms["reconstruction"],
                          terms["loss"] - 5 * terms["tc"], rtol=1e-5)  # alpha = gamma = 1, beta = 6


# -- MS-SSIM against torchmetrics ---------------------------------------------------------------------------------
def image_pairs(shape, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    x = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), 3, 1)
    return x, (x + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 32, 32), (2, 1, 64, 64), (1, 1, 176, 176)])
@pytest.mark.parametrize("normalize", ["relu", "simple"])
def test_ms_ssim_matches_torchmetrics(shape, normalize):
    tm = pytest.importorskip("torchmetrics.functional.image")
    x, y = image_pairs(shape)
    weights = default_weights(shape[-1])
    assert len(weights) == {28: 2, 32: 2, 64: 3, 176: 5}[shape[-1]]
    ref = tm.multiscale_structural_similarity_index_measure(y, x, data_range=1.0, betas=weights, reduction="none",
                                                            normalize=normalize)
    assert torch.allclose(ms_ssim(y, x, normalize=normalize, border="reflect"), ref, atol=1e-7)


def test_valid_border_ms_ssim_matches_torchmetrics_maps_cropped_to_whole_windows():
    """Wang et al.'s reference averages only whole windows: torchmetrics' contrast terms (already cropped) and
    its full SSIM map cropped by the window's half-width at the last scale."""
    tm = pytest.importorskip("torchmetrics.functional.image")
    x, y = image_pairs((2, 1, 64, 64), seed=1)
    weights, pad, ref = default_weights(64), 5, torch.ones(2, dtype=torch.float64)
    a, b = x, y
    for j, w in enumerate(weights):
        if j < len(weights) - 1:
            _, cs = tm.structural_similarity_index_measure(a, b, data_range=1.0, reduction="none",
                                                           return_contrast_sensitivity=True)
            ref = ref * cs**w
            a, b = torch.nn.functional.avg_pool2d(a, 2), torch.nn.functional.avg_pool2d(b, 2)
        else:
            _, full = tm.structural_similarity_index_measure(a, b, data_range=1.0, reduction="none",
                                                             return_full_image=True)
            ref = ref * full[..., pad:-pad, pad:-pad].flatten(1).mean(1) ** w
    assert torch.allclose(ms_ssim(x, y), ref, atol=1e-7)


def test_ms_ssim_is_one_for_identical_images_and_has_finite_gradients_when_terms_go_negative():
    x, _ = image_pairs((2, 1, 28, 28))
    assert torch.allclose(ms_ssim(x, x), torch.ones(2, dtype=torch.float64))
    y = (1 - x).requires_grad_()  # anti-correlated: negative contrast-structure terms
    value = ms_ssim(x, y, normalize="relu")
    value.sum().backward()
    assert torch.isfinite(y.grad).all() and (value >= 0).all()
    with pytest.raises(AebenchError, match="smaller than the window"):
        ms_ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


# -- InfoVAE's MMD, the learned-variance likelihood ----------------------------------------------------------------
def test_rbf_mmd_matches_a_naive_double_loop():
    g = torch.Generator().manual_seed(0)
    z, p = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * 3 * 0.7**2))

    zz = sum(k(z[i], z[j]) for i in range(6) for j in range(6) if i != j) / 30
    pp = sum(k(p[i], p[j]) for i in range(5) for j in range(5) if i != j) / 20
    zp = sum(k(z[i], p[j]) for i in range(6) for j in range(5)) / 30
    assert float(rbf_mmd(z, p, 0.7)) == pytest.approx(zz + pp - 2 * zp, rel=1e-12)


def test_two_stage_vae_learns_gamma_with_a_gaussian_decoder_and_keeps_bernoulli_as_the_vae():
    model = tiny("two-stage-vae", likelihood="gaussian", likelihood_options={"sigma": 0.3})
    assert isinstance(model.likelihood, LearnedGaussian)
    assert float(model.log_gamma.detach()) == pytest.approx(2 * math.log(0.3))
    out, x = torch.rand(4, 1, 6, 6), torch.rand(4, 1, 6, 6)
    ref = Normal(out, model.log_gamma.exp().sqrt()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(model.likelihood.nll(out, x), -ref, rtol=1e-5)
    optimizers = model.configure_optimizers(TrainSettings(lr=1e-2))
    for _ in range(5):
        terms = model.train_step(bars(), optimizers)
    assert "gamma" in terms and float(model.log_gamma.detach()) != pytest.approx(2 * math.log(0.3))
    assert not hasattr(tiny("two-stage-vae"), "log_gamma")


def test_cv_vae_encoder_has_one_output_per_dimension_and_a_fixed_variance():
    model = tiny("cv-vae", {"sigma": 0.5})
    assert model.encoder[-1].out_features == 3
    enc = model.encode(bars())
    assert torch.allclose(enc.logvar, torch.full_like(enc.mean, 2 * math.log(0.5)))


# -- the two-stage sampler ---------------------------------------------------------------------------------------
def test_two_stage_sampler_reproduces_a_correlated_gaussian_and_is_deterministic():
    assert SAMPLERS.get("two-stage") is TwoStageSampler
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[2.0, 1.2], [1.2, 1.0]])
    codes = torch.randn(1000, 2, generator=g) @ torch.linalg.cholesky(cov).T + torch.tensor([3.0, -1.0])
    options = {"hidden": 32, "epochs": 30, "batch_size": 100, "lr": 1e-2}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide MLP: thread hand-offs cost more than they save on a shared CPU
    try:
        sampler = TwoStageSampler(**options).fit(codes, None)
        again = TwoStageSampler(**options).fit(codes, None)
    finally:
        torch.set_num_threads(threads)
    assert sampler.applies_to(tiny("ae")) is None
    s = sampler.sample(4000, torch.Generator().manual_seed(1))
    assert s.shape == (4000, 2) and s.dtype == torch.float32
    # against the codes' own moments: Monte Carlo with 4000 draws (sd of a mean ~0.02, of a covariance entry
    # ~0.04) plus the error of a 300-step fit
    assert torch.allclose(s.mean(0), codes.mean(0), atol=0.15)
    assert torch.allclose(torch.cov(s.T), torch.cov(codes.T), atol=0.2)
    assert torch.equal(s, again.sample(4000, torch.Generator().manual_seed(1)))
    with pytest.raises(AebenchError, match="epochs"):
        TwoStageSampler(epochs=0)
