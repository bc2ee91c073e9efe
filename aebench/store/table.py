"""``results/<suite>/results.csv``: one row per job, one column per metric, regenerated from job folders.

The job folders are the truth; the table is derived, so regenerating it after any interruption is safe.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aebench import faults
from aebench.store.atomic import atomic_write_text, remove_stale_temps
from aebench.store.jobdir import CONFIG, FAILED, LOCK, METRICS, PROVENANCE, JobDir

RESULTS_CSV = "results.csv"
FIXED = ["job_id", "suite", "model", "label", "dataset", "seed", "protocol", "origin", "trial", "status", "reason"]
SETTINGS_PREFIX = "settings:"  # columns "settings:<metric>": the id of the settings a metric was computed under


def job_dirs(suite_dir: Path) -> list[JobDir]:
    return [JobDir(p) for p in sorted(Path(suite_dir).iterdir()) if p.is_dir() and (p / CONFIG).exists()]


def legacy_dirs(suite_dir: Path) -> list[JobDir]:
    """Job folders of the previous layout (one hash over training and evaluation): ``aebench migrate`` them."""
    if not Path(suite_dir).is_dir():
        return []
    return [jd for jd in job_dirs(Path(suite_dir)) if jd.layout() == 1]


def collect(suite_dir: str | Path) -> list[dict[str, Any]]:
    """A row per job folder: identity, status (done, failed, damaged, running, pending) and metric values.

    Never raises for a damaged folder: anything unreadable or malformed becomes a ``damaged`` row whose
    reason names the file, so ``status``, reports and leaderboards list it apart.
    """
    rows = []
    for jd in job_dirs(Path(suite_dir)):
        try:
            rows.append(_row(jd))
        except (OSError, TypeError, KeyError, ValueError, AttributeError) as e:
            rows.append({"job_id": jd.path.name, "status": "damaged",
                         "reason": f"unreadable {jd.path} ({e.__class__.__name__}: {e})"})
    return rows


def _row(jd: JobDir) -> dict[str, Any]:
    from aebench.job import Job

    cfg = jd.read_json(CONFIG)
    if not isinstance(cfg, dict):
        return {"job_id": jd.path.name, "status": "damaged", "reason": f"unreadable {jd / CONFIG}"}
    if cfg.get("layout", 1) == 1:
        return {"job_id": jd.path.name, "suite": cfg.get("suite"), "model": cfg.get("model"),
                "label": cfg.get("label"), "dataset": cfg.get("dataset"), "seed": cfg.get("seed"), "status": "legacy",
                "reason": f"previous layout: convert it with `aebench migrate {jd.path.parent}`"}
    try:
        job = Job.from_config(cfg)
        protocol = job.protocol
    except (TypeError, KeyError, ValueError, AttributeError):
        return {"job_id": jd.path.name, "status": "damaged", "reason": f"invalid {jd / CONFIG}"}
    problem = jd.done_problem()
    status = jd.status(problem)
    row: dict[str, Any] = {
        "job_id": jd.path.name, "suite": job.suite, "model": job.model, "label": job.label,
        "dataset": job.dataset, "seed": job.seed, "protocol": protocol,
        "origin": (job.origin or {}).get("kind", "aebench"), "trial": job.trial, "status": status, "reason": "",
    }
    if status == "done":
        metrics = jd.read_json(METRICS) or {}
        values = metrics.get("values")
        if not isinstance(values, dict):
            row.update(status="damaged", reason=f"damaged {jd / METRICS} (no 'values' mapping)")
            return row
        row.update({k: v for k, v in values.items() if k not in FIXED})
        ids = (metrics.get("evaluation") or {}).get("settings_ids") or {}
        row.update({f"{SETTINGS_PREFIX}{m}": i for m, i in ids.items()})
        prov = jd.read_json(PROVENANCE) or {}
        row["device"] = prov.get("device", "")
    elif status == "failed":
        failed = jd.read_json(FAILED)
        row["reason"] = str(failed.get("reason", "")) if isinstance(failed, dict) else f"unreadable {jd / FAILED}"
    elif status == "damaged":
        row["reason"] = problem or ""
    return row


def write_results_csv(suite_dir: str | Path) -> Path:
    """Regenerate ``results.csv`` atomically from the job folders.

    Under the suite folder's lock, so that two runs finishing at once cannot leave the table of the one
    that looked first: the last writer reads the folders after every other writer is through.
    """
    suite_dir = Path(suite_dir)
    with suite_lock(suite_dir):
        remove_stale_temps(suite_dir, RESULTS_CSV)
        rows = collect(suite_dir)
        extra = sorted({k for r in rows for k in r} - set(FIXED))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIXED + extra, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in FIXED + extra})
        faults.point("results_csv")
        return atomic_write_text(suite_dir / RESULTS_CSV, buf.getvalue())


@contextlib.contextmanager
def suite_lock(suite_dir: Path) -> Iterator[None]:
    """Hold the suite folder's lock (blocking: the writers it guards take well under a second)."""
    suite_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(suite_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
