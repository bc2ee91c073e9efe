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


class CodeActivation(nn.Module):
    """An activation on the first ``n`` encoder outputs only (the code, or a stochastic encoder's mean).

    A stochastic encoder's log-variances stay unbounded; for a deterministic encoder ``n`` covers the whole
    output and a bare activation module is used instead, so the contractive AE can spot a sigmoid layer.
    """

    def __init__(self, name: str, n: int):
        super().__init__()
        self.act, self.n = make_activation(name), int(n)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.act(h[:, : self.n]), h[:, self.n :]], dim=1)


def code_head(code_activation: str | None, enc_out: int, latent_dim: int) -> list[nn.Module]:
    """The layers after the encoder's last linear map: none, or an activation on the code."""
    if code_activation is None:
        return []
    if enc_out == latent_dim:
        return [make_activation(code_activation)]
    return [CodeActivation(code_activation, latent_dim)]


def mlp(
    image_shape: Sequence[int],
    enc_out: int,
    latent_dim: int,
    hidden: Sequence[int] = (512, 256),
    activation: str = "relu",
    dropout: float = 0.0,
    code_activation: str | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Fully connected encoder (widths ``hidden``) and mirrored decoder.

    ``dropout`` > 0 puts dropout after every hidden activation (the dropout AE sets it).
    ``code_activation`` (e.g. ``sigmoid``) squashes the code, as in the lecture's encoder task; with
    ``hidden: []`` the encoder is then one sigmoid layer.
    """
    d = math.prod(image_shape)
    widths = [int(w) for w in hidden]
    if any(w <= 0 for w in widths):
        raise AebenchError(f"mlp hidden widths must be positive, got {list(hidden)}")
    if not 0.0 <= dropout < 1.0:
        raise AebenchError(f"dropout must be in [0, 1), got {dropout}")

    def stack(sizes: list[int]) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        return layers

    enc_sizes = [d, *widths]
    encoder = nn.Sequential(nn.Flatten(), *stack(enc_sizes), nn.Linear(enc_sizes[-1], enc_out),
                            *code_head(code_activation, enc_out, latent_dim))
    dec_sizes = [latent_dim, *reversed(widths)]
    decoder = nn.Sequential(*stack(dec_sizes), nn.Linear(dec_sizes[-1], d), Unflatten(image_shape))
    return encoder, decoder


def _conv_block(conv: nn.Module, channels: int, batch_norm: bool, activation: str, dropout: float) -> list[nn.Module]:
    layers = [conv]
    if batch_norm:
        layers.append(nn.BatchNorm2d(channels))
    layers.append(make_activation(activation))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


def conv(
    image_shape: Sequence[int],
    enc_out: int,
    latent_dim: int,
    channels: Sequence[int] = (128, 256, 512, 1024),
    batch_norm: bool = True,
    activation: str = "relu",
    dropout: float = 0.0,
    code_activation: str | None = None,
) -> tuple[nn.Module, nn.Module]:
    """The convolutional pair of the RAE / WAE / pythae papers, adapted to the image's size.

    Encoder: one 4x4 stride-2 convolution per entry of ``channels`` (batch norm, ReLU), each halving
    the image (28 -> 14 -> 7 -> 3 -> 1; 32 -> 2; 64 -> 4), then a linear map to the code. Decoder: a
    linear map to the smallest feature map, one 4x4 stride-2 transposed convolution per remaining
    width in reverse (1024 -> 512 -> 256 -> 128; output padding makes odd sizes like 7 and 28 exact),
    then a 3x3 convolution to the image's channels, with no activation (logits or means).
    """
    c_img, h_img, w_img = (int(s) for s in image_shape)
    widths = [int(c) for c in channels]
    if not widths or any(c <= 0 for c in widths):
        raise AebenchError(f"conv channels must be a non-empty list of positive widths, got {list(channels)}")
    if not 0.0 <= dropout < 1.0:
        raise AebenchError(f"dropout must be in [0, 1), got {dropout}")
    smallest = 2 ** len(widths)
    if min(h_img, w_img) < smallest:
        raise AebenchError(f"conv backbone with {len(widths)} layers needs images of at least "
                           f"{smallest}x{smallest}, got {h_img}x{w_img}; use the mlp backbone or fewer channels")

    enc: list[nn.Module] = []
    prev, h, w = c_img, h_img, w_img
    for c in widths:
        enc += _conv_block(nn.Conv2d(prev, c, 4, 2, 1, bias=not batch_norm), c, batch_norm, activation, dropout)
        prev, h, w = c, h // 2, w // 2
    encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(prev * h * w, enc_out),
                            *code_head(code_activation, enc_out, latent_dim))

    # decoder sizes, from the image back: each transposed convolution doubles (plus 1 for odd sizes)
    n_up = len(widths) - 1
    sizes = [(h_img, w_img)]
    for _ in range(n_up):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    sizes.reverse()
    dec_widths = widths[::-1]
    (h0, w0), c0 = sizes[0], dec_widths[0]
    dec: list[nn.Module] = [nn.Linear(latent_dim, c0 * h0 * w0), Unflatten((c0, h0, w0))]
    if batch_norm:
        dec.append(nn.BatchNorm2d(c0))
    dec.append(make_activation(activation))
    for i in range(n_up):
        (hi, wi), (ho, wo) = sizes[i], sizes[i + 1]
        pad = (ho - 2 * hi, wo - 2 * wi)
        up = nn.ConvTranspose2d(dec_widths[i], dec_widths[i + 1], 4, 2, 1, output_padding=pad, bias=not batch_norm)
        dec += _conv_block(up, dec_widths[i + 1], batch_norm, activation, dropout)
    dec.append(nn.Conv2d(dec_widths[n_up], c_img, 3, 1, 1))
    return encoder, nn.Sequential(*dec)
