"""Malformed suites and command lines, each refused with its exact one-line error and exit code 2.

Every case goes through the real command line (``aebench validate`` and ``aebench run``, in-process): the
error line must be ``aebench: error: <file>: <field>: <what is wrong; what is allowed>``, alone, with no
traceback, and nothing may train. Messages that list every registered name (which grow as parts are
added) are compared up to that list.
"""

from __future__ import annotations

import textwrap

import pytest

from aebench.cli import main

BASE = """\
version: 1
name: t
datasets: [synthetic]
latent_dim: 2
backbone: {name: mlp, hidden: [8]}
models: [ae]
train: {epochs: 1, batch_size: 64}
eval: {n_samples: 20}
"""

PLUGINS = {
    "boom.py": "x = 1\nraise RuntimeError('kaputt')\n",
    "syntax.py": "def f(:\n    pass\n",
    "dup.py": "from aebench import MODELS\nMODELS.register('ae', target='x:y')\n",
    "badname.py": "from aebench import MODELS\nMODELS.register('../evil', target='x:y')\n",
    "labelmetric.py": textwrap.dedent("""\
        from aebench import METRICS

        def needs_labels(ctx):
            return {}

        METRICS.register("needs-labels", target=needs_labels, needs=("labels",), direction="max")
    """),
}


def edit(**changes: str | None) -> str:
    """BASE with top-level lines replaced (None removes the line, a new key is appended)."""
    lines = BASE.splitlines()
    out = []
    for line in lines:
        key = line.split(":", 1)[0]
        if key in changes:
            value = changes.pop(key)
            if value is not None:
                out.append(f"{key}: {value}")
        else:
            out.append(line)
    out += [f"{k}: {v}" for k, v in changes.items() if v is not None]
    return "\n".join(out) + "\n"


