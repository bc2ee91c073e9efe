"""Figures owned by metrics (registered as their meta ``figures=``): each knows its own metric's keys.

``fid``: reconstruction against sample FID; ``kl_w2``: KL against W2; ``active_units``: sorted per-dimension
variances; ``sharpness``: sharpness of samples and reconstructions against the data's; ``codes``: the learned
code of each item (the N-M-N encoder task); ``finetune``: accuracy against the number of labels.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

from aebench.report import keys as K
from aebench.report.figures import DPI, Figure, bars, legend_outside, palette, plt_sns, save, stat_rows, tight
from aebench.report.results import Results
from aebench.report.scatter import Point, scatter_figure

RECON = "recon/mse"  # the x axis of fid's trade-off figure: recon's headline error


def _model_name(res: Results, label: str, protocol: str) -> str:
    many = res.done["protocol"].nunique() > 1
    return f"{label} ({protocol[:6]})" if many else label


def scatter_means(res: Results, x_key: str, y_keys: list[str], name: str, title: str, caption: str,
                  out: Path) -> Figure | None:
    """Per model mean of ``x_key`` against the mean of each ``y_key``, with ±1 sd error bars on both."""
    points: list[Point] = []
    panels: dict[str, list[Point]] = {}
    for g in res.aggregate():
        x = g.stat(x_key)
        for yk in y_keys:
            y = g.stat(yk)
            if not (x.n and y.n):
                continue
            p = Point(_model_name(res, g.label, g.protocol), yk, x.mean, y.mean,
                      x.sd if math.isfinite(x.sd) else 0.0, y.sd if math.isfinite(y.sd) else 0.0)
            points.append(p)
            panels.setdefault(g.dataset, []).append(p)
    if not points:
        return None
    plt_sns()
    series = list(dict.fromkeys(p.series for p in points))
    fig = scatter_figure(points, panels, K.labelled(x_key), " / ".join(K.labelled(k) for k in series))
    return Figure(name, title, caption, save(fig, out / f"{name}.png"))


def sample_keys(res: Results, metric: str, prefix: str = "") -> list[str]:
    """``<metric>/<prefix><sampler>`` keys present, for every sampler the done jobs drew from."""
    samplers = list(dict.fromkeys(s for j in res.done["job_id"] for s in res.samplers(j)))
    present = set(res.metric_keys)
    return [k for k in (f"{metric}/{prefix}{s}" for s in samplers) if k in present]


def tradeoff(res: Results, out: Path) -> Figure | None:
    """Reconstruction error against sample FID: a model good at both sits in the lower left."""
    fids = sample_keys(res, "fid")
    return scatter_means(res, RECON, fids, "tradeoff", "Reconstruction against sample quality",
                         f"{RECON} against {', '.join(fids)} per model (mean ± sd over seeds); "
                         "lower left is better on both.", out)


def kl_w2(res: Results, out: Path) -> Figure | None:
    """KL against W2 between the aggregate posterior and the prior, per model."""
    kl, w2 = "kl_w2/kl", "kl_w2/w2"
    return scatter_means(res, kl, [w2], "kl-w2", "Aggregate posterior against the prior: KL and W2",
                         f"{kl} against {w2} per model (mean ± sd over seeds): how far the codes are "
                         "from what the prior sampler draws.", out)


def active_units(res: Results, out: Path) -> Figure | None:
    """Per-dimension variances of the codes, sorted, with the active-unit threshold drawn."""
    from aebench.settings_types import canonical_metric_settings

    rows, thresholds = [], []
    for r in res.first_seed_jobs().itertuples():
        var = res.details(r.job_id).get("active_units/variances")
        if not isinstance(var, list) or not var:
            continue
        vals = sorted((float(v) for v in var if isinstance(v, (int, float))), reverse=True)
        rows += [{"Model": r.label, "dataset": r.dataset, "rank": i + 1, "variance": v} for i, v in enumerate(vals)]
        t = canonical_metric_settings("active_units", res.metric_settings(r.job_id, "active_units"))["threshold"]
        thresholds.append(float(t))
    if not rows:
        return None
    import pandas as pd

    data = pd.DataFrame(rows)
    threshold = thresholds[0]
    plt, sns = plt_sns()
    from matplotlib.ticker import MaxNLocator

    datasets = list(dict.fromkeys(data["dataset"]))
    models = list(dict.fromkeys(data["Model"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False, dpi=DPI)
    for ax, ds in zip(axes[0], datasets):
        sns.lineplot(data=data[data["dataset"] == ds], x="rank", y="variance", hue="Model", hue_order=models,
                     palette=palette(len(models)), marker="o", ax=ax, legend=ax is axes[0][-1])
        ax.axhline(threshold, color="crimson", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        if (data["variance"] > 0).all():
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("latent dimension (sorted by variance)")
        ax.set_ylabel("Var_x E[z | x]")
        if len(datasets) > 1:
            ax.set_title(str(ds))
    legend_outside(axes[0][-1])
    tight(fig)
    return Figure("active-units", "Latent dimensions in use",
                  f"Variance over test inputs of each code dimension's mean, sorted (first seed). Dimensions above "
                  f"the dashed line ({threshold:g}) count as active units.", save(fig, out / "active-units.png"))


def sharpness(res: Results, out: Path) -> Figure | None:
    """Sharpness of samples and reconstructions per model (mean ± sd), against the data's own (dashed)."""
    sources = sample_keys(res, "sharpness") + [k for k in ("sharpness/recon",) if k in res.metric_keys]
    rows = stat_rows(res, sources)
    if not rows:
        return None
    ref = stat_rows(res, ["sharpness/data"])
    plt, _ = plt_sns()
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    n_models = len({r["label"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(6, 0.5 * n_models + 2) * len(datasets), 4),
                             squeeze=False, dpi=DPI)
    for ax, ds in zip(axes[0], datasets):
        bars(ax, [r for r in rows if r["dataset"] == ds], hue="key")
        data = [r["mean"] for r in ref if r["dataset"] == ds]
        if data:
            ax.axhline(sum(data) / len(data), color="0.3", linestyle="--", linewidth=1.2, label="sharpness/data")
        ax.set_ylabel("sharpness")
        if len(datasets) > 1:
            ax.set_title(str(ds))
        legend_outside(ax)
    tight(fig)
    return Figure("sharpness", "Blurriness: sharpness of samples and reconstructions",
                  "Sharpness (variance of the Laplace filter response; lower is blurrier) of samples per sampler and "
                  "of reconstructions, per model (mean ± sd over seeds); the dashed line is the test data's own.",
                  save(fig, out / "sharpness.png"))


def codes(res: Results, out: Path) -> Figure | None:
    """The hidden code each model learned for each item (the N-M-N encoder task's one-hot patterns)."""
    panels = []
    for r in res.first_seed_jobs().itertuples():
        items = res.details(r.job_id).get("codes/items")
        if not isinstance(items, list) and "codes" in [m for m, _ in _plan(res, r.job_id)]:
            try:  # results whose details were not kept: encode the items with the saved model
                items = compute_codes(res.job_path(r.job_id), res.configs.get(r.job_id) or {})
            except Exception as e:  # noqa: BLE001 - a missing checkpoint or plugin is a note, not a crash
                first = str(e).splitlines()[0] if str(e) else ""
                res.notes.append(f"codes of {r.label}: {e.__class__.__name__}: {first}")
                continue
        if isinstance(items, list) and items:
            panels.append((f"{r.label} ({r.dataset})" if res.done["dataset"].nunique() > 1 else str(r.label),
                           items[:64]))
    if not panels:
        return None
    import numpy as np

    plt, sns = plt_sns()
    ncols = min(len(panels), 7)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.5 + 2.6 * ncols, 3.6 * nrows), squeeze=False, dpi=DPI)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (label, items) in zip(axes.flat, panels):
        arr = np.asarray(items, dtype=float)
        with warnings.catch_warnings():  # seaborn 0.13 calls a colormap method matplotlib 3.11 deprecates
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            sns.heatmap(arr, annot=arr.shape[0] * arr.shape[1] <= 64, fmt=".1f", cmap="vlag", center=0, cbar=False,
                        ax=ax, yticklabels=[str(i) for i in range(arr.shape[0])],
                        xticklabels=[f"h{j}" for j in range(arr.shape[1])])
        ax.set_title(f"{label} ({arr.shape[0]}-{arr.shape[1]}-{arr.shape[0]})", fontsize=9)
        ax.set_xlabel("hidden unit")
        ax.set_ylabel("item")
    tight(fig)
    return Figure("encoder-codes", "Learned codes",
                  "The code (posterior mean) each model assigns to each test item, one row per item (first seed); "
                  "for the N-M-N encoder task, each one-hot pattern.", save(fig, out / "encoder-codes.png"))


