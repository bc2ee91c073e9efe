"""Figures of a results folder, saved as PNG: the report's generic ones here, the others owned by metrics.

Every figure function takes the loaded ``Results`` and the folder to write into and returns a ``Figure`` or
None (nothing to draw). The report draws two generic figures itself (headline bars, training curves); every
other figure is registered by the metric it shows (meta ``figures=("module:function", ...)``) and drawn
when that metric is in the results. ``draw_all`` isolates them: one figure that cannot be drawn becomes a
note, never a crashed report. Means and standard deviations come from ``res.aggregate()``, the numbers
the table shows.
"""

from __future__ import annotations

import importlib
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aebench.report import keys as K
from aebench.report.results import Results

DPI = 100
LEGEND_ROWS = 20  # legend entries per column before another column starts


@dataclass
class Figure:
    name: str  # file stem, also the HTML anchor
    title: str
    caption: str
    path: Path


def plt_sns():
    """pyplot (Agg backend) and seaborn with the report's theme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def palette(n: int) -> list[Any]:
    """n distinct colours: tab10 or tab20 while they suffice, else evenly spaced hues."""
    import seaborn as sns

    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "husl"
    return list(sns.color_palette(name, max(n, 1)))[:max(n, 1)]


def legend_outside(ax: Any, handles: list[Any] | None = None, labels: list[str] | None = None, **kw: Any) -> Any:
    """A legend to the right of the axes (never over the data), in columns of at most ``LEGEND_ROWS``."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    ncol = max(1, math.ceil(len(handles) / LEGEND_ROWS))
    legend = ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                       fontsize=7, ncol=ncol, frameon=True, **kw)
    return legend


def tight(fig: Any) -> None:
    """``tight_layout`` that keeps the axes their size: legends outside them are left out of the layout (saving
    with ``bbox_inches="tight"`` widens the image to hold them) instead of squeezing the axes."""
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for lg in legends:
        lg.set_in_layout(False)
    fig.tight_layout()
    for lg in legends:
        lg.set_in_layout(True)


def stat_rows(res: Results, keys: list[str]) -> list[dict[str, Any]]:
    """One row per group and key with a value: dataset, label, key, mean, sd (0 when undefined), n."""
    rows = []
    for g in res.aggregate():
        for k in keys:
            st = g.stat(k)
            if st.n:
                rows.append({"dataset": g.dataset, "label": g.label, "protocol": g.protocol, "key": k,
                             "mean": st.mean, "sd": st.sd if math.isfinite(st.sd) else 0.0, "n": st.n})
    return rows


def bars(ax: Any, rows: list[dict[str, Any]], hue: str | None = None, colours: dict[str, Any] | None = None) -> None:
    """Grouped bars of aggregated means with ±1 sd error bars; ``hue`` splits each model's bar, else each
    model has its colour (``colours``: label -> colour, the same in every panel)."""
    import numpy as np

    models = list(dict.fromkeys(r["label"] for r in rows))
    hues = list(dict.fromkeys(r[hue] for r in rows)) if hue else [None]
    by_hue = palette(len(hues))
    colours = colours or dict(zip(models, palette(len(models))))
    width = 0.8 / len(hues)
    for j, h in enumerate(hues):
        sel = [r for r in rows if hue is None or r[hue] == h]
        xs = np.array([models.index(r["label"]) + (j - (len(hues) - 1) / 2) * width for r in sel])
        colour = [by_hue[j]] * len(sel) if hue else [colours[r["label"]] for r in sel]
        ax.bar(xs, [r["mean"] for r in sel], width=width * 0.95, color=colour, label=str(h) if hue else None)
        ax.errorbar(xs, [r["mean"] for r in sel], yerr=[r["sd"] for r in sel], fmt="none", ecolor="0.25",
                    capsize=3, linewidth=1)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)


def headline_bars(res: Results, out: Path) -> Figure | None:
    """One bar per model and headline metric, error bars one standard deviation over seeds."""
    keys = [k for k in K.headline_keys(res.metric_keys) if not K.section(k)]
    keys = [k for k in res.metric_keys if k in keys]
    rows = stat_rows(res, keys)
    if not rows:
        return None
    plt, _ = plt_sns()
    keys = [k for k in keys if any(r["key"] == k for r in rows)]
    multi = len({r["dataset"] for r in rows}) > 1
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    width = max(3.8, 0.35 * len({r["label"] for r in rows}) + 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.4 * nrows), squeeze=False, dpi=DPI)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    models = list(dict.fromkeys(r["label"] for r in rows))
    colours = dict(zip(models, palette(len(models))))
    for ax, k in zip(axes.flat, keys):
        bars(ax, [r for r in rows if r["key"] == k], hue="dataset" if multi else None, colours=colours)
        ax.set_title(K.labelled(k), fontsize=10)
    if multi:
        legend_outside(axes.flat[len(keys) - 1], title="dataset")
    tight(fig)
    return Figure("headline", "Headline metrics",
                  "Mean over seeds; error bars show one standard deviation. Arrows say which direction is better.",
                  save(fig, out / "headline.png"))


