"""Autoencoders with adversaries: the adversarial autoencoder (Makhzani et al. 2016), whose latent discriminator
pulls the codes towards N(0, I), and VAE-GAN (Larsen et al. 2016), whose image discriminator both judges the
decoder's images and supplies the features of the reconstruction term."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, Encoding, ModelConfig, TrainSettings, make_optimizer
from aebench.models.gan import ImageDiscriminator, bce, soft_images
from aebench.models.vae import gaussian_kl, reparameterize
from aebench.models.wae import WAEGAN


@dataclass
class AAEConfig(ModelConfig):
    adversarial_loss_scale: float = 0.5  # weight of the encoder's adversarial term (pythae's default)
    reconstruction_loss_scale: float = 1.0  # weight of the reconstruction term (pythae's default)
    deterministic_posterior: bool = False  # pythae's default: a Gaussian encoder, z = mean + std * eps
    disc_hidden: list[int] = field(default_factory=lambda: [256])  # pythae's latent discriminator: one 256 layer
    disc_lr_scale: float = 1.0  # discriminator learning rate / train.lr (pythae: both 1e-4)

    def __post_init__(self) -> None:
        if not 0.0 <= self.adversarial_loss_scale <= 1.0:
            raise AebenchError(f"adversarial_loss_scale must be in [0, 1], got {self.adversarial_loss_scale}")
        if self.reconstruction_loss_scale < 0:
            raise AebenchError(f"reconstruction_loss_scale must be >= 0, got {self.reconstruction_loss_scale}")
        if any(w <= 0 for w in self.disc_hidden):
            raise AebenchError(f"disc_hidden widths must be positive, got {self.disc_hidden}")
        if self.disc_lr_scale <= 0:
            raise AebenchError(f"disc_lr_scale must be > 0, got {self.disc_lr_scale}")


class AAE(WAEGAN):
    """Adversarial AE: reconstruction of a posterior sample plus an adversarial term from a latent discriminator.

    As pythae's Adversarial_AE: a Gaussian encoder by default (``deterministic_posterior`` makes it a Dirac
    at the mean), the autoencoder minimises s_rec * rec + s_adv * -log D(z) (non-saturating), the
    discriminator -log D(z_prior) - log(1 - D(z)). Two optimizers, as the WAE-GAN's.
    """

    Config = AAEConfig
    probabilistic = True
    stats_per_dim = 2
    card = {
        "objective": "autoencoder: s_rec * -log p(x | z) + s_adv * -log sigmoid(D(z)), z = mean + std * eps "
                     "(z = mean if deterministic_posterior); discriminator: -log sigmoid(D(z_p)) "
                     "- log(1 - sigmoid(D(z))), z_p ~ N(0, I), z detached",
        "reduction": "-log p(x|z) summed over pixels, every term averaged over the batch",
        "weights": "adversarial_loss_scale s_adv = 0.5, reconstruction_loss_scale s_rec = 1 (pythae); latent "
                   "discriminator MLP [256] (pythae), disc_lr_scale = 1",
        "optimisers": "two, one step each per batch on the same forward pass: autoencoder (encoder + decoder), "
                      "then discriminator",
        "paper": "Makhzani, Shlens, Jaitly, Goodfellow, Frey. Adversarial autoencoders. ICLR 2016 workshop",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood, latent_dim: int,
                 config: AAEConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        if self.config.deterministic_posterior:
            self.probabilistic = False  # the log-variance half of the encoder's output is then unused

    def encode(self, x: torch.Tensor) -> Encoding:
        enc = super().encode(x)
        return Encoding(enc.mean) if self.config.deterministic_posterior else enc

    def _terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        enc = self.encode(x)
        z = enc.mean if c.deterministic_posterior else reparameterize(enc)
        rec = self.likelihood.nll(self.decode(z), x).mean()
        adversarial = bce(self.discriminator(z).squeeze(1), 1.0)
        prior = torch.randn_like(z)
        disc = bce(self.discriminator(prior).squeeze(1), 1.0) + bce(self.discriminator(z.detach()).squeeze(1), 0.0)
        return {"loss": c.reconstruction_loss_scale * rec + c.adversarial_loss_scale * adversarial,
                "reconstruction": rec, "adversarial": adversarial, "discriminator": disc}


@dataclass
class VAEGANConfig(ModelConfig):
    adversarial_loss_scale: float = 0.5  # gamma's counterpart: the decoder minimises (1 - s) llike - s L_disc
    reconstruction_layer: int = -1  # discriminator block whose features define llike (-1: its last hidden block)
    equilibrium: float = 0.68  # the discriminator's BCE terms are kept near this (pythae's default)
    margin: float = 0.4  # ... within this margin: outside it the winning player skips its step
    gan_reconstructions: bool = True  # the discriminator also judges reconstructions (the paper; pythae: no)

    def __post_init__(self) -> None:
        if not 0.0 <= self.adversarial_loss_scale <= 1.0:
            raise AebenchError(f"adversarial_loss_scale must be in [0, 1], got {self.adversarial_loss_scale}")
        if self.reconstruction_layer == 0 or self.reconstruction_layer < -1:
            raise AebenchError(f"reconstruction_layer must be -1 or a block number >= 1, "
                               f"got {self.reconstruction_layer}")
        if self.margin < 0:
            raise AebenchError(f"margin must be >= 0, got {self.margin}")


class VAEGAN(Autoencoder):
    """VAE-GAN: a VAE whose reconstruction term is a Gaussian in the features of an image discriminator's hidden layer.

    Three players, each stepped on its own loss only (gradients go to its own parameters):
    encoder: KL + llike; decoder: (1 - s) llike - s L_disc; discriminator: L_disc, the BCE of real images
    against decoded prior samples (and reconstructions). As pythae (from Larsen et al.'s reference code), a
    player that is winning too clearly skips its step: the discriminator when its real or prior-sample BCE is
    below equilibrium - margin, the decoder when one is above equilibrium + margin (both step if both would skip).
    """

    Config = VAEGANConfig
    probabilistic = True
    stats_per_dim = 2
    card = {
        "objective": "encoder: KL(q(z|x) || N(0, I)) + llike; decoder: (1 - s) llike - s L_disc; discriminator: "
                     "L_disc = -log sigmoid(D(x)) - log(1 - sigmoid(D(x~))) - log(1 - sigmoid(D(x_p))); "
                     "llike = 1/2 ||D_l(x) - D_l(x~)||^2, x~ = Dec(z), z ~ q(z|x), x_p = Dec(z_p), z_p ~ N(0, I)",
        "reduction": "KL summed over latent dimensions, llike over the features of block l, every term averaged "
                     "over the batch (each BCE its own batch mean)",
        "weights": "adversarial_loss_scale s = 0.5, reconstruction_layer l = -1 (the discriminator's last hidden "
                   "block), equilibrium = 0.68, margin = 0.4 (pythae); gan_reconstructions = true (the paper)",
        "optimisers": "three, one step each per batch on the same forward pass: encoder, decoder, discriminator "
                      "(the backbone's encoder shape with one logit); a player winning beyond the margin skips",
        "paper": "Larsen, Sonderby, Larochelle, Winther. Autoencoding beyond pixels using a learned similarity "
                 "metric. ICML 2016",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood, latent_dim: int,
                 config: VAEGANConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        self.discriminator = ImageDiscriminator(encoder)
        layer = self.config.reconstruction_layer
        if self.discriminator.depth == 0 or layer > self.discriminator.depth:
            raise AebenchError(f"vae-gan's reconstruction_layer {layer} needs a discriminator block it does not have: "
                               f"the backbone gives it {self.discriminator.depth} hidden blocks")

    def players(self) -> dict[str, list[nn.Parameter]]:
        """Each player's parameters: disjoint, and together all of the model's."""
        return {"encoder": list(self.encoder.parameters()), "decoder": list(self.decoder.parameters()),
                "discriminator": list(self.discriminator.parameters())}

    def _terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        enc = self.encode(x)
        kl = gaussian_kl(enc).sum(1).mean()
        recon = soft_images(self, self.decode(reparameterize(enc)))
        sampled = soft_images(self, self.decode(torch.randn_like(enc.mean)))
        logit_real, f_real = self.discriminator(x, layer=c.reconstruction_layer)
        logit_recon, f_recon = self.discriminator(recon, layer=c.reconstruction_layer)
        llike = 0.5 * (f_real - f_recon).pow(2).sum(1).mean()
        real, prior = bce(logit_real, 1.0), bce(self.discriminator(sampled), 0.0)
        terms = {"llike": llike, "kl": kl, "disc_real": real, "disc_prior": prior}
        disc = real + prior
        if c.gan_reconstructions:
            terms["disc_recon"] = bce(logit_recon, 0.0)
            disc = disc + terms["disc_recon"]
        s = c.adversarial_loss_scale
        return {"loss": kl + llike, **terms, "discriminator": disc, "decoder": (1 - s) * llike - s * disc}

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The encoder's objective (KL + llike) as ``loss``, the other players' beside it."""
        return self._terms(x)

    def updates(self, terms: dict[str, torch.Tensor]) -> tuple[bool, bool]:
        """(decoder steps, discriminator steps) by the equilibrium rule; one host sync per step."""
        lo, hi = self.config.equilibrium - self.config.margin, self.config.equilibrium + self.config.margin
        real, prior = float(terms["disc_real"].detach()), float(terms["disc_prior"].detach())
        disc = not (real < lo or prior < lo)
        dec = not (real > hi or prior > hi)
        return (True, True) if not (dec or disc) else (dec, disc)

    def configure_optimizers(self, train: TrainSettings) -> list[torch.optim.Optimizer]:
        return [make_optimizer(params, train) for params in self.players().values()]

    def train_step(self, x: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer],
                   grad_clip: float | None = None) -> dict[str, torch.Tensor]:
        """Each player's gradient of its own loss, taken on one forward pass, then the players' steps."""
        terms = self._terms(x)
        dec_step, disc_step = self.updates(terms)
        players = self.players()
        plan = [("encoder", terms["loss"], True), ("decoder", terms["decoder"], dec_step),
                ("discriminator", terms["discriminator"], disc_step)]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        for i, (name, objective, step) in enumerate(plan):
            if step:
                objective.backward(inputs=players[name], retain_graph=i < len(plan) - 1)
        for (name, _, step), opt in zip(plan, optimizers):
            if step:
                if grad_clip:
                    nn.utils.clip_grad_norm_(players[name], grad_clip)
                opt.step()
        out = {k: v.detach() for k, v in terms.items()}
        device = terms["loss"].device
        out["decoder_steps"] = torch.tensor(float(dec_step), device=device)
        out["discriminator_steps"] = torch.tensor(float(disc_step), device=device)
        return out
