"""The domain feature extractor for 28x28 grayscale digits: a small CNN classifier trained on MNIST.

Inception weights cannot be fetched offline and Inception is slow on a CPU, so MNIST-family suites
measure FID/KID/precision-recall in the 128-d penultimate layer of this network instead. The shipped
weights (``aebench/assets/digits_cnn.pt``) are pinned by their sha256; ``aebench train-extractor``
retrains them reproducibly (fixed seed, deterministic CPU kernels).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aebench.errors import AebenchError

ASSET = Path(__file__).resolve().parents[1] / "assets" / "digits_cnn.pt"
# sha256 of the shipped weights file; a retrained file is used through a weights path setting, or replaces
# the asset together with this constant.
ASSET_SHA256 = "8eb969089efe60243e72c98d1cea7895b2a8ca9507c281f36b824efa52f6b9ba"
TF_NAME = "aebench-digits"  # the name registered with torch-fidelity
FEATURE_DIM = 128
TRAIN_DEFAULTS = {"epochs": 6, "seed": 0, "batch_size": 128, "lr": 2e-3}


class Pool2(nn.Module):
    """2x2 max pooling, stride 2, floor mode: ``nn.MaxPool2d(2)``'s values (a max is exact) from two strided
    ``torch.maximum``s, 3-8x faster than the CPU kernel of ``max_pool2d`` on these small maps. No parameters,
    so the weights file's keys are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class DigitsCNN(nn.Module):
    """Three conv blocks and a 128-d feature layer: about 2 MFLOPs per image, so 10k images take seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), Pool2(),  # 14x14
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), Pool2(),  # 7x7
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), Pool2(),  # 3x3
            nn.Flatten(), nn.Linear(64 * 9, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 10)

    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 1 or 3, 28, 28) images to standardised float grayscale, as in training."""
        x = x.float().div(255.0)
        if x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        return (x - 0.1307) / 0.3081

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) for float input already passed through ``prepare``."""
        h = self.body(x)
        return h, self.head(h)


def file_sha256(path: str | Path) -> str:
    from aebench.store.jobdir import sha256_file

    return sha256_file(Path(path))


def load_digits_cnn(path: str | Path | None = None) -> tuple[DigitsCNN, str]:
    """The network and its weights' sha256; the shipped file must match the pinned hash."""
    p = Path(path) if path else ASSET
    if not p.is_file():
        raise AebenchError(f"digits extractor weights not found at {p}; retrain them with "
                           "`aebench train-extractor --out FILE` and pass feature_extractor_weights_path: FILE")
    digest = file_sha256(p)
    if path is None and digest != ASSET_SHA256:
        raise AebenchError(f"the shipped digits extractor weights {p} are damaged (sha256 {digest[:12]}..., "
                           f"expected {ASSET_SHA256[:12]}...); reinstall aebench or retrain with "
                           "`aebench train-extractor`")
    blob = torch.load(p, map_location="cpu", weights_only=True)
    net = DigitsCNN()
    try:
        net.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise AebenchError(f"{p} is not a digits extractor weights file: {str(exc).splitlines()[0][:200]}") from None
    net.eval().requires_grad_(False)
    return net, digest


def extractor_meta(path: str | Path | None = None) -> dict[str, Any]:
    """What the weights file records about its training (accuracy, command, settings)."""
    return dict(torch.load(Path(path) if path else ASSET, map_location="cpu", weights_only=True).get("meta", {}))


# -- torch-fidelity integration ---------------------------------------------------------------------------
def _feature_extractor_class() -> type:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class DigitsFeatureExtractor(FeatureExtractorBase):
        """torch-fidelity wrapper: uint8 (B, 1|3, 28, 28) in, ('features', 'logits') out."""

        def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                     **kwargs: Any) -> None:
            super().__init__(name, features_list)
            self.net, self.sha256 = load_digits_cnn(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return ("features", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return {"isc": "logits"}.get(metric, "features")

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> torch.Tensor:
            return torch.zeros(1, 1, 28, 28, dtype=torch.uint8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3) or tuple(x.shape[2:]) != (28, 28):
                raise AebenchError(f"the digits extractor takes uint8 (B, 1|3, 28, 28) images, got "
                                   f"{x.dtype} {tuple(x.shape)}; use extractor: inception for other images")
            feats, logits = self.net(self.net.prepare(x))
            out = {"features": feats, "logits": logits}
            return tuple(out[name] for name in self.features_list)

    return DigitsFeatureExtractor


def register_with_torch_fidelity() -> str:
    """Register the extractor with torch-fidelity once per process; returns its name there."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if TF_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(TF_NAME, _feature_extractor_class())
    return TF_NAME


# -- training -------------------------------------------------------------------------------------------------
@torch.no_grad()
def accuracy(net: DigitsCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        _, logits = net(net.prepare(images[i : i + batch_size]))
        correct += int((logits.argmax(1) == labels[i : i + batch_size]).sum())
    return correct / len(images)


def train_extractor(data_root: str | Path | None, out: str | Path, epochs: int = TRAIN_DEFAULTS["epochs"],
                    seed: int = TRAIN_DEFAULTS["seed"], threads: int | None = None,
                    batch_size: int = TRAIN_DEFAULTS["batch_size"], lr: float = TRAIN_DEFAULTS["lr"],
                    limit: int | None = None, log: Any = print) -> dict[str, Any]:
    """Train the digits CNN on MNIST train, test it on MNIST test, save weights and meta to ``out``.

    Runs on the CPU with deterministic kernels and a fixed seed, so the same command on the same machine
    and thread count gives the same file. ``limit`` uses the first images of each split only (quick checks).
    Returns the meta (test accuracy, sha256, settings, seconds).
    """
    from aebench.data import load
    from aebench.store.atomic import atomic_torch_save

    if threads:
        torch.set_num_threads(int(threads))
    train = load("mnist", "train", data_root, download=False).subset(limit)
    test = load("mnist", "test", data_root, download=False).subset(limit)
    torch.manual_seed(seed)
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    try:
        net = DigitsCNN()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        steps = epochs * -(-len(train) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            net.train()
            order = torch.randperm(len(train), generator=gen)
            total = 0.0
            for i in range(0, len(train), batch_size):
                idx = order[i : i + batch_size]
                x = _shift(train.images[idx], gen)
                _, logits = net(net.prepare(x))
                loss = F.cross_entropy(logits, train.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            acc = accuracy(net, test.images, test.labels)
            log(f"epoch {epoch + 1}/{epochs}: train loss {total / len(train):.4f}, test accuracy {acc:.4f}")
    finally:
        torch.use_deterministic_algorithms(prev_det)
    acc = accuracy(net, test.images, test.labels)
    meta = {"test_accuracy": acc, "epochs": epochs, "limit": limit, "seed": seed, "batch_size": batch_size, "lr": lr,
            "threads": torch.get_num_threads(), "torch": str(torch.__version__),
            "command": f"aebench train-extractor --epochs {epochs} --seed {seed} --threads {torch.get_num_threads()}"}
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    atomic_torch_save({"state_dict": state, "meta": meta}, Path(out))  # no timings inside: same run, same bytes
    return {**meta, "sha256": file_sha256(out), "seconds": round(time.perf_counter() - t0, 1)}


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to ``max_shift`` pixels per image (zero fill): cheap augmentation that makes
    the features less sensitive to the small misplacements generated digits have."""
    b = x.shape[0]
    padded = F.pad(x, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(28)[None, :])  # (b, 28)
    cols = (dx[:, None] + torch.arange(28)[None, :])
    bi = torch.arange(b)[:, None, None]
    return padded[bi, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)
