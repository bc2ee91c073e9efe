"""The adversarial models (aae, vae-gan, dcgan) and the RAE variants (rae-gp, rae-sn) against independent references:
pythae's loss functions, per-player gradients from autograd, torch.autograd.functional.jacobian, and
torch.linalg.svdvals; plus the players' optimizers, which must each move their own parameters only."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from test_models import bars, make

from aebench.data.base import ImageSet
from aebench.errors import AebenchError
from aebench.metrics.base import NEEDS, EvalContext, NotApplicable, evaluate
from aebench.models.base import TrainSettings, build_model
from aebench.models.gan import ImageDiscriminator
from aebench.models.rae_variants import SPECTRAL_LAYERS
from aebench.registry import METRICS

MULTI_PLAYER = ["aae", "vae-gan", "dcgan"]


def ids(params) -> set[int]:
    return {id(p) for p in params}


def in_optimizers(*optimizers) -> set[int]:
    return ids(p for opt in optimizers for g in opt.param_groups for p in g["params"])


# -- the players' optimizers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MULTI_PLAYER)
def test_player_optimizers_are_disjoint_and_cover_the_trainable_parameters(name: str):
    model = make(name)
    groups = [in_optimizers(opt) for opt in model.configure_optimizers(TrainSettings())]
    assert len(groups) >= 2
    assert sum(len(g) for g in groups) == len(set().union(*groups)), "a parameter is in two optimizers"
    assert set().union(*groups) == ids(p for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", MULTI_PLAYER)
def test_each_players_step_moves_its_own_parameters_only(name: str):
    for player in range(len(make(name).configure_optimizers(TrainSettings()))):
        model = make(name)
        optimizers = model.configure_optimizers(TrainSettings(lr=1e-2))
        for p in model.parameters():
            p.grad = torch.ones_like(p)  # every player's gradient present: only the stepping one may use it
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizers[player].step()
        own = in_optimizers(optimizers[player])
        for n, p in model.named_parameters():
            assert torch.equal(p, before[n]) != (id(p) in own), (name, player, n)


def _reference_grads(model, objectives: dict[str, str], players: dict[str, list], x: torch.Tensor, seed: int):
    """Each player's gradient of its own objective alone, by torch.autograd.grad on a copy of the model."""
    torch.manual_seed(seed)
    terms = model._terms(x)
    return {who: torch.autograd.grad(terms[objectives[who]], players[who], retain_graph=True)
            for who in objectives}


@pytest.mark.parametrize("name", ["aae", "vae-gan"])
def test_train_step_gives_each_player_the_gradient_of_its_own_objective(name: str):
    """pythae's coupled trainer lets the decoder's and discriminator's losses leak into the encoder and decoder;
    here the encoder gets d(KL + llike), the decoder d((1 - s) llike - s L_disc), the discriminator d(L_disc)."""
    model = make(name)
    x = bars(8)
    ref = copy.deepcopy(model)
    if name == "vae-gan":
        players = ref.players()
        objectives = {"encoder": "loss", "decoder": "decoder", "discriminator": "discriminator"}
    else:
        players = {"autoencoder": ref.autoencoder_parameters(), "discriminator": list(ref.discriminator.parameters())}
        objectives = {"autoencoder": "loss", "discriminator": "discriminator"}
    expected = _reference_grads(ref, objectives, players, x, seed=5)
    torch.manual_seed(5)
    terms = model.train_step(x, model.configure_optimizers(TrainSettings()))
    if name == "vae-gan":
        assert float(terms["decoder_steps"]) == 1.0 and float(terms["discriminator_steps"]) == 1.0
        got = model.players()
    else:
        got = {"autoencoder": model.autoencoder_parameters(), "discriminator": list(model.discriminator.parameters())}
    for who, grads in expected.items():
        for p, g in zip(got[who], grads):
            assert p.grad is not None and torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7), who


# -- the objectives against pythae's ----------------------------------------------------------------------------
def _pythae_discriminator(disc: ImageDiscriminator | torch.nn.Module, layered: bool):
    from pythae.models.base.base_utils import ModelOutput

    def forward(x, output_layer_levels=None):
        if output_layer_levels is None:
            logit = disc(x) if layered else disc(x).squeeze(1)
            return ModelOutput(embedding=torch.sigmoid(logit))
        (level,) = output_layer_levels
        return ModelOutput(**{f"embedding_layer_{level}": disc(x, layer=level)[1]})

    return forward


