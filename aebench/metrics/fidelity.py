"""FID, KID and precision/recall of generated images and reconstructions against the test set.

The feature extractors are torch-fidelity's (``inception-v3-compat``, or aebench's digits CNN registered
with torch-fidelity as ``aebench-digits``). FID comes from torch-fidelity's own ``fid_statistics_to_metric``;
KID from a torch re-implementation of its ``kid_features_to_metric`` (the same subsets and kernel, the real
set's terms computed once: ``aebench.metrics.kid``); precision/recall from a re-implementation of its ``prc``
that reuses the real set's k-NN radii. All equal a direct ``torch_fidelity.calculate_metrics`` call on the same
images (tests check it). aebench extracts features in large batches on the job's device (no DataLoader
workers) and caches the test set's features and radii on disk, keyed by dataset, split, count,
image content and the extractor's weights hash, so they are computed once.

Keys, for each source ``s`` (every sampler of the suite, and ``recon`` for test reconstructions):
``fid/<s>`` (FID, lower is better), ``fid/kid_<s>`` (KID mean, lower is better), ``fid/precision_<s>`` and
``fid/recall_<s>`` (Kynkaanniemi et al. 2019, higher is better). Details: ``fid/kid_std`` per source and
``fid/setup`` (extractor, weights hash, counts).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aebench.errors import AebenchError
from aebench.metrics.base import EvalContext
from aebench.metrics.kid import KIDReference

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
REF_CACHE_VERSION = 1


def resolve_extractor(extractor: str, image_shape: tuple[int, ...]) -> str:
    """'auto' means the digits CNN for 28x28 grayscale images and Inception otherwise; else a registered name."""
    from aebench.registry import EXTRACTORS

    if extractor == "auto":
        return "digits" if tuple(image_shape) == (1, 28, 28) else "inception"
    return EXTRACTORS.canonical(extractor)


@dataclass
class Features:
    """What an extractor factory returns: the torch-fidelity module (called on uint8 batches, returning a
    1-tuple of features), its name, the hash that identifies its weights, and the channels it takes."""

    module: Any
    name: str
    weights_hash: str
    channels: int = 3


def _create(name: str, feature: str, path: str | None, kind: str | None = None) -> Any:
    from torch_fidelity.utils import create_feature_extractor

    try:
        return create_feature_extractor(name, [feature], cuda=False, verbose=False,
                                        feature_extractor_weights_path=path)
    except AebenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch-fidelity raises assorted errors for a wrong file
        raise AebenchError(f"cannot load {kind or name} extractor weights from {path}: {exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None


def digits_extractor(weights_path: str | None = None) -> Features:
    """aebench's MNIST CNN (shipped), registered with torch-fidelity; 28x28 grayscale."""
    from aebench.metrics.digits_extractor import register_with_torch_fidelity

    name = register_with_torch_fidelity()
    module = _create(name, "features", weights_path, "digits")
    return Features(module, name, module.sha256, 1)


def inception_extractor(weights_path: str | None = None) -> Features:
    """torch-fidelity's Inception-v3 pool features (2048); the weights come from ``weights_path``, else from
    aebench's cache (downloaded there once and checked: ``aebench.metrics.extractors``)."""
    from aebench.metrics.digits_extractor import file_sha256
    from aebench.metrics.extractors import inception_weights

    if not weights_path:
        try:
            weights_path = str(inception_weights())
        except AebenchError as exc:
            raise AebenchError(f"{exc}, or set the metric setting feature_extractor_weights_path "
                               "(or use extractor: digits for 28x28 grayscale images)") from None
    module = _create(INCEPTION_NAME, "2048", weights_path, "inception")
    return Features(module, INCEPTION_NAME, file_sha256(weights_path), 3)


