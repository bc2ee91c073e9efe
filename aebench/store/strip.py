"""Slimming a results folder for sharing: weights always, duplicated details and bulky pixels always, image grids
on request.

For every done job that no live process holds (the others are skipped and counted):

- the checkpoint is removed. Neither weights nor images are vouched for by a job's markers (the weights' hash is
  dropped from them and the job stays done; images were never covered), so a stripped job still counts, reports
  and resumes as done;
- a ``metrics.json`` of the previous format, which repeated every record's details, is rewritten without them
  (``jobdir.without_details``), its done marker rewritten to vouch for the new file (``JobDir.rewrite_metrics``);
  only when the records it names hold those same details, else they are kept (compacted);
- example images in the records' details stored in the previous raw format are re-packed as PNG
  (``aebench.metrics.pixels.compact``): the same pixels, a third of the bytes. Keys and values are untouched, so
  every record stays current;
- with ``keep_images`` (``--images``): the PNG grids of jobs not in it, and the example images in their records'
  details, which the report shows for those jobs alone, are removed.

Tuning trials keep their configs, curves and metrics. Every file is rewritten atomically; a strip killed while it
swaps a ``metrics.json`` leaves that job reading as damaged until the next strip completes the swap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from aebench.errors import ResultsLocked
from aebench.store.jobdir import EVAL_DIR, METRICS, METRICS_SWAP, NON_FINITE, JobDir, without_details
from aebench.store.table import job_dirs


@dataclass
class Stripped:
    """What ``strip`` did: counts of files, and the bytes of the rewritten files before and after."""

    checkpoints: int = 0
    images: int = 0
    metrics: int = 0  # metrics.json files rewritten without the records' details
    details_kept: list[str] = field(default_factory=list)  # jobs whose records lack their details: kept
    records: int = 0  # evaluation records rewritten (payloads compacted or dropped)
    bytes_before: int = 0
    bytes_after: int = 0
    locked: list[str] = field(default_factory=list)  # jobs a live process holds: left alone
    interrupted: int = 0  # rewrites a killed strip left, completed


def strip(results_dir: Path, keep_images: set[str] | None = None) -> Stripped:
    """Strip every done job of ``results_dir`` (see the module's docstring); ``keep_images``: the jobs whose
    grids and example images the report shows (None: keep every job's)."""
    out = Stripped()
    for jd in job_dirs(results_dir):
        if not (jd / METRICS_SWAP).exists() and not jd.is_done():
            continue  # not locked for a look: a runner about to start it must not find it held
        try:
            jd.lock()
        except ResultsLocked:
            out.locked.append(jd.path.name)
            continue
        try:
            out.interrupted += jd.finish_rewrite()
            if not jd.is_done():
                continue
            out.checkpoints += jd.strip_checkpoint()
            shown = keep_images is None or jd.path.name in keep_images
            _slim(jd, shown, out)
            if not shown:
                for png in jd.path.glob("*.png"):
                    png.unlink()
                    out.images += 1
        finally:
            jd.unlock()
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _slim(jd: JobDir, shown: bool, out: Stripped) -> None:
    """metrics.json without duplicated details, records with compact (or, where not shown, no) example images."""
    from aebench.metrics.pixels import compact, drop  # numpy and Pillow (aebench.metrics imports torch)

    met = jd.read_json(METRICS)
    if not isinstance(met, dict):
        return
    old_details = met.get("details") if isinstance(met.get("details"), dict) else None
    # the records' details before any is rewritten: metrics.json's copy may go only if they hold all of it
    in_records = jd.details(without_details(met)) if old_details is not None else {}
    duplicated = old_details is not None and all(
        k == NON_FINITE or (k in in_records and in_records[k] == v) for k, v in old_details.items())

    for path in sorted((jd.path / EVAL_DIR).glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        det = rec.get("details") if isinstance(rec, dict) else None
        if not isinstance(det, dict):
            continue
        changed = compact(det)
        changed = (not shown and drop(det)) or changed
        if changed:
            before = _size(path)
            jd.write_json(f"{EVAL_DIR}/{path.name}", rec)
            out.records += 1
            out.bytes_before += before
            out.bytes_after += _size(path)

    if old_details is None:
        return
    if duplicated:
        new = without_details(met)
        out.metrics += 1
    else:
        new = dict(met, details=old_details)
        changed = compact(old_details)
        changed = (not shown and drop(old_details)) or changed
        out.details_kept.append(jd.path.name)
        if not changed:
            return
    before = _size(jd / METRICS)
    jd.rewrite_metrics(new)
    out.bytes_before += before
    out.bytes_after += _size(jd / METRICS)


def describe(d: Path, s: Stripped, images: bool) -> str:
    """The one-paragraph summary ``aebench strip`` prints."""
    mb = 1024 * 1024
    parts = [f"removed {s.checkpoints} checkpoint(s)" + (f" and {s.images} image(s)" if images else "")]
    if s.metrics or s.records:
        parts.append(f"rewrote {s.metrics} metrics.json without the records' details and {s.records} evaluation "
                     f"record(s) with compact example images ({s.bytes_before / mb:.1f} MB -> "
                     f"{s.bytes_after / mb:.1f} MB)")
    line = f"{d}: " + "; ".join(parts) + "; the jobs stay done"
    if s.details_kept:
        line += (f"\n{d}: {len(s.details_kept)} job(s) keep their details in metrics.json (their evaluation records "
                 f"lack them): {', '.join(s.details_kept[:5])}" + (" ..." if len(s.details_kept) > 5 else ""))
    if s.interrupted:
        line += f"\n{d}: completed {s.interrupted} rewrite(s) an interrupted strip left"
    if s.locked:
        line += (f"\n{d}: skipped {len(s.locked)} job(s) another aebench process is running: "
                 f"{', '.join(s.locked[:5])}" + (" ..." if len(s.locked) > 5 else "") + "; strip again once it ends")
    return line

