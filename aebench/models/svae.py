"""The hyperspherical VAE (Davidson et al. 2018): a von Mises-Fisher posterior and a uniform prior on S^{d-1}.

The encoder's first d outputs give the mean direction mu (normalised), the mean of the other d gives the
log-concentration: kappa = softplus(.) + 1 (pythae). The decoder takes the point z on the sphere itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, Encoding, ModelConfig
from aebench.models.vmf import VonMisesFisher, uniform_log_prob


@dataclass
class SVAEConfig(ModelConfig):
    beta: float = 1.0  # weight of the KL (1: the ELBO)
    score_correction: bool = False  # add g_cor to the reparameterised gradient (the paper's code and pythae: no)

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise AebenchError(f"beta must be >= 0, got {self.beta}")


def to_sphere(z: torch.Tensor) -> torch.Tensor:
    """z / |z|: codes from samplers fitted in R^d onto the sphere (a N(0, I) draw becomes uniform)."""
    return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class SVAE(Autoencoder):
    """S-VAE: vMF(mu(x), kappa(x)) posterior on S^{d-1}, uniform prior, closed-form KL.

    ``encode(x)`` gives ``mean`` = mu and ``logvar`` = log Var[z_i] of the vMF per coordinate (exact, via
    A_d(kappa)), so variance-based metrics see the posterior's spread. ``generate`` normalises its codes.
    """

    Config = SVAEConfig
    probabilistic = True
    stats_per_dim = 2
    latent_space = "sphere"
    card = {
        "objective": "E_q[-log p(x|z)] + beta * KL(vMF(mu, kappa) || U(S^{d-1})), one z ~ vMF per input (Wood's "
                     "rejection sampler, g_rep gradient; g_cor added if score_correction); "
                     "KL = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}| in closed form",
        "reduction": "sum over pixels, mean over batch",
        "weights": "beta = 1; kappa = softplus(.) + 1; score_correction = False",
        "optimisers": "one optimiser for encoder and decoder",
        "paper": "Davidson et al. 2018, Hyperspherical Variational Auto-Encoders (UAI)",
    }

    def __init__(self, encoder, decoder, likelihood, latent_dim: int, config: SVAEConfig | None = None):
        if latent_dim < 2:
            raise AebenchError(f"svae needs latent_dim >= 2 (the sphere S^{{d-1}} in R^d), got {latent_dim}")
        super().__init__(encoder, decoder, likelihood, latent_dim, config)

    def posterior(self, x: torch.Tensor) -> VonMisesFisher:
        h = self.encoder(x)
        loc = to_sphere(h[:, : self.latent_dim])
        kappa = F.softplus(h[:, self.latent_dim :].mean(1, keepdim=True)) + 1
        return VonMisesFisher(loc, kappa)

    def encode(self, x: torch.Tensor) -> Encoding:
        q = self.posterior(x)
        return Encoding(q.loc, torch.log(q.axis_variance()))

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decode(to_sphere(z)))

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        q = self.posterior(x)
        if self.config.score_correction:
            z, score = q.rsample_with_score()
        else:
            z, score = q.rsample(), None
        nll = self.likelihood.nll(self.decode(z), x)
        rec = nll.mean()
        kl = q.kl_to_uniform().mean()
        terms = {"loss": rec + self.config.beta * kl, "reconstruction": rec, "kl": kl,
                 "kappa": q.concentration.detach().mean()}
        if score is not None:  # value 0, gradient E[-log p(x|z) * grad log(q(w)/r(w))] = g_cor of the rec term
            terms["loss"] = terms["loss"] + (nll.detach() * (score - score.detach())).mean()
        return terms

    @torch.no_grad()
    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x|z_i) + log p(z_i) - log q(z_i|x) for z_i ~ vMF, shaped (k, B); p(z) = 1 / |S^{d-1}|."""
        q = self.posterior(x)
        z = q.rsample((k,))  # (k, B, D)
        nll = self.likelihood.nll(self.decode(z.flatten(0, 1)), x.repeat(k, *([1] * (x.dim() - 1)))).view(k, -1)
        return -nll + uniform_log_prob(self.latent_dim) - q.log_prob(z)
