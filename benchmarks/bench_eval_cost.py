"""Evaluation cost per metric against the job's training time, for a VAE and an AE of suites/mnist.yaml.

    python benchmarks/bench_eval_cost.py         # JSON to benchmarks/results/eval-cost-cpu.json

Each model is built and trained as the suite says (backbone, latent size, likelihood, epochs, batch, Adam) on real
MNIST, then evaluated with the suite's evaluation settings (samplers, n_samples, batch size):

- ``per_metric``: every registered metric that applies to the model, each on a fresh context, so each pays its
  own share of codes, samples, sampler fits and features; the suite's settings where the suite lists the
  metric, else the metric's defaults;
- ``suite_shared``: the suite's metric list on one shared context, as the runner computes it (the goal:
  at most a quarter of the job's training time);
- ``all_shared``: every applicable metric on one shared context;
- ``gmm_fit``: the ``gmm`` sampler's fit, aebench's EM in torch against scikit-learn's ``GaussianMixture``, on
  the model's training codes (at most 10,000, dimension 32): seconds and mean log-likelihood.

FID reference statistics live on disk (the runner computes them once per results folder): a warm-up evaluation
fills that cache and imports everything first, and is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))


def data_root() -> str:
    return os.environ.get("AEBENCH_DATA") or str(HERE.parent.parent / "shared" / "data")


def named(entry) -> tuple[str, dict]:
    """A suite list entry (``name`` or ``{name: ..., **options}``) as (name, options)."""
    if isinstance(entry, str):
        return entry, {}
    entry = dict(entry)
    return entry.pop("name"), entry


def suite_model(suite: dict, name: str) -> dict:
    for entry in suite["models"]:
        n, opts = named(entry)
        if n == name:
            return dict(opts.get("params") or {})
    return {}


def make_context(model, train_set, test_set, suite: dict, cache_dir: Path, seed: int, train_seconds: float):
    from aebench.metrics.base import EvalContext

    ev = suite.get("eval") or {}
    samplers = [named(s) for s in ev.get("samplers", ["prior"])]
    return EvalContext(model=model, train=train_set, test=test_set, device=torch.device("cpu"), seed=seed,
                       samplers=tuple(n for n, _ in samplers), n_samples=int(ev.get("n_samples", 10_000)),
                       batch_size=int(ev.get("batch_size", 1000)), cache_dir=cache_dir,
                       sampler_options={n: o for n, o in samplers},
                       info={"train_seconds": train_seconds, "epochs": suite["train"]["epochs"],
                             "dataset": "mnist", "params": sum(p.numel() for p in model.parameters())})


def run_metrics(ctx, metrics: list[tuple[str, dict]]) -> dict[str, dict]:
    from aebench.metrics.base import evaluate_metric

    out = {}
    for name, settings in metrics:
        t0 = time.perf_counter()
        rec = evaluate_metric(ctx, name, settings)
        out[name] = {"seconds": time.perf_counter() - t0, "not_applicable": rec["not_applicable"]}
    return out


def gmm_fit(codes: torch.Tensor, seed: int = 0, k: int = 10, max_fit: int = 10_000) -> dict:
    """aebench's torch EM against scikit-learn on the same subset, floor and seed as the gmm sampler."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from aebench.models.gmm_torch import fit_gmm

    c = codes.double().numpy()
    if len(c) > max_fit:
        c = c[np.random.default_rng(seed).choice(len(c), max_fit, replace=False)]
    reg = 1e-6 * float(c.var(axis=0).mean())
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = GaussianMixture(k, covariance_type="full", reg_covar=reg, random_state=seed, max_iter=200).fit(c)
    t_sk = time.perf_counter() - t0
    x = torch.from_numpy(c)
    t0 = time.perf_counter()
    ours = fit_gmm(x, k, seed=seed, max_iter=200, reg_covar=reg)
    t_torch = time.perf_counter() - t0
    return {"codes": list(c.shape), "sklearn_seconds": t_sk, "torch_seconds": t_torch, "speedup": t_sk / t_torch,
            "sklearn_iterations": int(sk.n_iter_), "torch_iterations": ours.n_iter,
            "sklearn_mean_loglik": float(sk.score(c)), "torch_mean_loglik": ours.score(x)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default=str(HERE.parent / "suites" / "mnist.yaml"))
    parser.add_argument("--models", default="vae,ae")
    parser.add_argument("--epochs", type=int, default=None, help="default: the suite's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "eval-cost-cpu.json"))
    args = parser.parse_args(argv)

    from aebench.data.base import load
    from aebench.metrics.base import NEEDS
    from aebench.models.base import TrainSettings, build_model
    from aebench.registry import METRICS
    from aebench.runner.settings import prepare_device
    from aebench.runner.train import seed_everything, train

    suite = yaml.safe_load(Path(args.suite).read_text())
    tr = suite["train"]
    epochs = args.epochs or int(tr["epochs"])
    suite_metrics = [named(m) for m in suite["metrics"]]
    suite_settings = dict(suite_metrics)
    every = [(name, suite_settings.get(name, {})) for name in METRICS.names()]
    backbone, backbone_opts = named(suite["backbone"])
    likelihood, lik_opts = named(suite["likelihood"])
    device = prepare_device("cpu")
    train_set = load("mnist", "train", data_root(), download=False)
    test_set = load("mnist", "test", data_root(), download=False)
    cache_dir = Path(tempfile.mkdtemp(prefix="aebench-eval-cost-"))
    results: dict = {}
    for model_name in [m.strip() for m in args.models.split(",") if m.strip()]:
        seed_everything(args.seed)
        model = build_model(model_name, train_set.shape, int(suite["latent_dim"]), suite_model(suite, model_name),
                            backbone, backbone_opts, likelihood, lik_opts)
        settings = TrainSettings(tr.get("optimizer", "adam"), float(tr.get("lr", 1e-3)),
                                 float(tr.get("weight_decay", 0.0)), tr.get("grad_clip"))
        state = train(model, train_set, settings, epochs, int(tr["batch_size"]), args.seed, device)
        model.eval()

        def ctx(model=model, seconds=state.seconds):
            return make_context(model, train_set, test_set, suite, cache_dir, args.seed, seconds)

        print(f"{model_name}: trained {epochs} epochs in {state.seconds:.1f} s", flush=True)
        t0 = time.perf_counter()
        run_metrics(ctx(), suite_metrics)
        warmup = time.perf_counter() - t0
        probe_ctx = ctx()
        applicable = [(n, s) for n, s in every
                      if not any(NEEDS[need](probe_ctx) for need in METRICS.meta(n).get("needs", ()))]
        per_metric = {}
        for name, s in applicable:
            per_metric.update(run_metrics(ctx(),
                                          [(name, s)]))
            print(f"  {name:13s} {per_metric[name]['seconds']:7.2f} s"
                  + (f"  (not applicable: {per_metric[name]['not_applicable']})"
                     if per_metric[name]["not_applicable"] else ""), flush=True)
        t0 = time.perf_counter()
        shared = run_metrics(ctx(), suite_metrics)
        suite_seconds = time.perf_counter() - t0
        applied = [(n, s) for n, s in applicable if not per_metric[n]["not_applicable"]]
        t0 = time.perf_counter()
        run_metrics(ctx(), applied)
        all_seconds = time.perf_counter() - t0
        codes = ctx().codes("train").mean
        results[model_name] = {
            "train_seconds": state.seconds, "epochs": epochs, "warmup_seconds": warmup,
            "per_metric": per_metric,
            "suite_shared": {"seconds": suite_seconds, "ratio_to_training": suite_seconds / state.seconds,
                             "per_metric": {k: v["seconds"] for k, v in shared.items()}},
            "all_shared": {"seconds": all_seconds, "ratio_to_training": all_seconds / state.seconds,
                           "metrics": [n for n, _ in applied]},
            "gmm_fit": gmm_fit(codes, seed=0),
        }
        r = results[model_name]
        print(f"  suite metrics, shared: {suite_seconds:.2f} s = {r['suite_shared']['ratio_to_training']:.2f} x "
              f"training; all applicable: {all_seconds:.2f} s; gmm fit torch {r['gmm_fit']['torch_seconds']:.2f} s "
              f"vs sklearn {r['gmm_fit']['sklearn_seconds']:.2f} s", flush=True)
    out = {
        "date": date.today().isoformat(),
        "device": f"CPU: {os.cpu_count()} cores {platform.machine()}",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": "python benchmarks/bench_eval_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "suite": str(Path(args.suite).name),
        "eval": suite.get("eval"),
        "suite_metrics": [[n, s] for n, s in suite_metrics],
        "models": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
