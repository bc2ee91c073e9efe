"""README.md of a report: the same tables as the HTML, figures and grids as PNG files beside it."""

from __future__ import annotations

import html
import re
from pathlib import Path

from aebench.report.table import MISSING, NOT_APPLICABLE, Table
from aebench.store.atomic import atomic_write_text


def esc(text: object) -> str:
    """User-supplied text inside markdown: HTML-escaped (GitHub renders raw HTML) and table-safe."""
    s = " ".join(str(text).split())
    return html.escape(s, quote=False).replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")


def fence(text: str, lang: str = "") -> str:
    """A code block whose fence is longer than any run of backticks inside the text."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    f = "`" * max(3, longest + 1)
    return f"{f}{lang}\n{text.rstrip()}\n{f}"


def md_table(heads: list[str], aligns: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table; ``heads`` are escaped here, ``rows`` hold rendered (escaped) cells.

    ``aligns`` are markdown alignment cells, one per column (``---``, ``---:``, ``:---:``).
    """
    return (["| " + " | ".join(esc(h) for h in heads) + " |", "|" + "|".join(aligns) + "|"]
            + ["| " + " | ".join(cells) + " |" for cells in rows])


def jobs_not_done_table(jobs: list[dict], columns: dict[str, str]) -> list[str]:
    """Failed, damaged, running and pending jobs with their reasons, one row each.

    ``columns`` maps each header to the job record's key (the report shows labels as 'model').
    """
    return md_table(["job", *columns], ["---"] + ["---:" if k == "seed" else "---" for k in columns.values()],
                    [[esc(j["job_id"]), *(esc(j[k]) for k in columns.values())] for j in jobs])


def table_markdown(t: Table) -> str:
    if t.rows.empty:
        return "_No finished jobs._"
    heads = t.identity_headers + [t.header(k) for k in t.keys]
    align = ["---"] * len(t.group) + ["---:"] * (1 + len(t.keys))
    rows = [[esc(c) for c in t.identity(i)] + [_marked(t, i, k) for k in t.keys] for i in range(len(t.rows))]
    return "\n".join(md_table(heads, align, rows))


def _marked(t: Table, i: int, key: str) -> str:
    """Row ``i``'s cell of ``key``, in bold where it is the best of its column."""
    c = t.cell(i, key)
    return f"**{c}**" if i in t.best.get(key, ()) else c


def table_markdown_transposed(t: Table) -> str:
    """One row per metric, one column per model: readable when there are many metrics."""
    heads = ["metric"] + [t.column_name(i) for i in range(len(t.rows))]
    rows = [[esc(t.header(k))] + [_marked(t, i, k) for i in range(len(t.rows))] for k in t.keys]
    return "\n".join(md_table(heads, ["---"] + ["---:"] * len(t.rows), rows))


LEGEND = (f"Mean ± standard deviation over seeds. ↓ lower is better, ↑ higher is better; **bold**: the best in "
          f"its column (per dataset). {NOT_APPLICABLE}: the metric does not apply; {MISSING}: no value.")


def ranking_markdown(board) -> list[str]:
    """The default leaderboard with its ranks within noise (``aebench leaderboard`` writes the same)."""
    if board is None:
        return []
    from aebench.report.leaderboard import NOISE_NOTE, section_markdown

    out = ["## Ranking", "", f"By `{esc(board.metric)}` ({board.better}), mean ± standard deviation over seeds, "
           "runs of one protocol together. " + NOISE_NOTE, ""]
    for s in board.sections:
        if not s.main:
            out += [f"Other protocol `{esc(s.protocol)}` (not comparable with the ranking above):", ""]
        out += section_markdown(board, s) + [""]
    return out


CLAIMS_NOTE = ("Each claim is judged seed by seed (models paired by seed number) by the rule shown, from the values "
               "above; computed by aebench.report.claims, not written by hand. Supported: every seed supports it; "
               "mixed: some do; not tested here: its models or metrics are not in these results.")


