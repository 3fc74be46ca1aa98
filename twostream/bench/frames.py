"""Benchmarks of the ``frames`` stage: ``decode`` (stage vs ffmpeg) and ``store`` (storage candidates).

- ``decode``: frames/s of the ``frames`` stage (``extract_frames``, all cores, into a
  temp dir) and of plain ``ffmpeg ... -f null -`` decodes of the same files with as many
  concurrent ffmpeg processes (scaled to the same working size and rgb24, and unscaled),
  medians over repeats; ``ratio`` = stage / scaled limit.
- ``store``: size and random-read speed of the frame storage candidates (gzip / lzf /
  raw uint8 chunks, JPEG / PNG bytes) on the same decoded frames.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import h5py
import numpy as np

from twostream.bench.common import bench_index, frames_config
from twostream.config import resolve_workers
from twostream.frames import META_NAME, encode_chunks, extract_frames
from twostream.hmdb51 import read_index
from twostream.video import ffmpeg_exe, read_video


def ffmpeg_null_seconds(paths: list[str], workers: int, size: tuple[int, int] | None) -> float:
    """Wall time to decode ``paths`` with ``ffmpeg -f null -``, ``workers`` at a time.

    Args:
        paths: video files.
        workers: concurrent ffmpeg processes.
        size: ``(width, height)`` to scale to (area, rgb24) as the stage does; None = as decoded.
    """
    scale = [] if size is None else ["-vf", f"scale={size[0]}:{size[1]}:flags=area", "-pix_fmt", "rgb24"]

    def decode(path: str) -> None:
        args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1",
                "-i", f"file:{path}", "-map", "0:v:0", *scale, "-filter_threads", "1", "-f", "null", "-"]
        subprocess.run(args, check=True, capture_output=True)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode, paths))
    return time.perf_counter() - start


def bench_decode(args: argparse.Namespace) -> dict[str, Any]:
    """Frames/s of the frames stage and of ffmpeg's own decode on the same files."""
    cfg = frames_config(args.params)
    workers = resolve_workers(cfg.workers)
    stage_s, limit_s, unscaled_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        index_path, _, source = bench_index(args.root, Path(tmp))
        out, report = Path(tmp) / "frames", Path(tmp) / "report.json"
        extract_frames(index_path, out, report, cfg)  # untimed: warms the file cache for both sides
        videos = json.loads((out / META_NAME).read_text())["videos"]
        if not videos:
            raise SystemExit(f"no video under {args.root!r} could be decoded; see the frames report")
        index = read_index(index_path)
        paths = [index[int(vid)]["path"] for vid in videos]  # the limit decodes the stored ones
        for _ in range(args.repeats):  # interleaved so that all three see the same machine load
            start = time.perf_counter()
            extract_frames(index_path, out, report, cfg)
            stage_s.append(time.perf_counter() - start)
            limit_s.append(ffmpeg_null_seconds(paths, workers, (cfg.width, cfg.height)))
            unscaled_s.append(ffmpeg_null_seconds(paths, workers, None))
    n_frames = sum(v["n_frames"] for v in videos.values())
    stage, limit = n_frames / statistics.median(stage_s), n_frames / statistics.median(limit_s)
    return {
        "bench": "decode", "source": source, "videos": len(paths), "frames": n_frames,
        "size": f"{cfg.width}x{cfg.height}", "workers": workers, "repeats": args.repeats,
        "stage_fps": round(stage, 1), "limit_fps": round(limit, 1),
        "limit": f"ffmpeg -f null, scaled to {cfg.width}x{cfg.height} rgb24, {workers} concurrent",
        "limit_unscaled_fps": round(n_frames / statistics.median(unscaled_s), 1),
        "ratio": round(stage / limit, 3),
        "seconds": {"stage": [round(t, 3) for t in stage_s], "limit": [round(t, 3) for t in limit_s],
                    "limit_unscaled": [round(t, 3) for t in unscaled_s]},
    }


