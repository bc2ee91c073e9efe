"""Loaders for torchvision's image datasets, returning uint8 (N, C, H, W) tensors and labels.

Each uses torchvision's own folder layout under the data root, so files a user already has are found,
and downloads when the network allows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aebench.errors import AebenchError

SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise AebenchError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def _fetch(cls, root: Path, download: bool, name: str, **kwargs):
    try:
        return cls(str(root), download=download, **kwargs)
    except (RuntimeError, OSError) as exc:  # torchvision raises these for missing files / no network
        raise AebenchError(
            f"dataset {name!r} not found under data root {root} and could not be downloaded "
            f"({str(exc).splitlines()[0][:160]}); set --data-root or AEBENCH_DATA"
        ) from None


def _mnist_like(cls_name: str, name: str):
    def load(root: Path, split: str, download: bool):
        import torchvision.datasets as tvd

        _check_split(split)
        ds = _fetch(getattr(tvd, cls_name), root, download, name, train=(split == "train"))
        images = ds.data.to(torch.uint8).unsqueeze(1).contiguous()
        return images, torch.as_tensor(ds.targets, dtype=torch.int64)

    load.__doc__ = f"{name}: 28x28 grayscale, 10 classes (torchvision {cls_name})"
    return load


mnist = _mnist_like("MNIST", "mnist")
fashion_mnist = _mnist_like("FashionMNIST", "fashion-mnist")
kmnist = _mnist_like("KMNIST", "kmnist")


def cifar10(root: Path, split: str, download: bool):
    """CIFAR-10: 32x32 colour, 10 classes."""
    import torchvision.datasets as tvd

    _check_split(split)
    ds = _fetch(tvd.CIFAR10, root, download, "cifar10", train=(split == "train"))
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(ds.targets, dtype=torch.int64)


CELEBA_SIZE = 64


def celeba(root: Path, split: str, download: bool):
    """CelebA: centre crop 148 then resize to 64x64 (the WAE/RAE protocol); no class labels."""
    import torchvision.datasets as tvd
    from torchvision.transforms import functional as F

    _check_split(split)
    ds = _fetch(tvd.CelebA, root, download, "celeba", split="train" if split == "train" else "test",
                target_type=[])
    out = torch.empty(len(ds), 3, CELEBA_SIZE, CELEBA_SIZE, dtype=torch.uint8)
    for i in range(len(ds)):
        img = ds[i][0] if isinstance(ds[i], tuple) else ds[i]
        img = F.center_crop(img, [148, 148])
        img = F.resize(img, [CELEBA_SIZE, CELEBA_SIZE], antialias=True)
        out[i] = F.pil_to_tensor(img)
    return out, None
