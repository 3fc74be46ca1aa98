"""Per-video part files: how the long per-video stages (``frames``, ``flow``) write and resume.

Such a stage stores each video in its own HDF5 file, ``<out>/parts/<key>.h5``, named by
the video's stable id (the index record's ``key``, ``datasets.common``), never by its
position in the index, and stamped with a *part key* (``part_key``): a hash of what the
part is made from (the video's bytes or the part it was computed from), the params that
decide the result, and the *version* of the computation, a constant the module that owns
it declares (``frames.VERSION``, ``flow.VERSION``) and bumps whenever a change of code or
of a library alters the bytes it writes (``tests/test_golden.py`` fails until it is bumped).
Source text never enters a stamp: a comment or a refactoring keeps every part.

The stage's output folder is a DVC ``persist`` output, so a part survives a killed or
repeated run: a run reuses every part whose stamp matches, computes only the others, then
removes the parts no video of the index needs. A part is written under a temporary name
and renamed when complete, so a kill leaves either a whole part or none, and a file is
never rewritten in place (with DVC's hardlink or symlink cache the workspace file may be
the cache's own inode). Reading parts back is ``h5store.EncodedItems``'s job.

The unit of work, one video to one part, is a pure function of its inputs: the same
inputs give the same bytes, whichever process or machine runs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import h5py

from twostream.ingest.h5store import LIBVER

PARTS_DIR = "parts"
SUFFIX = ".h5"
TEMP_MARK = ".partial-"  # in the names of parts being written
KEY_ATTR = "part_key"


def part_path(out_dir: str | os.PathLike, key: str) -> Path:
    """``<out_dir>/parts/<key>.h5`` for the video of stable id ``key``.

    Raises:
        ValueError: if ``key`` is empty, absolute or climbs out of the folder.
    """
    parts = Path(key).parts
    if not parts or Path(key).is_absolute() or ".." in parts:
        raise ValueError(f"a video key must be a relative path inside the dataset; got {key!r}")
    return Path(out_dir) / PARTS_DIR / f"{key}{SUFFIX}"


def content_key(fields: dict[str, Any]) -> str:
    """Hex SHA-256 of ``fields`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def part_key(source: str, params: dict[str, Any], computation: str, version: int) -> str:
    """The stamp of a part: what it is made from (``source``: a video's content hash, or the
    stamp of the part it is computed from), the ``params`` that decide its bytes, and the
    ``version`` of the ``computation`` that makes it (``"frames"``, ``"flow"``).

    Raises:
        ValueError: if ``version`` is not a positive integer.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"a computation's version must be an integer >= 1; got {version!r}")
    return content_key({"source": source, "params": params, "computation": computation, "version": version})


def stamp_of(path: str | os.PathLike) -> str | None:
    """The part key a finished part file carries, or None (no file, not HDF5, or no stamp)."""
    if not os.path.isfile(path):
        return None
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(KEY_ATTR)
    except OSError:
        return None
    return None if value is None else str(value)


@contextlib.contextmanager
def writing(path: str | os.PathLike, key: str) -> Iterator[h5py.File]:
    """An HDF5 file to fill with one part; it appears at ``path``, stamped ``key``, only if the
    block ends without an exception (written under a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        with h5py.File(temp, "w", libver=LIBVER) as f:
            yield f
            f.attrs[KEY_ATTR] = key  # last: a stamped file is a complete one
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def remove_stale(out_dir: str | os.PathLike, keep: set[Path]) -> int:
    """Delete every file under ``out_dir`` that is not in ``keep`` (parts of videos no longer
    wanted, parts of failed videos, temporary files of a killed run, files of an earlier store
    layout), and empty folders: the stage's output is then exactly what this run wrote, as a
    fresh run would write it. ``meta.json`` goes too; the stage writes it anew.

    Returns:
        The number of files removed.
    """
    root = Path(out_dir)
    if not root.is_dir():
        return 0
    keep = {Path(p) for p in keep}
    removed = 0
    for path in sorted(root.rglob("*"), reverse=True):  # children before their folders
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif path not in keep:
            path.unlink()
            removed += 1
    return removed
