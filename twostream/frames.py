"""Stage ``frames``: decode every indexed video once into a few HDF5 shards; read them back.

On disk (``data/frames/``):

- ``frames-NNNNN.h5``: up to ``frames.videos_per_shard`` videos each, in index order.
  One dataset per video, named by its zero-padded id (``000042``): ``(T, H, W, 3)
  uint8`` RGB at the working size, one frame per chunk, lossless (a frame reads back
  bit-exact): HDF5's gzip filter where it pays, else uncompressed (see
  ``encode_chunks``); attributes ``fps`` and ``n_frames``.
- ``meta.json``: ``{"layout", "storage", "params", "videos": {"<id>": {"shard",
  "dataset", "fps", "n_frames"}}}`` with ``<id>`` the video's position in the index.

Workers decode and encode each frame as one HDF5 chunk (``h5store.encode_chunks``); the
main process writes the chunks as they are (``write_direct_chunk``) in index order, so the files are
byte-identical whatever order the workers finish in. Compressing a video costs about
half as much CPU as decoding it, so it runs in the workers, not in the one writer.

The shard writing and the lazy per-process reading are ``twostream.h5store``'s.

Storage was chosen by measuring (``python -m twostream.bench store``): on the demo's
64x64 frames JPEG (q90) is 6.5x smaller than raw, but lossy, with 8x8 blocks that flow
and SG3I would see; zlib saves only 5-20% there. Frames are kept lossless.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, NamedTuple

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from twostream.config import FramesConfig, resolve_workers, result_params
from twostream.h5store import (  # noqa: F401 - LIBVER, dataset_name, encode_chunks: re-exports
    LIBVER, META_NAME, RAW_ABOVE, VideoShardWriter, VideoStore, clear_shards, dataset_name, encode_chunks,
)
from twostream.hmdb51 import read_index, write_json
from twostream.pools import ordered_map, pool_context
from twostream.video import VideoError, decode_video

log = logging.getLogger(__name__)

DECODE_ROLES = ("train", "val", "test")  # index roles whose videos are decoded
SHARD_NAME = "frames-{:05d}.h5"
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
    warnings: list[str]  # ffmpeg's errors for a video that still decoded whole (video.decode_video)


def _decode_job(job: tuple[int, str, int, int]) -> _Decoded:
    """Worker: decode one video ``(vid, path, width, height)`` and compress every frame."""
    vid, path, width, height = job
    try:
        frames, fps, warnings = decode_video(path, width, height)
    except VideoError as e:
        return _Decoded(vid, 0.0, (), None, [], e.reason, [])
    compression, chunks = encode_chunks(frames)
    return _Decoded(vid, fps, frames.shape, compression, chunks, None, warnings)


@contextlib.contextmanager
def _decoded(jobs: list[tuple[int, str, int, int]], workers: int) -> Iterator[Iterator[_Decoded]]:
    """Results of ``_decode_job`` over ``jobs`` in job order, from ``workers`` processes."""
    if workers <= 1 or len(jobs) <= 1:
        yield map(_decode_job, jobs)
        return
    yield ordered_map(_decode_job, jobs, min(workers, len(jobs)), pool_context([__name__]),
                      name=lambda job: f"video {job[0]} ({job[1]})")


def _write(writer: VideoShardWriter, result: _Decoded) -> dict[str, Any]:
    """Write one decoded video; returns its ``meta.json`` entry."""
    attrs = {"fps": np.float64(result.fps), "n_frames": np.int64(result.shape[0])}
    entry = writer.add_chunks(result.vid, result.shape, np.uint8, result.chunks, result.compression, attrs)
    return {**entry, "fps": result.fps, "n_frames": result.shape[0]}


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


def extract_frames(index_path: str | os.PathLike, out_dir: str | os.PathLike,
                   report_path: str | os.PathLike, cfg: FramesConfig) -> dict[str, Any]:
    """Decode the train/val/test videos of an index into HDF5 shards at the working size.

    Role ``unused`` videos are listed in the report as skipped, undecodable ones as
    failed, each with a reason: every indexed video is stored or reported. A video that
    decoded whole although ffmpeg logged errors is stored and listed as ``warned`` (its
    first message as ``reason``, and ``n_warnings``).

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
    jobs, skipped, failed, warned, videos = [], [], [], [], {}
    for vid, record in enumerate(index):
        if record["role"] in DECODE_ROLES:
            jobs.append((vid, record["path"], cfg.width, cfg.height))
        else:
            skipped.append(_problem(vid, record, f"role {record['role']!r} is not decoded"))
    out_dir = clear_shards(out_dir, SHARD_NAME)
    with VideoShardWriter(out_dir, SHARD_NAME, cfg.videos_per_shard) as writer, \
            _decoded(jobs, resolve_workers(cfg.workers)) as results, logging_redirect_tqdm():
        for result in tqdm(results, total=len(jobs), desc="frames", unit="video"):
            if result.reason is None:
                videos[str(result.vid)] = _write(writer, result)
                if result.warnings:
                    warned.append({**_problem(result.vid, index[result.vid], result.warnings[0]),
                                   "n_warnings": len(result.warnings)})
            else:
                failed.append(_problem(result.vid, index[result.vid], result.reason))
                log.warning("video %d (%s): %s", result.vid, failed[-1]["path"], result.reason)
    write_json(out_dir / META_NAME, {"layout": LAYOUT, "storage": STORAGE, "params": result_params(cfg),
                                     "videos": videos})
    fraction = len(failed) / len(jobs) if jobs else 0.0
    report = {
        "counts": {"indexed": len(index), "attempted": len(jobs), "stored": len(videos),
                   "failed": len(failed), "skipped": len(skipped), "warned": len(warned)},
        "failed_fraction": fraction, "max_failures": cfg.max_failures,
        "failed": failed, "skipped": skipped, "warned": warned,
    }
    write_json(report_path, report)
    if fraction > cfg.max_failures:
        raise FramesError(
            f"{len(failed)} of {len(jobs)} videos failed to decode ({fraction:.1%}), more than "
            f"frames.max_failures = {cfg.max_failures:.1%}; reasons in {report_path}"
        )
    return report


class FrameStore(VideoStore):
    """Read access to the ``frames`` stage's output folder.

    HDF5 files open lazily, one handle per shard per process (see ``h5store.VideoStore``):
    safe to build before a fork (DataLoader or pool workers), and it pickles without
    handles, so it can be sent to spawned workers.
    """

    missing_message = ("video {vid!r} is not in {root} ({n} videos stored; failed and "
                       "skipped ones are listed in the frames report)")

    def __init__(self, frames_dir: str | os.PathLike) -> None:
        """Read ``meta.json`` of ``frames_dir``.

        Raises:
            FileNotFoundError: if ``frames_dir`` has no ``meta.json``.
        """
        super().__init__(frames_dir)
        self.params: dict[str, Any] = self.meta["params"]
        self.width: int = self.params["width"]
        self.height: int = self.params["height"]

    def info(self, vid: int) -> FrameInfo:
        """``FrameInfo(fps, n_frames)`` of video ``vid`` (no HDF5 access).

        Raises:
            KeyError: if the video is not stored.
        """
        entry = self._entry(vid)
        return FrameInfo(float(entry["fps"]), int(entry["n_frames"]))

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
        return self._read_rows(vid, indices, "frame")
