"""The ``aebench`` command line.

User errors print one line and exit with code 2 (``--debug`` shows the traceback); a suite with
failed jobs exits with 1 after its summary; Ctrl-C stops cleanly with 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aebench.cli_parser import build_parser
from aebench.errors import AebenchError, ResultsUnwritable


def cmd_run(args: argparse.Namespace) -> int:
    from aebench.runner.suite_runner import run_suite, summarize
    from aebench.suite import load_suite

    overrides = list(args.overrides)
    if args.launcher:
        overrides.append(f"launcher.name={args.launcher}")
    suite = load_suite(args.suite, overrides, args.models, args.seeds)
    if args.no_wait:
        from aebench.registry import LAUNCHERS

        if not LAUNCHERS.meta(suite.launcher.name).get("detach"):
            raise AebenchError(f"--no-wait needs a launcher that hands jobs to a scheduler (slurm); "
                               f"{suite.launcher.name!r} runs them in this command")
        suite.launcher.options["wait"] = False
    run = _run_settings(args, suite)
    outcomes = []
    try:
        outcomes = run_suite(suite, run)
    except KeyboardInterrupt:
        print("\naebench: interrupted; finished jobs are kept, run the same command again to go on",
              file=sys.stderr)
        _stopped_summary(suite, run)
        return 130
    except ResultsUnwritable:
        _stopped_summary(suite, run)
        raise
    code = summarize(outcomes)
    print(f"aebench: results in {run.suite_dir(suite.name)}", file=sys.stderr)
    if args.report:
        from aebench.report import build_report

        files = build_report(run.suite_dir(suite.name))
        print(f"aebench: report in {files.html} and {files.markdown}", file=sys.stderr)
    return code


def _run_settings(args: argparse.Namespace, suite):
    from aebench.runner.settings import RunSettings, resolve_device

    run = RunSettings(results=Path(args.results), data_root=args.data_root or suite.data.root,
                      device=args.device, progress=not args.no_progress and sys.stderr.isatty(),
                      download=not args.no_download, debug=args.debug, plugins=tuple(args.plugins),
                      stack="off" if getattr(args, "no_stack", False) else getattr(args, "stack", "auto"))
    resolve_device(run.device)  # refuse a missing device before anything runs
    return run


def cmd_evaluate(args: argparse.Namespace) -> int:
    from aebench.runner.suite_runner import run_suite, summarize
    from aebench.suite import load_suite

    if args.checkpoint and args.pythae:
        raise AebenchError("give --checkpoint or --pythae, not both")
    if args.model and not args.checkpoint:
        raise AebenchError("--model names the model of --checkpoint FILE; add --checkpoint")
    suite = load_suite(args.suite, args.overrides, args.models, args.seeds)
    run = _run_settings(args, suite)
    jobs = None
    if args.checkpoint or args.pythae:
        from aebench.runner import external
        from aebench.runner.suite_runner import refuse_legacy, snapshot_suite

        refuse_legacy(run.suite_dir(suite.name))
        snapshot_suite(suite, run)
        if args.checkpoint:
            jobs = [external.checkpoint_job(suite, args.checkpoint, args.model, run, args.label, args.dataset,
                                            args.seed)]
        else:
            jobs = [external.pythae_job(suite, args.pythae, run, args.label, args.dataset, args.seed)]
    try:
        outcomes = run_suite(suite, run, jobs=jobs, train=False)
    except KeyboardInterrupt:
        print("\naebench: interrupted; finished evaluations are kept, run the same command again to go on",
              file=sys.stderr)
        return 130
    code = summarize(outcomes)
    print(f"aebench: results in {run.suite_dir(suite.name)}", file=sys.stderr)
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    from aebench.store.migrate import migrate

    d = Path(args.results_dir)
    if not d.is_dir():
        raise AebenchError(f"{d}: no such results folder")
    moved, aside = migrate(d)
    print(f"{d}: migrated {moved} job folder(s) to the current layout (nothing retrained)"
          + (f"; {aside} unfinished folder(s) set aside in {d / '.legacy'}" if aside else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from aebench.report import build_report
    from aebench.report.leaderboard import suite_dirs

    dirs = suite_dirs(args.results_dir)
    if len(dirs) > 1 and args.out:
        raise AebenchError(f"{args.results_dir} holds {len(dirs)} suites; --out needs one (results/<suite>)")
    for d in dirs:
        files = build_report(d, args.out, embed=args.embed)
        how = "self-contained" if args.embed else "its images in figures/ and images/ beside it"
        print(f"aebench: report written: {files.html} ({how}) and {files.markdown}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from aebench.report.leaderboard import build_leaderboard, suite_dirs, to_text

    for i, d in enumerate(suite_dirs(args.results_dir)):
        print(("\n" if i else "") + to_text(build_leaderboard(d, args.metric)))
    return 0


def _stopped_summary(suite, run) -> None:
    """What a stopped run leaves: the suite's jobs by status, read back from the job folders."""
    from aebench.store.table import collect

    try:
        ids = {job.id: job for job in suite.jobs()}
        rows = [r for r in collect(run.suite_dir(suite.name)) if r["job_id"] in ids]
    except (OSError, KeyboardInterrupt):
        return
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"aebench: {len(done)} of {len(ids)} jobs done, {len(failed)} failed, "
          f"{len(ids) - len(done) - len(failed)} not finished", file=sys.stderr)
    for r in done:
        print(f"  done   {r.get('label')} ({r['job_id']})", file=sys.stderr)
    for r in failed:
        print(f"  FAILED {r.get('label')} ({r['job_id']}): {r.get('reason', '')}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from aebench.suite import load_suite

    suite = load_suite(args.suite, args.overrides, args.models, args.seeds)
    jobs = suite.jobs()
    tuned = sum(suite.tuned(m) for m in suite.models) * len(suite.datasets) * len(suite.seeds)
    trials = f"{len(suite.trial_jobs())} tuning trials, then " if tuned else ""
    print(f"{args.suite}: ok: suite {suite.name!r}, {len(suite.models)} model entries, "
          f"{len(suite.datasets)} dataset(s), {len(suite.seeds)} seed(s), {trials}{len(jobs) + tuned} jobs")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from aebench.registry import REGISTRIES

    reg = REGISTRIES[args.kind]
    if args.details:
        return _details(args.kind, args.details)
    if args.markdown:
        from aebench.docs import print_markdown

        return print_markdown(args.kind, builtin_only=not args.plugins)  # --plugin FILE: its models too
    width = max((len(n) for n in reg.names()), default=4)
    for e in reg.entries():
        extra = ""
        if args.kind == "metrics":
            needs = ", ".join(e.meta.get("needs", ())) or "-"
            arrow = {"min": "lower is better", "max": "higher is better"}.get(e.meta.get("direction"),
                                                                              "direction per key")
            extra = f"  [{arrow}; needs: {needs}]"
        alias = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
        src = "" if e.source.startswith("aebench") else f"  <{e.source}>"
        print(f"{e.name:<{width}}  {e.description}{alias}{extra}{src}")
    return 0


def _details(kind: str, name: str) -> int:
    """The objective card of a model (``Autoencoder.card``) and its config's fields with defaults."""
    import dataclasses

    from aebench.registry import REGISTRIES

    if kind != "models":
        raise AebenchError("--details works with `aebench ls models`")
    entry = REGISTRIES[kind].entry(name)
    cls = REGISTRIES[kind].get(name)
    print(f"{entry.name}: {entry.description}")
    card = getattr(cls, "card", {}) or {}
    for key in ("objective", "reduction", "weights", "optimisers", "paper"):
        print(f"  {key + ':':<11} {card.get(key, '(not stated)')}")
    config = getattr(cls, "Config", None)
    if config is not None and dataclasses.is_dataclass(config):
        defaults = []
        for f in dataclasses.fields(config):
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            defaults.append(f"{f.name}={value!r}")
        print(f"  {'params:':<11} {', '.join(defaults) or 'none'}")
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
    notes = _launcher_notes(d, rows)
    for r in rows:
        what = r.get("label") or r.get("model") or "?"
        reason = f"  {r['reason']}" if r.get("reason") else ""
        reason += f"  [{notes[r['job_id']]}]" if r["job_id"] in notes else ""
        print(f"{r['status']:<8} {r['job_id']:<44} {what} {r.get('dataset', '')} seed {r.get('seed', '')}{reason}")
    counts = {s: sum(r["status"] == s for r in rows)
              for s in ("done", "trained", "running", "failed", "damaged", "pending", "legacy")}
    print(", ".join(f"{v} {k}" for k, v in counts.items() if v))
    return 0


def _launcher_notes(d: Path, rows: list[dict]) -> dict[str, str]:
    """Notes from the launcher that last ran the suite (a Slurm job id and state), asked of that launcher only."""
    import json

    from aebench.registry import LAUNCHERS

    try:
        name = json.loads((d / "launcher.json").read_text())["name"]
        launcher = LAUNCHERS.get(name)
    except (OSError, ValueError, KeyError, TypeError, AebenchError):
        return {}
    return launcher.notes(d, rows)


def cmd_train_extractor(args: argparse.Namespace) -> int:
    from aebench.metrics.digits_extractor import train_extractor

    meta = train_extractor(args.data_root, args.out, epochs=args.epochs, seed=args.seed, threads=args.threads,
                           log=lambda m: print(m, file=sys.stderr))
    print(f"{args.out}: test accuracy {meta['test_accuracy']:.4f}, sha256 {meta['sha256']}")
    print("use it with the fid setting feature_extractor_weights_path, or replace aebench/assets/digits_cnn.pt "
          "and ASSET_SHA256 in aebench/metrics/digits_extractor.py")
    return 0


def cmd_strip(args: argparse.Namespace) -> int:
    from aebench.store.strip import describe, strip

    d = Path(args.results_dir)
    if not d.is_dir():
        raise AebenchError(f"{d}: no such results folder")
    keep = None
    if args.images:  # the report's own rule: each model's first seed (per protocol when several), no trials
        from aebench.report.results import load_results

        keep = set(load_results(d).first_seed_jobs()["job_id"])
    print(describe(d, strip(d, keep), args.images))
    return 0


COMMANDS = {
    "run": cmd_run, "evaluate": cmd_evaluate, "migrate": cmd_migrate, "validate": cmd_validate, "ls": cmd_ls,
    "status": cmd_status, "report": cmd_report, "leaderboard": cmd_leaderboard, "strip": cmd_strip,
    "train-extractor": cmd_train_extractor,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from aebench.plugins import load_entry_points, load_plugins

        load_entry_points()
        try:
            load_plugins(args.plugins)
        except AebenchError as e:
            raise AebenchError(f"--plugin: {e}") from None
        return COMMANDS[args.command](args)
    except AebenchError as e:
        if args.debug:
            raise
        print(f"aebench: error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, always
        return e.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("\naebench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `aebench ls models | head`: the reader left, nothing to say
        sys.stdout = None
        return 0


if __name__ == "__main__":
    sys.exit(main())
