"""Reports: table values against pandas computed independently, a golden README.md, escaping, robustness.

``make_job`` writes a job folder by hand (the files the runner writes, then the done marker), so the
golden results folder is deterministic; set AEBENCH_UPDATE_GOLDEN=1 to rewrite the golden files.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest

from aebench.job import Evaluation, Job
from aebench.specs import NamedSpec, TrainSpec
from aebench.store import jobdir as files
from aebench.store.jobdir import JobDir

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("AEBENCH_UPDATE_GOLDEN") == "1"
METRICS = [["recon", {}], ["fid", {}], ["kl_w2", {}], ["active_units", {"threshold": 0.02}], ["sharpness", {}],
           ["nll", {}], ["cost", {}]]


def png(seed: int, size: int = 20) -> bytes:
    from PIL import Image

    im = Image.new("L", (size, size))
    im.putdata([(i * 7 + seed * 31) % 256 for i in range(size * size)])
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def make_job(suite_dir: Path, model: str, seed: int, values: dict[str, float], *, label: str | None = None,
             dataset: str = "synthetic", epochs: int = 2, details: dict[str, Any] | None = None,
             not_applicable: dict[str, str] | None = None, status: str = "done", suite: str | None = None,
             metrics: list | None = None, params: dict[str, Any] | None = None) -> Job:
    """A job folder as the runner leaves it: config, metrics, curve, provenance, grids, then the marker."""
    evaluation = Evaluation(metrics=[NamedSpec(n, s) for n, s in (metrics or METRICS)],
                            samplers=[NamedSpec("prior"), NamedSpec("gaussian")], n_samples=100, batch_size=1000)
    job = Job(suite=suite or suite_dir.name, model=model, label=label or model, params=params or {}, dataset=dataset,
              dataset_options={}, seed=seed, backbone="mlp", backbone_options={"hidden": [32]}, latent_dim=4,
              likelihood="bernoulli", likelihood_options={}, train=TrainSpec(epochs=epochs, batch_size=64),
              evaluation=evaluation)
    jd = JobDir(suite_dir / job.id)
    jd.path.mkdir(parents=True)
    jd.write_json(files.CONFIG, job.config())
    if status == "failed":
        jd.mark_failed("out of memory: try a smaller train.batch_size", {"at": "2026-01-01T00:00:00+00:00"})
        return job
    requests = evaluation.requests(job.hash)
    jd.write_json(files.METRICS, {"values": values, "details": details or {}, "not_applicable": not_applicable or {},
                                  "seconds": {}, "sampled_with": ["prior", "gaussian"],
                                  "evaluation": {"keys": {r.name: r.key for r in requests},
                                                 "settings_ids": {r.name: r.setting_id for r in requests},
                                                 "plan": evaluation.to_dict()}})
    first = 100.0 + seed
    lines = ["epoch,seconds,loss,reconstruction"] + [f"{e}.0,{e * 0.5},{first - 3 * e},{first - 3 * e - 1}"
                                                     for e in range(1, epochs + 1)]
    (jd / files.CURVE).write_text("\n".join(lines) + "\n")
    jd.write_json(files.PROVENANCE, {
        "versions": {"aebench": "0.1.0", "torch": "2.0.0"}, "git_commit": "0123456789abcdef", "device": "cpu (test)",
        "seed": seed, "started": f"2026-01-01T00:0{seed}:00+00:00", "finished": f"2026-01-01T00:0{seed}:30+00:00",
        "python": "3.11.0", "host": "test", "epochs": epochs})
    (jd / files.CHECKPOINT).write_bytes(b"not a real checkpoint")
    for i, name in enumerate(["samples-prior", "samples-gaussian", "reconstructions", "interpolation",
                              "samples-epoch-first", "samples-epoch-last"]):
        (jd / f"{name}.png").write_bytes(png(seed * 10 + i))
    jd.mark_done()
    if status == "damaged":
        (jd / files.METRICS).write_text(json.dumps({"values": {"recon/mse": 0.0}}))  # checksum no longer matches
    return job


def golden_results(root: Path) -> Path:
    """A deterministic results folder: ae, vae and a grid-point label, two seeds, a failed and a damaged job."""
    d = root / "golden-suite"
    d.mkdir(parents=True)
    (d / "suite.yaml").write_text("version: 1\nname: golden-suite\ndescription: hand-made results for tests\n"
                                  "datasets: [synthetic]\nmodels: [ae, vae]\n")
    for seed, (ae_mse, vae_mse) in enumerate([(0.010, 0.020), (0.012, 0.024)]):
        common = {"cost/params": 1000.0, "sharpness/data": 0.5}
        make_job(d, "ae", seed, {**common, "recon/mse": ae_mse, "recon/bce": 70.0 + seed, "fid/prior": 90.0 + seed,
                                 "fid/gaussian": 30.0 + 2 * seed, "kl_w2/kl": 12.0, "kl_w2/w2": 3.0 + seed,
                                 "active_units/count": 4.0, "sharpness/prior": 0.2, "sharpness/recon": 0.3,
                                 "sharpness/ratio_prior": 0.4, "sharpness/ratio_recon": 0.6},
                 details={"active_units/variances": [0.5, 0.3, 0.2, 0.1]},
                 not_applicable={"nll": "the encoder is deterministic"})
        make_job(d, "vae", seed, {**common, "recon/mse": vae_mse, "recon/bce": 75.0, "fid/prior": 40.0 - seed,
                                  "fid/gaussian": 35.0, "kl_w2/kl": 0.5, "kl_w2/w2": 0.4, "nll/nats": 80.0 + seed,
                                  "active_units/count": 2.0, "sharpness/prior": 0.1, "sharpness/recon": 0.15,
                                  "sharpness/ratio_prior": 0.2, "sharpness/ratio_recon": 0.3},
                 details={"active_units/variances": [0.4, 0.05, 0.001, 0.0005]})
    make_job(d, "vae", 0, {"recon/mse": 0.03}, label="vae[beta=4]", params={"beta": 4},
             details={"active_units/variances": [0.3, 0.001, 0.001, 0.001]})
    make_job(d, "ae", 7, {}, status="failed")
    make_job(d, "vae", 8, {"recon/mse": 0.5}, status="damaged")
    return d


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory) -> Path:
    """A real run: ae and vae on the synthetic set, two seeds, plus a failed and a damaged job by hand."""
    from aebench.cli import main

    tmp = tmp_path_factory.mktemp("report")
    suite = tmp / "tiny.yaml"
    suite.write_text("version: 1\nname: tiny\ndatasets: [synthetic]\nlatent_dim: 4\n"
                     "backbone: {name: mlp, hidden: [16]}\nmodels: [ae, vae]\nseeds: [0, 1]\n"
                     "train: {epochs: 2, batch_size: 128}\neval: {n_samples: 50, samplers: [prior, gaussian]}\n"
                     "metrics: [recon]\n")
    assert main(["run", str(suite), "--results", str(tmp / "results"), "--no-progress"]) == 0
    d = tmp / "results" / "tiny"
    make_job(d, "ae", 5, {}, status="failed", suite="tiny", metrics=[["recon", {}]])
    make_job(d, "vae", 6, {"recon/mse": 0.0}, status="damaged", suite="tiny", metrics=[["recon", {}]])
    return d


def expected_summary(results_csv: Path):
    """Mean and sample std per model over the done jobs, computed straight from results.csv."""
    import pandas as pd

    df = pd.read_csv(results_csv)
    df = df[df["status"] == "done"]
    return df.groupby("label")[["recon/mse", "recon/bce"]].agg(["mean", "std", "count"])


def test_report_table_matches_pandas(tiny_results: Path, tmp_path: Path) -> None:
    from aebench.report import build_report
    from aebench.store.table import write_results_csv

    write_results_csv(tiny_results)  # the hand-made failed and damaged jobs join the table
    expect = expected_summary(tiny_results / "results.csv")
    assert set(expect.index) == {"ae", "vae"} and (expect[("recon/mse", "count")] == 2).all()
    out = build_report(tiny_results, tmp_path / "report")
    assert out.report.table.keys == ["recon/mse"]  # the headline table; every metric in the transposed one
    rows = out.report.all_metrics.rows.set_index("label")
    for label in ("ae", "vae"):
        for key in ("recon/mse", "recon/bce"):
            assert rows.loc[label, f"{key} mean"] == pytest.approx(expect.loc[label, (key, "mean")], rel=1e-12)
            assert rows.loc[label, f"{key} std"] == pytest.approx(expect.loc[label, (key, "std")], rel=1e-12)
        assert rows.loc[label, "seeds"] == 2

    readme = (tmp_path / "report" / "README.md").read_text()
    best = expect[("recon/mse", "mean")].idxmin()
    for label in ("ae", "vae"):
        m, s = expect.loc[label, ("recon/mse", "mean")], expect.loc[label, ("recon/mse", "std")]
        cell = f"{m:.4g} ± {s:.2g}"
        cell = f"**{cell}**" if label == best else cell
        assert re.search(rf"^\| {label} \| 2 \| {re.escape(cell)} \|", readme, re.M), (label, cell, readme)
    assert "recon/mse ↓" in readme
    # failed and damaged jobs are listed apart, with their reasons, and never counted
    assert "| failed | out of memory: try a smaller train.batch_size |" in readme
    assert re.search(r"\| damaged \| damaged .*metrics\.json \(checksum mismatch\) \|", readme)
    assert "6 jobs: 4 done, 1 failed, 1 damaged" in readme
    # figures and grids exist beside the README
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (tmp_path / "report" / rel).is_file(), rel
    assert "figures/headline.png" in readme and "figures/curves.png" in readme
    assert not out.report.notes, out.report.notes


def _decodes(data: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.size[0] > 0


def test_html_links_the_pngs_beside_it_and_embed_makes_it_self_contained(tiny_results: Path, tmp_path: Path) -> None:
    """By default index.html links the PNGs the report writes beside it (figures/, images/): nothing is stored twice.
    ``embed=True`` (``aebench report --embed``) gives the one self-contained file instead."""
    from urllib.parse import unquote

    from aebench.report import build_report

    out = build_report(tiny_results, tmp_path / "r")
    text = out.html.read_text()
    assert "<script" not in text.lower() and 'id="comparison-table"' in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) >= 2 + 2 * 6  # headline and curves figures, six grids per model
    for src in srcs:
        assert not src.startswith(("data:", "/", "http")) and ".." not in src, src[:40]
        path = out.out / unquote(src)
        assert path.is_file() and path.resolve().is_relative_to(out.out.resolve()), src
        _decodes(path.read_bytes())
    assert "base64," not in text
    pngs = sum(p.stat().st_size for p in out.out.rglob("*.png"))
    assert out.html.stat().st_size < pngs / 4  # the page is text only: its images are the files

    embedded = build_report(tiny_results, tmp_path / "e", embed=True)
    text = embedded.html.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) >= 2 + 2 * 6
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:40]
        _decodes(base64.b64decode(src.split(",", 1)[1]))
    assert 'id="comparison-table"' in text
    assert not re.search(r'(src|href)="(?!data:|#)', text), "the embedded report must not link to other files"
    assert embedded.html.stat().st_size > pngs  # each PNG's base64 (4/3 of it), some twice


@pytest.fixture(scope="module")
def golden_report(tmp_path_factory):
    """The golden results folder, its report and its leaderboard, built once for the tests that read them."""
    from aebench.report import build_leaderboard, build_report

    tmp = tmp_path_factory.mktemp("golden")
    d = golden_results(tmp)
    out = build_report(d, tmp / "reports" / "golden-suite")
    return d, out, build_leaderboard(d)


def test_golden_markdown(golden_report) -> None:
    d, out, board = golden_report
    for produced, name in ((out.markdown, "report.md"), (d / "leaderboard.md", "leaderboard.md")):
        text = produced.read_text()
        golden = GOLDEN / name
        if UPDATE:
            golden.write_text(text)
        assert golden.exists(), f"{golden} missing: run with AEBENCH_UPDATE_GOLDEN=1 once"
        assert text == golden.read_text(), f"{name} differs from {golden} (AEBENCH_UPDATE_GOLDEN=1 to accept)"
    assert board.metric == "fid/gaussian"
    # each metric's registered figures were drawn where its keys exist; the report's own two as well
    names = {f.name for f in out.report.figures}
    assert {"headline", "tradeoff", "kl-w2", "active-units", "sharpness", "curves"} <= names
    assert not names & {"encoder-codes", "memorisation", "completion", "finetune"}
    assert not out.report.notes, out.report.notes


def test_golden_values_by_hand(golden_report) -> None:
    """The golden file's key numbers, checked against arithmetic rather than against itself."""
    _, out, board = golden_report
    rows = out.report.table.rows.set_index("label")
    assert rows.loc["ae", "recon/mse mean"] == pytest.approx(0.011)
    assert rows.loc["ae", "recon/mse std"] == pytest.approx(math.sqrt(2) * 0.001)
    assert rows.loc["vae[beta=4]", "seeds"] == 1 and math.isnan(rows.loc["vae[beta=4]", "recon/mse std"])
    t = out.report.table
    order = list(t.rows["label"])
    assert t.best["recon/mse"] == {order.index("ae")}
    assert t.best["fid/prior"] == {order.index("vae")}  # 39.5 against 90.5
    assert t.cell(order.index("ae"), "nll/nats") == "n/a"
    assert t.cell(order.index("vae[beta=4]"), "nll/nats") == "–"
    # fid/gaussian: ae (30, 32), vae (35, 35). Welch: t = -4 / sqrt(2/2 + 0) = -4 on (1)^2 / (1^2 / 1) = 1 degree
    # of freedom; two-sided p = 1 - 2 atan(4) / pi = 0.156 > 0.05: the two share ranks 1-2
    ranked = board.sections[0].rows.set_index("model")
    assert ranked.loc["ae", "p_next"] == pytest.approx(1 - 2 * math.atan(4) / math.pi)
    assert (ranked.loc["ae", "rank_lo"], ranked.loc["ae", "rank_hi"]) == (1, 2)
    assert (ranked.loc["vae", "rank_lo"], ranked.loc["vae", "rank_hi"]) == (1, 2)
    assert ranked.loc["vae[beta=4]", "rank"] is None
    # the claims: 2 of 4 units active in the vae; KL and W2 rank ae and vae alike; no wae in these results
    claims = {c.claim.id: c for c in out.report.claims}
    assert claims["active-units"].summary == "supported (2 of 2 seeds)"
    assert claims["active-units"].seeds[0].numbers == "vae: 2 of 4 dimensions active"
    assert claims["kl-not-w2"].summary == "not supported (0 of 2 seeds)"
    assert claims["wae-samples-better"].verdict == "not tested here"
    assert claims["wae-samples-better"].missing == ["model wae-mmd or wae-gan"]


