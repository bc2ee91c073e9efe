"""Evaluation as its own stage: two identities, metrics added without retraining, outside models scored.

The training id covers what determines the weights; each metric's record is keyed by the training id and
its own settings. So adding a metric computes that metric alone, changing ``eval.n_samples`` recomputes only
what uses samples, and nothing retrains (checkpoints and curves stay byte-identical).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, suite_text

from aebench.cli import main
from aebench.job import Job
from aebench.suite import load_suite


def _files(suite_dir: Path, name: str) -> dict[str, bytes]:
    return {d.name: (d / name).read_bytes() for d in sorted(suite_dir.iterdir()) if (d / name).exists()}


def _computed(suite_dir: Path) -> dict[str, list[str]]:
    return {d.name: json.loads((d / "metrics.json").read_text())["evaluation"]["computed"]
            for d in sorted(suite_dir.iterdir()) if (d / "metrics.json").exists()}


def test_training_id_ignores_metrics_evaluation_and_checkpoint_cadence(write_suite):
    base = load_suite(write_suite(suite_text()))
    changed = load_suite(write_suite(suite_text(metrics="[recon, active_units]",
                                                eval="{n_samples: 50, samplers: [prior]}",
                                                train="{epochs: 2, batch_size: 64, checkpoint_every: 2}",
                                                data="{test_limit: 100}"), "b.yaml"))
    assert [j.id for j in base.jobs()] == [j.id for j in changed.jobs()]
    assert [j.protocol for j in base.jobs()] == [j.protocol for j in changed.jobs()]
    for field in ("train={epochs: 3, batch_size: 64}", "data={train_limit: 100}", "latent_dim=3",
                  "seeds=[1]", "train={epochs: 2, batch_size: 64, compile: true}"):
        key, value = field.split("=", 1)
        other = load_suite(write_suite(suite_text(**{key: value}), "c.yaml"))
        assert {j.id for j in other.jobs()}.isdisjoint(j.id for j in base.jobs()), field
    # the evaluation keys do change, per metric: recon does not use samples, sharpness does
    a = {r.name: r.key for r in load_suite(write_suite(suite_text(metrics="[recon, sharpness]"), "d.yaml"))
         .jobs()[0].evaluation.requests(base.jobs()[0].hash)}
    b = {r.name: r.key for r in load_suite(write_suite(suite_text(metrics="[recon, sharpness]",
                                                                  eval="{n_samples: 50, samplers: [prior, gaussian]}"),
                                                       "e.yaml")).jobs()[0].evaluation.requests(base.jobs()[0].hash)}
    assert a["recon"] == b["recon"] and a["sharpness"] != b["sharpness"]


def test_adding_a_metric_and_changing_n_samples_retrains_nothing_and_computes_only_what_changed(write_suite, tmp_path,
                                                                                            capsys):
    results = tmp_path / "results"
    d = results / "tiny"
    suite = write_suite(suite_text(metrics="[recon, sharpness]"))
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    weights, curves = _files(d, "checkpoint.pt"), _files(d, "curve.csv")
    first = {k: json.loads(v)["values"] for k, v in _files(d, "metrics.json").items()}
    assert set(_computed(d).values().__iter__().__next__()) == {"recon", "sharpness"}

    # 1. add a metric: only it is computed
    write_suite(suite_text(metrics="[recon, sharpness, active_units]"))
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    assert "(0 to train, 2 to evaluate)" in capsys.readouterr().err
    assert _files(d, "checkpoint.pt") == weights and _files(d, "curve.csv") == curves
    assert all(c == ["active_units"] for c in _computed(d).values())
    second = {k: json.loads(v)["values"] for k, v in _files(d, "metrics.json").items()}
    for job in first:
        assert {k: v for k, v in second[job].items() if not k.startswith("cost/")} == {
            **{k: v for k, v in first[job].items() if not k.startswith("cost/")},
            **{k: v for k, v in second[job].items() if k.startswith("active_units/")}}

    # 2. change eval.n_samples: only the metric that uses samples is recomputed, with `aebench evaluate`
    write_suite(suite_text(metrics="[recon, sharpness, active_units]", eval="{n_samples: 60, samplers: [prior, "
                                                                             "gaussian]}"))
    assert main(["evaluate", str(suite), "--results", str(results), "--no-progress"]) == 0
    assert _files(d, "checkpoint.pt") == weights and _files(d, "curve.csv") == curves
    assert all(c == ["sharpness"] for c in _computed(d).values())
    third = {k: json.loads(v)["values"] for k, v in _files(d, "metrics.json").items()}
    for job in first:
        assert third[job]["recon/mse"] == first[job]["recon/mse"]
        assert third[job]["sharpness/prior"] != first[job]["sharpness/prior"]  # 60 samples, not 100

    # 3. back to the first settings: every record is reused, nothing is computed
    write_suite(suite_text(metrics="[recon, sharpness]"))
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    assert all(c == [] for c in _computed(d).values())
    assert {k: json.loads(v)["values"]["sharpness/prior"] for k, v in _files(d, "metrics.json").items()} == {
        k: v["sharpness/prior"] for k, v in first.items()}

    # the leaderboard ranks both models together on what they share
    from aebench.report.leaderboard import build_leaderboard

    board = build_leaderboard(d, "recon/mse")
    assert len(board.sections) == 1 and set(board.sections[0].rows["model"]) == {"ae", "vae"}


def test_metrics_json_holds_values_the_records_hold_details_and_example_pixels_are_png(write_suite, tmp_path):
    """metrics.json does not repeat the records' details (per-dimension lists, example images): the store reads
    them from the records, and the report draws its figures from there. Example pixels are a PNG."""
    import base64

    import numpy as np

    from aebench.data import load
    from aebench.metrics.pixels import unpack
    from aebench.report import build_report
    from aebench.store.jobdir import JobDir

    results = tmp_path / "results"
    suite = write_suite(suite_text(models="[ae]", metrics="[recon, active_units, completion]"))
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    jd = JobDir(next((results / "tiny").glob("ae-*")))
    met = json.loads((jd / "metrics.json").read_text())
    assert "details" not in met and "completion/masked_mse_onepass" in met["values"]
    assert (jd / "metrics.json").stat().st_size < 4000
    details = jd.details()
    assert len(details["active_units/variances"]) == 4 and details == {
        **jd.details(metrics=["active_units"]), **jd.details(metrics=["completion"])}
    ex = details["completion/examples"]
    truth = np.stack(unpack(ex["truth"]))
    assert "png_b64" in ex["truth"] and truth.shape == (8, 1, 12, 12)
    assert np.array_equal(truth, load("synthetic", "test", download=False).images[:8].numpy())
    record = next((jd / "eval").glob("completion-*.json"))
    rec = json.loads(record.read_text())
    assert rec["details"]["completion/examples"] == ex
    rows = [k for k, v in ex.items() if isinstance(v, dict)]
    assert len(rows) == 5 and all("png_b64" in ex[k] for k in rows)
    raw = {k: {"shape": ex[k]["shape"], "uint8_b64": base64.b64encode(np.stack(unpack(ex[k])).tobytes()).decode()}
           for k in rows}  # the previous format of the same pixels
    before = json.dumps({**rec, "details": {"completion/examples": {**ex, **raw}}}, indent=2, sort_keys=True)
    assert record.stat().st_size < len(before) + 1  # smaller even for these noisy 12 x 12 images
    files = build_report(results / "tiny", tmp_path / "report")
    assert {"completion", "active-units"} <= {f.name for f in files.report.figures}


def test_evaluate_trains_nothing_and_says_which_jobs_are_not_trained(write_suite, tmp_path, capsys):
    results = tmp_path / "results"
    suite = write_suite(suite_text())
    assert main(["run", str(suite), "--results", str(results), "--no-progress", "--models", "ae"]) == 0
    capsys.readouterr()
    write_suite(suite_text(metrics="[recon, kl_w2]"))
    assert main(["evaluate", str(suite), "--results", str(results), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "1 evaluated" in err and "1 untrained" in err and "not trained yet" in err
    assert len([p for p in (results / "tiny").iterdir() if p.is_dir()]) == 1  # the vae was not trained
    jd = next((results / "tiny").glob("ae-*"))
    assert "kl_w2/kl" in json.loads((jd / "metrics.json").read_text())["values"]


def test_compile_wraps_the_step_the_runner_calls(monkeypatch):
    import torch

    from aebench.data.base import ImageSet
    from aebench.data.synthetic import synthetic
    from aebench.models.base import TrainSettings, build_model
    from aebench.runner.train import train

    compiled = []

    def fake_compile(fn, *args, **kwargs):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    data = ImageSet("synthetic", "train", *synthetic(Path("."), "train", False, n=64))
    model = build_model("wae-gan", data.shape, 2, {"disc_hidden": [8]}, "mlp", {"hidden": [8]})
    train(model, data, TrainSettings(), 1, 32, 0, torch.device("cpu"), compile=True)
    assert len(compiled) == 1 and compiled[0].__func__ is type(model).train_step  # both players' step


def test_status_does_not_import_the_slurm_launcher(tmp_path, tiny_suite):
    results = tmp_path / "results"
    assert main(["run", str(tiny_suite), "--results", str(results), "--no-progress", "--models", "ae"]) == 0
    code = ("import sys; from aebench.cli import main; main(['status', sys.argv[1]]); "
            "assert 'aebench.launchers.slurm' not in sys.modules, 'slurm imported'")
    out = subprocess.run([sys.executable, "-c", code, str(results / "tiny")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "done" in out.stdout


def test_migrate_reads_the_previous_layout_without_retraining(tmp_path, capsys, mnist_root):
    """A job folder of the shipped results/mnist as the previous layout wrote it (tests/fixtures/legacy): refused
    until migrated, then up to date as it is, under the suite that produced it."""
    src = REPO / "tests" / "fixtures" / "legacy" / "mnist"
    old = sorted(p for p in src.iterdir() if (p / "config.json").exists())
    d = tmp_path / "results" / "mnist"
    d.mkdir(parents=True)
    for p in old:
        shutil.copytree(p, d / p.name)
    before = {json.loads((p / "config.json").read_text())["seed"]: json.loads((p / "metrics.json").read_text())
              ["values"] for p in old}
    args = ["run", str(REPO / "tests" / "fixtures" / "legacy" / "suite.yaml"), "--results", str(tmp_path / "results"),
            "--no-progress",
            "--models", "ae", "--seeds", "0", "--data-root", str(mnist_root)]
    assert main(args) == 2
    assert "aebench migrate" in capsys.readouterr().err
    assert main(["status", str(d)]) == 0 and "legacy" in capsys.readouterr().out
    assert main(["migrate", str(d)]) == 0
    assert main(args) == 0
    assert f"{len(old)} already done, 0 to run" in capsys.readouterr().err
    for p in (q for q in d.iterdir() if q.is_dir()):
        cfg = json.loads((p / "config.json").read_text())
        assert cfg["layout"] == 2 and p.name == Job.from_config(cfg).id
        assert json.loads((p / "metrics.json").read_text())["values"] == before[cfg["seed"]]


PLUGIN = '''
from dataclasses import dataclass

from aebench import MODELS
from aebench.models.base import Autoencoder, ModelConfig


@dataclass
class MyConfig(ModelConfig):
    weight: float = 0.1


@MODELS.register("my-ae", description="AE with an L2 penalty on the code")
class MyAE(Autoencoder):
    Config = MyConfig

    def loss(self, x):
        z = self.encode(x).mean
        rec = self.likelihood.nll(self.decode(z), x).mean()
        pen = z.pow(2).sum(1).mean()
        return {"loss": rec + self.config.weight * pen, "reconstruction": rec, "penalty": pen}
'''


def test_a_plugin_models_checkpoint_is_scored_and_shown_beside_the_built_ins(write_suite, tmp_path, capsys,
                                                                             clean_registry):
    import torch

    from aebench.models.base import build_model
    from aebench.plugins import load_plugins
    from aebench.report.leaderboard import build_leaderboard
    from aebench.store.table import collect

    plugin = tmp_path / "my_models.py"
    plugin.write_text(PLUGIN)
    results = tmp_path / "results"
    suite = write_suite(suite_text(models="[ae]", metrics="[recon, active_units]"))
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    load_plugins([str(plugin)])
    torch.manual_seed(3)
    net = build_model("my-ae", (1, 12, 12), 4, {}, "mlp", {"hidden": [32]})
    torch.save(net.state_dict(), tmp_path / "mine.pt")
    args = ["evaluate", str(suite), "--results", str(results), "--no-progress", "--plugin", str(plugin),
            "--checkpoint", str(tmp_path / "mine.pt"), "--model", "my-ae"]
    assert main(args) == 0
    rows = {r["label"]: r for r in collect(results / "tiny")}
    assert rows["my-ae-checkpoint"]["status"] == "done" and rows["my-ae-checkpoint"]["origin"] == "checkpoint"
    assert rows["my-ae-checkpoint"]["protocol"] == rows["ae"]["protocol"]
    # the weights scored are the ones given: the reconstruction error equals a direct computation
    from aebench.data import load

    test = load("synthetic", "test", None, False, {})
    x = test.floats().float()
    with torch.no_grad():
        mse = float((net.reconstruct(x) - x).pow(2).mean())
    assert rows["my-ae-checkpoint"]["recon/mse"] == pytest.approx(mse, rel=1e-4)
    board = build_leaderboard(results / "tiny", "recon/mse")
    assert len(board.sections) == 1
    assert any("my-ae-checkpoint (evaluated only: checkpoint)" == m for m in board.sections[0].rows["model"])
    assert main(args) == 0  # scoring the same weights again is a no-op
    assert "1 skipped" in capsys.readouterr().err
    from aebench.report import build_report

    files = build_report(results / "tiny", tmp_path / "report")
    assert "my-ae-checkpoint" in Path(files.markdown).read_text()


def test_a_pythae_folder_is_scored_with_every_metric_that_applies(write_suite, tmp_path):
    pytest.importorskip("pythae")
    import torch
    from pythae.models import AE, VAE, AEConfig, VAEConfig

    from aebench.data import load
    from aebench.store.table import collect

    train = load("synthetic", "train", None, False, {}).floats().float()
    results = tmp_path / "results"
    suite = write_suite(suite_text(models="[vae]", metrics="[recon, kl_w2, active_units]",
                                   eval="{n_samples: 50, samplers: [prior, gaussian]}"))
    for cls, cfg_cls, name in ((VAE, VAEConfig, "vae"), (AE, AEConfig, "ae")):
        torch.manual_seed(0)
        model = cls(cfg_cls(input_dim=(1, 12, 12), latent_dim=4))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for i in range(0, 256, 32):  # a few real training steps through pythae's own forward and loss
            out = model({"data": train[i : i + 32]})
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        model.save(str(tmp_path / f"pythae-{name}"))
        assert main(["evaluate", str(suite), "--results", str(results), "--no-progress",
                     "--pythae", str(tmp_path / f"pythae-{name}")]) == 0
        model.eval()
        rows = {r["label"]: r for r in collect(results / "tiny")}
        row = rows[f"pythae-{name}"]
        assert row["status"] == "done" and row["origin"] == "pythae"
        x = load("synthetic", "test", None, False, {}).floats().float()
        with torch.no_grad():
            rec = model.decoder(model.encoder(x).embedding).reconstruction
        assert row["recon/mse"] == pytest.approx(float((rec - x).pow(2).mean()), rel=1e-4)
        assert row["active_units/count"] >= 0 and row["kl_w2/w2"] > 0
    vae_dir = next((results / "tiny").glob("pythae-vae-*"))
    metrics = json.loads((vae_dir / "metrics.json").read_text())
    assert "kl_w2/sample_kl" in metrics["values"]  # the VAE's encoder variance is read
    assert (vae_dir / "pythae" / "model.pt").exists()  # the result stands alone


def test_a_samplers_new_version_recomputes_what_uses_its_samples(write_suite, monkeypatch):
    from aebench.registry import SAMPLERS

    suite = load_suite(write_suite(suite_text(metrics="[recon, sharpness]", eval="{samplers: [gmm]}")))
    job = suite.jobs()[0]
    before = {r.name: r.key for r in job.evaluation.requests(job.hash)}
    monkeypatch.setitem(SAMPLERS.meta("gmm"), "version", SAMPLERS.meta("gmm")["version"] + 1)
    after = {r.name: r.key for r in job.evaluation.requests(job.hash)}
    assert before["recon"] == after["recon"] and before["sharpness"] != after["sharpness"]
