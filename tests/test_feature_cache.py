"""Features computed once per evaluation: fid, prdc and memorisation on one context run each image set (test
reference, each sampler's samples, the reconstructions, the training subset) through the extractor once, and
sharing changes no value."""

from __future__ import annotations

import torch
from torch import nn

from aebench.data.base import ImageSet
from aebench.metrics.base import EvalContext, evaluate_metric
from aebench.metrics.extractors import context_extractor
from aebench.models.base import Autoencoder
from aebench.models.likelihood import Bernoulli

N_TEST, N_TRAIN, N_SAMPLES = 300, 200, 300


def digit_like(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = nn.functional.interpolate(torch.rand(n, 1, 7, 7, generator=g).pow(3), size=(28, 28), mode="bilinear")
    return (x * 255).clamp(0, 255).to(torch.uint8)


class SmallAE(Autoencoder):
    def __init__(self, d: int = 4):
        torch.manual_seed(0)
        enc = nn.Sequential(nn.Flatten(), nn.Linear(784, d))
        dec = nn.Sequential(nn.Linear(d, 784), nn.Unflatten(1, (1, 28, 28)))
        super().__init__(enc, dec, Bernoulli(), d)


def make_ctx() -> EvalContext:
    return EvalContext(model=SmallAE(), train=ImageSet("toy", "train", digit_like(N_TRAIN, 1)),
                       test=ImageSet("toy", "test", digit_like(N_TEST, 2)), device=torch.device("cpu"),
                       samplers=("prior", "gaussian"), n_samples=N_SAMPLES, batch_size=128, cache_dir=None)


def counted(ctx: EvalContext) -> list[int]:
    """Wrap the context's shared extractor so that every forward call records its batch size."""
    ext = context_extractor(ctx, "auto")
    module, calls = ext.module, []

    def forward(batch: torch.Tensor):
        calls.append(len(batch))
        return module(batch)

    ext.module = forward
    return calls


FID = {"extractor": "auto", "kid_subsets": 5, "kid_subset_size": 100}
PRDC = {"extractor": "auto"}
MEMO = {"extractor": "auto", "n_test": N_TEST, "max_train": N_TRAIN, "cells": 3, "min_cell_samples": 5}


def test_fid_prdc_and_memorisation_extract_each_image_set_once():
    ctx = make_ctx()
    calls = counted(ctx)
    records = {name: evaluate_metric(ctx, name, settings)
               for name, settings in (("fid", FID), ("prdc", PRDC), ("memorisation", MEMO))}
    assert all(r["not_applicable"] is None for r in records.values()), records
    # the test reference, two samplers' samples, the reconstructions, the training subset: once each
    assert sum(calls) == N_TEST + 2 * N_SAMPLES + N_TEST + N_TRAIN
    fid_only = make_ctx()
    fid_calls = counted(fid_only)
    alone = evaluate_metric(fid_only, "fid", FID)
    assert sum(fid_calls) == N_TEST + 2 * N_SAMPLES + N_TEST
    assert alone["values"] == records["fid"]["values"]  # sharing changes no value


def test_prdc_after_fid_extracts_nothing_new():
    ctx = make_ctx()
    calls = counted(ctx)
    evaluate_metric(ctx, "fid", FID)
    before = sum(calls)
    evaluate_metric(ctx, "prdc", PRDC)
    assert sum(calls) == before
