"""Standard feature extractors for real users: torch-fidelity's Inception-v3 and DINOv2, weights cached by aebench.

The weights are downloaded once into aebench's cache (``$AEBENCH_CACHE`` or ``~/.cache/aebench``, folder
``extractors/``) when the network allows, checked against their checksum, and used from there. Offline, the
extractor fails with one line naming the file to place there.

- ``inception`` (``fidelity.inception_extractor``): torch-fidelity's ``inception-v3-compat`` weights, when no
  ``feature_extractor_weights_path`` is given. torch-fidelity pins no full digest; the file name carries the
  first 8 hex digits of its sha256 (``6726825d``), checked as ``torch.hub``'s ``check_hash`` does. The full
  sha256 lands in ``fid/setup``.
- ``dinov2-vit-{s,b,l,g}-14``: torch-fidelity's DINOv2 extractors (``dinov2`` is ViT-L/14, the FD_DINOv2
  backbone of Stein et al. 2023). The weights are Meta's ``*_pretrain.pth`` backbone files; Meta publishes no
  checksum, so aebench records the file's sha256 in ``fid/setup`` and the strict ``load_state_dict`` checks its
  layout. The model code is DINOv2's ``torch.hub`` entry point, cached under ``<cache>/torch-hub``; the features
  are torch-fidelity's (its ``forward``: resize to 224, ImageNet normalisation, the CLS token).

Also here: ``context_extractor`` and ``sample_features``, the extractor and generated-image features that
``fid_inf``, ``prdc``, ``memorisation`` and ``interp_fid`` share through the evaluation context.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from aebench.errors import AebenchError

if TYPE_CHECKING:
    from aebench.metrics.base import EvalContext
    from aebench.metrics.fidelity import Extractor, Features


@dataclass(frozen=True)
class WeightsFile:
    """A downloadable weights file: its name in the cache, its URL and what its sha256 must be."""

    name: str
    url: str
    sha256: str | None = None  # the full digest, where one is published
    hash_prefix: str | None = None  # torch.hub's convention: 'name-<first hex digits of the sha256>.pth'


def _inception() -> WeightsFile:
    from aebench.metrics.fidelity import INCEPTION_URL

    return WeightsFile(INCEPTION_URL.rsplit("/", 1)[1], INCEPTION_URL, hash_prefix="6726825d")


DINOV2_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"
DINOV2_HUB = "facebookresearch/dinov2"
DINOV2 = {  # torch-fidelity's extractor names -> DINOv2's hub entry points (feature sizes 384, 768, 1024, 1536)
    "dinov2-vit-s-14": "dinov2_vits14",
    "dinov2-vit-b-14": "dinov2_vitb14",
    "dinov2-vit-l-14": "dinov2_vitl14",
    "dinov2-vit-g-14": "dinov2_vitg14",
}
DINOV2_FILES: dict[str, WeightsFile] = {
    name: WeightsFile(f"{hub}_pretrain.pth", f"{DINOV2_BASE_URL}/{hub}/{hub}_pretrain.pth")
    for name, hub in DINOV2.items()
}


def weights_folder() -> Path:
    """``<aebench cache>/extractors``: where downloaded extractor weights live."""
    from aebench.data.base import cache_root

    return cache_root() / "extractors"


def _digest(path: Path) -> str:
    from aebench.store.jobdir import sha256_file

    return sha256_file(path)


def _mismatch(spec: WeightsFile, digest: str) -> str | None:
    """What the digest fails to match, or None when it is accepted."""
    if spec.sha256 and digest != spec.sha256.lower():
        return f"sha256 {spec.sha256}"
    if spec.hash_prefix and not digest.startswith(spec.hash_prefix.lower()):
        return f"a sha256 starting {spec.hash_prefix}"
    return None


def fetch_weights(spec: WeightsFile, folder: Path | None = None, timeout: float = 60.0) -> Path:
    """The checked local copy of ``spec``: the cached file, else downloaded (atomically) and checked.

    Raises AebenchError with one line: offline, which file to place where; a wrong checksum, that the file
    was refused (a download is deleted, a cached file left for the user to replace).
    """
    folder = Path(folder) if folder is not None else weights_folder()
    path = folder / spec.name
    if path.is_file():
        bad = _mismatch(spec, _digest(path))
        if bad:
            raise AebenchError(f"{path} does not have {bad}: it is damaged or another file; delete it so aebench "
                               f"downloads it again, or replace it with {spec.url}")
        return path
    tmp = folder / f".{spec.name}.{os.getpid()}.download"  # per process: concurrent jobs may download at once
    try:
        folder.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with urllib.request.urlopen(spec.url, timeout=timeout) as response, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                h.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise AebenchError(f"cannot download {spec.url} ({reason}); without network, fetch that file elsewhere "
                           f"and place it at {path}") from None
    bad = _mismatch(spec, h.hexdigest())
    if bad:
        tmp.unlink(missing_ok=True)
        raise AebenchError(f"refused the download of {spec.url}: its sha256 is {h.hexdigest()}, expected {bad}")
    os.replace(tmp, path)
    return path


def inception_weights(folder: Path | None = None) -> Path:
    """torch-fidelity's Inception-v3 weights, downloaded into the cache and checked."""
    return fetch_weights(_inception(), folder)


