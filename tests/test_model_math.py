"""The models' mathematics against independent references: autograd Jacobians, Monte-Carlo estimates,
naive double loops, and the statistics of the corruptions and samplers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from aebench.models.backbones import conv, mlp
from aebench.models.base import TrainSettings, build_model
from aebench.models.contractive import contractive_penalty
from aebench.models.denoising import corrupt
from aebench.models.jacobian import hutchinson_frobenius, jacobian_frobenius, single_sigmoid_layer
from aebench.models.samplers import GMMSampler
from aebench.models.vae import gaussian_kl, log_normal
from aebench.models.wae import WAE_SCALES, imq_mmd


def reference_frobenius(fn, x: torch.Tensor) -> torch.Tensor:
    """||J||_F^2 per sample from torch.autograd.functional.jacobian, one sample at a time."""
    out = []
    for b in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda xb: fn(xb.unsqueeze(0)).squeeze(0), x[b])
        out.append(jac.pow(2).sum())
    return torch.stack(out)


# -- contractive penalty ---------------------------------------------------------------------------------
def test_contractive_penalty_matches_autograd_jacobian_for_an_mlp():
    torch.manual_seed(0)
    encoder, _ = mlp((1, 5, 5), 3, 3, hidden=[16, 8], activation="tanh")
    x = torch.rand(7, 1, 5, 5)
    h, penalty = contractive_penalty(encoder, x, fast_path=True)  # not one sigmoid layer: the general path
    assert torch.allclose(penalty, reference_frobenius(encoder, x), rtol=1e-5, atol=1e-7)
    assert torch.allclose(h, encoder(x))
    penalty.sum().backward()  # differentiable: the model trains through it
    weights = [p for n, p in encoder.named_parameters() if n.endswith("weight")]  # the last bias has no effect on J
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in weights)


def test_sigmoid_fast_path_matches_autograd_jacobian_and_the_general_path():
    torch.manual_seed(1)
    encoder, _ = mlp((1, 1, 10), 4, 4, hidden=[], code_activation="sigmoid")
    assert isinstance(single_sigmoid_layer(encoder), nn.Linear)
    x = torch.rand(9, 1, 1, 10) * 4 - 2
    _, fast = contractive_penalty(encoder, x, fast_path=True)
    _, general = contractive_penalty(encoder, x, fast_path=False)
    ref = reference_frobenius(encoder, x)
    assert torch.allclose(fast, ref, rtol=1e-5, atol=1e-8)
    assert torch.allclose(general, ref, rtol=1e-5, atol=1e-8)
    with_hidden, _ = mlp((1, 1, 10), 4, 4, hidden=[8], code_activation="sigmoid")
    assert single_sigmoid_layer(with_hidden) is None


def test_contractive_penalty_is_exact_for_a_conv_encoder_in_eval_mode():
    torch.manual_seed(2)
    encoder, _ = conv((1, 16, 16), 3, 3, channels=[2, 3, 2, 2])
    encoder.train()
    encoder(torch.rand(8, 1, 16, 16))  # give batch norm some running statistics
    encoder.eval()
    x = torch.rand(4, 1, 16, 16)
    assert torch.allclose(jacobian_frobenius(encoder, x), reference_frobenius(encoder, x), rtol=1e-4, atol=1e-6)


def test_training_mode_batch_norm_jacobian_holds_the_batch_statistics_fixed():
    """The reference: the same network in eval mode with its running statistics set to this batch's."""
    torch.manual_seed(3)
    encoder, _ = conv((1, 16, 16), 3, 3, channels=[2, 3, 2, 2])
    x = torch.rand(5, 1, 16, 16)
    encoder.train()
    penalty = jacobian_frobenius(encoder, x, create_graph=False)
    running = [m.running_mean.clone() for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(r, torch.zeros_like(r)) for r in running)  # the Jacobian pass left them alone

    stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: stats.__setitem__(m, (i[0].mean((0, 2, 3)),
                                                                            i[0].var((0, 2, 3), unbiased=False))))
             for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        encoder(x)
    for h in hooks:
        h.remove()
    for m, (mean, var) in stats.items():
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
    encoder.eval()
    assert torch.allclose(penalty, reference_frobenius(encoder, x), rtol=1e-4, atol=1e-6)


def test_contractive_hutchinson_estimator_is_unbiased():
    torch.manual_seed(8)
    encoder, _ = mlp((1, 4, 4), 3, 3, hidden=[8], activation="tanh")
    x = torch.rand(3, 1, 4, 4)
    exact = reference_frobenius(encoder, x)
    with torch.no_grad():
        draws = torch.stack([contractive_penalty(encoder, x, estimator="hutchinson")[1] for _ in range(4000)])
    se = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - exact).abs() < 4 * se).all()


