"""Paired image-quality scores of test reconstructions against their originals: PSNR and SSIM.

Both compare the reconstruction as saved (uint8, ``ctx.reconstructions``) with the uint8 test image, data
range 255, in float64:

- PSNR: per image 10 log10(255^2 / MSE) over all pixels and channels, then the mean over images (an exact
  copy is +inf, which the results record as non-finite).
- SSIM (Wang et al. 2004) with the standard 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma),
  K1 = 0.01, K2 = 0.03, population (co)variances; the SSIM map is averaged over the positions where the
  window fits inside the image and over channels, then over images. This is scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``
  (tests check it). Images smaller than 11x11 have no such position: then only PSNR is reported.

Keys: ``paired/psnr`` (dB), ``paired/ssim``; higher is better.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from aebench.errors import SuiteError
from aebench.metrics.base import EvalContext

SIGMA, RADIUS, K1, K2 = 1.5, 5, 0.01, 0.03  # radius int(3.5 * 1.5 + 0.5) = 5: an 11x11 window


@dataclass
class PairedSettings:
    """``max_images``: score only the first this many test images (all by default)."""

    max_images: int | None = None

    def __post_init__(self) -> None:
        if self.max_images is not None and self.max_images < 1:
            raise SuiteError(None, "max_images", f"must be >= 1, got {self.max_images}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-image PSNR (dB, float64) of two (N, C, H, W) image batches on the same scale."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def _window() -> torch.Tensor:
    t = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / SIGMA) ** 2)
    return w / w.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-image SSIM (float64) of (N, C, H, W) batches: Gaussian window, mean over the valid region and channels."""
    n, c, h, w = x.shape
    if h < 2 * RADIUS + 1 or w < 2 * RADIUS + 1:
        raise ValueError(f"SSIM's 11x11 window does not fit {h}x{w} images")
    g = _window()
    a, b = x.double().reshape(n * c, 1, h, w), y.double().reshape(n * c, 1, h, w)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable valid filtering = the filtered image's interior
        return F.conv2d(F.conv2d(t, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))

    mx, my = blur(a), blur(b)
    vx, vy, cxy = blur(a * a) - mx * mx, blur(b * b) - my * my, blur(a * b) - mx * my
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(n, -1).mean(1)


@torch.no_grad()
def paired(ctx: EvalContext, **options: Any) -> dict[str, Any]:
    """Mean per-image PSNR and SSIM of the uint8 test reconstructions (settings: ``PairedSettings``)."""
    s = PairedSettings(**options)
    n = len(ctx.test) if s.max_images is None else min(s.max_images, len(ctx.test))
    x, r = ctx.test.images[:n].cpu(), ctx.reconstructions("test")[:n]
    fits = min(x.shape[2:]) >= 2 * RADIUS + 1
    p_sum, s_sum = 0.0, 0.0
    for i in range(0, n, 2000):  # float64 maps of 2000 images stay small
        p_sum += float(psnr(x[i : i + 2000], r[i : i + 2000]).sum())
        if fits:
            s_sum += float(ssim(x[i : i + 2000], r[i : i + 2000]).sum())
    out: dict[str, Any] = {"psnr": p_sum / n, "setup": {"n_images": n}}
    if fits:
        out["ssim"] = s_sum / n
    else:
        out["setup"]["ssim"] = f"not computed: the 11x11 window does not fit {tuple(x.shape[2:])} images"
    return out