def test_user_supplied_names_are_escaped(tmp_path: Path) -> None:
    from aebench.report import build_leaderboard, build_report

    d = tmp_path / "evil"
    d.mkdir()
    bad = '<script>alert("x")</script>&'
    make_job(d, "ae", 0, {"recon/mse": 0.1}, label=bad, suite="<img src=x onerror=alert(1)>")
    make_job(d, "vae", 0, {"recon/mse": 0.2})
    out = build_report(d, tmp_path / "out")
    text = out.html.read_text()
    assert "<script" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in text
    md = out.markdown.read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md
    build_leaderboard(d)
    board = (d / "leaderboard.md").read_text()
    assert "<script>" not in board and "&lt;script&gt;" in board


def test_only_broken_jobs_and_out_folder_safety(tmp_path: Path) -> None:
    from aebench.errors import AebenchError
    from aebench.report import build_report

    d = tmp_path / "broken"
    d.mkdir()
    make_job(d, "ae", 0, {}, status="failed")
    make_job(d, "vae", 0, {"recon/mse": 0.1}, status="damaged")
    (d / "garbage-job").mkdir()
    (d / "garbage-job" / "config.json").write_text("{not json")
    out = build_report(d, tmp_path / "out")
    md = out.markdown.read_text()
    assert "_No finished jobs._" in md and "3 jobs: 1 failed, 2 damaged" in md
    assert "unreadable" in md and "garbage-job" in md
    # a second report replaces the first; a folder the report did not write is refused
    build_report(d, tmp_path / "out")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(AebenchError, match="not written by `aebench report`"):
        build_report(d, other)
    assert (other / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folders left behind"


def test_cli_report(tiny_results: Path, tmp_path: Path, capsys) -> None:
    from aebench.cli import main

    assert main(["report", str(tiny_results), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "index.html").is_file() and (tmp_path / "rep" / "README.md").is_file()
    assert "index.html" in capsys.readouterr().out
    assert 'src="figures/' in (tmp_path / "rep" / "index.html").read_text()
    assert main(["report", str(tiny_results), "--out", str(tmp_path / "one"), "--embed"]) == 0
    assert "(self-contained)" in capsys.readouterr().out
    assert 'src="data:image/png;base64,' in (tmp_path / "one" / "index.html").read_text()
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "no such results folder" in capsys.readouterr().err


def test_encoder_codes_are_the_codes_metrics_figure(tmp_path: Path, monkeypatch) -> None:
    """The `codes` metric owns the learned-codes figure: drawn from its details, or, where a job's details lack
    them, from the saved model (and a note when the checkpoint is gone)."""
    from aebench.cli import main

    suite = tmp_path / "enc.yaml"
    suite.write_text("version: 1\nname: enc\ndatasets: [{name: encoder, n: 4}]\nlatent_dim: 2\n"
                     "backbone: {name: mlp, hidden: []}\nmodels: [ae]\nseeds: [0]\n"
                     "train: {epochs: 2, batch_size: 4}\neval: {n_samples: 8, samplers: [prior]}\n"
                     "metrics: [recon, codes]\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(suite), "--results", "results", "--no-progress", "--report"]) == 0
    md = (tmp_path / "reports" / "enc" / "README.md").read_text()
    assert "figures/encoder-codes.png" in md
    import aebench.report.metric_figures as mf
    from aebench.report.figures import draw_all
    from aebench.report.results import load_results

    job = next(p for p in (tmp_path / "results" / "enc").iterdir() if (p / "config.json").exists())
    assert "details" not in json.loads((job / "metrics.json").read_text())  # they are in the evaluation records
    items = JobDir(job).details()["codes/items"]
    codes = mf.compute_codes(job, json.loads((job / "config.json").read_text()))
    assert len(codes) == 4 and all(len(c) == 2 for c in codes)
    assert sum(codes, []) == pytest.approx(sum(items, []), abs=1e-5)  # the checkpoint encodes as the metric did

    res = load_results(tmp_path / "results" / "enc")
    res.details(job.name).pop("codes/items")  # details not kept: encoded from the checkpoint
    notes: list[str] = []
    assert "encoder-codes" in {f.name for f in draw_all(res, tmp_path / "figs", notes)} and not notes

    def no_checkpoint(*_args):
        raise FileNotFoundError("no checkpoint.pt")

    monkeypatch.setattr(mf, "compute_codes", no_checkpoint)  # ... and without the checkpoint: a note, not a crash
    drawn = draw_all(res, tmp_path / "figs2", notes)
    assert "encoder-codes" not in {f.name for f in drawn}
    assert notes == ["codes of ae: FileNotFoundError: no checkpoint.pt"]
