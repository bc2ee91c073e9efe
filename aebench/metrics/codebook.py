"""Codebook usage of a quantised model (vq-vae, hrq-vae) on the test set: is the codebook used, or collapsed?

Every code position of every test image counts once per level for the code it is quantised to (indices from
the encoder's output, exactly as the model quantises it). With usage frequencies p_k over all codes:

- ``perplexity`` = exp(-sum_k p_k log p_k): the effective number of codes in use (1 when the codebook has
  collapsed onto one code; the number of codes when they are used evenly). Higher is better.
- ``used`` / ``dead``: codes used at least once / never; ``dead_fraction`` = dead / codes. Fewer dead is better.
- ``codes``: the number of codes (num_embeddings * num_levels), a setting, not a score.

For HRQ-VAE each (level, code) pair is a code of its own and a level's counts sum to n / L of the total, so
the pooled perplexity is L times the geometric mean of the levels' perplexities; the per-level values go to
the details. Not applicable to models with continuous codes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from aebench.errors import AebenchError
from aebench.metrics.base import EvalContext, NotApplicable


def perplexity(counts: torch.Tensor) -> float:
    """exp of the entropy (nats) of the usage histogram ``counts``; zero counts contribute nothing."""
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


@torch.no_grad()
def codebook(ctx: EvalContext, max_images: int | None = None) -> dict[str, Any]:
    """Codebook usage on the test set (all test images, or the first ``max_images``)."""
    model = ctx.model
    if not getattr(model, "quantised", False):
        raise NotApplicable("the model's codes are continuous (no codebook)")
    if max_images is not None and max_images < 1:
        raise AebenchError(f"codebook max_images must be >= 1, got {max_images}")
    n = len(ctx.test) if max_images is None else min(int(max_images), len(ctx.test))
    k, levels = model.num_embeddings, model.num_levels
    counts = torch.zeros(levels, k, dtype=torch.long)
    model.eval()
    for i in range(0, n, ctx.batch_size):
        x = ctx.test.floats(slice(i, min(i + ctx.batch_size, n))).to(ctx.device)
        idx = model.image_indices(x).cpu()  # (B, P, L)
        for level in range(levels):
            counts[level] += torch.bincount(idx[..., level].flatten(), minlength=k)
    flat = counts.flatten()
    used = int((flat > 0).sum())
    out: dict[str, Any] = {
        "perplexity": perplexity(flat),
        "used": used,
        "dead": flat.numel() - used,
        "dead_fraction": (flat.numel() - used) / flat.numel(),
        "codes": flat.numel(),
        "usage": counts.tolist() if levels > 1 else counts[0].tolist(),
    }
    if levels > 1:
        out["perplexity_per_level"] = [perplexity(c) for c in counts]
        out["used_per_level"] = [int((c > 0).sum()) for c in counts]
    return out
