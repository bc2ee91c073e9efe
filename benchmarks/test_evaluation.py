"""Evaluation cost: each metric of suites/mnist.yaml timed on its own, for one trained model.

The model is the suite's VAE (probabilistic, so every metric applies) trained for one epoch; the
FID reference statistics are computed once before timing, as in a suite (the cache is on disk).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.conftest import record

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(mnist, tmp_path_factory):
    """The suite (narrowed to the VAE) and the arguments of an evaluation context for its trained model."""
    from aebench.models import build_model
    from aebench.models.base import TrainSettings
    from aebench.runner.train import train
    from aebench.suite import load_suite

    suite = load_suite(REPO / "suites" / "mnist.yaml", models=["vae"], seeds=[0])
    job = suite.jobs()[0]
    torch.manual_seed(0)
    model = build_model(job.model, (1, 28, 28), job.latent_dim, job.params, job.backbone, job.backbone_options,
                        job.likelihood)
    state = train(model, mnist[0], TrainSettings(), 1, job.train["batch_size"], 0, torch.device("cpu"))
    args = dict(model=model, train=mnist[0], test=mnist[1], device=torch.device("cpu"), seed=0,
                samplers=tuple(job.eval["samplers"]), n_samples=job.eval["n_samples"],
                batch_size=job.eval["batch_size"], cache_dir=tmp_path_factory.mktemp("cache"),
                info={"train_seconds": state.seconds, "epochs": 1, "params": 0})
    return suite, args


def _metric_names():
    from aebench.suite import load_suite

    return [m.name for m in load_suite(REPO / "suites" / "mnist.yaml", check=False).metrics]


@pytest.mark.parametrize("metric", _metric_names())
def test_metric_seconds(benchmark, trained, metric):
    """One metric on a fresh context: its own share of codes, samples and sampler fits included."""
    from aebench.metrics.base import EvalContext, evaluate

    suite, args = trained
    settings = next(dict(m.options) for m in suite.metrics if m.name == metric)
    evaluate(EvalContext(**args), [(metric, settings)])  # warm: reference statistics cached on disk once
    benchmark.group = "evaluation of one mnist.yaml job"
    benchmark.pedantic(lambda: evaluate(EvalContext(**args), [(metric, settings)]), rounds=2, iterations=1)
    record(f"eval/{metric}", seconds=benchmark.stats.stats.median)


def test_all_metrics_seconds(benchmark, trained):
    """The whole metric list on one context, as the runner does it (shared codes and samples)."""
    from aebench.metrics.base import EvalContext, evaluate

    suite, args = trained
    metrics = [(m.name, dict(m.options)) for m in suite.metrics]
    benchmark.group = "evaluation of one mnist.yaml job"
    benchmark.pedantic(lambda: evaluate(EvalContext(**args), metrics), rounds=2, iterations=1)
    record("eval/all", seconds=benchmark.stats.stats.median)
