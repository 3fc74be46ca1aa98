"""The index file's contract: its records, their roles and keys, and the content hash.

``data/index.json`` is a list of ``{"key", "path", "class", "label", "role", "sha256"}``
records, role one of ``ROLES``. ``key`` names a video whatever its position in the index or
the root's location (the stores name their part files by it), ``sha256`` is the hash of its
bytes (``file_sha256``), so the caches keyed on them follow the videos. This module is what the
stages after ``index`` need of it; how a root becomes an index is ``datasets.index``'s job.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import PurePosixPath
from typing import Any

ROLES = ("train", "val", "test", "unused")
HASH_BLOCK = 1 << 20  # bytes read at a time when hashing a video (1 MiB)


def video_key(path: str | os.PathLike) -> str:
    """A video's stable id from its path alone, ``<class folder>/<file name>``: the same wherever the
    root lives and wherever the video sits in the index (``"brush_hair/April_09_....avi"``)."""
    path = PurePosixPath(str(path).replace(os.sep, "/"))
    return f"{path.parent.name}/{path.name}"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read ``HASH_BLOCK`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_unique_keys(index: list[dict[str, Any]], source: str) -> None:
    """Raise ValueError naming each ``key`` that several records of ``index`` (read from
    ``source``, a root or a file) share, with their paths."""
    paths: dict[str, list[str]] = {}
    for record in index:
        paths.setdefault(record["key"], []).append(record["path"])
    repeated = {key: found for key, found in paths.items() if len(found) > 1}
    if repeated:
        raise ValueError(f"{source}: video keys must be unique; repeated: {repeated}")


def read_index(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read ``data/index.json`` as written by the ``index`` stage.

    Records written by hand (tests) may lack ``key`` and ``sha256``: a missing ``key`` is
    filled in as ``video_key(path)`` (``<parent folder>/<file name>``); a missing ``sha256``
    stays missing, and a consumer that needs the content hash computes ``file_sha256``
    of the file itself.

    Returns:
        The records, each ``{"key": str, "path": str, "class": str, "label": int,
        "role": str}`` plus ``"sha256": str`` when the file has it.

    Raises:
        ValueError: if a record lacks one of path, class, label, role, has a role
            outside ``ROLES``, or two records share a key.
    """
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    for number, record in enumerate(list(index)):
        if not {"path", "class", "label", "role"} <= set(record) or record["role"] not in ROLES:
            raise ValueError(f"{path} record {number}: need keys path, class, label, role with role in "
                             f"{list(ROLES)}; got {record!r}")
        index[number] = {"key": video_key(record["path"]), **record}
    check_unique_keys(index, str(path))
    return index
