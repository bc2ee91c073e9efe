"""The evaluation stage: compute what a trained job's evaluation lacks, reuse every stored record.

Each metric's result is a record in ``eval/<metric>-<key>.json``, keyed by the training id, the metric's
settings and what it depends on (``aebench.job``). A record whose key is unchanged is reused as it is, so
adding a metric computes that metric alone and changing ``eval.n_samples`` recomputes only the metrics that
use samples. ``metrics.json`` is then assembled from the records the suite asks for: their values, not their
details (per-dimension lists, example images), which only the records hold.
"""

from __future__ import annotations

import time
from typing import Any

from aebench import faults
from aebench.job import Job, MetricRequest, digest
from aebench.runner.job import GRID_N, _now, device_name, load_split, versions
from aebench.runner.settings import RunSettings
from aebench.store import jobdir as files
from aebench.store.jobdir import JobDir

SAMPLERS_RECORD = "_samplers"  # which samplers can serve the model (applies_to), stored like a metric record


def missing_requests(jd: JobDir, requests: list[MetricRequest]) -> list[MetricRequest]:
    return [r for r in requests if jd.read_record(r.name, r.key) is None]


def _samplers_key(job: Job) -> str:
    return digest({"train": job.hash, "samplers": [s.as_pair() for s in job.evaluation.samplers]})


def image_files(job: Job, usable: list[str], has_encoder: bool) -> list[str]:
    names = [f"samples-{s}.png" for s in usable]
    return names + (["reconstructions.png", "interpolation.png"] if has_encoder else [])


def load_model(job: Job, jd: JobDir, image_shape: tuple[int, ...], device) -> Any:
    """The trained model from ``checkpoint.pt`` (``weights_only``), or the adapter of an outside model."""
    import torch

    from aebench.models.base import build_model

    if job.origin and job.origin.get("kind") == "pythae":
        from aebench.adapters.pythae import load_pythae

        return load_pythae(jd / job.origin["path"], job.likelihood, job.likelihood_options).to(device)
    model = build_model(job.model, image_shape, job.latent_dim, job.params, job.backbone, job.backbone_options,
                        job.likelihood, job.likelihood_options)
    model.load_state_dict(torch.load(jd / files.CHECKPOINT, map_location="cpu", weights_only=True))
    return model.to(device)


def evaluate_job(job: Job, jd: JobDir, run: RunSettings, requests: list[MetricRequest], model: Any = None) -> list[str]:
    """Compute the records ``requests`` lacks, write the missing images and ``metrics.json``; returns the names
    of the metrics computed. ``model`` is the model just trained (else it is loaded from the checkpoint)."""
    missing = missing_requests(jd, requests)
    prov = jd.read_json(files.PROVENANCE) or {}
    samplers_rec = jd.read_record(SAMPLERS_RECORD, _samplers_key(job))
    ctx = None
    t0 = time.perf_counter()
    need_images = samplers_rec is None or any(
        not (jd / f).exists() for f in image_files(job, samplers_rec["values"]["usable"],
                                                   samplers_rec["values"]["has_encoder"]))
    if missing or need_images:
        ctx = _context(job, jd, run, model, prov)
        samplers_rec = {"values": {"usable": list(ctx.samplers), "skipped": dict(ctx.skipped_samplers),
                                   "has_encoder": bool(getattr(ctx.model, "has_encoder", True))}}
        jd.write_record(SAMPLERS_RECORD, _samplers_key(job), samplers_rec)
    from aebench.metrics.base import evaluate_metric, merge

    records: dict[str, dict[str, Any]] = {}
    for r in requests:
        rec = jd.read_record(r.name, r.key)
        if rec is None:
            rec = evaluate_metric(ctx, r.name, r.settings)
            rec.update(settings=r.settings, depends=r.depends, version=r.version, computed=_now())
            jd.write_record(r.name, r.key, rec)
        records[r.name] = rec
    if ctx is not None:
        _write_images(ctx, jd)
    eval_seconds = time.perf_counter() - t0
    result = files.without_details(merge(records))
    result["not_applicable"].update({f"sampler/{k}": v for k, v in samplers_rec["values"]["skipped"].items()})
    train_seconds = float(prov.get("train_seconds", prov.get("wall_seconds", 0.0)) or 0.0)
    if "params" in prov:
        result["values"]["cost/params"] = float(prov["params"])
    if not job.evaluated_only:
        result["values"].update({"cost/train_seconds": train_seconds,
                                 "cost/seconds_per_epoch": train_seconds / max(int(prov.get("epochs", 1) or 1), 1)})
    result["values"]["cost/eval_seconds"] = sum(float(rec.get("seconds", 0.0)) for rec in records.values())
    result["sampled_with"] = list(samplers_rec["values"]["usable"])
    result["evaluation"] = {
        "keys": {r.name: r.key for r in requests}, "settings_ids": {r.name: r.setting_id for r in requests},
        "plan": job.evaluation.to_dict(), "computed": [r.name for r in missing], "finished": _now(),
        "seconds": eval_seconds, "device": device_name(ctx.device) if ctx else None, "versions": versions(),
    }
    faults.point("metrics_write")
    jd.write_json(files.METRICS, result)
    faults.point("metrics_written")
    return [r.name for r in missing]


def _context(job: Job, jd: JobDir, run: RunSettings, model: Any, prov: dict[str, Any]):
    from pathlib import Path

    from aebench.metrics.base import EvalContext
    from aebench.runner.settings import prepare_device

    device = prepare_device(run.device)
    train_set = load_split(job, "train", run, device)
    test_set = load_split(job, job.evaluation.split, run, device)
    if model is None:
        model = load_model(job, jd, train_set.shape, device)
    model.eval()
    ev = job.evaluation
    return EvalContext(
        model=model, train=train_set, test=test_set, device=device, seed=job.seed,
        samplers=tuple(s.name for s in ev.samplers), n_samples=ev.n_samples, batch_size=ev.batch_size,
        cache_dir=Path(run.results) / ".cache", sampler_options={s.name: dict(s.options) for s in ev.samplers},
        info={"train_seconds": prov.get("train_seconds"), "epochs": prov.get("epochs"), "dataset": job.dataset,
              "params": prov.get("params", sum(p.numel() for p in model.parameters()))},
    )


def _write_images(ctx, jd: JobDir) -> None:
    """Reconstructions, samples per usable sampler and an interpolation, where the folder lacks them."""
    import torch

    from aebench.metrics.base import to_uint8
    from aebench.runner.grids import interleave, save_grid

    has_encoder = getattr(ctx.model, "has_encoder", True)
    for name in ctx.samplers:
        if not (jd / f"samples-{name}.png").exists():
            save_grid(ctx.samples(name, GRID_N), jd / f"samples-{name}.png")
    if not has_encoder:
        return
    n_show = min(GRID_N, len(ctx.test))
    if not (jd / "reconstructions.png").exists():
        x = ctx.test.images[:n_show]
        save_grid(interleave(x.cpu(), ctx.reconstructions("test")[:n_show]), jd / "reconstructions.png")
    if not (jd / "interpolation.png").exists():
        with torch.no_grad():
            ctx.model.eval()
            codes = ctx.codes("test").mean[:2]
            if len(codes) == 2:
                t = torch.linspace(0, 1, 10).unsqueeze(1)
                z = (1 - t) * codes[0] + t * codes[1]
                save_grid(to_uint8(ctx.model.generate(z.to(ctx.device))).cpu(), jd / "interpolation.png")
