"""Seaborn figures of a results folder, saved as PNG; each is drawn only when its metric keys exist.

Every function takes the loaded ``Results`` and the folder to write into and returns a ``Figure`` or None
(nothing to draw). ``draw_all`` isolates them: one figure that cannot be drawn becomes a note, never a
crashed report.
"""

from __future__ import annotations

import math
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aebench.report import keys as K
from aebench.report.results import Results

if TYPE_CHECKING:
    import pandas as pd

DPI = 100


@dataclass
class Figure:
    name: str  # file stem, also the HTML anchor
    title: str
    caption: str
    path: Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _long(res: Results, keys: list[str]) -> pd.DataFrame:
    """Done jobs in long form: one row per (job, key) with a finite value."""
    done = res.done
    cols = [c for c in ("job_id", "label", "dataset", "seed", "protocol") if c in done]
    present = [k for k in keys if k in done]
    if not present:
        import pandas as pd

        return pd.DataFrame(columns=[*cols, "key", "value"])
    long = done[cols + present].melt(id_vars=cols, value_vars=present, var_name="key", value_name="value")
    long["value"] = long["value"].astype(float)
    long["Model"] = long["label"]
    return long[long["value"].map(lambda v: math.isfinite(v))].reset_index(drop=True)


def _multi_dataset(res: Results) -> bool:
    return res.done["dataset"].nunique() > 1


def headline_bars(res: Results, out: Path) -> Figure | None:
    """One bar per model and headline metric, error bars one standard deviation over seeds."""
    heads = set(K.headline_keys(res.metric_keys))
    keys = [k for k in res.metric_keys if k in heads and not k.startswith(K.COST_PREFIX)]
    data = _long(res, keys)
    if data.empty:
        return None
    plt, sns = _plt()
    keys = [k for k in keys if (data["key"] == k).any()]
    data["metric"] = data["key"].map(lambda k: f"{k} {K.arrow(k)}".strip())
    wrap = min(3, len(keys))
    grid = sns.catplot(data=data, kind="bar", x="Model", y="value", col="metric", col_wrap=wrap,
                       hue="dataset" if _multi_dataset(res) else "Model", errorbar="sd", capsize=0.15,
                       sharey=False, height=3.2, aspect=1.2, legend=_multi_dataset(res),
                       col_order=[f"{k} {K.arrow(k)}".strip() for k in keys])
    grid.set_titles("{col_name}")
    grid.set_axis_labels("", "")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=30)
    return Figure("headline", "Headline metrics",
                  "Mean over seeds; error bars show one standard deviation. Arrows say which direction is better.",
                  _save(grid.figure, out / "headline.png"))


