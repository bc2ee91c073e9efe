"""In-memory image sets and the data root.

Images stay uint8 (N, C, H, W) on the training device and are turned to floats one batch at a time:
MNIST fits in 47 MB that way, and no per-item DataLoader sits in the hot loop.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aebench.errors import AebenchError

if TYPE_CHECKING:
    import torch

DEFAULT_DATA_ROOT = "~/.cache/aebench/data"
CACHE_VERSION = 1


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The data root: ``--data-root``, else ``$AEBENCH_DATA``, else ``~/.cache/aebench/data``."""
    root = explicit or os.environ.get("AEBENCH_DATA") or DEFAULT_DATA_ROOT
    return Path(root).expanduser()


@dataclass
class ImageSet:
    """One split of a dataset: uint8 images (N, C, H, W) and, where known, int64 labels."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def to(self, device: torch.device | str) -> ImageSet:
        labels = None if self.labels is None else self.labels.to(device)
        return ImageSet(self.name, self.split, self.images.to(device), labels)

    def subset(self, n: int | None) -> ImageSet:
        """The first ``n`` items (all when ``n`` is None), for quick tries and tests."""
        if n is None or n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return ImageSet(self.name, self.split, self.images[:n], labels)

    def split_off(self, n_val: int) -> tuple[ImageSet, ImageSet]:
        """(train, val): the last ``n_val`` items are the validation split, the rest the training split.

        A fixed rule (no shuffling, no seed), so every model and every seed sees the same split; as in the RAE
        code's MNIST protocol, the last 10,000 of the 60,000 training images validate.
        """
        if n_val <= 0:
            return self, ImageSet(self.name, "val", self.images[:0], None if self.labels is None else self.labels[:0])
        if n_val >= len(self):
            raise AebenchError(f"data.val {n_val} leaves no training images ({self.name} has {len(self)})")
        cut = len(self) - n_val
        labels = (None, None) if self.labels is None else (self.labels[:cut], self.labels[cut:])
        return (ImageSet(self.name, self.split, self.images[:cut], labels[0]),
                ImageSet(self.name, "val", self.images[cut:], labels[1]))

    def floats(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images in [0, 1] as float32, converted on the tensor's own device."""
        x = self.images if index is None else self.images[index]
        return x.float().div_(255.0)


def cache_root() -> Path:
    """Where aebench caches derived files: ``$AEBENCH_CACHE`` or ``~/.cache/aebench``.

    Kept apart from the data root, which may be a shared, read-only folder.
    """
    return Path(os.environ.get("AEBENCH_CACHE") or "~/.cache/aebench").expanduser()


def _cache_path(root: Path, name: str, split: str) -> Path:
    """The uint8 cache of a split, keyed by the data root too (two roots may hold different files)."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return cache_root() / "datasets" / f"{name}-{split}-{key}-v{CACHE_VERSION}.pt"


# cache file -> (its stat stamp, images, labels) of the last splits verified in this process: a job's training and
# evaluation stages reuse them instead of reading and hashing the file again (the tensors are shared, read-only)
_VERIFIED: dict[Path, tuple] = {}


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size, st.st_ino


def _checksum(images: torch.Tensor, labels: torch.Tensor | None) -> str:
    h = hashlib.sha256(images.contiguous().numpy().tobytes())
    if labels is not None:
        h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_file(name: str, split: str, root: str | os.PathLike | None = None,
               options: dict | None = None) -> Path | None:
    """Where ``load`` caches a split, or None for splits it does not cache (loader options, generated sets)."""
    from aebench.registry import DATASETS

    name = DATASETS.canonical(name)
    if options or getattr(DATASETS.get(name), "generated", False):
        return None
    return _cache_path(data_root(root), name, split)


def load(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    download: bool = True,
    options: dict | None = None,
) -> ImageSet:
    """Load a registered dataset's split, through a verified uint8 cache on disk after the first read.

    ``options`` go to the loader (``n`` for the encoder task, say); generated sets are not cached.
    """
    import torch

    from aebench.registry import DATASETS
    from aebench.store.atomic import atomic_torch_save

    name = DATASETS.canonical(name)
    loader = DATASETS.get(name)
    base = data_root(root)
    options = dict(options or {})
    cache = cache_file(name, split, root, options)
    if cache is not None and cache.exists():
        stamp = _stamp(cache)
        if _VERIFIED.get(cache, (None,))[0] == stamp:  # verified earlier in this process, file unchanged since
            return ImageSet(name, split, *_VERIFIED[cache][1:])
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True)
            if blob.get("sha256") == _checksum(blob["images"], blob.get("labels")):
                _VERIFIED.pop(cache, None)
                _VERIFIED[cache] = (stamp, blob["images"], blob.get("labels"))
                while len(_VERIFIED) > 2:  # a dataset's train and test splits; each job loads them 2-3 times
                    _VERIFIED.pop(next(iter(_VERIFIED)))
                return ImageSet(name, split, blob["images"], blob.get("labels"))
            problem = "checksum mismatch"
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt from the source files
            problem = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        print(f"aebench: damaged dataset cache {cache} ({problem}); rebuilding it from the data root",
              file=sys.stderr)
    try:
        images, labels = loader(base, split, download, **options)
    except TypeError as exc:
        raise AebenchError(f"dataset {name!r} does not take options {sorted(options)}: {exc}") from None
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise AebenchError(f"dataset {name!r} loader returned {images.dtype} {tuple(images.shape)}, want uint8 NCHW")
    if cache is not None:
        try:
            atomic_torch_save(
                {"images": images, "labels": labels, "sha256": _checksum(images, labels)}, cache
            )
        except OSError:
            pass  # a read-only data root still works, only slower next time
    return ImageSet(name, split, images, labels)
