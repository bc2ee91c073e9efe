"""Suite parsing, validation, overrides, job expansion and hashing."""

from __future__ import annotations

import pytest

from aebench.errors import AebenchError, SuiteError
from aebench.suite import Job, apply_overrides, load_suite, parse_override

BASE = """\
version: 1
name: demo
datasets: [synthetic]
latent_dim: 4
backbone: {name: mlp, hidden: [16]}
models:
  - ae
  - name: vae
    params: {beta: 2.0}
  - name: vae
    label: bvae
    grid: {beta: [1, 4]}
seeds: [0, 1]
train: {epochs: 2, batch_size: 32, lr: 0.001}
metrics: [recon]
"""


def test_parse_typed_dataclasses(write_suite):
    s = load_suite(write_suite(BASE))
    assert s.name == "demo" and s.latent_dim == 4 and s.seeds == [0, 1]
    assert [m.name for m in s.models] == ["ae", "vae", "vae"]
    assert s.train.epochs == 2 and s.train.batch_size == 32 and isinstance(s.train.lr, float)
    assert s.backbone.name == "mlp" and s.backbone.options == {"hidden": [16]}
    assert s.datasets[0].name == "synthetic" and s.metrics[0].name == "recon"


def test_jobs_expand_models_grid_datasets_seeds(write_suite):
    jobs = load_suite(write_suite(BASE)).jobs()
    # (ae, vae, bvae[beta=1], bvae[beta=4]) x 1 dataset x 2 seeds
    assert len(jobs) == 8
    labels = sorted({j.label for j in jobs})
    assert labels == ["ae", "bvae[beta=1]", "bvae[beta=4]", "vae"]
    assert {j.params["beta"] for j in jobs if j.label.startswith("bvae")} == {1, 4}
    assert len({j.id for j in jobs}) == 8  # every job its own folder


def test_hash_is_stable_and_sensitive(write_suite):
    a = load_suite(write_suite(BASE)).jobs()
    b = load_suite(write_suite(BASE)).jobs()
    assert [j.id for j in a] == [j.id for j in b]
    c = load_suite(write_suite(BASE), overrides=["train.epochs=3"]).jobs()
    assert not {j.id for j in a} & {j.id for j in c}
    # the label and suite name are presentation: the same run under another name hashes the same
    renamed = load_suite(write_suite(BASE.replace("name: demo", "name: other"))).jobs()
    assert [j.hash for j in renamed] == [j.hash for j in a]
    # the job id is a readable prefix plus the hash
    j = a[0]
    assert j.id == f"ae-synthetic-s0-{j.hash[:10]}"


def test_protocol_ignores_model_params_and_seed(write_suite):
    jobs = load_suite(write_suite(BASE)).jobs()
    assert len({j.protocol for j in jobs}) == 1
    other = load_suite(write_suite(BASE), overrides=["latent_dim=8"]).jobs()
    assert other[0].protocol != jobs[0].protocol


def test_job_config_roundtrip(write_suite):
    job = load_suite(write_suite(BASE)).jobs()[3]
    again = Job.from_config(job.config())
    assert again == job and again.id == job.id


def test_overrides_parse_yaml_values():
    assert parse_override("train.epochs=1") == (["train", "epochs"], 1)
    assert parse_override("train.lr=1e-4")[1] == 1e-4
    assert parse_override("eval.samplers=[prior]")[1] == ["prior"]
    raw = apply_overrides({"models": [{"name": "vae"}], "train": {}}, ["models.0.params.beta=4", "train.epochs=2"])
    assert raw == {"models": [{"name": "vae", "params": {"beta": 4}}], "train": {"epochs": 2}}
    with pytest.raises(AebenchError, match="expected key.path=value"):
        parse_override("novalue")
    with pytest.raises(AebenchError, match="not an index"):
        apply_overrides({"models": ["ae"]}, ["models.3.name=vae"])


def test_narrowing_models_and_seeds(write_suite):
    s = load_suite(write_suite(BASE), models=["bvae", "ae"], seeds=[1])
    assert [m.label or m.name for m in s.models] == ["bvae", "ae"]
    assert s.seeds == [1] and len(s.jobs()) == 3
    with pytest.raises(SuiteError, match="--seeds 7 is not a seed of the suite"):
        load_suite(write_suite(BASE), seeds=[7])


