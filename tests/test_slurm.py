"""The slurm launcher against a real one-node Slurm cluster on 127.0.0.1 (tests/slurm/start.sh), on real MNIST.

The ``slurm_cluster`` fixture starts munged, slurmctld and slurmd for the session and stops them after;
the tests skip, saying why, where Slurm cannot run (and fail instead under AEBENCH_REQUIRE_SLURM=1).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_launchers import assert_same_values, metric_values, run_with

from aebench.cli import main

pytestmark = pytest.mark.slurm

SUITE = """\
version: 1
name: NAME
datasets: [mnist]
latent_dim: 4
backbone: {name: mlp, hidden: [32]}
models: MODELS
seeds: SEEDS
train: {epochs: EPOCHS, batch_size: 100}
data: {train_limit: LIMIT, test_limit: 200}
eval: {n_samples: 200, samplers: [prior, gaussian]}
metrics: [recon]
"""


# A model that takes at least 20 ms a step, so that a job runs long enough to be interrupted on any machine;
# being a plugin, it also shows that Slurm tasks import the suite's plugins.
SLOW_PLUGIN = """\
import time

from aebench import MODELS
from aebench.models.ae import AE


@MODELS.register("slow-ae", description="an AE that sleeps 20 ms a step (tests)")
class SlowAE(AE):
    def loss(self, x):
        time.sleep(0.02)
        return super().loss(x)