def test_contractive_ae_loss_adds_lam_times_the_penalty():
    torch.manual_seed(4)
    model = build_model("contractive-ae", (1, 4, 4), 3, {"lam": 0.5}, "mlp", {"hidden": [8]})
    x = torch.rand(6, 1, 4, 4)
    terms = model.loss(x)
    ref = reference_frobenius(model.encoder, x).mean()
    assert torch.allclose(terms["contractive"], ref, rtol=1e-5)
    assert torch.allclose(terms["loss"], terms["reconstruction"] + 0.5 * ref, rtol=1e-5)


# -- VAE family ------------------------------------------------------------------------------------------
def test_analytic_kl_matches_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g) * 0.5
    from aebench.models.base import Encoding

    analytic = gaussian_kl(Encoding(mean, logvar)).sum(1)
    n = 200_000
    z = mean + torch.exp(0.5 * logvar) * torch.randn(n, 3, 4, generator=g)
    samples = log_normal(z, mean, logvar) - log_normal(z)  # log q(z|x) - log p(z), per draw
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(n)
    assert ((mc - analytic).abs() < 4 * se + 1e-4).all(), (mc, analytic, se)


def _vae_pair(k: int):
    torch.manual_seed(5)
    vae = build_model("vae", (1, 4, 4), 2, {}, "mlp", {"hidden": [8]})
    iwae = build_model("iwae", (1, 4, 4), 2, {"k": k}, "mlp", {"hidden": [8]})
    iwae.load_state_dict(vae.state_dict())
    return vae, iwae


def test_iwae_with_one_sample_is_the_single_sample_elbo_with_the_same_noise():
    vae, iwae = _vae_pair(1)
    x = torch.rand(5, 1, 4, 4)
    torch.manual_seed(11)
    loss_iwae = iwae.loss(x)["loss"]
    torch.manual_seed(11)  # the VAE draws the same eps: the same z
    enc = vae.encode(x)
    z = enc.mean + enc.std * torch.randn_like(enc.std)
    rec = vae.likelihood.nll(vae.decode(z), x)
    elbo = -rec + log_normal(z) - log_normal(z, enc.mean, enc.logvar)
    assert torch.allclose(loss_iwae, -elbo.mean(), rtol=1e-5)
    torch.manual_seed(11)
    assert torch.allclose(vae.loss(x)["reconstruction"], rec.mean(), rtol=1e-5)


def test_iwae_k1_equals_the_vae_loss_in_expectation_and_larger_k_is_tighter():
    vae, iwae = _vae_pair(1)
    _, iwae50 = _vae_pair(50)
    x = torch.rand(2, 1, 4, 4).repeat(4000, 1, 1, 1)  # many draws of the same two images
    torch.manual_seed(0)
    with torch.no_grad():
        v, i1, i50 = (float(m.loss(x)["loss"]) for m in (vae, iwae, iwae50))
    assert abs(v - i1) < 0.02 * abs(v), (v, i1)
    assert i50 < i1  # the IWAE bound with k=50 is tighter (a smaller negative bound)


def test_beta_vae_weights_the_kl_by_beta_four_by_default():
    model = build_model("beta-vae", (1, 4, 4), 2, {}, "mlp", {"hidden": [8]})
    assert model.config.beta == 4.0
    terms = model.loss(torch.rand(3, 1, 4, 4))
    assert torch.allclose(terms["loss"], terms["reconstruction"] + 4.0 * terms["kl"])


# -- WAE -------------------------------------------------------------------------------------------------
def naive_mmd(a: torch.Tensor, b: torch.Tensor, scales=WAE_SCALES) -> float:
    """The unbiased IMQ MMD^2, written as plain loops."""
    d = a.shape[1]

    def k(u, v):
        return sum(2 * d * s / (2 * d * s + float((u - v).pow(2).sum())) for s in scales)

    n, m = len(a), len(b)
    xx = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_matches_a_naive_double_loop():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    assert float(imq_mmd(a, b)) == pytest.approx(naive_mmd(a, b), rel=1e-10)


def test_mmd_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    g = torch.Generator().manual_seed(1)
    same = [float(imq_mmd(torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g))) for _ in range(20)]
    shifted = float(imq_mmd(torch.randn(200, 8, generator=g) + 1.0, torch.randn(200, 8, generator=g)))
    mean_same = sum(same) / len(same)
    assert abs(mean_same) < 0.005  # unbiased: averages to 0
    assert max(abs(s) for s in same) < 0.05
    assert shifted > 0.3 and shifted > 10 * max(abs(s) for s in same)


