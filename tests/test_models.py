"""Every registered model, through the common interface: forward/backward, shapes, and learning a tiny batch.

Parametrized over the model registry itself, so a model added to the catalog is tested without edits here.
"""

from __future__ import annotations

import math

import pytest
import torch

from aebench.errors import AebenchError, SuiteError
from aebench.models.base import Autoencoder, TrainSettings, build_model
from aebench.registry import BACKBONES, MODELS, SAMPLERS

MODEL_NAMES = MODELS.names()
SHAPE = (1, 8, 8)
LATENT = 4
TINY_CONV = {"channels": [4, 4, 4, 4]}
# settings that keep a test-sized model test-sized (the paper's 4x512 discriminator would dominate the run)
TINY_PARAMS = {"wae-gan": {"disc_hidden": [32, 32]}, "vamp": {"pseudo_inputs": 8},
               "vae-iaf": {"n_hidden_in_made": 1, "hidden_size": 16},
               "vq-vae": {"num_embeddings": 16, "embedding_dim": 2, "use_ema": True},  # Adam moves codes too slowly
               "hrq-vae": {"num_embeddings": 8, "num_levels": 2, "embedding_dim": 2},
               "rhvae": {"metric_hidden": [16], "metric_points": 64, "n_lf": 1, "fixed_point_steps": 2},
               "rae-sn": {"beta": 0.01},  # 1-Lipschitz layers need larger codes to fit 64 pixels
               "miwae": {"m": 2, "k": 2}, "piwae": {"m": 2, "k": 2}, "ciwae": {"k": 4},
               "factor-vae": {"disc_hidden": [32, 32]},
               # 8x8 images: a 3-pixel window; the KL (nats) swamps a [0, 1] MS-SSIM term at beta = 1 on 64 pixels
               "msssim-vae": {"window_size": 3, "beta": 0.1},
               "info-vae": {"lam": 10.0}}  # an MMD weight of 999 outweighs an 8x8 image's BCE: posterior collapse