def _store_candidates() -> dict[str, tuple[Callable, Callable]]:
    """name -> (write(h5 file, name, (T, H, W, 3) uint8), read(dataset, i) -> (H, W, 3) uint8)."""
    def chunked(**kw: Any) -> tuple[Callable, Callable]:
        def write(f: h5py.File, name: str, v: np.ndarray) -> None:
            f.create_dataset(name, data=v, chunks=(1, *v.shape[1:]), track_times=False, **kw)
        return write, lambda ds, i: ds[i]

    def encoded(ext: str, flags: list[int]) -> tuple[Callable, Callable]:
        def write(f: h5py.File, name: str, v: np.ndarray) -> None:
            ds = f.create_dataset(name, (len(v),), dtype=h5py.vlen_dtype(np.uint8), track_times=False)
            for i, frame in enumerate(v):
                ds[i] = cv2.imencode(ext, np.ascontiguousarray(frame[..., ::-1]), flags)[1].reshape(-1)
        return write, lambda ds, i: cv2.imdecode(ds[i], cv2.IMREAD_COLOR)[..., ::-1]

    def stage_write(f: h5py.File, name: str, v: np.ndarray) -> None:
        compression, chunks = encode_chunks(v)
        ds = f.create_dataset(name, v.shape, np.uint8, chunks=(1, *v.shape[1:]), compression=compression,
                              track_times=False)
        for i, chunk in enumerate(chunks):
            ds.id.write_direct_chunk((i, 0, 0, 0), chunk)

    return {
        "stage": (stage_write, lambda ds, i: ds[i]),
        "raw": chunked(), "lzf": chunked(compression="lzf"),
        "gzip1": chunked(compression="gzip", compression_opts=1),
        "gzip4": chunked(compression="gzip", compression_opts=4),
        "png1": encoded(".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]),
        "jpeg90": encoded(".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
        "jpeg95": encoded(".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
    }


def _time_candidate(path: Path, write: Callable, read: Callable, videos: list[np.ndarray],
                    picks: list[tuple[int, int]]) -> dict[str, Any]:
    """Write ``videos`` to ``path`` with ``write``, then time random reads of ``picks``."""
    n = sum(len(v) for v in videos)
    start = time.perf_counter()
    with h5py.File(path, "w", libver=("v110", "v110")) as f:
        for v, frames in enumerate(videos):
            write(f, f"{v:06d}", frames)
    write_s = time.perf_counter() - start
    with h5py.File(path, "r") as f:
        datasets = [f[f"{v:06d}"] for v in range(len(videos))]
        exact = all(np.array_equal(read(datasets[v], i), videos[v][i]) for v, i in picks[:50])
        start = time.perf_counter()
        for v, i in picks:
            read(datasets[v], i)
        read_s = time.perf_counter() - start
    size = path.stat().st_size
    return {"kib_per_frame": round(size / n / 1024, 2),
            "of_raw": round(size / (n * videos[0][0].nbytes), 3),
            "write_fps": round(n / write_s), "random_read_fps": round(len(picks) / read_s),
            "exact": exact}


def bench_store(args: argparse.Namespace) -> dict[str, Any]:
    """Size, write and random-read speed of each storage candidate on decoded frames."""
    cfg = frames_config(args.params)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        _, paths, source = bench_index(args.root, Path(tmp))
        videos = [read_video(p, cfg.width, cfg.height)[0] for p in paths[: args.videos]]
        picks = [(int(v), int(rng.integers(len(videos[v]))))
                 for v in rng.integers(len(videos), size=args.reads)]
        results = {name: _time_candidate(Path(tmp) / f"{name}.h5", write, read, videos, picks)
                   for name, (write, read) in _store_candidates().items()}
    return {"bench": "store", "source": source, "videos": len(videos),
            "frames": sum(len(v) for v in videos), "size": f"{cfg.width}x{cfg.height}",
            "candidates": results}