def dinov2_weights(name: str, folder: Path | None = None) -> Path:
    """The DINOv2 backbone's weights file (``name``: dinov2-vit-s-14, ...), downloaded into the cache if missing."""
    return fetch_weights(DINOV2_FILES[name], folder)


def _hub_model(name: str) -> torch.nn.Module:
    """DINOv2's architecture without weights, from its torch.hub entry point cached under aebench's cache."""
    from aebench.data.base import cache_root

    hub = cache_root() / "torch-hub"
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        return torch.hub.load(DINOV2_HUB, DINOV2[name], pretrained=False, trust_repo=True, verbose=False)
    except Exception as exc:  # noqa: BLE001 - torch.hub raises assorted errors offline
        raise AebenchError(f"cannot load DINOv2's model code ({exc.__class__.__name__}); without network, place a "
                           f"checkout of github.com/{DINOV2_HUB} at {hub / 'facebookresearch_dinov2_main'}") from None
    finally:
        torch.hub.set_dir(old)


def load_dinov2(name: str, weights_path: str | Path) -> torch.nn.Module:
    """The DINOv2 backbone ``name`` with the weights of ``weights_path`` (strict: every tensor must fit)."""
    model = _hub_model(name)
    try:
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001
        raise AebenchError(f"cannot load {name} weights from {weights_path}: {exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    return model


def _register_dinov2(name: str) -> str:
    """Register torch-fidelity's DINOv2 extractor, its backbone loaded from a weights file, as ``aebench-<name>``."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    class CachedDinoV2(FeatureExtractorDinoV2):
        """torch-fidelity's DINOv2 extractor (its ``forward``), the backbone built by ``load_dinov2``."""

        def __init__(self, tf_name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                     **kwargs):
            FeatureExtractorBase.__init__(self, tf_name, features_list)
            self.feature_extractor_internal_dtype = torch.float32
            self.model = load_dinov2(name, feature_extractor_weights_path or dinov2_weights(name))
            self.requires_grad_(False)
            self.eval()

    tf_name = f"aebench-{name}"
    if tf_name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(tf_name, CachedDinoV2)
    return tf_name


def dinov2_extractor(name: str, weights_path: str | None = None) -> Features:
    """torch-fidelity's DINOv2 extractor ``name`` (CLS features); weights from ``weights_path`` or the cache."""
    from aebench.metrics.digits_extractor import file_sha256
    from aebench.metrics.fidelity import Features, _create

    path = str(weights_path or dinov2_weights(name))
    return Features(_create(_register_dinov2(name), "dinov2", path), f"aebench-{name}", file_sha256(path), 3)


# the EXTRACTORS registry's factories (catalog.py): weights_path -> Features
dinov2_vits14 = partial(dinov2_extractor, "dinov2-vit-s-14")
dinov2_vitb14 = partial(dinov2_extractor, "dinov2-vit-b-14")
dinov2_vitl14 = partial(dinov2_extractor, "dinov2-vit-l-14")
dinov2_vitg14 = partial(dinov2_extractor, "dinov2-vit-g-14")


# -- the extractor and features shared by the fid family of metrics --------------------------------------------
def context_extractor(ctx: EvalContext, extractor: str = "auto", weights_path: str | None = None) -> Extractor:
    """The feature extractor fid uses for this dataset, built once per evaluation and shared by the metrics."""
    from aebench.metrics.fidelity import Extractor, resolve_extractor

    kind = resolve_extractor(extractor, ctx.test.shape)
    key = ("extractor", kind, weights_path)
    if key not in ctx._cache:
        # small batches keep the digits CNN's activations in the CPU cache; GPUs and big nets take the suite's
        batch = 256 if kind == "digits" and ctx.device.type == "cpu" else ctx.batch_size
        ctx._cache[key] = Extractor(kind, ctx.device, weights_path, batch)
    return ctx._cache[key]


def sample_features(ctx: EvalContext, ext: Extractor, sampler: str, n: int) -> torch.Tensor:
    """Features (CPU float32) of ``ctx.samples(sampler, n)``, computed once per evaluation."""
    key = ("features", ext.name, ext.weights_hash, "samples", sampler, n)
    if key not in ctx._cache:
        ctx._cache[key] = ext.features(ctx.samples(sampler, n))
    return ctx._cache[key]


def image_features(ctx: EvalContext, ext: Extractor, tag: str, images: torch.Tensor) -> torch.Tensor:
    """Features of other images (reconstructions, training images), cached in the context under ``tag``."""
    key = ("features", ext.name, ext.weights_hash, tag, len(images))
    if key not in ctx._cache:
        ctx._cache[key] = ext.features(images)
    return ctx._cache[key]