def bars(n: int = 32, size: int = 8, seed: int = 0) -> torch.Tensor:
    """A fixed batch of binary bar images (the BCE floor is 0, so a falling loss is plain to see)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    pos = torch.randint(0, size - 1, (n,), generator=g)
    for i in range(n):
        p = int(pos[i])
        if i % 2:
            x[i, 0, :, p : p + 2] = 1.0
        else:
            x[i, 0, p : p + 2, :] = 1.0
    return x


# models without gradient training, or whose "loss" is not a value that training drives down (the reason is the skip's)
NO_GRADIENTS = {"hopfield": "no gradient training (Hebbian storage, loss 0); test_boltzmann_hopfield covers it"}
NO_FALLING_LOSS = {
    **NO_GRADIENTS,
    "rbm": "the PCD surrogate F(data) - F(fantasy) is 0 for a perfect model and negative while the chains lag: "
           "its gradient, not its value, tracks the likelihood; test_boltzmann_hopfield checks that PCD raises "
           "the exact log-likelihood instead",
    "dcgan": "a GAN's generator loss is one side of a game and rises as its discriminator learns; "
             "test_adversarial checks the discriminator separates real from fake instead",
    "vae-gan": "its loss (KL + llike) is measured in discriminator features that grow as the discriminator "
               "trains; test_adversarial checks the pixel reconstruction error falls instead",
}


def make(name: str, backbone: str = "mlp", shape=SHAPE, params=None, options=None) -> Autoencoder:
    torch.manual_seed(0)
    opts = {"hidden": [32]} if backbone == "mlp" else dict(TINY_CONV)
    params = TINY_PARAMS.get(name, {}) if params is None else params
    return build_model(name, shape, LATENT, params, backbone, {**opts, **(options or {})})


def test_all_eleven_models_are_registered_with_descriptions():
    expected = {"ae", "dropout-ae", "sparse-ae", "contractive-ae", "denoising-ae", "vae", "beta-vae", "iwae",
                "wae-mmd", "wae-gan", "rae"}
    assert expected <= set(MODEL_NAMES)
    for name in expected:
        assert MODELS.entry(name).description, name
        assert issubclass(MODELS.get(name), Autoencoder)
    assert {"mlp", "conv"} <= set(BACKBONES.names())
    assert {"prior", "gaussian", "gmm"} <= set(SAMPLERS.names())


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_and_shapes(name: str, backbone: str):
    if name in NO_GRADIENTS:
        pytest.skip(NO_GRADIENTS[name])
    if not MODELS.get(name).has_encoder:
        pytest.skip("has_encoder is False: nothing to encode or reconstruct (test_adversarial covers dcgan)")
    shape = SHAPE if backbone == "mlp" else (1, 28, 28)
    model = make(name, backbone, shape)
    x = bars(6, shape[-1]) if backbone == "mlp" else torch.rand(6, *shape)
    model.train()
    terms = model.loss(x)
    assert "loss" in terms and len(terms) >= 2, terms.keys()
    for key, value in terms.items():
        assert value.dim() == 0 and torch.isfinite(value), (key, value)
    terms["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith("encoder.") for n in grads) and any(n.startswith("decoder.") for n in grads)
    assert all(torch.isfinite(g).all() for g in grads.values())

    model.eval()
    with torch.no_grad():
        enc = model.encode(x)
        assert enc.mean.shape == (6, LATENT)
        if model.probabilistic:
            assert enc.logvar is not None and enc.logvar.shape == (6, LATENT)
        else:
            assert enc.logvar is None
        assert model.decode(enc.mean).shape == (6, *shape)
        rec = model.reconstruct(x)
        assert rec.shape == (6, *shape) and rec.min() >= 0 and rec.max() <= 1
        assert model.generate(torch.randn(3, LATENT)).shape == (3, *shape)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_drives_its_loss_down_on_a_fixed_batch(name: str):
    if name in NO_FALLING_LOSS:
        pytest.skip(NO_FALLING_LOSS[name])
    model = make(name)
    x = bars(32)
    optimizers = model.configure_optimizers(TrainSettings(lr=3e-3))

    def evaluate() -> float:
        torch.manual_seed(123)  # the same noise before and after, for the stochastic objectives
        model.eval()
        with torch.no_grad():
            value = float(model.loss(x)["loss"])
        model.train()
        return value

    before = evaluate()
    curve = [float(model.train_step(x, optimizers)["loss"]) for _ in range(150)]
    after = evaluate()
    assert all(math.isfinite(v) for v in curve)
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_train_step_returns_detached_terms(name: str):
    model = make(name)
    terms = model.train_step(bars(8), model.configure_optimizers(TrainSettings()))
    assert "loss" in terms and all(not v.requires_grad for v in terms.values())


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_conv_backbone_shapes(shape):
    encoder, decoder = BACKBONES.get("conv")(shape, 2 * 16, 16, **TINY_CONV)
    x = torch.rand(3, *shape)
    h = encoder(x)
    assert h.shape == (3, 32)
    assert decoder(h[:, :16]).shape == (3, *shape)


def test_conv_backbone_defaults_are_the_published_architecture():
    encoder, decoder = BACKBONES.get("conv")((1, 28, 28), 16, 16)
    convs = [m for m in encoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 256, 512, 1024]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in encoder) == 4
    encoder.eval(), decoder.eval()
    with torch.no_grad():
        assert decoder(encoder(torch.rand(2, 1, 28, 28))).shape == (2, 1, 28, 28)


def test_conv_backbone_refuses_images_too_small():
    with pytest.raises(AebenchError, match="at least 16x16"):
        BACKBONES.get("conv")((1, 12, 12), 4, 4)


def test_sigmoid_code_activation_squashes_only_the_code():
    torch.manual_seed(0)
    encoder, _ = BACKBONES.get("mlp")((1, 1, 8), 6, 3, hidden=[], code_activation="sigmoid")
    h = 10 * encoder(torch.randn(50, 1, 1, 8) * 10)
    assert (h[:, :3] >= 0).all() and (h[:, :3] <= 10).all()
    assert (h[:, 3:] < 0).any()  # the log-variances stay free
    vae = build_model("vae", (1, 1, 8), 3, {}, "mlp", {"hidden": [], "code_activation": "sigmoid"})
    mean = vae.encode(torch.randn(20, 1, 1, 8) * 10).mean
    assert ((mean > 0) & (mean < 1)).all()


def test_dropout_ae_puts_dropout_in_the_backbone():
    model = make("dropout-ae", params={"rate": 0.5})
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates and all(r == 0.5 for r in rates)
    x = bars(4)
    model.train()
    assert not torch.equal(model.encode(x).mean, model.encode(x).mean)
    model.eval()
    assert torch.equal(model.encode(x).mean, model.encode(x).mean)
    conv = make("dropout-ae", "conv", (1, 28, 28), params={"rate": 0.3})
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in conv.modules())


def test_model_params_are_validated():
    with pytest.raises(SuiteError, match="rate"):
        make("dropout-ae", params={"rate": 1.5})
    with pytest.raises(SuiteError, match="noise"):
        make("denoising-ae", params={"noise": "speckle"})
    with pytest.raises(SuiteError, match="k"):
        make("iwae", params={"k": 0})
    with pytest.raises(SuiteError, match="regularizer"):
        make("rae", params={"regularizer": "sn"})
    with pytest.raises(SuiteError, match="unknown field"):
        make("wae-mmd", params={"lambda": 1.0})
