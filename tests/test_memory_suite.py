"""The associative-memory suite: its suite file, the random-patterns set, the Hopfield storage rules against weights
built here, the retrieval metric's capacity curve (ks) against separately stored nets, and the capacity figure
drawn from a fabricated results folder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from aebench.data import load
from aebench.data.base import ImageSet
from aebench.job import Evaluation, Job
from aebench.metrics.base import EvalContext, evaluate
from aebench.metrics.retrieval import retrieval
from aebench.models.base import build_model
from aebench.specs import NamedSpec, TrainSpec
from aebench.store import jobdir as files
from aebench.store.jobdir import JobDir

SUITE = Path(__file__).resolve().parents[1] / "suites" / "memory.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


def patterns(n: int, size: int = 10, p: float = 0.5) -> torch.Tensor:
    """Images in {0, 1} from the registered random-patterns set (train split)."""
    return load("random-patterns", "train", options={"n": n, "size": size, "p": p}).floats()


def ctx_for(model, train: torch.Tensor) -> EvalContext:
    u8 = ImageSet("toy", "train", train.mul(255).round().to(torch.uint8))
    return EvalContext(model=model, train=u8, test=u8, device=torch.device("cpu"), batch_size=64)


def hopfield(k: int, size: int = 10, **params):
    return build_model("hopfield", (1, size, size), 4, {"n_stored": k, **params})


def test_suite_validates_and_its_metric_settings_are_checked():
    from aebench.errors import SuiteError
    from aebench.settings_types import check_settings
    from aebench.suite import load_suite

    suite = load_suite(str(SUITE), [], None, None)
    jobs = suite.jobs()
    assert {j.dataset for j in jobs} == {"random-patterns", "mnist"} and len(jobs) == 30
    assert {j.params.get("rule") for j in jobs if j.model == "hopfield"} == {"hebbian", "centred", "projection"}
    (retrieval_spec,) = [m for m in suite.metrics if m.name == "retrieval"]
    assert max(retrieval_spec.options["ks"]) == suite.data.train_limit
    with pytest.raises(SuiteError, match="ks"):
        check_settings("metrics", "retrieval", {"ks": [4, 0]}, "metrics[0]")
    with pytest.raises(SuiteError, match="ks"):
        check_settings("metrics", "retrieval", {"ks": "8"}, "metrics[0]")


def test_random_patterns_are_uniform_binary_and_deterministic():
    train = load("random-patterns", "train")
    assert train.images.shape == (1024, 1, 16, 16) and train.images.dtype == torch.uint8 and not train.has_labels
    assert set(train.images.unique().tolist()) == {0, 255}
    spins = train.floats() * 2 - 1
    assert abs(float(spins.mean())) < 0.01  # 262,144 fair pixels: sd of the mean 0.002
    assert abs(float(spins.flatten(1).mean(0).abs().max())) < 0.2  # every pixel near balanced (sd 0.03)
    assert torch.equal(train.images, load("random-patterns", "train").images)
    test = load("random-patterns", "test")
    assert len(test) == 256 and not torch.equal(test.images[:256], train.images[:256])
    biased = load("random-patterns", "train", options={"n": 512, "size": 8, "p": 0.2}).floats()
    assert biased.shape == (512, 1, 8, 8) and abs(float(biased.mean()) - 0.2) < 0.02


def test_centred_and_projection_weights_match_their_formulas():
    x = patterns(6, 6, p=0.3)
    xi = (x.flatten(1) * 2 - 1).double()
    n = xi.shape[1]
    a = xi.mean(0)
    c = xi - a
    ref = {"centred": c.t() @ c / n, "projection": xi.t() @ torch.linalg.inv(xi @ xi.t()) @ xi}
    theta = {"centred": -a * (1 - (a * a).mean()), "projection": torch.zeros(n, dtype=torch.float64)}
    for rule in ("centred", "projection"):
        net = hopfield(6, 6, rule=rule)
        net.store(x)
        w = ref[rule] - torch.diag(torch.diag(ref[rule]))
        assert torch.allclose(net.memory.weight().double(), w, atol=1e-5), rule
        assert torch.allclose(net.memory.threshold().double(), theta[rule], atol=1e-6), rule
        s = torch.sign(torch.randn(4, n, generator=torch.Generator().manual_seed(1)))
        energy = -0.5 * ((s.double() @ w) * s).sum(1) + s.double() @ theta[rule]
        assert torch.allclose(net.memory.energy(s).double(), energy, atol=1e-4), rule
    assert torch.allclose(ref["projection"] @ xi.t(), xi.t(), atol=1e-9)  # the projection leaves every pattern


def test_centred_rule_stores_biased_patterns_that_hebbian_storage_loses():
    x = patterns(12, 16, p=0.2)  # mean activity a = -0.6: the Hebbian net falls into the all-off attractor
    out = {rule: retrieval(ctx_for(_stored(x, rule), x), k=8) for rule in ("hebbian", "centred", "projection")}
    assert out["hebbian"]["recovered"] == 0.0 and out["centred"]["recovered"] == 1.0
    assert out["projection"]["recovered"] == 1.0


def _stored(x: torch.Tensor, rule: str, k: int | None = None, size: int = 16):
    net = hopfield(k or x.shape[0], size, rule=rule)
    net.store(x)
    return net


def test_retrieval_ks_is_the_capacity_curve_of_nets_storing_k():
    x = patterns(40)  # N = 100 units: 0.138 N = 13.8 patterns
    net = _stored(x, "hebbian", size=10)
    ks = [3, 5, 40, 64]
    out = retrieval(ctx_for(net, x), ks=ks, steps=20)
    assert out["recovered_k3"] == 1.0 and out["recovered_k5"] == 1.0 and out["overlap_k3"] == 1.0
    assert out["recovered_k40"] <= 0.2 and out["overlap_k40"] < 0.8  # load 0.4 >> 0.138
    assert "recovered_k64" not in out and out["setup"]["skipped_ks"] == [64]  # more than the 40 it stored
    assert out["recovered"] == out["recovered_k40"] and out["setup"]["k"] == 40  # headline: the largest k
    assert out["capacity"] == {"alpha": 0.138, "n_units": 100, "k": pytest.approx(13.8)}
    for k in (3, 5):  # the independent reference: a net that stored only the first k, asked at k
        alone = retrieval(ctx_for(_stored(x[:k], "hebbian", size=10), x), k=k, steps=20)
        assert out[f"recovered_k{k}"] == alone["recovered"] and out[f"overlap_k{k}"] == alone["overlap"]
    assert retrieval(ctx_for(net, x), k=5, ks=[40], steps=20)["setup"]["k"] == 5
    res = evaluate(ctx_for(net, x), [("retrieval", {"ks": [3, 40], "steps": 20})])
    assert res["values"]["retrieval/recovered_k3"] == 1.0 and res["details"]["retrieval/capacity"]["n_units"] == 100


def test_retrieval_ks_for_an_autoencoder_presents_the_first_k_training_images():
    class Snap(torch.nn.Module):
        """An ideal memory of the images it was given: reconstruct returns the nearest (L1)."""

        def __init__(self, memory: torch.Tensor):
            super().__init__()
            self.memory = memory

        def reconstruct(self, y: torch.Tensor) -> torch.Tensor:
            d = (y.flatten(1).unsqueeze(1) - self.memory.flatten(1).unsqueeze(0)).abs().sum(2)
            return self.memory[d.argmin(1)]

    x = patterns(20)
    half = retrieval(ctx_for(Snap(x[:8]), x), ks=[4, 8, 16])  # knows only the first 8 training images
    assert half["recovered_k4"] == half["recovered_k8"] == 1.0 and half["recovered_k16"] == 0.5
    assert half["setup"]["source"] == "training images" and half["setup"]["memory"] == "as trained"


def make_job(suite_dir: Path, label: str, rule: str, seed: int, curve: dict[int, float], n_units: int = 256) -> None:
    """A finished job folder with retrieval values, as the runner leaves one (config, metrics, marker)."""
    evaluation = Evaluation(metrics=[NamedSpec("retrieval", {"ks": sorted(curve)})], samplers=[NamedSpec("prior")],
                            n_samples=10, batch_size=10)
    job = Job(suite=suite_dir.name, model="hopfield", label=label, params={"rule": rule}, dataset="random-patterns",
              dataset_options={}, seed=seed, backbone="mlp", backbone_options={}, latent_dim=4, likelihood="bernoulli",
              likelihood_options={}, train=TrainSpec(epochs=1, batch_size=32), evaluation=evaluation)
    jd = JobDir(suite_dir / job.id)
    jd.path.mkdir(parents=True)
    jd.write_json(files.CONFIG, job.config())
    values = {f"retrieval/recovered_k{k}": v for k, v in curve.items()}
    values["retrieval/recovered"] = curve[max(curve)]
    details = {"retrieval/capacity": {"alpha": 0.138, "n_units": n_units, "k": 0.138 * n_units}}
    jd.write_json(files.METRICS, {"values": values, "details": details, "not_applicable": {}, "seconds": {},
                                  "evaluation": {"plan": evaluation.to_dict()}})
    jd.mark_done()


def test_capacity_figure_is_drawn_from_a_results_folder(tmp_path: Path):
    from aebench.report.memory import capacity_figure, curve_rows
    from aebench.report.results import load_results

    suite = tmp_path / "memory"
    for seed, jitter in enumerate((0.0, 0.1)):
        make_job(suite, "hopfield", "hebbian", seed, {8: 1.0, 32: 0.9 - jitter, 64: 0.1})
        make_job(suite, "hopfield-projection", "projection", seed, {8: 1.0, 32: 1.0, 64: 1.0 - jitter})
    res = load_results(suite)
    rows = {(r["label"], r["k"]): r for r in curve_rows(res)}
    assert len(rows) == 6 and rows[("hopfield", 32)]["mean"] == pytest.approx(0.85)
    assert rows[("hopfield", 32)]["sd"] == pytest.approx(math.sqrt(0.005)) and rows[("hopfield", 8)]["sd"] == 0.0
    assert rows[("hopfield", 64)]["capacity"] == (pytest.approx(35.328), 256)
    fig = capacity_figure(res, tmp_path / "figures")
    assert fig is not None and fig.name == "capacity" and fig.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from aebench.registry import METRICS

    assert "aebench.report.memory:capacity_figure" in METRICS.meta("retrieval")["figures"]
    plain = tmp_path / "plain"
    make_job(plain, "hopfield", "hebbian", 0, {8: 1.0})
    res = load_results(plain)
    res.jobs = res.jobs.drop(columns=["retrieval/recovered_k8"])
    assert capacity_figure(res, tmp_path / "none") is None  # no ks keys: nothing to draw
