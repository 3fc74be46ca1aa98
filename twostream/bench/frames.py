"""Benchmarks of the ``frames`` stage: ``decode`` (stage vs ffmpeg) and ``store`` (the codec choice).

- ``decode``: native frames/s of the ``frames`` stage (``extract_frames``, all cores, at
  ``--fps``) and of plain ``ffmpeg ... -f null -`` decodes of the same files with as many
  concurrent ffmpeg processes (scaled to the same working size and rgb24, and unscaled),
  medians over repeats; ``ratio`` = stage / scaled limit. Every timed run writes into a new
  folder: the stage reuses the parts an earlier run left, so a second run in the same
  folder would time nothing.
- ``store``: what each ``frames.codec`` / ``frames.quality`` costs and loses, on the frames
  the stage stores (``--fps``) at ``--size``: lossless ``raw`` (HDF5 chunks through
  ``h5store.encode_chunks``, gzip or uncompressed, as the store was before codecs), ``png``
  and ``jpeg`` at each of ``--qualities``, each written by the stage itself. Per codec: KiB
  per frame (encoded bytes, and the part files on disk), random single frames per second on
  one core, decoded from bytes in memory (the codec alone) and read through the store (what
  a loader pays), medians over repeats with all codecs interleaved, mean absolute error in
  grey levels against the lossless decode, and the TV-L1 mean endpoint error between flow on
  the lossless frames and flow on the codec's (OpenCV, the params' ``flow`` section) for
  ``--pairs`` consecutive stored pairs, next to the lossless flow's mean magnitude.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import cv2
import h5py
import numpy as np

from twostream.bench.common import bench_index, frames_config, resample_fps
from twostream.bench.flow import opencv_tvl1_defaults, pool_tvl1
from twostream.bench.train import parse_size
from twostream.ingest.clips import kept_stream
from twostream.runtime.config import FramesConfig, load_params, resolve_workers
from twostream.motion.flow import tvl1_params
from twostream.ingest.frames import DECODE_ROLES, decode_frame, encode_frame, extract_frames
from twostream.ingest.framestore import FrameStore
from twostream.ingest.h5store import LIBVER, META_NAME, encode_chunks
from twostream.ingest.datasets.records import read_index
from twostream.runtime.jsonio import write_json
from twostream.ingest.video import VideoReader, ffmpeg_exe

RAW = "raw"  # the lossless reference candidate: HDF5 chunks of h5store.encode_chunks


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


def _fps_arg(args: argparse.Namespace) -> float:
    """``--fps``, or the params' ``resample.fps``; SystemExit on a negative rate."""
    fps = float(resample_fps(args.params) if args.fps is None else args.fps)
    if fps < 0:
        raise SystemExit(f"--fps must be >= 0 (0 = every frame); got {fps}")
    return fps


def bench_decode(args: argparse.Namespace) -> dict[str, Any]:
    """Native frames/s of the frames stage and of ffmpeg's own decode on the same files."""
    cfg, fps = frames_config(args.params), _fps_arg(args)
    workers = resolve_workers(cfg.workers)
    stage_s, limit_s, unscaled_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        index_path, _, source = bench_index(args.root, Path(tmp))
        report = Path(tmp) / "report.json"
        extract_frames(index_path, Path(tmp) / "warm", report, cfg, fps)  # untimed: warms the file cache
        videos = json.loads((Path(tmp) / "warm" / META_NAME).read_text())["videos"]
        if not videos:
            raise SystemExit(f"no video under {args.root!r} could be decoded; see the frames report")
        index = read_index(index_path)
        paths = [index[int(vid)]["path"] for vid in videos]  # the limit decodes the stored ones
        for repeat in range(args.repeats):  # interleaved so that all three see the same machine load
            out = Path(tmp) / f"run{repeat}"
            start = time.perf_counter()
            run = extract_frames(index_path, out, report, cfg, fps)
            stage_s.append(time.perf_counter() - start)
            shutil.rmtree(out)
            assert run["reused"] == 0, run  # a new folder: every part computed
            limit_s.append(ffmpeg_null_seconds(paths, workers, (cfg.width, cfg.height)))
            unscaled_s.append(ffmpeg_null_seconds(paths, workers, None))
    n_frames = sum(v["n_frames"] for v in videos.values())
    n_stored = sum(v["n_stored"] for v in videos.values())
    stage, limit = n_frames / statistics.median(stage_s), n_frames / statistics.median(limit_s)
    return {
        "bench": "decode", "source": source, "videos": len(paths), "frames": n_frames, "stored_frames": n_stored,
        "fps": fps, "codec": cfg.codec, **({"quality": cfg.quality} if cfg.codec == "jpeg" else {}),
        "size": f"{cfg.width}x{cfg.height}", "workers": workers, "repeats": args.repeats,
        "stage_fps": round(stage, 1), "limit_fps": round(limit, 1),
        "limit": f"ffmpeg -f null, scaled to {cfg.width}x{cfg.height} rgb24, {workers} concurrent",
        "limit_unscaled_fps": round(n_frames / statistics.median(unscaled_s), 1),
        "ratio": round(stage / limit, 3),
        "seconds": {"stage": [round(t, 3) for t in stage_s], "limit": [round(t, 3) for t in limit_s],
                    "limit_unscaled": [round(t, 3) for t in unscaled_s]},
    }


