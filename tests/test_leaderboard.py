"""The leaderboard: the documented path for adding a model (plugin file, run with --models, leaderboard),
ranks checked against pandas on results.csv, and runs under another protocol listed apart."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from conftest import suite_text

from aebench.cli import main

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "examples" / "my_ae.py"

SUITE = suite_text(name="lb", backbone="{name: mlp, hidden: [16]}", seeds="[0, 1]",
                   train="{epochs: 2, batch_size: 128}", eval="{n_samples: 50, samplers: [prior, gaussian]}")


@pytest.fixture
def forget_plugins(clean_registry):
    """Plugins are imported once per process; forget the ones a test loads so the next test loads them anew."""
    from aebench import plugins

    before = dict(plugins._loaded)
    yield
    plugins._loaded.clear()
    plugins._loaded.update(before)
    for name in [m for m in sys.modules if m.startswith("aebench_plugin_my_ae")]:
        del sys.modules[name]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_plugin_model_joins_the_leaderboard(tmp_path: Path, monkeypatch, capsys, forget_plugins) -> None:
    """The README's path: built-ins first, then `--plugin examples/my_ae.py --models my-ae`, then `leaderboard`."""
    import pandas as pd

    suite = tmp_path / "lb.yaml"
    suite.write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(suite), "--no-progress"]) == 0
    assert main(["run", str(suite), "--plugin", str(PLUGIN), "--models", "my-ae", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["leaderboard"]) == 0  # default: results/, which holds this one suite
    out = capsys.readouterr().out
    assert "by recon/mse (lower is better)" in out  # no FID in this suite: reconstruction error ranks

    rows = read_csv(tmp_path / "results" / "lb" / "leaderboard.csv")
    assert {r["model"] for r in rows} == {"ae", "vae", "my-ae"}
    assert all(r["comparable"] == "True" for r in rows), "the plugin ran under the suite's protocol"
    assert len({r["protocol"] for r in rows}) == 1

    table = pd.read_csv(tmp_path / "results" / "lb" / "results.csv")
    means = table[table["status"] == "done"].groupby("label")["recon/mse"].mean().sort_values()
    assert [r["model"] for r in rows] == list(means.index)
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]
    for r in rows:
        assert float(r["mean"]) == pytest.approx(means[r["model"]], rel=1e-12)
        assert r["seeds"] == "2"
    lines = [ln.split() for ln in out.splitlines()]
    ranked = [ln[2] for ln in lines if ln and ln[0] in ("1", "2", "3")]  # rank, ranks within noise, model
    assert ranked == list(means.index)
    md = (tmp_path / "results" / "lb" / "leaderboard.md").read_text()
    assert "| my-ae |" in md and "## Ranking" in md


def test_other_protocols_are_listed_apart(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "lb.yaml"
    suite.write_text(SUITE)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    # the same suite with another budget is another protocol: never ranked with the first
    assert main(["run", str(suite), "--results", str(results), "--no-progress", "--set", "train.epochs=1",
                 "--seeds", "0", "--models", "vae"]) == 0
    capsys.readouterr()
    assert main(["leaderboard", str(results / "lb"), "--metric", "recon/bce"]) == 0
    out = capsys.readouterr().out
    assert "by recon/bce (lower is better)" in out
    assert "other protocol, not comparable with the ranking above" in out
    rows = read_csv(results / "lb" / "leaderboard.csv")
    main_rows = [r for r in rows if r["comparable"] == "True"]
    apart = [r for r in rows if r["comparable"] == "False"]
    assert sorted(r["model"] for r in main_rows) == ["ae", "vae"] and all(r["seeds"] == "2" for r in main_rows)
    assert [(r["model"], r["rank"], r["seeds"]) for r in apart] == [("vae", "1", "1")]
    assert main_rows[0]["protocol"] != apart[0]["protocol"]
    assert "Other protocol (not comparable" in (results / "lb" / "leaderboard.md").read_text()


def test_broken_jobs_and_bad_metric(tmp_path: Path, capsys) -> None:
    from test_report import make_job

    d = tmp_path / "results" / "s"
    d.mkdir(parents=True)
    make_job(d, "ae", 0, {"recon/mse": 0.2, "fid/prior": 50.0}, metrics=[["recon", {}], ["fid", {}]])
    make_job(d, "vae", 0, {"recon/mse": 0.3, "fid/prior": 40.0}, metrics=[["recon", {}], ["fid", {}]])
    make_job(d, "ae", 1, {}, status="failed", metrics=[["recon", {}], ["fid", {}]])
    make_job(d, "vae", 1, {"recon/mse": 0.1}, status="damaged", metrics=[["recon", {}], ["fid", {}]])
    assert main(["leaderboard", str(d)]) == 0
    out = capsys.readouterr().out
    assert "by fid/prior (lower is better)" in out  # FID by default
    rows = read_csv(d / "leaderboard.csv")
    assert [(r["model"], r["rank"], r["seeds"]) for r in rows] == [("vae", "1", "1"), ("ae", "2", "1")]
    assert "not ranked (2 jobs not done)" in out and "failed" in out and "damaged" in out
    assert main(["leaderboard", str(d), "--metric", "recon"]) == 0  # a metric name picks its headline key
    assert "by recon/mse" in capsys.readouterr().out
    assert main(["leaderboard", str(d), "--metric", "nope/x"]) == 2
    err = capsys.readouterr().err
    assert "--metric 'nope/x'" in err and "recon/mse" in err
    assert main(["leaderboard", str(tmp_path / "missing")]) == 2
