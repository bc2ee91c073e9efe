"""Kill a real ``aebench run`` with SIGKILL at many points, rerun, and get exactly the uninterrupted results.

Most kills are exact: ``AEBENCH_FAULT=<point>:<n>`` (see ``aebench.faults``) makes the run kill itself the
n-th time it passes a named point of training, evaluation or writing. A few more kills land at random
times. Points and counts are drawn from a seeded generator whose seed is printed (``AEBENCH_FAULT_SEED``
replays a run). After every kill the results folder must hold nothing false: each job it calls done has
exactly the reference results, nothing else claims to be done, ``results.csv`` parses. After each chain
of kills a clean rerun must finish with the reference results, files and folders, byte for byte where
they do not record time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import suite_text

from aebench.store.jobdir import JobDir
from aebench.store.table import collect

pytestmark = pytest.mark.slow

SUITE = suite_text(name="faults", latent_dim="3", backbone="{name: mlp, hidden: [16]}", seeds="[0, 1]",
                   train="{epochs: 3, batch_size: 32}", data="{train_limit: 128, test_limit: 64}",
                   eval="{n_samples: 64, batch_size: 64}")
N_JOBS, EPOCHS, STEPS = 4, 3, 4  # 128 training images in batches of 32

# How often a full run passes each point; a kill draws its count n from 1..max.
POINTS: dict[str, int] = {
    "job_start": N_JOBS,
    "train_step": N_JOBS * EPOCHS * STEPS,
    "epoch_end": N_JOBS * EPOCHS,
    "epoch_saved": N_JOBS * EPOCHS,
    "write:curve.csv": N_JOBS * EPOCHS,
    "write:resume.pt": N_JOBS * EPOCHS,
    "train_done": N_JOBS,
    "write:checkpoint.pt": N_JOBS,
    "eval_start": N_JOBS,
    "write:reconstructions.png": N_JOBS,
    "metrics_write": N_JOBS,
    "write:metrics.json": N_JOBS,
    "metrics_written": N_JOBS,
    "write:provenance.json": N_JOBS,
    "done_write": N_JOBS,
    "write:done": N_JOBS,
    "done_written": N_JOBS,
    "results_csv": 1,
    "write:results.csv": 1,
}
MIN_KILLS = 20  # exact kills; random-time kills come on top
RANDOM_TIME_KILLS = 3
KILLS_PER_CHAIN = 5


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AEBENCH_FAULT"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", **extra)
    return env


def _cmd(suite: Path, results: Path) -> list[str]:
    # Bit-for-bit equality holds job by job; a stack resumed after a kill may go on in another composition
    # (a member that finished leaves it), which agrees within float rounding: tests/test_stacked.py checks that.
    return [sys.executable, "-m", "aebench.cli", "run", str(suite), "--results", str(results), "--no-progress",
            "--device", "cpu", "--no-stack"]


def _run(suite: Path, results: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = _env(AEBENCH_FAULT=fault) if fault else _env()
    return subprocess.run(_cmd(suite, results), env=env, capture_output=True, text=True, timeout=300)


def _snapshot(suite_dir: Path) -> dict[str, dict]:
    """What must not depend on interruptions: per job, metric values (no timings), loss curve, weights."""
    out = {}
    for d in sorted(p for p in suite_dir.iterdir() if p.is_dir()):
        values = json.loads((d / "metrics.json").read_text())["values"]
        curve = list(csv.DictReader((d / "curve.csv").open()))
        out[d.name] = {
            "values": {k: v for k, v in values.items() if not k.startswith("cost/")},
            "curve": [{k: v for k, v in row.items() if k != "seconds"} for row in curve],
            "checkpoint": hashlib.sha256((d / "checkpoint.pt").read_bytes()).hexdigest(),
            "files": sorted(p.name for p in d.iterdir()),
        }
    return out


def _check_nothing_false(suite_dir: Path, reference: dict[str, dict], what: str) -> int:
    """After a kill: whatever claims to be done is exactly the reference; returns how many jobs are done."""
    if not suite_dir.exists():
        return 0
    assert {p.name for p in suite_dir.iterdir() if p.is_dir()} <= set(reference), what
    rows = collect(suite_dir)  # must not raise on anything a kill leaves
    # "trained": killed after training, before the evaluation was written (the rerun only evaluates)
    assert all(r["status"] in ("done", "trained", "pending") for r in rows), (what, rows)
    done = [r for r in rows if r["status"] == "done"]
    for r in done:
        got = json.loads((suite_dir / r["job_id"] / "metrics.json").read_text())["values"]
        assert {k: v for k, v in got.items() if not k.startswith("cost/")} == reference[r["job_id"]]["values"], what
    table = suite_dir / "results.csv"
    if table.exists():  # possibly from an earlier run, but never half-written
        lines = table.read_text().splitlines()
        rows_csv = list(csv.DictReader(lines))
        assert lines and lines[0].startswith("job_id,"), what
        for row in rows_csv:
            if row["status"] == "done":
                assert float(row["recon/mse"]) == reference[row["job_id"]]["values"]["recon/mse"], what
    return len(done)


def _check_complete(suite_dir: Path, reference: dict[str, dict], what: str) -> None:
    assert _snapshot(suite_dir) == reference, what
    leftovers = [p for p in suite_dir.rglob("*") if p.name.endswith(".tmp") or p.name == "resume.pt"]
    assert not leftovers, (what, leftovers)
    assert all(JobDir(suite_dir / j).is_done() for j in reference), what
    rows = list(csv.DictReader((suite_dir / "results.csv").open()))
    assert sorted(r["job_id"] for r in rows) == sorted(reference), what
    assert {r["status"] for r in rows} == {"done"}, what


def test_sigkill_anywhere_then_rerun_gives_the_uninterrupted_results(tmp_path: Path) -> None:
    seed = int(os.environ.get("AEBENCH_FAULT_SEED") or random.SystemRandom().randrange(2**31))
    print(f"fault-injection seed: {seed} (replay with AEBENCH_FAULT_SEED={seed})")
    rng = random.Random(seed)
    suite = tmp_path / "faults.yaml"
    suite.write_text(SUITE)

    t0 = time.monotonic()
    ref_proc = _run(suite, tmp_path / "reference")
    assert ref_proc.returncode == 0, ref_proc.stderr
    reference = _snapshot(tmp_path / "reference" / "faults")
    assert len(reference) == N_JOBS
    run_seconds = time.monotonic() - t0

    # every point at least once, then random ones, until enough kills landed
    plan = list(POINTS)
    rng.shuffle(plan)
    survived: list[str] = []
    missed: list[str] = []
    resumed = 0
    chain = 0
    while len(survived) < MIN_KILLS and chain < 12:
        chain += 1
        results = tmp_path / f"chain{chain}"
        suite_dir = results / "faults"
        for _ in range(KILLS_PER_CHAIN):
            point = plan.pop() if plan else rng.choice(list(POINTS))
            done = _check_nothing_false(suite_dir, reference, "before kill")
            left = max(1, round(POINTS[point] * (N_JOBS - done) / N_JOBS)) if POINTS[point] > 1 else 1
            fault = f"{point}:{rng.randint(1, left)}"
            proc = _run(suite, results, fault)
            resumed += proc.stderr.count("resuming from epoch")
            if proc.returncode == -signal.SIGKILL:
                survived.append(fault)
                _check_nothing_false(suite_dir, reference, f"after kill at {fault} (seed {seed})")
            else:  # the point was not reached: the run must simply have finished
                assert proc.returncode == 0, (fault, proc.stderr)
                missed.append(fault)
                plan.insert(0, point)  # try it again at the start of a later chain
                break
        final = _run(suite, results)
        assert final.returncode == 0, (survived[-KILLS_PER_CHAIN:], final.stderr)
        resumed += final.stderr.count("resuming from epoch")
        _check_complete(suite_dir, reference, f"after kills {survived[-KILLS_PER_CHAIN:]} (seed {seed})")

    # random-time kills on top, while the run is anywhere at all
    random_kills = 0
    results = tmp_path / "random-times"
    for _ in range(RANDOM_TIME_KILLS):
        proc = subprocess.Popen(_cmd(suite, results), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.25, 0.6) * run_seconds)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            random_kills += 1
        proc.wait(timeout=60)
        _check_nothing_false(results / "faults", reference, f"after a random-time kill (seed {seed})")
    final = _run(suite, results)
    assert final.returncode == 0, final.stderr
    _check_complete(results / "faults", reference, f"after random-time kills (seed {seed})")

    print(f"kill points survived: {len(survived)} exact + {random_kills} at random times "
          f"({len({f.rsplit(':', 1)[0] for f in survived})} kinds of point); not reached: {len(missed)}; "
          f"resumed trainings: {resumed}")
    assert len(survived) >= MIN_KILLS
    assert {f.rsplit(":", 1)[0] for f in survived} >= {"train_step", "epoch_saved", "metrics_write", "done_write"}
    assert resumed > 0  # kills in training resumed from the epoch checkpoint, not from scratch
