"""Completion: can the autoencoder fill in missing or corrupted pixels of test images?

Two corruptions of the test images (in [0, 1]):

- ``masked``: the bottom half (rows H//2 onward, every channel) hidden and set to ``mask_fill``;
- ``sp`` (salt and pepper): each pixel value independently, with probability ``sp_level``, set to 0 or 1 with
  equal chance (one uniform draw u decides: u < level/2 is 0, level/2 <= u < level is 1; the denoising AE's
  rule), drawn from the job's seeded generator.

The model completes a corrupted image y in one pass, x = g(f(y)) (``reconstruct``), and by iterating
x <- m * y + (1 - m) * g(f(x)) from x = y, clamping the known pixels (m = 1) to their observed values, for
``steps`` passes. Scores are the MSE per pixel value over the hidden / corrupted values only, pooled over
images (images in [0, 1]): ``completion/masked_mse_onepass``, ``masked_mse_iterated``, ``sp_mse_onepass``,
``sp_mse_iterated`` (lower is better), and, as the baseline, the corrupted input's own error
``masked_mse_input`` and ``sp_mse_input`` (an identity model scores exactly these). The details keep the
first few test images (``examples``: uint8 pixels, ``aebench.metrics.pixels``, of the truth, each corruption, the
masked half completed by iteration and the salt and pepper one-pass completion, the headline pair) for the report's
figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aebench.errors import SuiteError
from aebench.metrics.base import EvalContext, to_uint8
from aebench.metrics.pixels import pack

EXAMPLES = 8  # test images kept in the details for the report's figure: truth, corrupted, completed
EXAMPLE_VALUES = 100_000  # at most this many pixel values over the five rows (fewer images when large)


@dataclass
class CompletionSettings:
    """``steps``: passes of the clamped iteration. ``sp_level``: the share of values salted or peppered.
    ``mask_fill``: the value the hidden half starts at. ``max_images``: the first this many test images."""

    steps: int = 20
    sp_level: float = 0.25
    mask_fill: float = 0.0
    max_images: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise SuiteError(None, "steps", f"must be >= 1, got {self.steps}")
        if not 0 < self.sp_level <= 1:
            raise SuiteError(None, "sp_level", f"must be in (0, 1], got {self.sp_level}")
        if not 0 <= self.mask_fill <= 1:
            raise SuiteError(None, "mask_fill", f"must be in [0, 1], got {self.mask_fill}")
        if self.max_images is not None and self.max_images < 1:
            raise SuiteError(None, "max_images", f"must be >= 1, got {self.max_images}")


def bottom_half(x: torch.Tensor, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted copy, hidden mask) with rows H//2 onward hidden."""
    hidden = torch.zeros_like(x, dtype=torch.bool)
    hidden[:, :, x.shape[2] // 2 :] = True
    return torch.where(hidden, torch.full_like(x, fill), x), hidden


def salt_pepper(x: torch.Tensor, level: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted copy, corrupted mask): each value, with probability ``level``, set to 0 or 1 (equal chance)."""
    u = torch.rand(x.shape, generator=generator).to(x.device)
    hidden = u < level
    return torch.where(hidden, (u >= level / 2).to(x.dtype), x), hidden


@torch.no_grad()
def complete(model: Any, y: torch.Tensor, hidden: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(one-pass completion g(f(y)), the completion after ``steps`` clamped passes)."""
    one = model.reconstruct(y)
    x = torch.where(hidden, one, y)
    for _ in range(steps - 1):
        x = torch.where(hidden, model.reconstruct(x), y)
    return one, x


@torch.no_grad()
def completion(ctx: EvalContext, **options: Any) -> dict[str, Any]:
    """MSE on the hidden pixels after one pass and after clamped iteration (settings: ``CompletionSettings``)."""
    s = CompletionSettings(**options)
    model = ctx.model
    model.eval()
    n = len(ctx.test) if s.max_images is None else min(s.max_images, len(ctx.test))
    gen = ctx.generator("completion/salt_pepper")
    sums = {k: 0.0 for k in ("masked_input", "masked_onepass", "masked_iterated", "sp_input", "sp_onepass",
                             "sp_iterated")}
    counts = {"masked": 0, "sp": 0}
    examples: dict[str, Any] = {}
    for i in range(0, n, ctx.batch_size):
        x = ctx.test.floats(slice(i, min(i + ctx.batch_size, n))).to(ctx.device)
        if i == 0:
            k = max(1, min(EXAMPLES, len(x), EXAMPLE_VALUES // (5 * x[0].numel())))
            examples = {"index": list(range(k)), "truth": pack(to_uint8(x[:k]))}
        for name, (y, hidden) in (("masked", bottom_half(x, s.mask_fill)), ("sp", salt_pepper(x, s.sp_level, gen))):
            one, it = complete(model, y, hidden, s.steps)
            if i == 0:
                examples[name] = pack(to_uint8(y[:k]))
                examples[f"{name}_onepass" if name == "sp" else f"{name}_iterated"] = pack(to_uint8(
                    (one if name == "sp" else it)[:k]))
            for kind, img in (("input", y), ("onepass", one), ("iterated", it)):
                sums[f"{name}_{kind}"] += float((img - x)[hidden].double().pow(2).sum())
            counts[name] += int(hidden.sum())
    out: dict[str, Any] = {}
    for key, total in sums.items():
        name, kind = key.split("_")
        out[f"{name}_mse_{kind}"] = total / counts[name] if counts[name] else float("nan")
    out["examples"] = examples
    out["setup"] = {"n_images": n, "steps": s.steps, "sp_level": s.sp_level, "mask_fill": s.mask_fill}
    return out
