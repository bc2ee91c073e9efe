"""The README's quick try, timed: ``aebench run suites/mnist.yaml --set train.epochs=1 --models ae,vae``.

    python benchmarks/bench_quick_try.py         # JSON to benchmarks/results/quick-try-cpu.json

Runs the command as a subprocess in a fresh results folder (the dataset cache in ``$AEBENCH_CACHE`` is left
as it is: warm after any earlier run) and splits its wall time into:

- ``start_up``: a bare ``import torch`` and ``import aebench.cli`` (each timed in its own fresh interpreter);
- ``data_load``: loading MNIST's train and test splits from the dataset cache (own interpreter, after torch);
- ``training``: the sum of the jobs' ``train_seconds`` (``provenance.json``);
- ``evaluation``: the sum of the jobs' evaluation stages (``metrics.json`` ``evaluation.seconds``: metrics and
  image files), with the per-metric seconds;
- ``other``: the rest: per-job set-up (data to device, model build, checkpoint, provenance, records), suite
  validation, the imports a job makes on first use (torch-fidelity and torchvision for FID, scikit-learn).

The goal: wall time at most 2.5 times the training seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COMMAND = ["run", "suites/mnist.yaml", "--set", "train.epochs=1", "--models", "ae,vae"]


def data_root() -> str:
    return os.environ.get("AEBENCH_DATA") or str(ROOT.parent / "shared" / "data")


def timed_python(code: str, env: dict[str, str]) -> float:
    """Seconds the snippet reports, run in a fresh interpreter (its last stdout line is a float)."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(HERE / "results" / "quick-try-cpu.json"))
    parser.add_argument("extra", nargs="*", help="more aebench run arguments (after --)")
    args = parser.parse_args(argv)
    env = {**os.environ, "AEBENCH_DATA": data_root()}
    clock = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"
    start_up = {
        "python": timed_python(clock.format("pass"), env),
        "import_torch": timed_python(clock.format("import torch"), env),
        "import_aebench_cli": timed_python(clock.format("import aebench.cli"), env),
    }
    data_load = timed_python("import torch, time; from aebench.data.base import load; t = time.perf_counter(); "
                             "[load('mnist', s) for s in ('train', 'test')]; print(time.perf_counter() - t)", env)
    with tempfile.TemporaryDirectory(prefix="aebench-quick-try-") as results:
        cmd = [sys.executable, "-m", "aebench.cli", *COMMAND, "--results", results, "--no-progress", *args.extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"the quick try failed with exit code {proc.returncode}")
        jobs, per_metric = {}, defaultdict(float)
        for job in sorted(p for p in (Path(results) / "mnist").iterdir() if (p / "metrics.json").exists()):
            prov = json.loads((job / "provenance.json").read_text())
            metrics = json.loads((job / "metrics.json").read_text())
            jobs[job.name] = {"train_seconds": prov["train_seconds"],
                              "eval_seconds": metrics["evaluation"]["seconds"], "metric_seconds": metrics["seconds"]}
            for k, v in metrics["seconds"].items():
                per_metric[k] += v
    training = sum(j["train_seconds"] for j in jobs.values())
    evaluation = sum(j["eval_seconds"] for j in jobs.values())
    start = start_up["import_torch"] + start_up["import_aebench_cli"]
    out = {
        "date": date.today().isoformat(),
        "device": f"CPU: {os.cpu_count()} cores {platform.machine()}",
        "command": "python benchmarks/bench_quick_try.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick_try": "aebench " + " ".join(COMMAND),
        "wall_seconds": wall,
        "ratio_to_training": wall / training,
        "breakdown": {"start_up": start, "data_load": data_load, "training": training, "evaluation": evaluation,
                      "other": wall - start - data_load - training - evaluation},
        "start_up": start_up,
        "evaluation_per_metric": dict(per_metric),
        "jobs": jobs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    b = out["breakdown"]
    print(f"quick try: {wall:.1f} s wall = {out['ratio_to_training']:.2f} x its training ({training:.1f} s); "
          + ", ".join(f"{k} {v:.1f} s" for k, v in b.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
