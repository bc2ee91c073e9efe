"""Importance-sampled negative log-likelihood (Burda et al. 2016) for probabilistic encoder-decoder models.

log p(x) ~= logsumexp_i log w_i - log k, with w_i = p(x, z_i) / q(z_i | x) and z_i ~ q(z | x). The estimate
is a stochastic lower bound on log p(x) that tightens as k grows, so the NLL reported is an upper bound.
The model supplies ``log_importance_weights(x, k) -> (k, B)``; the draws are seeded by the job's seed.
A model without them that has ``log_likelihood(x) -> (B,)`` (the RBM: -F(x) - log Z, log Z by AIS once) gives
log p(x) itself: then only ``nats`` and ``bits_per_dim`` are reported.

Keys: ``nll/nats`` (nats per image), ``nll/bits_per_dim``, ``nll/neg_elbo`` (the k=1 bound, averaged over
the same draws), ``nll/gap`` (neg_elbo - nats: what importance sampling gains).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from aebench.errors import AebenchError
from aebench.metrics.base import EvalContext


@torch.no_grad()
def nll(ctx: EvalContext, k: int = 100, max_images: int | None = None) -> dict[str, Any]:
    """Importance-sampled NLL on the test set with ``k`` posterior samples per image.

    ``max_images``: estimate on the first this many test images only (all by default); on a CPU the cost is
    k decoder passes per image.
    """
    if k < 1:
        raise AebenchError(f"nll needs k >= 1, got {k}")
    model = ctx.model
    model.eval()
    n = len(ctx.test) if max_images is None else min(int(max_images), len(ctx.test))
    direct = not hasattr(model, "log_importance_weights") and hasattr(model, "log_likelihood")  # the RBM's AIS
    batch = ctx.batch_size if direct else max(1, ctx.batch_size // k)
    seed = int(ctx.generator("nll").initial_seed())
    total, total_elbo = 0.0, 0.0
    cuda = ctx.device.type == "cuda"
    devices = [ctx.device.index if ctx.device.index is not None else torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(0, n, batch):
            x = ctx.test.floats(slice(i, min(i + batch, n))).to(ctx.device)
            if direct:  # log p(x) per image from the model itself; k does not apply
                total -= float(model.log_likelihood(x).double().sum())
                continue
            log_w = model.log_importance_weights(x, k).double()  # (k, B)
            total -= float((torch.logsumexp(log_w, 0) - math.log(k)).sum())
            total_elbo -= float(log_w.mean(0).sum())
    d = ctx.test.images[0].numel()
    nats = total / n
    if direct:
        return {"nats": nats, "bits_per_dim": nats / (d * math.log(2)),
                "setup": {"estimator": "log_likelihood", "n_images": n}}
    return {"nats": nats, "bits_per_dim": nats / (d * math.log(2)), "neg_elbo": total_elbo / n,
            "gap": total_elbo / n - nats, "setup": {"k": k, "n_images": n}}
