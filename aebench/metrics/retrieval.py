"""Associative recall: present corrupted copies of stored (or trained-on) images and iterate the model back.

A model with ``retrieve(x, known, steps)`` (the Hopfield net) recalls with its own dynamics; any other model
iterates x <- g(f(x)) (its ``reconstruct``) ``steps`` times with the known pixels clamped. Patterns and results
are compared binarised at 0.5: a pattern counts as recovered when the Hamming distance of the result to it is
at most ``tolerance`` of the pixels; the overlap is (1/N) sum_i xi_i s_i in +-1 coding, i.e. 1 - 2 * distance.

Retrieval at k means a memory of k patterns, tested on all k of them:

- a model that stores patterns (``stored_patterns()``: the Hopfield net, whose job stored ``n_stored`` training
  images in its seeded order) is re-stored for each k: ``holding(k)`` is a fresh copy of the net, same rule,
  that stored only the first k of its patterns (storage is cheap; this is the classic capacity experiment, and
  the job's own net is the case k = n_stored). So ``n_stored`` is the pool: ks above it are skipped;
- any other model (an autoencoder, trained once) is tested on the first k training images, all of which it
  learned in training: "storing k" is presenting k of them (an associative-memory suite limits the training
  set to the largest k with ``data.train_limit``, so the memories of both kinds hold the same images).

``ks`` gives the capacity curve in one evaluation: keys ``recovered_k<k>`` and ``overlap_k<k>`` per k, the
headline keys (``recovered``, ``overlap``, the details ``distances`` and ``setup``) at ``k`` (default: the
largest of ``ks``; without ``ks``: everything a memory model stored, else 10), and in the details ``capacity``:
Hebbian storage's critical load 0.138 N for the N pixels (Amit, Gutfreund & Sompolinsky 1985), for plots.
The corrupted cues are drawn once for the largest k, so a pattern has the same cue at every k.

Corruptions: ``flip`` flips round(fraction * N) pixels chosen at random per image (no pixel is clamped);
``mask`` hides the bottom half of every image (set to 0.5, no information) and clamps the top half.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from aebench.errors import AebenchError, SuiteError
from aebench.metrics.base import EvalContext, NotApplicable

CAPACITY_ALPHA = 0.138  # Amit, Gutfreund & Sompolinsky 1985: the critical load of Hebbian storage (~0.14)
DEFAULT_K = 10  # the headline k of a model that is not a memory, when no ks are given


@dataclass
class RetrievalSettings:
    """``k``: the headline k (None: the largest of ``ks``, else all a memory stored, else 10). ``ks``: the
    capacity curve's memory sizes. ``fraction``: flipped pixels. ``steps``: sweeps of a Hopfield net (it stops
    earlier at a fixed point) or passes of x <- g(f(x)). ``tolerance``: the Hamming distance still recovered."""

    k: int | None = None
    ks: list[int] | None = None
    corruption: Literal["flip", "mask"] = "flip"
    fraction: float = 0.1
    steps: int = 10
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise SuiteError(None, "k", f"must be >= 1, got {self.k}")
        if self.ks is not None:
            if not self.ks:
                raise SuiteError(None, "ks", "must list at least one k (or be left out)")
            bad = [k for k in self.ks if k < 1]
            if bad:
                raise SuiteError(None, "ks", f"every k must be >= 1, got {bad[0]}")
        if not 0.0 <= self.fraction <= 1.0:
            raise SuiteError(None, "fraction", f"must be in [0, 1], got {self.fraction}")
        if self.steps < 1:
            raise SuiteError(None, "steps", f"must be >= 1, got {self.steps}")
        if not 0.0 <= self.tolerance < 1.0:
            raise SuiteError(None, "tolerance", f"must be in [0, 1), got {self.tolerance}")


def corrupt(patterns: torch.Tensor, corruption: str, fraction: float,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Corrupted copies of binary images (k, C, H, W) and the mask of known pixels (None: none is known)."""
    x = patterns.clone()
    if corruption == "flip":
        flat = x.view(x.shape[0], -1)
        n_flip = round(fraction * flat.shape[1])
        idx = torch.rand(flat.shape, generator=generator).argsort(1)[:, :n_flip].to(flat.device)
        flat.scatter_(1, idx, 1.0 - flat.gather(1, idx))
        return x, None
    if corruption == "mask":
        known = torch.zeros_like(x, dtype=torch.bool)
        known[..., : x.shape[-2] // 2, :] = True
        return torch.where(known, x, torch.full_like(x, 0.5)), known
    raise AebenchError(f"unknown corruption {corruption!r}; allowed: 'flip', 'mask'")


@torch.no_grad()
def iterate(model: Any, x: torch.Tensor, known: torch.Tensor | None, steps: int) -> torch.Tensor:
    """The model's recall of x: its own ``retrieve`` if it has one, else ``steps`` passes of g(f(x)), clamped."""
    if hasattr(model, "retrieve"):
        return model.retrieve(x, known, steps)
    cue = x
    for _ in range(steps):
        x = model.reconstruct(x)
        if known is not None:
            x = torch.where(known, cue, x)
    return x


def _check(fraction: float, steps: int, tolerance: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise AebenchError(f"fraction must be in [0, 1], got {fraction}")
    if steps < 1:
        raise AebenchError(f"steps must be >= 1, got {steps}")
    if not 0.0 <= tolerance < 1.0:
        raise AebenchError(f"tolerance must be in [0, 1), got {tolerance}")


@torch.no_grad()
def _score(model: Any, target: torch.Tensor, x: torch.Tensor, known: torch.Tensor | None, steps: int,
           tolerance: float, batch_size: int) -> dict[str, Any]:
    """Recall of binary ``target`` from cues ``x`` (known pixels ``known``), in batches."""
    model.eval()
    distances = []
    for i in range(0, target.shape[0], batch_size):
        part = None if known is None else known[i : i + batch_size]
        out = iterate(model, x[i : i + batch_size], part, steps) > 0.5
        distances.append((out != target[i : i + batch_size].bool()).flatten(1).float().mean(1).cpu())
    d = torch.cat(distances)
    return {"recovered": float((d <= tolerance).float().mean()), "overlap": float((1 - 2 * d).mean()),
            "distances": d.tolist()}


@torch.no_grad()
def retrieval_scores(model: Any, patterns: torch.Tensor, corruption: str = "flip", fraction: float = 0.1,
                     steps: int = 10, tolerance: float = 0.05, generator: torch.Generator | None = None,
                     batch_size: int = 1000) -> dict[str, Any]:
    """Recovered fraction, mean overlap and per-pattern Hamming distances (fractions of pixels) for ``patterns``
    (k, C, H, W) in [0, 1], binarised at 0.5 first; the corruption draws from ``generator`` (all at once)."""
    _check(fraction, steps, tolerance)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    target = (patterns > 0.5).float()
    x, known = corrupt(target, corruption, fraction, generator)
    return _score(model, target, x, known, steps, tolerance, batch_size)


def _memory(model: Any, k: int) -> Any:
    """The model as a memory of its first k patterns: a re-stored copy where it can (``holding``), else itself."""
    return model.holding(k) if hasattr(model, "holding") else model


def retrieval(ctx: EvalContext, k: int | None = None, ks: list[int] | None = None,
              corruption: Literal["flip", "mask"] = "flip", fraction: float = 0.1, steps: int = 10,
              tolerance: float = 0.05) -> dict[str, Any]:
    """Recall of k stored (Hopfield) or training images from corrupted copies, at ``k`` and at every k of ``ks``
    (the capacity curve); see the module docstring for what k means for each kind of model."""
    RetrievalSettings(k, ks, corruption, fraction, steps, tolerance)  # the same checks as validation
    model = ctx.model
    if hasattr(model, "stored_patterns"):
        pool, source = model.stored_patterns(), "stored patterns"
        if pool.shape[0] == 0:
            raise NotApplicable("the network stored no patterns")
        head = k if k is not None else max(ks) if ks else pool.shape[0]
    else:
        head = k if k is not None else max(ks) if ks else DEFAULT_K
        pool, source = ctx.train.floats(slice(0, min(max([head, *(ks or [])]), len(ctx.train)))), "training images"
    available = pool.shape[0]
    curve = sorted({x for x in ks or [] if x <= available})
    skipped = sorted({x for x in ks or [] if x > available})
    head = min(head, available)
    target = (pool[: max([head, *curve])] > 0.5).float().to(ctx.device)
    x, known = corrupt(target, corruption, fraction, ctx.generator("retrieval"))
    scores: dict[int, dict[str, Any]] = {}
    for size in sorted({*curve, head}):
        scores[size] = _score(_memory(model, size), target[:size], x[:size],
                              None if known is None else known[:size], steps, tolerance, ctx.batch_size)
    n_units = int(target[0].numel())
    out: dict[str, Any] = {}
    for size in curve:
        out[f"recovered_k{size}"] = scores[size]["recovered"]
        out[f"overlap_k{size}"] = scores[size]["overlap"]
    out.update(scores[head])
    out["setup"] = {"k": int(head), "ks": curve, "skipped_ks": skipped, "available": int(available),
                    "source": source, "memory": "re-stored per k" if hasattr(model, "holding") else "as trained",
                    "corruption": corruption, "fraction": fraction, "steps": steps, "tolerance": tolerance}
    out["capacity"] = {"alpha": CAPACITY_ALPHA, "n_units": n_units, "k": CAPACITY_ALPHA * n_units}
    return out


def capacity_curve(model_factory: Callable[[int], Any], ks: Sequence[int], patterns: torch.Tensor,
                   corruption: str = "flip", fraction: float = 0.1, steps: int = 100, tolerance: float = 0.05,
                   seed: int = 0) -> dict[str, Any]:
    """Retrieval against the number of stored patterns k, for a memory model (the Hopfield net).

    ``model_factory(k)`` returns a fresh model with room for k patterns and a ``store(images)`` method; the
    first k of ``patterns`` (n, C, H, W, in [0, 1]) are stored and presented corrupted (cues drawn once for the
    largest k, seeded by ``seed``, so a pattern has the same cue at every k). Returns lists over ks (``k``,
    ``load`` = k / N, ``recovered``, ``overlap``) and the theoretical capacity ``capacity`` = 0.138 N
    (``capacity_alpha``; "0.14 N") for plotting.
    """
    _check(fraction, steps, tolerance)
    if patterns.shape[0] < max(ks):
        raise AebenchError(f"capacity_curve needs {max(ks)} patterns, got {patterns.shape[0]}")
    n_units = patterns[0].numel()
    target = (patterns[: max(ks)] > 0.5).float()
    x, known = corrupt(target, corruption, fraction, torch.Generator().manual_seed(seed))
    curve: dict[str, Any] = {"k": [], "load": [], "recovered": [], "overlap": []}
    for k in ks:
        model = model_factory(k)
        model.store(patterns[:k])
        scores = _score(model, target[:k], x[:k], None if known is None else known[:k], steps, tolerance, 1000)
        curve["k"].append(int(k))
        curve["load"].append(k / n_units)
        curve["recovered"].append(scores["recovered"])
        curve["overlap"].append(scores["overlap"])
    return {**curve, "n_units": n_units, "capacity_alpha": CAPACITY_ALPHA, "capacity": CAPACITY_ALPHA * n_units}
