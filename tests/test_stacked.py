"""Stacked training: seeds trained as one stack equal separately trained jobs (weights, curve, metrics),
for every model the registry holds; a diverging member fails alone; either kind of run resumes the other."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import suite_text
from test_models import TINY_PARAMS

from aebench import faults
from aebench.cli import main
from aebench.models.base import Autoencoder
from aebench.registry import MODELS
from aebench.runner.job import run_after_stack, train_job
from aebench.runner.settings import RunSettings
from aebench.runner.stacked import plan_stacks, stack_key, train_stack
from aebench.store.jobdir import JobDir
from aebench.suite import load_suite

pytestmark = pytest.mark.usefixtures("one_thread")

# Models whose step replays exactly in a stack unless listed here with what stops it (the probe finds it).
NOT_STACKABLE = {
    "dropout-ae": "dropout draws inside the loss",
    "contractive-ae": "its penalty differentiates inside the loss (torch.autograd.grad)",
    "hvae": "its leapfrog steps differentiate inside the loss",
    "rhvae": "its leapfrog steps differentiate inside the loss",
    "rae-sn": "spectral normalisation's power iteration writes in place",
    "rbm": "its Gibbs chains draw Bernoulli units",
    "svae": "its von Mises-Fisher sampler is an autograd.Function without vmap support",
    "vq-vae": "its EMA codebook is a buffer updated in training",
}


def _eligible() -> list[str]:
    """Models whose class uses the base single-optimiser step (the others never stack)."""
    out = []
    for name in MODELS.names():
        cls = MODELS.get(name)
        if cls.train_step is Autoencoder.train_step and cls.configure_optimizers is Autoencoder.configure_optimizers:
            out.append(name)
    return out


def _jobs(write_suite, model: str, params: dict | None = None, **train):
    entry = json.dumps({"name": model, "params": params if params is not None else TINY_PARAMS.get(model, {})})
    opts = {"epochs": 2, "batch_size": 48, **train}
    path = write_suite(suite_text(models=f"[{entry}]", seeds="[0, 1]", data="{val: 32, train_limit: 136}",
                                  train=json.dumps(opts)), name=f"{model}.yaml")
    return load_suite(path).jobs()


def _separate(jobs, results):
    run = RunSettings(results=results, progress=False, stack="off")
    for job in jobs:
        jd = JobDir(run.suite_dir(job.suite) / job.id)
        jd.path.mkdir(parents=True, exist_ok=True)
        jd.write_json("config.json", job.config())  # as run_job does before training
        train_job(job, jd, run)
    return run


def _weights(run, job):
    return torch.load(run.suite_dir(job.suite) / job.id / "checkpoint.pt", weights_only=True)


def _assert_same(a_run, b_run, job, atol=1e-5):
    a, b = _weights(a_run, job), _weights(b_run, job)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=f"{job.label} seed {job.seed}: {k}")
    ca = pd.read_csv(a_run.suite_dir(job.suite) / job.id / "curve.csv").drop(columns="seconds")
    cb = pd.read_csv(b_run.suite_dir(job.suite) / job.id / "curve.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(ca, cb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", _eligible())
def test_every_stackable_model_trains_in_a_stack_exactly_as_alone(name, write_suite, tmp_path):
    jobs = _jobs(write_suite, name)
    stacked = RunSettings(results=tmp_path / "stacked", progress=False)
    log: list[str] = []
    trained = train_stack(jobs, stacked, log.append)
    if not trained:  # the probe refused it: nothing was written, and the one-at-a-time path takes over
        assert name in NOT_STACKABLE, f"{name} does not stack: {log}"
        assert "train one at a time" in log[-1]
        assert not any((stacked.suite_dir(j.suite) / j.id / "checkpoint.pt").exists() for j in jobs)
        return
    assert name not in NOT_STACKABLE or not NOT_STACKABLE[name], f"{name} stacks now: update NOT_STACKABLE"
    assert sorted(trained) == sorted(j.id for j in jobs)
    alone = _separate(jobs, tmp_path / "alone")
    for job in jobs:
        _assert_same(stacked, alone, job)
        prov = json.loads((stacked.suite_dir(job.suite) / job.id / "provenance.json").read_text())
        assert prov["stacked_with"] == [j.id for j in jobs if j is not job]


def test_the_run_command_stacks_seeds_and_the_metrics_equal_separate_runs(write_suite, tmp_path, capsys):
    suite = write_suite(suite_text(models="[vae, dropout-ae]", seeds="[0, 1, 2]", data="{val: 32}",
                                   train="{epochs: 2, batch_size: 64, select: best, schedule: cosine, grad_clip: 0.5}",
                                   metrics="[recon, nll, active_units]"))
    assert main(["run", str(suite), "--results", str(tmp_path / "a"), "--no-progress", "--stack", "on"]) == 0
    err = capsys.readouterr().err
    assert "vae: training seeds 0, 1, 2 as one stack" in err
    assert "dropout-ae: seeds 0, 1, 2 train one at a time" in err
    assert main(["run", str(suite), "--results", str(tmp_path / "b"), "--no-progress", "--no-stack"]) == 0
    a, b = (pd.read_csv(tmp_path / r / "tiny" / "results.csv").set_index("job_id") for r in ("a", "b"))
    cols = [c for c in a.columns if c.split("/")[0] in ("recon", "nll", "active_units") and a[c].dtype.kind == "f"]
    assert len(cols) >= 3
    pd.testing.assert_frame_equal(a.loc[b.index, cols], b[cols], rtol=1e-4, atol=1e-5)
    for d in (tmp_path / "a" / "tiny").iterdir():
        if d.is_dir():
            stacked = "stacked_with" in json.loads((d / "provenance.json").read_text())
            assert stacked == d.name.startswith("vae-")


def test_plan_groups_only_untrained_jobs_that_differ_in_their_seed(write_suite, tmp_path):
    suite = write_suite(suite_text(models="[ae, vae, {name: beta-vae, params: {beta: 2}}]", seeds="[0, 1]",
                                   data="{val: 32}", train="{epochs: 1, batch_size: 64, schedule: plateau}"))
    run = RunSettings(results=tmp_path, progress=False, stack="on")
    jobs = load_suite(suite).jobs()
    assert plan_stacks(jobs, run) == []  # a plateau schedule gives each member its own learning rate
    jobs = load_suite(suite, overrides=["train.schedule=cosine"]).jobs()
    groups = plan_stacks(jobs, run)
    assert plan_stacks(jobs, RunSettings(results=tmp_path, device="cpu")) == []  # auto: on a GPU only
    assert [[j.model for j in g] for g in groups] == [["ae", "ae"], ["vae", "vae"], ["beta-vae", "beta-vae"]]
    assert all({j.seed for j in g} == {0, 1} for g in groups)
    assert stack_key(jobs[0]) != stack_key(load_suite(suite, overrides=["train.schedule=cosine",
                                                                        "train.lr=0.01"]).jobs()[0])
    _separate(groups[0][:1], tmp_path)  # a trained job is not trained again: the other seed trains alone
    assert [[j.model for j in g] for g in plan_stacks(jobs, run)] == [["vae", "vae"], ["beta-vae", "beta-vae"]]


@pytest.fixture
def exploding(clean_registry):
    """An AE whose loss turns NaN when its first encoder weight exceeds a threshold: a member-dependent blow-up."""

    @MODELS.register("exploding-ae")
    class Exploding(Autoencoder):
        threshold = 0.0

        def loss(self, x):
            terms = super().loss(x)
            w = next(self.encoder.parameters()).flatten()[0]
            nan = torch.full_like(terms["loss"], float("nan"))
            bad = torch.where(w > self.threshold, nan, torch.zeros_like(nan))
            return {"loss": terms["loss"] + bad, "reconstruction": terms["reconstruction"]}

    return Exploding


def test_a_diverging_member_fails_alone_and_the_others_finish(exploding, write_suite, tmp_path):
    from aebench.runner.job import build_job_model
    from aebench.runner.train import seed_everything

    jobs = _jobs(write_suite, "exploding-ae", {})
    inits = []
    for job in jobs:
        seed_everything(job.seed)
        inits.append(float(next(build_job_model(job, (1, 12, 12), torch.device("cpu")).encoder.parameters())
                           .detach().flatten()[0]))
    assert inits[0] != inits[1]
    exploding.threshold = (inits[0] + inits[1]) / 2  # the member with the larger weight blows up at once
    bad, good = (jobs[0], jobs[1]) if inits[0] > inits[1] else (jobs[1], jobs[0])
    run = RunSettings(results=tmp_path / "stacked", progress=False)
    result = train_stack(jobs, run, lambda m: None)
    assert sorted(result) == sorted(j.id for j in jobs) and result[good.id] is None
    failed = JobDir(run.suite_dir(bad.suite) / bad.id)
    assert not failed.is_trained()
    record = json.loads((failed.path / "failed.json").read_text())
    assert record["kind"] == "diverged" and "became nan" in record["reason"]
    assert record["reason"] == result[bad.id] and record["stacked"] is True
    assert JobDir(run.suite_dir(good.suite) / good.id).is_trained()
    # the launchers do not train the diverged member again: it fails with the stack's reason, its record untouched
    before = (failed.path / "failed.json").read_bytes()
    outcome = run_after_stack(bad, run, result)
    assert (outcome.status, outcome.reason) == ("failed", result[bad.id])
    assert (failed.path / "failed.json").read_bytes() == before
    alone = _separate([good], tmp_path / "alone")
    _assert_same(run, alone, good)


def _interrupt_after(monkeypatch, n: int) -> None:
    """Raise Ctrl-C the n-th time a resume state is saved (as a kill would leave it, minus the process)."""
    seen = []

    def point(name: str) -> None:
        if name == "epoch_saved":
            seen.append(name)
            if len(seen) == n:
                raise KeyboardInterrupt

    monkeypatch.setattr(faults, "_PLAN", {})
    monkeypatch.setattr(faults, "point", point)


def test_a_stack_resumes_separate_jobs_and_separate_jobs_resume_a_stack(write_suite, tmp_path, monkeypatch):
    jobs = _jobs(write_suite, "vae", epochs=3, schedule="cosine", select="best")
    reference = _separate(jobs, tmp_path / "reference")
    # a stack stopped after its first epoch (both members saved), then each job goes on alone
    stacked = RunSettings(results=tmp_path / "stack-first", progress=False)
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_stack(jobs, stacked, lambda m: None)
    monkeypatch.undo()
    assert all((stacked.suite_dir(j.suite) / j.id / "resume.pt").exists() for j in jobs)
    _separate(jobs, stacked.results)
    # separate jobs stopped after their first epoch, then they go on as a stack
    alone_first = RunSettings(results=tmp_path / "alone-first", progress=False)
    for job in jobs:
        _interrupt_after(monkeypatch, 1)
        with pytest.raises(KeyboardInterrupt):
            _separate([job], alone_first.results)
        monkeypatch.undo()
    log: list[str] = []
    assert len(train_stack(jobs, alone_first, log.append)) == 2
    assert any("resuming from epoch 1" in m for m in log)
    for job in jobs:
        _assert_same(stacked, reference, job)
        _assert_same(alone_first, reference, job)


def test_local_parallel_hands_a_stack_group_to_one_worker(write_suite, tmp_path):
    suite = write_suite(suite_text(models="[vae, ae]", seeds="[0, 1]", train="{epochs: 1, batch_size: 64}",
                                   launcher="{name: local-parallel, workers: 2, threads: 1}"))
    assert main(["run", str(suite), "--results", str(tmp_path / "par"), "--no-progress", "--stack", "on"]) == 0
    local = write_suite(suite_text(models="[vae, ae]", seeds="[0, 1]", train="{epochs: 1, batch_size: 64}"),
                        name="local.yaml")
    assert main(["run", str(local), "--results", str(tmp_path / "one"), "--no-progress", "--no-stack"]) == 0
    for d in (tmp_path / "par" / "tiny").iterdir():
        if d.is_dir():
            prov = json.loads((d / "provenance.json").read_text())
            assert len(prov["stacked_with"]) == 1 and JobDir(d).is_done()
            _assert_same(RunSettings(results=tmp_path / "par"), RunSettings(results=tmp_path / "one"),
                         _job_of(d))


def _job_of(d):
    from aebench.job import Job

    return Job.from_config(json.loads((d / "config.json").read_text()))
