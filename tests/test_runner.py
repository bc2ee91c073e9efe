"""The runner end to end: results layout, skip and resume, failure isolation, real MNIST."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest
import torch

from aebench.cli import main
from aebench.store.jobdir import JobDir

LAYOUT = {"config.json", "metrics.json", "curve.csv", "checkpoint.pt", "provenance.json", "done",
          "reconstructions.png", "samples-prior.png", "samples-gaussian.png", "samples-epoch-first.png",
          "samples-epoch-last.png", "interpolation.png"}


def _run(*args: str) -> int:
    return main(["run", *args, "--no-progress"])


def _metric_values(suite_dir):
    out = {}
    for d in sorted(p for p in suite_dir.iterdir() if p.is_dir()):
        values = json.loads((d / "metrics.json").read_text())["values"]
        out[d.name] = {k: v for k, v in values.items() if not k.startswith("cost/")}
    return out


def test_run_writes_the_results_layout(tiny_suite, tmp_path, capsys):
    results = tmp_path / "results"
    assert _run(str(tiny_suite), "--results", str(results)) == 0
    suite_dir = results / "tiny"
    job_dirs = sorted(p for p in suite_dir.iterdir() if p.is_dir())
    assert len(job_dirs) == 2
    for d in job_dirs:
        assert LAYOUT <= {p.name for p in d.iterdir()}
        cfg = json.loads((d / "config.json").read_text())
        assert d.name.startswith(f"{cfg['model']}-synthetic-s0-")
        prov = json.loads((d / "provenance.json").read_text())
        assert {"versions", "git_commit", "device", "seed", "started", "finished", "train_seconds"} <= set(prov)
        curve = pd.read_csv(d / "curve.csv")
        assert list(curve["epoch"]) == [1, 2] and "loss" in curve and "reconstruction" in curve
        assert not (d / "resume.pt").exists()  # the epoch checkpoint goes once the job is done
    table = pd.read_csv(suite_dir / "results.csv")
    assert sorted(table["model"]) == ["ae", "vae"]
    assert set(table["status"]) == {"done"}
    assert (table["recon/mse"] > 0).all() and (table["recon/mse"] < 1).all()
    assert (suite_dir / "suite.yaml").read_text() == tiny_suite.read_text()
    assert "2 done" in capsys.readouterr().err


def test_rerun_trains_nothing_and_a_missing_marker_reruns_that_job_alone(tiny_suite, tmp_path, capsys):
    results = tmp_path / "results"
    assert _run(str(tiny_suite), "--results", str(results)) == 0
    suite_dir = results / "tiny"
    before = _metric_values(suite_dir)
    stamps = {d.name: (d / "metrics.json").stat().st_mtime_ns for d in suite_dir.iterdir() if d.is_dir()}
    capsys.readouterr()
    assert _run(str(tiny_suite), "--results", str(results)) == 0
    assert "2 already done, 0 to run" in capsys.readouterr().err
    assert stamps == {d.name: (d / "metrics.json").stat().st_mtime_ns for d in suite_dir.iterdir() if d.is_dir()}
    victim = sorted(stamps)[0]
    (suite_dir / victim / "done").unlink()
    assert _run(str(tiny_suite), "--results", str(results)) == 0
    assert "1 already done, 1 to run" in capsys.readouterr().err
    after = {d.name: (d / "metrics.json").stat().st_mtime_ns for d in suite_dir.iterdir() if d.is_dir()}
    assert after[victim] != stamps[victim]
    other = sorted(stamps)[1]
    assert after[other] == stamps[other]
    assert _metric_values(suite_dir) == before  # seeded: the rerun reproduces the result exactly


def test_a_failing_job_is_recorded_and_the_others_go_on(write_suite, tmp_path, capsys, clean_registry):
    (tmp_path / "nanplug.py").write_text(textwrap.dedent('''
        import torch
        from aebench import MODELS
        from aebench.models.ae import AE

        @MODELS.register("nan-ae", description="diverges at once")
        class NanAE(AE):
            def loss(self, x):
                terms = super().loss(x)
                bad = terms["loss"] * float("nan")
                return {"loss": bad, "reconstruction": bad}
    '''))
    suite = write_suite(textwrap.dedent("""\
        version: 1
        name: mixed
        plugins: [nanplug.py]
        datasets: [synthetic]
        latent_dim: 2
        backbone: {name: mlp, hidden: [16]}
        models: [nan-ae, ae]
        train: {epochs: 1, batch_size: 64}
        eval: {n_samples: 50}
    """))
    results = tmp_path / "results"
    assert _run(str(suite), "--results", str(results)) == 1
    err = capsys.readouterr().err
    assert "1 done, 1 failed" in err
    assert "FAILED nan-ae" in err and "became nan in epoch 1" in err
    table = pd.read_csv(results / "mixed" / "results.csv").set_index("model")
    assert table.loc["ae", "status"] == "done"
    assert table.loc["nan-ae", "status"] == "failed"
    assert "became nan" in table.loc["nan-ae", "reason"]


def test_validate_command_and_user_errors_exit_2(tiny_suite, write_suite, capsys):
    assert main(["validate", str(tiny_suite)]) == 0
    assert "ok: suite 'tiny', 2 model entries, 1 dataset(s), 1 seed(s), 2 jobs" in capsys.readouterr().out
    bad = write_suite(tiny_suite.read_text().replace("models: [ae, vae]", "models: [ae, vea]"), "bad.yaml")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aebench: error: {bad}: models[1].name: unknown model 'vea'; did you mean 'vae'")
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_ls_lists_every_registry_with_descriptions(capsys):
    for kind in ("models", "metrics", "datasets", "backbones", "samplers", "launchers"):
        assert main(["ls", kind]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines and all(len(line.split(None, 1)) == 2 for line in lines), kind
    main(["ls", "metrics"])
    assert "lower is better" in capsys.readouterr().out


def test_every_command_has_help_with_an_example(capsys):
    for cmd in ("run", "validate", "ls", "status"):
        with pytest.raises(SystemExit) as exit_:
            main([cmd, "--help"])
        assert exit_.value.code == 0
        assert "example: aebench" in capsys.readouterr().out


def test_end_to_end_on_real_mnist(mnist_root, write_suite, tmp_path):
    suite = write_suite(textwrap.dedent("""\
        version: 1
        name: mnist-e2e
        datasets: [mnist]
        latent_dim: 8
        backbone: {name: mlp, hidden: [128]}
        models: [ae, vae]
        train: {epochs: 3, batch_size: 64}
        data: {train_limit: 6000, test_limit: 1000}
        eval: {n_samples: 500}
        metrics: [recon]
    """))
    results = tmp_path / "results"
    assert _run(str(suite), "--results", str(results), "--data-root", str(mnist_root)) == 0
    table = pd.read_csv(results / "mnist-e2e" / "results.csv").set_index("model")
    # the reference: predicting every test digit by the mean training image
    from aebench.data import load

    train, test = load("mnist", "train", mnist_root), load("mnist", "test", mnist_root)
    assert (len(train), len(test)) == (60_000, 10_000)
    baseline = float((test.floats()[:1000] - train.floats()[:6000].mean(0)).pow(2).mean())
    assert table.loc["ae", "recon/mse"] < 0.75 * baseline
    assert table.loc["vae", "recon/mse"] < baseline
    jd = JobDir(next((results / "mnist-e2e").glob("ae-mnist-s0-*")))
    assert jd.is_done()


def test_strip_drops_checkpoints_and_the_jobs_stay_done(tiny_suite, tmp_path, capsys):
    results = tmp_path / "results"
    assert _run(str(tiny_suite), "--results", str(results)) == 0
    assert main(["strip", str(results / "tiny")]) == 0
    assert "removed 2 checkpoint(s)" in capsys.readouterr().out
    for d in (p for p in (results / "tiny").iterdir() if p.is_dir()):
        assert not (d / "checkpoint.pt").exists()
        assert JobDir(d).is_done()
        assert json.loads((d / "done").read_text())["stripped"] == ["checkpoint.pt"]
    assert _run(str(tiny_suite), "--results", str(results)) == 0
    assert "2 already done, 0 to run" in capsys.readouterr().err


def test_strip_images_keeps_only_the_grids_the_report_shows(write_suite, tmp_path, capsys):
    from conftest import suite_text

    suite = write_suite(suite_text(seeds="[0, 1]"))
    results = tmp_path / "results"
    assert _run(str(suite), "--results", str(results)) == 0
    dirs = [p for p in (results / "tiny").iterdir() if (p / "config.json").exists()]
    pngs = {d: sorted(p.name for p in d.glob("*.png")) for d in dirs}
    assert all(pngs.values())
    assert main(["strip", str(results / "tiny"), "--images"]) == 0
    seed = {d: json.loads((d / "config.json").read_text())["seed"] for d in dirs}
    removed = sum(len(v) for d, v in pngs.items() if seed[d] == 1)
    assert f"removed 4 checkpoint(s) and {removed} image(s)" in capsys.readouterr().out
    for d in dirs:
        assert sorted(p.name for p in d.glob("*.png")) == (pngs[d] if seed[d] == 0 else [])
        assert JobDir(d).is_done()
    assert _run(str(suite), "--results", str(results)) == 0
    assert "4 already done, 0 to run" in capsys.readouterr().err


def _raw(images) -> dict:
    """Example pixels as the previous version packed them: base64 of the raw bytes."""
    import base64

    return {"shape": list(images.shape), "uint8_b64": base64.b64encode(images.tobytes()).decode("ascii")}


def _old_job(d, seed: int):
    """A done job as the previous version left it: metrics.json repeating every record's details, and example
    pixels of memorisation (training images: a copying model) and completion as raw base64 in the records."""
    from test_report import make_job

    from aebench.data import load

    train = load("synthetic", "train", download=False).images.numpy()
    idx = list(range(8 * seed, 8 * seed + 8))
    samples = train[idx]
    masked = samples.copy()
    masked[:, :, 6:] = 0
    details = {"memorisation/examples_prior": {"samples": _raw(samples), "train_index": idx, "distance": [0.0] * 8},
               "memorisation/cells_prior": {"cells_used": 2, "z_u": [-1.5, 0.25], "test_share": [0.5, 0.5]},
               "memorisation/setup": {"threshold": 1.0},
               "completion/examples": {"index": list(range(8)), "truth": _raw(samples), "masked": _raw(masked),
                                       "masked_iterated": _raw(samples), "sp": _raw(255 - samples),
                                       "sp_onepass": _raw(samples)},
               "completion/setup": {"steps": 20}, "non_finite": ["completion/sp_mse_input"]}
    values = {"memorisation/copied_prior": 0.5, "memorisation/ct_prior": -1.0, "completion/masked_mse_onepass": 0.1,
              "completion/sp_mse_input": None}
    job = make_job(d, "ae", seed, values, details=details, metrics=[["memorisation", {}], ["completion", {}]])
    jd = JobDir(d / job.id)
    for r in job.evaluation.requests(job.hash):
        own = {k: v for k, v in details.items() if k.startswith(f"{r.name}/")}
        if r.name == "completion":
            own["non_finite"] = ["completion/sp_mse_input"]
        jd.write_record(r.name, r.key, {"values": {k: v for k, v in values.items() if k.startswith(f"{r.name}/")},
                                        "details": own, "not_applicable": None, "seconds": 1.0,
                                        "settings": r.settings, "depends": r.depends, "version": r.version})
    return job, jd, samples


def _files_bytes(jd) -> dict[str, bytes]:
    return {p.relative_to(jd.path).as_posix(): p.read_bytes() for p in sorted(jd.path.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def test_strip_migrates_old_details_compacts_example_pixels_and_the_report_still_shows_them(tmp_path, capsys):
    import numpy as np

    from aebench.metrics.pixels import unpack
    from aebench.report import build_report
    from aebench.store.jobdir import NON_FINITE

    d = tmp_path / "results" / "old"
    d.mkdir(parents=True)
    (job0, jd0, samples0), (job1, jd1, _), (_, busy, _), (_, unfinished, _) = (_old_job(d, s) for s in range(4))
    (unfinished / "done").unlink()  # not done: never rewritten
    before = {jd.path.name: _files_bytes(jd) for jd in (jd0, jd1, busy, unfinished)}
    size = {name: sum(len(b) for k, b in f.items() if k == "metrics.json" or k.startswith("eval/"))
            for name, f in before.items()}
    old_metrics = json.loads((jd0 / "metrics.json").read_text())
    assert jd0.details() == old_metrics["details"]  # an old metrics.json keeps loading, details and all

    holder = JobDir(busy.path)
    holder.lock()  # a live process holds this job: strip leaves it alone
    try:
        assert main(["strip", str(d), "--images"]) == 0
    finally:
        holder.unlock()
    out = capsys.readouterr().out
    # seeds 0 and 1 are done; seed 2 is locked and seed 3 unfinished, so the report shows seed 0 (lowest done)
    assert "rewrote 2 metrics.json without the records' details and 4 evaluation record(s)" in out
    assert "skipped 1 job(s) another aebench process is running" in out and busy.path.name in out
    assert _files_bytes(busy) == before[busy.path.name] and _files_bytes(unfinished) == before[unfinished.path.name]

    for jd, job in ((jd0, job0), (jd1, job1)):
        assert jd.is_done()  # the marker vouches for the new metrics.json
        met, old = json.loads((jd / "metrics.json").read_text()), json.loads(before[jd.path.name]["metrics.json"])
        assert met[NON_FINITE] == ["completion/sp_mse_input"]  # the one small summary kept beside the values
        assert {k: v for k, v in met.items() if k != NON_FINITE} == {k: v for k, v in old.items() if k != "details"}
        for r in job.evaluation.requests(job.hash):  # same keys: every record stays current, nothing re-evaluates
            rec = jd.read_record(r.name, r.key)
            assert rec is not None and rec["values"] == json.loads(before[jd.path.name][
                jd.record_path(r.name, r.key).relative_to(jd.path).as_posix()])["values"]
    # the shown job: the same pixels, as PNG, and its metrics and records at under half their former size
    details = jd0.details()
    ex = details["memorisation/examples_prior"]
    assert "png_b64" in ex["samples"] and np.array_equal(np.stack(unpack(ex["samples"])), samples0)
    assert ex["train_index"] == list(range(8)) and details["memorisation/setup"] == {"threshold": 1.0}
    rows = details["completion/examples"]
    assert np.array_equal(np.stack(unpack(rows["sp"])), 255 - samples0)
    assert details[NON_FINITE] == ["completion/sp_mse_input"]
    after = sum(len(b) for k, b in _files_bytes(jd0).items() if k == "metrics.json" or k.startswith("eval/"))
    assert after < 0.5 * size[jd0.path.name], (after, size[jd0.path.name])
    # the job the report does not show: no example pixels (indices kept), no grids
    ex1 = jd1.details()
    assert "samples" not in ex1["memorisation/examples_prior"] and ex1["memorisation/examples_prior"]["train_index"]
    assert set(ex1["completion/examples"]) == {"index"} and not list(jd1.path.glob("*.png"))

    # the report still shows the examples, read from the records
    files = build_report(d, tmp_path / "report")
    assert {"memorisation", "completion"} <= {f.name for f in files.report.figures}
    assert "figures/memorisation.png" in files.markdown.read_text() and not files.report.notes

    # again, once the job is free: that job alone is rewritten, the others are as they were
    now = _files_bytes(jd0)
    assert main(["strip", str(d), "--images"]) == 0
    out = capsys.readouterr().out
    assert "rewrote 1 metrics.json without the records' details and 2 evaluation record(s)" in out
    assert "skipped" not in out and _files_bytes(jd0) == now and busy.is_done()
    assert main(["strip", str(d), "--images"]) == 0
    assert "rewrote" not in capsys.readouterr().out


def test_a_strip_killed_while_swapping_metrics_json_is_completed_by_the_next(tmp_path, capsys):
    import os
    import subprocess
    import sys

    d = tmp_path / "results" / "old"
    d.mkdir(parents=True)
    _, jd, _ = _old_job(d, 0)
    env = {**os.environ, "AEBENCH_FAULT": "metrics_swap:1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "aebench.cli", "strip", str(d)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not jd.is_done() and "details" in json.loads((jd / "metrics.json").read_text())  # the marker went first
    assert main(["strip", str(d)]) == 0
    assert "completed 1 rewrite(s) an interrupted strip left" in capsys.readouterr().out
    assert jd.is_done() and "details" not in json.loads((jd / "metrics.json").read_text())
    assert not (jd / ".metrics.json.swap").exists()


def test_bf16_autocast_option_trains_and_is_part_of_the_job_hash(tiny_suite, tmp_path):
    """The GPU's mixed-precision path, exercised on the CPU (autocast supports bf16 there too)."""
    from aebench.suite import load_suite

    fp32 = load_suite(tiny_suite).jobs()
    bf16 = load_suite(tiny_suite, overrides=["train.precision=bf16"]).jobs()
    assert {j.id for j in fp32}.isdisjoint(j.id for j in bf16)
    results = tmp_path / "results"
    assert _run(str(tiny_suite), "--results", str(results), "--set", "train.precision=bf16") == 0
    table = pd.read_csv(results / "tiny" / "results.csv")
    assert set(table["status"]) == {"done"} and (table["recon/mse"] < 1).all()
    with pytest.raises(Exception, match="unknown precision 'fp8'; allowed: fp32, bf16"):
        load_suite(tiny_suite, overrides=["train.precision=fp8"])


