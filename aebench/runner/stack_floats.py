"""Trials in one stack: the float hyperparameters in which the members' models differ, swapped per member.

A stack runs one model's code (its first member's) on every member's weights. Members of a search differ in
hyperparameters such as beta or lam, read by the loss as attributes of the model or of its config dataclass.
``MemberFloats`` finds them by walking every value the model's code can read, and refuses (``NotStackable``)
members that differ in anything else; under vmap each member then sees its own value as a 0-d float32
tensor, which is what a Python float becomes when it meets a float32 tensor. A loss that turns the value back
into a Python number (``math.log``, ``float()``) cannot run under vmap: the stack's probe refuses it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch

from aebench.runner.stack_tape import NotStackable

_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))  # parameters, buffers, submodules, hooks, training
_MISSING = object()


def _leaves(value: Any, path: str, out: dict[str, Any], owners: dict[str, tuple[Any, str]], depth: int = 0) -> None:
    """Every value a model's code can read, by path: into containers, dataclasses and plain objects; ``owners``
    gets the (object, attribute) of each value reached by attributes alone (what a member can swap)."""
    if isinstance(value, torch.nn.Module):
        out[path] = type(value)  # its own attributes are walked as a submodule
    elif inspect.isroutine(value) or isinstance(value, type):
        out[path] = (getattr(value, "__module__", None), getattr(value, "__qualname__", repr(value)))
    elif isinstance(value, (dict, list, tuple)) and depth < 6:
        out[path] = (type(value), len(value))
        for k, v in (value.items() if isinstance(value, dict) else enumerate(value)):
            _leaves(v, f"{path}[{k!r}]", out, {}, depth + 1)
    elif hasattr(value, "__dict__") and not torch.is_tensor(value) and depth < 6:
        out[path] = type(value)
        for k, v in vars(value).items():
            owners[f"{path}.{k}"] = (value, k)
            _leaves(v, f"{path}.{k}", out, owners, depth + 1)
    else:
        out[path] = value


def _model_leaves(model: torch.nn.Module) -> tuple[dict[str, Any], dict[str, tuple[Any, str]]]:
    """The model's readable values by path, and the owner of each value reached by attributes alone."""
    out: dict[str, Any] = {}
    owners: dict[str, tuple[Any, str]] = {}
    for prefix, module in model.named_modules():
        for name, value in vars(module).items():
            if name not in _MODULE_INTERNALS:
                path = f"{prefix}.{name}" if prefix else name
                owners[path] = (module, name)
                _leaves(value, path, out, owners)
    return out, owners


def _same(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype \
            and bool(torch.equal(a.cpu(), b.cpu()))
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - objects without a usable ==
        return a is b


class MemberFloats:
    """The float attributes in which the members' models differ (of a module, or of an object such as a config
    dataclass that a module holds), one float32 value per member; set on the stack's shared model for each call.

    Raises ``NotStackable`` if the models differ in anything else (a size, a flag, a float inside a list or
    dict): the stack runs one model's code with only these attributes swapped per member.
    """

    def __init__(self, models: list[torch.nn.Module], device: torch.device):
        walked = [_model_leaves(m) for m in models]
        self.owners = walked[0][1]
        self.values: dict[str, torch.Tensor] = {}
        for path in sorted(set().union(*(leaves for leaves, _ in walked))):
            values = [leaves.get(path, _MISSING) for leaves, _ in walked]
            if all(_same(v, values[0]) for v in values[1:]):
                continue
            if not (path in self.owners and all(type(v) is float for v in values)):
                shown = ", ".join("-" if v is _MISSING else repr(v)[:40] for v in values[:3])
                raise NotStackable(f"their models differ in {path} ({shown}), not in a float hyperparameter")
            self.values[path] = torch.tensor(values, dtype=torch.float32, device=device)

    def keep(self, index: torch.Tensor) -> None:
        """Only the members at ``index`` stay."""
        self.values = {k: v[index] for k, v in self.values.items()}

    @contextlib.contextmanager
    def swapped(self, values: dict[str, torch.Tensor]) -> Iterator[None]:
        """One member's values (0-d tensors under vmap) in place of the shared model's floats."""
        saved = []
        try:
            for path, value in values.items():
                owner, name = self.owners[path]
                saved.append((owner, name, vars(owner)[name]))
                vars(owner)[name] = value  # a plain attribute: past Module.__setattr__ and frozen dataclasses
            yield
        finally:
            for owner, name, value in reversed(saved):
                vars(owner)[name] = value
