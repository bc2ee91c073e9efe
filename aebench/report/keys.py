"""The metric keys the report and the leaderboard look for, in one place.

Metrics write ``"<metric>/<key>"`` values to ``metrics.json`` (and lists to its ``details``). The figures are
drawn only when their keys exist, so a suite without a metric simply has no such figure. Adjust the names
here if a metric renames its outputs.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

# -- comparison figures ------------------------------------------------------------------------------
RECON = "recon/mse"  # reconstruction error, x axis of the trade-off figure
FID_PATTERN = "fid/*"  # sample FID per sampler (fid/prior, fid/gaussian), y axis of the trade-off
FID_NOT_SAMPLES = ("recon", "kid_*", "precision_*", "recall_*")  # fid/* keys that are not a sampler's FID
KL = "kl_w2/kl"  # KL(fitted aggregate posterior || N(0, I))
W2 = "kl_w2/w2"  # W2(fitted aggregate posterior, N(0, I))
BLUR_PATTERN = "sharpness/*"  # sharpness (Laplace variance) of samples per sampler, reconstructions, data
BLUR_NOT_SOURCES = ("ratio_*",)  # sharpness/* keys that are not an image source's own value
BLUR_REFERENCE = ("data",)  # the data's own sharpness, drawn as a dashed line
ACTIVE_UNITS_METRIC = "active_units"
ACTIVE_UNITS_VARIANCES = "active_units/variances"  # details: per-dimension Var_x(E[z|x])
ACTIVE_UNITS_THRESHOLD = "threshold"  # the metric's setting (config.json metrics options)
DEFAULT_ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active if its variance exceeds 0.01
ENCODER_CODES = "codes/items"  # details of the `codes` metric: the hidden code of each pattern (N x M)
ENCODER_DATASET = "encoder"  # the N-M-N encoder task: its codes are computed from checkpoint.pt

# -- leaderboard -----------------------------------------------------------------------------------------
# The ranking metric when none is chosen: the first of these present in the results. The Gaussian sampler
# (fitted to the training codes) applies to every model, so its FID compares a plain AE fairly with a VAE.
LEADERBOARD_DEFAULTS = ("fid/gaussian", "fid/prior", "recon/mse")

# Columns that are not metric values in a results row.
NON_METRIC = {"job_id", "suite", "model", "label", "dataset", "seed", "protocol", "status", "reason", "device"}
COST_PREFIX = "cost/"  # run cost (params, seconds): shown in their own table


def matching(pattern: str, keys: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Keys matching a glob pattern (``fid/*``) whose part after the slash matches none of ``exclude``."""
    exclude = tuple(exclude)
    return sorted(k for k in keys if fnmatch.fnmatchcase(k, pattern)
                  and not any(fnmatch.fnmatchcase(k.partition("/")[2], x) for x in exclude))


def direction(key: str) -> str | None:
    """'min', 'max' or None (neither is better) for a ``metric/key`` value (see ``metric_direction``)."""
    from aebench.registry import metric_direction

    return metric_direction(key)


def headline_keys(keys: Iterable[str]) -> list[str]:
    """The headline keys present among ``keys``, in registry order (each metric's ``headline`` meta)."""
    from aebench.registry import METRICS

    keys = list(keys)
    out: list[str] = []
    for entry in METRICS.entries():
        for h in entry.meta.get("headline", ()) or ():
            for k in matching(f"{entry.name}/{h}", keys):
                if k not in out:
                    out.append(k)
    return out


ARROWS = {"min": "↓", "max": "↑"}


def arrow(key: str) -> str:
    return ARROWS.get(direction(key) or "", "")
