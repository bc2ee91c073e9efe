"""DCGAN (Radford et al. 2016): an implicit generator trained against an image discriminator, on the suite's
backbone, so it is compared with the autoencoders as a generator with the same decoder.

Also the pieces the image-space adversarial models share (VAE-GAN): ``ImageDiscriminator``, the backbone's
encoder shape ending in one logit, and ``soft_images``, the decoder's mean image as the discriminator sees it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aebench.errors import AebenchError
from aebench.models.backbones import ACTIVATIONS
from aebench.models.base import Autoencoder, Encoding, ModelConfig, TrainSettings, make_optimizer

_ACTIVATION_TYPES = tuple(ACTIVATIONS.values())


class ImageDiscriminator(nn.Module):
    """The backbone's encoder with its code layer replaced by one logit, freshly initialised.

    The layers before the last linear map are cut into hidden blocks, each ending at an activation (and any
    dropout right after it); ``forward(x, layer=k)`` also returns block k's output (1-based; -1 = the last
    hidden block), the features of VAE-GAN's learned similarity.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        if not isinstance(encoder, nn.Sequential):
            raise AebenchError("an image discriminator is built from a backbone whose encoder is an nn.Sequential")
        layers = list(copy.deepcopy(encoder))
        linear = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
        if not linear:
            raise AebenchError("an image discriminator needs a backbone encoder that ends in a linear layer")
        last = linear[-1]
        blocks: list[list[nn.Module]] = [[]]
        for m in layers[:last]:
            if isinstance(m, nn.Dropout) and not blocks[-1] and len(blocks) > 1:
                blocks[-2].append(m)
                continue
            blocks[-1].append(m)
            if isinstance(m, _ACTIVATION_TYPES):
                blocks.append([])
        rest = blocks.pop()  # what follows the last activation (a Flatten) goes with the logit
        self.blocks = nn.ModuleList(nn.Sequential(*b) for b in blocks)
        self.head = nn.Sequential(*rest, nn.Linear(layers[last].in_features, 1))
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    @property
    def depth(self) -> int:
        """The number of hidden blocks (the layers ``forward(x, layer=...)`` can return)."""
        return len(self.blocks)

    def forward(self, x: torch.Tensor, layer: int | None = None):
        """The logit per image, shaped (B,); with ``layer``, also that hidden block's output, flattened."""
        features = None
        if layer is not None:
            k = self.depth if layer == -1 else layer
            if not 1 <= k <= self.depth:
                raise AebenchError(f"discriminator layer {layer} does not exist: it has {self.depth} hidden blocks")
        h = x
        for i, block in enumerate(self.blocks, start=1):
            h = block(h)
            if layer is not None and i == k:
                features = h.flatten(1)
        logit = self.head(h).squeeze(1)
        return logit if layer is None else (logit, features)


def soft_images(model: Autoencoder, out: torch.Tensor) -> torch.Tensor:
    """The decoder's mean image, differentiable everywhere: sigmoid of Bernoulli logits, a Gaussian's mean unclamped.

    ``generate`` clamps a Gaussian's mean to [0, 1] for display; the clamp would stop the discriminator's
    gradient at every pixel outside, so the adversarial terms see the raw mean.
    """
    return torch.sigmoid(out) if getattr(model.likelihood, "name", "") == "bernoulli" else out


