"""The associative-memory figure: retrieval against the number of stored patterns k (the capacity curve).

Reads the ``retrieval`` metric's per-k keys (``retrieval/recovered_k<k>``, from its ``ks`` setting), one line
per model (mean over seeds, error bars one standard deviation, as the table's numbers), one panel per dataset,
and marks Hebbian storage's critical load 0.138 N (Amit, Gutfreund & Sompolinsky 1985) from the metric's
``retrieval/capacity`` details. Registered as the ``retrieval`` metric's figure in ``aebench.catalog``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from aebench.report.figures import Figure, legend_outside, palette, plt_sns, save
from aebench.report.results import Results

KEY = re.compile(r"^retrieval/recovered_k(\d+)$")
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _capacity(res: Results, job_ids: tuple[str, ...]) -> tuple[float, int] | None:
    """(0.138 N, N) from the first of ``job_ids`` whose details hold it."""
    for j in job_ids:
        cap = res.details(j).get("retrieval/capacity")
        if isinstance(cap, dict) and isinstance(cap.get("k"), (int, float)) and isinstance(cap.get("n_units"), int):
            return float(cap["k"]), int(cap["n_units"])
    return None


def curve_rows(res: Results) -> list[dict[str, Any]]:
    """One row per (dataset, model, k) with a value: mean and sd of the recovered fraction over seeds."""
    keys = sorted((int(m.group(1)), k) for k in res.metric_keys if (m := KEY.match(k)))
    rows = []
    for g in res.aggregate():
        for k, key in keys:
            st = g.stat(key)
            if st.n:
                rows.append({"dataset": g.dataset, "label": g.label, "protocol": g.protocol, "k": k,
                             "mean": st.mean, "sd": st.sd if math.isfinite(st.sd) else 0.0, "n": st.n,
                             "capacity": _capacity(res, g.job_ids)})
    return rows


def _series(rows: list[dict[str, Any]]) -> None:
    """Name each row's line: the model label, with the protocol where a dataset holds a label under several."""
    for r in rows:
        same = {x["protocol"] for x in rows if x["dataset"] == r["dataset"] and x["label"] == r["label"]}
        r["series"] = r["label"] if len(same) < 2 else f"{r['label']} [{r['protocol']}]"


def capacity_figure(res: Results, out: Path) -> Figure | None:
    """Recovered fraction against k per model and dataset, the 0.138 N line marked; None without ``ks`` keys."""
    rows = curve_rows(res)
    if not rows:
        return None
    plt, _ = plt_sns()
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    _series(rows)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    models = list(dict.fromkeys(r["series"] for r in rows))
    colours = palette(len(models))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.8), squeeze=False, sharey=True)
    handles: dict[str, Any] = {}
    for ax, ds in zip(axes.flat, datasets):
        sel = [r for r in rows if r["dataset"] == ds]
        for i, model in enumerate(models):
            pts = sorted((r for r in sel if r["series"] == model), key=lambda r: r["k"])
            if not pts:
                continue
            line = ax.errorbar([r["k"] for r in pts], [r["mean"] for r in pts], yerr=[r["sd"] for r in pts],
                               color=colours[i], marker=MARKERS[i % len(MARKERS)], markersize=4, capsize=3,
                               linewidth=1.3, label=model)
            handles.setdefault(model, line)
        ks = sorted({r["k"] for r in sel})
        cap = next((r["capacity"] for r in sel if r["capacity"]), None)
        title = ds
        if cap is not None:
            ax.axvline(cap[0], color="0.3", linestyle="--", linewidth=1)
            ax.text(cap[0], 0.5, f"0.138 N = {cap[0]:.1f} ", color="0.3", fontsize=8, rotation=90, ha="right",
                    va="center", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
            title = f"{ds} (N = {cap[1]} units)"
        if ks[0] > 0 and ks[-1] / ks[0] >= 8:  # a wide range of k: a log axis, ticks at the ks
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(ks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.tick_params(axis="x", labelsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("stored patterns k")
        ax.set_ylim(-0.03, 1.03)
    axes.flat[0].set_ylabel("recovered fraction")
    legend_outside(axes.flat[-1], list(handles.values()), list(handles))
    fig.tight_layout()
    return Figure("capacity", "Capacity curve",
                  "Retrieval against the number of stored patterns k: the fraction of the k patterns recalled "
                  "from corrupted copies (retrieval metric, ks setting), mean over seeds, error bars one standard "
                  "deviation. The dashed line marks 0.138 N, the critical load of Hebbian storage of random "
                  "+-1 patterns (Amit, Gutfreund & Sompolinsky 1985). A Hopfield net stores k patterns for each "
                  "k; an autoencoder, trained once, is shown the first k training images.",
                  save(fig, out / "capacity.png"))
