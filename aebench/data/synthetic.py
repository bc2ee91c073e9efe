"""Data made on the spot: the lecture's N-M-N encoder task and a small labelled image set for tests."""

from __future__ import annotations

from pathlib import Path

import torch

from aebench.errors import AebenchError


def encoder_task(root: Path, split: str, download: bool, n: int = 8):
    """The N-M-N encoder problem: the N one-hot patterns, as (N, 1, 1, N) images; both splits equal."""
    if n < 2:
        raise AebenchError(f"encoder task needs n >= 2, got {n}")
    images = (torch.eye(n, dtype=torch.uint8) * 255).reshape(n, 1, 1, n)
    return images, torch.arange(n)


encoder_task.generated = True


def synthetic(root: Path, split: str, download: bool, n: int | None = None, size: int = 12):
    """Bars on a dark background: class k is a bright bar at one of 4 positions and 2 orientations."""
    n = n or (512 if split == "train" else 256)
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.randint(0, 8, (n,), generator=g)
    images = torch.zeros(n, 1, size, size)
    pos = (labels % 4) * (size // 4) + 1
    for i in range(n):
        p = int(pos[i])
        if labels[i] < 4:
            images[i, 0, :, p : p + 2] = 1.0
        else:
            images[i, 0, p : p + 2, :] = 1.0
    images = (images * 0.8 + 0.2 * torch.rand(n, 1, size, size, generator=g)).clamp(0, 1)
    return (images * 255).round().to(torch.uint8), labels


synthetic.generated = True
