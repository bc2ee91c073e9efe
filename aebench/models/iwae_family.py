"""The IWAE's relatives of Rainforth et al. (2018), "Tighter variational bounds are not necessarily better".

A tighter bound (the IWAE with many samples) helps the decoder but starves the encoder's gradient of signal;
these objectives trade the two off. All three draw M*K (or K) posterior samples per input through the VAE's
``importance_terms``, so their bounds, and their ``log_importance_weights`` for the ``nll`` metric, are the VAE's.
Defaults are pythae's (M = 5, K = 10, beta = 0.5); the paper's MNIST runs spend M*K = 64 samples (e.g. M = K = 8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from aebench.errors import AebenchError
from aebench.models.base import ModelConfig, TrainSettings, make_optimizer
from aebench.models.vae import VAE, gaussian_kl

PAPER = "Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh 2018, Tighter Variational Bounds are Not Necessarily Better"


def miwae_bound(log_w: torch.Tensor, m: int) -> torch.Tensor:
    """MIWAE(M, K) per input: the mean over M groups of the K-sample IWAE bound; ``log_w`` is (M*K, B)."""
    k = log_w.shape[0] // m
    return (torch.logsumexp(log_w.view(m, k, -1), dim=1) - math.log(k)).mean(0)


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The IWAE bound per input from all the (k, B) log importance weights."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


@dataclass
class MIWAEConfig(ModelConfig):
    m: int = 5  # independent IWAE bounds averaged (pythae's number_gradient_estimates)
    k: int = 10  # importance samples inside each bound (pythae's number_samples)

    def __post_init__(self) -> None:
        if self.m < 1 or self.k < 1:
            raise AebenchError(f"m and k must be >= 1, got m={self.m}, k={self.k}")


class MIWAE(VAE):
    """MIWAE(M, K): the mean of M independent K-sample IWAE bounds (M = 1 is the IWAE, K = 1 the VAE).

    ``loss`` is the negative bound; ``reconstruction`` (mean -log p(x|z) over the M*K draws) and ``kl``
    (analytic) are reported beside it and do not sum to it.
    """

    Config = MIWAEConfig
    card = {
        "objective": "-(1/M) sum_m [logsumexp_k log w_mk - log K], w_mk = p(x|z_mk) p(z_mk) / q(z_mk|x), "
                     "z_mk ~ q(z|x) (M*K draws)",
        "reduction": "log-likelihoods summed over pixels and latent dims; mean over the batch",
        "weights": "m = 5, k = 10 (pythae's defaults; the paper's MNIST runs use M*K = 64)",
        "optimisers": "one optimiser for encoder and decoder",
        "paper": PAPER,
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        log_w, nll = self.importance_terms(x, self.config.m * self.config.k, enc)
        bound = miwae_bound(log_w, self.config.m)
        return {"loss": -bound.mean(), "reconstruction": nll.mean().detach(),
                "kl": gaussian_kl(enc).sum(1).mean().detach()}


@dataclass
class PIWAEConfig(MIWAEConfig):
    """Same fields as MIWAE: the encoder's bound is MIWAE(m, k), the decoder's the IWAE with m*k samples."""


class PIWAE(VAE):
    """PIWAE: the encoder ascends MIWAE(M, K), the decoder the IWAE bound with all M*K samples.

    Both bounds come from the same M*K draws. Two optimisers: one over the encoder, one over the decoder;
    ``train_step`` back-propagates each bound into its own player's parameters only (``backward(inputs=...)``),
    so the encoder never sees the IWAE gradient and the decoder never the MIWAE one. ``loss`` = ``miwae`` +
    ``iwae`` (the two negative bounds, as pythae reports it); its gradient is not the training direction.
    """

    Config = PIWAEConfig
    card = {
        "objective": "encoder: -(1/M) sum_m [logsumexp_k log w_mk - log K] (MIWAE); decoder: -[logsumexp_{mk} "
                     "log w_mk - log(MK)] (IWAE-MK); same M*K draws; reported loss = miwae + iwae",
        "reduction": "log-likelihoods summed over pixels and latent dims; mean over the batch",
        "weights": "m = 5, k = 10 (pythae's defaults; the paper uses M = K = 8)",
        "optimisers": "two: the encoder's (on the MIWAE term), the decoder's (on the IWAE term); same settings",
        "paper": PAPER,
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        log_w, nll = self.importance_terms(x, self.config.m * self.config.k, enc)
        miwae = -miwae_bound(log_w, self.config.m).mean()
        iwae = -iwae_bound(log_w).mean()
        return {"loss": miwae + iwae, "miwae": miwae, "iwae": iwae, "reconstruction": nll.mean().detach(),
                "kl": gaussian_kl(enc).sum(1).mean().detach()}

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def configure_optimizers(self, train: TrainSettings) -> list[torch.optim.Optimizer]:
        return [make_optimizer(self.encoder_parameters(), train), make_optimizer(self.decoder_parameters(), train)]

    def train_step(self, x: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer],
                   grad_clip: float | None = None) -> dict[str, torch.Tensor]:
        """One step of both players on the same draws: MIWAE gradient to the encoder, IWAE gradient to the decoder."""
        opt_enc, opt_dec = optimizers
        terms = self.loss(x)
        enc_params, dec_params = self.encoder_parameters(), self.decoder_parameters()
        opt_enc.zero_grad(set_to_none=True)
        opt_dec.zero_grad(set_to_none=True)
        terms["miwae"].backward(inputs=enc_params, retain_graph=True)
        terms["iwae"].backward(inputs=dec_params)
        if grad_clip:
            nn.utils.clip_grad_norm_(enc_params, grad_clip)
            nn.utils.clip_grad_norm_(dec_params, grad_clip)
        opt_enc.step()
        opt_dec.step()
        return {k: v.detach() for k, v in terms.items()}


@dataclass
class CIWAEConfig(ModelConfig):
    k: int = 10  # importance samples (pythae's number_samples)
    beta: float = 0.5  # weight of the ELBO in the convex combination (the paper's and pythae's 0.5)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise AebenchError(f"k must be >= 1, got {self.k}")
        if not 0.0 <= self.beta <= 1.0:
            raise AebenchError(f"beta must be in [0, 1], got {self.beta}")


class CIWAE(VAE):
    """CIWAE: beta * ELBO + (1 - beta) * IWAE on the same K draws (beta = 1 is the K-sample VAE, 0 the IWAE)."""

    Config = CIWAEConfig
    card = {
        "objective": "beta * neg_elbo + (1 - beta) * neg_iwae; neg_elbo = -(1/K) sum_k log w_k, "
                     "neg_iwae = -[logsumexp_k log w_k - log K], the same K draws z_k ~ q(z|x)",
        "reduction": "log-likelihoods summed over pixels and latent dims; mean over the batch",
        "weights": "beta = 0.5, k = 10 (pythae's defaults; the paper's beta = 0.5)",
        "optimisers": "one optimiser for encoder and decoder",
        "paper": PAPER,
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        log_w, nll = self.importance_terms(x, self.config.k, enc)
        neg_elbo = -log_w.mean(0).mean()
        neg_iwae = -iwae_bound(log_w).mean()
        beta = self.config.beta
        return {"loss": beta * neg_elbo + (1 - beta) * neg_iwae, "neg_elbo": neg_elbo, "neg_iwae": neg_iwae,
                "reconstruction": nll.mean().detach(), "kl": gaussian_kl(enc).sum(1).mean().detach()}
