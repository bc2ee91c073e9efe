"""Multi-scale structural similarity (Wang, Simoncelli & Bovik 2003) and the VAE that reconstructs by it
(Snell et al. 2017).

MS-SSIM follows the standard definition (Wang et al.'s reference code): an 11-tap Gaussian window of sigma 1.5
applied without padding (only windows inside the image; ``border="reflect"`` gives torchmetrics' variant, whose
last-scale SSIM also averages reflect-padded border windows), K1 = 0.01, K2 = 0.03, data range 1, 2x2 average
pooling between scales, contrast-structure terms at every scale and luminance at the coarsest, combined as
prod_j cs_j^w_j * l_M^w_M with Wang et al.'s weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333).
Five scales need images of at least 16 * 11 = 176 pixels a side; smaller images use as many scales as fit (the
coarsest still at least one window wide) with the first weights renormalised to sum to 1: 28x28 gets 2 scales,
weights (0.1356, 0.8644); 32x32 and 64x64 get 2 and 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from aebench.errors import AebenchError
from aebench.models.base import Autoencoder, ModelConfig
from aebench.models.vae import gaussian_kl, reparameterize

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def default_weights(size: int, window_size: int = 11) -> tuple[float, ...]:
    """The standard scale weights for images ``size`` pixels on their short side: as many scales as fit."""
    if size < window_size:
        raise AebenchError(f"MS-SSIM: images {size} pixels wide are smaller than the window ({window_size})")
    scales = 1
    while scales < len(MSSSIM_WEIGHTS) and size // 2**scales >= window_size:
        scales += 1
    w = MSSSIM_WEIGHTS[:scales]
    return tuple(v / sum(w) for v in w)


def _window(size: int, sigma: float, channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    d = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (d / sigma) ** 2)
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, size, size).contiguous()


def ssim_and_cs(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor, c1: float, c2: float,
                border: str = "valid") -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: SSIM and the contrast-structure term, each the mean of its map.

    ``valid``: both maps over the window positions inside the image (Wang et al.'s reference code).
    ``reflect``: as torchmetrics, the SSIM map over every pixel of the reflect-padded image, the contrast term
    still over the inside positions.
    """
    ch, pad = x.shape[1], (window.shape[-1] - 1) // 2
    if border == "reflect":
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        y = F.pad(y, (pad, pad, pad, pad), mode="reflect")

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=ch)

    mx, my = blur(x), blur(y)
    sxx = (blur(x * x) - mx * mx).clamp_min(0)
    syy = (blur(y * y) - my * my).clamp_min(0)
    sxy = blur(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    sim = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    if border == "reflect" and pad > 0:
        cs = cs[..., pad:-pad, pad:-pad]
    return sim.flatten(1).mean(1), cs.flatten(1).mean(1)


def _positive_power(v: torch.Tensor, w: float, normalize: str | None) -> torch.Tensor:
    if normalize == "simple":
        return ((v + 1) / 2) ** w
    if normalize == "relu":  # relu(v) ** w, with a gradient that stays finite where v <= 0
        pos = v > 0
        return torch.where(pos, torch.where(pos, v, torch.ones_like(v)) ** w, torch.zeros_like(v))
    return v**w


def ms_ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
            weights: tuple[float, ...] | list[float] | None = None, data_range: float = 1.0, k1: float = 0.01,
            k2: float = 0.03, normalize: Literal["relu", "simple"] | None = "relu",
            border: Literal["valid", "reflect"] = "valid") -> torch.Tensor:
    """MS-SSIM of each image pair in (B, C, H, W) batches, shaped (B,); differentiable.

    ``weights`` None: the standard weights for as many scales as the image allows (see the module docstring).
    ``normalize`` (as torchmetrics): "relu" clips negative terms to 0 before the fractional powers, "simple"
    maps each term v to (v + 1) / 2, None leaves them (NaN where a term is negative). ``border``: see
    ``ssim_and_cs`` ("reflect" reproduces torchmetrics' numbers).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise AebenchError(f"MS-SSIM needs two (B, C, H, W) batches of one shape, got {tuple(x.shape)}, "
                           f"{tuple(y.shape)}")
    if window_size < 1 or window_size % 2 == 0:
        raise AebenchError(f"MS-SSIM window_size must be odd and positive, got {window_size}")
    if border not in ("valid", "reflect"):
        raise AebenchError(f"MS-SSIM border must be valid or reflect, got {border!r}")
    short = min(x.shape[-2:])
    weights = tuple(default_weights(short, window_size) if weights is None else weights)
    if short // 2 ** (len(weights) - 1) < window_size:
        raise AebenchError(f"MS-SSIM: {len(weights)} scales need images of at least "
                           f"{window_size * 2 ** (len(weights) - 1)} pixels a side, got {short}")
    window = _window(window_size, sigma, x.shape[1], x.dtype, x.device)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    out = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for j, w in enumerate(weights):
        sim, cs = ssim_and_cs(x, y, window, c1, c2, border)
        last = j == len(weights) - 1
        out = out * _positive_power(sim if last else cs, w, normalize)
        if not last:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return out


@dataclass
class MSSSIMVAEConfig(ModelConfig):
    beta: float = 1.0  # weight of the KL (pythae's default)
    window_size: int = 11  # the standard Gaussian window (odd)
    scales: int | None = None  # None: as many standard scales as the images allow (at most 5)
    normalize: Literal["relu", "simple"] = "relu"

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise AebenchError(f"beta must be >= 0, got {self.beta}")
        if self.window_size < 1 or self.window_size % 2 == 0:
            raise AebenchError(f"window_size must be odd and positive, got {self.window_size}")
        if self.scales is not None and not 1 <= self.scales <= len(MSSSIM_WEIGHTS):
            raise AebenchError(f"scales must be in 1..{len(MSSSIM_WEIGHTS)} or null, got {self.scales}")


class MSSSIMVAE(Autoencoder):
    """VAE whose reconstruction term is 1 - MS-SSIM(decoded mean image, x) instead of -log p(x|z).

    The decoder's outputs go through the suite likelihood's mean (sigmoid for Bernoulli, clamp for Gaussian)
    to become images. MS-SSIM is not a likelihood, so the model defines no ``log_importance_weights``: the
    ``nll`` metric does not apply.
    """

    Config = MSSSIMVAEConfig
    probabilistic = True
    stats_per_dim = 2
    card = {
        "objective": "(1 - MS-SSIM(mean image of p(x|z), x)) + beta * KL(q(z|x) || N(0, I)), one z ~ q(z|x)",
        "reduction": "MS-SSIM per image (means over window positions and channels), KL summed over latent dims; "
                     "mean over the batch",
        "weights": "beta = 1 (the KL weight, pythae's); window_size = 11 (Gaussian window, sigma 1.5), K1 0.01, K2 "
                   "0.03, data range 1; scales = null: Wang et al.'s 5 scale weights truncated to the scales the "
                   "image allows and renormalised (28x28: 2 scales); normalize = relu (negative terms clipped to 0 "
                   "before the powers; simple: (v + 1) / 2)",
        "optimisers": "one optimiser for encoder and decoder",
        "paper": "Snell, Ridgeway, Liao, Roads, Mozer & Zemel 2017, Learning to Generate Images with Perceptual "
                 "Similarity Metrics",
    }

    def _weights(self, x: torch.Tensor) -> tuple[float, ...]:
        w = default_weights(min(x.shape[-2:]), self.config.window_size)
        if self.config.scales is not None:
            w = MSSSIM_WEIGHTS[: self.config.scales]
            w = tuple(v / sum(w) for v in w)
        return w

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encode(x)
        images = self.likelihood.mean(self.decode(reparameterize(enc)))
        sim = ms_ssim(images, x, self.config.window_size, weights=self._weights(x), normalize=self.config.normalize)
        rec = (1 - sim).mean()
        kl = gaussian_kl(enc).sum(1).mean()
        return {"loss": rec + self.config.beta * kl, "reconstruction": rec, "kl": kl}