def test_wae_gan_trains_its_discriminator_with_its_own_optimizer():
    torch.manual_seed(6)
    model = build_model("wae-gan", (1, 4, 4), 2, {"lam": 0.0, "disc_hidden": [8]}, "mlp", {"hidden": [8]})
    opt_ae, opt_disc = model.configure_optimizers(TrainSettings(lr=1e-3))
    disc_ids = {id(p) for p in model.discriminator.parameters()}
    assert not disc_ids & {id(p) for group in opt_ae.param_groups for p in group["params"]}
    assert opt_disc.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert any(k.startswith("discriminator.") for k in model.state_dict())
    before = [p.clone() for p in model.discriminator.parameters()]
    terms = model.train_step(torch.rand(8, 1, 4, 4), [opt_ae, opt_disc])
    assert {"reconstruction", "adversarial", "discriminator"} <= set(terms)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters()))
    # with lam = 0 the codes ignore the adversary, and the discriminator learns to tell them from N(0, I)
    optimizers = model.configure_optimizers(TrainSettings(lr=2e-2))
    for _ in range(200):
        terms = model.train_step(torch.rand(64, 1, 4, 4) * 0.1, optimizers)
    assert float(terms["discriminator"]) < 2 * math.log(2) * 0.9


# -- RAE ---------------------------------------------------------------------------------------------------
def test_rae_l2_decays_only_the_decoder_and_reports_the_penalty():
    model = build_model("rae", (1, 4, 4), 2, {"lam": 0.01, "beta": 0.5}, "mlp", {"hidden": [8]})
    (opt,) = model.configure_optimizers(TrainSettings(weight_decay=0.001))
    enc_group, dec_group = opt.param_groups
    assert enc_group["weight_decay"] == pytest.approx(0.001) and dec_group["weight_decay"] == pytest.approx(0.011)
    assert {id(p) for p in dec_group["params"]} == {id(p) for p in model.decoder.parameters()}
    x = torch.rand(5, 1, 4, 4)
    terms = {k: v.detach() for k, v in model.loss(x).items()}
    norm = sum(float(p.detach().pow(2).sum()) for p in model.decoder.parameters())
    assert float(terms["decoder_l2"]) == pytest.approx(0.5 * 0.01 * norm, rel=1e-5)
    z = model.encode(x).mean.detach()
    assert float(terms["latent_norm"]) == pytest.approx(float(0.5 * z.pow(2).sum(1).mean()), rel=1e-5)
    total = terms["reconstruction"] + 0.5 * terms["latent_norm"] + terms["decoder_l2"]
    assert torch.allclose(terms["loss"], total)


def test_rae_gradient_penalty_estimates_the_decoder_jacobian_norm_without_bias():
    torch.manual_seed(7)
    _, decoder = mlp((1, 3, 3), 2, 2, hidden=[6], activation="tanh")
    z = torch.randn(3, 2)
    exact = reference_frobenius(decoder, z)
    assert torch.allclose(jacobian_frobenius(decoder, z), exact, rtol=1e-5)
    draws = torch.stack([hutchinson_frobenius(decoder, z, create_graph=False) for _ in range(4000)])
    se = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - exact).abs() < 4 * se).all()
    model = build_model("rae", (1, 4, 4), 2, {"regularizer": "gp"}, "mlp", {"hidden": [8]})
    terms = model.loss(torch.rand(4, 1, 4, 4))
    assert "gradient_penalty" in terms and "decoder_l2" not in terms
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


# -- sparse and denoising ---------------------------------------------------------------------------------
def test_sparse_ae_penalises_the_l1_norm_of_the_code():
    model = build_model("sparse-ae", (1, 4, 4), 3, {"lam": 0.2}, "mlp", {"hidden": [8]})
    x = torch.rand(5, 1, 4, 4)
    terms = model.loss(x)
    l1 = model.encode(x).mean.abs().sum(1).mean()
    assert torch.allclose(terms["sparsity"], l1)
    assert torch.allclose(terms["loss"], terms["reconstruction"] + 0.2 * l1)


