"""aebench's training loop against pythae's trainer on pythae's default VAE, AE and beta-VAE (real MNIST).

    python benchmarks/bench_pythae.py            # JSON to benchmarks/results/pythae-cpu.json

pythae (``pip install "aebench[bench]"``) runs as a user runs it: ``TrainingPipeline`` with a
``BaseTrainerConfig`` (batch 100, Adam 1e-3, 2 epochs) on pythae's default MLP for input (1, 28, 28): encoder
784-512-16 (with a 16-wide log-variance head for the VAEs), decoder 16-512-784 with a sigmoid; BCE reconstruction
for the VAEs, MSE for the AE (pythae's AE has no other). Two pythae variants: ``eval`` passes the test set, which
pythae's trainer evaluates after every epoch, and ``no_eval`` passes none (the same work as aebench's loop).

aebench trains the same widths (``build_model``: backbone mlp hidden [512], latent 16) with the same
reconstruction loss (likelihood bernoulli for the VAEs: BCE; gaussian for the AE: squared error, as pythae's AE) with
``aebench.runner.train.train`` on the uint8 images. Rounds interleave aebench and pythae in one process with one
torch thread count; ratios are pythae seconds / aebench seconds per round (min and median over rounds).
The flush-denormal flag is set for aebench's runs (its runner sets it) and cleared for pythae's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

# pythae model class, config class, config options; aebench model name, params and likelihood (the same loss)
MODELS = {
    "vae": ("VAE", "VAEConfig", {"reconstruction_loss": "bce"}, "vae", {"beta": 1.0}, "bernoulli"),
    "ae": ("AE", "AEConfig", {}, "ae", {}, "gaussian"),
    "beta-vae": ("BetaVAE", "BetaVAEConfig", {"reconstruction_loss": "bce"}, "beta-vae", {"beta": 1.0}, "bernoulli"),
}


def data_root() -> str:
    return os.environ.get("AEBENCH_DATA") or str(HERE.parent.parent / "shared" / "data")


def run_aebench(name: str, train_set, epochs: int, batch: int, seed: int) -> float:
    from aebench.models.base import TrainSettings, build_model
    from aebench.runner.train import train

    _, _, _, model_name, params, likelihood = MODELS[name]
    torch.manual_seed(seed)
    model = build_model(model_name, (1, 28, 28), 16, params, "mlp", {"hidden": [512]}, likelihood)
    torch.set_flush_denormal(True)  # as aebench's runner does on a CPU
    t0 = time.perf_counter()
    train(model, train_set, TrainSettings("adam", 1e-3), epochs, batch, seed, torch.device("cpu"))
    return time.perf_counter() - t0


def run_pythae(name: str, train_x: torch.Tensor, eval_x: torch.Tensor | None, epochs: int, batch: int,
               seed: int) -> tuple[float, float]:
    """Seconds of the ``TrainingPipeline`` call (data checks, trainer set-up, training, saving the final model)
    and of its training loop alone (from the trainer's ``on_train_begin`` to ``on_train_end``)."""
    import pythae.models as pm
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class Timer(TrainingCallback):
        def on_train_begin(self, training_config, **kwargs):
            self.begin = time.perf_counter()

        def on_train_end(self, training_config, **kwargs):
            self.end = time.perf_counter()

    cls_name, cfg_name, options, _, _, _ = MODELS[name]
    torch.manual_seed(seed)
    model = getattr(pm, cls_name)(getattr(pm, cfg_name)(input_dim=(1, 28, 28), latent_dim=16, **options))
    torch.set_flush_denormal(False)  # pythae leaves the default
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        config = BaseTrainerConfig(output_dir=out, num_epochs=epochs, learning_rate=1e-3,
                                   per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
                                   no_cuda=True)
        pipeline = TrainingPipeline(model=model, training_config=config)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):  # its bars
            t0 = time.perf_counter()
            pipeline(train_data=train_x, eval_data=eval_x, callbacks=[timer])
            seconds = time.perf_counter() - t0
    return seconds, timer.end - timer.begin


