"""Image grids saved as PNG (atomically): samples, reconstructions, interpolations."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from aebench.store.atomic import atomic_write_bytes


def save_grid(images: torch.Tensor, path: Path, nrow: int = 10) -> Path:
    """Save uint8 or [0, 1] float images (N, C, H, W) as one PNG grid."""
    from PIL import Image
    from torchvision.utils import make_grid

    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    grid = make_grid(images.detach().cpu(), nrow=nrow, padding=2, pad_value=0.5)
    array = grid.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    if (array[:, :, :1] == array).all():  # one channel, or make_grid's RGB copy of a gray one: store it as L
        array = array[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return atomic_write_bytes(path, buf.getvalue())


def interleave(a: torch.Tensor, b: torch.Tensor, per_row: int = 10) -> torch.Tensor:
    """Rows of ``a`` above rows of ``b`` (test images above their reconstructions)."""
    rows = []
    for i in range(0, a.shape[0], per_row):
        rows += [a[i : i + per_row], b[i : i + per_row]]
    return torch.cat(rows)