class Extractor:
    """A registered feature extractor (``aebench ls extractors``) on the job's device, with its weights hash."""

    def __init__(self, kind: str, device: torch.device, weights_path: str | None = None, batch_size: int = 1000):
        from aebench.registry import EXTRACTORS

        self.kind, self.device, self.batch_size = kind, device, batch_size
        if weights_path and not Path(weights_path).expanduser().is_file():
            raise AebenchError(f"feature_extractor_weights_path {weights_path!r} is not a file")
        path = str(Path(weights_path).expanduser()) if weights_path else None
        made = EXTRACTORS.get(kind)(path)
        self.module, self.name, self.weights_hash, self.channels = made.module, made.name, made.weights_hash, \
            made.channels
        self.module.to(device)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Inception takes 3 channels: grayscale images are repeated, as torch-fidelity's loaders do."""
        if self.channels == 3 and images.shape[1] == 1:
            return images.expand(-1, 3, -1, -1)
        return images

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (N, F) features of uint8 (N, C, H, W) images, on the CPU."""
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            batch = self.prepare(images[i : i + self.batch_size]).to(self.device)
            (feats,) = self.module(batch)
            out.append(feats.float().cpu())
        return torch.cat(out)


def statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features)


def _cached(ctx: EvalContext, fname: str, compute) -> torch.Tensor:
    """A tensor from ``<cache_dir>/fid-reference/<fname>``, computed and stored on a miss."""
    path = Path(ctx.cache_dir) / "fid-reference" / fname if ctx.cache_dir else None
    if path is not None and path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)["value"]
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            pass
    value = compute()
    if path is not None:
        from aebench.store.atomic import atomic_torch_save

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_torch_save({"value": value}, path)
        except OSError:
            pass  # a read-only results folder still works, only slower next time
    return value


def reference(ctx: EvalContext, ext: Extractor, n: int) -> tuple[torch.Tensor, dict[str, np.ndarray], str]:
    """Features and FID statistics of the first ``n`` test images (cached on disk), and the cache key
    (``kid_reference`` gives the matching KID reference)."""
    key = ("fid-ref", ext.name, ext.weights_hash, n)
    if key not in ctx._cache:
        images = ctx.test.images[:n].cpu()
        content = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:12]
        stem = (f"{ctx.test.name}-{ctx.test.split}-n{n}-{ext.kind}-{ext.weights_hash[:12]}-{content}"
                f"-v{REF_CACHE_VERSION}")
        feats = _cached(ctx, f"{stem}.pt", lambda: ext.features(images))
        ctx._cache[key] = (feats, statistics(feats), stem)
    return ctx._cache[key]


def kid_reference(ctx: EvalContext, real: torch.Tensor, stem: str) -> KIDReference:
    """The KID reference of the real features ``reference`` returned under ``stem``, shared by the context's
    metrics (fid, fid_inf), so the real set's kernel terms are computed once per job."""
    key = ("kid-ref", stem)
    if key not in ctx._cache:
        ctx._cache[key] = KIDReference(real.to(ctx.device))
    return ctx._cache[key]


def knn_radii(feats: torch.Tensor, k: int, batch: int = 1000) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point (the point itself is the 0th), as torch-fidelity."""
    if len(feats) < k + 1:
        raise AebenchError(f"precision/recall with prc_neighborhood={k} needs more than {k} images, got {len(feats)}")
    return torch.cat([torch.cdist(feats[i : i + batch], feats).topk(k + 1, dim=1, largest=False).values[:, -1]
                      for i in range(0, len(feats), batch)])


def precision_recall(gen: torch.Tensor, real: torch.Tensor, real_radii: torch.Tensor, k: int,
                     batch: int = 1000) -> tuple[float, float]:
    """Improved precision/recall (Kynkaanniemi et al. 2019) exactly as torch-fidelity's ``prc`` computes it.

    Precision: share of generated points inside some real point's k-NN ball; recall: share of real points
    inside some generated point's ball. Re-implemented only to reuse the real radii and to take the k-th
    distance by ``topk`` (``kthvalue`` is 4x slower on a CPU); a test checks it equals torch-fidelity.
    """
    gen_radii = knn_radii(gen, k, batch)
    precise = torch.zeros(len(gen), dtype=torch.bool)
    recalled = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    for i in range(0, len(gen), batch):
        d = torch.cdist(gen[i : i + batch], real)
        precise[i : i + batch] = (d <= real_radii[None, :]).any(1).cpu()
        recalled |= (d <= gen_radii[i : i + batch, None]).any(0)
    return float(precise.float().mean()), float(recalled.float().mean())


def compare(gen: torch.Tensor, real: torch.Tensor, real_stats: dict[str, np.ndarray], kid: bool, prc: bool,
            kid_subsets: int = 100, kid_subset_size: int = 1000, prc_neighborhood: int = 3,
            real_radii: torch.Tensor | None = None, kid_ref: KIDReference | None = None) -> dict[str, float]:
    """FID (and KID, precision/recall) between generated and real features (CPU or device tensors).

    ``kid_ref``: the real features' ``KIDReference`` (``kid_reference``), to reuse its real-set terms."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    out = {"fid": fid_statistics_to_metric(statistics(gen.cpu()), real_stats, False)["frechet_inception_distance"]}
    if kid:
        size = min(kid_subset_size, len(gen), len(real))
        out["kid"], out["kid_std"] = (kid_ref or KIDReference(real))(gen, kid_subsets, size)
    if prc:
        if real_radii is None:
            real_radii = knn_radii(real, prc_neighborhood)
        out["precision"], out["recall"] = precision_recall(gen, real, real_radii, prc_neighborhood)
    return out


