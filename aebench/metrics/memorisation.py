"""Memorisation: are generated images closer to the training set than new data is? (fid's feature space)

For a sample x, L(x) is the Euclidean distance of its features to the nearest training image's. Held-out
test images give the reference: a model that generalises draws samples whose L is distributed as the test
images' L; one that copies its training data draws samples with smaller L.

- ``copied_<s>``: the fraction of samples with L below the ``quantile``-quantile of the test images' L (a
  model that does not copy scores about ``quantile``; one returning training images scores 1).
- ``ct_<s>``: the C_T statistic of Meehan, Chaudhuri & Dasgupta (AISTATS 2020), "A non-parametric test to
  detect data-copying in generative models". The training features are split into ``cells`` k-means cells
  (k-means++ seeding from the job's generator, then Lloyd iterations); test images and samples fall into the
  cell of their nearest centre. In each cell with more than ``min_cell_samples`` samples, L is measured to that
  cell's training images and the
  Mann-Whitney U of samples against test images, U = #{(i, j): L(q_j) > L(p_i)} + #{ties} / 2 (scipy's
  ``mannwhitneyu(L(q), L(p)).statistic``), is z-scored under the null of equal distributions:
  Z_U = (U - m n / 2) / sqrt(m n (m + n + 1) / 12), without tie or continuity correction. C_T is the mean of
  the cells' Z_U weighted by their share of test images. C_T << 0 (say below -3) means data-copying, C_T >> 0
  underfitting, about 0 neither: the paper's test. ``copied_<s>`` is the simple global version.

The training set is a fixed random subset of at most ``max_train`` images (seeded); the test set, the first
``n_test`` test images; features are fid's (cached in the context and on disk for the test set).
The details keep, per sampler, the few samples nearest the training set with the index of each one's
nearest training image (``examples_<s>``), for the report's figure of samples beside their neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aebench.errors import SuiteError
from aebench.metrics.base import EvalContext
from aebench.metrics.fid_inf import check_extractor


@dataclass
class MemorisationSettings:
    """``quantile``: of the test-to-train distances, the threshold below which a sample counts as copied.
    ``cells``, ``min_cell_samples``: the C_T partition (k-means cells of the training features) and the least
    number of samples a cell needs to count. ``n_samples``: per sampler (default: the suite's); ``n_test``,
    ``max_train``: test and training images used. ``extractor`` etc. as fid's."""

    quantile: float = 0.05
    cells: int = 10
    min_cell_samples: int = 20
    n_samples: int | None = None
    n_test: int = 10_000
    max_train: int = 20_000
    extractor: str = "auto"
    feature_extractor_weights_path: str | None = None

    def __post_init__(self) -> None:
        check_extractor(self.extractor)
        if not 0 < self.quantile < 1:
            raise SuiteError(None, "quantile", f"must be in (0, 1), got {self.quantile}")
        for name in ("cells", "min_cell_samples", "n_test", "max_train"):
            if getattr(self, name) < 1:
                raise SuiteError(None, name, f"must be >= 1, got {getattr(self, name)}")
        if self.n_samples is not None and self.n_samples < 2:
            raise SuiteError(None, "n_samples", f"must be >= 2, got {self.n_samples}")


def nearest(x: torch.Tensor, ref: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance of each row of ``x`` to its nearest row of ``ref`` and that row's index, on the CPU (float32
    distances returned as float64; an exact copy may show a round-off distance of ~1e-3 of the features' scale)."""
    found = [torch.cdist(x[i : i + batch].float(), ref.float()).min(1) for i in range(0, len(x), batch)]
    return torch.cat([f.values for f in found]).double().cpu(), torch.cat([f.indices for f in found]).cpu()


def nn_distances(x: torch.Tensor, ref: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Distance of each row of ``x`` to its nearest row of ``ref`` (see ``nearest``)."""
    return nearest(x, ref, batch)[0]


EXAMPLES = 8  # samples kept in the details for the report's figure: the nearest the training set
EXAMPLE_VALUES = 40_000  # at most this many pixel values of them (fewer samples for large colour images)


def closest_examples(images: torch.Tensor, dist: torch.Tensor, train_index: torch.Tensor) -> dict[str, Any]:
    """The samples nearest the training set (uint8 pixels, ``aebench.metrics.pixels``), their distances, and the
    training-split index of each one's nearest training image: the report redraws those from the dataset."""
    from aebench.metrics.pixels import pack

    k = max(1, min(EXAMPLES, EXAMPLE_VALUES // max(1, images[0].numel())))
    order = torch.argsort(dist)[:k]
    return {"samples": pack(images[order]), "train_index": [int(train_index[j]) for j in order],
            "distance": [round(float(dist[j]), 6) for j in order]}


def mann_whitney_u(x: np.ndarray, y: np.ndarray) -> float:
    """U of ``x`` against ``y``: pairs with x_i > y_j, plus half the ties (scipy's ``mannwhitneyu(x, y)``)."""
    ys = np.sort(np.asarray(y, dtype=np.float64))
    x = np.asarray(x, dtype=np.float64)
    below, not_above = np.searchsorted(ys, x, "left"), np.searchsorted(ys, x, "right")
    return float(below.sum() + 0.5 * (not_above - below).sum())


def z_u(gen: np.ndarray, test: np.ndarray) -> float:
    """The z-scored U of the samples' distances against the test images' (negative: samples are closer)."""
    m, n = len(gen), len(test)
    return (mann_whitney_u(gen, test) - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 50) -> torch.Tensor:
    """k centres of ``x`` by k-means++ seeding (seeded) and Lloyd iterations (a plain, fast torch version)."""
    centres = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centres).min(1).values.pow(2).double().cpu()
        pick = torch.multinomial(d2 / d2.sum(), 1, generator=generator) if d2.sum() > 0 else torch.tensor([0])
        centres = torch.cat([centres, x[pick.to(x.device)]])
    for _ in range(iters):
        label = torch.cdist(x, centres).argmin(1)
        new = torch.stack([x[label == c].mean(0) if (label == c).any() else centres[c] for c in range(k)])
        if torch.equal(new, centres):
            break
        centres = new
    return centres


def c_t(train: torch.Tensor, test: torch.Tensor, gen: torch.Tensor, cells: int, min_cell_samples: int,
        generator: torch.Generator) -> tuple[float, dict[str, Any]]:
    """Meehan et al.'s C_T over k-means cells of the training features; returns (C_T, per-cell details)."""
    centres = kmeans(train, min(cells, len(train)), generator)
    t_cell, p_cell, q_cell = (torch.cdist(a, centres).argmin(1) for a in (train, test, gen))
    z, w = [], []
    for c in range(len(centres)):
        p, q = test[p_cell == c], gen[q_cell == c]
        if len(p) == 0 or len(q) <= min_cell_samples:
            continue  # outside Pi_tau (too few samples), or no test image to compare with
        t = train[t_cell == c]
        z.append(z_u(nn_distances(q, t).numpy(), nn_distances(p, t).numpy()))
        w.append(len(p) / len(test))
    if not z:
        return math.nan, {"cells_used": 0}
    ct = float(np.dot(w, z) / np.sum(w))
    return ct, {"cells_used": len(z), "z_u": [round(v, 4) for v in z], "test_share": [round(v, 4) for v in w]}


def memorisation(ctx: EvalContext, **options: Any) -> dict[str, Any]:
    """Copied fraction and Meehan et al.'s C_T per sampler (settings: ``MemorisationSettings``)."""
    from aebench.metrics.extractors import context_extractor, image_features, sample_features
    from aebench.metrics.fidelity import reference

    s = MemorisationSettings(**options)
    ext = context_extractor(ctx, s.extractor, s.feature_extractor_weights_path)
    n = int(s.n_samples or ctx.n_samples)
    test = reference(ctx, ext, min(s.n_test, len(ctx.test)))[0]
    idx = torch.randperm(len(ctx.train), generator=ctx.generator("memorisation/train"))[: s.max_train]
    idx = idx.sort().values.to(ctx.train.images.device)
    train = image_features(ctx, ext, f"train-subset-{s.max_train}", ctx.train.images[idx])
    train_dev = train.to(ctx.device)
    test_nn = nn_distances(test.to(ctx.device), train_dev)
    threshold = float(torch.quantile(test_nn, s.quantile))
    out: dict[str, Any] = {}
    for name in ctx.samplers:
        gen = sample_features(ctx, ext, name, n)
        dist, near = nearest(gen.to(ctx.device), train_dev)
        out[f"copied_{name}"] = float((dist < threshold).double().mean())
        out[f"examples_{name}"] = closest_examples(ctx.samples(name, n), dist, idx.cpu()[near])
        out[f"ct_{name}"], out[f"cells_{name}"] = c_t(train_dev, test.to(ctx.device), gen.to(ctx.device), s.cells,
                                                      s.min_cell_samples, ctx.generator("memorisation/cells"))
    out["setup"] = {"extractor": ext.name, "weights_sha256": ext.weights_hash, "n_samples": n, "n_test": len(test),
                    "n_train": len(train), "threshold": threshold, "quantile": s.quantile}
    return out
