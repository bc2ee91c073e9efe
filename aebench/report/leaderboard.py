"""``aebench leaderboard``: rank the models of a results folder by one metric, comparable runs only.

Each job carries a protocol fingerprint (``Job.protocol``: dataset, backbone, latent size, budget, metric
settings; not the model or the seed). Only runs under the same fingerprint are ranked together: the
protocol with the most finished jobs comes first, runs under any other are ranked apart in their own
sections, and jobs that did not finish are listed without a rank.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aebench.errors import AebenchError
from aebench.report import keys as K
from aebench.report.markdown_report import esc, jobs_not_done_table, md_table
from aebench.report.results import Results, describe_protocol, load_results
from aebench.report.table import fmt
from aebench.store.atomic import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_MD = "leaderboard.md"
MAX_EXTRA = 3  # other headline metrics shown beside the ranking one, for context


@dataclass
class Section:
    """The ranked models of one protocol."""

    protocol: str
    description: str
    rows: pd.DataFrame  # rank (None: no value), model, registered, dataset, seeds, mean, std, extras
    main: bool


@dataclass
class Board:
    suite: str
    suite_dir: Path
    metric: str
    direction: str  # 'min' or 'max'
    extras: list[str]
    sections: list[Section]
    not_done: list[dict[str, Any]] = field(default_factory=list)

    @property
    def better(self) -> str:
        return "lower is better" if self.direction == "min" else "higher is better"


def choose_metric(res: Results, metric: str | None) -> str:
    """The ranking key: ``metric`` (a key, a pattern, or a metric name with a headline), else the default."""
    present = [k for k in res.metric_keys if res.done[k].notna().any()]
    if metric:
        if metric in present:
            return metric
        candidates = K.matching(metric, present) or K.headline_keys(k for k in present if k.split("/")[0] == metric)
        candidates = candidates or [k for k in present if k.split("/")[0] == metric]
        if candidates:
            return candidates[0]
        raise AebenchError(f"--metric {metric!r}: no such values in {res.suite_dir}; "
                           f"available: {', '.join(present) or 'none (no finished job)'}")
    for pattern in K.LEADERBOARD_DEFAULTS:
        found = K.matching(pattern, present)
        if found:
            return found[0]
    heads = [k for k in K.headline_keys(present) if not k.startswith(K.COST_PREFIX)]
    if heads:
        return heads[0]
    raise AebenchError(f"{res.suite_dir}: no metric values to rank by (no finished job?)")


def rank_section(done: pd.DataFrame, metric: str, direction: str, extras: list[str]) -> pd.DataFrame:
    """Mean over seeds per model, ranked (ties share a rank); models without a value come last, unranked."""
    import pandas as pd

    out = []
    for (label, dataset), g in done.groupby(["label", "dataset"], sort=False):
        vals = pd.to_numeric(g[metric], errors="coerce").dropna()
        row = {"model": label, "registered": ", ".join(dict.fromkeys(map(str, g["model"]))), "dataset": dataset,
               "seeds": len(g), "n": len(vals), "mean": float(vals.mean()) if len(vals) else math.nan,
               "std": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan}
        for x in extras:
            xv = pd.to_numeric(g[x], errors="coerce").dropna() if x in g else pd.Series(dtype=float)
            row[x] = float(xv.mean()) if len(xv) else math.nan
        out.append(row)
    rows = pd.DataFrame(out)
    if rows.empty:
        return rows
    rows["rank"] = rows["mean"].rank(method="min", ascending=direction == "min")
    rows = rows.sort_values(["rank", "model"], na_position="last", kind="stable").reset_index(drop=True)
    rows["rank"] = pd.Series([None if math.isnan(r) else int(r) for r in rows["rank"]], dtype=object)
    return rows


def build_leaderboard(suite_dir: str | Path, metric: str | None = None, write: bool = True) -> Board:
    """Rank ``results/<suite>/`` by ``metric``; writes ``leaderboard.csv`` and ``leaderboard.md`` there."""
    res = load_results(suite_dir)
    key = choose_metric(res, metric)
    direction = K.direction(key) or "min"
    heads = set(K.headline_keys(res.metric_keys))
    extras = [k for k in res.metric_keys if k in heads and k != key and not k.startswith(K.COST_PREFIX)]
    extras = extras[:MAX_EXTRA]
    done = res.done
    sections = []
    counts = done.groupby("protocol", sort=False).size().sort_values(ascending=False, kind="stable")
    for i, proto in enumerate(counts.index):
        g = done[done["protocol"] == proto]
        cfg = res.configs.get(g["job_id"].iloc[0]) or {}
        sections.append(Section(str(proto), describe_protocol(cfg), rank_section(g, key, direction, extras), i == 0))
    not_done = [{"job_id": r.job_id, "model": r.label or "?", "dataset": r.dataset or "?", "status": r.status,
                 "reason": " ".join(str(r.reason or "").split())}
                for r in res.jobs[res.jobs["status"] != "done"].itertuples()]
    board = Board(res.suite, res.suite_dir, key, direction, extras, sections, not_done)
    if write:
        atomic_write_text(res.suite_dir / LEADERBOARD_CSV, to_csv(board))
        atomic_write_text(res.suite_dir / LEADERBOARD_MD, to_markdown(board))
    return board


def _value(row: Any) -> str:
    if row["n"] == 0 or math.isnan(row["mean"]):
        return "–"
    return fmt(row["mean"]) + (f" ± {fmt(row['std'], 2)}" if row["n"] > 1 and not math.isnan(row["std"]) else "")


def _columns(board: Board) -> list[str]:
    arrow = K.ARROWS[board.direction]
    return ["rank", "model", "dataset", f"{board.metric} {arrow}", "seeds",
            *[f"{x} {K.arrow(x)}".strip() for x in board.extras]]


def _cells(board: Board, row: Any) -> list[str]:
    return ["" if row["rank"] is None else str(row["rank"]), str(row["model"]), str(row["dataset"]), _value(row),
            str(row["seeds"]), *[fmt(row[x]) for x in board.extras]]


def to_csv(board: Board) -> str:
    """Machine-readable: one row per model and protocol; ``comparable`` marks the main ranking."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "model", "registered", "dataset", "protocol", "comparable", "metric", "mean", "std", "seeds",
                *board.extras])
    for s in board.sections:
        for _, r in s.rows.iterrows():
            w.writerow(["" if r["rank"] is None else r["rank"], r["model"], r["registered"], r["dataset"], s.protocol,
                        s.main, board.metric, "" if math.isnan(r["mean"]) else repr(r["mean"]),
                        "" if math.isnan(r["std"]) else repr(r["std"]), r["seeds"],
                        *["" if math.isnan(r[x]) else repr(r[x]) for x in board.extras]])
    return buf.getvalue()


