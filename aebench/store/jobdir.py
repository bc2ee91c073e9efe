"""One job's folder: ``results/<suite>/<job-id>/``.

Files are written atomically and the ``done`` marker comes last, holding the sha256 of the files it
vouches for. A folder whose marker is missing, unreadable or does not match its files is not done,
so a rerun redoes it: nothing half-written is ever read as a result.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from aebench import faults
from aebench.errors import ResultsLocked
from aebench.store.atomic import atomic_write_json, atomic_write_text, remove_stale_temps

CONFIG = "config.json"
METRICS = "metrics.json"
PROVENANCE = "provenance.json"
CURVE = "curve.csv"
CHECKPOINT = "checkpoint.pt"  # final weights
RESUME = "resume.pt"  # last epoch's training state
FAILED = "failed.json"
DONE = "done"  # trained and evaluated: vouches for the training files and metrics.json
TRAINED = "trained"  # training finished: vouches for the training files (evaluation may follow, or be redone)
EVAL_DIR = "eval"  # one record per metric and evaluation key: eval/<metric>-<key>.json
LOCK = ".lock"
TRAINING_FILES = (CONFIG, PROVENANCE, CURVE, CHECKPOINT)  # the trained marker checks these
VOUCHED = (*TRAINING_FILES, METRICS)  # the done marker checks these
PARSED = (CONFIG, METRICS, PROVENANCE)  # and these must also parse as JSON objects
METRICS_SWAP = ".metrics.json.swap"  # a rewritten metrics.json on its way in (``rewrite_metrics``)
NON_FINITE = "non_finite"  # the metric keys whose value was NaN or infinite (recorded as null)


def without_details(metrics_json: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json``'s content without the records' details (``JobDir.details`` reads them from the records);
    only the list of non-finite keys, a few names, stays beside the values."""
    out = {k: v for k, v in metrics_json.items() if k != "details"}
    details = metrics_json.get("details")
    non_finite = details.get(NON_FINITE) if isinstance(details, dict) else None
    if non_finite and NON_FINITE not in out:
        out[NON_FINITE] = list(non_finite)
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class JobDir:
    """Paths and state of one job's folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- state -----------------------------------------------------------------------------------------
    def done_problem(self) -> str | None:
        """None if the job is done and its files match the marker; else why it is not."""
        return self._marker_problem(DONE, METRICS)

    def trained_problem(self) -> str | None:
        """None if training finished and its files match the ``trained`` marker; else why not."""
        return self._marker_problem(TRAINED, CONFIG)

    def _marker_problem(self, name: str, required: str) -> str | None:
        marker = self.path / name
        if not marker.exists():
            return "not finished"
        try:
            vouched = json.loads(marker.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"damaged {name} marker {marker}" if name != DONE else f"damaged done marker {marker}"
        if not isinstance(vouched, dict) or required not in vouched:
            return f"damaged {name} marker {marker}" if name != DONE else f"damaged done marker {marker}"
        for name, digest in vouched.items():
            f = self.path / name
            if not f.exists():
                return f"missing {f}"
            try:
                if sha256_file(f) != digest:
                    return f"damaged {f} (checksum mismatch)"
            except OSError as e:
                return f"unreadable {f} ({e.strerror or e})"
        for name in PARSED:
            if name in vouched and not isinstance(self.read_json(name), dict):
                return f"damaged {self.path / name} (not a JSON object)"
        return None

    def is_done(self) -> bool:
        return self.done_problem() is None

    def is_trained(self) -> bool:
        return self.trained_problem() is None

    def layout(self) -> int | None:
        """The folder layout its config.json declares (1: the previous, single-hash layout); None if unreadable."""
        cfg = self.read_json(CONFIG)
        return int(cfg.get("layout", 1)) if isinstance(cfg, dict) else None

    # -- evaluation records ---------------------------------------------------------------------------
    def record_path(self, metric: str, key: str) -> Path:
        return self.path / EVAL_DIR / f"{metric}-{key[:16]}.json"

    def read_record(self, metric: str, key: str) -> dict[str, Any] | None:
        """The stored record of ``metric`` under evaluation key ``key``; None if absent, unreadable or stale."""
        try:
            rec = json.loads(self.record_path(metric, key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("key") != key or not isinstance(rec.get("values"), dict):
            return None
        return rec

    def write_record(self, metric: str, key: str, record: dict[str, Any]) -> Path:
        (self.path / EVAL_DIR).mkdir(exist_ok=True)
        return self.write_json(f"{EVAL_DIR}/{metric}-{key[:16]}.json", {**record, "metric": metric, "key": key})

    def details(self, metrics_json: dict[str, Any] | None = None,
                metrics: Iterable[str] | None = None) -> dict[str, Any]:
        """The details (``"<metric>/<key>"`` -> lists, settings, example images) of what ``metrics.json`` holds.

        The one reader of details: they live in the evaluation records ``metrics.json`` names (its
        ``evaluation.keys``); ``metrics.json`` keeps values only. A ``metrics.json`` written before that, which
        still carries a ``details`` mapping, is read as it is. ``metrics_json``: that file's content if the caller
        has it already; ``metrics``: only these metrics' details (default: all). Missing or stale records give
        nothing (never an error): details feed figures, not values.
        """
        met = self.read_json(METRICS) if metrics_json is None else metrics_json
        if not isinstance(met, dict):
            return {}
        wanted = None if metrics is None else set(metrics)
        if isinstance(met.get("details"), dict):  # the previous metrics.json: details merged in
            return {k: v for k, v in met["details"].items()
                    if wanted is None or k.split("/", 1)[0] in wanted}
        keys = (met.get("evaluation") or {}).get("keys")
        out: dict[str, Any] = {}
        for name, key in (keys.items() if isinstance(keys, dict) else ()):
            if wanted is not None and name not in wanted:
                continue
            rec = self.read_record(name, key) if isinstance(key, str) else None
            det = (rec or {}).get("details")
            if rec is None or rec.get("not_applicable") or not isinstance(det, dict):
                continue
            for k, v in det.items():
                if k == NON_FINITE:
                    out.setdefault(NON_FINITE, []).extend(v if isinstance(v, list) else [v])
                else:
                    out[k] = v
        return out

    def evaluated_keys(self) -> dict[str, str] | None:
        """metric -> evaluation key of what ``metrics.json`` holds (None for a folder without that record)."""
        met = self.read_json(METRICS)
        keys = (met or {}).get("evaluation", {}).get("keys") if isinstance(met, dict) else None
        return keys if isinstance(keys, dict) else None

    def status(self, problem: str | None = "") -> str:
        """'done', 'damaged', 'failed', 'running', 'pending' (no folder or unfinished).

        ``problem`` is ``done_problem()`` if the caller has it already (hashing big files twice is slow).
        """
        if not self.path.exists():
            return "pending"
        if problem == "":
            problem = self.done_problem()
        if problem is None:
            return "done"
        if problem != "not finished":
            return "damaged"
        if self.is_locked():
            return "running"
        if (self.path / FAILED).exists():
            return "failed"
        if self.is_trained():
            return "trained"
        return "pending"

    def read_json(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, ValueError):
            return None

    # -- writing --------------------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.path / name, obj)

    def mark_trained(self, **extra: Any) -> None:
        """Training is over: vouch for the training files, so evaluation can be redone without retraining."""
        vouched = {n: sha256_file(self.path / n) for n in TRAINING_FILES if (self.path / n).exists()}
        atomic_write_text(self.path / TRAINED, json.dumps({"sha256": vouched, **extra}, indent=2, sort_keys=True)
                          + "\n")
        (self.path / RESUME).unlink(missing_ok=True)

    def mark_done(self) -> None:
        """Write the marker last: it vouches for every result file by its checksum."""
        vouched = {n: sha256_file(self.path / n) for n in VOUCHED if (self.path / n).exists()}
        stripped = self._stripped()
        faults.point("done_write")
        marker = {"sha256": vouched, **({"stripped": stripped} if stripped else {})}
        atomic_write_text(self.path / DONE, json.dumps(marker, indent=2, sort_keys=True) + "\n")
        faults.point("done_written")
        for stale in (FAILED, RESUME):
            (self.path / stale).unlink(missing_ok=True)

    def _stripped(self) -> list[str]:
        try:
            return list(json.loads((self.path / TRAINED).read_text()).get("stripped", []))
        except (OSError, ValueError, AttributeError):
            return []

    def mark_failed(self, reason: str, details: dict[str, Any] | None = None) -> None:
        self.write_json(FAILED, {"reason": reason, **(details or {})})

    def reset(self) -> None:
        """Forget a finished or damaged training before retraining (the resume state and records are kept:
        records are keyed by the training id, which a retrain reproduces)."""
        for name in (DONE, TRAINED, FAILED, METRICS):
            (self.path / name).unlink(missing_ok=True)

    def tidy(self) -> None:
        """Remove what a run killed just after the done marker left: the resume state, a stale failure
        record, temporary files. Skipped quietly while another process holds the job."""
        if not any((self.path / n).exists() for n in (RESUME, FAILED)) and not any(self.path.glob(".*.tmp")):
            return
        try:
            self.lock()
        except (ResultsLocked, OSError):
            return
        try:
            if self.is_done():
                for stale in (FAILED, RESUME):
                    (self.path / stale).unlink(missing_ok=True)
        finally:
            self.unlock()

    def wipe(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def strip_checkpoint(self) -> bool:
        """Drop the weights of a done job (to share results without them); the job stays done.

        The marker is rewritten without the checkpoint's hash and records that it was stripped, so a
        missing checkpoint is a choice, not damage. Returns whether anything was removed.
        """
        if not (self.path / CHECKPOINT).exists() or not self.is_done():
            return False
        with self.held():
            for name in (TRAINED, DONE):
                if not (self.path / name).exists():
                    continue
                marker = json.loads((self.path / name).read_text())
                marker["sha256"].pop(CHECKPOINT, None)
                marker["stripped"] = sorted({*marker.get("stripped", []), CHECKPOINT})
                atomic_write_text(self.path / name, json.dumps(marker, indent=2, sort_keys=True) + "\n")
            (self.path / CHECKPOINT).unlink()
        return True

    def rewrite_metrics(self, metrics_json: dict[str, Any]) -> None:
        """Replace a done job's ``metrics.json`` by ``metrics_json``, the same results stored differently
        (``aebench strip``), and keep the job done. The caller holds the lock.

        The new content is written beside it (``METRICS_SWAP``), the done marker rewritten to vouch for it, then
        it is renamed into place; a process killed in between leaves what ``finish_rewrite`` completes.
        """
        swap = self.path / METRICS_SWAP
        atomic_write_json(swap, metrics_json)
        marker = json.loads((self.path / DONE).read_text())
        marker["sha256"][METRICS] = sha256_file(swap)
        atomic_write_text(self.path / DONE, json.dumps(marker, indent=2, sort_keys=True) + "\n")
        faults.point("metrics_swap")
        os.replace(swap, self.path / METRICS)

    def finish_rewrite(self) -> bool:
        """Complete a ``rewrite_metrics`` a killed process left: the swap file goes into place if the done marker
        vouches for it, else away. The caller holds the lock. Returns whether a swap file was found."""
        swap = self.path / METRICS_SWAP
        if not swap.exists():
            return False
        try:
            vouched = json.loads((self.path / DONE).read_text())["sha256"][METRICS]
        except (OSError, ValueError, KeyError, TypeError):
            vouched = None
        if vouched == sha256_file(swap):
            os.replace(swap, self.path / METRICS)
        else:
            swap.unlink()
        return True

    # -- locking --------------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take this job's lock, or raise ``ResultsLocked`` if another process holds it.

        ``flock`` locks vanish with their process, so a killed run never leaves a stale lock. Once
        locked, temporary files a killed writer left here are removed.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                try:
                    holder = f" (pid {int((self.path / LOCK).read_text().strip())})"
                except (OSError, ValueError):
                    holder = ""
                raise ResultsLocked(f"{self.path}: another aebench process{holder} is running this job; "
                                    "skipped it, run again once that process has finished") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        remove_stale_temps(self.path)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold this job's lock for the block (``ResultsLocked`` if another process has it); a lock this object
        holds already is kept, and not released at the end."""
        if self._lock_fd is not None:
            yield
            return
        self.lock()
        try:
            yield
        finally:
            self.unlock()

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def is_locked(self) -> bool:
        if self._lock_fd is not None:
            return True
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)
