"""Scatter plots of per-model means that stay readable with many models.

Each model has one colour and one short tag: its name when there are few models with short names, else a
number. Tags are placed next to their points by a greedy search (rings of candidate positions around the
point; the first whose box overlaps no other tag and no marker wins; a leader line joins tags pushed
away), so no two tags overlap. The legend (tag and model name, and the marker of each series) sits to the
right of the axes, so it never covers a point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aebench.report.figures import DPI, legend_outside, palette, tight

NAME_TAGS = 8  # up to this many models (with names of at most NAME_LEN characters) are tagged by name
NAME_LEN = 14
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
INSIDE_RINGS = 40  # rings searched inside the axes before a tag may go outside them
ANGLES = [0, 45, 90, 135, 180, 225, 270, 315]  # candidate directions around a point, degrees


@dataclass
class Point:
    label: str  # the model
    series: str  # which y key
    x: float
    y: float
    xerr: float = 0.0
    yerr: float = 0.0


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_tags(ax: Any, points: list[tuple[float, float]], texts: list[str], colours: list[Any],
               marker_px: float = 6.0, fontsize: float = 8) -> list[Any]:
    """Annotate each point with its text where the text's box overlaps no other text and no marker.

    Works in display (pixel) coordinates of the current layout, so the figure must not be re-laid out
    afterwards (saving with ``bbox_inches="tight"`` only crops). Returns the annotations.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    centres = [tuple(to_px(p)) for p in points]
    pad = 1.5
    obstacles = [(cx - marker_px, cy - marker_px, cx + marker_px, cy + marker_px) for cx, cy in centres]
    area = ax.get_window_extent(renderer)
    for other in fig.axes:  # a tag pushed out of its axes must still not cover a neighbour panel or a legend
        for artist in ([other] if other is not ax else []) + ([other.get_legend()] if other.get_legend() else []):
            e = artist.get_window_extent(renderer)
            obstacles.append((e.x0, e.y0, e.x1, e.y1))
    placed: list[Any] = []
    for (cx, cy), text, colour in zip(centres, texts, colours):
        probe = ax.text(0, 0, text, fontsize=fontsize, fontweight="bold", transform=None)
        ext = probe.get_window_extent(renderer)
        probe.remove()
        w, h = ext.width + 2 * pad, ext.height + 2 * pad
        choice = None
        ring = 0
        while choice is None:
            dist = marker_px + 2 + ring * max(h, 6.0)
            inside = ring < INSIDE_RINGS
            for ang in ANGLES:
                dx, dy = math.cos(math.radians(ang)), math.sin(math.radians(ang))
                # the box's nearest edge sits ``dist`` from the centre, in the direction of the angle
                bx = cx + dx * (dist + w / 2) - w / 2
                by = cy + dy * (dist + h / 2) - h / 2
                box = (bx, by, bx + w, by + h)
                if inside and not (area.x0 <= box[0] and box[2] <= area.x1 and area.y0 <= box[1] <= box[3] <= area.y1):
                    continue
                if not any(_overlaps(box, o) for o in obstacles):
                    choice = box
                    break
            ring += 1
            if ring > INSIDE_RINGS + 200:  # cannot happen with finitely many obstacles; a guard all the same
                choice = box
        obstacles.append(choice)
        tx, ty = (choice[0] + choice[2]) / 2, (choice[1] + choice[3]) / 2
        offset = ((tx - cx) * 72 / fig.dpi, (ty - cy) * 72 / fig.dpi)
        far = math.hypot(tx - cx, ty - cy) > marker_px + max(w, h)
        ann = ax.annotate(text, ax.transData.inverted().transform((cx, cy)), xytext=offset,
                          textcoords="offset points", ha="center", va="center", fontsize=fontsize, color=colour,
                          annotation_clip=False, fontweight="bold",
                          arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6, "shrinkA": 0, "shrinkB": 4}
                          if far else None)
        placed.append(ann)
    return placed


def scatter_figure(points: list[Point], datasets: dict[str, list[Point]], x_label: str, y_label: str) -> Any:
    """One panel per dataset of ``points`` (``datasets`` maps a title to its points), tags and legend outside.

    ``points`` fixes the models' order (their tags and colours are the same in every panel).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(p.label for p in points))
    series = list(dict.fromkeys(p.series for p in points))
    by_name = len(models) <= NAME_TAGS and all(len(m) <= NAME_LEN for m in models)
    tag = {m: m if by_name else str(i + 1) for i, m in enumerate(models)}
    colours = dict(zip(models, palette(len(models))))
    marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(series)}
    n = len(datasets)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.4), squeeze=False, dpi=DPI)
    for ax, (title, pts) in zip(axes[0], datasets.items()):
        ax.errorbar([p.x for p in pts], [p.y for p in pts], xerr=[p.xerr for p in pts], yerr=[p.yerr for p in pts],
                    fmt="none", ecolor="0.75", elinewidth=0.8, capsize=2, zorder=1)
        for s in series:
            sel = [p for p in pts if p.series == s]
            ax.scatter([p.x for p in sel], [p.y for p in sel], c=[colours[p.label] for p in sel], marker=marker[s],
                       s=36, edgecolors="white", linewidths=0.5, zorder=2)
        ax.margins(0.12)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        if n > 1:
            ax.set_title(title)
    handles = [Line2D([], [], marker=marker[s], color="0.4", linestyle="", label=s) for s in series] if len(
        series) > 1 else []
    handles += [Line2D([], [], marker="o", color=colours[m], linestyle="",
                       label=m if by_name else f"{tag[m]}  {m}") for m in models]
    legend_outside(axes[0][-1], handles, [h.get_label() for h in handles])
    tight(fig)
    fig.canvas.draw()
    for ax, (_, pts) in zip(axes[0], datasets.items()):
        place_tags(ax, [(p.x, p.y) for p in pts], [tag[p.label] for p in pts], [colours[p.label] for p in pts])
    return fig