def test_aae_objectives_equal_pythaes():
    from pythae.models import Adversarial_AE

    model = make("aae")
    x = bars(16)
    torch.manual_seed(3)
    terms = model.loss(x)
    torch.manual_seed(3)
    enc = model.encode(x)
    z = enc.mean + enc.std * torch.randn_like(enc.std)
    prior = torch.randn_like(z)
    peer = SimpleNamespace(model_config=SimpleNamespace(reconstruction_loss="bce"), adversarial_loss_scale=0.5,
                           reconstruction_loss_scale=1.0,
                           discriminator=_pythae_discriminator(model.discriminator, False))
    _, ae_loss, disc_loss = Adversarial_AE.loss_function(peer, torch.sigmoid(model.decode(z)), x, z, prior)
    assert torch.allclose(terms["loss"], ae_loss, rtol=1e-4)
    assert torch.allclose(terms["discriminator"], disc_loss, rtol=1e-4)


def test_vae_gan_objectives_and_update_rule_equal_pythaes_without_reconstructions_in_the_gan_term():
    from pythae.models import VAEGAN
    from pythae.models.base.base_utils import ModelOutput

    model = make("vae-gan", params={"gan_reconstructions": False, "reconstruction_layer": 1})
    x = bars(16)
    torch.manual_seed(4)
    terms = model.loss(x)
    torch.manual_seed(4)
    enc = model.encode(x)
    z = enc.mean + enc.std * torch.randn_like(enc.std)
    recon = torch.sigmoid(model.decode(z))
    z_prior = torch.randn_like(z)
    peer = SimpleNamespace(discriminator=_pythae_discriminator(model.discriminator, True), reconstruction_layer=1,
                           decoder=lambda zp: ModelOutput(reconstruction=torch.sigmoid(model.decode(zp))),
                           adversarial_loss_scale=0.5, equilibrium=0.68, margin=0.4)
    rec, enc_loss, dec_loss, disc_loss, _, dec_step, disc_step = VAEGAN.loss_function(
        peer, recon, x, z, z_prior, enc.mean, enc.logvar)
    for ours, theirs in ((terms["llike"], rec), (terms["loss"], enc_loss), (terms["decoder"], dec_loss),
                         (terms["discriminator"], disc_loss)):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    assert model.updates(terms) == (dec_step, disc_step)


def test_vae_gan_equilibrium_rule_and_a_skipped_player_stays_put():
    model = make("vae-gan")
    t = lambda real, prior: {"disc_real": torch.tensor(real), "disc_prior": torch.tensor(prior)}  # noqa: E731
    assert model.updates(t(0.7, 0.7)) == (True, True)
    assert model.updates(t(0.1, 0.7)) == (True, False)  # the discriminator wins: it waits
    assert model.updates(t(0.7, 1.5)) == (False, True)  # the decoder wins (fakes pass as real): it waits
    assert model.updates(t(0.1, 1.5)) == (True, True)  # both would wait: both step
    lopsided = make("vae-gan", params={"equilibrium": 10.0, "margin": 0.0})  # every BCE is below 10: disc waits
    disc = copy.deepcopy(lopsided.discriminator.state_dict())
    dec = [p.detach().clone() for p in lopsided.decoder.parameters()]
    terms = lopsided.train_step(bars(8), lopsided.configure_optimizers(TrainSettings()))
    assert float(terms["discriminator_steps"]) == 0.0 and float(terms["decoder_steps"]) == 1.0
    assert all(torch.equal(v, lopsided.discriminator.state_dict()[k]) for k, v in disc.items() if "running" not in k)
    assert any(not torch.equal(a, b) for a, b in zip(dec, lopsided.decoder.parameters()))


def test_vae_gan_learns_to_reconstruct_pixels_through_discriminator_features():
    model = make("vae-gan")
    x = bars(32)
    optimizers = model.configure_optimizers(TrainSettings(lr=3e-3))

    def pixel_bce() -> float:
        model.eval()
        with torch.no_grad():
            r = model.reconstruct(x).clamp(1e-6, 1 - 1e-6)
        model.train()
        return float(F.binary_cross_entropy(r, x, reduction="sum")) / len(x)

    before = pixel_bce()
    for _ in range(40):
        model.train_step(x, optimizers)
    assert pixel_bce() < 0.9 * before


