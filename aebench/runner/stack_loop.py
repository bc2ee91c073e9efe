"""The stacked training loop: stacked weights, one vmapped step for every member, per-member epochs.

Per step each member indexes its own batch (its seed's permutation), replays its own draws and sees its own
float hyperparameters (the model attributes in which the members differ, as float32 numbers: what a Python
float becomes when it meets a float32 tensor); the losses are summed (members share no weights, so each
slice's gradient is its member's own), gradients are clipped per member, and one optimiser step updates the
stack (members with their own learning rates: the optimiser steps zero shadows at rate 1, and each member's
weights move by its rate times that update). After each epoch the slices are copied into the members' own
models and optimisers, and each member closes its epoch exactly as a separate job does
(``train.close_epoch``: validation, selection, schedule, curve, resume state).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap

from aebench import faults
from aebench.data.base import ImageSet
from aebench.errors import Diverged
from aebench.models.base import TrainSettings, make_optimizer
from aebench.runner.stack_floats import MemberFloats
from aebench.runner.stack_tape import Draw, NotStackable, Probe, Replay, draw_tape, set_rng
from aebench.store import jobdir as files


def _per_member(value: Any, param: torch.Tensor, members: int | None) -> bool:
    """Whether an optimiser state entry is shaped like its parameter (Adam's moments), not a shared scalar (its
    step). ``members``: the parameter is stacked, the entry must be too; None: both are one member's."""
    if not torch.is_tensor(value) or value.dim() == 0 or value.dim() != param.dim():
        return False
    return value.shape[0] == members if members is not None else value.shape == param.shape


