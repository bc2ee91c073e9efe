"""Each member of a stack draws exactly the random numbers its separate job would draw.

A separate job's loss draws its noise (the VAE's eps, a denoiser's corruption) from the global generator,
seeded by its seed and advanced by its model's initialisation. Inside ``vmap`` one call would serve every
member, so the stack replays the draws instead: a ``TorchFunctionMode`` intercepts ``torch.randn``,
``torch.rand`` and their ``_like`` forms inside the vmapped loss and hands out, in call order, tensors
drawn beforehand from each member's own generator state (a ``Tape``). Which draws a step makes (their
shapes) is learnt once per batch size by a ``probe`` pass that draws nothing.

Any other random operation (dropout, ``bernoulli``, a draw from an explicit generator) cannot be replayed
this way; ``vmap`` refuses it (``randomness="error"``) and the probe reports the model as not stackable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_LIKE = {torch.randn_like: "randn", torch.rand_like: "rand"}
_FRESH = {torch.randn: "randn", torch.rand: "rand"}


class NotStackable(Exception):
    """The model's step cannot run exactly in a stack (says why); its jobs train one by one."""


@dataclass(frozen=True)
class Draw:
    """One random call of a step: the function, and the per-member shape, dtype and device it returns."""

    kind: str  # randn or rand
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device


def _draw_of(func: Any, args: tuple, kwargs: dict) -> Draw | None:
    """The draw a random call makes, or None for a call that is not one of ours."""
    if func in _LIKE:
        if kwargs.get("generator") is not None:
            raise NotStackable(f"{func.__name__} with an explicit generator")
        like = args[0]
        return Draw(_LIKE[func], tuple(like.shape), kwargs.get("dtype") or like.dtype,
                    torch.device(kwargs.get("device") or like.device))
    if func in _FRESH:
        if kwargs.get("generator") is not None:
            raise NotStackable(f"{func.__name__} with an explicit generator")
        if kwargs.get("out") is not None:
            raise NotStackable(f"{func.__name__}(out=...)")
        shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args
        return Draw(_FRESH[func], tuple(int(s) for s in shape), kwargs.get("dtype") or torch.get_default_dtype(),
                    torch.device(kwargs.get("device") or "cpu"))
    return None


class Probe(TorchFunctionMode):
    """Records a step's draws, returning zeros in their place (the probe's outputs are thrown away)."""

    def __init__(self) -> None:
        super().__init__()
        self.draws: list[Draw] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        draw = _draw_of(func, args, kwargs)
        if draw is None:
            return func(*args, **kwargs)
        self.draws.append(draw)
        if func in _LIKE:
            return torch.zeros_like(args[0], dtype=draw.dtype, device=draw.device)
        return torch.zeros(draw.shape, dtype=draw.dtype, device=draw.device)


class Replay(TorchFunctionMode):
    """Hands out a step's pre-drawn tensors (this member's slice, inside vmap) in call order."""

    def __init__(self, tensors: list[torch.Tensor], draws: list[Draw]) -> None:
        super().__init__()
        self.tensors, self.draws, self.i = tensors, draws, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        draw = _draw_of(func, args, kwargs)
        if draw is None:
            return func(*args, **kwargs)
        if self.i >= len(self.draws) or self.draws[self.i] != draw:
            raise NotStackable(f"the step's random draws changed from the probe's ({draw} at call {self.i})")
        out = self.tensors[self.i]
        self.i += 1
        return out


def draw_tape(draws: list[Draw], states: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Each draw for every member, stacked on a leading member dimension; each member's generator state is
    restored before and saved after its draws, exactly as its separate job's generator would advance."""
    per_member = []
    for state in states:
        set_rng(state)
        per_member.append([(torch.randn if d.kind == "randn" else torch.rand)(d.shape, dtype=d.dtype, device=d.device)
                           for d in draws])
        state.update(get_rng())
    return [torch.stack([m[k] for m in per_member]) for k in range(len(draws))]


def get_rng() -> dict[str, torch.Tensor]:
    """The global generators' states (CPU, and the current CUDA device's when there is one)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