def kept_frames(path: str, width: int, height: int, fps: float) -> np.ndarray:
    """The frames the stage stores for one video, lossless: ``(S, H, W, 3) uint8`` RGB.

    Decoded like ``frames.store_video_part`` (``VideoReader`` blocks, ``kept_stream``).

    Raises:
        VideoError: if the video does not decode whole.
    """
    kept = []
    with VideoReader(path, width, height) as reader:
        wanted, start = kept_stream(reader.fps, fps), 0
        target = next(wanted)
        for block in reader.blocks():
            while start <= target < start + len(block):
                kept.append(block[target - start])
                target = next(wanted)
            start += len(block)
    return np.stack(kept)


def _tvl1(params_path: str) -> dict[str, Any]:
    """The TV-L1 keys of the params' ``flow`` section (the flow stage's); OpenCV's own without a file."""
    return tvl1_params(load_params(params_path)["flow"] if Path(params_path).is_file() else opencv_tvl1_defaults())


def _codec_candidates(qualities: list[int]) -> dict[str, tuple[str, int]]:
    """Candidate name -> ``(frames.codec, frames.quality)`` the stage stores with (png ignores quality)."""
    bad = [q for q in qualities if not 1 <= q <= 100]
    if bad:
        raise SystemExit(f"--qualities must be JPEG qualities in 1..100; got {bad}")
    return {"png": ("png", 100), **{f"jpeg{q}": ("jpeg", q) for q in qualities}}


def _store_raw(out: Path, reference: dict[int, np.ndarray]) -> int:
    """Write one HDF5 file per video of ``encode_chunks`` chunks, ``<vid>.h5`` dataset ``frames``
    ``(S, H, W, 3) uint8``, one frame per chunk; returns the encoded bytes."""
    out.mkdir()
    payload = 0
    for vid, frames in reference.items():
        compression, chunks = encode_chunks(frames)
        with h5py.File(out / f"{vid}.h5", "w", libver=LIBVER) as f:
            ds = f.create_dataset("frames", frames.shape, np.uint8, chunks=(1, *frames.shape[1:]),
                                  compression=compression, track_times=False)
            for i, chunk in enumerate(chunks):
                ds.id.write_direct_chunk((i, 0, 0, 0), chunk)
        payload += sum(len(chunk) for chunk in chunks)
    return payload


def _read_raw(raw_dir: Path, vid: int) -> np.ndarray:
    """Every frame ``_store_raw`` wrote for ``vid``, ``(S, H, W, 3) uint8``."""
    with h5py.File(raw_dir / f"{vid}.h5", "r") as f:
        return f["frames"][()]


def _encoded_bytes(frames_dir: Path) -> int:
    """Bytes of the encoded frames in a frames stage folder's parts (their ``data``, without HDF5's)."""
    total = 0
    for part in frames_dir.rglob("*.h5"):
        with h5py.File(part, "r") as f:
            total += int(f["offsets"][-1])
    return total


