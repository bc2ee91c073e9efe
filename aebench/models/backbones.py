"""Encoder/decoder architectures shared by all models, so only the objective differs between them.

A backbone factory takes the image shape, the encoder's output width (latent size times the number of
statistics the model needs) and the latent size, and returns ``(encoder, decoder)``: the encoder maps
(B, C, H, W) to (B, enc_out); the decoder maps (B, latent) to (B, C, H, W) decoder outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from aebench.errors import AebenchError

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU,
               "leaky_relu": nn.LeakyReLU, "softplus": nn.Softplus}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise AebenchError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Unflatten(nn.Module):
    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], *self.shape)


def mlp(
    image_shape: Sequence[int],
    enc_out: int,
    latent_dim: int,
    hidden: Sequence[int] = (512, 256),
    activation: str = "relu",
    dropout: float = 0.0,
) -> tuple[nn.Module, nn.Module]:
    """Fully connected encoder (widths ``hidden``) and mirrored decoder.

    ``dropout`` > 0 puts dropout after every hidden activation (the dropout AE sets it).
    """
    d = math.prod(image_shape)
    widths = [int(w) for w in hidden]
    if any(w <= 0 for w in widths):
        raise AebenchError(f"mlp hidden widths must be positive, got {list(hidden)}")

    def stack(sizes: list[int]) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        return layers

    enc_sizes = [d, *widths]
    encoder = nn.Sequential(nn.Flatten(), *stack(enc_sizes), nn.Linear(enc_sizes[-1], enc_out))
    dec_sizes = [latent_dim, *reversed(widths)]
    decoder = nn.Sequential(*stack(dec_sizes), nn.Linear(dec_sizes[-1], d), Unflatten(image_shape))
    return encoder, decoder

