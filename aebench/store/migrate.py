"""``aebench migrate``: job folders of layout 1 (one hash over training and evaluation) to layout 2.

Each finished folder is renamed to its training id, its ``config.json`` rewritten as the training
configuration, its ``metrics.json`` split into one evaluation record per metric under the keys the same suite
computes today, and both markers written. Nothing is retrained and no value changes: a rerun of the suite that
produced them finds every job up to date. Unfinished folders hold no result; they are set aside in
``.legacy/`` (kept, not read).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aebench.job import Evaluation, Job
from aebench.specs import NamedSpec, TrainSpec
from aebench.store import jobdir as files
from aebench.store.jobdir import JobDir


def job_from_legacy(cfg: dict[str, Any]) -> Job:
    """The layout-2 job (training config plus the evaluation it was scored with) of a layout-1 config."""
    data, ev = cfg.get("data") or {}, cfg["eval"]
    evaluation = Evaluation(
        metrics=[NamedSpec(n, dict(s)) for n, s in cfg["metrics"]],
        samplers=[NamedSpec(s) if isinstance(s, str) else NamedSpec(s[0], dict(s[1])) for s in ev["samplers"]],
        n_samples=int(ev["n_samples"]), batch_size=int(ev["batch_size"]), test_limit=data.get("test_limit"))
    return Job(suite=cfg["suite"], model=cfg["model"], label=cfg["label"], params=dict(cfg["params"]),
               dataset=cfg["dataset"], dataset_options=dict(cfg["dataset_options"]), seed=int(cfg["seed"]),
               backbone=cfg["backbone"], backbone_options=dict(cfg["backbone_options"]),
               latent_dim=int(cfg["latent_dim"]), likelihood=cfg["likelihood"],
               likelihood_options=dict(cfg["likelihood_options"]), train=TrainSpec(**cfg["train"]),
               train_limit=data.get("train_limit"), evaluation=evaluation)


def _split(old: dict[str, Any], name: str) -> dict[str, Any]:
    """One metric's record out of a layout-1 ``metrics.json``."""
    prefix = f"{name}/"
    na = (old.get("not_applicable") or {}).get(name)
    return {"values": {k: v for k, v in (old.get("values") or {}).items() if k.startswith(prefix)},
            "details": {k: v for k, v in (old.get("details") or {}).items() if k.startswith(prefix)},
            "not_applicable": na, "seconds": float((old.get("seconds") or {}).get(name, 0.0)), "migrated": True}


def migrate_one(jd: JobDir) -> Path:
    """Convert one finished layout-1 folder in place (then rename it); returns its new path."""
    from aebench.runner.evaluate import SAMPLERS_RECORD, _samplers_key, evaluate_job
    from aebench.runner.settings import RunSettings

    cfg = jd.read_json(files.CONFIG)
    job = job_from_legacy(cfg)
    old = jd.read_json(files.METRICS) or {}
    stripped = _stripped(jd)
    values = old.get("values") or {}
    prov = jd.read_json(files.PROVENANCE) or {}
    prov.update(train_seconds=values.get("cost/train_seconds", prov.get("wall_seconds")),
                params=values.get("cost/params"), migrated_from=jd.path.name)
    jd.write_json(files.PROVENANCE, prov)
    jd.write_json(files.CONFIG, job.config())
    jd.mark_trained(**({"stripped": stripped} if stripped else {}))
    for r in job.evaluation.requests(job.hash):
        jd.write_record(r.name, r.key, {**_split(old, r.name), "settings": r.settings, "depends": r.depends,
                                        "version": r.version})
    jd.write_record(SAMPLERS_RECORD, _samplers_key(job), {"values": {
        "usable": list(old.get("sampled_with") or [s.name for s in job.evaluation.samplers]), "skipped": {},
        "has_encoder": True}})
    run = RunSettings(results=jd.path.parent.parent, progress=False)
    evaluate_job(job, jd, run, job.evaluation.requests(job.hash))
    met = jd.read_json(files.METRICS)  # the costs as measured then (evaluation seconds included image grids)
    met["values"].update({k: v for k, v in values.items() if k.startswith("cost/")})
    jd.write_json(files.METRICS, met)
    jd.mark_done()
    target = jd.path.parent / job.id
    if target != jd.path:
        jd.path.rename(target)
    return target


def _stripped(jd: JobDir) -> list[str]:
    marker = jd.read_json(files.DONE) or {}
    return list(marker.get("stripped") or [])


def migrate(suite_dir: str | Path) -> tuple[int, int]:
    """Migrate every layout-1 folder of ``suite_dir``; returns (migrated, set aside)."""
    from aebench.store.table import legacy_dirs, suite_lock, write_results_csv

    suite_dir = Path(suite_dir)
    moved = aside = 0
    for jd in legacy_dirs(suite_dir):
        jd.lock()
        try:
            finished = jd.is_done()
        finally:
            jd.unlock()
        if finished:
            jd.lock()
            try:
                migrate_one(jd)
            finally:
                jd.unlock()
            moved += 1
        else:
            with suite_lock(suite_dir):
                (suite_dir / ".legacy").mkdir(exist_ok=True)
                shutil.move(str(jd.path), str(suite_dir / ".legacy" / jd.path.name))
            aside += 1
    write_results_csv(suite_dir)
    return moved, aside
