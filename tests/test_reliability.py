"""Damaged files, divergence, locks, path traversal, full or read-only results folders, Ctrl-C.

Each damaged file is detected by checksum or parse, reported with its path (by ``status`` and by the
rerun), and its job is redone to exactly the results it had.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import suite_text

from aebench import faults
from aebench.cli import main
from aebench.errors import AebenchError
from aebench.registry import DATASETS, NAME_PATTERN, check_name
from aebench.store.atomic import atomic_write_text
from aebench.store.jobdir import JobDir
from aebench.store.table import collect, suite_lock, write_results_csv
from aebench.suite import load_suite

SUITE = suite_text(name="rel", latent_dim="3", backbone="{name: mlp, hidden: [16]}",
                   data="{train_limit: 192, test_limit: 64}", eval="{n_samples: 64}")


def _run(suite: Path, results: Path, *extra: str) -> int:
    return main(["run", str(suite), "--results", str(results), "--no-progress", "--device", "cpu", *extra])


def _values(suite_dir: Path) -> dict[str, dict[str, float]]:
    out = {}
    for d in sorted(p for p in suite_dir.iterdir() if p.is_dir()):
        values = json.loads((d / "metrics.json").read_text())["values"]
        out[d.name] = {k: v for k, v in values.items() if not k.startswith("cost/")}
    return out


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A finished results folder of the suite, and its metric values, copied by each test that damages it."""
    base = tmp_path_factory.mktemp("pristine")
    suite = base / "rel.yaml"
    suite.write_text(SUITE)
    assert _run(suite, base / "results") == 0
    return suite, base / "results", _values(base / "results" / "rel")


@pytest.fixture
def copy(pristine, tmp_path) -> tuple[Path, Path, dict]:
    suite, results, values = pristine
    shutil.copytree(results, tmp_path / "results")
    return suite, tmp_path / "results", values


# -- damaged result files -------------------------------------------------------------------------------
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _flip_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


def _flip_digit(p: Path) -> None:  # still valid JSON, a different number: only the checksum can tell
    text = p.read_text()
    i = next(i for i, c in enumerate(text) if c.isdigit() and i > text.index('"values"'))
    p.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:])


def _garbage_vouched_for(p: Path) -> None:  # hand-edited file, marker updated to match: only parsing tells
    p.write_text("{not json")
    marker = p.parent / "done"
    blob = json.loads(marker.read_text())
    from aebench.store.jobdir import sha256_file

    blob["sha256"][p.name] = sha256_file(p)
    marker.write_text(json.dumps(blob))


DAMAGES = [
    ("metrics.json", _truncate, "damaged {path} (checksum mismatch)"),
    ("metrics.json", _flip_digit, "damaged {path} (checksum mismatch)"),
    ("metrics.json", _garbage_vouched_for, "damaged {path} (not a JSON object)"),
    ("metrics.json", Path.unlink, "missing {path}"),
    ("checkpoint.pt", _truncate, "damaged {path} (checksum mismatch)"),
    ("checkpoint.pt", _flip_byte, "damaged {path} (checksum mismatch)"),
    ("checkpoint.pt", Path.unlink, "missing {path}"),
    ("config.json", _truncate, "damaged {path} (checksum mismatch)"),
    ("provenance.json", _flip_byte, "damaged {path} (checksum mismatch)"),
    ("curve.csv", _truncate, "damaged {path} (checksum mismatch)"),
    ("done", _truncate, "damaged done marker {path}"),
    ("done", lambda p: p.write_text('{"sha256": []}'), "damaged done marker {path}"),
]


@pytest.mark.parametrize(("name", "damage", "problem"), DAMAGES,
                         ids=[f"{n}-{d.__name__.strip('_')}" for n, d, _ in DAMAGES])
