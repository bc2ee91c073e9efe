"""Score models aebench did not train: a checkpoint of a registered model, or a folder saved by pythae.

The model is placed in the suite's results as an ordinary job folder whose training stage is marked done
(``origin`` says where the weights came from, and reports mark the job as evaluated only); the evaluation
stage then runs exactly as for a trained job, so ``report`` and ``leaderboard`` show it beside the others.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from aebench.errors import AebenchError
from aebench.job import Job
from aebench.runner.job import _now, versions
from aebench.runner.settings import RunSettings
from aebench.store import jobdir as files
from aebench.store.jobdir import JobDir, sha256_file
from aebench.suite import Suite, loader_options


def _template(suite: Suite, dataset: str | None, seed: int) -> tuple[Any, Job]:
    """The suite's dataset entry to score on, and a job carrying the suite's protocol."""
    entries = suite.datasets
    if dataset is not None:
        entries = [d for d in suite.datasets if d.name == dataset]
        if not entries:
            raise AebenchError(f"--dataset {dataset!r} is not a dataset of the suite; allowed: "
                               f"{', '.join(d.name for d in suite.datasets)}")
    ds = entries[0]
    job = Job(suite=suite.name, model="?", label="?", params={}, dataset=ds.name, dataset_options=loader_options(ds),
              seed=seed, backbone=suite.backbone.name, backbone_options=dict(suite.backbone.options),
              latent_dim=ds.options.get("latent_dim", suite.latent_dim), likelihood=suite.likelihood.name,
              likelihood_options=dict(suite.likelihood.options), train=copy.deepcopy(suite.train),
              train_limit=suite.data.train_limit, evaluation=suite.evaluation())
    return ds, job


def _image_shape(job: Job, run: RunSettings) -> tuple[int, ...]:
    from aebench.data import load

    return load(job.dataset, "test", run.data_root, run.download, job.dataset_options).shape


def _write(job: Job, run: RunSettings, files_in: dict[str, Path], provenance: dict[str, Any]) -> Job:
    """Lay out the job folder (config, weights, provenance, empty curve) and mark its training done."""
    jd = JobDir(run.suite_dir(job.suite) / job.id)
    if jd.path.exists() and jd.is_trained():
        return job
    jd.lock()
    try:
        jd.reset()
        jd.write_json(files.CONFIG, job.config())
        for name, src in files_in.items():
            dst = jd / name
            if src.is_dir():
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)
        (jd / files.CURVE).write_text("epoch\n")
        jd.write_json(files.PROVENANCE, {"versions": versions(), "imported": _now(), "seed": job.seed,
                                         "origin": job.origin, **provenance})
        jd.mark_trained()
    finally:
        jd.unlock()
    return job


def checkpoint_job(suite: Suite, path: str, model: str | None, run: RunSettings, label: str | None = None,
                   dataset: str | None = None, seed: int = 0) -> Job:
    """A job for weights in ``path`` of registered model ``model``, built with the suite's backbone and latent size."""
    import torch

    from aebench.models.base import build_model
    from aebench.registry import MODELS

    src = Path(path)
    if model is None:
        raise AebenchError("--checkpoint needs --model NAME: the registered model the weights belong to "
                           "(load its plugin with --plugin)")
    try:
        model = MODELS.canonical(model)
    except AebenchError as e:
        raise AebenchError(f"--model: {e}") from None
    if not src.is_file():
        raise AebenchError(f"--checkpoint {path}: no such file")
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything that is not a torch file
        raise AebenchError(f"--checkpoint {path}: not a PyTorch state dict saved with torch.save "
                           f"({e.__class__.__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a resume state: {"model": ..., "optimizers": ...}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AebenchError(f"--checkpoint {path}: expected a state dict (parameter name -> tensor)")
    ds, job = _template(suite, dataset, seed)
    spec = next((m for m in suite.models if m.name == model), None)
    job.model, job.params = model, dict(spec.params) if spec else {}
    job.label = label or f"{model}-checkpoint"
    shape = _image_shape(job, run)
    net = build_model(model, shape, job.latent_dim, job.params, job.backbone, job.backbone_options, job.likelihood,
                      job.likelihood_options)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        raise AebenchError(f"--checkpoint {path}: does not fit model {model!r} (backbone {job.backbone}, latent "
                           f"{job.latent_dim}, images {tuple(shape)}): {'; '.join(lines)[:300]}") from None
    job.origin = {"kind": "checkpoint", "sha256": sha256_file(src), "source": str(src.resolve())}
    return _write(job, run, {files.CHECKPOINT: src},
                  {"params": sum(p.numel() for p in net.parameters()), "epochs": None})


def pythae_job(suite: Suite, folder: str, run: RunSettings, label: str | None = None, dataset: str | None = None,
               seed: int = 0) -> Job:
    """A job for the model pythae saved in ``folder`` (copied into the job folder, so the result stands alone)."""
    from aebench.adapters.pythae import check_folder, load_pythae

    src = check_folder(folder)
    wrapped = load_pythae(src, suite.likelihood.name, suite.likelihood.options)
    ds, job = _template(suite, dataset, seed)
    shape = _image_shape(job, run)
    pcfg = json.loads((src / "model_config.json").read_text())
    if tuple(pcfg.get("input_dim") or ()) != tuple(shape):
        raise AebenchError(f"--pythae {folder}: the model takes images of shape {tuple(pcfg['input_dim'])}, the "
                           f"suite's dataset {job.dataset!r} has {tuple(shape)}")
    job.model = f"pythae-{wrapped.pythae_name.lower()}"
    job.label = label or job.model
    job.backbone, job.backbone_options = "pythae", {}
    job.latent_dim = wrapped.latent_dim
    digest = sha256_file(src / "model.pt")
    job.params = {"model_config": pcfg}
    job.origin = {"kind": "pythae", "sha256": digest, "path": "pythae", "source": str(src.resolve())}
    return _write(job, run, {"pythae": src}, {"params": sum(p.numel() for p in wrapped.parameters()),
                                              "epochs": None})
