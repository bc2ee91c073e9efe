"""index.html of a report: no script, every user-supplied string escaped with ``html.escape``.

Its images are the PNGs the report writes beside it (``figures/``, ``images/``), linked by relative path, so the
folder is the report and nothing is stored twice; ``embed=True`` puts them in the page as base64 instead, one
self-contained file (a third larger than the PNGs, and a second copy of them).
"""

from __future__ import annotations

import base64
import html
import os
import urllib.parse
from pathlib import Path

from aebench.report.markdown_report import LEGEND
from aebench.report.table import Table
from aebench.store.atomic import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td.id,th.id{text-align:left}td.best{background:#e6f4ea;font-weight:bold}
td.reason{text-align:left;white-space:normal;max-width:40em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
.grids{display:flex;flex-wrap:wrap;gap:1em}.grids figure{margin:0;max-width:320px}
.grids img{width:100%;image-rendering:pixelated}
pre{background:#f6f8fa;padding:1em;overflow:auto}.small{color:#555;font-size:.9em}
.claims li{margin:.4em 0}.verdict{font-weight:bold;padding:0 .3em}.verdict.ok{background:#e6f4ea}
.verdict.bad{background:#fce8e6}.verdict.mixed{background:#fef7e0}.verdict.none{background:#f1f3f4}
"""


def e(text: object) -> str:
    return html.escape(str(text), quote=True)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def image_src(path: Path, folder: Path, embed: bool) -> str:
    """An ``<img src>`` for ``path``: relative to the page's ``folder`` (URL-quoted), or embedded as a data URI."""
    if embed:
        return data_uri(path)
    return urllib.parse.quote(Path(os.path.relpath(path, folder)).as_posix())


def table_html(t: Table, table_id: str) -> str:
    if t.rows.empty:
        return "<p><em>No finished jobs.</em></p>"
    heads = "".join(f'<th class="id">{e(h)}</th>' for h in t.identity_headers[:-1])
    heads += f"<th>{e(t.identity_headers[-1])}</th>" + "".join(f"<th>{e(t.header(k))}</th>" for k in t.keys)
    body = []
    for i in range(len(t.rows)):
        ident = t.identity(i)
        cells = "".join(f'<td class="id">{e(c)}</td>' for c in ident[:-1]) + f"<td>{e(ident[-1])}</td>"
        for k in t.keys:
            best = i in t.best.get(k, ())
            title = f' title="{e(t.na[(i, k)])}"' if (i, k) in t.na else ""
            cls = ' class="best"' if best else ""
            cells += f"<td{cls}{title}>{e(t.cell(i, k))}</td>"
        body.append(f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table id="{e(table_id)}"><thead><tr>{heads}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></div>")


def table_html_transposed(t: Table, table_id: str) -> str:
    """One row per metric, one column per model."""
    heads = '<th class="id">metric</th>' + "".join(f"<th>{e(t.column_name(i))}</th>" for i in range(len(t.rows)))
    body = []
    for k in t.keys:
        cells = f'<td class="id">{e(t.header(k))}</td>'
        for i in range(len(t.rows)):
            cls = ' class="best"' if i in t.best.get(k, ()) else ""
            title = f' title="{e(t.na[(i, k)])}"' if (i, k) in t.na else ""
            cells += f"<td{cls}{title}>{e(t.cell(i, k))}</td>"
        body.append(f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table id="{e(table_id)}"><thead><tr>{heads}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></div>")


ID = ' class="id"'


def ranking_html(board) -> list[str]:
    """The default leaderboard with its ranks within noise."""
    if board is None:
        return []
    from aebench.report.leaderboard import ALIGN, NOISE_NOTE, _cells, _columns

    h = ['<h2 id="ranking">Ranking</h2>', f"<p>By <code>{e(board.metric)}</code> ({e(board.better)}), mean ± "
         f"standard deviation over seeds, runs of one protocol together.</p><p class=\"small\">{e(NOISE_NOTE)}</p>"]
    left = [i for i, a in enumerate(ALIGN) if a == "---"]
    for s in board.sections:
        if not s.main:
            h.append(f"<p>Other protocol <code>{e(s.protocol)}</code> (not comparable with the ranking above):</p>")
        heads = "".join(f"<th{ID if i in left else ''}>{e(c)}</th>" for i, c in enumerate(_columns(board)))
        body = "".join("<tr>" + "".join(f"<td{ID if i in left else ''}>{e(c)}</td>"
                                        for i, c in enumerate(_cells(board, r))) + "</tr>"
                       for _, r in s.rows.iterrows())
        h.append(f'<div class="scroll"><table class="ranking"><thead><tr>{heads}</tr></thead><tbody>{body}'
                 "</tbody></table></div>")
    return h


VERDICT_CLASS = {"supported": "ok", "not supported": "bad", "mixed": "mixed"}


def claims_html(checked) -> list[str]:
    """The lecture's claims with verdicts and per-seed numbers, then the measurements."""
    if not checked:
        return []
    from aebench.report.markdown_report import CLAIMS_NOTE

    h = ['<h2 id="claims">The lecture\'s claims, checked</h2>', f'<p class="small">{e(CLAIMS_NOTE)}</p>']
    for kind, title in (("claim", None), ("measure", "Measurements")):
        entries = [c for c in checked if c.claim.kind == kind]
        if entries and title:
            h.append(f"<h3>{e(title)}</h3>")
        items = []
        for c in entries:
            cls = VERDICT_CLASS.get(c.verdict, "none")
            item = (f'<li id="claim-{e(c.claim.id)}"><span class="verdict {cls}">{e(c.summary)}</span> '
                    f"{e(c.claim.statement)} <em>({e(c.where)})</em>")
            if c.missing:
                item += f"<br>Missing: {e('; '.join(c.missing))}."
            else:
                item += f"<br>Rule: {e(c.claim.rule)}.<ul>" + "".join(
                    f"<li>seed {e(s.seed)}: {e(s.verdict)}: {e(s.numbers)}</li>" for s in c.seeds) + "</ul>"
            items.append(item + "</li>")
        if items:
            h.append('<ul class="claims">' + "".join(items) + "</ul>")
    return h


def render_html(report, folder: Path, embed: bool = False) -> str:
    """The page, to be written into ``folder``: images linked relative to it, or embedded (``embed``)."""
    p = report.provenance
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>{e(report.title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(report.title)}</h1>"]
    if p.description:
        h.append(f"<p>{e(p.description)}</p>")
    counts = ", ".join(f"{n} {s}" for s, n in p.counts.items())
    h.append(f'<p class="small">{sum(p.counts.values())} jobs: {e(counts)}.</p>')
    h += ["<h2 id=\"comparison\">Comparison</h2>", table_html(report.table, "comparison-table"),
          f'<p class="small">{e(LEGEND).replace("**bold**", "<b>highlighted</b>")}</p>']
    if report.not_applicable:
        h.append("<p>Not applicable:</p><ul>" + "".join(
            f"<li>{e(lbl)} ({e(ds)}), {e(m)}: {e(r)}</li>" for lbl, ds, m, r in report.not_applicable) + "</ul>")
    if report.all_metrics is not None:
        h += ['<h2 id="all-metrics">All metrics</h2>', table_html_transposed(report.all_metrics, "all-metrics-table")]
    for name, table in report.sections.items():
        h += [f'<h2 id="{e(name)}">{e(name.capitalize())}</h2>', table_html(table, f"{name}-table")]
    from aebench.report.tuning import load_tuning, tuning_html

    h += ranking_html(report.ranking) + claims_html(report.claims) + tuning_html(load_tuning(report.res.suite_dir))
    if report.figures:
        h.append('<h2 id="figures">Figures</h2>')
        for f in report.figures:
            src = image_src(f.path, folder, embed)
            h.append(f'<figure id="fig-{e(f.name)}"><h3>{e(f.title)}</h3><img src="{e(src)}" '
                     f'alt="{e(f.title)}"><figcaption>{e(f.caption)}</figcaption></figure>')
    if report.grids:
        h.append('<h2 id="grids">Samples and reconstructions</h2>')
        for mg in report.grids:
            h.append(f"<h3>{e(mg.label)} ({e(mg.dataset)}, seed {e(mg.seed)})</h3>")
            if not mg.grids:
                h.append("<p><em>No images.</em></p>")
                continue
            h.append('<div class="grids">' + "".join(
                f'<figure><img src="{e(_grid_src(g, folder, embed))}" alt="{e(mg.label)}: {e(g.title)}">'
                f"<figcaption><b>{e(g.title)}</b>: {e(g.caption)}</figcaption></figure>" for g in mg.grids) + "</div>")
    h.append('<h2 id="provenance">Provenance</h2><ul>')
    h.append(f"<li>suite: {e(p.suite)} (results folder <code>{e(p.folder)}/</code>)</li>")
    if p.commits:
        h.append(f"<li>aebench commit: {', '.join(f'<code>{e(c)}</code>' for c in p.commits)}</li>")
    if p.versions:
        h.append("<li>versions: " + ", ".join(f"{e(k)} {e(' / '.join(v))}" for k, v in p.versions.items()) + "</li>")
    if p.python:
        h.append(f"<li>python: {e(', '.join(p.python))}</li>")
    if p.devices:
        h.append(f"<li>device: {e('; '.join(p.devices))}</li>")
    if p.started or p.finished:
        h.append(f"<li>dates: {e(p.started or '?')} to {e(p.finished or '?')}</li>")
    for fp, n, desc in p.protocols:
        h.append(f"<li>protocol <code>{e(fp)}</code> ({n} done jobs): {e(desc)}</li>")
    h.append("</ul>")
    if p.problems:
        h.append('<h3>Jobs not done</h3><table id="problems"><thead><tr><th class="id">job</th><th class="id">model'
                 '</th><th class="id">dataset</th><th>seed</th><th class="id">status</th><th class="id">reason</th>'
                 "</tr></thead><tbody>")
        for j in p.problems:
            h.append(f'<tr><td class="id">{e(j["job_id"])}</td><td class="id">{e(j["label"])}</td>'
                     f'<td class="id">{e(j["dataset"])}</td><td>{e(j["seed"])}</td>'
                     f'<td class="id">{e(j["status"])}</td><td class="reason">{e(j["reason"])}</td></tr>')
        h.append("</tbody></table>")
    if report.notes:
        h.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes) + "</ul>")
    if p.suite_text:
        h.append(f"<details><summary>suite file</summary><pre>{e(p.suite_text)}</pre></details>")
    h.append("</body></html>")
    return "\n".join(h) + "\n"


def _grid_src(grid, folder: Path, embed: bool) -> str:
    """A grid is copied to ``grid.rel`` in the report folder: link that copy, or embed the job's PNG."""
    return data_uri(grid.source) if embed else urllib.parse.quote(grid.rel)


def write_html(report, path: Path, embed: bool = False) -> Path:
    return atomic_write_text(path, render_html(report, Path(path).parent, embed))
