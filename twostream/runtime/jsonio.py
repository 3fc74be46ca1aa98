"""JSON files the stages hand to each other, written byte for byte the same on every run.

Every report, index, meta and metrics file of the pipeline is written by ``write_json``
(sorted keys, one-space indent, final newline), so the same content always gives the
same bytes and DVC's hash of a re-run's output changes only when its content does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as byte-deterministic JSON (``indent=1``, sorted keys, final newline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """The document of a JSON file (UTF-8)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)
