"""One small generic registry, and its instances for every pluggable part of aebench.

Built-in parts are registered lazily as ``"module:attr"`` strings (see ``aebench.catalog``) so that
``import aebench`` and ``aebench ls`` never import torch. Third-party parts use the decorator::

    from aebench import MODELS

    @MODELS.register("my-ae", "myae", description="my autoencoder")
    class MyAE(Autoencoder): ...
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aebench.errors import AebenchError, UnknownNameError

T = TypeVar("T")

# Names become parts of paths and of HTML, so they are restricted to a safe alphabet.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def check_name(name: str, what: str = "name") -> str:
    """Refuse names that could escape a folder or break a file name (``..``, separators, ...)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise AebenchError(
            f"invalid {what} {name!r}: use letters, digits, '_', '-', '.', '+' (at most 64, no '..')"
        )
    return name


@dataclass
class Entry:
    """A registered object (or the ``"module:attr"`` string that imports it) and its metadata."""

    name: str
    target: Any
    description: str = ""
    aliases: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "aebench"

    @property
    def lazy(self) -> bool:
        return isinstance(self.target, str)


class Registry(Generic[T]):
    """Maps names and aliases to objects; refuses duplicates; suggests close names for typos."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._alias: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------------
    def register(
        self,
        name: str,
        *aliases: str,
        target: Any = None,
        description: str = "",
        source: str | None = None,
        **meta: Any,
    ) -> Callable[[T], T]:
        """Register ``target`` (or the decorated object) under ``name`` and ``aliases``.

        ``target`` may be a ``"module:attr"`` string, imported on first use.
        """

        def add(obj: Any) -> Any:
            for n in (name, *aliases):
                check_name(n, f"{self.kind} name")
                if n in self._alias:
                    owner = self._alias[n]
                    raise AebenchError(
                        f"{self.kind} {n!r} is already registered (by {self._entries[owner].source}); "
                        "choose another name"
                    )
            desc = description or _first_doc_line(obj)
            src = source or (obj.split(":")[0] if isinstance(obj, str) else getattr(obj, "__module__", "?"))
            self._entries[name] = Entry(name, obj, desc, tuple(aliases), dict(meta), src)
            for n in (name, *aliases):
                self._alias[n] = name
            return obj

        if target is not None:
            add(target)
            return lambda obj: obj
        return add

    def unregister(self, name: str) -> None:
        """Remove an entry and its aliases (tests and plugin reloads use this)."""
        entry = self._entries.pop(self.canonical(name))
        for n in (entry.name, *entry.aliases):
            self._alias.pop(n, None)

    # -- lookup -------------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; a helpful error otherwise."""
        if name in self._alias:
            return self._alias[name]
        close = difflib.get_close_matches(str(name), list(self._alias), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})"
        )

    def entry(self, name: str) -> Entry:
        return self._entries[self.canonical(name)]

    def get(self, name: str) -> T:
        """The registered object, importing lazy entries on first use."""
        entry = self.entry(name)
        if entry.lazy:
            module, _, attr = entry.target.partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            entry.target = obj
        return entry.target

    def meta(self, name: str) -> dict[str, Any]:
        return self.entry(name).meta

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._alias

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _first_doc_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) if not isinstance(obj, str) else None
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""


def metric_direction(column: str) -> str | None:
    """'min', 'max' or None (neither is better) for a results column ``"<metric>/<key>"``.

    A metric's ``directions`` meta overrides its ``direction`` per key, by exact key or fnmatch pattern
    (keys named after samplers, such as ``fid/precision_<sampler>``, need patterns). Unknown metrics
    have no direction.
    """
    from fnmatch import fnmatchcase

    name, _, key = column.partition("/")
    if name not in METRICS:
        return None
    meta = METRICS.meta(name)
    overrides = meta.get("directions") or {}
    if key in overrides:
        return overrides[key]
    for pattern, direction in overrides.items():
        if fnmatchcase(key, pattern):
            return direction
    return meta.get("direction")


MODELS: Registry = Registry("model")
METRICS: Registry = Registry("metric")
DATASETS: Registry = Registry("dataset")
BACKBONES: Registry = Registry("backbone")
SAMPLERS: Registry = Registry("sampler")
LAUNCHERS: Registry = Registry("launcher")
LIKELIHOODS: Registry = Registry("likelihood")
OPTIMIZERS: Registry = Registry("optimizer")
EXTRACTORS: Registry = Registry("feature extractor")

REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "metrics": METRICS,
    "datasets": DATASETS,
    "backbones": BACKBONES,
    "samplers": SAMPLERS,
    "launchers": LAUNCHERS,
    "likelihoods": LIKELIHOODS,
    "optimizers": OPTIMIZERS,
    "extractors": EXTRACTORS,
}

from aebench import catalog  # noqa: E402,F401  (registers the built-in, lazy entries)
