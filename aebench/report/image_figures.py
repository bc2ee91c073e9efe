"""Image figures owned by metrics: samples beside their nearest training images (``memorisation``) and
corrupted inputs, completions and truths (``completion``), drawn from what the metrics keep in their details.

The memorisation metric keeps the pixels of the few samples nearest the training set and the index of each
one's nearest training image; the figure redraws those training images from the dataset itself
(``aebench.data.load``, no download, no checkpoint). The completion metric keeps every row it shows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aebench.metrics.pixels import unpack
from aebench.report.figures import DPI, Figure, plt_sns, save, tight
from aebench.report.results import Results

PAD = 2  # pixels between tiles
PAD_VALUE = 160  # mid grey: visible between white-on-black digits and between photos alike


def as_hwc(image: Any) -> Any:
    """A C x H x W nested list of uint8 as an H x W x C numpy array (C = 1 or 3)."""
    import numpy as np

    arr = np.asarray(image, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    return arr.transpose(1, 2, 0)


def tile(rows: list[list[Any]]) -> Any:
    """H x W x C arrays laid out in rows (each row as long as the first), ``PAD`` grey pixels apart."""
    import numpy as np

    h, w, c = rows[0][0].shape
    n = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + PAD) + PAD, n * (w + PAD) + PAD, c), PAD_VALUE, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            y, x = PAD + i * (h + PAD), PAD + j * (w + PAD)
            out[y : y + h, x : x + w] = im
    return out


def _show(ax: Any, img: Any) -> None:
    ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None, vmin=0,
              vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.grid(False)


def _grid_of_axes(n: int, tile_w: int, tile_h: int) -> tuple[Any, list[Any]]:
    """A figure with one axes per panel: one column, or two or three when there are many panels."""
    plt, _ = plt_sns()
    ncols = 1 if n <= 6 else 2 if n <= 16 else 3
    nrows = math.ceil(n / ncols)
    scale = 4.8 / max(tile_w, 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, max(1.2, tile_h * scale + 0.5) * nrows),
                             squeeze=False, dpi=DPI)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _train_split(res: Results, job_id: str, cache: dict[Any, Any]) -> Any:
    """The job's training split from the data root (``$AEBENCH_DATA``), loaded once per dataset and options."""
    from aebench.data import load

    cfg = res.configs.get(job_id) or {}
    opts = cfg.get("dataset_options") or {}
    key = (cfg.get("dataset"), repr(sorted(opts.items())))
    if key not in cache:
        cache[key] = load(cfg["dataset"], "train", download=False, options=opts)
    return cache[key]


def memorisation(res: Results, out: Path) -> Figure | None:
    """The samples nearest the training set above their nearest training images, one panel per model."""
    panels, data_cache = [], {}
    for r in res.first_seed_jobs().itertuples():
        det = res.details(r.job_id)
        row = res.jobs[res.jobs["job_id"] == r.job_id].iloc[0]
        found = []
        for s in res.samplers(r.job_id):
            ex = det.get(f"memorisation/examples_{s}")
            if isinstance(ex, dict) and ex.get("samples"):
                copied = row.get(f"memorisation/copied_{s}")
                found.append((-1.0 if copied is None or math.isnan(copied) else float(copied), s, ex))
        if not found:
            continue
        copied, sampler, ex = max(found, key=lambda f: f[0])  # the sampler whose samples copy the most
        try:
            train = _train_split(res, r.job_id, data_cache)
            neighbours = [as_hwc(train.images[int(i)].tolist()) for i in ex["train_index"]]
        except Exception as e:  # noqa: BLE001 - data not on this machine: a note, not a crash
            first = str(e).splitlines()[0] if str(e) else ""
            res.notes.append(f"memorisation figure of {r.label}: training images unavailable ({e.__class__.__name__}"
                             f": {first[:160]})")
            continue
        samples = [as_hwc(s) for s in unpack(ex["samples"])]
        threshold = (det.get("memorisation/setup") or {}).get("threshold")
        panels.append((str(r.label), sampler, copied, samples, neighbours, ex.get("distance") or [], threshold))
    if not panels:
        return None
    from matplotlib.patches import Rectangle

    h, w, _ = panels[0][3][0].shape
    k = max(len(p[3]) for p in panels)
    fig, axes = _grid_of_axes(len(panels), k * (w + PAD), 2 * (h + PAD))
    for ax, (label, sampler, copied, samples, neighbours, dist, threshold) in zip(axes, panels):
        _show(ax, tile([samples, neighbours]))
        ax.set_yticks([PAD + h / 2, 2 * PAD + 1.5 * h], ["sample", "nearest\ntrain"], fontsize=7)
        share = f", {copied:.0%} copied" if copied >= 0 else ""
        ax.set_title(f"{label}: {sampler} sampler{share}", fontsize=8)
        for j, d in enumerate(dist):
            if isinstance(threshold, (int, float)) and d < threshold:  # nearer than the test images' quantile
                ax.add_patch(Rectangle((j * (w + PAD) + PAD / 2, PAD / 2), w + PAD, 2 * (h + PAD), fill=False,
                                       edgecolor="crimson", linewidth=1.2))
    tight(fig)
    return Figure("memorisation", "Samples beside their nearest training images",
                  "Per model (first seed), the samples nearest the training set in the FID features (top) above their "
                  "nearest training image (bottom), from the sampler with the largest copied share; red frames: "
                  "nearer than the test images' quantile, i.e. counted as copied.",
                  save(fig, out / "memorisation.png"))


COMPLETION_ROWS = [("truth", "truth"), ("masked", "bottom half\nhidden"), ("masked_iterated", "completed\n(iterated)"),
                   ("sp", "salt and\npepper"), ("sp_onepass", "completed\n(one pass)")]


def completion(res: Results, out: Path) -> Figure | None:
    """Corrupted test images, their completions and the truth, one panel per model."""
    panels = []
    for r in res.first_seed_jobs().itertuples():
        ex = res.details(r.job_id).get("completion/examples")
        if not isinstance(ex, dict) or not ex.get("truth"):
            continue
        rows = [(name, [as_hwc(im) for im in unpack(ex[key])]) for key, name in COMPLETION_ROWS if ex.get(key)]
        panels.append((str(r.label), rows))
    if not panels:
        return None
    h, w, _ = panels[0][1][0][1][0].shape
    k = max(len(row) for _, rows in panels for _, row in rows)
    n_rows = max(len(rows) for _, rows in panels)
    fig, axes = _grid_of_axes(len(panels), k * (w + PAD), n_rows * (h + PAD))
    for ax, (label, rows) in zip(axes, panels):
        _show(ax, tile([row for _, row in rows]))
        ax.set_yticks([PAD + i * (h + PAD) + h / 2 for i in range(len(rows))], [n for n, _ in rows], fontsize=7)
        ax.set_title(label, fontsize=8)
    tight(fig)
    return Figure("completion", "Completing corrupted images",
                  "Per model (first seed): test images, their bottom half hidden and completed by clamped iteration, "
                  "and salted and peppered and completed in one pass (the completion metric's headline pair).",
                  save(fig, out / "completion.png"))