# (id, suite text, expected message after "<file>: ", whether the message only starts so)
CASES: list[tuple[str, str, str, bool]] = [
    # malformed YAML and suites that are not mappings
    ("yaml-tab", "version: 1\nname: t\n\tmodels: [ae]\n",
     "malformed YAML at line 3, column 1: found character '\\t' that cannot start any token", False),
    ("yaml-unclosed-list", "version: 1\nmodels: [ae\n",
     "malformed YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'", False),
    ("yaml-duplicate-key", BASE + "models: [vae]\n",
     "malformed YAML at line 9, column 1: key 'models' given twice; keep one", False),
    ("yaml-python-object-tag", BASE.replace("name: t", "name: !!python/object/apply:os.system ['echo pwned']"),
     "malformed YAML at line 2, column 7: tag '!!python/object/apply:os.system' is not allowed, a suite is data; "
     "allowed: plain mappings, lists, strings, numbers, true/false, null", False),
    ("yaml-python-name-tag", BASE.replace("models: [ae]", "models: [!!python/name:os.system ae]"),
     "malformed YAML at line 6, column 10: tag '!!python/name:os.system' is not allowed, a suite is data; "
     "allowed: plain mappings, lists, strings, numbers, true/false, null", False),
    ("suite-is-a-list", "- ae\n- vae\n", "a suite must be a mapping of sections, got list", False),
    ("suite-is-empty", "", "a suite must be a mapping of sections, got NoneType", False),
    # unknown keys
    ("unknown-section", BASE + "epochz: 3\n",
     "epochz: unknown field; allowed: version, name, description, datasets, dataset, backbone, latent_dim, "
     "likelihood, models, seeds, train, data, eval, metrics, plugins, launcher, tune", False),
    ("unknown-train-key", edit(train="{epoch: 3}"),
     "train.epoch: unknown field; did you mean 'epochs'? allowed: epochs, batch_size, optimizer, lr, weight_decay, "
     "grad_clip, checkpoint_every, precision, compile, select, patience, schedule, lr_factor, lr_patience, min_lr",
     False),
    ("unknown-eval-key", edit(eval="{n: 5}"), "eval.n: unknown field; allowed: samplers, n_samples, batch_size, "
     "split", False),
    # the fair protocol's settings
    ("select-best-without-val", edit(train="{select: best}"),
     "train.select: needs a validation split, but dataset 'synthetic' has none; set data.val > 0", False),
    ("unknown-schedule", edit(train="{schedule: step}"),
     "train.schedule: unknown schedule 'step'; allowed: none, plateau, cosine", False),
    ("bad-search-distribution", edit(models="[{name: vae, search: {beta: {normal: [0, 1]}}}]"),
     "models[0].search.beta: expected one of {log_uniform: ..., uniform: ..., int_uniform: ..., choice: ...}, got "
     "{'normal': [0, 1]}", False),
    ("bad-search-range", edit(models="[{name: vae, search: {beta: {log_uniform: [0, 1]}}}]"),
     "models[0].search.beta.log_uniform: expected [low, high] with low < high and low > 0, got [0, 1]", False),
    ("search-param-out-of-range", edit(models="[{name: vae, search: {beta: {uniform: [-2, -1]}}}]",
                                       tune="{trials: 2}", data="{val: 10}"),
     "models[0].search (trial 1): beta must be >= 0", True),
    ("tune-metric-without-direction", edit(models="[{name: vae, search: {beta: {uniform: [1, 2]}}}]",
                                           tune="{trials: 2, metric: active_units/count}", data="{val: 10}"),
     "tune.metric: 'active_units/count' has no registered direction (which way is better); choose a key such as "
     "recon/mse or fid/gmm", False),
    ("tune-without-val", edit(models="[{name: vae, search: {beta: {uniform: [1, 2]}}}]", tune="{trials: 2}"),
     "data.val: tuning selects on the validation split, but dataset 'synthetic' has none; set data.val > 0", False),
    ("unknown-model-key", edit(models="[{name: vae, lr: 2}]"),
     "models[0].lr: unknown field; allowed: name, params, grid, label, search, train", False),
    ("unknown-model-param", edit(models="[{name: vae, params: {betta: 2}}]"),
     "models[0].params.betta: unknown field; did you mean 'beta'? allowed: beta", True),
    ("unknown-backbone-option", edit(backbone="{name: mlp, depth: 3}"),
     "backbone.depth: unknown option of backbone 'mlp'; allowed: ", True),
    ("unknown-metric-setting", edit(metrics="[{name: recon, k: 3}]"),
     "metrics[0].k: unknown setting of metric 'recon'; allowed: none", False),
    ("unknown-launcher-option", edit(launcher="{name: local, cpus: 3}"),
     "launcher.cpus: unknown setting of launcher 'local'; allowed: none", False),
    # versions and required sections
    ("no-version", edit(version=None), "version: missing; add 'version: 1'", False),
    ("wrong-version", edit(version="2"), "version: unsupported version 2; allowed: 1", False),
    ("no-datasets", edit(datasets=None),
     "datasets: missing: name at least one dataset (see `aebench ls datasets`)", False),
    ("empty-model-list", edit(models="[]"),
     "models: empty: list at least one model (see `aebench ls models`)", False),
    ("no-models", edit(models=None), "models: empty: list at least one model (see `aebench ls models`)", False),
    ("model-without-name", edit(models="[{params: {beta: 2}}]"),
     "models[0].name: missing (a registered model name is required, see `aebench ls models`)", False),
    ("dataset-and-datasets", BASE + "dataset: mnist\n",
     "dataset: give either 'dataset' or 'datasets', not both", False),
    # wrong types
    ("epochs-a-word", edit(train="{epochs: three}"), "train.epochs: expected an integer, got str 'three'", False),
    ("epochs-a-fraction", edit(train="{epochs: 2.5}"), "train.epochs: expected an integer, got float 2.5", False),
    ("epochs-a-boolean", edit(train="{epochs: true}"), "train.epochs: expected an integer, got bool True", False),
    ("lr-a-word", edit(train="{lr: fast}"), "train.lr: expected a number, got str 'fast'", False),
    ("lr-not-a-number", edit(train="{lr: .nan}"), "train.lr: expected a finite number, got nan", False),
    ("train-a-list", edit(train="[1, 2]"), "train: expected a mapping, got list [1, 2]", False),
    ("models-a-number", edit(models="3"), "models: expected a list, got int", False),
    ("dataset-a-number", edit(datasets="[3]"),
     "datasets[0]: expected a name or a mapping with 'name', got int", False),
    ("model-param-a-word", edit(models="[{name: vae, params: {beta: high}}]"),
     "models[0].params.beta: expected a number, got str 'high'", False),
    ("latent-dim-a-word", edit(latent_dim="big"), "latent_dim: expected an integer, got str 'big'", False),
    ("seed-a-word", BASE + "seeds: [a]\n", "seeds[0]: expected an integer, got str 'a'", False),
    ("name-a-number", edit(name="5"), "name: expected a string, got int", False),
    ("plugins-a-number", BASE + "plugins: 3\n", "plugins: expected a list, got int 3", False),
    ("grid-a-scalar", edit(models="[{name: vae, grid: {beta: 2}}]"),
     "models[0].grid.beta: expected a non-empty list of values", False),
    # negative or zero sizes
    ("epochs-zero", edit(train="{epochs: 0}"), "train.epochs: must be > 0, got 0", False),
    ("epochs-negative", edit(train="{epochs: -1}"), "train.epochs: must be > 0, got -1", False),
    ("batch-size-zero", edit(train="{batch_size: 0}"), "train.batch_size: must be > 0, got 0", False),
    ("lr-negative", edit(train="{lr: -0.1}"), "train.lr: must be > 0, got -0.1", False),
    ("weight-decay-negative", edit(train="{weight_decay: -1}"), "train.weight_decay: must be >= 0, got -1.0",
     False),
    ("grad-clip-zero", edit(train="{grad_clip: 0}"), "train.grad_clip: must be > 0 or null, got 0.0", False),
    ("checkpoint-every-zero", edit(train="{checkpoint_every: 0}"), "train.checkpoint_every: must be > 0, got 0",
     False),
    ("latent-dim-zero", edit(latent_dim="0"), "latent_dim: must be > 0, got 0", False),
    ("n-samples-zero", edit(eval="{n_samples: 0}"), "eval.n_samples: must be > 0, got 0", False),
    ("train-limit-negative", BASE + "data: {train_limit: -5}\n", "data.train_limit: must be > 0, got -5", False),
    ("seeds-empty", BASE + "seeds: []\n", "seeds: empty: list at least one seed", False),
    ("seeds-negative", BASE + "seeds: [-1]\n", "seeds: seeds must be distinct integers >= 0, got [-1]", False),
    ("seeds-repeated", BASE + "seeds: [1, 1]\n", "seeds: seeds must be distinct integers >= 0, got [1, 1]", False),
    ("grid-empty", edit(models="[{name: vae, grid: {beta: []}}]"),
     "models[0].grid.beta: expected a non-empty list of values", False),
    # unknown registry names
    ("unknown-model", edit(models="[vea]"), "models[0].name: unknown model 'vea'; did you mean 'vae'", True),
    ("unknown-dataset", edit(datasets="[mnits]"),
     "datasets[0].name: unknown dataset 'mnits'; did you mean 'mnist'", True),
    ("unknown-metric", edit(metrics="[recno]"), "metrics[0].name: unknown metric 'recno'; did you mean 'recon'",
     True),
    ("unknown-backbone", edit(backbone="resnet999"), "backbone.name: unknown backbone 'resnet999'", True),
    ("unknown-sampler", edit(eval="{samplers: [flow]}"), "eval.samplers[0].name: unknown sampler 'flow'", True),
    ("unknown-launcher", edit(launcher="lcoal"), "launcher.name: unknown launcher 'lcoal'; did you mean 'local'",
     True),
    ("unknown-likelihood", edit(likelihood="poisson"), "likelihood.name: unknown likelihood 'poisson'", True),
    ("unknown-optimizer", edit(train="{optimizer: adamx}"),
     "train.optimizer: unknown optimizer 'adamx'; allowed: adam, adamw, rmsprop, sgd", True),
    ("model-listed-twice", edit(models="[ae, ae]"),
     "models: model 'ae' listed twice; give one entry a 'label' or use 'grid'", False),
    ("metric-listed-twice", edit(metrics="[recon, recon]"), "metrics: metric 'recon' listed twice", False),
    # typed settings of metrics, samplers, launchers and likelihoods: refused before anything trains
    ("metric-setting-wrong-type", edit(metrics="[{name: fid, n_samples: banana}]"),
     "metrics[0].n_samples: expected an integer, got str 'banana'", False),
    ("metric-setting-bad-value", edit(metrics="[{name: fid, n_samples: 1}]"),
     "metrics[0].n_samples: must be >= 2, got 1", False),
    ("metric-bool-setting-wrong-type", edit(metrics="[{name: fid, kid: maybe}]"),
     "metrics[0].kid: expected true or false, got str 'maybe'", False),
    ("metric-unknown-extractor", edit(metrics="[{name: fid, extractor: vgg}]"),
     "metrics[0].extractor: unknown extractor 'vgg'; allowed: auto, ", True),
    ("metric-weights-file-missing", edit(metrics="[{name: fid, feature_extractor_weights_path: /nope/w.pth}]"),
     "metrics[0].feature_extractor_weights_path: '/nope/w.pth' is not a file", False),
    ("metric-setting-of-a-function-metric-wrong-type", edit(metrics="[{name: nll, k: many}]"),
     "metrics[0].k: expected an integer, got str 'many'", False),
    ("sampler-unknown-option", edit(eval="{samplers: [{name: gmm, comps: 3}]}"),
     "eval.samplers[0].comps: unknown setting of sampler 'gmm'; did you mean 'components'? allowed: components, seed, "
     "max_iter, max_fit", False),
    ("sampler-option-wrong-type", edit(eval="{samplers: [{name: gmm, components: ten}]}"),
     "eval.samplers[0].components: expected an integer, got str 'ten'", False),
    ("sampler-option-bad-value", edit(eval="{samplers: [{name: gmm, components: 0}]}"),
     "eval.samplers[0]: components must be >= 1, got 0", False),
    ("sampler-listed-twice", edit(eval="{samplers: [prior, prior]}"),
     "eval.samplers: sampler 'prior' listed twice (its results are keyed by its name)", False),
    ("launcher-option-wrong-type", edit(launcher="{name: local-parallel, workers: two}"),
     "launcher.workers: expected an integer, got str 'two'", False),
    ("launcher-unknown-option-with-a-close-one", edit(launcher="{name: local-parallel, worker: 2}"),
     "launcher.worker: unknown setting of launcher 'local-parallel'; did you mean 'workers'? allowed: workers, "
     "threads", False),
    ("slurm-option-wrong-type", edit(launcher="{name: slurm, time: soon}"),
     "launcher.time: expected an integer, got str 'soon'", False),
    ("likelihood-unknown-option", edit(likelihood="{name: gaussian, sigmaa: 0.1}"),
     "likelihood.sigmaa: unknown setting of likelihood 'gaussian'; did you mean 'sigma'? allowed: sigma", False),
    ("likelihood-option-wrong-type", edit(likelihood="{name: gaussian, sigma: wide}"),
     "likelihood.sigma: expected a number, got str 'wide'", False),
    # names that would become paths
    ("name-with-dotdot", edit(name="../evil"),
     "name: invalid suite name '../evil': use letters, digits, '_', '-', '.', '+' (at most 64, no '..')", False),
    ("name-with-separator", edit(name="a/b"),
     "name: invalid suite name 'a/b': use letters, digits, '_', '-', '.', '+' (at most 64, no '..')", False),
    ("name-absolute", edit(name="/etc"),
     "name: invalid suite name '/etc': use letters, digits, '_', '-', '.', '+' (at most 64, no '..')", False),
    ("label-with-dotdot", edit(models="[{name: ae, label: ../x}]"),
     "models[0].label: invalid label '../x': use letters, digits, '_', '-', '.', '+' (at most 64, no '..')", False),
    # a dataset without the labels a metric needs
    ("metric-needs-labels", edit(datasets="[celeba]", metrics="[recon, needs-labels]", plugins="[labelmetric.py]"),
     "metrics[1].name: metric 'needs-labels' needs class labels, but dataset 'celeba' (datasets[0]) has none; "
     "allowed: labelled datasets, or drop the metric (`aebench ls metrics` shows what each needs)", False),
    # plugins that fail to import
    ("plugin-missing", BASE + "plugins: [nope.py]\n", "plugins: plugin 'nope.py': no such file (", True),
    ("plugin-raises", BASE + "plugins: [boom.py]\n",
     "plugins: plugin 'boom.py' failed to import (RuntimeError: kaputt, at boom.py:2)", False),
    ("plugin-syntax-error", BASE + "plugins: [syntax.py]\n",
     "plugins: plugin 'syntax.py' failed to import (SyntaxError: invalid syntax, at syntax.py:1)", False),
    ("plugin-module-missing", BASE + "plugins: [no_such_module_xyz]\n",
     "plugins: plugin 'no_such_module_xyz' failed to import (ModuleNotFoundError: No module named "
     "'no_such_module_xyz')", False),
    ("plugin-takes-a-builtin-name", BASE + "plugins: [dup.py]\n",
     "plugins: plugin 'dup.py': model 'ae' is already registered (by aebench.models.ae); choose another name",
     False),
    ("plugin-path-name", BASE + "plugins: [badname.py]\n",
     "plugins: plugin 'badname.py': invalid model name '../evil': use letters, digits, '_', '-', '.', '+' "
     "(at most 64, no '..')", False),
]


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert len(err.splitlines()) == 1, err
    assert err.startswith("aebench: error: "), err
    return err[len("aebench: error: "):]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(("text", "expected", "prefix"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_suite_is_refused_with_its_message(text, expected, prefix, command, tmp_path, capsys,
                                                    clean_registry):
    for name, code in PLUGINS.items():
        (tmp_path / name).write_text(code)
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    results = tmp_path / "results"
    extra = ["--results", str(results), "--no-progress"] if command == "run" else []
    assert main([command, str(suite), *extra]) == 2
    message = _one_error_line(capsys)
    want = f"{suite}: {expected}"
    assert message.startswith(want) if prefix else message == want, f"\n got: {message}\nwant: {want}"
    assert not results.exists()  # refused before anything was written, let alone trained


def test_the_table_holds_at_least_30_distinct_cases():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    assert len({c[1] for c in CASES}) == len(CASES)


def test_debug_shows_the_traceback(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(edit(train="{epochs: 0}"))
    from aebench.errors import SuiteError

    with pytest.raises(SuiteError, match="train.epochs: must be > 0"):
        main(["validate", str(suite), "--debug"])


# -- command-line mistakes: the option is the field ---------------------------------------------------
@pytest.mark.parametrize(("args", "expected"), [
    (["--set", "train.epochs=0"], "{suite}: train.epochs: must be > 0, got 0"),
    (["--set", "train.epochs"], "--set 'train.epochs': expected key.path=value"),
    (["--set", "models.5.name=vae"], "--set models.5.name=vae: models.5 is not an index of a 1-item list"),
    (["--models", "vea"], "{suite}: --models: unknown model 'vea'; did you mean 'vae'"),
    (["--seeds", "7"], "{suite}: seeds: --seeds 7 is not a seed of the suite; allowed: 0"),
    (["--plugin", "{tmp}/boom.py"],
     "--plugin: plugin '{tmp}/boom.py' failed to import (RuntimeError: kaputt, at boom.py:2)"),
])
def test_bad_command_line_options_are_refused(args, expected, tmp_path, capsys, clean_registry):
    (tmp_path / "boom.py").write_text(PLUGINS["boom.py"])
    suite = tmp_path / "suite.yaml"
    suite.write_text(BASE)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["validate", str(suite), *args]) == 2
    assert _one_error_line(capsys).startswith(expected.format(suite=suite, tmp=tmp_path))


def test_missing_suite_file_and_unreadable_bytes(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2
    assert _one_error_line(capsys) == f"{tmp_path / 'absent.yaml'}: no such suite file"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert main(["validate", str(binary)]) == 2
    assert _one_error_line(capsys).startswith(f"{binary}: cannot read (UnicodeDecodeError: ")


def test_missing_data_root_is_refused_before_training_naming_the_dataset_field(tmp_path, capsys):
    empty = tmp_path / "no-data"
    empty.mkdir()
    suite = tmp_path / "suite.yaml"
    suite.write_text(edit(datasets="[synthetic, mnist]"))
    results = tmp_path / "results"
    code = main(["run", str(suite), "--results", str(results), "--data-root", str(empty), "--no-download",
                 "--no-progress"])
    assert code == 2
    message = _one_error_line(capsys)
    assert message.startswith(f"{suite}: datasets[1]: dataset 'mnist' not found under data root {empty} "
                              "and could not be downloaded ("), message
    assert message.endswith("; set --data-root or AEBENCH_DATA")
    assert [p.name for p in (results / "t").iterdir() if p.is_dir()] == []  # not even the synthetic job ran


def test_a_failing_dataset_plugin_is_refused_before_training(tmp_path, capsys, clean_registry):
    (tmp_path / "baddata.py").write_text(textwrap.dedent("""\
        from aebench import DATASETS

        def broken(root, split, download):
            raise OSError(f"cannot open {root}/broken.bin")

        DATASETS.register("broken-data", target=broken)
    """))
    suite = tmp_path / "suite.yaml"
    suite.write_text(edit(datasets="[broken-data]", plugins="[baddata.py]"))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 2
    message = _one_error_line(capsys)
    assert message.startswith(f"{suite}: datasets[0]: dataset 'broken-data' (train split) failed to load "
                              "(OSError: cannot open "), message
    assert [p.name for p in (results / "t").iterdir() if p.is_dir()] == []


# -- scoring outside models: the option is the field, the message names the file ------------------------------
def _state_dict_of(model: str, path, **params) -> None:
    import torch

    from aebench.models.base import build_model

    torch.save(build_model(model, (1, 12, 12), 2, params, "mlp", {"hidden": [8]}).state_dict(), path)


@pytest.mark.parametrize(("args", "expected"), [
    (["--checkpoint", "{tmp}/vae.pt", "--model", "ae"], "--checkpoint {tmp}/vae.pt: does not fit model 'ae' "
     "(backbone mlp, latent 2, images (1, 12, 12)): "),
    (["--checkpoint", "{tmp}/text.pt", "--model", "ae"], "--checkpoint {tmp}/text.pt: not a PyTorch state dict "
     "saved with torch.save ("),
    (["--checkpoint", "{tmp}/none.pt", "--model", "ae"], "--checkpoint {tmp}/none.pt: no such file"),
    (["--checkpoint", "{tmp}/vae.pt"], "--checkpoint needs --model NAME: the registered model the weights belong to"),
    (["--checkpoint", "{tmp}/vae.pt", "--model", "vea"], "--model: unknown model 'vea'; did you mean 'vae'"),
    (["--model", "ae"], "--model names the model of --checkpoint FILE; add --checkpoint"),
    (["--pythae", "{tmp}/empty"], "--pythae {tmp}/empty: not a folder saved by pythae (no model_config.json)"),
    (["--pythae", "{tmp}/nowhere"], "--pythae {tmp}/nowhere: no such folder"),
    (["--pythae", "{tmp}/empty", "--checkpoint", "{tmp}/vae.pt"], "give --checkpoint or --pythae, not both"),
])
def test_bad_outside_models_are_refused(args, expected, tmp_path, capsys):
    _state_dict_of("vae", tmp_path / "vae.pt")
    (tmp_path / "text.pt").write_text("not weights")
    (tmp_path / "empty").mkdir()
    suite = tmp_path / "suite.yaml"
    suite.write_text(BASE)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["evaluate", str(suite), "--results", str(tmp_path / "r"), "--no-progress", *args]) == 2
    assert _one_error_line(capsys).startswith(expected.format(tmp=tmp_path))
    assert not any((tmp_path / "r").glob("*/*/checkpoint.pt"))  # nothing was written as a result
