"""Stacked training against one job: three seeds of a suite's model in one stack, and one seed alone.

    python benchmarks/bench_stacked.py                     # suites/mnist.yaml's vae, 1 epoch, 2 rounds
    python benchmarks/bench_stacked.py --model ae --epochs 2 --threads 1

Both sides run in this process, interleaved (one, stack, one, stack), each in a fresh results folder, on
real MNIST (``$AEBENCH_DATA`` or ``../shared/data``), through the runner's own training stage
(``runner.job.train_job`` and ``runner.stacked.train_stack``: data load, model build, training, checkpoints).
The goal (issue 16): the stack of three at most 1.5 times the wall time of one. Writes JSON to
``benchmarks/results/stacked-<device>.json``.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def step_times(model: str, seeds: int, batch: int = 128, repeats: int = 30) -> dict[str, float]:
    """Milliseconds per optimisation step: one stacked step of ``seeds`` members against ``seeds`` separate steps
    (suites/mnist.yaml's MLP 784-512-256-32, Bernoulli), interleaved, without data loading or validation."""
    import torch
    from torch.func import functional_call, stack_module_state, vmap

    from aebench.models.base import TrainSettings, build_model, make_optimizer
    from aebench.runner.stack_loop import LossCall

    models = []
    for s in range(seeds):
        torch.manual_seed(s)
        models.append(build_model(model, (1, 28, 28), 32, {}, "mlp", {"hidden": [512, 256]}, "bernoulli", {}))
    x = torch.rand(seeds, batch, 1, 28, 28).round()
    base = LossCall(models[0])
    params, buffers = stack_module_state([LossCall(m) for m in models])
    stacked_opt = make_optimizer(list(params.values()), TrainSettings())
    opts = [make_optimizer(m.parameters(), TrainSettings()) for m in models]

    def stacked() -> None:
        out = vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)), randomness="same")(params, buffers, x)
        stacked_opt.zero_grad()
        out["loss"].sum().backward()
        stacked_opt.step()

    def separate() -> None:
        for m, o, xb in zip(models, opts, x, strict=True):
            loss = m.loss(xb)["loss"]
            o.zero_grad()
            loss.backward()
            o.step()

    best = {"stacked": float("inf"), "separate": float("inf")}
    for _ in range(2):
        for name, fn in (("stacked", stacked), ("separate", separate)):
            for _ in range(3):
                fn()
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / repeats * 1000)
    return {"stacked_ms": best["stacked"], "separate_ms": best["separate"],
            "ratio": best["stacked"] / best["separate"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default=str(ROOT / "suites" / "mnist.yaml"))
    parser.add_argument("--model", default="vae")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    from aebench.runner.job import train_job
    from aebench.runner.settings import RunSettings, resolve_device
    from aebench.runner.stacked import train_stack
    from aebench.store.jobdir import JobDir
    from aebench.suite import load_suite

    if args.threads:
        torch.set_num_threads(args.threads)
    data = os.environ.get("AEBENCH_DATA") or str(ROOT.parent / "shared" / "data")
    suite = load_suite(args.suite, overrides=[f"train.epochs={args.epochs}"], models=[args.model],
                       seeds=list(range(args.seeds)))
    jobs = suite.jobs()
    device = resolve_device(args.device)
    rounds = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="aebench-stack-") as tmp:
            run = RunSettings(results=Path(tmp), data_root=data, device=args.device, progress=False)
            one_dir = JobDir(run.suite_dir(suite.name) / jobs[0].id)
            one_dir.path.mkdir(parents=True)
            t0 = time.perf_counter()
            train_job(jobs[0], one_dir, run)
            one = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="aebench-stack-") as tmp:
            run = RunSettings(results=Path(tmp), data_root=data, device=args.device, progress=False)
            t0 = time.perf_counter()
            trained = train_stack(jobs, run, log=lambda m: print(f"  {m}", file=sys.stderr))
            stacked = time.perf_counter() - t0
            if len(trained) != len(jobs):
                raise SystemExit(f"the stack trained {len(trained)} of {len(jobs)} jobs")
        rounds.append({"one": one, "stack": stacked, "ratio": stacked / one})
        print(f"round {r + 1}: one seed {one:.1f} s, {args.seeds} seeds stacked {stacked:.1f} s, "
              f"ratio {stacked / one:.2f}")
    steps = step_times(args.model, args.seeds) if device.type == "cpu" else None
    if steps:
        print(f"per step: {args.seeds} seeds stacked {steps['stacked_ms']:.1f} ms, as {args.seeds} separate steps "
              f"{steps['separate_ms']:.1f} ms (ratio {steps['ratio']:.2f})")
    ratios = sorted(x["ratio"] for x in rounds)
    name = "cpu" if device.type == "cpu" else device.type
    out = {
        "date": date.today().isoformat(),
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"CPU: {os.cpu_count()} cores {platform.machine()}"),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "command": "python benchmarks/bench_stacked.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model, "epochs": args.epochs, "seeds": args.seeds, "rounds": rounds,
        "median_ratio": ratios[len(ratios) // 2], "goal": "stack of 3 seeds <= 1.5 x one seed",
        "step": steps,
    }
    path = Path(args.out or HERE / "results" / f"stacked-{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"median ratio {out['median_ratio']:.2f}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
