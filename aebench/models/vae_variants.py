"""VAE variants that change the prior matching or the variances: InfoVAE-MMD (Zhao et al. 2019), the
constant-variance VAE (Ghosh et al. 2020) and the two-stage VAE's first stage (Dai & Wipf 2019; its second
stage is the ``two-stage`` sampler, aebench/models/two_stage_sampler.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from aebench.errors import AebenchError
from aebench.models.base import Encoding, ModelConfig
from aebench.models.vae import VAE, VAEConfig, gaussian_kl, reparameterize
from aebench.models.wae import WAE_SCALES, imq_mmd


def rbf_mmd(z: torch.Tensor, prior: torch.Tensor, bandwidth: float = 1.0) -> torch.Tensor:
    """Unbiased MMD^2 between ``z`` (n, d) and ``prior`` (m, d) with k(a, b) = exp(-||a - b||^2 / (2 d bw^2)).

    The within-sample sums leave out the diagonal (as ``imq_mmd``); the kernel's scale is pythae's InfoVAE's.
    """
    n, d = z.shape
    m = prior.shape[0]
    if n < 2 or m < 2:
        raise AebenchError("the MMD estimate needs at least 2 codes and 2 prior samples per batch")
    c = 2.0 * d * bandwidth**2

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1) / c)

    kzz, kpp, kzp = kernel(z, z), kernel(prior, prior), kernel(z, prior)
    off_zz = (kzz.sum() - kzz.diagonal().sum()) / (n * (n - 1))
    off_pp = (kpp.sum() - kpp.diagonal().sum()) / (m * (m - 1))
    return off_zz + off_pp - 2 * kzp.mean()


# -- InfoVAE ------------------------------------------------------------------------------------------------
@dataclass
class InfoVAEConfig(ModelConfig):
    alpha: float = 0.0  # the paper's MMD-VAE setting
    lam: float = 1000.0  # lambda: the MMD gets alpha + lam - 1 = 999 (the paper's MNIST scale)
    kernel: Literal["rbf", "imq"] = "rbf"  # the paper's Gaussian kernel; imq = WAE's multi-scale kernel
    bandwidth: float = 1.0  # rbf: k = exp(-||a - b||^2 / (2 d bandwidth^2))
    scales: list[float] = field(default_factory=lambda: list(WAE_SCALES))  # imq: C_s = 2 d s

    def __post_init__(self) -> None:
        if self.alpha > 1:
            raise AebenchError(f"alpha must be <= 1 (the KL weight 1 - alpha is >= 0), got {self.alpha}")
        if self.alpha + self.lam - 1 < 0:
            raise AebenchError(f"alpha + lam - 1 must be >= 0 (the MMD weight; negative would push q(z) away "
                               f"from the prior), got alpha={self.alpha}, lam={self.lam}")
        if self.bandwidth <= 0:
            raise AebenchError(f"bandwidth must be > 0, got {self.bandwidth}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise AebenchError(f"scales must be a non-empty list of positive numbers, got {self.scales}")


class InfoVAE(VAE):
    """InfoVAE with the MMD divergence: rec + (1 - alpha) KL(q(z|x) || p) + (alpha + lam - 1) MMD(q(z), p).

    The MMD compares the batch's sampled codes with as many N(0, I) draws (unbiased estimate).
    """

    Config = InfoVAEConfig
    card = {
        "objective": "rec + (1 - alpha) * KL + (alpha + lam - 1) * MMD^2(z ~ q(z|x) over the batch, N(0, I) draws)",
        "reduction": "rec summed over pixels, KL over latent dims; mean over the batch; MMD unbiased per batch",
        "weights": "alpha = 0, lam = 1000 (MMD weight 999), kernel rbf with bandwidth 1 (or imq, WAE scales)",
        "optimisers": "one optimiser for encoder and decoder",
        "paper": "Zhao, Song & Ermon 2019, InfoVAE: Balancing Learning and Inference in Variational Autoencoders",
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        z = reparameterize(enc)
        rec = self.likelihood.nll(self.decode(z), x).mean()
        kl = gaussian_kl(enc).sum(1).mean()
        prior = torch.randn_like(z)
        c = self.config
        mmd = rbf_mmd(z, prior, c.bandwidth) if c.kernel == "rbf" else imq_mmd(z, prior, c.scales)
        return {"loss": rec + (1 - c.alpha) * kl + (c.alpha + c.lam - 1) * mmd, "reconstruction": rec,
                "kl": kl, "mmd": mmd}


# -- constant-variance VAE ----------------------------------------------------------------------------------
@dataclass
class CVVAEConfig(VAEConfig):
    sigma: float = 0.7  # the encoder's fixed standard deviation (Ghosh et al.'s code: constant_sigma = 0.7)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sigma > 0:
            raise AebenchError(f"sigma must be > 0, got {self.sigma}")


class CVVAE(VAE):
    """Constant-variance VAE: q(z|x) = N(mu(x), sigma^2 I) with sigma fixed; only the mean is learned.

    The encoder has one output per latent dimension; ``encode`` adds the constant log-variance, so the KL,
    the sampling and the importance weights are the VAE's with that variance.
    """

    Config = CVVAEConfig
    stats_per_dim = 1
    card = {
        "objective": "rec + beta * KL(N(mu(x), sigma^2 I) || N(0, I)), one z ~ q(z|x); sigma fixed, mu learned",
        "reduction": "rec summed over pixels, KL over latent dims; mean over the batch",
        "weights": "sigma = 0.7 (the RAE authors' CV-VAE setting), beta = 1",
        "optimisers": "one optimiser for encoder and decoder",
        "paper": "Ghosh, Sajjadi, Vergari, Black & Schoelkopf 2020, From Variational to Deterministic "
                 "Autoencoders (the CV-VAE baseline)",
    }

    def encode(self, x: torch.Tensor) -> Encoding:
        mean = self.encoder(x)
        return Encoding(mean, torch.full_like(mean, 2 * math.log(self.config.sigma)))


# -- two-stage VAE (first stage) -----------------------------------------------------------------------------
class LearnedGaussian:
    """Pixels as Gaussians with one learned variance gamma = exp(log_gamma) (Dai & Wipf's decoder)."""

    name = "gaussian"

    def __init__(self, log_gamma: nn.Parameter):
        self.log_gamma = log_gamma

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = x[0].numel()
        sq = (output - x).pow(2).flatten(1).sum(1)
        return sq / (2 * self.log_gamma.exp()) + 0.5 * d * (math.log(2 * math.pi) + self.log_gamma)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return output.clamp(0.0, 1.0)


@dataclass
class TwoStageVAEConfig(ModelConfig):
    learn_gamma: bool = True  # Gaussian likelihood: learn the decoder variance (the paper); ignored for Bernoulli


class TwoStageVAE(VAE):
    """The first stage of the two-stage VAE: a VAE whose Gaussian decoder variance gamma is learned.

    With the ``gaussian`` likelihood, gamma starts at the suite's sigma^2 and is trained with the rest (Dai &
    Wipf: a learned gamma -> 0 lets the VAE find the data manifold); ``gamma`` is logged. With ``bernoulli``
    there is no variance to learn and the first stage is the plain VAE. Sample through the ``two-stage``
    sampler, which fits the second-stage VAE to the codes.
    """

    Config = TwoStageVAEConfig
    card = {
        "objective": "rec + KL, rec = ||x - mu(z)||^2 / (2 gamma) + (D/2) log(2 pi gamma) with gamma learned "
                     "(gaussian likelihood) or the BCE (bernoulli: the plain VAE); stage 2: the two-stage sampler",
        "reduction": "rec summed over pixels, KL over latent dims; mean over the batch",
        "weights": "no loss weights (the KL's is 1); learn_gamma = true, gamma initialised to the suite's sigma^2",
        "optimisers": "one optimiser for encoder, decoder and log gamma",
        "paper": "Dai & Wipf 2019, Diagnosing and Enhancing VAE Models",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Any, latent_dim: int,
                 config: TwoStageVAEConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        if self.config.learn_gamma and getattr(likelihood, "name", None) == "gaussian":
            self.log_gamma = nn.Parameter(torch.tensor(2 * math.log(likelihood.sigma)))
            self.likelihood = LearnedGaussian(self.log_gamma)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        rec = self.likelihood.nll(self.decode(reparameterize(enc)), x).mean()
        kl = gaussian_kl(enc).sum(1).mean()
        terms = {"loss": rec + kl, "reconstruction": rec, "kl": kl}
        if isinstance(self.likelihood, LearnedGaussian):
            terms["gamma"] = self.log_gamma.detach().exp()
        return terms
