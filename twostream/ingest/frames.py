"""Stage ``frames``: decode every indexed video once and store the frames later stages read.

Each train/val/test video of the index becomes one part file of the frames store
(``framestore`` describes the files and reads them): its native frames that ``resample.fps``
keeps, resized to ``frames.width`` x ``frames.height`` and encoded one by one with
``frames.codec``. A decode streams in blocks (``video.VideoReader``) and a worker writes its
video's part itself, so memory does not grow with the video's length, and a killed run
keeps the parts it finished (``parts``). A part is stamped with the video's bytes, the
params that decide it and ``VERSION``; a re-run reuses every part whose stamp matches,
whatever else changed in the code. Why JPEG at quality 95 by default: docs/storage.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import h5py
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from twostream.runtime import executors
from twostream.ingest import parts
from twostream.ingest.clips import kept_stream
from twostream.ingest.codec import CODECS, PNG_LEVEL, encode_image
from twostream.runtime.config import ExecutorConfig, FramesConfig, resolve_workers, result_params
from twostream.ingest.framestore import LAYOUT, decode_frame
from twostream.ingest.h5store import META_NAME
from twostream.ingest.datasets.records import file_sha256, read_index
from twostream.runtime.jsonio import write_json
from twostream.runtime.pools import ordered_map, pool_context
from twostream.ingest.video import VideoError, VideoReader

log = logging.getLogger(__name__)

# The version of what a frames part holds for given video bytes and params: bump it with any
# change of code or library that changes a part's bytes (decoding, resizing, which frames are
# kept, the encoding, the file layout); tests/test_golden.py fails until it is bumped. Parts
# of another version are recomputed, those of this one reused whatever else changed.
VERSION = 1
DECODE_ROLES = ("train", "val", "test")  # index roles whose videos are decoded


class FramesError(RuntimeError):
    """More videos failed to decode than ``frames.max_failures`` allows."""


def encode_frame(rgb: np.ndarray, codec: str, quality: int) -> bytes:
    """One ``(H, W, 3) uint8`` RGB frame as the store keeps it (``codec.encode_image``).

    Raises:
        ValueError: on an unknown codec.
    """
    if codec not in CODECS:
        raise ValueError(f"frames.codec must be one of {', '.join(CODECS)}; got {codec!r}")
    return encode_image(rgb, codec, quality)


def codec_roundtrip(frames: np.ndarray, codec: str, quality: int, gray: bool = False) -> np.ndarray:
    """``(T, H, W, 3) uint8`` frames as the store gives them back (``FrameStore.read``; with ``gray``,
    ``(T, H, W)`` as ``FrameStore.read_gray`` does): encoded and decoded once. ``predict`` passes a
    new video's frames through it, so the network sees what it trained on."""
    return np.stack([decode_frame(np.frombuffer(encode_frame(f, codec, quality), np.uint8), gray) for f in frames])


@dataclass(frozen=True)
class PartJob:
    """One video to store: the unit of work, a pure function of these fields (``store_video_part``)."""

    vid: int  # index position (reports)
    path: str  # video file
    part: str  # part file to write
    stamp: str  # its part key
    width: int
    height: int
    codec: str
    quality: int
    resample_fps: float


class PartResult(NamedTuple):
    """What a stored (or failed) video tells the stage; the frames themselves are in the part."""

    vid: int
    fps: float
    n_frames: int  # native frames decoded
    n_stored: int
    reason: str | None  # None on success
    warnings: list[str]


def part_stamp(sha256: str, cfg: FramesConfig, resample_fps: float) -> str:
    """Part key of a video with these bytes under the params that decide its part, at ``VERSION``
    (``max_failures`` decides only whether the stage fails; png ignores ``quality``)."""
    decisive = {"width": cfg.width, "height": cfg.height, "codec": cfg.codec, "resample_fps": resample_fps,
                **({"quality": cfg.quality} if cfg.codec == "jpeg" else {})}
    return parts.part_key(sha256, decisive, "frames", VERSION)


def store_video_part(job: PartJob) -> PartResult:
    """Decode one video in blocks, encode the frames ``resample_fps`` keeps, write its part file.

    Memory holds one decoded block; the encoded frames go to a temporary file until the
    decode has proved complete. A video that cannot be decoded whole writes nothing.
    """
    try:
        with VideoReader(job.path, job.width, job.height) as reader, tempfile.TemporaryFile() as spool:
            offsets, wanted, i = [0], kept_stream(reader.fps, job.resample_fps), 0
            target = next(wanted)
            for block in reader.blocks():
                for frame in block:
                    if i == target:
                        offsets.append(offsets[-1] + spool.write(encode_frame(frame, job.codec, job.quality)))
                        target = next(wanted)
                    i += 1
            _write_part(job, spool, np.asarray(offsets, np.int64), reader.fps, reader.n_frames, reader.warnings)
            return PartResult(job.vid, reader.fps, reader.n_frames, len(offsets) - 1, None, list(reader.warnings))
    except VideoError as e:
        return PartResult(job.vid, 0.0, 0, 0, e.reason, [])


