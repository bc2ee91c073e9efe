"""The tuning part of a report: per model the search space, every trial's validation score, the selection,
and a sensitivity figure (validation score against each searched hyperparameter), from ``tuning.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from aebench.report.figures import Figure, plt_sns, save, tight
from aebench.report.results import Results


def load_tuning(suite_dir: Path) -> dict[str, Any] | None:
    """The record ``aebench run`` writes after the trials (None without tuning or if unreadable)."""
    from aebench.tuning import TUNING_JSON

    try:
        record = json.loads((Path(suite_dir) / TUNING_JSON).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("models"), dict) else None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _space(space: dict[str, Any]) -> str:
    return ", ".join(f"{k} ~ {next(iter(d))}{next(iter(d.values()))}" for k, d in sorted(space.items()))


def tuning_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial: model, trial, its point, its mean validation score as shown, seeds scored, selected."""
    rows = []
    for label, m in record["models"].items():
        for t in m["trials"]:
            point = t["point"] or {"(the entry's parameters)": ""}
            rows.append({"model": label, "trial": t["trial"], "point": ", ".join(
                f"{k}={_fmt(v)}" if v != "" else k for k, v in point.items()),
                "score": "diverged" if t.get("diverged") else "–" if t["mean"] is None else _fmt(t["mean"]),
                "n": len(t["scores"]), "selected": t["trial"] == m["selected"]})
    return rows


def tuning_markdown(record: dict[str, Any] | None) -> list[str]:
    """The tuning section of the markdown report."""
    if not record:
        return []
    from aebench.report.markdown_report import esc

    out = ["## Tuning", "",
           f"Random search, {record['trials']} trials per model entry with a search space (trial 0 is the entry's "
           f"own parameters), each trained on seed(s) {', '.join(map(str, record['seeds']))}"
           + (f" for {record['epochs']} epochs" if record.get("epochs") else "") + " and scored by "
           f"`{esc(record['metric'])}` on the validation split ({'lower' if record['direction'] == 'min' else 'higher'}"
           " is better); the selected trial then trains on the suite's seeds and is scored on test.", ""]
    for label, m in record["models"].items():
        sel = "not yet selected" if m["selected"] is None else f"trial {m['selected']} selected"
        out += [f"- **{esc(label)}** ({esc(m['model'])}): {esc(_space(m['space']))}; {sel}"]
    out += ["", "| model | trial | point | validation score | seeds | |", "| --- | ---: | --- | ---: | ---: | --- |"]
    for r in tuning_rows(record):
        out.append(f"| {esc(r['model'])} | {r['trial']} | {esc(r['point'])} | {r['score']} | {r['n']} | "
                   f"{'**selected**' if r['selected'] else ''} |")
    return out + [""]


def tuning_html(record: dict[str, Any] | None) -> list[str]:
    """The same section as HTML."""
    if not record:
        return []
    from aebench.report.html_report import e

    md = tuning_markdown(record)
    h = ['<h2 id="tuning">Tuning</h2>', f"<p>{e(md[2])}</p>", "<ul>"]
    for label, m in record["models"].items():
        sel = "not yet selected" if m["selected"] is None else f"trial {m['selected']} selected"
        h.append(f"<li><b>{e(label)}</b> ({e(m['model'])}): {e(_space(m['space']))}; {e(sel)}</li>")
    h.append("</ul><div class=\"scroll\"><table><thead><tr><th>model</th><th>trial</th><th>point</th>"
             "<th>validation score</th><th>seeds</th><th></th></tr></thead><tbody>")
    for r in tuning_rows(record):
        h.append(f"<tr><td>{e(r['model'])}</td><td>{r['trial']}</td><td>{e(r['point'])}</td><td>{e(r['score'])}</td>"
                 f"<td>{r['n']}</td><td>{'<b>selected</b>' if r['selected'] else ''}</td></tr>")
    return h + ["</tbody></table></div>"]


def sensitivity(res: Results, out: Path) -> Figure | None:
    """Validation score against each searched hyperparameter, one panel per (model, hyperparameter); the
    selected trial is ringed. Log axes for log-uniform ranges."""
    record = load_tuning(res.suite_dir)
    if not record:
        return None
    panels = []
    for label, m in record["models"].items():
        for key, dist in sorted(m["space"].items()):
            kind = next(iter(dist))
            pts = []
            for t in m["trials"]:
                x = (t.get("values") or t["point"]).get(key)
                if t["mean"] is not None and isinstance(x, (int, float)) and math.isfinite(t["mean"]):
                    pts.append((float(x), t["mean"], t["trial"] == m["selected"]))
            if pts:
                panels.append((label, key, kind, pts))
    if not panels:
        return None
    plt, _ = plt_sns()
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (label, key, kind, pts) in zip(axes.flat, panels, strict=False):
        xs, ys, chosen = zip(*pts, strict=True)
        ax.scatter(xs, ys, s=18, color="#4c72b0")
        for x, y, c in pts:
            if c:
                ax.scatter([x], [y], s=90, facecolors="none", edgecolors="#c44e52", linewidths=1.5)
        if kind == "log_uniform" and min(xs) > 0:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log range overlap
        ax.set_title(label, fontsize=8)
        ax.set_xlabel(key, fontsize=8)
        ax.set_ylabel(record["metric"] + " (val)", fontsize=7)
        ax.tick_params(which="both", labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    tight(fig)
    return Figure("sensitivity", "Sensitivity to the searched hyperparameters",
                  f"Each trial's mean validation {record['metric']} against each hyperparameter it searched; the "
                  "selected trial is ringed. Trial 0 is the entry's own parameters (shown at the value it trains "
                  "with: the entry's, else the default).", save(fig, out / "sensitivity.png"))
