"""The ``aebench`` command line.

User errors print one line and exit with code 2 (``--debug`` shows the traceback); a suite with
failed jobs exits with 1 after its summary; Ctrl-C stops cleanly with 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aebench import __version__
from aebench.errors import AebenchError

EXAMPLES = {
    "run": "example: aebench run suites/mnist.yaml --set train.epochs=1 --models ae,vae",
    "validate": "example: aebench validate suites/mnist.yaml",
    "ls": "example: aebench ls models",
    "status": "example: aebench status results/mnist",
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

    p = add("run", "train and evaluate every job of a suite, writing results/<suite>/")
    _add_suite_args(p)
    p.add_argument("--results", default="results", help="results folder (default: results/)")
    p.add_argument("--data-root", default=None, help="data folder (default: $AEBENCH_DATA or ~/.cache/aebench/data)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--launcher", default=None, help="override the suite's launcher (see `aebench ls launchers`)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-download", action="store_true", help="never download datasets")

    p = add("validate", "check a suite against the registries without training anything")
    _add_suite_args(p)

    p = add("ls", "list registered parts with one-line descriptions")
    p.add_argument("kind", choices=["models", "metrics", "datasets", "backbones", "samplers", "launchers"])

    p = add("status", "list each job of a results folder as done, running, failed, damaged or pending")
    p.add_argument("results_dir", help="results/<suite>")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from aebench.runner.settings import RunSettings
    from aebench.runner.suite_runner import run_suite, summarize
    from aebench.suite import load_suite

    overrides = list(args.overrides)
    if args.launcher:
        overrides.append(f"launcher.name={args.launcher}")
    suite = load_suite(args.suite, overrides, args.models, args.seeds)
    run = RunSettings(results=Path(args.results), data_root=args.data_root or suite.data.root,
                      device=args.device, progress=not args.no_progress and sys.stderr.isatty(),
                      download=not args.no_download, debug=args.debug, plugins=tuple(args.plugins))
    from aebench.runner.settings import resolve_device

    resolve_device(run.device)  # refuse a missing device before anything runs
    outcomes = []
    try:
        outcomes = run_suite(suite, run)
    except KeyboardInterrupt:
        print("\naebench: interrupted; finished jobs are kept, run the same command again to go on",
              file=sys.stderr)
        from aebench.store.table import collect

        rows = collect(run.suite_dir(suite.name))
        print(f"aebench: {sum(r['status'] == 'done' for r in rows)} of {len(suite.jobs())} jobs done",
              file=sys.stderr)
        return 130
    code = summarize(outcomes)
    print(f"aebench: results in {run.suite_dir(suite.name)}", file=sys.stderr)
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    from aebench.suite import load_suite

    suite = load_suite(args.suite, args.overrides, args.models, args.seeds)
    jobs = suite.jobs()
    print(f"{args.suite}: ok: suite {suite.name!r}, {len(suite.models)} model entries, "
          f"{len(suite.datasets)} dataset(s), {len(suite.seeds)} seed(s), {len(jobs)} jobs")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from aebench.registry import REGISTRIES

    reg = REGISTRIES[args.kind]
    width = max((len(n) for n in reg.names()), default=4)
    for e in reg.entries():
        extra = ""
        if args.kind == "metrics":
            needs = ", ".join(e.meta.get("needs", ())) or "-"
            arrow = {"min": "lower is better", "max": "higher is better"}.get(e.meta.get("direction"), "")
            extra = f"  [{arrow}; needs: {needs}]"
        alias = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
        src = "" if e.source.startswith("aebench") else f"  <{e.source}>"
        print(f"{e.name:<{width}}  {e.description}{alias}{extra}{src}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from aebench.store.table import collect

    d = Path(args.results_dir)
    if not d.is_dir():
        raise AebenchError(f"{d}: no such results folder")
    rows = collect(d)
    if not rows:
        print(f"{d}: no jobs yet")
        return 0
    for r in rows:
        what = r.get("label") or r.get("model") or "?"
        reason = f"  {r['reason']}" if r.get("reason") else ""
        print(f"{r['status']:<8} {r['job_id']:<44} {what} {r.get('dataset', '')} seed {r.get('seed', '')}{reason}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "running", "failed", "damaged", "pending")}
    print(", ".join(f"{v} {k}" for k, v in counts.items() if v))
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "ls": cmd_ls, "status": cmd_status}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from aebench.plugins import load_entry_points, load_plugins

        load_entry_points()
        load_plugins(args.plugins)
        return COMMANDS[args.command](args)
    except AebenchError as e:
        if args.debug:
            raise
        print(f"aebench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("\naebench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
