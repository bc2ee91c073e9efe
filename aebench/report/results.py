"""Read a results folder into pandas: one row per job, the done jobs' metrics, curves, provenance (and details,
read from the evaluation records when a figure asks).

The job folders are the truth (``aebench.store.table.collect`` reads them and verifies each ``done`` marker);
damaged, failed, running and pending jobs are kept as rows with their reason and never raise here.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aebench.errors import AebenchError
from aebench.report import keys as K
from aebench.report.aggregate import Group, aggregate
from aebench.store import jobdir as files
from aebench.store.jobdir import JobDir

if TYPE_CHECKING:
    import pandas as pd

GROUP = ["dataset", "label"]  # one table row per (dataset, model label), and per protocol if several


@dataclass
class Results:
    """Everything a report needs from ``results/<suite>/``, loaded once."""

    suite_dir: Path
    suite: str
    jobs: pd.DataFrame  # every job: identity, status, reason, metric values (done jobs)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # job_id -> metrics.json
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job_id -> config.json
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)  # job_id -> provenance.json
    curves: pd.DataFrame | None = None  # long form: job_id, label, dataset, seed, epoch, term, value
    suite_text: str | None = None  # the suite file snapshot (suite.yaml)
    notes: list[str] = field(default_factory=list)  # what a figure could not draw, for the report's Notes
    _groups: list[Group] | None = field(default=None, repr=False)
    _details: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # job_id -> details, once read

    def aggregate(self) -> list[Group]:
        """Every metric key of the done jobs over seeds, per dataset, label and protocol (computed once)."""
        if self._groups is None:
            self._groups = aggregate(self.done, self.metric_keys)
        return self._groups

    @property
    def done(self) -> pd.DataFrame:
        """Finished jobs, less tuning trials (they are scored on val; tuning.json reports them)."""
        trial = self.jobs["trial"] if "trial" in self.jobs.columns else None
        keep = self.jobs["status"] == "done"
        return self.jobs[keep if trial is None else keep & trial.isna()]

    @property
    def metric_keys(self) -> list[str]:
        """Metric value columns present in done jobs, headline keys first, then the others, costs last."""
        done = self.done
        cols = [c for c in self.jobs.columns if K.is_metric(c) and done[c].notna().any()]
        order = {name: i for i, name in enumerate(self.metric_order)}

        def rank(k: str) -> int:
            return order.get(k.split("/")[0], len(order))

        apart = [c for c in cols if K.section(c)]  # keys shown in a table of their own (cost), last
        head = sorted((c for c in K.headline_keys(cols) if c not in apart), key=rank)
        rest = sorted((c for c in cols if c not in head and c not in apart), key=lambda k: (rank(k), k))
        apart_head = K.headline_keys(apart)
        return head + rest + apart_head + sorted(set(apart) - set(apart_head))

    @property
    def metric_order(self) -> list[str]:
        """Metric names in the order the suite lists them (the first done job's config.json)."""
        for j in self.done["job_id"]:
            ms = (self.configs.get(j) or {}).get("metrics") or []
            return [str(m[0]) for m in ms if isinstance(m, (list, tuple)) and m]
        return []

    @property
    def metric_names(self) -> list[str]:
        """Metrics the done jobs were evaluated with, or have values of: the suite's order first."""
        names = list(self.metric_order)
        for k in self.metric_keys:
            if K.metric_of(k) not in names:
                names.append(K.metric_of(k))
        return names

    def metric_settings(self, job_id: str, metric: str) -> dict[str, Any]:
        """The settings ``metric`` ran with in a job (its evaluation plan), empty when unknown."""
        for m in (self.configs.get(job_id) or {}).get("metrics") or []:
            if isinstance(m, (list, tuple)) and len(m) == 2 and m[0] == metric and isinstance(m[1], dict):
                return m[1]
        return {}

    def samplers(self, job_id: str) -> list[str]:
        """The samplers a job's samples came from."""
        met = self.metrics.get(job_id) or {}
        found = met.get("sampled_with") or ((self.configs.get(job_id) or {}).get("eval") or {}).get("samplers") or []
        return [s for s in found if isinstance(s, str)]

    @property
    def group_columns(self) -> list[str]:
        """Columns identifying a table row: the protocol joins them when the done jobs mix protocols."""
        return GROUP + (["protocol"] if self.done["protocol"].nunique() > 1 else [])

    def not_applicable(self, job_id: str) -> dict[str, str]:
        na = (self.metrics.get(job_id) or {}).get("not_applicable") or {}
        return {str(k): str(v) for k, v in na.items()} if isinstance(na, dict) else {}

    def details(self, job_id: str) -> dict[str, Any]:
        """A done job's details, read once from its evaluation records (``JobDir.details``)."""
        if job_id not in self._details:
            met = self.metrics.get(job_id)
            self._details[job_id] = JobDir(self.job_path(job_id)).details(met) if isinstance(met, dict) else {}
        return self._details[job_id]

    def job_path(self, job_id: str) -> Path:
        return self.suite_dir / job_id

    def first_seed_jobs(self) -> pd.DataFrame:
        """One done job per (dataset, label[, protocol]): the lowest seed, whose images the report shows."""
        done = self.done.sort_values(["seed", "job_id"])
        return done.drop_duplicates(self.group_columns, keep="first").sort_values(self.group_columns, kind="stable")


def _read_curve(path: Path) -> list[dict[str, float]]:
    """curve.csv rows as floats; unreadable files or cells give nothing rather than an error."""
    try:
        with open(path, newline="") as f:
            rows = []
            for r in csv.DictReader(f):
                row = {}
                for k, v in r.items():
                    try:
                        row[k] = float(v)
                    except (TypeError, ValueError):
                        row[k] = math.nan
                rows.append(row)
            return rows
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _in_suite_order(jobs: pd.DataFrame, suite_text: str | None) -> pd.DataFrame:
    """Jobs ordered as the suite file lists its models (then models added with --models), label, dataset, seed."""
    order: list[str] = []
    try:
        import yaml

        raw = yaml.safe_load(suite_text) if suite_text else None
        models = raw.get("models") if isinstance(raw, dict) else None
        for m in models if isinstance(models, list) else []:
            name = m if isinstance(m, str) else (m.get("label") or m.get("name")) if isinstance(m, dict) else None
            if isinstance(name, str):
                order.append(name)
    except Exception:  # noqa: BLE001 - a broken snapshot only loses the ordering
        order = []

    def rank(row: Any) -> int:
        for name in (row["label"], str(row["label"] or "").split("[")[0], row["model"]):
            if name in order:
                return order.index(name)
        return len(order)

    if jobs.empty:
        return jobs
    key = jobs.apply(rank, axis=1)
    jobs = jobs.copy()  # defragmented: the wide frame was built column by column
    return (jobs.assign(_order=key).sort_values(["_order", "label", "dataset", "seed", "job_id"], kind="stable",
                                                 na_position="last")
            .drop(columns="_order").reset_index(drop=True))


def _strip(text: str, prefixes: list[str]) -> str:
    for p in prefixes:
        text = text.replace(p, "")
    return text


def load_results(suite_dir: str | Path) -> Results:
    """Load ``results/<suite>/``; a folder without job folders is an error (nothing to report)."""
    import pandas as pd

    from aebench.store.table import FIXED, collect

    d = Path(suite_dir)
    if not d.is_dir():
        raise AebenchError(f"{d}: no such results folder (expected results/<suite>/)")
    rows = collect(d)
    if not rows:
        raise AebenchError(f"{d}: no jobs found (run `aebench run <suite.yaml>` first)")
    jobs = pd.DataFrame(rows)
    for col in FIXED:
        if col not in jobs.columns:
            jobs[col] = None
    # reasons name files by absolute path; relative to the results folder they read the same on any machine
    prefixes = sorted({str(d) + "/", str(d.resolve()) + "/"}, key=len, reverse=True)
    jobs["reason"] = [_strip(str(r), prefixes) for r in jobs["reason"].fillna("")]
    for col in ("suite", "model", "label", "dataset", "protocol"):
        jobs[col] = jobs[col].astype(object).where(jobs[col].notna(), None)
    jobs["seed"] = pd.to_numeric(jobs["seed"], errors="coerce").astype("Int64")
    value_cols = [c for c in jobs.columns if K.is_metric(c)]
    for c in value_cols:
        jobs[c] = pd.to_numeric(jobs[c], errors="coerce")

    res = Results(d, d.name, jobs)
    snap = d / "suite.yaml"
    if snap.is_file():
        try:
            res.suite_text = snap.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            res.suite_text = None
    res.jobs = _in_suite_order(jobs, res.suite_text)
    names = jobs["suite"].dropna().unique()
    if len(names):
        res.suite = str(names[0])
    curve_rows = []
    for r in res.jobs.itertuples(index=False):
        jd = JobDir(d / r.job_id)
        cfg = jd.read_json(files.CONFIG)
        if isinstance(cfg, dict):
            res.configs[r.job_id] = cfg
        prov = jd.read_json(files.PROVENANCE)
        if isinstance(prov, dict):
            res.provenance[r.job_id] = prov
        if r.status != "done":
            continue
        met = jd.read_json(files.METRICS)
        if isinstance(met, dict):
            res.metrics[r.job_id] = met
            if r.job_id in res.configs:  # the evaluation plan beside the training config, for the figures
                res.configs[r.job_id] = {**res.configs[r.job_id], **_plan(met)}
        for c in _read_curve(jd / files.CURVE):
            epoch = c.get("epoch", math.nan)
            for term, value in c.items():
                if term in ("epoch", "seconds"):
                    continue
                curve_rows.append({"job_id": r.job_id, "label": r.label, "dataset": r.dataset, "seed": r.seed,
                                   "protocol": r.protocol, "epoch": epoch, "term": term, "value": value})
    res.curves = pd.DataFrame(curve_rows, columns=["job_id", "label", "dataset", "seed", "protocol", "epoch",
                                                   "term", "value"])
    return res


def _plan(met: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` ([[name, settings]]), ``eval`` and ``data`` as the previous single-config layout had them."""
    plan = (met.get("evaluation") or {}).get("plan") or {}
    if not plan:
        return {}
    return {"metrics": plan.get("metrics") or [],
            "eval": {"samplers": [s[0] if isinstance(s, list) else s for s in plan.get("samplers") or []],
                     "n_samples": plan.get("n_samples"), "batch_size": plan.get("batch_size")},
            "test_limit": plan.get("test_limit")}


def describe_protocol(cfg: dict[str, Any]) -> str:
    """A one-line, human-readable account of what a protocol fingerprint fixes (dataset, budget, metrics)."""
    if not cfg:
        return "?"

    def opts(d: Any) -> str:
        return "" if not d else "(" + ", ".join(f"{k}={v}" for k, v in sorted(d.items())) + ")"

    t = cfg.get("train") or {}
    data = cfg.get("data") or {"train_limit": cfg.get("train_limit"), "test_limit": cfg.get("test_limit")}
    ev = cfg.get("eval") or {}
    limits = ", ".join(f"{k}={v}" for k, v in sorted(data.items()) if v is not None)
    metrics = ", ".join(str(m[0]) + opts(m[1]) for m in cfg.get("metrics") or [] if isinstance(m, (list, tuple)))
    parts = [
        f"{cfg.get('dataset')}{opts(cfg.get('dataset_options'))}" + (f" [{limits}]" if limits else ""),
        f"{cfg.get('backbone')}{opts(cfg.get('backbone_options'))} backbone",
        f"latent {cfg.get('latent_dim')}",
        f"{cfg.get('likelihood')}{opts(cfg.get('likelihood_options'))} likelihood",
        f"{t.get('epochs')} epochs" + (f", select {t['select']}" if t.get("select", "last") != "last" else "")
        + (f", {t['schedule']} schedule" if t.get("schedule", "none") != "none" else "")
        + " (optimizer, lr and batch size are each model's: a search may tune them)",
        f"samplers {', '.join(map(str, ev.get('samplers') or []))} ({ev.get('n_samples')} samples)",
        f"metrics {metrics}",
    ]
    return "; ".join(parts)
