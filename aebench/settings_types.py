"""Typed settings of registered parts: metrics, samplers, launchers and likelihoods.

A part declares its settings either as a dataclass (registry meta ``settings="module:Class"``, whose
``__post_init__`` may check values) or as typed keyword arguments (a metric function's, a sampler's or
launcher's ``__init__``), which ``signature_dataclass`` turns into one. Either way ``aebench validate``
checks every field's type and refuses unknown keys before anything trains, and the canonical form (every
setting, defaults filled) is what evaluation keys hash.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, is_dataclass
from functools import cache
from typing import Any

from aebench.config import from_dict, signature_dataclass


def _resolve(target: Any) -> Any:
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    return target


@cache
def _class_for(kind: str, name: str, ident: int) -> type:
    from aebench.registry import REGISTRIES

    reg = REGISTRIES[kind]
    declared = reg.meta(name).get("settings")
    if declared is not None:
        cls = _resolve(declared)
        if not is_dataclass(cls):
            raise TypeError(f"{kind} {name!r}: settings {declared!r} is not a dataclass")
        return cls
    obj = reg.get(name)
    fn = obj.__init__ if isinstance(obj, type) else obj
    return signature_dataclass(fn, f"{name}-settings", skip=1)


def settings_class(kind: str, name: str) -> type:
    """The dataclass of registered ``name``'s settings in registry ``kind`` (``metrics``, ``samplers``, ...)."""
    from aebench.registry import REGISTRIES

    entry = REGISTRIES[kind].entry(name)
    return _class_for(kind, entry.name, id(entry))


def check_settings(kind: str, name: str, options: dict[str, Any], where: str) -> Any:
    """The typed settings of ``name`` for ``options``; a ``SuiteError`` at ``where.<field>`` otherwise."""
    from aebench.errors import SuiteError
    from aebench.registry import REGISTRIES

    try:
        return from_dict(settings_class(kind, name), options, where)
    except SuiteError as e:
        if e.message.startswith("unknown field; "):
            what = REGISTRIES[kind].kind
            e.message = f"unknown setting of {what} {name!r}; {e.message[len('unknown field; '):]}"
        raise


def canonical(kind: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every setting of ``name``, defaults filled: the same options always give the same dict."""
    return asdict(check_settings(kind, name, options, ""))


def canonical_metric_settings(name: str, options: dict[str, Any]) -> dict[str, Any]:
    return canonical("metrics", name, options)


def canonical_sampler_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    return canonical("samplers", name, options)


def metric_depends(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What a metric depends on beyond its settings (meta ``depends="module:fn"``: settings -> dict)."""
    from aebench.registry import METRICS

    target = METRICS.meta(name).get("depends")
    return dict(_resolve(target)(settings)) if target else {}