def to_markdown(board: Board) -> str:
    cols = _columns(board)
    out = [f"# Leaderboard: {esc(board.suite)}", "",
           f"Ranked by `{esc(board.metric)}` ({board.better}), mean ± standard deviation over seeds. Only runs "
           "under the same protocol (dataset, backbone, latent size, budget and metric settings) are ranked "
           "together.", ""]
    for s in board.sections:
        title = "Ranking" if s.main else "Other protocol (not comparable with the ranking above)"
        out += [f"## {title}: protocol `{esc(s.protocol)}`", "", esc(s.description), ""]
        out += md_table(cols, ["---:", "---", "---", "---:", "---:"] + ["---:"] * len(board.extras),
                        [[esc(c) for c in _cells(board, r)] for _, r in s.rows.iterrows()]) + [""]
    if board.not_done:
        out += ["## Not ranked: jobs not done", ""]
        out += jobs_not_done_table(board.not_done, {"model": "model", "dataset": "dataset", "status": "status",
                                                    "reason": "reason"}) + [""]
    return "\n".join(out).rstrip() + "\n"


def to_text(board: Board) -> str:
    """The terminal table: aligned columns, main ranking first."""
    cols = _columns(board)
    out = [f"leaderboard of suite {board.suite!r} by {board.metric} ({board.better})"]
    for s in board.sections:
        head = "ranking" if s.main else "other protocol, not comparable with the ranking above"
        out += ["", f"{head}: protocol {s.protocol}: {s.description}"]
        table = [cols] + [_cells(board, r) for _, r in s.rows.iterrows()]
        widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
        right = {0, 3, 4} | set(range(5, len(cols)))
        for row in table:
            out.append("  ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    if board.not_done:
        out += ["", f"not ranked ({len(board.not_done)} jobs not done):"]
        out += [f"  {j['status']:<8} {j['model']} {j['dataset']} ({j['job_id']}): {j['reason']}"
                for j in board.not_done]
    out += ["", f"written: {board.suite_dir / LEADERBOARD_CSV}, {board.suite_dir / LEADERBOARD_MD}"]
    return "\n".join(out)


def suite_dirs(path: str | Path) -> list[Path]:
    """``path`` itself if it is a suite's results folder, else the suite folders inside it (``results/``)."""
    from aebench.store.table import job_dirs

    p = Path(path)
    if not p.is_dir():
        raise AebenchError(f"{p}: no such results folder (run `aebench run <suite.yaml>` first)")
    if job_dirs(p) or (p / "results.csv").exists():
        return [p]
    found = [d for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".") and job_dirs(d)]
    if not found:
        raise AebenchError(f"{p}: no suite results found (expected results/<suite>/<job>/config.json)")
    return found
