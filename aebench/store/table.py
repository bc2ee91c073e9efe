"""``results/<suite>/results.csv``: one row per job, one column per metric, regenerated from job folders.

The job folders are the truth; the table is derived, so regenerating it after any interruption is safe.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from aebench.store.atomic import atomic_write_text
from aebench.store.jobdir import CONFIG, FAILED, METRICS, PROVENANCE, JobDir

RESULTS_CSV = "results.csv"
FIXED = ["job_id", "suite", "model", "label", "dataset", "seed", "protocol", "status", "reason"]


def job_dirs(suite_dir: Path) -> list[JobDir]:
    return [JobDir(p) for p in sorted(Path(suite_dir).iterdir()) if p.is_dir() and (p / CONFIG).exists()]


def collect(suite_dir: str | Path) -> list[dict[str, Any]]:
    """A row per job folder: identity, status (done, failed, damaged, running, pending) and metric values."""
    from aebench.suite import Job

    rows = []
    for jd in job_dirs(Path(suite_dir)):
        cfg = jd.read_json(CONFIG)
        if not isinstance(cfg, dict):
            rows.append({"job_id": jd.path.name, "status": "damaged", "reason": f"unreadable {jd / CONFIG}"})
            continue
        try:
            job = Job.from_config(cfg)
            protocol = job.protocol
        except (TypeError, KeyError, ValueError):
            rows.append({"job_id": jd.path.name, "status": "damaged", "reason": f"invalid {jd / CONFIG}"})
            continue
        status = jd.status()
        row: dict[str, Any] = {
            "job_id": jd.path.name, "suite": job.suite, "model": job.model, "label": job.label,
            "dataset": job.dataset, "seed": job.seed, "protocol": protocol, "status": status, "reason": "",
        }
        if status == "done":
            metrics = jd.read_json(METRICS) or {}
            row.update(metrics.get("values", {}))
            prov = jd.read_json(PROVENANCE) or {}
            row["device"] = prov.get("device", "")
        elif status == "failed":
            row["reason"] = (jd.read_json(FAILED) or {}).get("reason", "")
        elif status == "damaged":
            row["reason"] = jd.done_problem() or ""
        rows.append(row)
    return rows


def write_results_csv(suite_dir: str | Path) -> Path:
    """Regenerate ``results.csv`` atomically from the job folders."""
    rows = collect(suite_dir)
    extra = sorted({k for r in rows for k in r} - set(FIXED))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIXED + extra, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in FIXED + extra})
    return atomic_write_text(Path(suite_dir) / RESULTS_CSV, buf.getvalue())
