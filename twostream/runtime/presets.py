"""Named param sets for ``dvc exp run``: ``presets.yaml``, printed as ``-S key=value`` arguments.

``python -m twostream preset NAME`` prints one line of ``-S`` arguments, so one command runs a
recipe (``dvc exp run -n tsn $(python -m twostream preset hmdb51-tsn)``); ``--list`` shows each
preset with what it does, the figure to expect and what it needs. A preset's ``set`` holds
dotted ``params.yaml`` keys; ``apply`` checks every key exists and gives the params it makes.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml

PRESETS_FILE = "presets.yaml"  # beside params.yaml, at the repository root
FIELDS = ("about", "expect", "needs", "set")


class PresetError(ValueError):
    """An unknown preset, or a preset whose keys params.yaml does not have; one line."""


def load_presets(path: str | os.PathLike = PRESETS_FILE) -> dict[str, dict[str, Any]]:
    """The presets of ``path``, each checked to have exactly ``FIELDS`` and a mapping ``set``.

    Raises:
        PresetError: on a malformed preset (names it).
    """
    with open(path, encoding="utf-8") as f:
        presets = yaml.safe_load(f) or {}
    for name, preset in presets.items():
        if not isinstance(preset, dict) or sorted(preset) != sorted(FIELDS) or not isinstance(preset["set"], dict):
            raise PresetError(f"preset {name}: needs exactly the fields {', '.join(FIELDS)} (set: a mapping)")
    return presets


def get(presets: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """The preset ``name``.

    Raises:
        PresetError: naming the presets there are.
    """
    if name not in presets:
        raise PresetError(f"no preset {name!r}; presets: {', '.join(presets)}")
    return presets[name]


def value_text(value: Any) -> str:
    """A param value as ``dvc exp run -S`` parses it (YAML): ``true``, ``0.001``, ``[1.0,1.5]``, ``sgd``."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def set_args(preset: dict[str, Any]) -> list[str]:
    """``["-S", "key=value", ...]`` for every key the preset sets, in its order."""
    return [arg for key, value in preset["set"].items() for arg in ("-S", f"{key}={value_text(value)}")]


def apply(params: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with the preset's keys set (a top-level key like ``fusion``, or ``section.key``).

    Raises:
        PresetError: on a key ``params`` does not have (a preset may not invent params).
    """
    out = copy.deepcopy(params)
    for key, value in preset["set"].items():
        *sections, last = key.split(".")
        node = out
        for name in sections:
            if not isinstance(node.get(name), dict):
                raise PresetError(f"preset key {key}: params.yaml has no section {name}")
            node = node[name]
        if last not in node:
            raise PresetError(f"preset key {key}: params.yaml has no such key")
        node[last] = value
    return out


def describe(presets: dict[str, dict[str, Any]]) -> str:
    """What ``--list`` prints: per preset its name, then what it does, expects and needs, indented."""
    lines = []
    for name, p in presets.items():
        lines += [name, *(f"    {field}: {' '.join(str(p[field]).split())}" for field in FIELDS[:3]), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(name: str | None, list_: bool, path: str | os.PathLike = PRESETS_FILE) -> str:
    """The text ``python -m twostream preset`` prints (``-S`` arguments of ``name``, or the list).

    Raises:
        PresetError: on an unknown or malformed preset; FileNotFoundError: without ``presets.yaml``.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no {path} in {os.getcwd()} (run from the repository root)")
    presets = load_presets(path)
    if list_ or name is None:
        return describe(presets)
    return " ".join(set_args(get(presets, name))) + "\n"
