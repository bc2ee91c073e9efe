"""Typed, side-effect-free conversion of YAML values into plain dataclasses.

Every error is a ``SuiteError`` naming the field path (``train.epochs``, ``models[2].params.beta``)
and what is allowed; the suite loader adds the file name.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from typing import Any

from aebench.errors import AebenchError, SuiteError

_TYPE_NAMES = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against type ``hint`` (an int is accepted for a float); return the value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for a in options:
            try:
                return coerce(value, a, where)
            except SuiteError:
                continue
        allowed = " or ".join(_TYPE_NAMES.get(a, getattr(a, "__name__", str(a))) for a in options)
        raise SuiteError(None, where, f"expected {allowed}, got {_type_name(value)} {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise SuiteError(None, where, f"{value!r} is not allowed; allowed: {', '.join(map(repr, args))}")
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SuiteError(None, where, f"expected a list, got {_type_name(value)} {value!r}")
        inner = args[0] if args else Any
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise SuiteError(None, where, f"expected a mapping, got {_type_name(value)} {value!r}")
        return value
    if hint in _TYPE_NAMES:
        ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if hint is float and isinstance(value, float) and not math.isfinite(value):
            raise SuiteError(None, where, f"expected a finite number, got {value}")
        if not ok:
            raise SuiteError(None, where, f"expected {_TYPE_NAMES[hint]}, got {_type_name(value)} {value!r}")
        return value
    return value


def unknown_field(key: Any, allowed: list[str]) -> str:
    """The message for a key that is not a field: the closest field names first, then all of them."""
    import difflib

    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown field; {hint}allowed: {', '.join(allowed) or 'none'}"


def from_dict(cls: type, values: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types.

    A dataclass may check its own values in ``__post_init__`` by raising ``AebenchError``; that
    message is reported at ``where``.
    """
    if not isinstance(values, dict):
        raise SuiteError(None, where, f"expected a mapping, got {_type_name(values)} {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in values:
        if key not in fields:
            raise SuiteError(None, f"{where}.{key}" if where else str(key), unknown_field(key, list(fields)))
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except SuiteError as e:  # raised by __post_init__ with the field name alone
        if e.file is None and where and e.field and not e.field.startswith(where):
            e.field = f"{where}.{e.field}"
        raise
    except AebenchError as e:
        raise SuiteError(None, where, str(e)) from None


def signature_dataclass(fn: Any, name: str, skip: int = 1) -> type:
    """A dataclass of ``fn``'s keyword settings (after the first ``skip`` parameters), typed by its annotations.

    Metrics, samplers, launchers and likelihoods take their settings as typed keyword arguments; this turns
    such a signature into the dataclass that ``from_dict`` checks, so a mistyped setting is refused by
    ``aebench validate`` instead of failing after training.
    """
    import copy
    import inspect

    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: check names, not types
        hints = {}
    fields = []
    for p in list(inspect.signature(fn).parameters.values())[skip:]:
        if p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        hint = hints.get(p.name, Any)
        if p.default is p.empty:
            fields.append((p.name, hint))
        elif isinstance(p.default, (list, dict, set)):
            fields.append((p.name, hint, dataclasses.field(default_factory=lambda d=p.default: copy.deepcopy(d))))
        else:
            fields.append((p.name, hint, dataclasses.field(default=p.default)))
    return dataclasses.make_dataclass(name, fields)