@dataclass
class FIDSettings:
    """Settings of the ``fid`` metric (checked by ``aebench validate`` before anything trains).

    ``extractor``: auto (digits for 28x28 grayscale, else inception), or a registered extractor
    (``aebench ls extractors``). ``n_samples``: generated images per sampler (default: the suite's
    ``eval.n_samples``); the reference is the first ``n_samples`` test images.
    """

    extractor: str = "auto"
    n_samples: int | None = None
    feature_extractor_weights_path: str | None = None
    recon: bool = True
    kid: bool = True
    prc: bool = True
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prc_neighborhood: int = 3

    def __post_init__(self) -> None:
        from aebench.errors import SuiteError
        from aebench.registry import EXTRACTORS

        if self.extractor != "auto" and self.extractor not in EXTRACTORS:
            raise SuiteError(None, "extractor", f"unknown extractor {self.extractor!r}; allowed: auto, "
                             f"{', '.join(EXTRACTORS.names())}")
        if self.n_samples is not None and self.n_samples < 2:
            raise SuiteError(None, "n_samples", f"must be >= 2, got {self.n_samples}")
        for name in ("kid_subsets", "kid_subset_size", "prc_neighborhood"):
            if getattr(self, name) < 1:
                raise SuiteError(None, name, f"must be >= 1, got {getattr(self, name)}")


def fid_depends(settings: dict[str, Any]) -> dict[str, Any]:
    """What FID depends on beyond its settings: the extractor's weights, by hash (a retrained extractor
    recomputes every FID; moving the same weights file does not)."""
    from aebench.metrics.digits_extractor import ASSET_SHA256, file_sha256

    path = settings.get("feature_extractor_weights_path")
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            from aebench.errors import SuiteError

            raise SuiteError(None, "feature_extractor_weights_path", f"{path!r} is not a file")
        return {"weights_sha256": file_sha256(p)}
    return {"weights_sha256": ASSET_SHA256 if settings.get("extractor") in ("auto", "digits") else None}


def fid(ctx: EvalContext, **options: Any) -> dict[str, Any]:
    """FID/KID/precision-recall of each sampler's images and of the reconstructions, against the test set
    (settings: ``FIDSettings``)."""
    s = FIDSettings(**options)
    extractor, n_samples, feature_extractor_weights_path = s.extractor, s.n_samples, s.feature_extractor_weights_path
    recon, kid, prc = s.recon, s.kid, s.prc
    kid_subsets, kid_subset_size, prc_neighborhood = s.kid_subsets, s.kid_subset_size, s.prc_neighborhood
    from aebench.metrics.extractors import context_extractor, image_features, sample_features

    n = int(n_samples or ctx.n_samples)
    if n < 2:
        raise AebenchError(f"fid needs n_samples >= 2, got {n}")
    # the extractor and every image set's features are shared with prdc, fid_inf, memorisation and interp_fid
    ext = context_extractor(ctx, extractor, feature_extractor_weights_path)
    n_ref = min(n, len(ctx.test))
    real, real_stats, stem = reference(ctx, ext, n_ref)
    real_dev = real.to(ctx.device)
    kid_ref = kid_reference(ctx, real, stem) if kid else None
    radii = None
    if prc:
        radii = _cached(ctx, f"{stem}-radii-k{prc_neighborhood}.pt",
                        lambda: knn_radii(real_dev, prc_neighborhood).cpu()).to(ctx.device)
    sources: dict[str, torch.Tensor] = {s: sample_features(ctx, ext, s, n) for s in ctx.samplers}
    if recon and ctx.has_encoder:  # a generator without an encoder has samples only
        sources["recon"] = image_features(ctx, ext, "recon", ctx.reconstructions("test")[:n_ref])
    out: dict[str, Any] = {}
    kid_std: dict[str, float] = {}
    for name, feats in sources.items():
        r = compare(feats.to(ctx.device), real_dev, real_stats, kid, prc, kid_subsets,
                    kid_subset_size, prc_neighborhood, radii, kid_ref)
        out[name] = r["fid"]
        if kid:
            out[f"kid_{name}"] = r["kid"]
            kid_std[name] = r["kid_std"]
        if prc:
            out[f"precision_{name}"], out[f"recall_{name}"] = r["precision"], r["recall"]
    if kid:
        out["kid_std"] = kid_std
    out["setup"] = {"extractor": ext.name, "weights_sha256": ext.weights_hash, "n_samples": n, "n_reference": n_ref,
                    "kid_subset_size": min(kid_subset_size, n, n_ref) if kid else None}
    return out
