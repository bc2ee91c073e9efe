"""The contract every launcher must meet: the same jobs give the same results as ``local``, in the same layout.

Each registered launcher runs the same small suite; its job folders must hold the same metric values
(timings aside) as the in-process ``local`` run, and a second run must skip every job.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from conftest import suite_text

from aebench.registry import LAUNCHERS

# Every launcher and the options it is tested with; a launcher missing here fails test_every_launcher_is_tested.
CASES = {
    "local": {},
    "local-parallel": {"workers": 2, "threads": 1},
    "slurm": {"poll_seconds": 1, "time": 10, "cpus_per_job": 1},
}

# metrics and a test limit beyond the defaults: a launcher must hand its workers the suite's evaluation too
SUITE = suite_text(name="contract", seeds="[0, 1]", metrics="[recon, active_units]", data="{test_limit: 100}")


def metric_values(suite_dir: Path) -> dict[str, dict[str, float]]:
    """Each done job's metric values, without the cost/* timings (they differ from run to run)."""
    out = {}
    for d in sorted(p for p in suite_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        assert (d / "done").exists(), f"{d.name} is not done: {sorted(p.name for p in d.iterdir())}"
        values = json.loads((d / "metrics.json").read_text())["values"]
        out[d.name] = {k: v for k, v in values.items() if not k.startswith("cost/")}
    return out


def assert_same_values(got: dict[str, dict[str, float]], want: dict[str, dict[str, float]]) -> None:
    assert sorted(got) == sorted(want), "the launcher ran other jobs than local"
    for job, values in want.items():
        assert sorted(got[job]) == sorted(values), job
        for k, v in values.items():
            assert math.isclose(got[job][k], v, rel_tol=1e-9, abs_tol=1e-12), (job, k, got[job][k], v)


def run_with(launcher: str, options: dict, suite_path: Path, results: Path, data_root: str | None = None):
    """Run the suite through ``launcher`` as ``aebench run`` would, with every process on one thread."""
    import torch

    from aebench.runner.settings import RunSettings
    from aebench.runner.suite_runner import run_suite
    from aebench.suite import load_suite

    overrides = [f"launcher.name={launcher}", *(f"launcher.{k}={json.dumps(v)}" for k, v in options.items())]
    suite = load_suite(suite_path, overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers and Slurm tasks: same threads, same floating-point sums
    try:
        return run_suite(suite, RunSettings(results=results, device="cpu", progress=False, data_root=data_root))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def contract_suite(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("contract") / "contract.yaml"
    p.write_text(SUITE)
    return p


@pytest.fixture(scope="module")
def local_reference(contract_suite, tmp_path_factory) -> dict[str, dict[str, float]]:
    results = tmp_path_factory.mktemp("local-reference")
    outcomes = run_with("local", {}, contract_suite, results)
    assert [o.status for o in outcomes] == ["done"] * 4
    return metric_values(results / "contract")


def test_every_launcher_is_tested() -> None:
    assert sorted(LAUNCHERS.names()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_launcher_matches_local(name: str, request, contract_suite, local_reference, tmp_path) -> None:
    if name == "slurm":
        request.getfixturevalue("slurm_cluster")
    results = tmp_path / "results"
    outcomes = run_with(name, CASES[name], contract_suite, results)
    assert sorted(o.status for o in outcomes) == ["done"] * 4, [(o.label, o.status, o.reason) for o in outcomes]
    suite_dir = results / "contract"
    assert_same_values(metric_values(suite_dir), local_reference)
    rows = (suite_dir / "results.csv").read_text().splitlines()
    assert len(rows) == 5 and all(",done," in r for r in rows[1:])
    # resume works the same everywhere: nothing is run (or submitted) again
    again = run_with(name, CASES[name], contract_suite, results)
    assert [o.status for o in again] == ["skipped"] * 4


def test_parallel_pins_each_worker(monkeypatch) -> None:
    """One worker per GPU when there are GPUs (each sees only its own), N CPU workers sharing the cores otherwise."""
    from aebench.launchers.parallel import ParallelLauncher
    from aebench.runner.settings import RunSettings

    launcher = ParallelLauncher()
    monkeypatch.setattr(ParallelLauncher, "_gpus", lambda self, run: ["2", "5"])
    assert launcher.plan(RunSettings()) == (2, ["2", "5"], max(1, (os.cpu_count() or 1) // 2))
    assert ParallelLauncher(workers=3).plan(RunSettings())[1] == ["2", "5", "2"]
    monkeypatch.setattr(ParallelLauncher, "_gpus", lambda self, run: [])
    assert ParallelLauncher(workers=4, threads=1).plan(RunSettings(device="cpu")) == (4, [None] * 4, 1)
    assert ParallelLauncher().plan(RunSettings(device="cpu"))[:2] == (2, [None, None])


CRASH_PLUGIN = """\
import os
import signal

from aebench import MODELS
from aebench.models.ae import AE


@MODELS.register("crash-ae", description="kills its own process in the first training step (tests)")
class CrashAE(AE):
    def loss(self, x):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_parallel_survives_a_dying_worker(tmp_path, clean_registry) -> None:
    """A suite plugin's model resolves in the workers, and a worker killed mid-job fails only that job."""
    (tmp_path / "crash_plugin.py").write_text(CRASH_PLUGIN)
    suite = tmp_path / "crash.yaml"
    text = SUITE.replace("name: contract", "name: crash").replace("seeds: [0, 1]", "seeds: [0]")
    suite.write_text(text.replace("models: [ae, vae]", "models: [crash-ae, ae]") + "plugins: [crash_plugin.py]\n")
    outcomes = run_with("local-parallel", {"workers": 2, "threads": 1}, suite, tmp_path / "results")
    by_model = {}
    for o in outcomes:
        by_model.setdefault(o.job_id.split("-")[0], []).append(o)
    assert [o.status for o in by_model["ae"]] == ["done"]
    assert [o.status for o in by_model["crash"]] == ["failed"]
    assert all("worker process died (exit code -9)" in o.reason for o in by_model["crash"])
    crashed = tmp_path / "results" / "crash" / by_model["crash"][0].job_id
    assert not (crashed / "done").exists()
    assert "worker process died" in json.loads((crashed / "failed.json").read_text())["reason"]


def test_launcher_options_are_checked() -> None:
    from aebench.errors import SuiteError

    with pytest.raises(SuiteError, match="launcher.workers"):
        LAUNCHERS.get("local-parallel")(workers=0)
    with pytest.raises(SuiteError, match="launcher.partiton"):
        LAUNCHERS.get("slurm")(partiton="gpu")
    with pytest.raises(SuiteError, match="launcher.time"):
        LAUNCHERS.get("slurm")(time="1h")
    with pytest.raises(SuiteError, match="launcher.sbatch_options"):
        LAUNCHERS.get("slurm")(sbatch_options="--qos=high")


def test_slurm_options_become_sbatch_parameters() -> None:
    launcher = LAUNCHERS.get("slurm")(partition="gpu", time=120, gpus_per_job=1, cpus_per_job=8, mem_gb=32,
                                      array_parallelism=4, sbatch_options={"account": "lab", "qos": "high"})
    p = launcher.parameters("mnist")
    assert p["partition"] == "gpu" and p["time"] == 120 and p["gpus_per_node"] == 1 and p["cpus_per_task"] == 8
    assert p["mem"] == "32768M" and p["array_parallelism"] == 4 and p["job_name"] == "aebench-mnist"
    assert p["additional_parameters"] == {"account": "lab", "qos": "high"}
    assert "export OMP_NUM_THREADS=8" in p["setup"]
    assert "gpus_per_node" not in LAUNCHERS.get("slurm")().parameters("x")


def test_slurm_without_submitit_says_what_to_install(monkeypatch) -> None:
    import sys

    from aebench.errors import AebenchError
    from aebench.job import Job

    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    job = Job("s", "ae", "ae", {}, "synthetic", {}, 0)
    with pytest.raises(AebenchError, match=r"pip install 'aebench\[slurm\]'"):
        LAUNCHERS.get("slurm")().launch([job], None)


def test_set_launcher_option_keeps_a_launcher_given_by_name(write_suite) -> None:
    """`launcher: slurm` in the suite plus --set launcher.partition=gpu keeps the name (and vice versa)."""
    from aebench.suite import load_suite

    path = write_suite(SUITE + "launcher: slurm\n")
    suite = load_suite(path, ["launcher.partition=gpu", "launcher.wait=false"])
    assert suite.launcher.name == "slurm" and suite.launcher.options == {"partition": "gpu", "wait": False}


def test_no_wait_needs_a_scheduler(write_suite, tmp_path, capsys) -> None:
    from aebench.cli import main

    path = write_suite(SUITE)
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-wait"]) == 2
    assert "--no-wait needs a launcher that hands jobs to a scheduler" in capsys.readouterr().err
    assert not (tmp_path / "r" / "contract").exists() or not any((tmp_path / "r" / "contract").glob("*/done"))


def test_status_shows_the_slurm_job_of_unfinished_jobs(tmp_path, capsys) -> None:
    """`aebench status` reads the Slurm job id the launcher records in each job folder."""
    from aebench.cli import main
    from aebench.suite import load_suite

    suite_file = tmp_path / "contract.yaml"
    suite_file.write_text(SUITE)
    job = load_suite(suite_file).jobs()[0]
    d = tmp_path / "results" / "contract" / job.id
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(job.config()))
    (d / "slurm.json").write_text(json.dumps({"job_id": "4242_7"}))
    (d.parent / "launcher.json").write_text(json.dumps({"name": "slurm"}))  # run_suite records the launcher
    assert main(["status", str(tmp_path / "results" / "contract")]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if job.id in line)
    assert line.startswith("pending") and "slurm 4242_7" in line, out
    assert out.strip().endswith("1 pending")
