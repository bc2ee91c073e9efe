"""Hyperparameter search with the same budget for every model (DomainBed's protocol, on a validation split).

A model entry declares a search space (``search: {beta: {log_uniform: [0.1, 10]}, lr: {choice: [1e-4, 1e-3]}}``);
keys that are training fields (``lr``, ``weight_decay``, ``batch_size``, ``grad_clip``, ``optimizer``) change the
training budget's settings, the others the model's params. The suite's ``tune:`` block gives every entry the
same number of trials: random search seeded by the tuning seed and the entry's label, where trial 0 is always
the entry's own parameters. Each trial is an ordinary job trained on ``tune.seeds`` and evaluated on the
validation split with the selection metric; the trial with the best mean (by the key's registered direction)
is selected, and only then are the suite's seeds trained with it and evaluated on test. Selection never reads
the test split.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

from aebench.errors import SuiteError

TRAIN_KEYS = ("lr", "weight_decay", "batch_size", "grad_clip", "optimizer")  # searchable training fields
KINDS = ("log_uniform", "uniform", "int_uniform", "choice")
TUNING_JSON = "tuning.json"


def check_space(space: dict[str, Any], where: str) -> None:
    """Refuse a malformed search space, naming the field."""
    for key, dist in space.items():
        at = f"{where}.{key}"
        if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in KINDS:
            raise SuiteError(None, at, f"expected one of {{{', '.join(f'{k}: ...' for k in KINDS)}}}, got {dist!r}")
        kind, arg = next(iter(dist.items()))
        if kind == "choice":
            if not isinstance(arg, list) or not arg:
                raise SuiteError(None, f"{at}.choice", "expected a non-empty list of values")
            continue
        ok = (isinstance(arg, list) and len(arg) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                              for v in arg) and arg[0] < arg[1])
        if not ok or (kind == "log_uniform" and arg[0] <= 0):
            raise SuiteError(None, f"{at}.{kind}", f"expected [low, high] with low < high{' and low > 0' if kind == 'log_uniform' else ''}, got {arg!r}")  # noqa: E501


def _draw(kind: str, arg: Any, rng: random.Random) -> Any:
    if kind == "choice":
        return arg[rng.randrange(len(arg))]
    lo, hi = arg
    if kind == "log_uniform":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if kind == "int_uniform":
        return rng.randint(int(lo), int(hi))
    return float(rng.uniform(lo, hi))


REDRAWS = 1000  # draws tried for a point unlike the earlier ones before a small discrete space counts as exhausted


def trial_points(space: dict[str, Any], trials: int, seed: int, label: str,
                 given: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Up to ``trials`` distinct points of the space: trial 0 is empty (the entry's own parameters, whose values
    for the searched keys are ``given``), the rest random draws from a generator seeded by ``seed`` and
    ``label``, so a search is reproducible from its seed. A draw equal to an earlier trial is drawn again
    (training the same point twice buys nothing); a discrete space with fewer points than ``trials`` yields
    fewer trials. Continuous spaces never repeat, so their draws are the plain sequence."""
    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "little"))
    points: list[dict[str, Any]] = [{}]
    seen = [dict(given)] if given is not None else []
    for _ in range(1, trials):
        for _attempt in range(REDRAWS):
            point = {k: _draw(*next(iter(d.items())), rng) for k, d in sorted(space.items())}
            if point not in seen:
                break
        else:
            break
        points.append(point)
        seen.append(point)
    return points


def entry_points(suite: Any, spec: Any) -> list[dict[str, Any]]:
    """The trials of a suite entry (``trial_points`` with the entry's own values as trial 0's)."""
    given = effective_values(suite, spec, {})
    return trial_points(spec.search, suite.tune.trials, suite.tune.seed, spec.label or spec.name, given)


def split_point(point: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model params, training overrides) of a point of the space."""
    params = {k: v for k, v in point.items() if k not in TRAIN_KEYS}
    return params, {k: v for k, v in point.items() if k in TRAIN_KEYS}


def trial_label(label: str, trial: int) -> str:
    return f"{label}@t{trial}"


def choose(scores: dict[int, list[float]], direction: str) -> int | None:
    """The trial with the best mean score (ties: the lower trial); trials with a missing score lose."""
    means = {t: sum(v) / len(v) for t, v in scores.items() if v and all(math.isfinite(x) for x in v)}
    if not means:
        return None
    sign = 1 if direction == "min" else -1
    return min(means, key=lambda t: (sign * means[t], t))


def effective_values(suite: Any, spec: Any, point: dict[str, Any]) -> dict[str, Any]:
    """The value each searched key takes in a trial: drawn, else the entry's params, else the model's or the
    training budget's default (trial 0 has no draws: its values are what the entry runs with)."""
    from dataclasses import asdict

    from aebench.models.base import model_config

    params, train = split_point(point)
    config = asdict(model_config(spec.name, {**spec.params, **params}))
    budget = {**asdict(suite.train), **train}
    return {k: budget.get(k) if k in TRAIN_KEYS else config.get(k) for k in spec.search}


def select_all(suite: Any, suite_dir: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Read every trial's validation score from its job folder; returns (label -> selected point, the record
    written to ``tuning.json``: per entry the space, each trial's point and scores, and the selection)."""
    from aebench.registry import metric_direction
    from aebench.store.jobdir import FAILED, METRICS, JobDir

    key, direction = suite.tune.metric, metric_direction(suite.tune.metric) or "min"
    by_label: dict[str, list] = {}
    for job in suite.trial_jobs():
        by_label.setdefault(job.label.rsplit("@t", 1)[0], []).append(job)
    selected: dict[str, dict[str, Any]] = {}
    record: dict[str, Any] = {"metric": key, "direction": direction, "split": "val", "trials": suite.tune.trials,
                              "seeds": list(suite.tune.seeds), "seed": suite.tune.seed,
                              "epochs": suite.tune.epochs or suite.train.epochs, "models": {}}
    for spec in suite.models:
        base = spec.label or spec.name
        if base not in by_label:
            continue
        points = entry_points(suite, spec)
        scores: dict[int, list[float]] = {t: [] for t in range(len(points))}
        done: dict[int, int] = {t: 0 for t in range(len(points))}
        diverged: dict[int, str] = {}
        for job in by_label[base]:
            t = int(job.label.rsplit("@t", 1)[1])
            jd = JobDir(suite_dir / job.id)
            if not jd.is_done():
                failure = jd.read_json(FAILED)
                if isinstance(failure, dict) and failure.get("kind") == "diverged":  # a losing trial, not missing
                    done[t] += 1
                    scores[t].append(math.nan)
                    diverged[t] = str(failure.get("reason", "diverged"))
                continue
            done[t] += 1
            value = ((jd.read_json(METRICS) or {}).get("values") or {}).get(key)
            scores[t].append(float(value) if value is not None else math.nan)
        complete = all(n == len(suite.tune.seeds) * len(suite.datasets) for n in done.values())
        best = choose(scores, direction) if complete else None
        if best is not None:
            selected[base] = points[best]
        record["models"][base] = {
            "model": spec.name, "space": spec.search, "params": spec.params, "selected": best,
            "selected_point": points[best] if best is not None else None, "complete": complete,
            "trials": [{"trial": t, "point": points[t], "values": effective_values(suite, spec, points[t]),
                        "scores": scores[t], "mean": (sum(scores[t]) / len(scores[t])) if scores[t] else None,
                        **({"diverged": diverged[t]} if t in diverged else {})}
                       for t in range(len(points))],
        }
    return selected, record
