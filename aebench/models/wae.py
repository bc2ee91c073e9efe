"""Wasserstein autoencoders (Tolstikhin et al. 2018): a deterministic encoder whose aggregate code
distribution is pulled towards the prior N(0, I), by an MMD penalty or by a latent adversary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from aebench.errors import AebenchError
from aebench.models.backbones import make_activation
from aebench.models.base import Autoencoder, ModelConfig, TrainSettings, make_optimizer, two_player_step

WAE_SCALES = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]  # the kernel scales of the WAE paper's code


def imq_mmd(z: torch.Tensor, prior: torch.Tensor, scales: Sequence[float] = WAE_SCALES,
            prior_var: float = 1.0) -> torch.Tensor:
    """Unbiased MMD^2 between samples ``z`` (n, d) and ``prior`` (m, d), IMQ kernel summed over scales.

    k(a, b) = sum_s C_s / (C_s + ||a - b||^2) with C_s = 2 d prior_var s; the within-sample sums leave
    out the diagonal, so the estimate is unbiased (and may be slightly negative when both match).
    """
    n, d = z.shape
    m = prior.shape[0]
    if n < 2 or m < 2:
        raise AebenchError("the MMD estimate needs at least 2 codes and 2 prior samples per batch")
    c = torch.as_tensor([2.0 * d * prior_var * s for s in scales], dtype=z.dtype, device=z.device).view(-1, 1, 1)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sq = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)
        return (c / (c + sq)).sum(0)

    kzz, kpp, kzp = kernel(z, z), kernel(prior, prior), kernel(z, prior)
    off_zz = (kzz.sum() - kzz.diagonal().sum()) / (n * (n - 1))
    off_pp = (kpp.sum() - kpp.diagonal().sum()) / (m * (m - 1))
    return off_zz + off_pp - 2 * kzp.mean()


@dataclass
class WAEMMDConfig(ModelConfig):
    lam: float = 10.0  # weight of the MMD (the WAE paper's MNIST value)
    scales: list[float] = field(default_factory=lambda: list(WAE_SCALES))

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise AebenchError(f"lam must be >= 0, got {self.lam}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise AebenchError(f"scales must be a non-empty list of positive numbers, got {self.scales}")


class WAEMMD(Autoencoder):
    """WAE-MMD: reconstruction plus lam * MMD(codes, N(0, I)), inverse multiquadratics kernel, unbiased."""

    Config = WAEMMDConfig
    card = {
        "objective": "-log p(x | Dec(z)) + lam * MMD^2(z, z_p), z = Enc(x) deterministic codes of the batch, z_p ~ "
                     "N(0, I) as many fresh draws; unbiased estimate (within-sample diagonals left out) with the IMQ "
                     "kernel k(a, b) = sum_s C_s / (C_s + ||a - b||^2), C_s = 2 d s over the scales",
        "reduction": "-log p summed over pixels (nats per image) and averaged over the batch; MMD^2 one estimate per "
                     "batch (not per image)",
        "weights": "lam = 10 (the WAE paper's MNIST value, there beside a squared-error cost: here the cost is the "
                   "suite's NLL in nats per image), scales = [0.1, 0.2, 0.5, 1, 2, 5, 10] (the paper's code)",
        "optimisers": "one: train.optimizer (lr, weight_decay) over encoder and decoder",
        "paper": "Tolstikhin, Bousquet, Gelly & Schoelkopf 2018, Wasserstein Auto-Encoders (ICLR)",
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x).mean
        rec = self.likelihood.nll(self.decode(z), x).mean()
        mmd = imq_mmd(z, torch.randn_like(z), self.config.scales)
        return {"loss": rec + self.config.lam * mmd, "reconstruction": rec, "mmd": mmd}


@dataclass
class WAEGANConfig(ModelConfig):
    lam: float = 1.0  # weight of the adversarial term (the WAE paper's MNIST value)
    disc_hidden: list[int] = field(default_factory=lambda: [512, 512, 512, 512])  # the paper's latent discriminator
    disc_lr_scale: float = 0.5  # discriminator learning rate / train.lr (paper: 5e-4 against 1e-3)

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise AebenchError(f"lam must be >= 0, got {self.lam}")
        if any(w <= 0 for w in self.disc_hidden):
            raise AebenchError(f"disc_hidden widths must be positive, got {self.disc_hidden}")
        if self.disc_lr_scale <= 0:
            raise AebenchError(f"disc_lr_scale must be > 0, got {self.disc_lr_scale}")


def _discriminator(latent_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = latent_dim
    for w in hidden:
        layers += [nn.Linear(prev, w), make_activation("relu")]
        prev = w
    return nn.Sequential(*layers, nn.Linear(prev, 1))


class WAEGAN(Autoencoder):
    """WAE-GAN: reconstruction plus an adversarial term from a latent discriminator trained against N(0, I).

    Two optimizers: the autoencoder minimises rec + lam * -log D(z) (the non-saturating form); the
    discriminator, a separate MLP on codes, minimises -log D(z_prior) - log(1 - D(z)). ``loss`` is the
    autoencoder's objective; ``discriminator`` is reported beside it.
    """

    Config = WAEGANConfig
    card = {
        "objective": "autoencoder: -log p(x | Dec(z)) + lam * -log sigmoid(D(z)) (non-saturating), z = Enc(x) "
                     "deterministic; discriminator ('discriminator'): -log sigmoid(D(z_p)) - log(1 - sigmoid(D(z))), "
                     "z_p ~ N(0, I), z detached; D an MLP on codes",
        "reduction": "-log p summed over pixels (nats per image); every term averaged over the batch (each BCE its "
                     "own batch mean)",
        "weights": "lam = 1 (the WAE paper's MNIST value), disc_hidden = [512, 512, 512, 512] ReLU (the paper's), "
                   "disc_lr_scale = 0.5 (discriminator lr = 0.5 * train.lr; the paper: 5e-4 against 1e-3)",
        "optimisers": "two of train.optimizer, one step each per batch on the same forward pass: autoencoder "
                      "(encoder + decoder) first, then the discriminator (on the codes from before that step)",
        "paper": "Tolstikhin, Bousquet, Gelly & Schoelkopf 2018, Wasserstein Auto-Encoders (ICLR)",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood, latent_dim: int,
                 config: WAEGANConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        self.discriminator = _discriminator(self.latent_dim, self.config.disc_hidden)

    def _terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x).mean
        rec = self.likelihood.nll(self.decode(z), x).mean()
        fooled = self.discriminator(z)
        adversarial = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        prior = torch.randn_like(z)
        judged = self.discriminator(torch.cat([prior, z.detach()]))
        labels = torch.cat([torch.ones_like(fooled), torch.zeros_like(fooled)])
        disc = 2 * F.binary_cross_entropy_with_logits(judged, labels)  # mean of the two halves, summed
        return {"loss": rec + self.config.lam * adversarial, "reconstruction": rec,
                "adversarial": adversarial, "discriminator": disc}

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._terms(x)

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        disc = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if id(p) not in disc]

    def configure_optimizers(self, train: TrainSettings) -> list[torch.optim.Optimizer]:
        return [make_optimizer(self.autoencoder_parameters(), train),
                make_optimizer(self.discriminator.parameters(), train, lr=train.lr * self.config.disc_lr_scale)]

    def train_step(self, x: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer],
                   grad_clip: float | None = None) -> dict[str, torch.Tensor]:
        """One step of each player on the same batch: autoencoder first, then the discriminator (whose term saw
        only detached codes and its own, not yet updated, weights)."""
        opt_ae, opt_disc = optimizers
        return two_player_step(self._terms(x), self.autoencoder_parameters(), opt_ae,
                               list(self.discriminator.parameters()), opt_disc, grad_clip)
