"""Per-video HDF5 stores: what the ``frames``, ``flow`` and ``sg3i`` stages share.

Each of those stages writes a folder of ``<prefix>-NNNNN.h5`` shards plus a
``meta.json`` that indexes them: ``{"videos": {"<id>": {"shard", "dataset", ...}}, ...}``.
A shard holds up to ``per_shard`` videos in id order, one dataset per video named by its
zero-padded id (``000042``), first axis = the video's items (frames, flow pairs or SG3I
images), one item per HDF5 chunk, so reading an item touches one chunk.

Files are byte-deterministic: a fixed HDF5 format version (``LIBVER``), no timestamps,
datasets and attributes always created in the same order.

- ``VideoShardWriter`` appends videos to the shards (arrays through h5py's filters, or
  chunks encoded beforehand, e.g. by ``encode_chunks`` in worker processes).
- ``VideoStore`` reads them back: HDF5 files open lazily, one handle per shard per
  process, so a store built before a fork (DataLoader or pool workers) opens its own
  handles in each child; it pickles without handles.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

META_NAME = "meta.json"
LIBVER = ("v110", "v110")  # fixed HDF5 format version: same bytes with any newer library
GZIP_LEVEL = 1  # deflate level when matching pays (see encode_chunks); 4-9 saved < 2% more
RAW_ABOVE = 0.75  # a video is stored uncompressed if zlib leaves more than this share of item 0
MAX_OPEN_FILES = 256  # part files a reader keeps open per process (DataLoader workers: each its own)


def dataset_name(vid: int) -> str:
    """HDF5 dataset name of video ``vid`` (its index position, zero-padded to 6 digits)."""
    return f"{vid:06d}"


def clear_shards(out_dir: str | os.PathLike, shard_name: str) -> Path:
    """Create ``out_dir`` and remove the shards and ``meta.json`` an earlier run wrote there.

    So no stale shard survives a smaller run.

    Args:
        out_dir: the store's folder.
        shard_name: the shards' name pattern, ``"<prefix>-{:05d}.h5"``.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = shard_name.split("{", 1)[0]
    for old in [*out_dir.glob(f"{prefix}*.h5"), out_dir / META_NAME]:
        old.unlink(missing_ok=True)
    return out_dir


def _zlib(item: np.ndarray, strategy: int) -> bytes:
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 15, 8, strategy)
    return packer.compress(np.ascontiguousarray(item)) + packer.flush()


def encode_chunks(items: np.ndarray) -> tuple[str | None, list[bytes]]:
    """The HDF5 chunks of one video, one per item (frame), and the filter they need.

    Measured on 64x64 frames (``python -m twostream.bench store``): on textured or noisy
    frames deflate's string matching finds little, and Huffman coding alone came within
    6% of level-1 deflate's size at ~1.8x its speed; on flat synthetic frames matching
    wins ~5x. On the demo's noisy frames neither saves 20%, while compressing costs
    about half the CPU of decoding and makes reads ~5x slower: such videos stay raw.
    So item 0 decides for its video: raw if zlib leaves more than ``RAW_ABOVE`` of it,
    else level-1 deflate if that is 10% smaller than Huffman-only, else Huffman-only.
    Both are plain zlib streams, which any HDF5 reader inflates.

    Args:
        items: ``(T, ...)`` array, e.g. ``(T, H, W, 3) uint8`` frames.

    Returns:
        ``(compression, chunks)``: ``"gzip"`` or None (raw bytes), and ``T`` chunks.
    """
    huffman = _zlib(items[0], zlib.Z_HUFFMAN_ONLY)
    deflate = _zlib(items[0], zlib.Z_DEFAULT_STRATEGY)
    if min(len(huffman), len(deflate)) > RAW_ABOVE * items[0].nbytes:
        return None, [np.ascontiguousarray(item).tobytes() for item in items]
    strategy = zlib.Z_DEFAULT_STRATEGY if len(deflate) < 0.9 * len(huffman) else zlib.Z_HUFFMAN_ONLY
    return "gzip", [_zlib(item, strategy) for item in items]


