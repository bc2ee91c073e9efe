"""The VampPrior VAE (Tomczak & Welling 2018): the prior is the encoder's posterior averaged over K learned
pseudo-inputs, p(z) = (1/K) sum_k q(z | u_k), so prior and aggregate posterior can meet."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from aebench.errors import AebenchError
from aebench.models.base import Encoding
from aebench.models.vae import VAE, VAEConfig, log_normal, reparameterize


@dataclass
class VampConfig(VAEConfig):
    pseudo_inputs: int = 500  # K, the paper's MNIST value (pythae's default is 50)
    pseudo_mean: float = 0.05  # pseudo-inputs start as N(pseudo_mean, pseudo_std^2) pixels (the paper's code)
    pseudo_std: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pseudo_inputs < 1:
            raise AebenchError(f"pseudo_inputs must be >= 1, got {self.pseudo_inputs}")
        if self.pseudo_std < 0:
            raise AebenchError(f"pseudo_std must be >= 0, got {self.pseudo_std}")


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Batch norm layers normalise with the batch's statistics as usual but leave their running statistics alone.

    The pseudo-inputs go through the encoder in a pass of their own; their statistics must not leak into the
    running averages that encode real images at evaluation.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def mixture_log_prob(z: torch.Tensor, components: Encoding) -> torch.Tensor:
    """log (1/K) sum_k N(z; mean_k, diag exp(logvar_k)) for z (..., D) and K components (K, D); shape (...)."""
    per_component = log_normal(z.unsqueeze(-2), components.mean, components.logvar)  # (..., K)
    return torch.logsumexp(per_component, dim=-1) - math.log(components.mean.shape[0])


class VampVAE(VAE):
    """VAE with the VampPrior; the KL term is a single-sample estimate log q(z|x) - log p(z).

    Pseudo-inputs are image-shaped parameters passed through hardtanh(0, 1) (the paper's code), so they stay
    valid images. Each training step encodes all K of them (the VampPrior's cost: K extra encoder inputs).
    """

    Config = VampConfig
    card = {
        "objective": "E_q[-log p(x|z) + beta * (log N(z; mu(x), sigma^2(x)) - log (1/K) sum_k N(z; mu(u_k), "
                     "sigma^2(u_k)))], u_k = hardtanh(U_k, 0, 1) learned pseudo-inputs",
        "reduction": "sum over pixels and latent dimensions, mean over batch; one posterior sample per input",
        "weights": "beta = 1, pseudo_inputs K = 500 (the paper's MNIST value), pixels initialised N(pseudo_mean, "
                   "pseudo_std^2) with pseudo_mean = 0.05, pseudo_std = 0.01; no KL warm-up",
        "optimisers": "one optimiser (the suite's) for encoder, decoder and pseudo-inputs",
        "paper": "Tomczak, Welling. VAE with a VampPrior. AISTATS 2018",
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood, latent_dim: int,
                 config: VampConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        c = self.config
        self.pseudo_inputs = nn.Parameter(c.pseudo_mean + c.pseudo_std * torch.randn(c.pseudo_inputs,
                                                                                      *self._image_shape()))

    def _image_shape(self) -> tuple[int, ...]:
        """The image shape the backbone decodes to (asked of the decoder in eval mode: no statistics change)."""
        was_training = self.decoder.training
        like = next(self.decoder.parameters(), torch.zeros(()))
        self.decoder.eval()
        try:
            with torch.no_grad():
                z = torch.zeros(1, self.latent_dim, dtype=like.dtype, device=like.device)
                return tuple(self.decoder(z).shape[1:])
        finally:
            self.decoder.train(was_training)

    def prior_components(self) -> Encoding:
        """q(z | u_k) for every pseudo-input: means and log-variances, (K, D) each."""
        u = nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        with frozen_running_stats(self.encoder):
            return super().encode(u)

    def log_prior(self, z: torch.Tensor, components: Encoding | None = None) -> torch.Tensor:
        """log p(z) under the VampPrior for z (..., D)."""
        return mixture_log_prob(z, self.prior_components() if components is None else components)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        z = reparameterize(enc)
        rec = self.likelihood.nll(self.decode(z), x).mean()
        kl = (log_normal(z, enc.mean, enc.logvar) - self.log_prior(z)).mean()
        return {"loss": rec + self.config.beta * kl, "reconstruction": rec, "kl": kl}

