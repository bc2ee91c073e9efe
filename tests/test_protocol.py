"""The fair protocol: a fixed validation split, selection of the best validation epoch, early stopping,
schedules, and a seeded random search with the same budget per model that never reads the test split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import suite_text

from aebench.cli import main
from aebench.data.base import ImageSet
from aebench.suite import load_suite

TUNED = dict(
    models="[{name: ae, search: {lr: {log_uniform: [0.0003, 0.01]}}}, "
           "{name: vae, params: {beta: 1.0}, search: {beta: {uniform: [0.5, 2.0]}}}]",
    data="{val: 64}",
    tune="{trials: 3, seeds: [0], metric: recon/mse, seed: 7}",
    seeds="[0, 1]",
)


def _images(n: int = 100) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet("toy", "train", torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8),
                    torch.arange(n))


def test_the_split_is_the_last_images_disjoint_and_the_same_for_every_job(write_suite, tmp_path):
    full = _images()
    train, val = full.split_off(30)
    assert len(train) == 70 and len(val) == 30
    assert set(train.labels.tolist()).isdisjoint(val.labels.tolist())
    assert torch.equal(torch.cat([train.images, val.images]), full.images)
    from aebench.runner.job import load_split
    from aebench.runner.settings import RunSettings

    suite = load_suite(write_suite(suite_text(data="{val: 100, train_limit: 50}", seeds="[0, 1]")))
    run = RunSettings(results=tmp_path)
    vals = [load_split(j, "val", run, torch.device("cpu")) for j in suite.jobs()]
    trains = [load_split(j, "train", run, torch.device("cpu")) for j in suite.jobs()]
    assert len({v.images.numpy().tobytes() for v in vals}) == 1 and len(vals[0]) == 100
    assert len(trains[0]) == 50
    train_rows = {r.numpy().tobytes() for r in trains[0].images}
    assert not any(r.numpy().tobytes() in train_rows for r in vals[0].images)


def test_mnist_holds_out_its_default_and_a_suite_may_say_otherwise(write_suite):
    assert load_suite(write_suite(suite_text(datasets="[mnist]"))).jobs()[0].val == 10_000
    assert load_suite(write_suite(suite_text(datasets="[mnist]", data="{val: 0}"))).jobs()[0].val == 0
    # a new option at its default does not change existing training ids
    assert load_suite(write_suite(suite_text())).jobs()[0].id == \
        load_suite(write_suite(suite_text(train="{epochs: 2, batch_size: 64, select: last}"))).jobs()[0].id


def _train(select: str, patience=None, schedule="none", epochs=5, lr=3e-3):
    from aebench.data import load
    from aebench.models.base import TrainSettings, build_model
    from aebench.runner.train import Selection, seed_everything, train

    full = load("synthetic", "train", None, False, {})
    tr, val = full.split_off(128)
    seed_everything(0)
    model = build_model("vae", tr.shape, 3, {}, "mlp", {"hidden": [16]})
    snapshots = {}

    def on_epoch(epoch, state):
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    state = train(model, tr, TrainSettings(lr=lr), epochs, 64, 0, torch.device("cpu"), on_epoch=on_epoch, val=val,
                  selection=Selection(select, patience, schedule, lr_patience=1))
    return model, state, snapshots, val


def test_select_best_returns_the_best_validation_epochs_weights():
    from aebench.runner.selection import validation_terms

    model, state, snapshots, val = _train("best", epochs=6, lr=0.05)  # a large step: the curve is not monotone
    losses = [row["val_loss"] for row in state.curve]
    best = 1 + min(range(len(losses)), key=losses.__getitem__)
    assert state.selector.best_epoch == best
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[best][k]), k
    # the selected weights score the best epoch's validation loss when evaluated afresh
    assert validation_terms(model, val, 64, 0, best, torch.device("cpu"))["val_loss"] == pytest.approx(min(losses))
    last, _, snaps, _ = _train("last", epochs=6, lr=0.05)
    assert all(torch.equal(v, snaps[6][k]) for k, v in last.state_dict().items())


def test_patience_stops_early_and_schedules_follow_their_closed_form():
    _, state, _, _ = _train("last", patience=1, epochs=30, lr=0.2)
    losses = [row["val_loss"] for row in state.curve]
    assert state.stopped_early and len(losses) < 30
    assert losses[-1] >= min(losses[:-1])  # it stopped after an epoch that did not improve
    _, cos, _, _ = _train("last", schedule="cosine", epochs=4, lr=1e-2)
    expected = [0 + 0.5 * 1e-2 * (1 + math.cos(math.pi * e / 4)) for e in range(1, 5)]
    assert [row["lr"] for row in cos.curve] == pytest.approx(expected)
    from aebench.runner.selection import make_schedulers, step_schedulers

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheds = make_schedulers([opt], "plateau", 10, factor=0.5, patience=1, min_lr=0.0)
    lrs = []
    for loss in (1.0, 0.9, 0.9, 0.95, 0.8, 0.8, 0.8):  # by hand: halve after more than 1 epoch without improving
        step_schedulers(scheds, loss)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_the_search_is_reproducible_and_trial_zero_is_the_entrys_own_parameters(write_suite):
    from aebench.tuning import trial_points

    space = {"beta": {"log_uniform": [0.1, 10]}, "lam": {"choice": [1, 10, 100]}, "lr": {"uniform": [1e-4, 1e-3]}}
    a, b = trial_points(space, 6, 3, "vae"), trial_points(space, 6, 3, "vae")
    assert a == b and a[0] == {} and len({json.dumps(p, sort_keys=True) for p in a[1:]}) == 5
    assert trial_points(space, 6, 4, "vae") != a
    for p in a[1:]:
        assert 0.1 <= p["beta"] <= 10 and p["lam"] in (1, 10, 100) and 1e-4 <= p["lr"] <= 1e-3
    suite = load_suite(write_suite(suite_text(**TUNED)))
    trials = suite.trial_jobs()
    assert len(trials) == 2 * 3  # the same budget for both entries: 3 trials x 1 tuning seed
    t0 = next(j for j in trials if j.label == "vae@t0")
    assert t0.params == {"beta": 1.0} and t0.train.lr == suite.train.lr and t0.evaluation.split == "val"
    assert suite.jobs() == []  # nothing final before a selection


def test_a_shorter_search_budget_and_only_the_selection_samplers(write_suite):
    """tune.epochs trains every trial for the same shorter budget; fid/gaussian fits and draws gaussian only."""
    text = suite_text(**{**TUNED, "tune": "{trials: 2, seeds: [0], metric: fid/gaussian, epochs: 1}"},
                      train="{epochs: 3, batch_size: 16}", eval="{samplers: [prior, gaussian, gmm], n_samples: 32}",
                      metrics="[recon, fid]")
    suite = load_suite(write_suite(text))
    trials = suite.trial_jobs()
    assert {j.train.epochs for j in trials} == {1} and suite.train.epochs == 3
    ev = trials[0].evaluation
    assert [s.name for s in ev.samplers] == ["gaussian"] and [m.name for m in ev.metrics] == ["fid"]
    assert [s.name for s in suite.evaluation().samplers] == ["prior", "gaussian", "gmm"]
    unshortened = load_suite(write_suite(text.replace(", epochs: 1}", "}"), "plain.yaml")).trial_jobs()
    assert {j.train.epochs for j in unshortened} == {3}
    assert unshortened[0].id != trials[0].id  # a different budget is a different training


def test_an_entry_sets_its_own_tuned_training_values_but_never_the_budget(write_suite):
    from aebench.errors import SuiteError

    models = "[{name: ae, train: {lr: 3e-3}}, {name: vae, train: {lr: 2e-3}, search: {beta: {uniform: [1, 2]}}}]"
    suite = load_suite(write_suite(suite_text(models=models, data="{val: 16}", tune="{trials: 2, metric: recon/mse}")))
    ae = suite.jobs()[0]
    assert ae.model == "ae" and ae.train.lr == 3e-3 and ae.train.epochs == suite.train.epochs
    assert {j.train.lr for j in suite.trial_jobs()} == {2e-3}  # trial 0 included: the entry's own value
    plain = load_suite(write_suite(suite_text(data="{val: 16}"), "plain.yaml")).jobs()[0]
    assert plain.model == "ae" and plain.id != ae.id
    assert plain.protocol == ae.protocol  # a tuned lr is the model's hyperparameter, not another protocol
    longer = load_suite(write_suite(suite_text(data="{val: 16}", train="{epochs: 9}"), "long.yaml")).jobs()[0]
    assert longer.protocol != plain.protocol  # the budget is the protocol's
    with pytest.raises(SuiteError, match=r"models\[0\]\.train\.epochs: unknown field.*budget is the suite's"):
        load_suite(write_suite(suite_text(models="[{name: ae, train: {epochs: 50}}]"), "e.yaml"))
    with pytest.raises(SuiteError, match=r"models\[0\]\.train"):
        load_suite(write_suite(suite_text(models="[{name: ae, train: {lr: fast}}]"), "f.yaml"))


def test_trials_are_distinct_points_and_a_small_space_gives_fewer_trials():
    """Training the same point twice buys nothing: a repeated draw is drawn again, and trial 0's own values
    count as drawn; continuous draws are the plain sequence (no draw repeats)."""
    from aebench.tuning import trial_points

    pts = trial_points({"m": {"choice": [50, 100, 500]}}, 3, 0, "vamp", given={"m": 100})
    assert pts[0] == {} and sorted(p["m"] for p in pts[1:]) == [50, 500]
    assert trial_points({"k": {"choice": [5, 10]}}, 4, 0, "iwae", given={"k": 5}) == [{}, {"k": 10}]
    space = {"lr": {"log_uniform": [1e-4, 1e-2]}}
    assert trial_points(space, 5, 1, "ae", given={"lr": 1e-3}) == trial_points(space, 5, 1, "ae")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[Path, dict]:
    """One tuned run (2 entries x 3 trials, then 2 seeds each), shared by the tests that read it."""
    root = tmp_path_factory.mktemp("tuned")
    suite = root / "suite.yaml"
    suite.write_text(suite_text(**TUNED))
    assert main(["run", str(suite), "--results", str(root / "r"), "--no-progress"]) == 0
    return root / "r" / "tiny", json.loads((root / "r" / "tiny" / "tuning.json").read_text())


def test_tuning_selects_on_val_then_trains_the_suites_seeds(tuned):
    d, record = tuned
    for label in ("ae", "vae"):
        r = record["models"][label]
        means = [t["mean"] for t in r["trials"]]
        assert r["selected"] == min(range(3), key=means.__getitem__) and r["complete"]
        finals = [json.loads((p / "config.json").read_text()) for p in d.iterdir()
                  if (p / "config.json").exists() and json.loads((p / "config.json").read_text())["label"] == label]
        assert sorted(c["seed"] for c in finals) == [0, 1]
        point = r["selected_point"]
        for c in finals:
            assert all(c["params"].get(k, c["train"].get(k)) == v for k, v in point.items())
    rows = [json.loads(p.read_text()) for p in d.glob("*@t*/metrics.json")] or \
        [json.loads((p / "metrics.json").read_text()) for p in d.iterdir()
         if (p / "config.json").exists() and "@t" in json.loads((p / "config.json").read_text())["label"]]
    assert rows and all(r["evaluation"]["plan"]["split"] == "val" for r in rows)
    curve = next(p for p in d.iterdir() if (p / "curve.csv").exists()) / "curve.csv"
    assert "val_loss" in curve.read_text().splitlines()[0]


POISON = '''
import os
from aebench import DATASETS
from aebench.data.synthetic import synthetic


def poisonable(root, split, download, **options):
    images, labels = synthetic(root, split, download)
    if split == "test" and os.environ.get("AEBENCH_POISON") == "1":
        images = 255 - images  # every test image inverted: any selection that read it would change
    return images, labels


poisonable.generated = True
DATASETS.register("poisonable", target=poisonable, description="synthetic, with a poisoned test split on demand")
'''


def test_selection_never_reads_the_test_split(write_suite, tmp_path, capsys, monkeypatch, clean_registry):
    plugin = tmp_path / "poison.py"
    plugin.write_text(POISON)
    records = []
    for poisoned in ("0", "1"):
        monkeypatch.setenv("AEBENCH_POISON", poisoned)
        monkeypatch.setenv("AEBENCH_CACHE", str(tmp_path / f"cache{poisoned}"))
        suite = write_suite(suite_text(**TUNED, datasets="[poisonable]", plugins=f"[{plugin}]"), f"s{poisoned}.yaml")
        assert main(["run", str(suite), "--results", str(tmp_path / f"r{poisoned}"), "--no-progress"]) == 0
        records.append(json.loads((tmp_path / f"r{poisoned}" / "tiny" / "tuning.json").read_text()))
    assert records[0]["models"] == records[1]["models"]
    clean, dirty = ({json.loads(p.read_text())["values"]["recon/mse"]
                     for p in (tmp_path / r / "tiny").glob("*-s1-*/metrics.json")} for r in ("r0", "r1"))
    assert clean and clean != dirty  # the final test metrics did see the poisoned test split


BOOM = '''
from dataclasses import dataclass

from aebench import MODELS
from aebench.models.ae import AE
from aebench.models.base import ModelConfig


@dataclass
class BoomConfig(ModelConfig):
    boom: float = 0.0  # above 0.5 the loss is infinite: the training diverges


@MODELS.register("boom-ae", description="an AE that diverges when boom > 0.5")
class BoomAE(AE):
    Config = BoomConfig

    def loss(self, x):
        terms = super().loss(x)
        return {**terms, "loss": terms["loss"] + (float("inf") if self.config.boom > 0.5 else 0.0)}
'''


def test_a_diverged_trial_loses_and_the_model_is_still_selected(write_suite, tmp_path, clean_registry):
    """A trial whose training diverges is an outcome of its point: it scores as the worst, not as missing."""
    (tmp_path / "boom.py").write_text(BOOM)
    suite = write_suite(suite_text(**{**TUNED, "models": "[{name: boom-ae, search: {boom: {choice: [0.8, 0.9]}}}]",
                                      "seeds": "[0]"}, plugins=f"[{tmp_path / 'boom.py'}]"))
    assert main(["run", str(suite), "--results", str(tmp_path / "r"), "--no-progress"]) == 1  # trials failed
    record = json.loads((tmp_path / "r" / "tiny" / "tuning.json").read_text())["models"]["boom-ae"]
    assert record["complete"] and record["selected"] == 0
    assert [("diverged" in t) for t in record["trials"]] == [False, True, True]
    assert "became inf" in record["trials"][1]["diverged"]
    finals = [p for p in (tmp_path / "r" / "tiny").glob("boom-ae-*") if (p / "done").exists()
              and json.loads((p / "config.json").read_text()).get("trial") is None]
    assert len(finals) == 1  # seed 0 with trial 0's point


def test_a_run_narrowed_by_models_keeps_the_other_entries_tuning_records(write_suite, tmp_path):
    suite = write_suite(suite_text(**{**TUNED, "tune": "{trials: 2, seeds: [0], metric: recon/mse, seed: 7}",
                                      "seeds": "[0]"}))
    results = tmp_path / "r"
    for models in ("ae", "vae"):
        assert main(["run", str(suite), "--results", str(results), "--no-progress", "--models", models]) == 0
    record = json.loads((results / "tiny" / "tuning.json").read_text())["models"]
    assert set(record) == {"ae", "vae"} and all(r["complete"] and r["selected"] is not None for r in record.values())
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0  # a full run: nothing new
    assert json.loads((results / "tiny" / "tuning.json").read_text())["models"] == record


def test_the_report_shows_the_search_every_trial_and_the_sensitivity(tuned, tmp_path):
    from aebench.report import build_report

    d, record = tuned
    files = build_report(d, tmp_path / "report")
    md = Path(files.markdown).read_text()
    assert "## Tuning" in md and "figures/sensitivity.png" in md and f"for {record['epochs']} epochs" in md
    for label, m in record["models"].items():
        assert f"**{label}**" in md and f"trial {m['selected']} selected" in md
    assert md.count("**selected**") == 2
    assert "@t" not in md.split("## Tuning")[0].split("## Comparison")[1].split("##")[0]  # trials are not ranked
