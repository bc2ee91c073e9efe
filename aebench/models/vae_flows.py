"""VAEs whose posterior is a normalising flow of the encoder's Gaussian: q(z_K|x) = f_* N(mean(x), diag var(x)).

z_0 ~ N(mean, var), z_K = f(z_0), log q(z_K|x) = log N(z_0; mean, var) - log|det df/dz_0|. The KL to the prior
N(0, I) has no closed form, so it is estimated with the same single sample: log q(z_K|x) - log p(z_K).
``encode`` returns f(mean) as the code (the point the decoder sees) beside the base Gaussian's log-variance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, Encoding
from aebench.models.flows import LINEAR_FLOWS, AutoregressiveFlow, FlowSequence
from aebench.models.vae import VAE, VAEConfig, log_normal, reparameterize


class FlowVAE(VAE):
    """A VAE with a flow posterior; subclasses build ``self.flow`` (a module returning (z, log|det|))."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood, latent_dim: int, config=None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        self.flow = self.make_flow()

    def make_flow(self) -> nn.Module:
        raise NotImplementedError

    def base_posterior(self, x: torch.Tensor) -> Encoding:
        """q_0(z_0 | x): the encoder's Gaussian before the flow."""
        return Autoencoder.encode(self, x)

    def encode(self, x: torch.Tensor) -> Encoding:
        enc = self.base_posterior(x)
        return Encoding(self.flow(enc.mean)[0], enc.logvar)

    def sample_posterior(self, enc: Encoding, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z_K ~ q(z_K | x) and log q(z_K | x); shapes (B, D), (B) or with ``k`` (k, B, D), (k, B)."""
        z0 = reparameterize(enc, k)
        log_q0 = log_normal(z0, enc.mean, enc.logvar)
        zk, log_det = self.flow(z0.reshape(-1, z0.shape[-1]))
        return zk.view(z0.shape), log_q0 - log_det.view(log_q0.shape)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        zk, log_q = self.sample_posterior(self.base_posterior(x))
        rec = self.likelihood.nll(self.decode(zk), x).mean()
        kl = (log_q - log_normal(zk)).mean()
        return {"loss": rec + self.config.beta * kl, "reconstruction": rec, "kl": kl}

    def importance_terms(self, x: torch.Tensor, k: int, enc: Encoding | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|z) + log p(z) - log q(z|x) for k flow-posterior samples (k, B), and -log p(x|z) (k, B)."""
        enc = self.base_posterior(x) if enc is None else enc
        zk, log_q = self.sample_posterior(enc, k)
        out = self.decode(zk.flatten(0, 1))
        nll = self.likelihood.nll(out, x.repeat(k, *([1] * (x.dim() - 1)))).view(k, -1)
        return -nll + log_normal(zk) - log_q, nll


_FLOW_CARD = {
    "reduction": "sum over pixels and latent dimensions, mean over batch; one posterior sample per input",
    "optimisers": "one optimiser (the suite's) for encoder, decoder and flow parameters",
}


@dataclass
class VAEIAFConfig(VAEConfig):
    n_made_blocks: int = 2  # pythae's defaults
    n_hidden_in_made: int = 3
    hidden_size: int = 128
    gated: bool = True  # Kingma et al.'s sigmoid-gated step; False: pythae's z * exp(s) + m

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_made_blocks < 1 or self.n_hidden_in_made < 0 or self.hidden_size < 1:
            raise AebenchError(f"need n_made_blocks >= 1, n_hidden_in_made >= 0, hidden_size >= 1; got "
                               f"{self.n_made_blocks}, {self.n_hidden_in_made}, {self.hidden_size}")


class VAEIAF(FlowVAE):
    """VAE with an inverse autoregressive flow posterior (Kingma et al. 2016): MADE blocks on z, no context."""

    Config = VAEIAFConfig
    card = {
        "objective": "E_q0[-log p(x|z_K) + beta * (log N(z_0; mu, sigma^2) - sum_t sum_i log a_t,i - "
                     "log N(z_K; 0, I))], z_t = a_t * z_t-1 + b_t with (s_t, m_t) = MADE_t(z_t-1): gated a_t = "
                     "sigmoid(s_t + 1), b_t = (1 - a_t) * m_t, else a_t = exp(s_t), b_t = m_t; dimension order "
                     "reversed between blocks; one z_0 ~ N(mu, sigma^2) per input",
        **_FLOW_CARD,
        "weights": "beta = 1; n_made_blocks = 2, n_hidden_in_made = 3, hidden_size = 128 (pythae), gated = true "
                   "with forget bias 1",
        "paper": "Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. Improved variational inference with "
                 "inverse autoregressive flow. NeurIPS 2016",
    }

    def make_flow(self) -> nn.Module:
        c = self.config
        return AutoregressiveFlow(self.latent_dim, c.n_made_blocks, c.n_hidden_in_made, c.hidden_size, c.gated)


@dataclass
class VAELinNFConfig(VAEConfig):
    flows: list[str] = field(default_factory=lambda: ["planar", "planar"])  # pythae's default

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.flows:
            raise AebenchError("flows must name at least one flow ('planar' or 'radial')")
        for name in self.flows:
            if name not in LINEAR_FLOWS:
                raise AebenchError(f"unknown flow {name!r}; allowed: {', '.join(LINEAR_FLOWS)}")


class VAELinNF(FlowVAE):
    """VAE whose posterior goes through planar and radial flows in the given order (Rezende & Mohamed 2015)."""

    Config = VAELinNFConfig
    card = {
        "objective": "E_q0[-log p(x|z_K) + beta * (log N(z_0; mu, sigma^2) - sum_k log|det df_k/dz_k-1| "
                     "- log N(z_K; 0, I))], f_k planar z + u^ tanh(w.z + b) (u^ keeps w.u^ > -1) or radial "
                     "z + beta_k h(r) (z - z_c), h = 1 / (alpha + r); one z_0 ~ N(mu, sigma^2) per input",
        **_FLOW_CARD,
        "weights": "beta = 1; flows = [planar, planar] (pythae's default)",
        "paper": "Rezende, Mohamed. Variational inference with normalizing flows. ICML 2015",
    }

    def make_flow(self) -> nn.Module:
        return FlowSequence(self.latent_dim, self.config.flows)