def claims_markdown(checked) -> list[str]:
    """The lecture's claims with their verdicts and per-seed numbers, then the measurements."""
    if not checked:
        return []
    out = ["## The lecture's claims, checked", "", CLAIMS_NOTE, ""]
    for kind, title in (("claim", None), ("measure", "Measurements")):
        entries = [c for c in checked if c.claim.kind == kind]
        if entries and title:
            out += [f"### {title}", ""]
        for c in entries:
            out += [f"- **{esc(c.summary)}**: {c.claim.statement} _({esc(c.where)})_", ""]
            if c.missing:
                out += [f"  Missing: {esc('; '.join(c.missing))}.", ""]
                continue
            out += [f"  Rule: {c.claim.rule}.", ""]
            out += [f"  - seed {s.seed}: {esc(s.verdict)}: {esc(s.numbers)}" for s in c.seeds] + [""]
    return out


def render_markdown(report) -> str:
    """The whole README as text (deterministic for a given results folder: the golden test relies on it)."""
    p = report.provenance
    out = [f"# {esc(report.title)}", ""]
    if p.description:
        out += [esc(p.description), ""]
    counts = ", ".join(f"{n} {s}" for s, n in p.counts.items())
    out += [f"{sum(p.counts.values())} jobs: {counts}. Open `index.html` for the same report in one file.", ""]
    out += ["## Comparison", "", table_markdown(report.table), "", LEGEND, ""]
    if report.not_applicable:
        out += ["Not applicable:", ""]
        out += [f"- {esc(lbl)} ({esc(ds)}), {esc(m)}: {esc(r)}" for lbl, ds, m, r in report.not_applicable]
        out += [""]
    if report.all_metrics is not None:
        out += ["## All metrics", "", table_markdown_transposed(report.all_metrics), ""]
    for name, table in report.sections.items():
        out += [f"## {esc(name.capitalize())}", "", table_markdown(table), ""]
    out += ranking_markdown(report.ranking)
    out += claims_markdown(report.claims)
    from aebench.report.tuning import load_tuning, tuning_markdown

    out += tuning_markdown(load_tuning(report.res.suite_dir))
    if report.figures:
        out += ["## Figures", ""]
        for f in report.figures:
            out += [f"### {esc(f.title)}", "", f"![{esc(f.title)}](figures/{f.path.name})", "", esc(f.caption), ""]
    if report.grids:
        out += ["## Samples and reconstructions", ""]
        for mg in report.grids:
            out += [f"### {esc(mg.label)} ({esc(mg.dataset)}, seed {mg.seed})", ""]
            if not mg.grids:
                out += ["_No images._", ""]
                continue
            out += md_table([g.title for g in mg.grids], [":---:"] * len(mg.grids),
                            [[f"![{esc(g.title)}]({g.rel})" for g in mg.grids]]) + [""]
    out += ["## Provenance", ""]
    out += [f"- suite: {esc(p.suite)} (results folder `{esc(p.folder)}/`, suite file snapshot below)"]
    if p.commits:
        out += [f"- aebench commit: {', '.join(f'`{esc(c)}`' for c in p.commits)}"]
    if p.versions:
        out += ["- versions: " + ", ".join(f"{esc(k)} {esc(' / '.join(v))}" for k, v in p.versions.items())]
    if p.python:
        out += [f"- python: {esc(', '.join(p.python))}"]
    if p.devices:
        out += [f"- device: {esc('; '.join(p.devices))}"]
    if p.started or p.finished:
        out += [f"- dates: {esc(p.started or '?')} to {esc(p.finished or '?')}"]
    for fp, n, desc in p.protocols:
        out += [f"- protocol `{esc(fp)}` ({n} done jobs): {esc(desc)}"]
    out += [""]
    if p.problems:
        out += ["### Jobs not done", ""]
        out += jobs_not_done_table(p.problems, {"model": "label", "dataset": "dataset", "seed": "seed",
                                                "status": "status", "reason": "reason"}) + [""]
    if report.notes:
        out += ["### Notes", ""] + [f"- {esc(n)}" for n in report.notes] + [""]
    if p.suite_text:
        out += ["<details><summary>suite file</summary>", "", fence(p.suite_text, "yaml"), "", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


def write_markdown(report, path: Path) -> Path:
    return atomic_write_text(path, render_markdown(report))