def _scatter_means(res: Results, x_key: str, y_keys: list[str], name: str, title: str, caption: str,
                   out: Path) -> Figure | None:
    """Per model mean of ``x_key`` against the mean of each ``y_key``, with ±1 sd error bars on both."""
    done = res.done
    if x_key not in done or not any(k in done for k in y_keys):
        return None
    rows = []
    group = res.group_columns
    for ident, g in done.groupby(group, sort=False, dropna=False):
        ident = dict(zip(group, ident if isinstance(ident, tuple) else (ident,)))
        x = g[x_key].astype(float)
        for yk in y_keys:
            if yk not in g:
                continue
            y = g[yk].astype(float)
            ok = x.notna() & y.notna()
            if not ok.any():
                continue
            rows.append({**ident, "Model": ident["label"], "series": yk, "x": x[ok].mean(), "y": y[ok].mean(),
                         "xerr": x[ok].std(ddof=1) if ok.sum() > 1 else 0.0,
                         "yerr": y[ok].std(ddof=1) if ok.sum() > 1 else 0.0})
    if not rows:
        return None
    import pandas as pd

    data = pd.DataFrame(rows)
    plt, sns = _plt()
    datasets = list(dict.fromkeys(data["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        d = data[data["dataset"] == ds]
        ax.errorbar(d["x"], d["y"], xerr=d["xerr"], yerr=d["yerr"], fmt="none", ecolor="0.6", capsize=3, zorder=1)
        sns.scatterplot(data=d, x="x", y="y", hue="Model", style="series" if len(y_keys) > 1 else None,
                        s=70, ax=ax, zorder=2)
        for r in d.itertuples():
            ax.annotate(str(r.label), (r.x, r.y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel(f"{x_key} {K.arrow(x_key)}".strip())
        ax.set_ylabel(" / ".join(f"{k} {K.arrow(k)}".strip() for k in y_keys if k in set(d["series"])))
        if len(datasets) > 1:
            ax.set_title(str(ds))
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return Figure(name, title, caption, _save(fig, out / f"{name}.png"))


def tradeoff(res: Results, out: Path) -> Figure | None:
    """Reconstruction error against sample FID: a model good at both sits in the lower left."""
    fids = K.matching(K.FID_PATTERN, res.metric_keys, K.FID_NOT_SAMPLES)
    return _scatter_means(res, K.RECON, fids, "tradeoff", "Reconstruction against sample quality",
                          f"{K.RECON} against {', '.join(fids)} per model (mean ± sd over seeds); "
                          "lower left is better on both.", out)


def kl_w2(res: Results, out: Path) -> Figure | None:
    """KL against W2 between the aggregate posterior and the prior, per model."""
    return _scatter_means(res, K.KL, [K.W2], "kl-w2", "Aggregate posterior against the prior: KL and W2",
                          f"{K.KL} against {K.W2} per model (mean ± sd over seeds): how far the codes are "
                          "from what the prior sampler draws.", out)


def active_units(res: Results, out: Path) -> Figure | None:
    """Per-dimension variances of the codes, sorted, with the active-unit threshold drawn."""
    rows = []
    thresholds = []
    for r in res.first_seed_jobs().itertuples():
        det = res.details(r.job_id)
        var = det.get(K.ACTIVE_UNITS_VARIANCES)
        if not isinstance(var, list) or not var:
            continue
        vals = sorted((float(v) for v in var if isinstance(v, (int, float))), reverse=True)
        rows += [{"Model": r.label, "dataset": r.dataset, "rank": i + 1, "variance": v} for i, v in enumerate(vals)]
        settings = [m[1] for m in (res.configs.get(r.job_id) or {}).get("metrics") or []
                    if isinstance(m, (list, tuple)) and len(m) == 2 and m[0] == K.ACTIVE_UNITS_METRIC]
        t = settings[0].get(K.ACTIVE_UNITS_THRESHOLD) if settings and isinstance(settings[0], dict) else None
        if isinstance(t, (int, float)) and math.isfinite(t):
            thresholds.append(float(t))
    if not rows:
        return None
    import pandas as pd

    data = pd.DataFrame(rows)
    threshold = thresholds[0] if thresholds else K.DEFAULT_ACTIVE_THRESHOLD
    plt, sns = _plt()
    from matplotlib.ticker import MaxNLocator

    datasets = list(dict.fromkeys(data["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sns.lineplot(data=data[data["dataset"] == ds], x="rank", y="variance", hue="Model", marker="o", ax=ax)
        ax.axhline(threshold, color="crimson", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        if (data["variance"] > 0).all():
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("latent dimension (sorted by variance)")
        ax.set_ylabel("Var_x E[z | x]")
        if len(datasets) > 1:
            ax.set_title(str(ds))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure("active-units", "Latent dimensions in use",
                  f"Variance over test inputs of each code dimension's mean, sorted (first seed). Dimensions above "
                  f"the dashed line ({threshold:g}) count as active units.", _save(fig, out / "active-units.png"))


def blur(res: Results, out: Path) -> Figure | None:
    """Blurriness of samples and reconstructions per model, against the data's own (dashed)."""
    keys = K.matching(K.BLUR_PATTERN, res.metric_keys, K.BLUR_NOT_SOURCES)
    data = _long(res, keys)
    if data.empty:
        return None
    is_ref = data["key"].map(lambda k: k.rsplit("/", 1)[-1] in K.BLUR_REFERENCE)
    ref, bars = data[is_ref], data[~is_ref]
    if bars.empty:
        return None
    plt, sns = _plt()
    datasets = list(dict.fromkeys(bars["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sns.barplot(data=bars[bars["dataset"] == ds], x="Model", y="value", hue="key", errorbar="sd", capsize=0.1,
                    ax=ax)
        r = ref[ref["dataset"] == ds]
        for i, (k, g) in enumerate(r.groupby("key")):
            ax.axhline(g["value"].mean(), color=f"C{7 + i}", linestyle="--", linewidth=1.2, label=f"{k} (data)")
        ax.set_xlabel("")
        ax.set_ylabel("sharpness")
        ax.tick_params(axis="x", rotation=30)
        if len(datasets) > 1:
            ax.set_title(str(ds))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure("sharpness", "Blurriness: sharpness of samples and reconstructions",
                  "Sharpness (variance of the Laplace filter response; lower is blurrier) of samples per sampler and "
                  "of reconstructions, per model (mean ± sd over seeds); the dashed line is the test data's own.",
                  _save(fig, out / "sharpness.png"))


def curves(res: Results, out: Path) -> Figure | None:
    """Every loss term per epoch, one line per model (mean over seeds, band one sd)."""
    data = res.curves
    if data is None or data.empty:
        return None
    data = data[data["value"].map(lambda v: isinstance(v, float) and math.isfinite(v))]
    if data.empty:
        return None
    data = data.assign(Model=data["label"])
    plt, sns = _plt()
    from matplotlib.ticker import MaxNLocator

    terms = list(dict.fromkeys(data["term"]))
    multi = data["dataset"].nunique() > 1
    kw: dict[str, Any] = {"row": "dataset"} if multi else {"col_wrap": min(3, len(terms))}
    grid = sns.relplot(data=data, kind="line", x="epoch", y="value", hue="Model", col="term", col_order=terms,
                       errorbar="sd", marker="o", height=3, aspect=1.3, facet_kws={"sharey": False}, **kw)
    grid.set_titles("{row_name} {col_name}" if multi else "{col_name}")
    grid.set_axis_labels("epoch", "")
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return Figure("curves", "Training curves", "Each loss term per epoch on the training set (mean over seeds; "
                  "band: one sd).", _save(grid.figure, out / "curves.png"))


def encoder_codes(res: Results, out: Path, notes: list[str]) -> Figure | None:
    """The hidden code each model learned for each one-hot pattern of the N-M-N encoder task."""
    jobs = res.first_seed_jobs()
    jobs = jobs[jobs["dataset"] == K.ENCODER_DATASET]
    if jobs.empty:
        return None
    panels = []
    for r in jobs.itertuples():
        codes = res.details(r.job_id).get(K.ENCODER_CODES)
        if not isinstance(codes, list):
            try:
                codes = compute_codes(res.job_path(r.job_id), res.configs.get(r.job_id) or {})
            except Exception as e:  # noqa: BLE001 - a missing checkpoint or plugin is a note, not a crash
                first = str(e).splitlines()[0] if str(e) else ""
                notes.append(f"encoder codes of {r.label}: {e.__class__.__name__}: {first}")
                continue
        panels.append((r.label, codes))
    if not panels:
        return None
    import numpy as np

    plt, sns = _plt()
    ncols = min(len(panels), 7)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.5 + 2.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (label, codes) in zip(axes.flat, panels):
        arr = np.asarray(codes, dtype=float)
        label = f"{label} ({arr.shape[0]}-{arr.shape[1]}-{arr.shape[0]})"
        with warnings.catch_warnings():  # seaborn 0.13 calls a colormap method matplotlib 3.11 deprecates
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            sns.heatmap(arr, annot=arr.shape[0] * arr.shape[1] <= 64, fmt=".1f", cmap="vlag", center=0, cbar=False,
                        ax=ax, yticklabels=[str(i) for i in range(arr.shape[0])],
                        xticklabels=[f"h{j}" for j in range(arr.shape[1])])
        ax.set_title(str(label))
        ax.set_xlabel("hidden unit")
        ax.set_ylabel("pattern")
    fig.tight_layout()
    return Figure("encoder-codes", "Hidden codes of the encoder task",
                  "The code (posterior mean) each model assigns to each one-hot pattern (first seed).",
                  _save(fig, out / "encoder-codes.png"))


def compute_codes(job_path: Path, cfg: dict[str, Any]) -> list[list[float]]:
    """Rebuild the job's model from config.json, load checkpoint.pt, and encode the task's patterns."""
    import torch

    from aebench.data import load
    from aebench.models.base import build_model
    from aebench.store.jobdir import CHECKPOINT

    ckpt = job_path / CHECKPOINT
    if not ckpt.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {job_path.name} (results shipped without checkpoints)")
    data = load(cfg["dataset"], "test", options=cfg.get("dataset_options") or {})
    model = build_model(cfg["model"], data.shape, cfg["latent_dim"], cfg.get("params") or {}, cfg["backbone"],
                        cfg.get("backbone_options") or {}, cfg["likelihood"], cfg.get("likelihood_options") or {})
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    model.eval()
    with torch.no_grad():
        return model.encode(data.floats()).mean.tolist()


FIGURES: list[Callable[..., Figure | None]] = [headline_bars, tradeoff, kl_w2, active_units, blur, curves]


def draw_all(res: Results, out: Path, notes: list[str]) -> list[Figure]:
    """Every figure that applies; a figure that fails is skipped with a note (and the traceback's last line)."""
    figures = []
    for fn in [*FIGURES, encoder_codes]:
        try:
            fig = fn(res, out, notes) if fn is encoder_codes else fn(res, out)
        except Exception as e:  # noqa: BLE001 - one bad figure must not lose the whole report
            last = traceback.format_exc().strip().splitlines()[-1]
            notes.append(f"figure {fn.__name__} could not be drawn: {last or e}")
            import matplotlib.pyplot as plt

            plt.close("all")
            continue
        if fig is not None:
            figures.append(fig)
    return figures