def _per_s(work: Callable[[Any], Any], items: list[Any]) -> float:
    """``work(item)`` calls per second over ``items``, on one OpenCV thread."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        start = time.perf_counter()
        for item in items:
            work(item)
        return len(items) / (time.perf_counter() - start)
    finally:
        cv2.setNumThreads(previous)


def _raw_decoder(compression: str | None, shape: tuple[int, ...]) -> Callable[[bytes], np.ndarray]:
    """Chunk bytes of ``encode_chunks`` -> ``(H, W, 3) uint8`` frame (inflate, or a copy of raw bytes)."""
    if compression is None:
        return lambda chunk: np.frombuffer(chunk, np.uint8).reshape(shape).copy()
    return lambda chunk: np.frombuffer(zlib.decompress(chunk), np.uint8).reshape(shape)


def _codec_work(reference: dict[int, np.ndarray], candidates: dict[str, tuple[str, int]],
                picks: list[tuple[int, int]]) -> dict[str, list[tuple[Callable, bytes]]]:
    """Per candidate, ``(decode, encoded frame)`` of each pick: the codec alone, bytes in memory.

    The bytes are the stage's own (``encode_frame`` and ``encode_chunks`` are deterministic).
    """
    raw = {}
    for vid in {vid for vid, _ in picks}:
        compression, chunks = encode_chunks(reference[vid])
        raw[vid] = (_raw_decoder(compression, reference[vid].shape[1:]), chunks)
    work = {RAW: [(raw[vid][0], raw[vid][1][row]) for vid, row in picks]}
    for name, (codec, quality) in candidates.items():
        encoded = {(vid, row): np.frombuffer(encode_frame(reference[vid][row], codec, quality), np.uint8)
                   for vid, row in set(picks)}
        work[name] = [(decode_frame, encoded[pick]) for pick in picks]
    return work


def _speeds(raw_dir: Path, stores: dict[str, FrameStore], reference: dict[int, np.ndarray],
            candidates: dict[str, tuple[str, int]], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Median ``decodes_per_s`` (the codec alone) and ``reads_per_s`` (one frame through the store,
    as a loader reads it) of each candidate, over ``args.repeats`` runs interleaved so that every
    codec sees the same machine load; the same ``args.reads`` random stored frames for all.

    The raw files are read without HDF5's chunk cache: a loader jumping between thousands of
    videos would find nothing in it, while this benchmark's few videos would all fit.
    """
    rows = [(vid, row) for vid in sorted(reference) for row in range(len(reference[vid]))]
    picks = [rows[i] for i in np.random.default_rng(1).integers(len(rows), size=args.reads)]
    work = _codec_work(reference, candidates, picks)
    native = [(vid, int(stores["png"].stored_indices(vid)[row])) for vid, row in picks]
    raw = {vid: h5py.File(raw_dir / f"{vid}.h5", "r", rdcc_nbytes=0)["frames"] for vid, _ in picks}
    reads = {RAW: (lambda pick: raw[pick[0]][pick[1]], picks),
             **{name: (lambda pick, s=store: s.read(pick[0], [pick[1]]), native) for name, store in stores.items()}}
    runs: dict[str, dict[str, list[float]]] = {name: {"decodes_per_s": [], "reads_per_s": []} for name in work}
    try:
        for _ in range(args.repeats):
            for name in work:
                runs[name]["decodes_per_s"].append(_per_s(lambda job: job[0](job[1]), work[name]))
                runs[name]["reads_per_s"].append(_per_s(*reads[name]))
    finally:
        for ds in raw.values():
            ds.file.close()
    return {name: {k: statistics.median(v) for k, v in figures.items()} for name, figures in runs.items()}


