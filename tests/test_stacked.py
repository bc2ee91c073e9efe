"""Stacked training: seeds, and trials of float hyperparameters or learning rates, trained as one stack equal
separately trained jobs (weights, curve, metrics), for every model the registry holds; a diverging member fails
alone; either kind of run resumes the other."""

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


# Models that stack their seeds but not trials of their float hyperparameters: their loss turns the value into
# a Python number (math.log, .item()), which a per-member value under vmap cannot be (the probe finds it).
TRIALS_NOT_STACKABLE = {
    "cv-vae": "log(sigma) by math.log, a fill value of torch.full_like",
    "poincare-vae": "the curvature enters as a Python number",
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


def _float_variant(name: str) -> dict | None:
    """TINY_PARAMS with every float hyperparameter of the model moved to another valid value (None: it has none)."""
    from dataclasses import asdict

    from aebench.models.base import model_config

    base = dict(TINY_PARAMS.get(name, {}))
    changed = {}
    for field, value in asdict(model_config(name, base)).items():
        if type(value) is not float:
            continue
        for new in (value * 0.8, value * 1.25, value + 0.1, 0.5):
            try:
                model_config(name, {**base, **changed, field: new})
            except Exception:  # noqa: BLE001 - out of the field's range: try the next
                continue
            changed[field] = new
            break
    return {**base, **changed} if changed else None


def _trial_jobs(write_suite, model: str, params: list[dict], seeds: str = "[0]", lrs: list | None = None, **train):
    entries = ", ".join(json.dumps({"name": model, "label": f"{model}-{i}", "params": p,
                                    **({"train": {"lr": lrs[i]}} if lrs else {})}) for i, p in enumerate(params))
    opts = {"epochs": 2, "batch_size": 48, **train}
    path = write_suite(suite_text(models=f"[{entries}]", seeds=seeds, data="{val: 32, train_limit: 136}",
                                  train=json.dumps(opts)), name=f"{model}-trials.yaml")
    return load_suite(path).jobs()


@pytest.mark.parametrize("name", [n for n in _eligible() if n not in NOT_STACKABLE and _float_variant(n)])
def test_every_stackable_model_stacks_trials_that_differ_in_float_hyperparameters(name, write_suite, tmp_path):
    jobs = _trial_jobs(write_suite, name, [TINY_PARAMS.get(name, {}), _float_variant(name)])
    assert len({stack_key(j) for j in jobs}) == 1
    stacked = RunSettings(results=tmp_path / "stacked", progress=False)
    log: list[str] = []
    trained = train_stack(jobs, stacked, log.append)
    if not trained:
        assert name in TRIALS_NOT_STACKABLE, f"{name}'s trials do not stack: {log}"
        assert "train one at a time" in log[-1]
        return
    assert name not in TRIALS_NOT_STACKABLE, f"{name}'s trials stack now: update TRIALS_NOT_STACKABLE"
    assert sorted(trained) == sorted(j.id for j in jobs)
    alone = _separate(jobs, tmp_path / "alone")
    for job in jobs:
        _assert_same(stacked, alone, job)
    a, b = (_weights(stacked, j) for j in jobs)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # started alike (seed 0): the hyperparameters mattered


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_trials_of_a_learning_rate_stack_with_a_rate_per_member(optimizer, write_suite, tmp_path):
    # three rates, one with another beta too; a cosine schedule and clipping act on each member's own rate
    jobs = _trial_jobs(write_suite, "beta-vae", [{"beta": 1.0}, {"beta": 1.0}, {"beta": 2.5}], seeds="[0, 1]",
                       lrs=[3e-3, 1e-3, 3e-4], optimizer=optimizer, schedule="cosine", grad_clip=5.0, epochs=3)
    assert len(jobs) == 6 and len({stack_key(j) for j in jobs}) == 1
    stacked = RunSettings(results=tmp_path / "stacked", progress=False)
    assert sorted(train_stack(jobs, stacked, lambda m: None)) == sorted(j.id for j in jobs)
    alone = _separate(jobs, tmp_path / "alone")
    for job in jobs:
        _assert_same(stacked, alone, job)
    decayed = _trial_jobs(write_suite, "vae", [{}, {}], lrs=[1e-3, 3e-3], weight_decay=1e-4)
    assert stack_key(decayed[0]) != stack_key(decayed[1])  # weight decay reads the weights: a stack per rate


def test_a_stack_swaps_float_hyperparameters_and_refuses_members_that_differ_in_anything_else():
    from dataclasses import dataclass

    from aebench.runner.stack_floats import MemberFloats, NotStackable

    @dataclass(frozen=True)
    class Config:
        beta: float
        k: int = 3

    class Toy(torch.nn.Module):
        def __init__(self, beta, k=3, extra=None, scale=1.0):
            super().__init__()
            self.lin, self.config, self.extra, self.scale = torch.nn.Linear(2, 2), Config(beta, k), extra or {}, scale

    cpu = torch.device("cpu")
    models = [Toy(0.5, scale=2.0), Toy(2.0, scale=2.0)]
    floats = MemberFloats(models, cpu)
    assert list(floats.values) == ["config.beta"] and floats.values["config.beta"].tolist() == [0.5, 2.0]
    with floats.swapped({"config.beta": torch.tensor(7.0)}):
        assert float(models[0].config.beta) == 7.0
    assert models[0].config.beta == 0.5 and type(models[0].config.beta) is float
    assert list(MemberFloats([Toy(1.0, scale=1.0), Toy(1.0, scale=3.0)], cpu).values) == ["scale"]
    with pytest.raises(NotStackable, match=r"differ in config\.k "):
        MemberFloats([Toy(0.5, 3), Toy(0.5, 4)], cpu)
    with pytest.raises(NotStackable, match=r"differ in extra\['w'\]"):  # a float the stack cannot swap
        MemberFloats([Toy(0.5, extra={"w": 1.0}), Toy(0.5, extra={"w": 2.0})], cpu)


def test_the_run_command_stacks_seeds_and_the_metrics_equal_separate_runs(write_suite, tmp_path, capsys):
    suite = write_suite(suite_text(models="[vae, dropout-ae]", seeds="[0, 1, 2]", data="{val: 32}",
                                   train="{epochs: 2, batch_size: 64, select: best, schedule: cosine, grad_clip: 0.5}",
                                   metrics="[recon, nll, active_units]"))
    assert main(["run", str(suite), "--results", str(tmp_path / "a"), "--no-progress", "--stack", "on"]) == 0
    err = capsys.readouterr().err
    assert "vae: seeds 0, 1, 2: training as one stack" in err
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


def test_a_search_trains_its_trials_as_one_stack_and_selects_what_separate_trials_select(write_suite, tmp_path,
                                                                                        capsys):
    suite = write_suite(suite_text(models="[{name: vae, search: {beta: {uniform: [0.5, 2.0]}}}]", seeds="[0, 1]",
                                   data="{val: 64}", tune="{trials: 3, seeds: [0], metric: recon/mse, seed: 7}",
                                   metrics="[recon]"))
    assert main(["run", str(suite), "--results", str(tmp_path / "a"), "--no-progress", "--stack", "on"]) == 0
    err = capsys.readouterr().err
    assert "vae: vae@t0 s0, vae@t1 s0, vae@t2 s0: training as one stack" in err  # trial 0: the default beta
    assert "vae: seeds 0, 1: training as one stack" in err  # then the selected point's seeds
    assert main(["run", str(suite), "--results", str(tmp_path / "b"), "--no-progress", "--no-stack"]) == 0
    a, b = (json.loads((tmp_path / r / "tiny" / "tuning.json").read_text()) for r in ("a", "b"))
    assert a["models"]["vae"]["selected"] == b["models"]["vae"]["selected"]
    for ta, tb in zip(a["models"]["vae"]["trials"], b["models"]["vae"]["trials"], strict=True):
        assert ta["mean"] == pytest.approx(tb["mean"], rel=1e-4)
    ra, rb = (pd.read_csv(tmp_path / r / "tiny" / "results.csv").set_index("job_id") for r in ("a", "b"))
    assert sorted(ra.index) == sorted(rb.index) and len(ra) == 5
    pd.testing.assert_series_equal(ra.loc[rb.index, "recon/mse"], rb["recon/mse"], rtol=1e-4, atol=1e-6)


def test_plan_groups_only_untrained_jobs_that_may_share_a_stack(write_suite, tmp_path):
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
    def key_with(*sets: str) -> str | None:
        return stack_key(load_suite(suite, overrides=["train.schedule=cosine", *sets]).jobs()[0])

    assert key_with("train.lr=0.01") == stack_key(jobs[0])  # a rate per member (Adam, no weight decay)
    assert key_with("train.epochs=2") != stack_key(jobs[0])
    assert key_with("train.lr=0.01", "train.weight_decay=0.001") != key_with("train.weight_decay=0.001")
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


@pytest.mark.parametrize("members", ["seeds", "rates"])
def test_a_stack_resumes_separate_jobs_and_separate_jobs_resume_a_stack(members, write_suite, tmp_path, monkeypatch):
    opts = {"epochs": 3, "schedule": "cosine", "select": "best"}
    jobs = _jobs(write_suite, "vae", **opts) if members == "seeds" else \
        _trial_jobs(write_suite, "vae", [{}, {"beta": 2.0}], lrs=[2e-3, 5e-4], **opts)
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


def test_slurm_submits_a_stack_group_as_one_task_where_its_tasks_get_gpus(write_suite, tmp_path):
    from aebench.launchers.slurm import SlurmLauncher

    suite = write_suite(suite_text(models="[vae, dropout-ae]", seeds="[0, 1, 2]", train="{epochs: 1}"))
    jobs = load_suite(suite).jobs()
    todo = list(range(len(jobs)))
    run = RunSettings(results=tmp_path, progress=False)  # --stack auto
    assert SlurmLauncher()._units(jobs, todo, run) == [[i] for i in todo]  # CPU tasks: one job each
    units = SlurmLauncher(gpus_per_job=1)._units(jobs, todo, run)
    vae = [i for i, j in enumerate(jobs) if j.model == "vae"]
    assert vae in units and sorted(i for u in units for i in u) == todo  # the seeds of vae in one task
    assert SlurmLauncher(gpus_per_job=1)._units(jobs, todo, RunSettings(results=tmp_path, stack="off")) == \
        [[i] for i in todo]
