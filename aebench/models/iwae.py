"""The importance-weighted autoencoder (Burda et al. 2016): a tighter bound on log p(x) from k samples."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aebench.errors import AebenchError
from aebench.models.base import ModelConfig
from aebench.models.vae import VAE, gaussian_kl


@dataclass
class IWAEConfig(ModelConfig):
    k: int = 5  # importance samples per input (Burda et al. use 5 and 50); k = 1 is the VAE

    def __post_init__(self) -> None:
        if self.k < 1:
            raise AebenchError(f"k must be >= 1, got {self.k}")


class IWAE(VAE):
    """IWAE: the VAE trained on the k-sample importance-weighted bound.

    ``loss`` is the negative bound -E[log (1/k) sum_i w_i]; ``reconstruction`` (mean -log p(x|z_i)) and
    ``kl`` (analytic) are reported beside it for comparison with the VAE and do not sum to it.
    """

    Config = IWAEConfig
    card = {
        "objective": "-[logsumexp_i log w_i - log k], w_i = p(x | z_i) N(z_i; 0, I) / q(z_i | x), k reparameterised "
                     "draws z_i ~ q(z|x) = N(mu, diag sigma^2); 'reconstruction' (mean -log p(x|z_i)) and 'kl' "
                     "(analytic) are reported beside it and not part of it",
        "reduction": "log-densities summed over pixels and latent dimensions, the bound per input, mean over the "
                     "batch",
        "weights": "k = 5 (Burda et al. use 5 and 50; k = 1 is the VAE's ELBO)",
        "optimisers": "one: train.optimizer (lr, weight_decay) over encoder and decoder",
        "paper": "Burda, Grosse & Salakhutdinov 2016, Importance Weighted Autoencoders (ICLR)",
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        log_w, nll = self.importance_terms(x, self.config.k, enc)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.config.k)
        return {"loss": -bound.mean(), "reconstruction": nll.mean().detach(),
                "kl": gaussian_kl(enc).sum(1).mean().detach()}
