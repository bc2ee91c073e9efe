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

    card = {
        "objective": "-log p(x | Dec(z)), z = Enc(x) (a deterministic code) under the suite's likelihood: bernoulli "
                     "= BCE of the decoder's logits, gaussian = ||x - Dec(z)||^2 / (2 sigma^2) + (D/2) log(2 pi "
                     "sigma^2)",
        "reduction": "summed over pixels (nats per image), mean over the batch",
        "weights": "none (no hyperparameters)",
        "optimisers": "one: train.optimizer (lr, weight_decay) over encoder and decoder",
        "paper": "Rumelhart, Hinton & Williams 1986, Learning Internal Representations by Error Propagation "
                 "(PDP vol. 1, ch. 8: the encoder problem)",
    }


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
    card = {
        "objective": "-log p(x | Dec(z)), z = Enc(x), with (inverted) dropout of probability rate after every hidden "
                     "activation of the backbone's encoder and decoder in training, and on z too when code = true; "
                     "no dropout at evaluation",
        "reduction": "-log p summed over pixels (nats per image), mean over the batch",
        "weights": "rate = 0.2, code = false (no dropout on the code units)",
        "optimisers": "one: train.optimizer (lr, weight_decay) over encoder and decoder",
        "paper": "Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov 2014, Dropout: A Simple Way to Prevent "
                 "Neural Networks from Overfitting (JMLR)",
    }

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
    card = {
        "objective": "-log p(x | Dec(h)) + lam * sum_i |h_i|, h = Enc(x) the code (latent_dim activations)",
        "reduction": "-log p summed over pixels (nats per image), |h_i| summed over the code's dimensions; both "
                     "averaged over the batch",
        "weights": "lam = 0.1 (per image, beside a reconstruction term of ~100 nats on MNIST)",
        "optimisers": "one: train.optimizer (lr, weight_decay) over encoder and decoder",
        "paper": "Ranzato, Poultney, Chopra & LeCun 2007, Efficient Learning of Sparse Representations with an "
                 "Energy-Based Model; Goodfellow, Bengio & Courville 2016, Deep Learning, sec. 14.2.1",
    }

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.encode(x).mean
        rec = self.likelihood.nll(self.decode(h), x).mean()
        sparsity = h.abs().sum(1).mean()
        return {"loss": rec + self.config.lam * sparsity, "reconstruction": rec, "sparsity": sparsity}
