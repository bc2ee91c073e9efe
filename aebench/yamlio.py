"""Suite files as data: ``yaml.safe_load`` with one-line errors, floats like ``1e-4``, no duplicate keys, and
``--set key.path=value`` overrides applied to the raw mapping."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml

from aebench.errors import AebenchError, SuiteError


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``) and refuses a key
    given twice (plain YAML keeps the last silently, so an edit could be lost without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice; keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def safe_load(text: str):
    """Parse YAML as data only: no tags that construct objects."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def read_yaml(path: str | os.PathLike) -> Any:
    """``yaml.safe_load`` of a file, with a one-line error naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AebenchError(f"{path}: no such suite file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AebenchError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    try:
        return safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        tag = re.search(r"for the tag '(?:tag:yaml\.org,2002:)?([^']*)'", problem)
        if tag:
            raise SuiteError(str(path), None, f"malformed YAML at {where}: tag '!!{tag.group(1)}' is not allowed, "
                             "a suite is data; allowed: plain mappings, lists, strings, numbers, true/false, "
                             "null") from None
        raise SuiteError(str(path), None, f"malformed YAML at {where}: {problem}") from None
    except RecursionError:
        raise SuiteError(str(path), None, "malformed YAML: nested too deeply") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``key.path=value`` -> (["key", "path"], value), the value read as YAML (``3`` is an int)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise AebenchError(f"--set {text!r}: expected key.path=value")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to the raw mapping (list items by index: ``models.0.params.beta=4``)."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = raw
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise AebenchError(f"--set {text}: {where} is not an index of a {len(node)}-item list")
                node = node[int(part)]
            elif isinstance(node, dict):
                if isinstance(node.get(part), str):  # `launcher: slurm` + --set launcher.partition=gpu
                    node[part] = {"name": node[part]}
                elif not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
            else:
                raise AebenchError(f"--set {text}: {where} is not a mapping")
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise AebenchError(f"--set {text}: {last} is not an index of a {len(node)}-item list")
            node[int(last)] = value
        else:
            node[last] = value
    return raw