def _gray(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB -> ``(H, W) uint8`` grey, as the flow stage converts."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _flow_errors(decoded: dict[str, dict[int, np.ndarray]], reference: dict[int, np.ndarray],
                 pairs: list[tuple[int, int]], tvl1: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """Mean flow magnitude on the lossless frames, and each candidate's mean endpoint error against it.

    Every flow (lossless and candidates) comes from the same one-thread OpenCV TV-L1 pool.
    """
    sources = [reference, *decoded.values()]
    jobs = [(_gray(frames[vid][k]), _gray(frames[vid][k + 1])) for frames in sources for vid, k in pairs]
    _, flow = pool_tvl1(jobs, tvl1, min(resolve_workers(0), len(jobs)))
    flow = flow.reshape(len(sources), len(pairs), *flow.shape[1:])  # (1 + C, P, H, W, 2) float32
    epe = {name: float(np.linalg.norm(flow[c + 1] - flow[0], axis=-1).mean()) for c, name in enumerate(decoded)}
    return float(np.linalg.norm(flow[0], axis=-1).mean()), epe


def _mae(decoded: dict[int, np.ndarray], reference: dict[int, np.ndarray]) -> float:
    """Mean absolute error in grey levels (0..255, over every channel of every frame)."""
    total = sum(int(np.abs(decoded[v].astype(np.int16) - reference[v]).sum()) for v in reference)
    return total / sum(r.size for r in reference.values())


def _bench_inputs(args: argparse.Namespace, tmp: Path) -> tuple[Path, list[dict[str, Any]], str]:
    """An index of the first ``args.videos`` decodable videos of ``--root``, its records, the source."""
    index_path, _, source = bench_index(args.root, tmp)
    records = [r for r in read_index(index_path) if r["role"] in DECODE_ROLES][: args.videos]
    write_json(tmp / "store_index.json", records)
    return tmp / "store_index.json", records, source


def _measure(args: argparse.Namespace, tmp: Path, cfg: FramesConfig, fps: float,
             tvl1: dict[str, Any]) -> dict[str, Any]:
    """Every figure of ``bench_store`` but the run's description, on frames stored under ``tmp``."""
    index_path, records, source = _bench_inputs(args, tmp)
    candidates = _codec_candidates(args.qualities)
    stores = {}
    for name, (codec, quality) in candidates.items():
        extract_frames(index_path, tmp / name, tmp / f"{name}.json",
                       dataclasses.replace(cfg, codec=codec, quality=quality), fps)
        stores[name] = FrameStore(tmp / name)
    vids = stores["png"].video_ids  # the videos the stage could decode
    if not vids:
        raise SystemExit(f"no video under {args.root!r} could be decoded; see the frames reports")
    reference = {vid: kept_frames(records[vid]["path"], cfg.width, cfg.height, fps) for vid in vids}
    payload = {RAW: _store_raw(tmp / RAW, reference), **{name: _encoded_bytes(tmp / name) for name in stores}}
    decoded = {RAW: {vid: _read_raw(tmp / RAW, vid) for vid in vids},
               **{name: {vid: store.read(vid) for vid in vids} for name, store in stores.items()}}
    speeds = _speeds(tmp / RAW, stores, reference, candidates, args)
    for store in stores.values():
        store.close()
    consecutive = [(vid, k) for vid in vids for k in range(len(reference[vid]) - 1)]
    chosen = np.random.default_rng(0).choice(len(consecutive), min(args.pairs, len(consecutive)), replace=False)
    pairs = [consecutive[i] for i in np.sort(chosen)]
    mean_flow, epe = _flow_errors(decoded, reference, pairs, tvl1)
    n, frame_bytes = sum(len(r) for r in reference.values()), cfg.width * cfg.height * 3
    results = {name: {
        "kib_per_frame": round(payload[name] / n / 1024, 2),
        "part_kib_per_frame": round(sum(p.stat().st_size for p in (tmp / name).rglob("*.h5")) / n / 1024, 2),
        "of_uncompressed": round(payload[name] / (n * frame_bytes), 4),
        **{k: round(v) for k, v in speeds[name].items()},
        "mae": round(_mae(decoded[name], reference), 4),
        "epe_px": round(epe[name], 4),
    } for name in (RAW, *candidates)}
    return {"source": source, "videos": len(vids), "frames": n, "pairs": len(pairs),
            "mean_flow_px": round(mean_flow, 4), "candidates": results}


def bench_store(args: argparse.Namespace) -> dict[str, Any]:
    """Size, one-core random-read speed, pixel error and flow error of each frame codec.

    Args:
        args: ``root``, ``params``, ``size`` (``"WxH"`` or None = the params' frames size),
            ``fps`` (None = ``resample.fps``), ``videos``, ``qualities``, ``reads``, ``repeats``, ``pairs``.

    Returns:
        The JSON line: per candidate (``raw``, ``png``, ``jpeg<q>``) ``kib_per_frame`` (encoded),
        ``part_kib_per_frame`` (files on disk), ``of_uncompressed``, ``decodes_per_s`` (the codec
        alone, one core) and ``reads_per_s`` (one frame through the store, one core), ``mae``
        (grey levels vs lossless) and ``epe_px`` (TV-L1 vs flow on the lossless frames).
    """
    cfg, fps = frames_config(args.params), _fps_arg(args)
    if args.size:
        width, height = parse_size(args.size)
        cfg = dataclasses.replace(cfg, width=width, height=height)
    tvl1 = _tvl1(args.params)
    with tempfile.TemporaryDirectory() as tmp:
        measured = _measure(args, Path(tmp), cfg, fps, tvl1)
    return {"bench": "store", "size": f"{cfg.width}x{cfg.height}", "fps": fps, "reads": args.reads,
            "repeats": args.repeats, "tvl1_epsilon": tvl1["epsilon"],
            "params_codec": cfg.codec + (str(cfg.quality) if cfg.codec == "jpeg" else ""), **measured}