# -- the image discriminator ------------------------------------------------------------------------------------
def test_image_discriminator_has_the_encoders_shape_and_exposes_hidden_blocks():
    model = make("vae-gan", "conv", (1, 28, 28))
    disc = model.discriminator
    assert disc.depth == 4 and isinstance(disc.head[-1], torch.nn.Linear) and disc.head[-1].out_features == 1
    x = torch.rand(3, 1, 28, 28)
    logit, feats = disc(x, layer=2)
    assert logit.shape == (3,) and feats.shape == (3, 4 * 7 * 7)  # TINY_CONV: 4 channels, 28 -> 14 -> 7
    assert torch.equal(disc(x, layer=-1)[1], disc(x, layer=4)[1])
    with pytest.raises(AebenchError, match="does not exist"):
        disc(x, layer=5)
    encoder_weights = {id(p) for p in model.encoder.parameters()}
    assert not encoder_weights & ids(disc.parameters())  # a fresh copy, not the encoder's weights
    with pytest.raises(AebenchError, match="hidden blocks"):
        build_model("vae-gan", (1, 8, 8), 4, {}, "mlp", {"hidden": []})
    with pytest.raises(AebenchError, match="reconstruction_layer 3"):
        make("vae-gan", params={"reconstruction_layer": 3})  # the mlp [32] has one hidden block


# -- RAE-GP and RAE-SN -----------------------------------------------------------------------------------------
def _decoder_jacobians(decoder, z: torch.Tensor) -> torch.Tensor:
    """(B, pixels, latent) from torch.autograd.functional.jacobian, one sample at a time."""
    return torch.stack([torch.autograd.functional.jacobian(lambda zb: decoder(zb.unsqueeze(0)).flatten(), z[b])
                        for b in range(z.shape[0])])


def test_rae_gp_penalty_is_the_squared_norm_of_the_decoder_jacobian_in_z():
    x = bars(5)
    exact = make("rae-gp", params={"estimator": "exact", "lam": 0.1, "beta": 0.5})
    terms = exact.loss(x)
    z = exact.encode(x).mean.detach()
    jac = _decoder_jacobians(exact.decoder, z)
    assert torch.allclose(terms["gradient_penalty"], jac.pow(2).sum((1, 2)).mean(), rtol=1e-5)
    rec = exact.likelihood.nll(exact.decode(z), x).mean()
    expected = rec + 0.5 * 0.5 * z.pow(2).sum(1).mean() + 0.1 * terms["gradient_penalty"]
    assert torch.allclose(terms["loss"], expected, rtol=1e-5)
    terms["loss"].backward()  # differentiable: the decoder trains through the penalty
    assert all(p.grad is not None for p in exact.decoder.parameters())

    hutch = make("rae-gp")  # the default: ||J^T v||^2 with one probe v ~ N(0, I), the same v drawn again below
    torch.manual_seed(9)
    gp = hutch.loss(x)["gradient_penalty"]
    torch.manual_seed(9)
    v = torch.randn(5, 64)
    jtv = torch.einsum("bpd,bp->bd", _decoder_jacobians(hutch.decoder, hutch.encode(x).mean.detach()), v)
    assert torch.allclose(gp, jtv.pow(2).sum(1).mean(), rtol=1e-5)


def _weight_matrix(m: torch.nn.Module) -> torch.Tensor:
    """The matrix torch's spectral norm normalises: output channels first (dim 1 of a transposed convolution)."""
    w = m.weight.detach()
    return (w.movedim(1, 0) if isinstance(m, torch.nn.ConvTranspose2d) else w).flatten(1)


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
def test_rae_sn_decoder_layers_have_unit_spectral_norm(backbone: str):
    shape = (1, 8, 8) if backbone == "mlp" else (1, 28, 28)
    model = make("rae-sn", backbone, shape)
    layers = [m for m in model.decoder.modules() if isinstance(m, SPECTRAL_LAYERS)]
    assert len(layers) == (2 if backbone == "mlp" else 5)  # mlp [32]: 2 linear; conv: linear, 3 transposed, conv
    assert all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.encoder.modules())
    model.train()
    with torch.no_grad():
        for _ in range(30):  # one power iteration per training forward pass
            model.decode(torch.randn(2, 4))
    for m in layers:
        assert abs(float(torch.linalg.svdvals(_weight_matrix(m))[0]) - 1.0) < 1e-2, m
    trained = in_optimizers(*model.configure_optimizers(TrainSettings()))
    assert all(id(m.parametrizations.weight.original) in trained for m in layers)  # the raw weights are what trains


