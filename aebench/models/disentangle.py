"""VAEs that pursue disentangled codes: the capacity-annealed beta-VAE (Burgess et al. 2018), FactorVAE (Kim &
Mnih 2018) and beta-TCVAE (Chen et al. 2018). All keep the VAE's generative model, so ``log_importance_weights``
(the ``nll`` metric) is the VAE's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aebench.errors import AebenchError
from aebench.models.base import Encoding, ModelConfig, TrainSettings, make_optimizer, two_player_step
from aebench.models.vae import VAE, gaussian_kl, log_normal, reparameterize


# -- capacity-annealed beta-VAE -----------------------------------------------------------------------
@dataclass
class DisentangledBetaVAEConfig(ModelConfig):
    beta: float = 1000.0  # gamma of Burgess et al. (dSprites); pythae uses 10 with C = 50 over 25 epochs
    c_max: float = 25.0  # final capacity in nats (the paper's dSprites value)
    warmup_steps: int = 100_000  # training steps (train_step calls) over which C grows from 0 to c_max

    def __post_init__(self) -> None:
        if self.beta < 0 or self.c_max < 0:
            raise AebenchError(f"beta and c_max must be >= 0, got beta={self.beta}, c_max={self.c_max}")
        if self.warmup_steps < 0:
            raise AebenchError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


class DisentangledBetaVAE(VAE):
    """beta-VAE with a controlled capacity: rec + beta * |KL(q(z|x) || p(z)) - C| per input, C = c_max *
    min(t / warmup_steps, 1) after t training steps.

    The runner calls ``train_step`` once per batch, so the schedule counts steps (the paper's iterations), not
    epochs. The count is the buffer ``steps_done``: saved in the state dict, so a resumed run goes on with the
    same C. ``loss`` alone (evaluation) does not advance it.
    """

    Config = DisentangledBetaVAEConfig
    card = {
        "objective": "rec + beta * |KL_i - C|, C = c_max * min(t / warmup_steps, 1) at training step t; "
                     "|.| per input before the batch mean",
        "reduction": "rec: -log p(x|z) summed over pixels; KL analytic, summed over latent dims; mean over batch",
        "weights": "beta = 1000, c_max = 25 nats, warmup_steps = 100000 (Burgess et al.'s dSprites settings)",
        "optimisers": "one optimiser for encoder and decoder",
        "paper": "Burgess, Higgins, Pal, Matthey, Watters, Desjardins & Lerchner 2018, Understanding "
                 "disentangling in beta-VAE",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def capacity(self) -> torch.Tensor:
        """The current target KL C (a tensor on the model's device: no host sync)."""
        if self.config.warmup_steps == 0:
            return torch.full((), self.config.c_max, device=self.steps_done.device)
        frac = (self.steps_done.float() / self.config.warmup_steps).clamp(max=1.0)
        return frac * self.config.c_max

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        rec = self.likelihood.nll(self.decode(reparameterize(enc)), x).mean()
        kl_each = gaussian_kl(enc).sum(1)
        c = self.capacity()
        penalty = (kl_each - c).abs().mean()
        return {"loss": rec + self.config.beta * penalty, "reconstruction": rec, "kl": kl_each.mean(),
                "capacity_gap": penalty, "capacity": c.detach()}

    def train_step(self, x: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer],
                   grad_clip: float | None = None) -> dict[str, torch.Tensor]:
        terms = super().train_step(x, optimizers, grad_clip)
        self.steps_done.add_(1)
        return terms


# -- FactorVAE --------------------------------------------------------------------------------------------
@dataclass
class FactorVAEConfig(ModelConfig):
    gamma: float = 6.4  # weight of the TC estimate (the paper's 3D Shapes value, the reference code's default)
    disc_hidden: list[int] = field(default_factory=lambda: [1000] * 6)  # the paper's 6 x 1000 leaky-ReLU MLP
    disc_lr_scale: float = 1.0  # discriminator lr / train.lr (paper: 1e-4 for both)
    disc_betas: list[float] = field(default_factory=lambda: [0.5, 0.9])  # the discriminator's Adam betas (paper)

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise AebenchError(f"gamma must be >= 0, got {self.gamma}")
        if any(w <= 0 for w in self.disc_hidden):
            raise AebenchError(f"disc_hidden widths must be positive, got {self.disc_hidden}")
        if self.disc_lr_scale <= 0:
            raise AebenchError(f"disc_lr_scale must be > 0, got {self.disc_lr_scale}")
        if len(self.disc_betas) != 2 or not all(0 <= b < 1 for b in self.disc_betas):
            raise AebenchError(f"disc_betas must be two numbers in [0, 1), got {self.disc_betas}")


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each latent dimension shuffled independently across the batch: samples of prod_d q(z_d)."""
    idx = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)
    return torch.gather(z, 0, idx)


def _tc_discriminator(latent_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = latent_dim
    for w in hidden:
        layers += [nn.Linear(prev, w), nn.LeakyReLU(0.2)]
        prev = w
    return nn.Sequential(*layers, nn.Linear(prev, 2))  # logits: [from q(z), from the permuted product]


class FactorVAE(VAE):
    """FactorVAE: the VAE plus gamma * TC(z), the total correlation estimated by a discriminator's log-odds.

    As in pythae, each batch is split in two halves: the first gives the VAE terms and the "joint" codes, the
    second (dimension-wise permuted) the discriminator's samples of prod_d q(z_d). Two optimisers, as WAE-GAN:
    the VAE's (encoder + decoder) and the discriminator's (Adam betas 0.5, 0.9 as in the paper).
    """

    Config = FactorVAEConfig
    card = {
        "objective": "VAE: rec + KL + gamma * tc on the first half of the batch, tc = mean(D_0(z) - D_1(z)) (the "
                     "discriminator's log-odds); discriminator: 0.5 * [CE(D(z), 0) + CE(D(perm(z')), 1)], z' the "
                     "second half's codes, each dimension permuted across the half-batch",
        "reduction": "rec summed over pixels, KL over latent dims; means over the (half-)batch",
        "weights": "gamma = 6.4 (the TC weight); disc_hidden = 6 x 1000 leaky-ReLU(0.2), disc_lr_scale = 1 "
                   "(discriminator lr = disc_lr_scale * train.lr), disc_betas = (0.5, 0.9) (with adam / adamw)",
        "optimisers": "two of train.optimizer, one step each per batch: encoder + decoder on 'loss', then the "
                      "discriminator on 'discriminator' (detached codes)",
        "paper": "Kim & Mnih 2018, Disentangling by Factorising",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.discriminator = _tc_discriminator(self.latent_dim, self.config.disc_hidden)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        if n < 2:
            raise AebenchError("factor-vae needs batches of at least 2 (one half for the VAE, one for the "
                               "discriminator)")
        half = (n + 1) // 2
        enc = self.encode(x)
        z = reparameterize(enc)
        enc1 = Encoding(enc.mean[:half], enc.logvar[:half])
        z1, z2 = z[:half], z[half:]
        rec = self.likelihood.nll(self.decode(z1), x[:half]).mean()
        kl = gaussian_kl(enc1).sum(1).mean()
        logits = self.discriminator(z1)
        tc = (logits[:, 0] - logits[:, 1]).mean()
        joint = self.discriminator(z1.detach())
        product = self.discriminator(permute_dims(z2.detach()))
        disc = 0.5 * (F.cross_entropy(joint, torch.zeros(joint.shape[0], dtype=torch.long, device=x.device))
                      + F.cross_entropy(product, torch.ones(product.shape[0], dtype=torch.long, device=x.device)))
        return {"loss": rec + kl + self.config.gamma * tc, "reconstruction": rec, "kl": kl, "tc": tc,
                "discriminator": disc}

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        disc = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if id(p) not in disc]

    def configure_optimizers(self, train: TrainSettings) -> list[torch.optim.Optimizer]:
        extra = {"betas": tuple(self.config.disc_betas)} if train.optimizer in ("adam", "adamw") else {}
        return [make_optimizer(self.autoencoder_parameters(), train),
                make_optimizer(self.discriminator.parameters(), train, lr=train.lr * self.config.disc_lr_scale,
                               **extra)]

    def train_step(self, x: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer],
                   grad_clip: float | None = None) -> dict[str, torch.Tensor]:
        """The VAE's step, then the discriminator's on the same batch (its term saw only detached codes)."""
        opt_ae, opt_disc = optimizers
        return two_player_step(self.loss(x), self.autoencoder_parameters(), opt_ae,
                               list(self.discriminator.parameters()), opt_disc, grad_clip)


# -- beta-TCVAE -------------------------------------------------------------------------------------------
def aggregate_log_q(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
                    estimator: str = "mws") -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch estimates of log q(z_i) (B,) and of log q(z_id) per dimension (B, D), q(z) = (1/N) sum_n q(z|x_n).

    ``mws`` (minibatch weighted sampling, Chen et al. eq. S4): log [1/(N B) sum_j q(z_i|x_j)], as published and
    as in the reference code; biased (with the whole data set as the batch it is log q(z) - log N).
    ``mss`` (minibatch stratified sampling): row i weighs its own x_i by 1/N, one other batch member (the next,
    cyclically) by (N - M)/(N M) and the remaining M - 1 by 1/M, M = B - 1, which makes the estimate of q(z_i)
    unbiased over random batches. This follows the paper's formula, not the reference code's weight matrix,
    which sets columns instead of the diagonal (rtqichen/beta-tcvae pull request #1; copied by pythae).
    """
    b = z.shape[0]
    n = int(dataset_size)
    if n < b:
        raise AebenchError(f"beta-tc-vae: dataset_size {n} is smaller than the batch ({b}); set params.dataset_size "
                           "to the training set's size")
    mat = -0.5 * ((z.unsqueeze(1) - mean.unsqueeze(0)).pow(2) / logvar.exp().unsqueeze(0) + logvar.unsqueeze(0)
                  + math.log(2 * math.pi))  # (B, B, D): log q(z_id | x_j)
    if estimator == "mws":
        log_norm = math.log(n * b)
        return torch.logsumexp(mat.sum(2), dim=1) - log_norm, torch.logsumexp(mat, dim=1) - log_norm
    if estimator != "mss":
        raise AebenchError(f"unknown estimator {estimator!r}; allowed: mws, mss")
    if b < 2:
        raise AebenchError("beta-tc-vae with estimator mss needs batches of at least 2")
    m = b - 1
    w = torch.full((b, b), 1.0 / m, dtype=z.dtype, device=z.device)
    rows = torch.arange(b, device=z.device)
    w[rows, (rows + 1) % b] = (n - m) / (n * m)
    w[rows, rows] = 1.0 / n
    log_w = w.log()
    return torch.logsumexp(log_w + mat.sum(2), dim=1), torch.logsumexp(log_w.unsqueeze(2) + mat, dim=1)


@dataclass
class BetaTCVAEConfig(ModelConfig):
    alpha: float = 1.0  # index-code mutual information
    beta: float = 6.0  # total correlation (the paper tunes it; 6 is the common reference setting)
    gamma: float = 1.0  # dimension-wise KL
    estimator: Literal["mws", "mss"] = "mss"  # pythae's default; mws (the paper's first) adds large constants
    dataset_size: int = 60_000  # N in the estimators: the training set's size (MNIST's by default)

    def __post_init__(self) -> None:
        if min(self.alpha, self.beta, self.gamma) < 0:
            raise AebenchError(f"alpha, beta, gamma must be >= 0, got {self.alpha}, {self.beta}, {self.gamma}")
        if self.dataset_size < 1:
            raise AebenchError(f"dataset_size must be >= 1, got {self.dataset_size}")


class BetaTCVAE(VAE):
    """beta-TCVAE: the KL split into index-code MI, total correlation and dimension-wise KL, weighted apart.

    With z_i ~ q(z|x_i): mi = log q(z_i|x_i) - log q(z_i), tc = log q(z_i) - sum_d log q(z_id), dimwise_kl =
    sum_d log q(z_id) - log p(z_i); the three sum to the one-sample KL whatever the estimator of q.
    ``kl`` (analytic) is reported beside them for comparison and is not part of ``loss``.
    """

    Config = BetaTCVAEConfig
    card = {
        "objective": "rec + alpha * mi + beta * tc + gamma * dimwise_kl, log q(z) and log q(z_d) by minibatch "
                     "weighted (mws) or stratified (mss) sampling over the batch, N = dataset_size",
        "reduction": "rec summed over pixels, log-densities over latent dims; mean over the batch",
        "weights": "alpha = 1, beta = 6, gamma = 1, estimator = mss, dataset_size = 60000 (MNIST's training set: "
                   "set it to the suite's training size)",
        "optimisers": "one optimiser for encoder and decoder",
        "paper": "Chen, Li, Grosse & Duvenaud 2018, Isolating Sources of Disentanglement in Variational "
                 "Autoencoders",
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        z = reparameterize(enc)
        rec = self.likelihood.nll(self.decode(z), x).mean()
        log_qz_x = log_normal(z, enc.mean, enc.logvar)
        log_pz = log_normal(z)
        log_qz, log_qz_dims = aggregate_log_q(z, enc.mean, enc.logvar, self.config.dataset_size,
                                              self.config.estimator)
        log_prod = log_qz_dims.sum(1)
        mi = (log_qz_x - log_qz).mean()
        tc = (log_qz - log_prod).mean()
        dimwise = (log_prod - log_pz).mean()
        c = self.config
        return {"loss": rec + c.alpha * mi + c.beta * tc + c.gamma * dimwise, "reconstruction": rec,
                "mi": mi, "tc": tc, "dimwise_kl": dimwise, "kl": gaussian_kl(enc).sum(1).mean().detach()}