def _write_part(job: PartJob, spool: Any, offsets: np.ndarray, fps: float, n_frames: int,
                warnings: list[str]) -> None:
    """Copy the spooled encoded frames into the part file, with its offsets and attributes."""
    spool.seek(0)
    with parts.writing(job.part, job.stamp) as f:
        data = f.create_dataset("data", (int(offsets[-1]),), np.uint8, track_times=False)
        at = 0
        for block in iter(lambda: spool.read(1 << 22), b""):
            data[at:at + len(block)] = np.frombuffer(block, np.uint8)
            at += len(block)
        f.create_dataset("offsets", data=offsets, track_times=False)
        for key, value in (("fps", np.float64(fps)), ("n_frames", np.int64(n_frames)), ("codec", job.codec),
                           ("warnings", json.dumps(list(warnings)))):
            f.attrs[key] = value


def _reused(job: PartJob) -> PartResult | None:
    """The result of a part an earlier run finished with the same stamp, else None."""
    if parts.stamp_of(job.part) != job.stamp:
        return None
    with h5py.File(job.part, "r") as f:
        return PartResult(job.vid, float(f.attrs["fps"]), int(f.attrs["n_frames"]), len(f["offsets"]) - 1,
                          None, json.loads(f.attrs["warnings"]))


def store_video_parts(jobs: list[PartJob]) -> list[PartResult]:
    """``store_video_part`` of each job: what one Ray task runs."""
    return [store_video_part(job) for job in jobs]


@contextlib.contextmanager
def _stored(jobs: list[PartJob], workers: int,
            executor: ExecutorConfig | None = None) -> Iterator[Iterator[PartResult]]:
    """``store_video_part`` over ``jobs`` in job order, from ``workers`` processes (1 = this one),
    or with ``executor.kind`` ray as Ray tasks (``executors.ray_map``; paths made absolute)."""
    if executor is not None and executor.kind == "ray":
        jobs = [replace(job, path=os.path.abspath(job.path), part=os.path.abspath(job.part)) for job in jobs]
        yield executors.ray_map(store_video_parts, jobs, executor, reads=lambda job: (job.path,),
                                expect={__name__: VERSION}, name=lambda job: f"video {job.vid} ({job.path})",
                                label="frames")
        return
    if workers <= 1 or len(jobs) <= 1:
        yield map(store_video_part, jobs)
        return
    yield ordered_map(store_video_part, jobs, min(workers, len(jobs)), pool_context([__name__]),
                      name=lambda job: f"video {job.vid} ({job.path})")


def _problem(vid: int, record: dict[str, Any], reason: str) -> dict[str, Any]:
    return {"id": vid, "path": record["path"], "class": record["class"], "reason": reason}


def plan_parts(index: list[dict[str, Any]], out_dir: Path, cfg: FramesConfig,
               resample_fps: float) -> tuple[list[PartJob], list[dict[str, Any]]]:
    """The part job of every video to decode, and the skipped (role ``unused``) videos."""
    jobs, skipped = [], []
    for vid, record in enumerate(index):
        if record["role"] not in DECODE_ROLES:
            skipped.append(_problem(vid, record, f"role {record['role']!r} is not decoded"))
            continue
        sha = record.get("sha256") or (file_sha256(record["path"]) if os.path.isfile(record["path"]) else "")
        jobs.append(PartJob(vid, record["path"], str(parts.part_path(out_dir, record["key"])),
                            part_stamp(sha, cfg, resample_fps), cfg.width, cfg.height, cfg.codec, cfg.quality,
                            resample_fps))
    return jobs, skipped


