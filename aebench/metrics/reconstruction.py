"""Reconstruction error on the test set."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aebench.metrics.base import EvalContext


@torch.no_grad()
def reconstruction(ctx: EvalContext) -> dict[str, float]:
    """MSE per pixel (images in [0, 1]) and binary cross-entropy per image in nats.

    Both use the decoder's mean image, so the figures compare across likelihoods and models.
    """
    model = ctx.model
    model.eval()
    sq, bce, n, d = 0.0, 0.0, 0, ctx.test.images[0].numel()
    for i in range(0, len(ctx.test), ctx.batch_size):
        x = ctx.test.floats(slice(i, i + ctx.batch_size)).to(ctx.device)
        r = model.reconstruct(x).clamp(1e-6, 1 - 1e-6)
        sq += float((r - x).pow(2).sum())
        bce += float(F.binary_cross_entropy(r, x, reduction="sum"))
        n += x.shape[0]
    return {"mse": sq / (n * d), "bce": bce / n}
