"""Random binary patterns: the textbook input of associative-memory capacity experiments.

Each image is size x size independent pixels, on (255, +1 as a Hopfield state) with probability ``p`` and off (0,
-1) otherwise. ``p = 0.5`` gives the unbiased +-1 patterns of Hopfield's capacity analysis (about 0.138 N patterns
with N = size^2 units, Amit, Gutfreund & Sompolinsky 1985); another ``p`` gives biased patterns of mean activity
a = 2p - 1 (the centred rule's case). Deterministic: the train split draws from seed 0, the test split from seed 1.
"""

from __future__ import annotations

from pathlib import Path

import torch

from aebench.errors import AebenchError


def random_patterns(root: Path, split: str, download: bool, n: int | None = None, size: int = 16,
                    p: float = 0.5) -> tuple[torch.Tensor, None]:
    """(n, 1, size, size) uint8 images in {0, 255}; n defaults to 1024 (train) or 256 (test); no labels."""
    if split not in ("train", "test"):
        raise AebenchError(f"unknown split {split!r}; allowed: train, test")
    n = n if n is not None else (1024 if split == "train" else 256)
    if n < 1 or size < 1:
        raise AebenchError(f"random-patterns needs n >= 1 and size >= 1, got n={n}, size={size}")
    if not 0.0 < p < 1.0:
        raise AebenchError(f"random-patterns needs 0 < p < 1, got p={p}")
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    on = torch.rand(n, 1, size, size, generator=g) < p
    return on.to(torch.uint8) * 255, None


random_patterns.generated = True