def test_a_damaged_result_file_is_reported_and_its_job_redone(name, damage, problem, copy, capsys):
    suite, results, reference = copy
    suite_dir = results / "rel"
    victim = sorted(reference)[1]
    path = suite_dir / victim / name
    damage(path)

    # status lists the job apart, with the file, and does not crash
    assert main(["status", str(suite_dir)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if victim in line)
    if name == "config.json":  # an unreadable config hides the job's identity, not its damage
        assert line.startswith("damaged") and f"unreadable {path}" in line, line
    else:
        assert line.startswith("damaged") and problem.format(path=path) in line, line
    assert "1 done, 1 damaged" in out
    rows = {r["job_id"]: r for r in collect(suite_dir)}
    assert rows[victim]["status"] == "damaged" and rows[sorted(reference)[0]]["status"] == "done"

    # the rerun says what it found and redoes that job alone, to the same results
    assert _run(suite, results) == 0
    err = capsys.readouterr().err
    assert f"{problem.format(path=path)}; redoing the job" in err, err
    assert "1 already done, 1 to run" in err
    assert _values(suite_dir) == reference
    assert JobDir(suite_dir / victim).is_done()


def test_report_and_leaderboard_list_damaged_jobs_apart_and_do_not_crash(copy, tmp_path, capsys):
    _, results, reference = copy
    suite_dir = results / "rel"
    first, second = sorted(reference)
    _truncate(suite_dir / first / "metrics.json")
    assert main(["leaderboard", str(suite_dir)]) == 0
    out = capsys.readouterr().out
    assert f"damaged  ae synthetic ({first}): damaged {first}/metrics.json (checksum mismatch)" in out, out
    assert main(["report", str(suite_dir), "--out", str(tmp_path / "report")]) == 0
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "1 done" in readme and "1 damaged" in readme
    assert f"| {first} | ae | synthetic |" in readme and "(checksum mismatch)" in readme
    (suite_dir / second / "config.json").write_text("garbage")  # nothing left to rank: a refusal, no crash
    assert main(["leaderboard", str(suite_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["report", str(suite_dir), "--out", str(tmp_path / "report2")]) == 0
    assert "2 damaged" in (tmp_path / "report2" / "README.md").read_text()


def _sigint_default() -> None:
    """Ctrl-C as a terminal delivers it. A shell that starts the tests in the background ignores SIGINT, and
    children inherit that: these tests would pass or fail by how pytest was launched."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_after_epoch_1(suite: Path, results: Path, monkeypatch) -> None:
    """Leave the second job stopped after its first epoch's resume state (Ctrl-C, in-process)."""
    monkeypatch.setenv("AEBENCH_FAULT", "epoch_saved:3:INT")  # job 1: epochs 1, 2; job 2: epoch 1
    faults.reload()
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert _run(suite, results) == 130
    finally:
        signal.signal(signal.SIGINT, before)
        monkeypatch.delenv("AEBENCH_FAULT")
        faults.reload()


RESUME_DAMAGES = [
    ("truncated", _truncate),
    ("garbage", lambda p: p.write_bytes(os.urandom(300))),
    ("another-model", None),  # the first job's final state: loads as a file, does not fit the model
]


@pytest.mark.parametrize(("kind", "damage"), RESUME_DAMAGES, ids=[k for k, _ in RESUME_DAMAGES])
def test_a_damaged_resume_state_is_reported_and_training_starts_afresh(kind, damage, pristine, tmp_path,
                                                                         monkeypatch, capsys):
    suite, _, reference = pristine
    results = tmp_path / "results"
    _interrupt_after_epoch_1(suite, results, monkeypatch)
    suite_dir = results / "rel"
    first, second = sorted(reference)  # ae before vae, in the suite's order
    resume = suite_dir / second / "resume.pt"
    assert resume.exists()
    if damage is None:
        from aebench.runner.train import TrainState, save_resume

        other = torch.nn.Linear(2, 2)
        save_resume(resume, other, [torch.optim.Adam(other.parameters())], TrainState(1, [], 0.0))  # type: ignore
    else:
        damage(resume)
    capsys.readouterr()
    assert _run(suite, results) == 0
    err = capsys.readouterr().err
    assert f"damaged resume state {resume} (" in err and "training from scratch" in err, err
    assert "resuming from epoch" not in err
    assert _values(suite_dir) == reference


def test_an_interrupted_job_resumes_from_its_epoch_checkpoint_with_identical_results(pristine, tmp_path,
                                                                                     monkeypatch, capsys):
    suite, _, reference = pristine
    results = tmp_path / "results"
    _interrupt_after_epoch_1(suite, results, monkeypatch)
    capsys.readouterr()
    assert _run(suite, results) == 0
    err = capsys.readouterr().err
    second = sorted(reference)[1]
    assert f"({second}): resuming from epoch 1 ({results / 'rel' / second / 'resume.pt'})" in err, err
    assert _values(results / "rel") == reference  # the VAE draws random numbers: RNG state was restored
    assert not list((results / "rel").rglob("resume.pt"))


@pytest.mark.parametrize("damage", [_truncate, _flip_byte, lambda p: p.write_bytes(b"junk")],
                         ids=["truncated", "flipped-byte", "garbage"])
def test_a_damaged_dataset_cache_is_reported_and_rebuilt(damage, tmp_path, monkeypatch, capsys, clean_registry):
    from aebench.data import load
    from aebench.data.base import _cache_path, data_root

    monkeypatch.setenv("AEBENCH_CACHE", str(tmp_path / "cache"))

    def bars(root, split, download):
        g = torch.Generator().manual_seed(3)
        return torch.randint(0, 256, (50, 1, 6, 6), dtype=torch.uint8, generator=g), torch.arange(50) % 5

    DATASETS.register("cached-bars", target=bars, description="a cached test set")
    first = load("cached-bars", "train", tmp_path / "data")
    cache = _cache_path(data_root(tmp_path / "data"), "cached-bars", "train")
    assert cache.exists() and capsys.readouterr().err == ""
    damage(cache)
    again = load("cached-bars", "train", tmp_path / "data")
    assert f"damaged dataset cache {cache} (" in capsys.readouterr().err
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    load("cached-bars", "train", tmp_path / "data")  # rebuilt: read silently from the cache again
    assert capsys.readouterr().err == ""


def test_checkpoints_and_caches_load_with_weights_only():
    """Every torch.load in aebench refuses pickled code: checkpoints and caches are data."""
    import ast

    root = Path(__file__).resolve().parents[1] / "aebench"
    calls = []
    for p in root.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                calls.append((f"{p.relative_to(root.parent)}:{node.lineno}", safe))
    assert calls
    assert [where for where, safe in calls if not safe] == []


# -- divergence ----------------------------------------------------------------------------------------
DIVERGING = textwrap.dedent('''
    import torch
    from aebench import MODELS
    from aebench.models.ae import AE


    @MODELS.register("inf-ae", description="its loss is infinite, its gradients fine")
    class InfAE(AE):
        def loss(self, x):
            terms = super().loss(x)
            return {**terms, "loss": terms["loss"] + float("inf")}


    @MODELS.register("drift-ae", description="a weight runs off to infinity while the loss looks fine")
    class DriftAE(AE):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.scale = torch.nn.Parameter(torch.ones(1))

        def train_step(self, x, optimizers, grad_clip=None):
            terms = super().train_step(x, optimizers, grad_clip)
            with torch.no_grad():
                self.scale.mul_(1e30)
            return terms


    @MODELS.register("host-oom-ae", description="runs out of host memory")
    class HostOOM(AE):
        def train_step(self, x, optimizers, grad_clip=None):
            raise MemoryError()


    @MODELS.register("cuda-oom-ae", description="runs out of GPU memory")
    class CudaOOM(AE):
        def train_step(self, x, optimizers, grad_clip=None):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
''')


def test_divergence_and_out_of_memory_fail_their_job_and_the_suite_goes_on(write_suite, tmp_path, capsys,
                                                                            clean_registry):
    (tmp_path / "diverging.py").write_text(DIVERGING)
    suite = write_suite(SUITE.replace("models: [ae, vae]", "models: [inf-ae, drift-ae, host-oom-ae, cuda-oom-ae, ae]")
                        .replace("name: rel", "name: diverge") + "plugins: [diverging.py]\n")
    results = tmp_path / "results"
    assert _run(suite, results) == 1
    err = capsys.readouterr().err
    assert "aebench: 1 done, 4 failed" in err
    oom = "out of memory: try a smaller train.batch_size or eval.batch_size (--set train.batch_size=64)"
    expected = {
        "inf-ae": "loss term 'loss' became inf in epoch 1; try a smaller learning rate or train.grad_clip",
        "drift-ae": "parameter 'scale' became NaN or infinite in epoch 1 (exploding gradients); "
                    "try a smaller learning rate or train.grad_clip",
        "host-oom-ae": oom,
        "cuda-oom-ae": oom,
    }
    rows = {r["model"]: r for r in collect(results / "diverge")}
    assert rows["ae"]["status"] == "done"
    for model, reason in expected.items():
        assert rows[model]["status"] == "failed" and rows[model]["reason"].startswith(reason), rows[model]
        line = next(line for line in err.splitlines() if line.startswith(f"  FAILED {model} "))
        assert reason in line
    # a failed job is tried again by the next run (and fails again, for the same reason)
    assert _run(suite, results) == 1
    assert "1 already done, 4 to run" in capsys.readouterr().err


def test_exploding_gradients_of_a_real_model_fail_with_the_reason(write_suite, tmp_path, capsys):
    suite = write_suite(SUITE.replace("models: [ae, vae]", "models: [ae]").replace(
        "train: {epochs: 2, batch_size: 64}", "train: {epochs: 2, batch_size: 64, optimizer: sgd, lr: 1.0e+12}"))
    assert _run(suite, tmp_path / "results") == 1
    err = capsys.readouterr().err
    assert "FAILED ae" in err and "(exploding gradients); try a smaller learning rate or train.grad_clip" in err


# -- two runs at once ----------------------------------------------------------------------------------
def test_a_job_locked_by_another_process_is_skipped_with_a_message(copy, tmp_path, capsys):
    suite, _, reference = copy
    results = tmp_path / "fresh"
    jobs = load_suite(suite).jobs()
    held = JobDir(results / "rel" / jobs[0].id)
    held.lock()
    held.write_json("config.json", jobs[0].config())  # what a running process has written
    try:
        assert main(["status", str(results / "rel")]) == 0
        assert capsys.readouterr().out.startswith("running ")
        assert _run(suite, results) == 1
        err = capsys.readouterr().err
        assert "aebench: 1 done, 1 locked" in err
        assert (f"  LOCKED {jobs[0].label} ({jobs[0].id}): {held.path}: another aebench process (pid {os.getpid()}) "
                "is running this job; skipped it, run again once that process has finished") in err
    finally:
        held.unlock()
    assert _run(suite, results) == 0
    assert "1 already done, 1 to run" in capsys.readouterr().err
    assert _values(results / "rel") == reference


def test_two_runs_at_once_on_one_results_folder_corrupt_nothing(tmp_path):
    suite = tmp_path / "rel.yaml"
    suite.write_text(SUITE.replace("seeds: [0]", "seeds: [0, 1]"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("AEBENCH_FAULT", None)

    def cmd(results: Path) -> list[str]:
        return [sys.executable, "-m", "aebench.cli", "run", str(suite), "--results", str(results), "--no-progress",
                "--device", "cpu"]

    reference = subprocess.run(cmd(tmp_path / "reference"), env=env, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    shared = tmp_path / "shared"
    procs = [subprocess.Popen(cmd(shared), env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[1] for p in procs]
    for p, err in zip(procs, outs):
        assert p.returncode in (0, 1), err
        assert "Traceback" not in err
        if p.returncode == 1:  # only ever because the other run held a job
            assert "locked" in err and "FAILED" not in err, err
            assert "is running this job; skipped it, run again once that process has finished" in err
    assert _values(shared / "rel") == _values(tmp_path / "reference" / "rel")
    assert not _temps(shared)
    assert {r["status"] for r in collect(shared / "rel")} == {"done"}
    third = subprocess.run(cmd(shared), env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "4 already done, 0 to run" in third.stderr


def test_results_csv_regeneration_waits_for_the_suite_lock(copy):
    _, results, _ = copy
    suite_dir = results / "rel"
    (suite_dir / "results.csv").unlink()
    with suite_lock(suite_dir):
        writer = threading.Thread(target=write_results_csv, args=(suite_dir,))
        writer.start()
        time.sleep(0.3)
        assert writer.is_alive() and not (suite_dir / "results.csv").exists()
    writer.join(timeout=30)
    assert (suite_dir / "results.csv").read_text().startswith("job_id,")


# -- names that would become paths ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", "../x", "a/b", "/etc", "a\\b", "", ".hidden", "x" * 65, "a..b", "a b",
                                  "~root", "$HOME", "a\nb", "nul\x00"])
def test_names_that_could_escape_a_folder_are_refused(name):
    with pytest.raises(AebenchError, match="invalid suite name"):
        check_name(name, "suite name")


def test_registered_names_and_job_folders_stay_inside_the_results_folder(pristine, clean_registry):
    suite, results, _ = pristine
    for registry_name in ("../evil", "a/b", "/abs"):
        with pytest.raises(AebenchError, match="invalid dataset name"):
            DATASETS.register(registry_name, target="x:y")
    for job in load_suite(suite).jobs():
        assert NAME_PATTERN.match(job.id) and ".." not in job.id
        assert (results / job.suite / job.id).resolve().parent == (results / "rel").resolve()


def test_set_cannot_rename_a_suite_out_of_its_folder(tiny_suite, capsys):
    assert main(["validate", str(tiny_suite), "--set", "name=../../etc"]) == 2
    assert "name: invalid suite name '../../etc'" in capsys.readouterr().err


# -- full disk, read-only folder -----------------------------------------------------------------------
def test_a_read_only_results_folder_is_refused_before_training(tiny_suite, tmp_path, monkeypatch, capsys):
    import aebench.store.atomic as atomic

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    results = tmp_path / "results"
    assert _run(tiny_suite, results) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"aebench: error: results folder {results / 'tiny'} is not writable (Read-only file system); "
                   "choose another with --results")
    assert [p for p in results.rglob("*") if p.is_file() and p.name != ".lock"] == []  # the lock file holds nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_without_write_permission_is_refused(tiny_suite, tmp_path, capsys):
    results = tmp_path / "results"
    (results / "tiny").mkdir(parents=True)
    (results / "tiny").chmod(0o555)
    try:
        assert _run(tiny_suite, results) == 2
        assert "is not writable (Permission denied); choose another with --results" in capsys.readouterr().err
    finally:
        (results / "tiny").chmod(0o755)


def test_too_little_free_space_is_refused_before_training(tiny_suite, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AEBENCH_MIN_FREE_MB", "1000000000000")
    results = tmp_path / "results"
    assert _run(tiny_suite, results) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aebench: error: results folder {results / 'tiny'} has only ")
    assert err.endswith(" MB free, at least 1000000000000 MB needed; free some space or choose another folder "
                        "with --results")
    assert [p for p in (results / "tiny").iterdir() if p.is_dir()] == []


def test_a_disk_that_fills_up_mid_run_stops_the_suite_and_leaves_no_partial_file(copy, tmp_path, monkeypatch,
                                                                                  capsys):
    import aebench.store.atomic as atomic

    suite, _, reference = copy
    results = tmp_path / "fresh"
    real_replace = os.replace
    full = {"on": True}

    def replace(src, dst):
        if full["on"] and Path(dst).name == "metrics.json" and "vae" in str(dst):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    assert _run(suite, results) == 2
    err = capsys.readouterr().err
    vae = next(j for j in load_suite(suite).jobs() if j.model == "vae")
    assert (f"aebench: error: cannot write {results / 'rel' / vae.id / 'metrics.json'} (No space left on device); "
            "free some space or choose another folder with --results, then run again: finished jobs are kept") in err
    assert "aebench: 1 of 2 jobs done, 0 failed, 1 not finished" in err
    assert not _temps(results)  # the temporary file of the failed write is gone
    assert not (results / "rel" / vae.id / "metrics.json").exists()
    assert not (results / "rel" / vae.id / "failed.json").exists()  # not the job's fault
    full["on"] = False
    assert _run(suite, results) == 0
    assert _values(results / "rel") == reference


def test_an_atomic_write_that_fails_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    def boom(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    from aebench.store.atomic import atomic_write

    with pytest.raises(OSError):
        atomic_write(target, boom)
    assert target.read_text() == "old" and not _temps(tmp_path)
    from aebench.store.atomic import _file_mode

    assert target.stat().st_mode & 0o777 == _file_mode()  # as open() would make it, not mkstemp's 0600


# -- Ctrl-C ----------------------------------------------------------------------------------------------
def test_ctrl_c_stops_cleanly_with_a_summary_and_the_rerun_goes_on(tmp_path):
    suite = tmp_path / "rel.yaml"
    suite.write_text(SUITE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AEBENCH_FAULT": "epoch_saved:3:INT"}
    cmd = [sys.executable, "-m", "aebench.cli", "run", str(suite), "--results", str(tmp_path / "results"),
           "--no-progress", "--device", "cpu"]
    stopped = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, preexec_fn=_sigint_default)
    assert stopped.returncode == 130, stopped.stderr
    err = stopped.stderr
    assert "Traceback" not in err
    assert "aebench: interrupted; finished jobs are kept, run the same command again to go on" in err
    assert "aebench: 1 of 2 jobs done, 0 failed, 1 not finished" in err
    assert "  done   ae (ae-synthetic-s0-" in err
    assert not _temps(tmp_path / "results")
    env.pop("AEBENCH_FAULT")
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "1 already done, 1 to run" in again.stderr and "resuming from epoch 1" in again.stderr