def extract_frames(index_path: str | os.PathLike, out_dir: str | os.PathLike, report_path: str | os.PathLike,
                   cfg: FramesConfig, resample_fps: float,
                   on_stored: Callable[[PartResult], None] | None = None,
                   executor: ExecutorConfig | None = None) -> dict[str, Any]:
    """Store the frames of the train/val/test videos of an index, one part file per video.

    Parts an earlier run finished under the same stamp are reused; the others are computed;
    parts no video needs any more are removed. Role ``unused`` videos are listed in the report
    as skipped, undecodable ones as failed, each with a reason; a video that decoded whole
    although ffmpeg logged errors is stored and listed as ``warned``.

    Args:
        index_path: ``data/index.json``; relative video paths are taken from the cwd.
        out_dir: the store's folder (``parts/`` and ``meta.json``).
        report_path: JSON report: counts, and every failed, skipped or warned video.
        cfg: the ``frames`` params.
        resample_fps: ``resample.fps``: which native frames are stored (0 = all).
        on_stored: called in this process with each video computed in this run, in index order.
        executor: the ``executor`` params; None or kind ``local``: ``cfg.workers`` processes here.

    Returns:
        The report written to ``report_path``, plus ``computed`` and ``reused`` (this run's).

    Raises:
        FramesError: if failed / attempted videos exceeds ``cfg.max_failures`` (the parts,
            meta and report are written first).
        executors.ClusterError: with ``executor.kind`` ray, a node that cannot read a video.
    """
    index, out_dir = read_index(index_path), Path(out_dir)
    jobs, skipped = plan_parts(index, out_dir, cfg, resample_fps)
    done = {job.vid: r for job in jobs if (r := _reused(job)) is not None}
    todo = [job for job in jobs if job.vid not in done]
    with _stored(todo, resolve_workers(cfg.workers), executor) as results, logging_redirect_tqdm():
        for result in tqdm(results, total=len(todo), desc="frames", unit="video"):
            done[result.vid] = result
            if result.reason is not None:
                log.warning("video %d (%s): %s", result.vid, index[result.vid]["path"], result.reason)
            if on_stored is not None:
                on_stored(result)
    stored = [job for job in jobs if done[job.vid].reason is None]
    parts.remove_stale(out_dir, {Path(job.part) for job in stored})
    (out_dir / META_NAME).unlink(missing_ok=True)  # a new file: never rewrite a cache-linked one in place
    write_json(out_dir / META_NAME, _meta(out_dir, stored, done, index, cfg, resample_fps))
    report = _report(index, jobs, skipped, done, cfg)
    write_json(report_path, report)
    if report["failed_fraction"] > cfg.max_failures:
        raise FramesError(
            f"{report['counts']['failed']} of {len(jobs)} videos failed to decode "
            f"({report['failed_fraction']:.1%}), more than frames.max_failures = {cfg.max_failures:.1%}; "
            f"reasons in {report_path}")
    return {**report, "computed": len(todo), "reused": len(jobs) - len(todo)}


def _meta(out_dir: Path, stored: list[PartJob], done: dict[int, PartResult], index: list[dict[str, Any]],
          cfg: FramesConfig, resample_fps: float) -> dict[str, Any]:
    videos = {str(job.vid): {"shard": Path(job.part).relative_to(out_dir).as_posix(), "dataset": "data",
                             "key": index[job.vid]["key"], "stamp": job.stamp, "fps": done[job.vid].fps,
                             "n_frames": done[job.vid].n_frames, "n_stored": done[job.vid].n_stored}
              for job in stored}
    storage = {"codec": cfg.codec, **({"quality": cfg.quality} if cfg.codec == "jpeg" else {"png_level": PNG_LEVEL})}
    return {"layout": LAYOUT, "storage": storage, "params": result_params(cfg), "resample_fps": resample_fps,
            "videos": videos}


def _report(index: list[dict[str, Any]], jobs: list[PartJob], skipped: list[dict[str, Any]],
            done: dict[int, PartResult], cfg: FramesConfig) -> dict[str, Any]:
    """The frames report: the same bytes whether a run was resumed or not."""
    failed, warned = [], []
    for job in jobs:
        result = done[job.vid]
        if result.reason is not None:
            failed.append(_problem(job.vid, index[job.vid], result.reason))
        elif result.warnings:
            warned.append({**_problem(job.vid, index[job.vid], result.warnings[0]),
                           "n_warnings": len(result.warnings)})
    ok = [done[job.vid] for job in jobs if done[job.vid].reason is None]
    return {
        "counts": {"indexed": len(index), "attempted": len(jobs), "stored": len(ok), "failed": len(failed),
                   "skipped": len(skipped), "warned": len(warned),
                   "decoded_frames": sum(r.n_frames for r in ok), "stored_frames": sum(r.n_stored for r in ok)},
        "failed_fraction": len(failed) / len(jobs) if jobs else 0.0, "max_failures": cfg.max_failures,
        "failed": failed, "skipped": skipped, "warned": warned,
    }
