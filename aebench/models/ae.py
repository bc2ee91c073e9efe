"""Deterministic autoencoders regularised in the simplest ways: none, dropout, and an L1 code penalty."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, ModelConfig


class AE(Autoencoder):
    """Plain autoencoder: reconstruction loss only."""


@dataclass
class DropoutAEConfig(ModelConfig):
    rate: float = 0.2  # probability of dropping a hidden unit during training
    code: bool = False  # also drop code units (the only hidden layer when the backbone has hidden: [])

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate < 1.0:
            raise AebenchError(f"rate must be in [0, 1), got {self.rate}")


class DropoutAE(Autoencoder):
    """Dropout AE: dropout after every hidden layer of the backbone (and optionally on the code)."""

    Config = DropoutAEConfig

    @classmethod
    def backbone_options(cls, config: DropoutAEConfig) -> dict[str, Any]:
        # the backbone owns the layers, so it places the dropout; eval() turns it off for the metrics
        return {"dropout": config.rate}

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x).mean
        if self.config.code:
            z = F.dropout(z, self.config.rate, self.training)
        rec = self.likelihood.nll(self.decode(z), x).mean()
        return {"loss": rec, "reconstruction": rec}


@dataclass
class SparseAEConfig(ModelConfig):
    lam: float = 0.1  # weight of the L1 penalty; per image, next to a reconstruction term of ~100 nats on MNIST

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise AebenchError(f"lam must be >= 0, got {self.lam}")


class SparseAE(Autoencoder):
    """Sparse AE: reconstruction plus lam * sum_i |h_i| on the code activations."""

    Config = SparseAEConfig

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.encode(x).mean
        rec = self.likelihood.nll(self.decode(h), x).mean()
        sparsity = h.abs().sum(1).mean()
        return {"loss": rec + self.config.lam * sparsity, "reconstruction": rec, "sparsity": sparsity}
