"""The ``aebench`` command line's arguments: every command, its options and an example (``aebench COMMAND -h``)."""

from __future__ import annotations

import argparse

from aebench import __version__

EXAMPLES = {
    "run": "example: aebench run suites/mnist.yaml --set train.epochs=1 --models ae,vae",
    "validate": "example: aebench validate suites/mnist.yaml",
    "ls": "example: aebench ls models",
    "status": "example: aebench status results/mnist",
    "strip": "example: aebench strip results/mnist",
    "report": "example: aebench report results/mnist   (writes reports/mnist/index.html and README.md)",
    "leaderboard": "example: aebench leaderboard results/mnist --metric recon/mse",
    "evaluate": "examples:\n  aebench evaluate suites/mnist.yaml        (current metrics, nothing retrained)\n"
                "  aebench evaluate suites/mnist.yaml --plugin my_ae.py --checkpoint my_ae.pt --model my-ae\n"
                "  aebench evaluate suites/mnist.yaml --pythae my_pythae_run/final_model",
    "migrate": "example: aebench migrate results/mnist",
}


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a suite field, e.g. --set train.epochs=1 (repeatable)")
    p.add_argument("--models", type=_csv, default=None, help="run only these models (comma-separated)")
    p.add_argument("--seeds", type=_seeds, default=None, help="run only these seeds (comma-separated)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results folder (default: results/)")
    p.add_argument("--data-root", default=None, help="data folder (default: $AEBENCH_DATA or ~/.cache/aebench/data)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-download", action="store_true", help="never download datasets")
    p.add_argument("--stack", choices=["auto", "on", "off"], default="auto",
                   help="train the jobs that differ only in their seed, float hyperparameters or learning rate (seeds, "
                        "a search's trials) as one stack where that is exact (auto: on a GPU only; slurm: where "
                        "launcher.gpus_per_job > 0)")
    p.add_argument("--no-stack", action="store_true", help="the same as --stack off")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aebench", description="Benchmark and evaluate generative autoencoders.",
        epilog="example: aebench run suites/mnist.yaml", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"aebench {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="FILE.py|MODULE",
                        help="load a plugin that registers models or metrics (repeatable)")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES.get(name),
                              parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("run", "train what is missing, then evaluate what is missing, writing results/<suite>/")
    _add_suite_args(p)
    _add_run_args(p)
    p.add_argument("--launcher", default=None, help="override the suite's launcher (see `aebench ls launchers`)")
    p.add_argument("--no-wait", action="store_true",
                   help="with a launcher that submits (slurm): return once submitted; follow with aebench status")
    p.add_argument("--report", action="store_true", help="write reports/<suite>/ (aebench report) after the run")

    p = add("evaluate", "compute the suite's metrics for every finished training (trains nothing), or score an "
            "outside model: a checkpoint (--checkpoint --model) or a pythae folder (--pythae)")
    _add_suite_args(p)
    _add_run_args(p)
    p.add_argument("--checkpoint", default=None, metavar="FILE", help="weights (a state dict) of a registered model")
    p.add_argument("--model", default=None, metavar="NAME", help="the registered model --checkpoint belongs to")
    p.add_argument("--pythae", default=None, metavar="DIR", help="a folder saved by pythae (model_config.json, "
                   "model.pt); needs pip install 'aebench[pythae]'")
    p.add_argument("--label", default=None, help="name of the outside model in reports (default: from the model)")
    p.add_argument("--dataset", default=None, help="which of the suite's datasets to score on (default: the first)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation's random draws (default: 0)")

    p = add("migrate", "convert job folders of the previous layout (one hash over training and evaluation) to "
            "training ids and evaluation records; nothing is retrained")
    p.add_argument("results_dir", help="results/<suite>")

    p = add("report", "write an HTML and a markdown report (tables, figures, image grids) of a results folder")
    p.add_argument("results_dir", help="results/<suite>")
    p.add_argument("--out", default=None, help="report folder (default: reports/<suite>/)")
    p.add_argument("--embed", action="store_true",
                   help="embed the images in index.html (one self-contained file, several times larger); by default "
                        "it links the PNGs written beside it")

    p = add("leaderboard", "rank the models of a results folder by one metric (comparable runs only)")
    p.add_argument("results_dir", nargs="?", default="results",
                   help="results/<suite>, or a results folder holding several suites (default: results/)")
    p.add_argument("--metric", default=None, metavar="KEY",
                   help="metric to rank by, e.g. fid/gaussian or recon/mse (default: FID, else recon/mse)")

    p = add("validate", "check a suite against the registries without training anything")
    _add_suite_args(p)

    p = add("ls", "list registered parts with one-line descriptions")
    p.add_argument("kind", choices=["models", "metrics", "datasets", "backbones", "samplers", "launchers",
                                    "likelihoods", "optimizers", "extractors"])
    p.add_argument("--details", default=None, metavar="NAME",
                   help="with models: the model's objective card (exact loss, reduction, weights, optimisers, paper)")
    p.add_argument("--markdown", action="store_true",
                   help="with models: every model's card and defaults, and the samplers, as markdown (docs/models.md)")

    p = add("strip", "delete the checkpoints of finished jobs and compact their metrics, to share results")
    p.add_argument("results_dir", help="results/<suite>")
    p.add_argument("--images", action="store_true",
                   help="also delete the image grids and example images the report does not show: trials' and all "
                        "but the first seed's")

    p = add("status", "list each job of a results folder as done, running, failed, damaged or pending")
    p.add_argument("results_dir", help="results/<suite>")

    p = add("train-extractor", "retrain the digits feature extractor (FID on 28x28 grayscale) on MNIST, reproducibly")
    p.add_argument("--data-root", default=None, help="data folder holding MNIST (default: $AEBENCH_DATA)")
    p.add_argument("--out", default="digits_cnn.pt", help="weights file to write (default: digits_cnn.pt)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default: 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads; the same count reproduces the same file")
    p.epilog = "example: aebench train-extractor --data-root ../shared/data --out digits_cnn.pt"
    return parser
