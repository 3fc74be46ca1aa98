"""Stage ``frames``: decode every indexed video once into a few HDF5 shards; read them back.

On disk (``data/frames/``):

- ``frames-NNNNN.h5``: up to ``frames.videos_per_shard`` videos each, in index order.
  One dataset per video, named by its zero-padded id (``000042``): ``(T, H, W, 3)
  uint8`` RGB at the working size, one frame per chunk, lossless (a frame reads back
  bit-exact): HDF5's gzip filter where it pays, else uncompressed (see
  ``encode_chunks``); attributes ``fps`` and ``n_frames``.
- ``meta.json``: ``{"layout", "storage", "params", "videos": {"<id>": {"shard",
  "dataset", "fps", "n_frames"}}}`` with ``<id>`` the video's position in the index.

Workers decode and encode each frame as one HDF5 chunk; the main process writes the
chunks as they are (``write_direct_chunk``) in index order, so the files are
byte-identical whatever order the workers finish in. Compressing a video costs about
half as much CPU as decoding it, so it runs in the workers, not in the one writer.

Storage was chosen by measuring (``python -m twostream.bench store``): on the demo's
64x64 frames JPEG (q90) is 6.5x smaller than raw, but lossy, with 8x8 blocks that flow
and SG3I would see; zlib saves only 5-20% there. Frames are kept lossless.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import zlib
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import h5py
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from twostream.config import FramesConfig, resolve_workers, to_dict
from twostream.hmdb51 import read_index, write_json
from twostream.video import VideoError, read_video

log = logging.getLogger(__name__)

DECODE_ROLES = ("train", "val", "test")  # index roles whose videos are decoded
SHARD_NAME = "frames-{:05d}.h5"
META_NAME = "meta.json"
GZIP_LEVEL = 1  # deflate level when matching pays (see encode_chunks); 4-9 saved < 2% more
RAW_ABOVE = 0.75  # a video is stored uncompressed if zlib leaves more than this share of frame 0
LIBVER = ("v110", "v110")  # fixed HDF5 format version: same bytes with any newer library
LAYOUT = "(T, H, W, 3) uint8 RGB"
STORAGE = {"chunk": "1 frame", "compression": f"gzip where it saves {1 - RAW_ABOVE:.0%}, else none"}


class FramesError(RuntimeError):
    """More videos failed to decode than ``frames.max_failures`` allows."""


class FrameInfo(NamedTuple):
    """What the store knows of a video without reading its frames."""

    fps: float  # native frame rate; frame i is at i / fps seconds
    n_frames: int  # frames stored


class _Decoded(NamedTuple):
    """A worker's answer for one video: its encoded chunks, or the reason it failed."""

    vid: int
    fps: float
    shape: tuple[int, ...]  # (T, H, W, 3) of the decoded frames; () on failure
    compression: str | None  # HDF5 filter of the chunks: "gzip" or None
    chunks: list[bytes]  # one per frame, as HDF5 stores it with that filter
    reason: str | None  # None on success


def dataset_name(vid: int) -> str:
    """HDF5 dataset name of video ``vid`` (its index position, zero-padded to 6 digits)."""
    return f"{vid:06d}"


def _zlib(frame: np.ndarray, strategy: int) -> bytes:
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 15, 8, strategy)
    return packer.compress(np.ascontiguousarray(frame)) + packer.flush()


def encode_chunks(frames: np.ndarray) -> tuple[str | None, list[bytes]]:
    """The HDF5 chunks of one video, one per frame, and the filter they need.

    Measured on 64x64 frames (``python -m twostream.bench store``): on textured or noisy
    frames deflate's string matching finds little, and Huffman coding alone came within
    6% of level-1 deflate's size at ~1.8x its speed; on flat synthetic frames matching
    wins ~5x. On the demo's noisy frames neither saves 20%, while compressing costs
    about half the CPU of decoding and makes reads ~5x slower: such videos stay raw.
    So frame 0 decides for its video: raw if zlib leaves more than ``RAW_ABOVE`` of it,
    else level-1 deflate if that is 10% smaller than Huffman-only, else Huffman-only.
    Both are plain zlib streams, which any HDF5 reader inflates.

    Args:
        frames: ``(T, H, W, 3) uint8``.

    Returns:
        ``(compression, chunks)``: ``"gzip"`` or None (raw bytes), and ``T`` chunks.
    """
    huffman = _zlib(frames[0], zlib.Z_HUFFMAN_ONLY)
    deflate = _zlib(frames[0], zlib.Z_DEFAULT_STRATEGY)
    if min(len(huffman), len(deflate)) > RAW_ABOVE * frames[0].nbytes:
        return None, [np.ascontiguousarray(frame).tobytes() for frame in frames]
    strategy = zlib.Z_DEFAULT_STRATEGY if len(deflate) < 0.9 * len(huffman) else zlib.Z_HUFFMAN_ONLY
    return "gzip", [_zlib(frame, strategy) for frame in frames]


