"""Sharpness (blurriness) of images: the measure of the Wasserstein Auto-Encoders paper (Tolstikhin et al. 2018).

Each image (grayscale, in [0, 1]) is convolved with the 3x3 Laplace filter (valid padding); the variance of
the response over the image is its sharpness, and the figure is the mean over images. Blurry images have
flat Laplacians, so a lower value means blurrier; ``ratio_<s>`` divides by the test images' figure
(1.0 = as sharp as the data).

Keys: ``sharpness/data`` (test images), ``sharpness/<s>`` and ``sharpness/ratio_<s>`` for every sampler ``s``
and for ``recon`` (test reconstructions).
"""

from __future__ import annotations

import torch

from aebench.metrics.base import EvalContext

GRAY = (0.2989, 0.5870, 0.1140)  # the ITU-R 601 weights tf.image.rgb_to_grayscale uses, as the WAE code does


def laplace_variance(images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Per-image variance of the Laplace response, float64, for uint8 or [0, 1] float (N, C, H, W) images."""
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].cpu().double()
        if images.dtype == torch.uint8:
            x = x / 255.0
        if x.shape[1] == 3:
            x = sum(w * x[:, c : c + 1] for c, w in enumerate(GRAY))
        elif x.shape[1] != 1:
            x = x.mean(1, keepdim=True)
        x = x[:, 0]
        # the 3x3 Laplace filter [[0, 1, 0], [1, -4, 1], [0, 1, 0]] with valid padding, as shifted sums (cheaper
        # than a float64 conv2d)
        r = x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:] - 4 * x[:, 1:-1, 1:-1]
        out.append(r.flatten(1).var(1, unbiased=False))
    return torch.cat(out)


def sharpness(ctx: EvalContext, n_samples: int | None = None, recon: bool = True) -> dict[str, float]:
    """Mean Laplace-response variance of generated images, reconstructions and test images, and the ratios.

    ``n_samples``: generated images per sampler (default: the suite's ``eval.n_samples``).
    """
    n = int(n_samples or ctx.n_samples)
    data = float(laplace_variance(ctx.test.images).mean())
    out = {"data": data}
    sources = {s: ctx.samples(s, n) for s in ctx.samplers}
    if recon and ctx.has_encoder:  # a generator without an encoder has samples only
        sources["recon"] = ctx.reconstructions("test")
    for name, images in sources.items():
        value = float(laplace_variance(images).mean())
        out[name] = value
        out[f"ratio_{name}"] = value / data if data > 0 else float("nan")
    return out
