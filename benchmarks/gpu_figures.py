"""GPU figures in one run: the quick MNIST suite's wall time, and a conv epoch in fp32, bf16 and compiled.

    python benchmarks/gpu_figures.py --out DIR [--suite-timeout 360]

Writes DIR/gpu-figures.json. Each section is independent: one that fails or runs out of time is recorded as
such and the others still run. ``benchmarks/gpu_figures.sh`` prepares a bare GPU machine and calls it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def suite_wall(out: Path, timeout: int) -> dict:
    """``aebench run suites/mnist.yaml`` from an empty results folder on the GPU: wall time, and the jobs'
    own training and evaluation seconds from their metrics.json."""
    results = out / "suite-results"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "aebench.cli", "run", str(REPO / "suites" / "mnist.yaml"),
                               "--results", str(results), "--device", "cuda", "--no-progress"],
                              capture_output=True, text=True, timeout=timeout)
        status, tail = proc.returncode, proc.stderr[-1500:]
    except subprocess.TimeoutExpired as e:
        status, tail = "timeout", (e.stderr or b"")[-1500:].decode(errors="replace")
    wall = time.perf_counter() - t0
    train = evals = 0.0
    jobs = 0
    for m in (results / "mnist").glob("*/metrics.json"):
        v = json.loads(m.read_text())["values"]
        train += v.get("cost/train_seconds", 0.0)
        evals += v.get("cost/eval_seconds", 0.0)
        jobs += 1
    return {"command": "aebench run suites/mnist.yaml --device cuda", "status": status, "wall_seconds": wall,
            "jobs_done": jobs, "train_seconds": train, "eval_seconds": evals, "stderr_tail": tail}


def conv_epochs(device_name: str = "cuda", limit: int | None = None) -> dict:
    """Seconds per epoch of the conv VAE (suites/mnist-conv.yaml's backbone) on MNIST: fp32, bf16 autocast, and
    torch.compile of the train step (its first epoch includes compilation; the second is reported)."""
    import torch

    from aebench.data import load
    from aebench.models.base import TrainSettings, build_model
    from aebench.runner.train import seed_everything, train
    from aebench.suite import load_suite

    suite = load_suite(REPO / "suites" / "mnist-conv.yaml")
    device = torch.device(device_name)
    data = load("mnist", "train", None, False, {}).subset(limit).to(device)
    out = {}
    for name, precision, compile_ in (("fp32", "fp32", False), ("bf16", "bf16", False),
                                      ("compile-fp32", "fp32", True)):
        seed_everything(0)
        model = build_model("vae", data.shape, suite.latent_dim, {}, suite.backbone.name,
                            dict(suite.backbone.options), suite.likelihood.name,
                            dict(suite.likelihood.options)).to(device)
        try:
            state = train(model, data, TrainSettings(lr=suite.train.lr), 2, suite.train.batch_size, 0, device,
                          precision=precision, compile=compile_)
            if device.type == "cuda":
                torch.cuda.synchronize()
            secs = [row["seconds"] for row in state.curve]
            out[name] = {"epoch1_seconds": secs[0], "epoch2_seconds": secs[1] - secs[0],
                         "loss": state.curve[-1]["loss"]}
        except Exception as e:  # noqa: BLE001 - one configuration failing must not lose the others
            out[name] = {"error": f"{e.__class__.__name__}: {str(e)[:300]}"}
    out["batch_size"], out["backbone"] = suite.train.batch_size, suite.backbone.options
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--suite-timeout", type=int, default=360)
    p.add_argument("--check", action="store_true", help="a quick CPU run of the conv section (to test the script)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    if args.check:
        print(json.dumps(conv_epochs("cpu", 500), default=str))
        return
    figures = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d"), "cpu_cores": os.cpu_count()}
    for name, fn in (("conv_epochs", conv_epochs), ("mnist_suite", lambda: suite_wall(out, args.suite_timeout))):
        t0 = time.perf_counter()
        try:
            figures[name] = fn()
        except Exception as e:  # noqa: BLE001
            figures[name] = {"error": f"{e.__class__.__name__}: {str(e)[:500]}"}
        figures[name + "_section_seconds"] = time.perf_counter() - t0
        (out / "gpu-figures.json").write_text(json.dumps(figures, indent=2, default=str))
        print(json.dumps({name: figures[name]}, default=str)[:3000], flush=True)


if __name__ == "__main__":
    main()