def bce(logit: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of logits against a constant label, averaged over the batch."""
    return F.binary_cross_entropy_with_logits(logit, torch.full_like(logit, target))


def adam_betas(train: TrainSettings, beta1: float) -> dict[str, tuple[float, float]]:
    """``betas=(beta1, 0.999)`` for Adam and AdamW; nothing for the other optimizers."""
    return {"betas": (beta1, 0.999)} if train.optimizer in ("adam", "adamw") else {}


def dcgan_init(module: nn.Module, std: float) -> None:
    """The DCGAN paper's initialisation: conv and linear weights N(0, std), batch-norm scales N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


@dataclass
class DCGANConfig(ModelConfig):
    beta1: float = 0.5  # Adam's first-moment decay for both players (the paper's; the suite's lr is kept)
    init_std: float | None = 0.02  # the paper's N(0, 0.02) initialisation; None keeps PyTorch's defaults
    disc_lr_scale: float = 1.0  # discriminator learning rate / train.lr (the paper: both 2e-4)

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta1 < 1.0:
            raise AebenchError(f"beta1 must be in [0, 1), got {self.beta1}")
        if self.init_std is not None and self.init_std <= 0:
            raise AebenchError(f"init_std must be > 0 or null, got {self.init_std}")
        if self.disc_lr_scale <= 0:
            raise AebenchError(f"disc_lr_scale must be > 0, got {self.disc_lr_scale}")


def _not_applicable(what: str) -> Exception:
    from aebench.metrics.base import NotApplicable  # lazy: the metrics import the models

    return NotApplicable(f"dcgan has no encoder ({what})")


class DCGAN(Autoencoder):
    """DCGAN: generator = the backbone's decoder on z ~ N(0, I); discriminator = its encoder shape with one logit.

    Non-saturating losses; each step first updates the discriminator on a real batch and a fake batch, then
    the generator against the updated discriminator (the paper's reference code). ``loss`` is the generator's
    objective; ``discriminator`` is reported beside it. No encoder: codes and reconstructions do not apply.
    """

    Config = DCGANConfig
    has_encoder = False
    card = {
        "objective": "generator: -log sigmoid(D(G(z))), z ~ N(0, I) (non-saturating); discriminator: "
                     "-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))); G(z) = the decoder's mean image "
                     "(sigmoid of Bernoulli logits, a Gaussian's raw mean)",
        "reduction": "mean over the batch for each term; fresh z for every step, batch size as the data's",
        "weights": "no loss weights; beta1 = 0.5 (Adam's and AdamW's first-moment decay for both players, the "
                   "paper's; lr stays the suite's, the paper's 2e-4), init_std = 0.02 (conv and linear weights "
                   "N(0, 0.02^2), batch-norm scales N(1, 0.02^2), biases 0; null: PyTorch's init), disc_lr_scale = 1 "
                   "(discriminator lr = disc_lr_scale * train.lr)",
        "optimisers": "two, alternating on each batch: discriminator (its own parameters) first, then the "
                      "generator (the decoder) against the updated discriminator",
        "paper": "Radford, Metz, Chintala. Unsupervised representation learning with deep convolutional "
                 "generative adversarial networks. ICLR 2016",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood, latent_dim: int,
                 config: DCGANConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        self.discriminator = ImageDiscriminator(encoder)
        self.encoder = None  # the backbone's encoder only lent its shape to the discriminator
        if self.config.init_std is not None:
            dcgan_init(self.decoder, self.config.init_std)
            dcgan_init(self.discriminator, self.config.init_std)

    def encode(self, x: torch.Tensor) -> Encoding:
        raise _not_applicable("encode")

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise _not_applicable("reconstruct")

    def fake(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """n generated images (differentiable) from fresh prior codes."""
        z = torch.randn(n, self.latent_dim, device=like.device, dtype=like.dtype)
        return soft_images(self, self.decode(z))

    def discriminator_loss(self, x: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """-log D(x) - log(1 - D(fake)), each averaged over its batch; real and fake go through separately."""
        return bce(self.discriminator(x), 1.0) + bce(self.discriminator(fake.detach()), 0.0)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fake = self.fake(x.shape[0], x)
        gen = bce(self.discriminator(fake), 1.0)
        return {"loss": gen, "generator": gen, "discriminator": self.discriminator_loss(x, fake)}

    def configure_optimizers(self, train: TrainSettings) -> list[torch.optim.Optimizer]:
        betas = adam_betas(train, self.config.beta1)
        return [make_optimizer(self.decoder.parameters(), train, **betas),
                make_optimizer(self.discriminator.parameters(), train, lr=train.lr * self.config.disc_lr_scale,
                               **betas)]

    def train_step(self, x: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer],
                   grad_clip: float | None = None) -> dict[str, torch.Tensor]:
        opt_gen, opt_disc = optimizers
        fake = self.fake(x.shape[0], x)
        disc = self.discriminator_loss(x, fake)
        opt_disc.zero_grad(set_to_none=True)
        disc.backward(inputs=list(self.discriminator.parameters()))
        if grad_clip:
            nn.utils.clip_grad_norm_(self.discriminator.parameters(), grad_clip)
        opt_disc.step()
        gen = bce(self.discriminator(fake), 1.0)  # the updated discriminator judges the same fakes
        opt_gen.zero_grad(set_to_none=True)
        gen.backward(inputs=list(self.decoder.parameters()))
        if grad_clip:
            nn.utils.clip_grad_norm_(self.decoder.parameters(), grad_clip)
        opt_gen.step()
        return {"loss": gen.detach(), "generator": gen.detach(), "discriminator": disc.detach()}