def _plan(res: Results, job_id: str) -> list[tuple[str, Any]]:
    return [(m[0], m[1]) for m in (res.configs.get(job_id) or {}).get("metrics") or []
            if isinstance(m, (list, tuple)) and len(m) == 2]


def compute_codes(job_path: Path, cfg: dict[str, Any]) -> list[list[float]]:
    """Rebuild the job's model from config.json, load checkpoint.pt, and encode the first 64 test items."""
    import torch

    from aebench.data import load
    from aebench.models.base import build_model
    from aebench.store.jobdir import CHECKPOINT

    ckpt = job_path / CHECKPOINT
    if not ckpt.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {job_path.name} (results shipped without checkpoints)")
    data = load(cfg["dataset"], "test", download=False, options=cfg.get("dataset_options") or {})
    model = build_model(cfg["model"], data.shape, cfg["latent_dim"], cfg.get("params") or {}, cfg["backbone"],
                        cfg.get("backbone_options") or {}, cfg["likelihood"], cfg.get("likelihood_options") or {})
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    model.eval()
    with torch.no_grad():
        return model.encode(data.floats(slice(0, 64))).mean.tolist()


FINETUNE_KEY = re.compile(r"^finetune/acc_(pretrained|random)_(\d+)$")


def finetune(res: Results, out: Path) -> Figure | None:
    """Test accuracy against the number of labels, fine-tuned from the trained encoder and from random init."""
    found = [(k, m.group(1), int(m.group(2))) for k in res.metric_keys if (m := FINETUNE_KEY.match(k))]
    if not found:
        return None
    plt, _ = plt_sns()
    from matplotlib.lines import Line2D

    groups = [g for g in res.aggregate() if any(g.stat(k).n for k, _, _ in found)]
    datasets = list(dict.fromkeys(g.dataset for g in groups))
    names = list(dict.fromkeys(_model_name(res, g.label, g.protocol) for g in groups))
    colours = dict(zip(names, palette(len(names))))
    styles = {"pretrained": "-", "random": "--"}
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False, dpi=DPI)
    for ax, ds in zip(axes[0], datasets):
        for g in (g for g in groups if g.dataset == ds):
            name = _model_name(res, g.label, g.protocol)
            for start, style in styles.items():
                pts = sorted((n, g.stat(k)) for k, s, n in found if s == start and g.stat(k).n)
                if not pts:
                    continue
                ax.errorbar([n for n, _ in pts], [st.mean for _, st in pts],
                            yerr=[st.sd if math.isfinite(st.sd) else 0.0 for _, st in pts], color=colours[name],
                            linestyle=style, marker="o" if start == "pretrained" else "s", markersize=4, capsize=2,
                            linewidth=1.2)
        ax.set_xscale("log")
        counts = sorted({n for _, _, n in found})
        ax.set_xticks(counts, [f"{n:,}" for n in counts])
        ax.minorticks_off()
        ax.set_xlabel("labelled training images")
        ax.set_ylabel("test accuracy ↑")
        if len(datasets) > 1:
            ax.set_title(str(ds))
    handles = [Line2D([], [], color="0.3", linestyle=st, label=f"from {s}") for s, st in styles.items()]
    handles += [Line2D([], [], color=colours[n], label=n) for n in names]
    legend_outside(axes[0][-1], handles, [h.get_label() for h in handles])
    tight(fig)
    return Figure("finetune", "Fine-tuning with few labels",
                  "Test accuracy of the encoder and a linear head fine-tuned on n labelled images, from the trained "
                  "encoder (solid) and from a random initialisation (dashed); mean ± sd over seeds.",
                  save(fig, out / "finetune.png"))
