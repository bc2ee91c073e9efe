"""A worked plugin: register your own autoencoder as ``my-ae`` and put it on the leaderboard.

    aebench run suites/mnist.yaml --plugin examples/my_ae.py --models my-ae
    aebench leaderboard

The run trains ``my-ae`` under exactly the suite's protocol (data, backbone, latent size, budget, metrics),
so the leaderboard ranks it beside the built-in models already in ``results/mnist/``. A model is an
``aebench.models.base.Autoencoder``: the backbone (encoder and decoder), the likelihood and the training loop
come from aebench; the model supplies its hyperparameters (``Config``) and its objective (``loss``).

This one is a noisy-code autoencoder: Gaussian noise is added to the code during training, so that nearby
codes must decode to similar images, and a small penalty on the code's size stops the encoder from simply
scaling the codes up until the noise no longer matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aebench import MODELS, AebenchError
from aebench.models.base import Autoencoder, ModelConfig


@dataclass
class MyAEConfig(ModelConfig):
    """Hyperparameters, settable from a suite (``params: {sigma: 0.5}``) or ``--set models.0.params.sigma=0.5``."""

    sigma: float = 0.3  # standard deviation of the noise added to the code while training
    lam: float = 0.01  # weight of the penalty 0.5 * ||z||^2 per image

    def __post_init__(self) -> None:
        if self.sigma < 0 or self.lam < 0:
            raise AebenchError(f"sigma and lam must be >= 0, got sigma={self.sigma}, lam={self.lam}")


@MODELS.register("my-ae", description="noisy-code AE (examples/my_ae.py): Gaussian noise on the code in training")
class MyAE(Autoencoder):
    """Noisy-code autoencoder: decode z + sigma * eps, penalise 0.5 * lam * ||z||^2."""

    Config = MyAEConfig

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # Every named term is logged to curve.csv and drawn in the report; the total must be "loss".
        z = self.encode(x).mean
        noisy = z + self.config.sigma * torch.randn_like(z) if self.training else z
        rec = self.likelihood.nll(self.decode(noisy), x).mean()
        size = 0.5 * z.pow(2).sum(1).mean()
        return {"loss": rec + self.config.lam * size, "reconstruction": rec, "code_size": size}
