"""What a model cost: parameters and training time, from what the runner measured (``ctx.info``).

The runner writes the same keys for every job whether or not a suite lists this metric, and adds
``cost/eval_seconds`` after evaluation; listing ``cost`` makes the figures explicit in the suite and lets
``aebench ls metrics`` document them.
"""

from __future__ import annotations

from aebench.metrics.base import EvalContext, NotApplicable


def cost(ctx: EvalContext) -> dict[str, float]:
    """Parameters, training seconds and seconds per epoch (the runner adds evaluation seconds)."""
    info = ctx.info
    if "params" not in info and "train_seconds" not in info:
        raise NotApplicable("the runner recorded no cost information for this evaluation")
    out: dict[str, float] = {}
    params = info.get("params")
    if params is None:
        params = sum(p.numel() for p in ctx.model.parameters())
    out["params"] = float(params)
    if "train_seconds" in info:
        out["train_seconds"] = float(info["train_seconds"])
        out["seconds_per_epoch"] = float(info["train_seconds"]) / max(int(info.get("epochs", 1) or 1), 1)
    return out
