"""Decoder likelihoods: how decoder outputs score an image, per image, in nats.

The suite chooses one for all models, so their reconstruction terms are on the same scale.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from aebench.errors import AebenchError


class _BCEWithLogits(torch.autograd.Function):
    """``binary_cross_entropy_with_logits`` per pixel for float32 CPU tensors, 3x faster than torch's kernel there.

    torch's CPU forward spends ~0.8 ms of a 9 ms MLP-VAE step in ``log_sigmoid``, whose ``log1p`` is not
    vectorised; here ``log(1 + exp(-|x|))`` stands for it (vectorised; it differs from ``log1p`` by at most half
    an ulp of 1, 6e-8 nats a pixel), in torch's own order, ``(1 - y) x - log_sigmoid(x)``. The backward is
    torch's formula, ``(sigmoid(x) - y) g`` (and ``-x g`` for the target), so gradients, and the training they
    drive, are bit for bit torch's; it is made of differentiable ops (the leapfrog models differentiate
    through it) and vmaps (stacked training).
    """

    @staticmethod
    def forward(output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_sigmoid = torch.clamp(output, max=0) - torch.log(1 + torch.exp(-output.abs()))
        return (1 - x) * output - log_sigmoid

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, torch.Tensor], result: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        output, x = ctx.saved_tensors
        d_output = (torch.sigmoid(output) - x) * grad if ctx.needs_input_grad[0] else None
        d_x = -output * grad if ctx.needs_input_grad[1] else None
        return d_output, d_x

    generate_vmap_rule = True


def bce_with_logits(output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE of logits ``output`` against targets ``x``: ``_BCEWithLogits`` on float32 CPU tensors of
    one shape, torch's fused kernel elsewhere (a GPU, other dtypes, broadcasting)."""
    if output.device.type == "cpu" and output.dtype == x.dtype == torch.float32 and output.shape == x.shape:
        return _BCEWithLogits.apply(output, x)
    return F.binary_cross_entropy_with_logits(output, x, reduction="none")


class Bernoulli:
    """Pixels as Bernoulli probabilities; decoder outputs are logits; loss is BCE summed per image."""

    name = "bernoulli"

    def nll(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per image (grey levels act as soft targets)."""
        return bce_with_logits(output, x).flatten(1).sum(1)

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
