"""``aebench leaderboard``: rank the models of a results folder by one metric, comparable runs only.

Each job carries a protocol fingerprint (``Job.protocol``: dataset, backbone, latent size, budget, metric
settings; not the model or the seed). Only runs under the same fingerprint are ranked together: the
protocol with the most finished jobs comes first, runs under any other are ranked apart in their own
sections, and jobs that did not finish are listed without a rank. Beside each rank, the ranks a model could
take given Welch's t-tests over seeds between each pair of models (shared ranks where differences are noise).
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
from aebench.report.aggregate import Stat, aggregate
from aebench.report.markdown_report import esc, jobs_not_done_table, md_table
from aebench.report.results import Results, describe_protocol, load_results
from aebench.report.table import fmt
from aebench.store.atomic import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_MD = "leaderboard.md"
MAX_EXTRA = 3  # other headline metrics shown beside the ranking one, for context
ALPHA = 0.05  # Welch's t-test level at which two models' means count as different


@dataclass
class Section:
    """The ranked models of one protocol."""

    protocol: str
    description: str
    rows: pd.DataFrame  # rank (None: no value), rank_lo, rank_hi, p_next, model, registered, dataset, seeds,
    # mean, std, stat (the aggregate's per-seed values), extras
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
        candidates = K.matching(metric, present) or K.headline_keys(k for k in present if K.metric_of(k) == metric)
        candidates = candidates or [k for k in present if K.metric_of(k) == metric]
        if candidates:
            return candidates[0]
        raise AebenchError(f"--metric {metric!r}: no such values in {res.suite_dir}; "
                           f"available: {', '.join(present) or 'none (no finished job)'}")
    found = K.rank_candidates(present)  # the metrics' rank_by meta: sample FID, then reconstruction error
    if found:
        return found[0]
    heads = [k for k in K.headline_keys(present) if not K.section(k)]
    if heads:
        return heads[0]
    raise AebenchError(f"{res.suite_dir}: no metric values to rank by (no finished job?)")


def welch_p(a: Stat, b: Stat) -> float:
    """Two-sided p-value of Welch's t-test between two models' per-seed values (scipy's ``ttest_ind`` with
    ``equal_var=False``); NaN when either has fewer than two seeds. Two constant samples: 0 if they differ."""
    if a.n < 2 or b.n < 2:
        return math.nan
    if a.sd == 0 and b.sd == 0:
        return 1.0 if a.mean == b.mean else 0.0
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # near-constant seeds: scipy warns of precision loss, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a.values, b.values, equal_var=False).pvalue)


def rank_intervals(stats: list[Stat], direction: str, alpha: float = ALPHA) -> list[tuple[int, int]]:
    """Each model's possible ranks: from 1 + the models significantly better (Welch p < alpha) to n - the
    models significantly worse. Models whose differences are within noise share the ranks between."""
    n = len(stats)
    sign = 1 if direction == "min" else -1
    out = []
    for i, a in enumerate(stats):
        better = worse = 0
        for j, b in enumerate(stats):
            if i == j or not welch_p(a, b) < alpha:
                continue
            if sign * (b.mean - a.mean) < 0:
                better += 1
            elif sign * (b.mean - a.mean) > 0:
                worse += 1
        out.append((1 + better, n - worse))
    return out


def rank_section(done: pd.DataFrame, metric: str, direction: str, extras: list[str]) -> pd.DataFrame:
    """Mean over seeds per model, ranked (ties share a rank), with rank intervals from Welch's t-tests over
    seeds and the p-value against the next model; models without a value come last, unranked."""
    import pandas as pd

    out = []
    for g in aggregate(done, [metric, *extras]):
        st = g.stat(metric)
        outside = sorted({o for o in g.origins if o != "aebench"})
        row = {"model": g.label + (f" (evaluated only: {', '.join(outside)})" if outside else ""),
               "registered": g.model, "dataset": g.dataset, "seeds": len(g.job_ids), "n": st.n, "mean": st.mean,
               "std": st.sd, "stat": st}
        row.update({x: g.stat(x).mean for x in extras})
        out.append(row)
    rows = pd.DataFrame(out)
    if rows.empty:
        return rows
    rows["rank"] = rows["mean"].rank(method="min", ascending=direction == "min")
    rows = rows.sort_values(["rank", "model"], na_position="last", kind="stable").reset_index(drop=True)
    rows["rank"] = pd.Series([None if math.isnan(r) else int(r) for r in rows["rank"]], dtype=object)
    ranked = [i for i in range(len(rows)) if rows.at[i, "rank"] is not None]
    intervals = rank_intervals([rows.at[i, "stat"] for i in ranked], direction)
    rows["rank_lo"] = pd.Series([None] * len(rows), dtype=object)
    rows["rank_hi"] = pd.Series([None] * len(rows), dtype=object)
    rows["p_next"] = math.nan
    for pos, (i, (lo, hi)) in enumerate(zip(ranked, intervals)):
        rows.at[i, "rank_lo"], rows.at[i, "rank_hi"] = lo, hi
        if pos + 1 < len(ranked):
            rows.at[i, "p_next"] = welch_p(rows.at[i, "stat"], rows.at[ranked[pos + 1], "stat"])
    return rows


def board_of(res: Results, metric: str | None = None) -> Board:
    """Rank a loaded results folder by ``metric`` (see ``choose_metric``); writes nothing."""
    key = choose_metric(res, metric)
    direction = K.direction(key) or "min"
    heads = set(K.headline_keys(res.metric_keys))
    extras = [k for k in res.metric_keys if k in heads and k != key and not K.section(k)]
    extras = extras[:MAX_EXTRA]
    done = res.done.copy()
    # ranked together: the same training protocol and the same settings of the ranking metric
    settings = f"{K.SETTINGS_PREFIX}{K.metric_of(key)}"
    done["_section"] = done["protocol"].astype(str)
    if settings in done.columns:
        done["_section"] += done[settings].map(lambda v: "" if not isinstance(v, str) else f"/{v[:6]}")
    sections = []
    counts = done.groupby("_section", sort=False).size().sort_values(ascending=False, kind="stable")
    for i, proto in enumerate(counts.index):
        g = done[done["_section"] == proto]
        cfg = res.configs.get(g["job_id"].iloc[0]) or {}
        sections.append(Section(str(proto), describe_protocol(cfg), rank_section(g, key, direction, extras), i == 0))
    not_done = [{"job_id": r.job_id, "model": r.label or "?", "dataset": r.dataset or "?", "status": r.status,
                 "reason": " ".join(str(r.reason or "").split())}
                for r in res.jobs[res.jobs["status"] != "done"].itertuples()]
    return Board(res.suite, res.suite_dir, key, direction, extras, sections, not_done)


def build_leaderboard(suite_dir: str | Path, metric: str | None = None, write: bool = True) -> Board:
    """Rank ``results/<suite>/`` by ``metric``; writes ``leaderboard.csv`` and ``leaderboard.md`` there."""
    board = board_of(load_results(suite_dir), metric)
    if write:
        atomic_write_text(board.suite_dir / LEADERBOARD_CSV, to_csv(board))
        atomic_write_text(board.suite_dir / LEADERBOARD_MD, to_markdown(board))
    return board


def _value(row: Any) -> str:
    if row["n"] == 0 or math.isnan(row["mean"]):
        return "–"
    return fmt(row["mean"]) + (f" ± {fmt(row['std'], 2)}" if row["n"] > 1 and not math.isnan(row["std"]) else "")


def ranks_text(row: Any) -> str:
    """``2`` when the tests place a model at one rank, ``1–3`` when its rank is within noise of others'."""
    if row["rank_lo"] is None:
        return ""
    return str(row["rank_lo"]) if row["rank_lo"] == row["rank_hi"] else f"{row['rank_lo']}–{row['rank_hi']}"