def test_corruption_statistics():
    torch.manual_seed(0)
    ones = torch.ones(100, 1, 40, 50)  # 200,000 pixels: a standard error of about 0.001 on fractions
    masked = corrupt(ones, "masking", 0.3)
    assert set(masked.unique().tolist()) <= {0.0, 1.0}
    assert float((masked == 0).float().mean()) == pytest.approx(0.3, abs=0.005)

    half = torch.full((100, 1, 40, 50), 0.5)
    noisy = corrupt(half, "gaussian", 0.2)
    assert float((noisy - half).std()) == pytest.approx(0.2, rel=0.01)
    assert float((noisy - half).mean()) == pytest.approx(0.0, abs=0.002)

    sp = corrupt(half, "salt_pepper", 0.2)
    assert float((sp != 0.5).float().mean()) == pytest.approx(0.2, abs=0.005)
    assert float((sp == 1).float().mean()) == pytest.approx(0.1, abs=0.004)
    assert float((sp == 0).float().mean()) == pytest.approx(0.1, abs=0.004)
    for kind in ("gaussian", "masking", "salt_pepper"):
        assert torch.equal(corrupt(half, kind, 0.0), half)


def test_denoising_ae_reconstructs_the_clean_image():
    """With every pixel masked the encoder sees zeros, so the loss must be the decoder's error against clean x."""
    model = build_model("denoising-ae", (1, 4, 4), 2, {"level": 1.0}, "mlp", {"hidden": [8]})
    x = torch.rand(5, 1, 4, 4)
    expected = model.likelihood.nll(model.decode(model.encode(torch.zeros_like(x)).mean), x).mean()
    assert torch.allclose(model.loss(x)["reconstruction"], expected)


# -- the GMM sampler -----------------------------------------------------------------------------------------
def test_gmm_sampler_fits_clusters_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-5.0, 0.0], [5.0, 3.0]])
    codes = torch.cat([c + 0.3 * torch.randn(500, 2, generator=g) for c in centres])
    a = GMMSampler().fit(codes).sample(4000, torch.Generator().manual_seed(1))
    b = GMMSampler().fit(codes).sample(4000, torch.Generator().manual_seed(1))
    assert a.dtype == torch.float32 and a.shape == (4000, 2)
    assert torch.equal(a, b)
    left, right = a[a[:, 0] < 0], a[a[:, 0] >= 0]
    assert len(left) / len(a) == pytest.approx(0.5, abs=0.05)
    assert torch.allclose(left.mean(0), centres[0], atol=0.1) and torch.allclose(right.mean(0), centres[1], atol=0.1)
    assert float(left.std(0).mean()) == pytest.approx(0.3, rel=0.15)


@pytest.mark.parametrize("codes", [torch.rand(3, 4), torch.ones(20, 3), torch.eye(8)[:, :3]])
def test_gmm_sampler_is_robust_to_few_or_degenerate_codes(codes):
    s = GMMSampler().fit(codes).sample(50, torch.Generator().manual_seed(0))
    assert s.shape == (50, codes.shape[1]) and torch.isfinite(s).all()


def test_bernoulli_nll_equals_torch_bce_with_logits_and_its_gradients_bit_for_bit():
    from torch.func import vmap

    from aebench.models.likelihood import Bernoulli, bce_with_logits

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 1, 5, 5, generator=g) * 8).requires_grad_(True)
    logits.data[0, 0, 0, :3] = torch.tensor([0.0, 40.0, -40.0])  # the kink, and saturated pixels
    target = torch.rand(6, 1, 5, 5, generator=g).requires_grad_(True)
    ref = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    ours = bce_with_logits(logits, target)
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-6)
    torch.testing.assert_close(Bernoulli().nll(logits, target), ref.flatten(1).sum(1), rtol=1e-6, atol=1e-5)
    w = torch.randn(6, 1, 5, 5, generator=g)
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad((ours * w).sum(), (logits, target)),
                                                  torch.autograd.grad((ref * w).sum(), (logits, target)),
                                                  strict=True))
    # second derivatives (the leapfrog models differentiate through the likelihood) and vmap (stacked training)
    x64, t64 = logits.detach().double().requires_grad_(True), target.detach().double()
    (g_ours,) = torch.autograd.grad(Bernoulli().nll(logits.float(), target.detach()).sum(), logits, create_graph=True)
    (h_ours,) = torch.autograd.grad(g_ours.pow(2).sum(), logits)
    (g_ref,) = torch.autograd.grad(nn.functional.binary_cross_entropy_with_logits(x64, t64, reduction="sum"), x64,
                                   create_graph=True)
    (h_ref,) = torch.autograd.grad(g_ref.pow(2).sum(), x64)
    torch.testing.assert_close(h_ours.double(), h_ref, rtol=1e-5, atol=1e-6)
    stacked = [t.detach().unsqueeze(0).repeat(3, 1, 1, 1, 1) for t in (logits, target)]
    assert torch.equal(vmap(bce_with_logits)(*stacked)[1], ours.detach())