"""


def write(tmp_path: Path, name: str, models: str, seeds: str, epochs: int, limit: int) -> Path:
    p = tmp_path / f"{name}.yaml"
    text = (SUITE.replace("NAME", name).replace("MODELS", models).replace("SEEDS", seeds)
            .replace("EPOCHS", str(epochs)).replace("LIMIT", str(limit)))
    if "slow-ae" in models:
        (tmp_path / "slow_plugin.py").write_text(SLOW_PLUGIN)
        text += "plugins: [slow_plugin.py]\n"
    p.write_text(text)
    return p


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T", "-j", job_id], capture_output=True, text=True)
    return out.stdout.strip()


def epochs_in(curve: Path) -> list[int]:
    if not curve.exists():
        return []
    return [int(float(line.split(",")[0])) for line in curve.read_text().splitlines()[1:] if line]


def slurm_info(job_dir: Path) -> dict:
    return json.loads((job_dir / "slurm.json").read_text())


def test_mnist_suite_on_slurm_equals_local(slurm_cluster, mnist_root, tmp_path, capsys) -> None:
    """A small MNIST suite submitted as one job array gives the local launcher's results, in the same layout."""
    suite = write(tmp_path, "mnist-slurm", "[ae, vae]", "[0]", epochs=1, limit=2000)
    run_with("local", {}, suite, tmp_path / "local", data_root=str(mnist_root))
    want = metric_values(tmp_path / "local" / "mnist-slurm")

    results = tmp_path / "slurm"
    assert main(["run", str(suite), "--launcher", "slurm", "--set", "launcher.poll_seconds=1",
                 "--results", str(results), "--data-root", str(mnist_root), "--device", "cpu",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"submitted 2 jobs to Slurm as array \d+", err), err
    suite_dir = results / "mnist-slurm"
    assert_same_values(metric_values(suite_dir), want)
    for job_dir in (p for p in suite_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        info = slurm_info(job_dir)
        assert re.fullmatch(r"\d+_\d+", info["job_id"]) and Path(info["log"]).exists(), info
    assert (suite_dir / ".submitit").is_dir()
    rows = (suite_dir / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",done," in r for r in rows[1:])


def test_a_stack_group_runs_as_one_slurm_task_and_equals_separate_jobs(slurm_cluster, mnist_root, tmp_path,
                                                                        capsys) -> None:
    """With --stack on, a model's seeds train as one stack in one array task; each keeps its folder and results."""
    suite = write(tmp_path, "stack-slurm", "[vae]", "[0, 1]", epochs=1, limit=1000)
    run_with("local", {}, suite, tmp_path / "local", data_root=str(mnist_root))  # a CPU: one job at a time
    want = metric_values(tmp_path / "local" / "stack-slurm")
    results = tmp_path / "slurm"
    assert main(["run", str(suite), "--launcher", "slurm", "--set", "launcher.poll_seconds=1",
                 "--results", str(results), "--data-root", str(mnist_root), "--device", "cpu",
                 "--no-progress", "--stack", "on"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"submitted 2 jobs to Slurm as array \d+ \(1 tasks, 1 of them stacks\)", err), err
    got = metric_values(results / "stack-slurm")
    assert sorted(got) == sorted(want)
    for job, values in want.items():
        assert got[job] == pytest.approx(values, rel=1e-4, abs=1e-6), job
    dirs = sorted(p for p in (results / "stack-slurm").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len({slurm_info(d)["job_id"] for d in dirs}) == 1  # one array task ran both
    for d in dirs:
        prov = json.loads((d / "provenance.json").read_text())
        assert prov["stacked_with"] == [o.name for o in dirs if o != d]


def test_cancelled_job_is_finished_by_a_rerun(slurm_cluster, mnist_root, tmp_path, capsys) -> None:
    """scancel one of two running jobs: the rerun resubmits only that one, which continues from its last epoch;
    no result is lost or written twice. `aebench status` shows the Slurm job id of the running job."""
    epochs = 40  # of 10 steps: at least 8 s a job
    suite = write(tmp_path, "cancel", "[slow-ae]", "[0, 1]", epochs=epochs, limit=1000)
    results = tmp_path / "results"
    args = ["run", str(suite), "--launcher", "slurm", "--set", "launcher.poll_seconds=1", "--results", str(results),
            "--data-root", str(mnist_root), "--device", "cpu", "--no-progress"]
    assert main([*args, "--no-wait"]) == 0
    assert "2 submitted" in capsys.readouterr().err
    suite_dir = results / "cancel"
    keep, victim = sorted((p for p in suite_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                          key=lambda p: json.loads((p / "config.json").read_text())["seed"])
    victim_id = slurm_info(victim)["job_id"]
    wait_for(lambda: len(epochs_in(victim / "curve.csv")) >= 3, 120, "the job to train a few epochs")

    assert main(["status", str(suite_dir)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if victim.name in x)
    assert line.startswith("running") and f"[slurm {victim_id} RUNNING]" in line, line

    subprocess.run(["scancel", victim_id], check=True)
    wait_for(lambda: (keep / "done").exists(), 180, "the other job to finish")
    wait_for(lambda: squeue_state(victim_id) in ("", "CANCELLED"), 60, "the cancelled job to end")
    assert not (victim / "done").exists() and (victim / "resume.pt").exists()
    cancelled_at = len(epochs_in(victim / "curve.csv"))
    assert 0 < cancelled_at < epochs
    # rows up to the last saved epoch come back unchanged from resume.pt, timings included, if the job resumes
    before = (victim / "curve.csv").read_text().splitlines()[:cancelled_at]
    kept = {n: (keep / n).read_bytes() for n in ("done", "metrics.json", "checkpoint.pt")}
    kept_mtime = (keep / "metrics.json").stat().st_mtime_ns

    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 already done, 1 to run" in err and "submitted 1 jobs" in err, err
    assert (victim / "done").exists()
    assert slurm_info(victim)["job_id"] != victim_id
    assert epochs_in(victim / "curve.csv") == list(range(1, epochs + 1))  # each epoch once, none lost
    assert (victim / "curve.csv").read_text().splitlines()[:cancelled_at] == before  # continued, not restarted
    assert {n: (keep / n).read_bytes() for n in kept} == kept and (keep / "metrics.json").stat().st_mtime_ns \
        == kept_mtime
    rows = (suite_dir / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and len({r.split(",")[0] for r in rows}) == 2 and all(",done," in r for r in rows)


def test_preempted_job_is_requeued_and_resumes(slurm_cluster, mnist_root, tmp_path) -> None:
    """USR2 (what Slurm sends before a time limit or on preemption) makes submitit requeue the task, which
    continues from resume.pt; a waiting `aebench run` follows it through the requeue to the end."""
    epochs = 40
    suite = write(tmp_path, "preempt", "[slow-ae]", "[0]", epochs=epochs, limit=1000)
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aebench.cli", "run", str(suite), "--launcher", "slurm", "--set",
         "launcher.poll_seconds=1", "--results", str(results), "--data-root", str(mnist_root), "--device", "cpu",
         "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        suite_dir = results / "preempt"
        wait_for(lambda: any(suite_dir.glob("slow-ae-*/curve.csv")), 120, "the job to start training")
        job_dir = next(suite_dir.glob("slow-ae-*"))
        wait_for(lambda: len(epochs_in(job_dir / "curve.csv")) >= 3, 60, "a few epochs")
        job_id = slurm_info(job_dir)["job_id"]
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        wait_for(lambda: squeue_state(job_id) == "PENDING", 60, "the requeue")
        interrupted_at = len(epochs_in(job_dir / "curve.csv"))
        before = (job_dir / "curve.csv").read_text().splitlines()[:interrupted_at]
        assert not (job_dir / "failed.json").exists()  # an interruption, not a failure
        # Slurm holds a requeued job back for a while; release it now rather than wait
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "1 done" in out, out
    assert (job_dir / "done").exists() and not (job_dir / "failed.json").exists()
    info = slurm_info(job_dir)
    assert info["job_id"] == job_id and info["restarts"] == 1, info
    assert 0 < interrupted_at < epochs
    assert epochs_in(job_dir / "curve.csv") == list(range(1, epochs + 1))
    assert (job_dir / "curve.csv").read_text().splitlines()[:interrupted_at] == before  # resumed from resume.pt