MANY_MODELS = 8  # above this, one panel per model (loss and val_loss) instead of one line per model per term


def curves(res: Results, out: Path) -> Figure | None:
    """Every loss term per epoch, one line per model (mean over seeds, band one sd); with many models, one
    panel per model with its training and validation loss, which shows whether each curve has flattened.
    Tuning trials are left out (the tuning section shows them)."""
    data = res.curves
    if data is None or data.empty:
        return None
    data = data[data["value"].map(lambda v: isinstance(v, float) and math.isfinite(v))]
    if "trial" in res.jobs:
        finals = set(res.jobs.loc[res.jobs["trial"].isna(), "job_id"])
        data = data[data["job_id"].isin(finals)]
    if data.empty:
        return None
    data = data.assign(Model=data["label"])
    plt, sns = plt_sns()
    from matplotlib.ticker import MaxNLocator

    multi = data["dataset"].nunique() > 1
    if data["Model"].nunique() > MANY_MODELS and not multi:
        data = data[data["term"].isin(["loss", "val_loss"])]
        grid = sns.relplot(data=data, kind="line", x="epoch", y="value", hue="term", col="Model",
                           col_wrap=6, errorbar="sd", marker="o", markersize=3, height=1.9, aspect=1.25,
                           facet_kws={"sharey": False, "sharex": True}, palette=palette(data["term"].nunique()))
        grid.set_titles("{col_name}", size=9)
        caption = ("The training objective (loss) and its value on the validation split (val_loss) per epoch, one "
                   "panel per model, each on its own scale (mean over seeds; band: one sd). A flat end says the "
                   "budget sufficed.")
    else:
        terms = list(dict.fromkeys(data["term"]))
        kw: dict[str, Any] = {"row": "dataset"} if multi else {"col_wrap": min(3, len(terms))}
        grid = sns.relplot(data=data, kind="line", x="epoch", y="value", hue="Model", col="term", col_order=terms,
                           errorbar="sd", marker="o", height=3, aspect=1.3, facet_kws={"sharey": False},
                           palette=palette(data["Model"].nunique()), **kw)
        grid.set_titles("{row_name} {col_name}" if multi else "{col_name}")
        caption = "Each loss term per epoch on the training set (mean over seeds; band: one sd)."
    grid.set_axis_labels("epoch", "")
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return Figure("curves", "Training curves", caption, save(grid.figure, out / "curves.png"))


GENERIC_FIRST: list[Callable[[Results, Path], Figure | None]] = [headline_bars]
GENERIC_LAST: list[Callable[[Results, Path], Figure | None]] = [curves]


def resolve(target: str) -> Callable[[Results, Path], Figure | None]:
    """The function a ``"module:function"`` string names."""
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def figure_functions(res: Results) -> list[tuple[str, Callable[[Results, Path], Figure | None] | str]]:
    """(name for notes, function or unresolvable target): generic first, each metric's, curves last."""
    out: list[tuple[str, Any]] = [(fn.__name__, fn) for fn in GENERIC_FIRST]
    out += [(f"{metric}:{target.rpartition(':')[2]}", target) for metric, target in K.figure_targets(res.metric_names)]
    return out + [(fn.__name__, fn) for fn in GENERIC_LAST] + [("sensitivity", "aebench.report.tuning:sensitivity")]


def draw_all(res: Results, out: Path, notes: list[str]) -> list[Figure]:
    """Every figure that applies; a figure that fails is skipped with a note (and the traceback's last line)."""
    figures = []
    for name, fn in figure_functions(res):
        start = len(res.notes)
        try:
            fig = (resolve(fn) if isinstance(fn, str) else fn)(res, out)
        except Exception as e:  # noqa: BLE001 - one bad figure must not lose the whole report
            last = traceback.format_exc().strip().splitlines()[-1]
            res.notes.append(f"figure {name} could not be drawn: {last or e}")
            import matplotlib.pyplot as plt

            plt.close("all")
            fig = None
        notes += res.notes[start:]
        del res.notes[start:]
        if fig is not None:
            figures.append(fig)
    return figures
