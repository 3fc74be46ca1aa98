"""Per-video part files: what the long per-video stages (``frames``, ``flow``) share.

Such a stage stores each video in its own HDF5 file, ``<out>/parts/<key>.h5``, named by
the video's stable id (``"<class>/<file name>"``, ``hmdb51.video_key``), never by its
position in the index, and stamped with a *part key*: a hash of everything the part is
made from (the video's bytes or the part it was computed from, the params that decide
the result, and the source of the code that computes it). The stage's output folder is a
DVC ``persist`` output, so a part survives a killed or repeated run: a run reuses every
part whose stamp matches, computes only the others, then removes the parts no video of
the index needs. A part is written under a temporary name and renamed when complete, so a
kill leaves either a whole part or none, and a file is never rewritten in place (with
DVC's hardlink or symlink cache the workspace file may be the cache's own inode).

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
import numpy as np

from twostream.h5store import LIBVER

PARTS_DIR = "parts"
SUFFIX = ".h5"
TEMP_MARK = ".partial-"  # in the names of parts being written
KEY_ATTR = "part_key"
MAX_OPEN_FILES = 256  # part files a reader keeps open per process (DataLoader workers: each its own)


def part_path(out_dir: str | os.PathLike, key: str) -> Path:
    """``<out_dir>/parts/<key>.h5`` for the video of stable id ``key``.

    Raises:
        ValueError: if ``key`` is empty, absolute or climbs out of the folder.
    """
    parts = Path(key).parts
    if not parts or Path(key).is_absolute() or ".." in parts:
        raise ValueError(f"a video key must be a relative path inside the dataset; got {key!r}")
    return Path(out_dir) / PARTS_DIR / f"{key}{SUFFIX}"


def code_hash(*sources: Any) -> str:
    """Hex SHA-256 over the source files of ``sources`` (modules or paths): a part made by other
    code is not reused."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(Path(getattr(source, "__file__", source)).read_bytes())
    return digest.hexdigest()


def content_key(fields: dict[str, Any]) -> str:
    """Hex SHA-256 of ``fields`` as canonical JSON (sorted keys): the stamp of a part."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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


class EncodedItems:
    """Fast reads of a part's encoded items: the ``data`` dataset is contiguous, so item ``i`` is the
    file bytes ``base + offsets[i] .. base + offsets[i + 1]``, read with ``os.pread`` (no HDF5 call
    after the first read of a part: opening an HDF5 file cost more than decoding a 340x256 JPEG).

    File descriptors are kept per process, at most ``MAX_OPEN_FILES``, least recently used closed
    first; after a fork the child opens its own. Pickles without them.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._layout: dict[str, tuple[int, np.ndarray]] = {}  # part -> (data offset in file, offsets)
        self._fds: dict[str, int] = {}
        self._pid = os.getpid()

    def _fd(self, part: str) -> int:
        if os.getpid() != self._pid:  # forked: the inherited descriptors belong to the parent
            self._fds, self._pid = {}, os.getpid()
        if part in self._fds:
            self._fds[part] = self._fds.pop(part)
        else:
            if len(self._fds) >= MAX_OPEN_FILES:
                os.close(self._fds.pop(next(iter(self._fds))))
            self._fds[part] = os.open(self.root / part, os.O_RDONLY)
        return self._fds[part]

    def offsets(self, part: str) -> np.ndarray:
        """``(n + 1,) int64`` where each item starts and ends in the part's ``data``."""
        if part not in self._layout:
            with h5py.File(self.root / part, "r") as f:
                base = f["data"].id.get_offset()
                offsets = f["offsets"][()]
            if base is None and offsets[-1] > 0:  # pragma: no cover - the stages write contiguous data
                raise ValueError(f"{self.root / part}: data is not stored contiguously")
            self._layout[part] = (int(base or 0), offsets)
        return self._layout[part][1]

    def read(self, part: str, item: int) -> np.ndarray:
        """``(n,) uint8``: the encoded bytes of item ``item`` of ``part`` (a path relative to the root)."""
        offsets = self.offsets(part)
        base = self._layout[part][0]
        start, end = int(offsets[item]), int(offsets[item + 1])
        data = os.pread(self._fd(part), end - start, base + start)
        if len(data) != end - start:
            raise OSError(f"{self.root / part}: item {item} is cut short ({len(data)} of {end - start} bytes)")
        return np.frombuffer(data, np.uint8)

    def close(self) -> None:
        """Close this process's descriptors (they reopen on the next read)."""
        if os.getpid() == self._pid:
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state
