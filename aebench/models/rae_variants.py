"""The RAE paper's other two decoder regularisers (Ghosh et al. 2020): a gradient penalty on the decoder (RAE-GP)
and spectral normalisation of the decoder's layers (RAE-SN). ``rae`` (aebench/models/rae.py) is RAE-L2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, ModelConfig
from aebench.models.rae import RAE

_RAE_PAPER = ("Ghosh, Sajjadi, Vergari, Black, Schoelkopf. From variational to deterministic autoencoders. "
              "ICLR 2020")


@dataclass
class RAEGPConfig(ModelConfig):
    beta: float = 1.0  # weight of ||z||^2 / 2 (rae's default; pythae's MNIST benchmark: 1e-2)
    lam: float = 1e-3  # weight of the gradient penalty (rae's default; pythae's MNIST benchmark: 1e-4)
    # hutchinson: ||J^T v||^2, v ~ N(0, I), unbiased, one backward pass; exact: one per pixel (small images only)
    estimator: Literal["hutchinson", "exact"] = "hutchinson"
    regularizer: ClassVar[str] = "gp"  # what RAE's loss reads: not a setting here

    def __post_init__(self) -> None:
        if self.beta < 0 or self.lam < 0:
            raise AebenchError(f"beta and lam must be >= 0, got beta={self.beta}, lam={self.lam}")
        if self.estimator not in ("hutchinson", "exact"):
            raise AebenchError(f"unknown estimator {self.estimator!r}; allowed: 'hutchinson', 'exact'")


class RAEGP(RAE):
    """RAE-GP: reconstruction plus beta * ||z||^2 / 2 plus lam * ||d Dec(z) / dz||_F^2 at the codes of the batch."""

    Config = RAEGPConfig
    card = {
        "objective": "-log p(x | z) + beta * ||z||^2 / 2 + lam * ||d Dec(z) / dz||_F^2, z = Enc(x), Dec(z) the "
                     "decoder's outputs (logits for Bernoulli); Hutchinson: ||J^T v||^2, v ~ N(0, I)",
        "reduction": "-log p summed over pixels, ||z||^2 over latent dimensions, the penalty over the Jacobian's "
                     "entries; every term averaged over the batch",
        "weights": "beta = 1, lam = 1e-3 (rae's; pythae's MNIST benchmark uses 1e-2 and 1e-4), "
                   "estimator = hutchinson",
        "optimisers": "one: encoder and decoder",
        "paper": _RAE_PAPER,
    }


@dataclass
class RAESNConfig(ModelConfig):
    beta: float = 1.0  # weight of ||z||^2 / 2 (rae's default)
    n_power_iterations: int = 1  # power iterations per training forward pass (torch's default)

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise AebenchError(f"beta must be >= 0, got {self.beta}")
        if self.n_power_iterations < 1:
            raise AebenchError(f"n_power_iterations must be >= 1, got {self.n_power_iterations}")


SPECTRAL_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


class RAESN(Autoencoder):
    """RAE-SN: reconstruction plus beta * ||z||^2 / 2, every weight layer of the decoder spectrally normalised.

    Each layer's weight is divided by its largest singular value (of the weight reshaped to output channels x
    the rest), estimated by power iteration during training (Miyato et al. 2018). Batch norm in a decoder
    rescales after the layers, so only the linear maps are bounded.
    """

    Config = RAESNConfig
    card = {
        "objective": "-log p(x | z) + beta * ||z||^2 / 2, z = Enc(x); every decoder Linear / Conv2d / "
                     "ConvTranspose2d weight W used as W / sigma_max(W) (power iteration)",
        "reduction": "-log p summed over pixels, ||z||^2 over latent dimensions, averaged over the batch",
        "weights": "beta = 1 (rae's); n_power_iterations = 1",
        "optimisers": "one: encoder and decoder (the normalised layers' unnormalised weights)",
        "paper": _RAE_PAPER,
    }

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood, latent_dim: int,
                 config: RAESNConfig | None = None):
        super().__init__(encoder, decoder, likelihood, latent_dim, config)
        layers = [m for m in self.decoder.modules() if isinstance(m, SPECTRAL_LAYERS)]
        if not layers:
            raise AebenchError("rae-sn needs a decoder with Linear or convolution layers to normalise")
        for m in layers:
            spectral_norm(m, n_power_iterations=self.config.n_power_iterations)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x).mean
        rec = self.likelihood.nll(self.decode(z), x).mean()
        latent = 0.5 * z.pow(2).sum(1).mean()
        return {"loss": rec + self.config.beta * latent, "reconstruction": rec, "latent_norm": latent}
