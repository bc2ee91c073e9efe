"""Interpolation FID: the "Interp." column of the RAE paper (Ghosh et al. 2020).

``n`` random pairs of test images (indices drawn with replacement from the job's seeded generator, the two
of a pair distinct) are encoded (posterior means), the mid-point of each pair's codes, (z_a + z_b) / 2, is
decoded, and the FID of those ``n`` images (uint8, as saved) is taken against the first ``min(n, len(test))``
test images, with fid's extractor, reference and computation. A decoder that is only good on the codes it
was trained on, with holes between them, scores badly here even when its reconstructions are sharp.

Key: ``interp_fid/fid`` (lower is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aebench.errors import SuiteError
from aebench.metrics.base import EvalContext, NotApplicable, to_uint8
from aebench.metrics.fid_inf import check_extractor


@dataclass
class InterpSettings:
    """``n``: mid-points decoded (and the reference size, capped at the test set). ``extractor`` etc. as fid's."""

    n: int = 10_000
    extractor: str = "auto"
    feature_extractor_weights_path: str | None = None

    def __post_init__(self) -> None:
        check_extractor(self.extractor)
        if self.n < 2:
            raise SuiteError(None, "n", f"must be >= 2, got {self.n}")


@torch.no_grad()
def midpoints(ctx: EvalContext, n: int) -> torch.Tensor:
    """uint8 images decoded from the mid-points of ``n`` random pairs of test codes (CPU)."""
    codes = ctx.codes("test").mean
    if len(codes) < 2:
        raise NotApplicable("interpolation needs at least two test images")
    g = ctx.generator("interp_fid/pairs")
    a = torch.randint(len(codes), (n,), generator=g)
    b = (a + torch.randint(1, len(codes), (n,), generator=g)) % len(codes)  # never a itself
    z = 0.5 * (codes[a] + codes[b])
    ctx.model.eval()
    return torch.cat([to_uint8(ctx.model.generate(z[i : i + ctx.batch_size].to(ctx.device))).cpu()
                      for i in range(0, n, ctx.batch_size)])


def interp_fid(ctx: EvalContext, **options: Any) -> dict[str, Any]:
    """FID of decoded mid-points between random pairs of test codes, against the test set (``InterpSettings``)."""
    from aebench.metrics.extractors import context_extractor
    from aebench.metrics.fidelity import compare, reference

    s = InterpSettings(**options)
    if not getattr(ctx.model, "has_encoder", True):
        raise NotApplicable("the model has no encoder")
    ext = context_extractor(ctx, s.extractor, s.feature_extractor_weights_path)
    real, real_stats, _ = reference(ctx, ext, min(s.n, len(ctx.test)))
    gen = ext.features(midpoints(ctx, s.n))
    fid = compare(gen, real, real_stats, kid=False, prc=False)["fid"]
    return {"fid": fid, "setup": {"extractor": ext.name, "weights_sha256": ext.weights_hash, "n": s.n,
                                  "n_reference": len(real)}}
