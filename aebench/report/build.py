"""``aebench report``: turn ``results/<suite>/`` into ``reports/<suite>/index.html`` and ``README.md``.

Everything is first written to a staging folder beside the output and swapped in at the end, so an
interrupted report never leaves a half-written folder; an existing output folder is replaced only if a
previous report made it (its marker file is there), so ``--out .`` cannot wipe unrelated files.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aebench.errors import AebenchError
from aebench.report import keys as K
from aebench.report.figures import Figure, draw_all
from aebench.report.grids import ModelGrids, job_grids
from aebench.report.results import Results, describe_protocol, load_results
from aebench.report.table import Table, build_table

if TYPE_CHECKING:
    from aebench.report.claims import Checked
    from aebench.report.leaderboard import Board

MARKER = ".aebench-report"
STATUS_ORDER = ("done", "failed", "damaged", "running", "pending")


@dataclass
class Provenance:
    suite: str
    folder: str
    suite_text: str | None
    description: str
    counts: dict[str, int]
    commits: list[str]
    versions: dict[str, list[str]]
    devices: list[str]
    python: list[str]
    started: str | None
    finished: str | None
    protocols: list[tuple[str, int, str]]  # (fingerprint, done jobs, description)
    problems: list[dict[str, Any]]  # jobs not done: job_id, label, dataset, seed, status, reason


@dataclass
class Report:
    res: Results
    table: Table  # headline metrics, one row per model
    all_metrics: Table | None  # every metric, shown transposed (one row per metric) when there are more
    sections: dict[str, Table]  # metrics with a ``section`` meta (cost), one table each
    ranking: Board | None  # the default leaderboard, with rank intervals over seeds
    claims: list[Checked]  # the lecture's claims, checked per seed
    figures: list[Figure]
    grids: list[ModelGrids]
    provenance: Provenance
    not_applicable: list[tuple[str, str, str, str]]  # (label, dataset, metric, reason)
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"aebench report: {self.res.suite}"


def _distinct(values: list[Any]) -> list[str]:
    return [str(v) for v in dict.fromkeys(v for v in values if v not in (None, ""))]


def provenance(res: Results) -> Provenance:
    """Where the numbers came from: suite file, code and library versions, devices, dates, jobs not done."""
    provs = [res.provenance[j] for j in res.done["job_id"] if j in res.provenance]
    versions: dict[str, list[str]] = {}
    for p in provs:
        for pkg, v in sorted((p.get("versions") or {}).items()):
            versions.setdefault(str(pkg), [])
            if str(v) not in versions[str(pkg)]:
                versions[str(pkg)].append(str(v))
    started = sorted(str(p["started"]) for p in provs if p.get("started"))
    finished = sorted(str(p["finished"]) for p in provs if p.get("finished"))
    description = ""
    if res.suite_text:
        try:
            import yaml

            raw = yaml.safe_load(res.suite_text)
            if isinstance(raw, dict) and isinstance(raw.get("description"), str):
                description = raw["description"].strip()
        except Exception:  # noqa: BLE001 - a broken snapshot only loses its description
            description = ""
    protocols = []
    done = res.done
    for proto, g in done.groupby("protocol", sort=False):
        cfg = res.configs.get(g["job_id"].iloc[0]) or {}
        protocols.append((str(proto), len(g), describe_protocol(cfg)))
    protocols.sort(key=lambda p: -p[1])
    problems = []
    for r in res.jobs[res.jobs["status"] != "done"].itertuples():
        problems.append({"job_id": str(r.job_id), "label": str(r.label or "?"), "dataset": str(r.dataset or "?"),
                         "seed": "" if r.seed is None or str(r.seed) == "<NA>" else str(r.seed),
                         "status": str(r.status), "reason": " ".join(str(r.reason or "").split())})
    counts = Counter(res.jobs["status"])
    return Provenance(
        suite=res.suite, folder=res.suite_dir.name, suite_text=res.suite_text, description=description,
        counts={s: counts[s] for s in STATUS_ORDER if counts[s]},
        commits=_distinct([p.get("git_commit") for p in provs]),
        versions=versions, devices=_distinct([p.get("device") for p in provs]),
        python=_distinct([p.get("python") for p in provs]),
        started=started[0] if started else None, finished=finished[-1] if finished else None,
        protocols=protocols, problems=problems,
    )


def _not_applicable(res: Results) -> list[tuple[str, str, str, str]]:
    out = {}
    for r in res.done.itertuples():
        for metric, reason in sorted(res.not_applicable(r.job_id).items()):
            out.setdefault((str(r.label), str(r.dataset), metric), reason)
    return [(*k, v) for k, v in out.items()]


def assemble(res: Results, figures_dir: Path, notes: list[str] | None = None) -> Report:
    """Tables, figures (written to ``figures_dir``), grids and provenance of a loaded results folder."""
    from aebench.report.claims import check_claims
    from aebench.report.leaderboard import board_of

    notes = [] if notes is None else notes
    keys = res.metric_keys
    metric_keys = [k for k in keys if not K.section(k)]
    apart: dict[str, list[str]] = {}
    for k in keys:
        if K.section(k):
            apart.setdefault(str(K.section(k)), []).append(k)
    has_done = not res.done.empty
    columns = set(K.column_keys(metric_keys))
    head = [k for k in metric_keys if k in columns] or metric_keys
    table = build_table(res, head)
    all_metrics = build_table(res, metric_keys) if has_done and len(metric_keys) > len(head) else None
    sections = {name: build_table(res, ks) for name, ks in apart.items()} if has_done else {}
    try:
        ranking = board_of(res) if has_done else None
    except AebenchError:  # nothing to rank by
        ranking = None
    claims = check_claims(res) if has_done else []
    figures = draw_all(res, figures_dir, notes) if has_done else []
    grids = job_grids(res, notes) if has_done else []
    return Report(res, table, all_metrics, sections, ranking, claims, figures, grids, provenance(res),
                  _not_applicable(res), notes)


def _swap_in(staging: Path, out: Path) -> None:
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists()):
            raise AebenchError(f"{out} exists and was not written by `aebench report`; choose another --out "
                               "or remove it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


@dataclass
class ReportFiles:
    out: Path
    html: Path
    markdown: Path
    report: Report


def build_report(suite_dir: str | Path, out: str | Path | None = None, quiet: bool = False,
                 embed: bool = False) -> ReportFiles:
    """Write ``<out>/index.html`` and ``<out>/README.md`` with the PNGs they show beside them (``figures/``,
    ``images/``), which both link; ``embed``: the HTML holds its images itself (one self-contained file).

    ``out`` defaults to ``reports/<suite>``. Failed and damaged jobs are listed, never fatal.
    """
    from aebench.report.html_report import write_html
    from aebench.report.markdown_report import write_markdown

    res = load_results(suite_dir)
    out = Path(out) if out is not None else Path("reports") / res.suite
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        report = assemble(res, staging / "figures")
        for mg in report.grids:
            for g in mg.grids:
                dest = staging / g.rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(g.source, dest)
        write_markdown(report, staging / "README.md")
        write_html(report, staging / "index.html", embed)
        (staging / MARKER).write_text("written by `aebench report`; the whole folder is replaced on the next run\n")
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not quiet:
        for n in report.notes:
            print(f"aebench: report: {n}", file=sys.stderr)
    return ReportFiles(out, out / "index.html", out / "README.md", report)
