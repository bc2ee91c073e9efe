"""Evaluation metrics: small functions ``metric(ctx, **settings) -> dict`` under stable key names.

``ctx`` is an ``EvalContext``: it hands every metric the same cached codes, samples and
reconstructions, so nothing is encoded or generated twice.
"""

from aebench.metrics.base import EvalContext, NotApplicable, evaluate

__all__ = ["EvalContext", "NotApplicable", "evaluate"]