class VideoShardWriter:
    """Appends one dataset per video to ``shard_name``-numbered files, ``per_shard`` videos each.

    A shard file is created when its first video arrives, so a run whose videos all
    fail writes none. Use as a context manager, or call ``close``.
    """

    def __init__(self, out_dir: str | os.PathLike, shard_name: str, per_shard: int) -> None:
        """Plan the files (nothing is written before ``add``).

        Args:
            out_dir: the store's folder (must exist; see ``clear_shards``).
            shard_name: ``"<prefix>-{:05d}.h5"``, formatted with the shard number.
            per_shard: videos per file.

        Raises:
            ValueError: if ``per_shard`` < 1.
        """
        if per_shard < 1:
            raise ValueError(f"videos per shard must be >= 1; got {per_shard}")
        self.out_dir, self.shard_name, self.per_shard = Path(out_dir), shard_name, per_shard
        self.n_written = 0
        self._file: h5py.File | None = None

    def _next(self) -> tuple[h5py.File, str]:
        """The file the next video goes to (opened when a shard starts), and its name."""
        shard = self.shard_name.format(self.n_written // self.per_shard)
        if self.n_written % self.per_shard == 0:
            self.close()
            self._file = h5py.File(self.out_dir / shard, "w", libver=LIBVER)
        return self._file, shard

    def _finish(self, ds: h5py.Dataset, shard: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
        for key, value in attrs.items():  # in the caller's order: the bytes depend on it
            ds.attrs[key] = value
        self.n_written += 1
        return {"shard": shard, "dataset": ds.name.lstrip("/")}

    def add(self, vid: int, data: np.ndarray, attrs: Mapping[str, Any] | None = None,
            compression: str | None = None, compression_opts: Any = None) -> dict[str, Any]:
        """Write video ``vid``'s array through h5py, one item per chunk.

        Args:
            vid: video id (names the dataset).
            data: ``(N, ...)`` array, N >= 1.
            attrs: dataset attributes, written in this order.
            compression, compression_opts: h5py filter (None = raw).

        Returns:
            ``{"shard": file name, "dataset": dataset name}`` for ``meta.json``.
        """
        f, shard = self._next()
        ds = f.create_dataset(dataset_name(vid), data=data, chunks=(1, *data.shape[1:]),
                              compression=compression, compression_opts=compression_opts,
                              track_times=False)
        return self._finish(ds, shard, attrs or {})

    def add_chunks(self, vid: int, shape: tuple[int, ...], dtype: Any, chunks: list[bytes],
                   compression: str | None, attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write video ``vid`` from chunks already encoded (``write_direct_chunk``), one per item.

        Args:
            vid: video id (names the dataset).
            shape: ``(N, ...)`` of the video's array; ``len(chunks) == N``.
            dtype: its element type.
            chunks: item ``i``'s bytes as HDF5 stores them with ``compression``.
            compression: the filter the chunks were encoded for (``"gzip"``) or None (raw).
            attrs: dataset attributes, written in this order.

        Returns:
            ``{"shard": file name, "dataset": dataset name}`` for ``meta.json``.
        """
        assert len(chunks) == shape[0], (len(chunks), shape)
        f, shard = self._next()
        ds = f.create_dataset(dataset_name(vid), shape=shape, dtype=dtype, chunks=(1, *shape[1:]),
                              compression=compression, track_times=False)
        origin = (0,) * (len(shape) - 1)
        for i, chunk in enumerate(chunks):
            ds.id.write_direct_chunk((i, *origin), chunk)
        return self._finish(ds, shard, attrs or {})

    def close(self) -> None:
        """Close the open shard, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> VideoShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoStore:
    """Read access to a folder of per-video shards and its ``meta.json``.

    Subclasses add what their stage's ``meta.json`` carries. HDF5 files open lazily,
    one handle per shard per process: after a fork the child drops the parent's handles
    and opens its own. The store pickles without handles.
    """

    #: ``KeyError`` text for a video not stored; formatted with vid, root, n (videos stored)
    missing_message = "video {vid!r} is not in {root} ({n} videos stored)"

    def __init__(self, root: str | os.PathLike) -> None:
        """Read ``meta.json`` of ``root``.

        Raises:
            FileNotFoundError: if ``root`` has no ``meta.json``.
        """
        self.root = Path(root)
        with open(self.root / META_NAME, encoding="utf-8") as f:
            self.meta: dict[str, Any] = json.load(f)
        self._videos: dict[int, dict[str, Any]] = {int(k): v for k, v in self.meta["videos"].items()}
        self._files: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    @property
    def video_ids(self) -> list[int]:
        """Ids (index positions) of the stored videos, ascending."""
        return sorted(self._videos)

    def __len__(self) -> int:
        return len(self._videos)

    def __contains__(self, vid: object) -> bool:
        return vid in self._videos

    def _entry(self, vid: int) -> dict[str, Any]:
        """``meta.json`` entry of ``vid`` (no HDF5 access); KeyError naming it if not stored."""
        try:
            return self._videos[vid]
        except KeyError:
            raise KeyError(self.missing_message.format(vid=vid, root=self.root, n=len(self))) from None

    def _dataset(self, vid: int) -> h5py.Dataset:
        """The HDF5 dataset of ``vid``, opening its shard in this process if needed."""
        entry = self._entry(vid)
        if os.getpid() != self._pid:  # forked: the inherited handles belong to the parent
            self._files, self._pid = {}, os.getpid()
        shard = entry["shard"]
        if shard not in self._files:
            self._files[shard] = h5py.File(self.root / shard, "r")
        return self._files[shard][entry["dataset"]]

    def _read_rows(self, vid: int, rows: np.ndarray | list[int] | None, what: str) -> np.ndarray:
        """Items of ``vid``'s dataset by row, any order, repeats allowed.

        Args:
            vid: video id.
            rows: row numbers (first axis); None = all.
            what: the rows' name in errors (``"frame"``, ``"clip"``).

        Returns:
            ``(len(rows) or N, ...)`` array of the dataset's dtype.

        Raises:
            KeyError: if the video is not stored.
            IndexError: if a row is outside ``0..N-1``.
        """
        ds = self._dataset(vid)
        if rows is None:
            return ds[()]
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        n = ds.shape[0]
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise IndexError(f"{what} indices of video {vid} must be in 0..{n - 1}; got {bad.tolist()}")
        if idx.size == 0:
            return np.empty((0, *ds.shape[1:]), ds.dtype)
        unique, inverse = np.unique(idx, return_inverse=True)  # h5py wants increasing indices
        return ds[unique][inverse.reshape(-1)]

    def close(self) -> None:
        """Close this process's HDF5 handles (they reopen on the next read)."""
        if os.getpid() == self._pid:
            for f in self._files.values():
                f.close()
        self._files = {}

    def __enter__(self) -> VideoStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}
        return state


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