# -- DCGAN ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["mlp", "conv"])
def test_dcgan_generates_images_in_range_and_has_no_encoder(backbone: str):
    shape = (1, 8, 8) if backbone == "mlp" else (1, 28, 28)
    model = make("dcgan", backbone, shape)
    assert model.has_encoder is False and model.encoder is None
    model.eval()
    with torch.no_grad():
        images = model.generate(torch.randn(5, 4))
    assert images.shape == (5, *shape) and images.min() >= 0 and images.max() <= 1
    for call in (model.encode, model.reconstruct):
        with pytest.raises(NotApplicable, match="dcgan has no encoder"):
            call(torch.rand(2, *shape))
    model.train()
    terms = model.train_step(torch.rand(4, *shape), model.configure_optimizers(TrainSettings()))
    assert set(terms) == {"loss", "generator", "discriminator"} and all(torch.isfinite(v) for v in terms.values())


def test_dcgan_uses_adam_beta1_one_half_and_the_paper_init():
    model = make("dcgan")
    optimizers = model.configure_optimizers(TrainSettings())
    assert all(g["betas"] == (0.5, 0.999) for opt in optimizers for g in opt.param_groups)
    assert make("dcgan").configure_optimizers(TrainSettings(optimizer="sgd"))  # no betas for SGD
    linear = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    weights = torch.cat([m.weight.detach().flatten() for m in linear])
    assert abs(float(weights.std()) - 0.02) < 0.005


def test_dcgan_discriminator_learns_to_separate_real_from_fake():
    """The toy task: bars against a fixed generator's images (its optimizer at lr 0), through train_step."""
    model = make("dcgan")
    real = bars(32)
    optimizers = model.configure_optimizers(TrainSettings(lr=1e-2))
    optimizers[0].param_groups[0]["lr"] = 0.0
    generator = [p.detach().clone() for p in model.decoder.parameters()]

    def accuracy() -> float:
        model.eval()
        with torch.no_grad():
            fake = model.generate(torch.randn(32, 4, generator=torch.Generator().manual_seed(1)))
            right = (model.discriminator(real) > 0).float().sum() + (model.discriminator(fake) < 0).float().sum()
        model.train()
        return float(right) / 64

    before = accuracy()
    for _ in range(30):
        terms = model.train_step(real, optimizers)
    assert before < 0.8 and accuracy() > 0.9
    assert float(terms["discriminator"]) < 0.5 * 2 * math.log(2)  # 2 log 2: a discriminator that cannot tell
    assert all(torch.equal(a, b) for a, b in zip(generator, model.decoder.parameters()))


def test_metrics_that_need_an_encoder_are_not_applicable_to_dcgan():
    needing = {"recon", "active_units", "codes", "kl_w2", "probe", "nll"}
    assert all("encoder" in METRICS.meta(name)["needs"] for name in needing)
    assert NEEDS["encoder"](SimpleNamespace(model=make("ae"))) is None
    images = (torch.rand(6, 1, 8, 8) * 255).to(torch.uint8)
    data = ImageSet("synthetic", "test", images, torch.zeros(6, dtype=torch.long))
    ctx = EvalContext(model=make("dcgan"), train=data, test=data, device=torch.device("cpu"))
    out = evaluate(ctx, [(name, {}) for name in sorted(needing)])
    assert {k: v for k, v in out["not_applicable"].items() if k in needing} == dict.fromkeys(
        needing, "the model has no encoder")


# -- AAE details ------------------------------------------------------------------------------------------------
def test_aae_posterior_is_gaussian_by_default_and_a_dirac_on_request():
    gaussian, dirac = make("aae"), make("aae", params={"deterministic_posterior": True})
    x = bars(4)
    assert gaussian.probabilistic and gaussian.encode(x).logvar is not None
    assert not dirac.probabilistic and dirac.encode(x).logvar is None
    assert type(dirac).probabilistic  # the class keeps the default
    assert torch.equal(dirac.loss(x)["reconstruction"], dirac.loss(x)["reconstruction"])  # no sampling noise
    with pytest.raises(AebenchError):
        make("aae", params={"adversarial_loss_scale": 1.5})
