"""Third-party models, metrics and other parts: from the ``aebench.plugins`` entry-point group, from a
file (``--plugin path/to/file.py``), or from a module (``--plugin package.module``).

A plugin is ordinary Python that registers parts with the registries' decorators when imported.
Loading is idempotent: a plugin already loaded is not imported twice.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from aebench.errors import AebenchError

ENTRY_POINT_GROUP = "aebench.plugins"
_loaded: dict[str, str] = {}


def _describe(exc: BaseException, path: Path | None = None) -> str:
    """``Error: first line``, with the line of the plugin file that raised it when known."""
    message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    text = f"{exc.__class__.__name__}: {message.splitlines()[0] if message else ''}".rstrip(": ")
    line = None
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
    elif path is not None:
        tb = exc.__traceback__
        while tb is not None:
            if Path(tb.tb_frame.f_code.co_filename) == path:
                line = tb.tb_lineno
            tb = tb.tb_next
    return f"{text}, at {path.name if path else 'line'}:{line}" if line else text


def load_plugin(spec: str, base: Path | None = None) -> str:
    """Import one plugin (a ``.py`` path, relative to ``base`` if given, or a module name)."""
    looks_like_file = spec.endswith(".py") or "/" in spec or "\\" in spec
    if looks_like_file:
        path = Path(spec)
        if not path.is_absolute() and base is not None and not path.exists():
            path = base / path
        path = path.resolve()
        key = str(path)
        if key in _loaded:
            return _loaded[key]
        if not path.is_file():
            raise AebenchError(f"plugin {spec!r}: no such file ({path})")
        name = "aebench_plugin_" + path.stem.replace("-", "_") + "_" + hashlib.sha1(key.encode()).hexdigest()[:8]
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except AebenchError as e:
            sys.modules.pop(name, None)
            raise AebenchError(f"plugin {spec!r}: {e}") from None
        except BaseException as e:  # noqa: BLE001 - a stranger's code: report it, in one line
            sys.modules.pop(name, None)
            raise AebenchError(f"plugin {spec!r} failed to import ({_describe(e, path)})") from None
    else:
        key = spec
        if key in _loaded:
            return _loaded[key]
        try:
            importlib.import_module(spec)
        except AebenchError as e:
            raise AebenchError(f"plugin {spec!r}: {e}") from None
        except BaseException as e:  # noqa: BLE001
            raise AebenchError(f"plugin {spec!r} failed to import ({_describe(e)})") from None
    _loaded[key] = spec
    return spec


def load_plugins(specs: list[str], base: Path | None = None) -> None:
    for spec in specs:
        load_plugin(spec, base)


def load_entry_points() -> list[str]:
    """Import every plugin advertised under the ``aebench.plugins`` entry-point group."""
    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry-point:{ep.value}"
        if key in _loaded:
            continue
        try:
            ep.load()
        except AebenchError as e:
            raise AebenchError(f"plugin entry point {ep.name!r} ({ep.value}): {e}") from None
        except BaseException as e:  # noqa: BLE001
            raise AebenchError(
                f"plugin entry point {ep.name!r} ({ep.value}) failed to import ({_describe(e)})") from None
        _loaded[key] = ep.name
        loaded.append(ep.name)
    return loaded