def p_text(p: float) -> str:
    return "" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _columns(board: Board) -> list[str]:
    arrow = K.ARROWS[board.direction]
    return ["rank", "ranks within noise", "model", "dataset", f"{board.metric} {arrow}", "seeds", "p vs next",
            *[K.labelled(x) for x in board.extras]]


def _cells(board: Board, row: Any) -> list[str]:
    return ["" if row["rank"] is None else str(row["rank"]), ranks_text(row), str(row["model"]), str(row["dataset"]),
            _value(row), str(row["seeds"]), p_text(row["p_next"]), *[fmt(row[x]) for x in board.extras]]


ALIGN = ["---:", "---:", "---", "---", "---:", "---:", "---:"]
NOISE_NOTE = (f"Ranks within noise: Welch's t-test (two-sided, unequal variances) between each pair of models over "
              f"their seeds; a model's range runs from 1 + the models significantly better (p < {ALPHA}) to the "
              "number ranked - the models significantly worse, so models whose ranges overlap are not told apart by "
              f"these seeds (not adjusted for multiple comparisons; fewer than 2 seeds: never told apart). p vs "
              "next: the test against the next model in the ranking.")


def _num(v: float | None) -> str:
    return "" if v is None or math.isnan(v) else repr(float(v))


def to_csv(board: Board) -> str:
    """Machine-readable: one row per model and protocol; ``comparable`` marks the main ranking."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "rank_lo", "rank_hi", "model", "registered", "dataset", "protocol", "comparable", "metric",
                "mean", "std", "seeds", "p_next", *board.extras])
    for s in board.sections:
        for _, r in s.rows.iterrows():
            ranks = ["" if r[c] is None else r[c] for c in ("rank", "rank_lo", "rank_hi")]
            w.writerow([*ranks, r["model"], r["registered"], r["dataset"], s.protocol, s.main, board.metric,
                        _num(r["mean"]), _num(r["std"]), r["seeds"], _num(r["p_next"]),
                        *[_num(r[x]) for x in board.extras]])
    return buf.getvalue()


def section_markdown(board: Board, s: Section) -> list[str]:
    """A section's ranking as markdown table lines."""
    return md_table(_columns(board), ALIGN + ["---:"] * len(board.extras),
                    [[esc(c) for c in _cells(board, r)] for _, r in s.rows.iterrows()])


def to_markdown(board: Board) -> str:
    out = [f"# Leaderboard: {esc(board.suite)}", "",
           f"Ranked by `{esc(board.metric)}` ({board.better}), mean ± standard deviation over seeds. Only runs "
           "under the same protocol (dataset, backbone, latent size, budget and metric settings) are ranked "
           "together.", "", NOISE_NOTE, ""]
    for s in board.sections:
        title = "Ranking" if s.main else "Other protocol (not comparable with the ranking above)"
        out += [f"## {title}: protocol `{esc(s.protocol)}`", "", esc(s.description), ""]
        out += section_markdown(board, s) + [""]
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
        right = {0, 1, 4, 5, 6} | set(range(7, len(cols)))
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