class LossCall(torch.nn.Module):
    """``functional_call`` calls a module's forward: this forward is the model's loss."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.loss(x)


class Stack:
    """The stacked weights and optimiser of a group of members (``stacked._Member``) that are still training."""

    def __init__(self, members: list, settings: TrainSettings, device: torch.device):
        self.members, self.settings, self.device = list(members), settings, device
        self.base = LossCall(members[0].model)
        self.draws: dict[int, list[Draw]] = {}
        self._now: list[Draw] | None = None
        wrapped = [LossCall(m.model) for m in members]
        params, buffers = stack_module_state(wrapped)
        self.params, self.buffers = params, buffers
        self.floats = MemberFloats([m.model for m in members], device)
        lrs = self._current_lrs()  # a resumed schedule's current rates
        # members of a learning-rate search: the optimiser steps shadows at lr 1, the stack scales by each rate
        self.lrs = torch.tensor(lrs, dtype=torch.float32, device=device) if len(set(lrs)) > 1 else None
        self.slots = self._slots(params)
        self.opt = make_optimizer(list(self.slots.values()), settings)
        self.opt.param_groups[0]["lr"] = 1.0 if self.lrs is not None else lrs[0]
        owns = [dict(w.named_parameters()) for w in wrapped]
        for name, p in params.items():  # resumed members: their moments, stacked
            states = [m.optimizers[0].state.get(own[name]) for m, own in zip(members, owns, strict=True)]
            if all(states):
                self.opt.state[self.slots[name]] = {
                    k: torch.stack([s[k] for s in states]) if _per_member(v, p[0], None) else v
                    for k, v in states[0].items()}

    def _current_lrs(self) -> list[float]:
        return [m.optimizers[0].param_groups[0]["lr"] for m in self.members]

    def _slots(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the optimiser holds for each stacked weight: the weight, or (members with their own learning
        rates) a zero shadow whose step at lr 1 is the update per unit rate (the optimisers that may stack so
        read no weight in their update: ``stacked.stack_key``)."""
        if self.lrs is None:
            return params
        return {n: torch.zeros_like(p).requires_grad_(True) for n, p in params.items()}

    # -- one step -----------------------------------------------------------------------------------
    def _call(self, params: dict, buffers: dict, floats: dict, x: torch.Tensor, tape: list[torch.Tensor]) -> dict:
        with self.floats.swapped(floats):
            if self._now is None:  # the probe: its mode, outside vmap, records the draws
                return functional_call(self.base, (params, buffers), (x,))
            with Replay(list(tape), self._now):
                return functional_call(self.base, (params, buffers), (x,))

    def probe(self, data: ImageSet, batch_size: int) -> None:
        """Learn each batch size's draws, and raise ``NotStackable`` if the loss cannot run in the stack."""
        n, m = len(data), len(self.members)
        before = {k: v.clone() for k, v in self.buffers.items()}
        for size in sorted({min(batch_size, n), n % batch_size} - {0}):
            x = data.images[:size].float().div_(255.0).unsqueeze(0).repeat(m, *([1] * data.images.dim()))
            recorder = Probe()
            try:
                with recorder:
                    out = vmap(self._call, randomness="error")(self.params, self.buffers, self.floats.values, x, [])
            except NotStackable:
                raise
            except Exception as e:  # noqa: BLE001 - whatever vmap refuses (dropout, data-dependent control flow)
                first = str(e).splitlines()[0][:160] if str(e) else ""
                raise NotStackable(f"its loss does not run under vmap: {e.__class__.__name__}: {first}") from None
            if not isinstance(out, dict) or "loss" not in out or out["loss"].shape != (m,):
                raise NotStackable("its loss terms are not one number per member")
            self.draws[size] = recorder.draws
        if any(not torch.equal(before[k], v) for k, v in self.buffers.items()):
            raise NotStackable("its buffers change during training")

    def _step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._now = self.draws[x.shape[1]]
        tape = draw_tape(self._now, [m.rng for m in self.members])
        out = vmap(self._call, randomness="error")(self.params, self.buffers, self.floats.values, x, tape)
        for p in self.params.values():
            p.grad = None
        out["loss"].sum().backward()
        if self.settings.grad_clip:
            self._clip(self.settings.grad_clip)
        if self.lrs is None:
            self.opt.step()
        else:
            self._step_per_member_lr()
        return {k: v.detach() for k, v in out.items()}

    def _step_per_member_lr(self) -> None:
        """Each member's update at its own rate: the optimiser's step of a zero shadow at lr 1, times the rate."""
        with torch.no_grad():
            for name, p in self.params.items():
                z = self.slots[name]
                z.zero_()
                z.grad = p.grad
        self.opt.step()
        with torch.no_grad():
            for name, p in self.params.items():
                if p.grad is not None:
                    p.add_(self.slots[name] * self.lrs.view(-1, *([1] * (p.dim() - 1))))

    def _clip(self, max_norm: float) -> None:
        """``clip_grad_norm_`` of each member's own gradients (its total 2-norm over its parameters)."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads], dim=1).norm(dim=1)
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))

    # -- members --------------------------------------------------------------------------------------
    def _to_members(self) -> None:
        """Copy each member's slice of the weights and optimiser state into its own model and optimiser."""
        m_count = len(self.members)
        with torch.no_grad():
            for j, m in enumerate(self.members):
                wrapped = LossCall(m.model)
                own = dict(wrapped.named_parameters())
                for name, p in self.params.items():
                    own[name].copy_(p[j])
                    state = self.opt.state.get(self.slots[name])
                    if state:
                        m.optimizers[0].state[own[name]] = {
                            k: v[j].clone() if _per_member(v, p, m_count) else (v.clone() if torch.is_tensor(v) else v)
                            for k, v in state.items()}
                for name, b in dict(wrapped.named_buffers()).items():
                    b.copy_(self.buffers[name][j])

    def _drop(self, leaving: list[int]) -> None:
        """Take finished or diverged members out of the stack, keeping the others' weights and moments."""
        keep = [j for j in range(len(self.members)) if j not in leaving]
        m_count = len(self.members)
        self.members = [self.members[j] for j in keep]
        if not keep:
            return
        index = torch.tensor(keep, device=self.device)
        old, old_slots, lr = self.opt, self.slots, self.opt.param_groups[0]["lr"]
        params = {n: p.detach()[index].clone().requires_grad_(True) for n, p in self.params.items()}
        if self.lrs is not None:
            self.lrs = self.lrs[index]
        self.slots = self._slots(params)
        self.opt = make_optimizer(list(self.slots.values()), self.settings)
        self.opt.param_groups[0]["lr"] = lr
        for name, p_old in self.params.items():
            state = old.state.get(old_slots[name])
            if state:
                self.opt.state[self.slots[name]] = {k: v[index].clone() if _per_member(v, p_old, m_count) else v
                                                    for k, v in state.items()}
        self.params = params
        self.buffers = {n: b[index].clone() for n, b in self.buffers.items()}
        self.floats.keep(index)

    # -- the loop -------------------------------------------------------------------------------------
    def run(self, data: ImageSet, val: ImageSet | None, epochs: int, batch_size: int, sel: Any,
            progress: Any = None) -> Iterator[tuple[Any, Diverged | None]]:
        """Train to the end; yields each member as it leaves: (member, None) trained, (member, Diverged)."""
        from aebench.runner.train import check_finite, close_epoch, epoch_permutation, gather_batch

        n = len(data)
        steps = math.ceil(n / batch_size)
        fault = faults.point if faults.enabled() else None
        for epoch in range(self.members[0].state.epoch + 1, epochs + 1):
            if not self.members:
                return
            t0 = time.perf_counter()
            perms = torch.stack([epoch_permutation(n, m.job.seed, epoch, self.device) for m in self.members])
            sums: dict[str, torch.Tensor] = {}
            for i in range(steps):
                x = gather_batch(data.images, perms[:, i * batch_size:(i + 1) * batch_size])
                for k, v in self._step(x).items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                if progress is not None:
                    progress(1)
                if fault is not None:
                    fault("train_step")
            share = (time.perf_counter() - t0) / len(self.members)  # each member's part of the machine time
            self._to_members()
            leaving = []
            for j, m in enumerate(self.members):
                row = {k: float(v[j]) / steps for k, v in sums.items()}
                try:
                    check_finite(row, m.model, epoch)
                except Diverged as e:
                    leaving.append(j)
                    yield m, e
                    continue
                m.state.seconds += share
                set_rng(m.rng)  # the resume state saves the member's generators, as its separate job would
                with warnings.catch_warnings():  # its own optimiser never steps (the stack's does): torch warns
                    warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                    close_epoch(m.model, m.optimizers, m.state, row, epoch, epochs, val, batch_size, m.job.seed,
                                self.device, m.on_epoch, m.jd / files.RESUME, m.job.train.checkpoint_every)
                if m.state.stopped_early or epoch == epochs:
                    if sel.select == "best" and val is not None:
                        m.state.selector.restore(m.model)
                    leaving.append(j)
                    yield m, None
            if self.members and len(leaving) < len(self.members):  # the schedule's step
                if self.lrs is not None:
                    self.lrs = torch.tensor(self._current_lrs(), dtype=torch.float32, device=self.device)
                else:
                    rest = next(m for j, m in enumerate(self.members) if j not in leaving)
                    self.opt.param_groups[0]["lr"] = rest.optimizers[0].param_groups[0]["lr"]
            if leaving:
                self._drop(leaving)