def test_encoder_task_records_each_patterns_code(write_suite, tmp_path):
    suite = write_suite(textwrap.dedent("""\
        version: 1
        name: enc
        datasets: [{name: encoder, n: 8, latent_dim: 3}]
        backbone: {name: mlp, hidden: [], code_activation: sigmoid}
        models: [ae]
        train: {epochs: 300, batch_size: 8, lr: 0.1, checkpoint_every: 100}
        eval: {samplers: [prior], n_samples: 16, batch_size: 8}
        metrics: [recon, codes]
    """))
    results = tmp_path / "results"
    assert _run(str(suite), "--results", str(results)) == 0
    job = next((results / "enc").glob("ae-*"))
    metrics = json.loads((job / "metrics.json").read_text())
    assert "details" not in metrics  # the records hold them, read through the store
    details = JobDir(job).details()
    codes = details["codes/items"]
    assert details["codes/labels"] == list(range(8))
    assert len(codes) == 8 and all(len(c) == 3 and all(0 <= v <= 1 for v in c) for c in codes)
    # 300 full-batch Adam steps separate the 8 patterns: every pattern gets its own code
    assert len({tuple(round(v, 1) for v in c) for c in codes}) == 8
    assert metrics["values"]["recon/mse"] < 0.05


def test_grids_store_gray_images_as_one_channel_and_colour_as_rgb(tmp_path):
    """make_grid turns gray images into RGB; the PNG keeps one channel (a third of the size), pixels unchanged."""
    from PIL import Image
    from torchvision.utils import make_grid

    from aebench.runner.grids import save_grid

    g = torch.Generator().manual_seed(0)
    gray = torch.randint(0, 256, (12, 1, 8, 8), generator=g, dtype=torch.uint8)
    colour = torch.randint(0, 256, (12, 3, 8, 8), generator=g, dtype=torch.uint8)
    for images, mode in ((gray, "L"), (colour, "RGB")):
        with Image.open(save_grid(images, tmp_path / f"{mode}.png", nrow=4)) as im:
            assert im.mode == mode
            got = torch.from_numpy(__import__("numpy").array(im))
        want = make_grid(images.float() / 255, nrow=4, padding=2, pad_value=0.5).mul(255).round().to(torch.uint8)
        assert torch.equal(got, want[0] if mode == "L" else want.permute(1, 2, 0))
