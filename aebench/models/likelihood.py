"""Decoder likelihoods: how decoder outputs score an image, per image, in nats.

The suite chooses one for all models, so their reconstruction terms are on the same scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aebench.errors import AebenchError


class Bernoulli:
    """Pixels as Bernoulli probabilities; decoder outputs are logits; loss is BCE summed per image."""

    name = "bernoulli"

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per image (grey levels act as soft targets)."""
        return F.binary_cross_entropy_with_logits(output, x, reduction="none").flatten(1).sum(1)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output)


class Gaussian:
    """Pixels as Gaussians with fixed variance ``sigma**2``; loss is the scaled squared error plus the constant."""

    name = "gaussian"

    def __init__(self, sigma: float = 1.0):
        if not sigma > 0:
            raise AebenchError(f"gaussian likelihood needs sigma > 0, got {sigma}")
        self.sigma = float(sigma)

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = x[0].numel()
        sq = (output - x).pow(2).flatten(1).sum(1)
        return sq / (2 * self.sigma**2) + 0.5 * d * math.log(2 * math.pi * self.sigma**2)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return output.clamp(0.0, 1.0)


def make_likelihood(name: str, **options):
    """The registered likelihood ``name`` (``aebench ls likelihoods``; plugins may add their own): an object with
    ``nll(output, x)`` per image and ``mean(output)`` in [0, 1]."""
    from aebench.registry import LIKELIHOODS

    return LIKELIHOODS.get(name)(**options)