def profile_steps(steps: int = 60) -> dict[str, dict]:
    """Milliseconds per step and top operators (self CPU ms per step) of aebench's VAE step (with its fused Adam and
    with torch's default for-loop Adam) and pythae's (forward, zero_grad, backward, step, loss.item), on random
    MNIST-sized batches without any data loader."""
    import pythae.models as pm
    from pythae.data.datasets import DatasetOutput
    from torch.profiler import ProfilerActivity, profile

    from aebench.models.base import TrainSettings, build_model

    x8 = torch.randint(0, 256, (steps * 100, 1, 28, 28), dtype=torch.uint8)
    xf = x8.float().div(255.0)
    torch.manual_seed(0)
    ours = build_model("vae", (1, 28, 28), 16, {}, "mlp", {"hidden": [512]}, "bernoulli")
    opts = ours.configure_optimizers(TrainSettings())
    theirs = pm.VAE(pm.VAEConfig(input_dim=(1, 28, 28), latent_dim=16, reconstruction_loss="bce"))
    popt = torch.optim.Adam(theirs.parameters(), lr=1e-3)

    loop_opts = [torch.optim.Adam(ours.parameters(), lr=1e-3)]  # torch's default on a CPU: a for-loop per tensor

    def aebench_steps(optimizers=opts) -> None:
        for i in range(steps):
            ours.train_step(x8[i * 100 : (i + 1) * 100].float().div_(255.0), optimizers)

    def pythae_steps() -> None:
        for i in range(steps):
            out = theirs(DatasetOutput(data=xf[i * 100 : (i + 1) * 100]), epoch=1, dataset_size=60000,
                         uses_ddp=False)
            popt.zero_grad()
            out.loss.backward()
            popt.step()
            out.loss.item()

    result = {}
    variants = (("aebench", aebench_steps), ("aebench_for_loop_adam", lambda: aebench_steps(loop_opts)),
                ("pythae", pythae_steps))
    for name, fn in variants:
        fn()  # warm-up
        t0 = time.perf_counter()
        fn()
        ms = (time.perf_counter() - t0) * 1000 / steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        result[name] = {"ms_per_step": round(ms, 3), "top_ops": [
            {"op": e.key, "ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 3),
             "calls_per_step": round(e.count / steps, 2)} for e in rows]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--models", default="vae,ae,beta-vae")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "pythae-cpu.json"))
    args = parser.parse_args(argv)

    import pythae
    import pythae.pipelines  # noqa: F401 - imported first, so that their loggers exist and can be quietened
    import pythae.trainers  # noqa: F401

    from aebench.data.base import load

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_set = load("mnist", "train", data_root(), download=False)
    test_set = load("mnist", "test", data_root(), download=False)
    train_x, test_x = train_set.floats(), test_set.floats()  # what a pythae user passes: floats in [0, 1]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    variants = ("aebench", "pythae_eval", "pythae_no_eval")
    times: dict[str, dict[str, list[float]]] = {m: {} for m in models}
    for r in range(args.rounds):
        for m in models:
            for v in variants:
                if v == "aebench":
                    got = {v: run_aebench(m, train_set, args.epochs, args.batch_size, r)}
                else:
                    call, loop = run_pythae(m, train_x, test_x if v == "pythae_eval" else None, args.epochs,
                                            args.batch_size, r)
                    got = {v: call, f"{v}_loop": loop}
                for k, s in got.items():
                    times[m].setdefault(k, []).append(s)
                print(f"round {r + 1}/{args.rounds} {m:9s} " + "  ".join(f"{k} {s:6.2f} s" for k, s in got.items()),
                      flush=True)
    summary = {}
    for m in models:
        t = times[m]
        row = {k: {"min": min(v), "median": statistics.median(v), "all": v} for k, v in t.items()}
        for k in t:
            if k != "aebench":
                ratios = [p / a for p, a in zip(t[k], t["aebench"])]
                row[f"ratio_{k}"] = {"min": min(ratios), "median": statistics.median(ratios), "all": ratios,
                                     "of_fastest": min(t[k]) / min(t["aebench"])}
        summary[m] = row
    out = {
        "date": date.today().isoformat(),
        "device": f"CPU: {os.cpu_count()} cores {platform.machine()}",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pythae": getattr(pythae, "__version__", "unknown"),
        "command": "python benchmarks/bench_pythae.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "adam", "lr": 1e-3,
                     "latent_dim": 16, "hidden": [512], "rounds": args.rounds, "images": len(train_set),
                     "aebench_likelihood": {m: MODELS[m][5] for m in summary}},
        "compared": ("ratio_X = X seconds / aebench seconds in the same round (min, median over rounds; of_fastest: "
                     "fastest X run / fastest aebench run). aebench: its train() call. "
                     "pythae_eval / pythae_no_eval: the TrainingPipeline call with / without the test set as "
                     "eval_data; *_loop: its trainer's training loop alone (on_train_begin to on_train_end). "
                     "The goal is judged on ratio_pythae_no_eval_loop: the same work, pythae's overheads left out."),
        "models": summary,
    }
    if not args.no_profile:
        out["profile_vae_step"] = profile_steps()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for m, row in summary.items():
        print(f"{m:9s} aebench {row['aebench']['median']:6.2f} s | " + " | ".join(
            f"{k} {row[k]['median']:6.2f} s (x{row['ratio_' + k]['median']:.2f})" for k in row
            if k != "aebench" and not k.startswith("ratio_")))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