def test_models_flag_adds_a_registered_model_not_in_the_suite(write_suite):
    s = load_suite(write_suite(BASE.replace("  - ae\n", "")), models=["ae"])
    assert [m.name for m in s.models] == ["ae"]


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (("  - ae\n", "  - vea\n"), "models[0].name", "unknown model 'vea'; did you mean 'vae'"),
        (("epochs: 2", "epochs: two"), "train.epochs", "expected an integer, got str 'two'"),
        (("epochs: 2", "epochs: 0"), "train.epochs", "must be > 0, got 0"),
        (("latent_dim: 4", "latent_dim: 4\nlatnet: 3"), "latnet",
         "unknown field; did you mean 'latent_dim'? allowed: version, name"),
        (("lr: 0.001", "lr: 0.001, momentum: 0.9"), "train.momentum", "unknown field; allowed: epochs"),
        (("params: {beta: 2.0}", "params: {beta: -1}"), "models[1].params", "beta must be >= 0"),
        (("params: {beta: 2.0}", "params: {gamma: 1}"), "models[1].params.gamma", "unknown field; allowed: beta"),
        (("metrics: [recon]", "metrics: [recno]"), "metrics[0].name", "did you mean 'recon'"),
        (("hidden: [16]", "hidden: [16], width: 3"), "backbone.width", "unknown option of backbone 'mlp'"),
        (("version: 1", "version: 2"), "version", "unsupported version 2; allowed: 1"),
    ],
)
def test_validation_errors_name_file_and_field(write_suite, edit, field, message):
    path = write_suite(BASE.replace(*edit))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert err.value.file == str(path)
    assert err.value.field == field
    assert message in err.value.message
    assert str(err.value).startswith(f"{path}: {field}: ")
    assert "\n" not in str(err.value)


def test_malformed_yaml_names_the_line(write_suite):
    path = write_suite("version: 1\nmodels: [ae\n")
    with pytest.raises(SuiteError, match=r"malformed YAML at line \d+, column \d+"):
        load_suite(path)


def test_yaml_tags_that_construct_objects_are_refused(write_suite):
    path = write_suite("version: 1\nname: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SuiteError, match="malformed YAML"):
        load_suite(path)


def test_suite_plugins_are_loaded_relative_to_the_file(write_suite, tmp_path, clean_registry):
    (tmp_path / "myplug.py").write_text(
        "from aebench import MODELS\nfrom aebench.models.ae import AE\n"
        "MODELS.register('suite-plug-ae', target=AE, description='x')\n"
    )
    s = load_suite(write_suite(BASE.replace("  - ae\n", "  - suite-plug-ae\n") + "plugins: [myplug.py]\n"))
    assert s.models[0].name == "suite-plug-ae"


@pytest.mark.parametrize("path", ["suites/mnist.yaml", "suites/mnist-conv.yaml", "suites/encoder.yaml",
                                  "suites/fashion-mnist.yaml", "suites/cifar10.yaml", "suites/celeba.yaml"])
def test_shipped_suites_validate(path):
    from pathlib import Path

    full = Path(__file__).resolve().parents[1] / path
    if not full.exists():
        pytest.fail(f"{path} is missing")
    suite = load_suite(full)
    assert suite.jobs()


def test_a_dataset_may_set_its_own_latent_size(write_suite):
    text = BASE.replace("datasets: [synthetic]", "datasets:\n  - {name: encoder, n: 8, latent_dim: 3}\n"
                        "  - {name: encoder, n: 10, latent_dim: 4}\n  - synthetic")
    jobs = load_suite(write_suite(text), models=["ae"], seeds=[0]).jobs()
    assert [(j.dataset, j.dataset_options, j.latent_dim) for j in jobs] == [
        ("encoder", {"n": 8}, 3), ("encoder", {"n": 10}, 4), ("synthetic", {}, 4)]
    assert len({j.protocol for j in jobs}) == 3
    bad = write_suite(BASE.replace("datasets: [synthetic]", "datasets: [{name: synthetic, latent_dim: 0}]"))
    with pytest.raises(SuiteError, match=r"datasets\[0\].latent_dim: must be > 0, got 0"):
        load_suite(bad)
