"""The variational autoencoder (Kingma & Welling 2014) and what its relatives share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, Encoding, ModelConfig


def gaussian_kl(enc: Encoding) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per sample and dimension, in closed form."""
    return 0.5 * (enc.mean.pow(2) + enc.logvar.exp() - 1.0 - enc.logvar)


def reparameterize(enc: Encoding, k: int | None = None) -> torch.Tensor:
    """z = mean + std * eps; with ``k``, k samples per input, shaped (k, B, D)."""
    std = enc.std
    if k is None:
        return enc.mean + std * torch.randn_like(std)
    eps = torch.randn((k, *std.shape), device=std.device, dtype=std.dtype)
    return enc.mean.unsqueeze(0) + std.unsqueeze(0) * eps


def log_normal(z: torch.Tensor, mean: torch.Tensor | None = None, logvar: torch.Tensor | None = None) -> torch.Tensor:
    """log N(z; mean, diag(exp(logvar))) summed over the last dimension (standard normal by default)."""
    if mean is None:
        return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
    return -0.5 * ((z - mean).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


@dataclass
class VAEConfig(ModelConfig):
    beta: float = 1.0

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise AebenchError(f"beta must be >= 0, got {self.beta}")


class VAE(Autoencoder):
    """Variational AE: Gaussian encoder, reparameterisation, analytic KL to N(0, I)."""

    Config = VAEConfig
    probabilistic = True
    stats_per_dim = 2
    card = {
        "objective": "-log p(x | Dec(z)) + beta * KL(N(mu, diag sigma^2) || N(0, I)), one z = mu + sigma * eps, "
                     "eps ~ N(0, I), per input; KL in closed form 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2); "
                     "the encoder outputs mu and log sigma^2",
        "reduction": "-log p summed over pixels (nats per image), KL summed over latent dimensions; both averaged "
                     "over the batch",
        "weights": "beta = 1 (the ELBO); no KL warm-up",
        "optimisers": "one: train.optimizer (lr, weight_decay) over encoder and decoder",
        "paper": "Kingma & Welling 2014, Auto-Encoding Variational Bayes (ICLR); Rezende, Mohamed & Wierstra 2014",
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        z = reparameterize(enc)
        rec = self.likelihood.nll(self.decode(z), x).mean()
        kl = gaussian_kl(enc).sum(1).mean()
        return {"loss": rec + self.config.beta * kl, "reconstruction": rec, "kl": kl}

    @torch.no_grad()
    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i | x) for k posterior samples per input, shaped (k, B).

        logsumexp over k minus log k is the importance-sampled estimate of log p(x).
        """
        return self.importance_terms(x, k)[0]

    def importance_terms(self, x: torch.Tensor, k: int, enc: Encoding | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The log importance weights (k, B) and -log p(x | z_i) (k, B), differentiable (the IWAE trains on them)."""
        enc = self.encode(x) if enc is None else enc
        z = reparameterize(enc, k)  # (k, B, D)
        out = self.decode(z.flatten(0, 1))
        nll = self.likelihood.nll(out, x.repeat(k, *([1] * (x.dim() - 1)))).view(k, -1)
        return -nll + self.log_prior(z) - log_normal(z, enc.mean, enc.logvar), nll

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z): N(0, I) here; a model with another prior (the VampPrior) overrides it."""
        return log_normal(z)


@dataclass
class BetaVAEConfig(VAEConfig):
    beta: float = 4.0


class BetaVAE(VAE):
    """beta-VAE (Higgins et al. 2017): the VAE with weight beta (default 4) on the KL term."""

    Config = BetaVAEConfig
    card = {
        **VAE.card,
        "weights": "beta = 4 (the KL weight; beta > 1 pulls harder to the prior)",
        "paper": "Higgins, Matthey, Pal, Burgess, Glorot, Botvinick, Mohamed & Lerchner 2017, beta-VAE: Learning "
                 "Basic Visual Concepts with a Constrained Variational Framework (ICLR)",
    }
