"""Quantised models against hand computations and independent references: nearest codes vs torch.cdist, the
straight-through gradient and the VQ losses on a 3-code codebook worked by hand, the EMA step by hand, pythae's
Quantizer, HRQ-VAE's KL vs torch.distributions, the PixelCNN's causality by autograd, and codebook perplexity
on a known histogram."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aebench.data.base import ImageSet
from aebench.errors import AebenchError
from aebench.metrics.base import EvalContext, NotApplicable
from aebench.metrics.codebook import codebook, perplexity
from aebench.models.base import build_model
from aebench.models.likelihood import Bernoulli
from aebench.models.pixelcnn import PixelCNN1d, PixelCNNSampler
from aebench.models.vq import HRQVAE, VQVAE, HRQVAEConfig, VQVAEConfig, nearest, residual_decompose, straight_through

E = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # 3 codes of dim 2
# 4 code vectors as 2 "images" of 2 positions each; nearest codes 0, 1, 1, 2 (squared errors .02 .05 .02 .08)
Z = torch.tensor([[0.1, 0.1, 0.9, 0.2], [1.1, -0.1, 0.2, 0.8]])
Z_Q = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])


class Fixed(nn.Module):
    """An 'encoder' whose output is a leaf tensor we set: its .grad is d loss / d z_e."""

    def __init__(self, z: torch.Tensor):
        super().__init__()
        self.z = nn.Parameter(z.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.z


def tiny_vq(**cfg) -> VQVAE:
    model = VQVAE(Fixed(Z), nn.Identity(), Bernoulli(), 4, VQVAEConfig(num_embeddings=3, embedding_dim=2, **cfg))
    with torch.no_grad():
        model.codebook.copy_(E)
        if model.config.use_ema:
            model.embed_sum.copy_(E)
    return model


def test_quantisation_picks_the_nearest_code_as_cdist():
    g = torch.Generator().manual_seed(0)
    z, book = torch.randn(200, 3, generator=g), torch.randn(11, 3, generator=g)
    assert torch.equal(nearest(z, book), torch.cdist(z, book).argmin(1))
    model = build_model("vq-vae", (1, 8, 8), 6, {"num_embeddings": 11, "embedding_dim": 3}, "mlp", {"hidden": [16]})
    with torch.no_grad():
        model.codebook.copy_(book)
        x = torch.rand(20, 1, 8, 8)
        z_e = model.encoder(x).view(-1, 3)
        ref = torch.cdist(z_e, book).argmin(1)
        assert torch.equal(model.image_indices(x).flatten(), ref)
        assert torch.allclose(model.encode(x).mean, book[ref].view(20, 6))
        assert torch.equal(model.code_indices(model.encode(x).mean).flatten(), ref)  # exact from the codes


def test_vq_losses_and_gradients_on_the_hand_worked_case():
    model = tiny_vq()
    x = torch.full((2, 4), 0.5)
    terms = model.loss(x)
    # per image: .02 + .05 = .07 and .02 + .08 = .10; mean over the batch .085, for both terms
    assert terms["codebook"].item() == pytest.approx(0.085, abs=1e-6)
    assert terms["commitment"].item() == pytest.approx(0.085, abs=1e-6)
    rec = F.binary_cross_entropy_with_logits(Z_Q, x, reduction="none").sum(1).mean()  # decoder saw z_q
    assert terms["reconstruction"].item() == pytest.approx(float(rec), abs=1e-6)
    assert terms["loss"].item() == pytest.approx(float(rec) + 0.085 + 0.25 * 0.085, abs=1e-6)
    terms["loss"].backward()
    # codebook: d/de_k mean_b sum (e_k - z_i)^2 = sum_i 2 (e_k - z_i) / 2; the reconstruction sends it nothing
    expected_book = torch.tensor([[-0.1, -0.1], [0.0, -0.1], [-0.2, 0.2]])
    assert torch.allclose(model.codebook.grad, expected_book, atol=1e-6)
    # encoder output: the decoder's gradient at z_q passed straight through, plus beta * 2 (z_e - z_q) / 2
    expected_z = (torch.sigmoid(Z_Q) - x) / 2 + 0.25 * (Z - Z_Q)
    assert torch.allclose(model.encoder.z.grad, expected_z, atol=1e-6)


def test_straight_through_is_the_identity_backwards():
    z_e = torch.randn(3, 4, requires_grad=True)
    book = torch.randn(4, requires_grad=True)
    z_q = book.expand(3, 4)
    out = straight_through(z_e, z_q)
    assert torch.allclose(out, z_q)
    w = torch.randn(3, 4)
    (out * w).sum().backward()
    assert torch.equal(z_e.grad, w) and book.grad is None


def test_straight_through_gradient_in_the_model_equals_the_decoders_gradient_at_z_q():
    torch.manual_seed(0)
    model = build_model("vq-vae", (1, 8, 8), 4, {"num_embeddings": 8, "embedding_dim": 2}, "mlp", {"hidden": [16]})
    x = (torch.rand(5, 1, 8, 8) > 0.5).float()
    seen = {}

    def keep(module, inputs, output):
        if "z_e" not in seen:  # the first call, inside loss
            output.retain_grad()
            seen["z_e"] = output

    model.encoder.register_forward_hook(keep)
    model.loss(x)["reconstruction"].backward()
    z_q = model.encode(x).mean.detach().requires_grad_()
    (ref,) = torch.autograd.grad(model.likelihood.nll(model.decoder(z_q), x).mean(), z_q)
    assert torch.allclose(seen["z_e"].grad, ref, atol=1e-6)


def test_vq_losses_match_pythae_quantizer_up_to_its_mean_reduction():
    from pythae.models.vq_vae.vq_vae_utils import Quantizer

    torch.manual_seed(1)
    b, p, d, k = 5, 3, 2, 6
    cfg = SimpleNamespace(embedding_dim=d, num_embeddings=k, commitment_loss_factor=0.25, quantization_loss_factor=1.0)
    ref = Quantizer(cfg)
    z = torch.randn(b, p * d)
    model = VQVAE(Fixed(z), nn.Identity(), Bernoulli(), p * d, VQVAEConfig(num_embeddings=k, embedding_dim=d))
    with torch.no_grad():
        model.codebook.copy_(ref.embeddings.weight)
    out = ref(z.view(b, 1, p, d))
    terms = model.loss(torch.zeros(b, p * d))
    ours = terms["codebook"] + 0.25 * terms["commitment"]
    assert ours.item() / (p * d) == pytest.approx(out.loss.item(), rel=1e-5)  # pythae: mean over the b*p*d numbers
    assert torch.equal(model.image_indices(None).view(b, p), out.quantized_indices.view(b, p))


def test_ema_update_on_the_hand_worked_case():
    model = tiny_vq(use_ema=True, decay=0.5)
    assert "codebook" not in dict(model.named_parameters())
    x = torch.full((2, 4), 0.5)
    model.eval()
    model.loss(x)
    assert torch.equal(model.codebook, E)  # evaluation never moves the codebook
    model.train()
    terms = model.loss(x)
    assert terms["commitment"].item() == pytest.approx(0.085, abs=1e-6)  # measured against the old codebook
    # counts n = (1, 2, 1): N = .5 * 1 + .5 * n; sums of assigned z: (.1,.1), (.9+1.1, .2-.1), (.2,.8)
    assert torch.allclose(model.cluster_size, torch.tensor([1.0, 1.5, 1.0]))
    m = torch.tensor([[0.05, 0.05], [0.5 + 1.0, 0.05], [0.1, 0.5 + 0.4]])
    assert torch.allclose(model.embed_sum, m, atol=1e-7)
    smoothed = (torch.tensor([1.0, 1.5, 1.0]) + 1e-5) / (3.5 + 3e-5) * 3.5
    assert torch.allclose(model.codebook, m / smoothed.unsqueeze(1), atol=1e-7)
    assert torch.allclose(model.codebook, torch.tensor([[0.05, 0.05], [1.0, 1 / 30], [0.1, 0.9]]), atol=1e-4)


def test_vq_config_and_grid_are_checked():
    with pytest.raises(AebenchError, match="multiple"):
        build_model("vq-vae", (1, 8, 8), 5, {"embedding_dim": 2}, "mlp", {"hidden": [8]})
    with pytest.raises(AebenchError, match="decay"):
        VQVAEConfig(decay=1.0)
    with pytest.raises(AebenchError, match="num_levels"):
        HRQVAEConfig(num_levels=0)


# -- HRQ-VAE --------------------------------------------------------------------------------------------------
def reference_residual_indices(z: torch.Tensor, books: list[torch.Tensor]) -> torch.Tensor:
    """Greedy residual quantisation, one level at a time with torch.cdist."""
    out, resid = [], z
    for w in books:
        i = torch.cdist(resid, w).argmin(1)
        out.append(i)
        resid = resid - w[i]
    return torch.stack(out, 1)


def test_hrq_quantises_residuals_greedily_and_decomposes_its_codes_back():
    torch.manual_seed(2)
    model = build_model("hrq-vae", (1, 8, 8), 6, {"num_embeddings": 16, "num_levels": 3, "embedding_dim": 3},
                        "mlp", {"hidden": [16]})
    norms = [float(w.norm(dim=1).mean()) for w in model.codebooks]
    assert norms == pytest.approx([1.0, 0.5, 0.25])  # pythae's init: spheres of radius init_scale * 0.5^level
    model.eval()
    with torch.no_grad():
        x = torch.rand(30, 1, 8, 8)
        books = [w.detach() for w in model.codebooks]
        ref = reference_residual_indices(model.encoder(x).view(-1, 3), books).view(30, 2, 3)
        assert torch.equal(model.image_indices(x), ref)
        z = model.encode(x).mean
        assert torch.allclose(model.code_vectors(ref), z, atol=1e-6)
        assert torch.equal(model.code_indices(z), ref)
        idx = torch.randint(0, 16, (500, 3))
        sums = sum(w[idx[:, level]] for level, w in enumerate(books))
        assert torch.equal(model.code_indices(sums.view(250, 6)).view(500, 3), idx)  # the beams widen as needed
        found, dist = residual_decompose(sums, books, beam=1)  # greedy alone loses some of them here
        assert (found != idx).any() and float(dist.max()) > 1e-3


def test_hrq_loss_terms_match_torch_distributions_in_eval():
    torch.manual_seed(3)
    z = torch.randn(4, 4)
    cfg = HRQVAEConfig(num_embeddings=5, num_levels=3, embedding_dim=2)
    model = HRQVAE(Fixed(z), nn.Identity(), Bernoulli(), 4, cfg).eval()
    x = torch.full((4, 4), 0.5)
    terms = model.loss(x)
    books = [w.detach() for w in model.codebooks]
    flat = z.view(-1, 2)
    kl, resid, qs = torch.zeros(len(flat)), flat, []
    uniform = torch.distributions.Categorical(probs=torch.full((5,), 0.2))
    for w in books:
        logits = -torch.cdist(resid, w).pow(2)
        kl += torch.distributions.kl_divergence(uniform, torch.distributions.Categorical(logits=logits))
        q = w[logits.argmax(1)]
        qs.append(q)
        resid = resid - q
    n = [q.norm(dim=1) for q in qs]
    norm = sum((torch.clamp(1.5 * n[i + 1] / n[i], min=1.0) - 1) ** 2 for i in range(2)) / 2
    assert terms["kl"].item() == pytest.approx(float(kl.view(4, 2).sum(1).mean()), rel=1e-5)
    assert terms["norm"].item() == pytest.approx(float(norm.view(4, 2).sum(1).mean()), rel=1e-5, abs=1e-7)
    rec = F.binary_cross_entropy_with_logits(sum(qs).view(4, 4), x, reduction="none").sum(1).mean()
    assert terms["reconstruction"].item() == pytest.approx(float(rec), rel=1e-6)
    assert terms["loss"].item() == pytest.approx(float(rec + 0.1 * terms["kl"] + 0.5 * terms["norm"]), rel=1e-6)


def test_hrq_training_mode_counts_steps_and_depth_dropout_drops_deeper_levels():
    torch.manual_seed(4)
    z = torch.randn(64, 2)
    model = HRQVAE(Fixed(z), nn.Identity(), Bernoulli(), 2, HRQVAEConfig(num_embeddings=4, num_levels=2,
                                                                         depth_drop_rate=0.999))
    x = torch.full((64, 2), 0.5)
    model.train()
    rec = model.loss(x)["reconstruction"]  # all levels dropped (but for ~0.1%): the decoder sees zeros
    assert float(rec) == pytest.approx(2 * math.log(2), rel=0.05)
    assert model.temperatures()[0] == pytest.approx(math.exp(-1 / 33.333))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    for _ in range(3):
        model.train_step(x, [opt])
    assert int(model.state_dict()["steps"]) == 3


# -- the PixelCNN sampler ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [1, 2])
def test_pixelcnn_is_causal(levels: int):
    torch.manual_seed(5)
    net = PixelCNN1d(6, levels, 10, channels=8, layers=3, kernel=5)
    h = torch.randn(1, 8, 10)
    jac = torch.autograd.functional.jacobian(lambda e: net.from_embedding(e), h)  # (1, K, T, 1, C, T)
    dep = jac.abs().sum(dim=(0, 1, 3, 4))  # (T out, T in)
    for i in range(10):
        assert float(dep[i, i:].sum()) == 0.0, i  # no dependence on the current or later tokens
        if i > 0:
            assert float(dep[i, i - 1]) > 0, i  # ... but on the previous one


def test_pixelcnn_learns_a_copy_pattern_and_returns_the_models_code_vectors():
    model = VQVAE(nn.Flatten(), nn.Identity(), Bernoulli(), 2, VQVAEConfig(num_embeddings=4, embedding_dim=1))
    with torch.no_grad():
        model.codebook.copy_(torch.arange(4.0).unsqueeze(1))
    g = torch.Generator().manual_seed(0)
    first = torch.randint(0, 2, (400,), generator=g)
    codes = torch.stack([first, first + 2], 1).float()  # token 1 = token 0 + 2; token 0 in {0, 1} evenly
    sampler = PixelCNNSampler(layers=2, channels=16, kernel=3, epochs=60, lr=2e-2, batch_size=400)
    assert sampler.applies_to(model) is None
    with torch.no_grad():  # as the evaluation calls it
        sampler.fit(codes, model)
    assert sampler.recovered == 1.0
    z = sampler.sample(1000, torch.Generator().manual_seed(1))
    assert z.shape == (1000, 2) and z.dtype == torch.float32
    assert float((z[:, 1] == z[:, 0] + 2).float().mean()) > 0.95
    assert 0.4 < float((z[:, 0] == 0).float().mean()) < 0.6
    assert torch.equal(z, sampler.sample(1000, torch.Generator().manual_seed(1)))  # deterministic


def test_pixelcnn_refuses_continuous_models_and_bad_options():
    ae = build_model("ae", (1, 8, 8), 4, {}, "mlp", {"hidden": [8]})
    assert "continuous" in PixelCNNSampler().applies_to(ae)
    with pytest.raises(AebenchError):
        PixelCNNSampler().fit(torch.zeros(3, 4), ae)
    with pytest.raises(AebenchError, match="kernel"):
        PixelCNNSampler(kernel=4)
    with pytest.raises(AebenchError, match="layers"):
        PixelCNNSampler(layers=0)


# -- the codebook metric ----------------------------------------------------------------------------------------
def test_perplexity_of_a_known_histogram():
    # p = (1/4, 1/4, 0, 1/2): H = 1.5 ln 2, so exp(H) = 2^1.5
    assert perplexity(torch.tensor([2, 2, 0, 4])) == pytest.approx(2**1.5, rel=1e-12)
    assert perplexity(torch.tensor([5, 5, 5, 0, 0])) == pytest.approx(3.0, rel=1e-12)
    assert perplexity(torch.tensor([0, 7])) == pytest.approx(1.0)


def test_codebook_metric_counts_usage_on_the_test_set():
    model = VQVAE(nn.Flatten(), nn.Identity(), Bernoulli(), 2, VQVAEConfig(num_embeddings=4, embedding_dim=1))
    with torch.no_grad():
        model.codebook.copy_(torch.tensor([[0.0], [0.3], [0.7], [5.0]]))
    # pixel values 0, 0.2 (-> code 1), 0.8 (-> 2); code 3 is never used
    pixels = torch.tensor([[0, 51], [0, 204], [51, 51], [0, 0]], dtype=torch.uint8).view(4, 1, 1, 2)
    ctx = EvalContext(model=model, train=ImageSet("t", "train", pixels), test=ImageSet("t", "test", pixels),
                      device=torch.device("cpu"), batch_size=3)
    out = codebook(ctx)
    ref = torch.bincount(torch.cdist(pixels.float().view(-1, 1) / 255, model.codebook.detach()).argmin(1), minlength=4)
    assert out["usage"] == ref.tolist() == [4, 3, 1, 0]
    assert out["perplexity"] == pytest.approx(math.exp(-sum(c / 8 * math.log(c / 8) for c in (4, 3, 1))))
    assert (out["used"], out["dead"], out["dead_fraction"], out["codes"]) == (3, 1, 0.25, 4)
    ae = build_model("ae", (1, 1, 2), 2, {}, "mlp", {"hidden": [4]})
    with pytest.raises(NotApplicable):
        codebook(EvalContext(model=ae, train=ctx.train, test=ctx.test, device=torch.device("cpu")))