def _decode_job(job: tuple[int, str, int, int]) -> _Decoded:
    """Worker: decode one video ``(vid, path, width, height)`` and compress every frame."""
    vid, path, width, height = job
    try:
        frames, fps = read_video(path, width, height)
    except VideoError as e:
        return _Decoded(vid, 0.0, (), None, [], e.reason)
    compression, chunks = encode_chunks(frames)
    return _Decoded(vid, fps, frames.shape, compression, chunks, None)


@contextlib.contextmanager
def _decoded(jobs: list[tuple[int, str, int, int]], workers: int) -> Iterator[Iterator[_Decoded]]:
    """Results of ``_decode_job`` over ``jobs`` in job order, from ``workers`` processes."""
    if workers <= 1 or len(jobs) <= 1:
        yield map(_decode_job, jobs)
        return
    with multiprocessing.get_context().Pool(min(workers, len(jobs))) as pool:
        yield pool.imap(_decode_job, jobs, chunksize=1)


class _ShardWriter:
    """Appends videos to ``frames-NNNNN.h5`` files, ``per_shard`` videos per file."""

    def __init__(self, out_dir: Path, per_shard: int) -> None:
        self.out_dir, self.per_shard = out_dir, per_shard
        self.n_written = 0
        self._file: h5py.File | None = None

    def add(self, result: _Decoded) -> dict[str, Any]:
        """Write one decoded video; returns its ``meta.json`` entry."""
        shard = SHARD_NAME.format(self.n_written // self.per_shard)
        if self.n_written % self.per_shard == 0:
            self.close()
            self._file = h5py.File(self.out_dir / shard, "w", libver=LIBVER)
        name = dataset_name(result.vid)
        ds = self._file.create_dataset(
            name, shape=result.shape, dtype=np.uint8, chunks=(1, *result.shape[1:]),
            compression=result.compression, track_times=False,
        )
        for i, chunk in enumerate(result.chunks):
            ds.id.write_direct_chunk((i, 0, 0, 0), chunk)
        ds.attrs["fps"] = np.float64(result.fps)
        ds.attrs["n_frames"] = np.int64(result.shape[0])
        self.n_written += 1
        return {"shard": shard, "dataset": name, "fps": result.fps, "n_frames": result.shape[0]}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _problem(vid: int, record: dict[str, Any], reason: str) -> dict[str, Any]:
    return {"id": vid, "path": record["path"], "class": record["class"], "reason": reason}


def _check_config(cfg: FramesConfig) -> None:
    if cfg.width <= 0 or cfg.height <= 0:
        raise ValueError(
            f"frames.width and frames.height must be positive; got {cfg.width}x{cfg.height}"
        )
    if cfg.videos_per_shard < 1:
        raise ValueError(f"frames.videos_per_shard must be >= 1; got {cfg.videos_per_shard}")
    if not 0.0 <= cfg.max_failures <= 1.0:
        raise ValueError(f"frames.max_failures must be a fraction in 0..1; got {cfg.max_failures}")


def _clear(out_dir: Path) -> None:
    """Remove what an earlier run wrote, so no stale shard survives a smaller run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("frames-*.h5"), out_dir / META_NAME]:
        old.unlink(missing_ok=True)


def extract_frames(index_path: str | os.PathLike, out_dir: str | os.PathLike,
                   report_path: str | os.PathLike, cfg: FramesConfig) -> dict[str, Any]:
    """Decode the train/val/test videos of an index into HDF5 shards at the working size.

    Role ``unused`` videos are listed in the report as skipped, undecodable ones as
    failed, each with a reason: every indexed video is stored or reported.

    Args:
        index_path: ``data/index.json``; relative video paths are taken from the cwd.
        out_dir: folder for the shards and ``meta.json`` (earlier shards are removed).
        report_path: JSON report: counts, and every failed or skipped video with a reason.
        cfg: the ``frames`` params.

    Returns:
        The report written to ``report_path``.

    Raises:
        ValueError: on bad params.
        FramesError: if failed / attempted videos exceeds ``cfg.max_failures`` (the
            shards, meta and report are written first).
    """
    _check_config(cfg)
    index = read_index(index_path)
    jobs, skipped, failed, videos = [], [], [], {}
    for vid, record in enumerate(index):
        if record["role"] in DECODE_ROLES:
            jobs.append((vid, record["path"], cfg.width, cfg.height))
        else:
            skipped.append(_problem(vid, record, f"role {record['role']!r} is not decoded"))
    out_dir = Path(out_dir)
    _clear(out_dir)
    writer = _ShardWriter(out_dir, cfg.videos_per_shard)
    try:
        with _decoded(jobs, resolve_workers(cfg.workers)) as results, logging_redirect_tqdm():
            for result in tqdm(results, total=len(jobs), desc="frames", unit="video"):
                if result.reason is None:
                    videos[str(result.vid)] = writer.add(result)
                else:
                    failed.append(_problem(result.vid, index[result.vid], result.reason))
                    log.warning("video %d (%s): %s", result.vid, failed[-1]["path"], result.reason)
    finally:
        writer.close()
    write_json(out_dir / META_NAME, {"layout": LAYOUT, "storage": STORAGE, "params": to_dict(cfg),
                                     "videos": videos})
    fraction = len(failed) / len(jobs) if jobs else 0.0
    report = {
        "counts": {"indexed": len(index), "attempted": len(jobs), "stored": len(videos),
                   "failed": len(failed), "skipped": len(skipped)},
        "failed_fraction": fraction, "max_failures": cfg.max_failures,
        "failed": failed, "skipped": skipped,
    }
    write_json(report_path, report)
    if fraction > cfg.max_failures:
        raise FramesError(
            f"{len(failed)} of {len(jobs)} videos failed to decode ({fraction:.1%}), more than "
            f"frames.max_failures = {cfg.max_failures:.1%}; reasons in {report_path}"
        )
    return report


class FrameStore:
    """Read access to the ``frames`` stage's output folder.

    HDF5 files open lazily, one handle per shard per process: a store built before a
    fork (DataLoader or pool workers) opens its own handles in each child and never
    uses the parent's. It pickles without handles, so it can be sent to spawned workers.
    """

    def __init__(self, frames_dir: str | os.PathLike) -> None:
        """Read ``meta.json`` of ``frames_dir``.

        Raises:
            FileNotFoundError: if ``frames_dir`` has no ``meta.json``.
        """
        self.root = Path(frames_dir)
        with open(self.root / META_NAME, encoding="utf-8") as f:
            meta = json.load(f)
        self.params: dict[str, Any] = meta["params"]
        self.width: int = meta["params"]["width"]
        self.height: int = meta["params"]["height"]
        self._videos = {int(k): v for k, v in meta["videos"].items()}
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
        try:
            return self._videos[vid]
        except KeyError:
            raise KeyError(
                f"video {vid!r} is not in {self.root} ({len(self)} videos stored; failed and "
                f"skipped ones are listed in the frames report)"
            ) from None

    def info(self, vid: int) -> FrameInfo:
        """``FrameInfo(fps, n_frames)`` of video ``vid`` (no HDF5 access).

        Raises:
            KeyError: if the video is not stored.
        """
        entry = self._entry(vid)
        return FrameInfo(float(entry["fps"]), int(entry["n_frames"]))

    def _dataset(self, entry: dict[str, Any]) -> h5py.Dataset:
        if os.getpid() != self._pid:  # forked: the inherited handles belong to the parent
            self._files, self._pid = {}, os.getpid()
        shard = entry["shard"]
        if shard not in self._files:
            self._files[shard] = h5py.File(self.root / shard, "r")
        return self._files[shard][entry["dataset"]]

    def read(self, vid: int, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Frames of video ``vid``.

        Args:
            vid: video id.
            indices: frame indices to read, any order, repeats allowed; None = all.

        Returns:
            ``(len(indices) or T, H, W, 3) uint8`` RGB frames.

        Raises:
            KeyError: if the video is not stored.
            IndexError: if an index is outside ``0..n_frames-1``.
        """
        entry = self._entry(vid)
        ds = self._dataset(entry)
        if indices is None:
            return ds[()]
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = int(entry["n_frames"])
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise IndexError(f"frame indices of video {vid} must be in 0..{n - 1}; got {bad.tolist()}")
        if idx.size == 0:
            return np.empty((0, self.height, self.width, 3), np.uint8)
        unique, inverse = np.unique(idx, return_inverse=True)  # h5py wants increasing indices
        return ds[unique][inverse.reshape(-1)]

    def close(self) -> None:
        """Close this process's HDF5 handles (they reopen on the next read)."""
        if os.getpid() == self._pid:
            for f in self._files.values():
                f.close()
        self._files = {}

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}
        return state
