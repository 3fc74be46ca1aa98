"""Benchmarks of the pipeline's stages against their own lower limits.

``python -m twostream.bench <command> [options]`` prints ONE JSON line. Commands:

- ``decode``: frames/s of the ``frames`` stage (``extract_frames``, all cores, into a
  temp dir) and of plain ``ffmpeg ... -f null -`` decodes of the same files with as many
  concurrent ffmpeg processes (scaled to the same working size and rgb24, and unscaled),
  medians over repeats; ``ratio`` = stage / scaled limit.
- ``store``: size and random-read speed of the frame storage candidates (gzip / lzf /
  raw uint8 chunks, JPEG / PNG bytes) on the same decoded frames.
- ``flow``: TV-L1 pairs/s of the ``flow`` stage (``extract_flow``, its process pool,
  params.yaml's ``flow``) and of plain OpenCV TV-L1 on the same frame pairs in one
  process, with one thread and with OpenCV's default threads; medians over repeats;
  ``ratio`` = stage / one thread. Frames come from ``--data`` (``data/frames``) or from
  demo videos rendered into a temp dir.
- ``loader``: samples/s that ``ShardDataset`` (train preset) delivers through a shuffling
  ``DataLoader`` with one worker per core, and samples/s of training steps of the demo
  model (ResNet-18 of ``twostream.models``, forward + backward + AdamW) on batches of it
  held in memory; ``ratio`` = loader / train (goal >= 3). Shards come from ``--shards``
  (``data/shards``) or a small synthetic set written to a temp dir.
- ``train``: training samples/s of the ``train`` stage's own loop (``engine.train_one_epoch``
  on ``engine.train_loader``: shard reads, transforms and DataLoader included, params.yaml's
  ``model``, ``train``, ``base.seed``) and of the same loop over random batches already in
  memory (the limit), interleaved, medians over repeats; ``ratio`` = real / limit (goal >= 0.85).

Videos come from ``--root``: a folder searched for video files, or an ``index.json``;
when it does not exist a small demo-like set is rendered with ``write_video``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import h5py
import numpy as np

from twostream.clips import needed_pairs
from twostream.config import (
    ClipConfig, DemoConfig, FlowConfig, FramesConfig, ResampleConfig, load_params, resolve_workers, section,
)
from twostream.demo import render_dataset
from twostream.flow import TVL1_KEYWORDS, compute_flow, extract_flow, pool_context, tvl1_params
from twostream.frames import DECODE_ROLES, META_NAME, FrameStore, encode_chunks, extract_frames
from twostream.hmdb51 import VIDEO_SUFFIXES, read_index, write_json
from twostream.resample import read_resample, resample_videos
from twostream.video import ffmpeg_exe, read_video, write_video

# fallback videos, like the demo's defaults: 128x96 XviD at 30 fps, 3 s
RENDER = {"videos": 24, "frames": 90, "width": 128, "height": 96, "fps": 30}


def render_videos(out_dir: Path, seed: int = 0) -> list[Path]:
    """Write ``RENDER["videos"]`` demo-like XviD files: textured background, a moving figure, noise."""
    rng = np.random.default_rng(seed)
    h, w, t = RENDER["height"], RENDER["width"], RENDER["frames"]
    paths = []
    for v in range(RENDER["videos"]):
        texture = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
        background = cv2.GaussianBlur(texture, (0, 0), 2 + v % 3)
        frames = np.empty((t, h, w, 3), np.uint8)
        for i in range(t):
            image = background.copy()
            x = int(20 + i * (w - 40) / t)
            cv2.line(image, (x, h // 3), (x, 3 * h // 4), (255, 255, 255), 3)
            cv2.circle(image, (x, h // 4), 6, (255, 200, 0), -1)
            arm = (x + int(15 * np.sin(i / 4 + v)), 2 * h // 3)
            cv2.line(image, (x, h // 2), arm, (255, 255, 255), 3)
            frames[i] = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        paths.append(out_dir / f"render_{v:03d}.avi")
        write_video(paths[-1], frames, RENDER["fps"], codec="xvid")
    return paths


def bench_index(root: str, tmp: Path) -> tuple[Path, list[str], str]:
    """An index to run the stage on, the paths it decodes, and where they came from."""
    if root.endswith(".json") and Path(root).is_file():
        index_path, source = Path(root), root
    else:
        if Path(root).is_dir():
            paths = sorted(str(p) for p in Path(root).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
            source = root
        else:
            (tmp / "videos").mkdir()
            paths = [str(p) for p in render_videos(tmp / "videos")]
            source = f"rendered ({len(paths)} videos)"
        index = [{"path": p, "class": Path(p).parent.name, "label": 0, "role": "train"} for p in paths]
        index_path = tmp / "index.json"
        write_json(index_path, index)
    decoded = [r["path"] for r in read_index(index_path) if r["role"] in DECODE_ROLES]
    if not decoded:
        raise SystemExit(f"no videos to decode under {root!r}")
    return index_path, decoded, source


def frames_config(params_path: str) -> FramesConfig:
    """The ``frames`` params (all cores, no failure limit); 64x64 without a params file."""
    if Path(params_path).is_file():
        cfg = section(load_params(params_path), "frames", FramesConfig)
    else:
        cfg = FramesConfig(width=64, height=64, workers=0, max_failures=1.0, videos_per_shard=500)
    return dataclasses.replace(cfg, workers=0, max_failures=1.0)


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


def flow_params(params_path: str) -> tuple[FlowConfig, ClipConfig, DemoConfig]:
    """The ``flow``, ``clip`` and ``demo_data`` params; OpenCV's TV-L1 defaults without a file."""
    if Path(params_path).is_file():
        params = load_params(params_path)
        return (section(params, "flow", FlowConfig), section(params, "clip", ClipConfig),
                section(params, "demo_data", DemoConfig))
    return (FlowConfig(**opencv_tvl1_defaults(), bound=20.0, stack=2, workers=0, threads=1),
            ClipConfig(frames=3, step=6),
            DemoConfig(classes=8, videos_per_class=1, seconds=3.0, width=128, height=96, fps=30,
                       train_fraction=0.6, test_fraction=0.3, workers=0))


def opencv_tvl1_defaults() -> dict[str, Any]:
    """OpenCV's own TV-L1 parameters, read from a default ``DualTVL1OpticalFlow``, by FlowConfig key."""
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    getters = {"tau": "Tau", "lambda_": "Lambda", "theta": "Theta", "nscales": "ScalesNumber",
               "warps": "WarpingsNumber", "epsilon": "Epsilon", "inner_iterations": "InnerIterations",
               "outer_iterations": "OuterIterations", "scale_step": "ScaleStep", "gamma": "Gamma",
               "median_filtering": "MedianFiltering"}
    return {key: getattr(tvl1, f"get{name}")() for key, name in getters.items()}


def flow_inputs(args: argparse.Namespace, tmp: Path, clip: ClipConfig, stack: int,
                demo: DemoConfig) -> tuple[Path, Path, Path, str]:
    """index.json, frames folder and a resample.json of the first videos holding ``args.pairs`` pairs.

    Uses ``data/frames`` (with ``data/index.json`` and ``data/resample.json``) when present,
    else renders ``ceil(pairs / 6)`` demo videos and runs the frames and resample stages on them.
    """
    data = Path(args.data)
    if all((data / p).exists() for p in ("index.json", "frames/meta.json", "resample.json")):
        index_path, frames_dir, resample_path = data / "index.json", data / "frames", data / "resample.json"
        source = f"{data / 'frames'}"
    else:
        demo = dataclasses.replace(demo, videos_per_class=math.ceil(args.pairs / 6 / demo.classes))
        render_dataset(tmp / "demo", demo, seed=0, progress=False)
        paths = sorted((tmp / "demo" / "videos").rglob("*.avi"))
        index_path, frames_dir, resample_path = tmp / "index.json", tmp / "frames", tmp / "resample.json"
        write_json(index_path, [{"path": str(p), "class": p.parent.name, "label": 0, "role": "train"}
                                for p in paths])
        extract_frames(index_path, frames_dir, tmp / "frames.json", frames_config(args.params))
        resample_videos(index_path, frames_dir, resample_path, tmp / "sheet.png", ResampleConfig(fps=6),
                        clip.frames)
        source = f"rendered demo videos ({demo.width}x{demo.height}, {demo.seconds:g} s at {demo.fps} fps)"
    chosen, n = {}, 0
    for vid, kept in sorted(read_resample(resample_path).items()):
        if n >= args.pairs:
            break
        chosen[str(vid)], n = kept.tolist(), n + len(needed_pairs(len(kept), clip.frames, clip.step, stack))
    write_json(tmp / "bench_resample.json", {"videos": chosen})
    return index_path, frames_dir, tmp / "bench_resample.json", source


def gray_pairs(frames_dir: Path, resample_path: Path, clip: ClipConfig, stack: int) -> list[tuple]:
    """The ``(prev, next)`` ``(H, W) uint8`` grayscale frames of every pair the stage computes."""
    pairs = []
    with FrameStore(frames_dir) as store:
        for vid, kept in sorted(read_resample(resample_path).items()):
            for k in needed_pairs(len(kept), clip.frames, clip.step, stack):
                rgb = store.read(vid, kept[[k, k + 1]])
                pairs.append(tuple(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb))
    return pairs


def opencv_seconds(pairs: list[tuple], tvl1: dict[str, Any], threads: int) -> float:
    """Seconds of plain OpenCV TV-L1 over ``pairs`` in this process, ``threads`` threads (-1 = default)."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        flow = cv2.optflow.DualTVL1OpticalFlow_create(**{TVL1_KEYWORDS[k]: v for k, v in tvl1.items()})
        start = time.perf_counter()
        for prev, nxt in pairs:
            flow.calc(prev, nxt, None)
        return time.perf_counter() - start
    finally:
        cv2.setNumThreads(previous)


def pool_seconds(pairs: list[tuple], tvl1: dict[str, Any], processes: int) -> float:
    """Seconds of TV-L1 over ``pairs`` split evenly over ``processes`` warm one-thread processes.

    The stage's ceiling: no reading, quantising or storing, no pool start.
    """
    with pool_context().Pool(processes, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        pool.starmap(compute_flow, [(*pairs[0], tvl1)] * processes, chunksize=1)  # start and warm up
        start = time.perf_counter()
        share = math.ceil(len(pairs) / processes)
        pool.starmap(compute_flow, [(*pair, tvl1) for pair in pairs], chunksize=share)
        return time.perf_counter() - start


def bench_flow(args: argparse.Namespace) -> dict[str, Any]:
    """Pairs/s of the flow stage (process pool, params.yaml) and of one-process OpenCV TV-L1."""
    cfg, clip, demo = flow_params(args.params)
    cfg = dataclasses.replace(cfg, **{k: getattr(args, k) for k in ("workers", "threads")
                                      if getattr(args, k) is not None})
    tvl1, default_threads = tvl1_params(cfg), cv2.getNumThreads()
    stage_s, single_s, threaded_s, limit_s = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        index_path, frames_dir, resample_path, source = flow_inputs(args, tmp, clip, cfg.stack, demo)
        pairs = gray_pairs(frames_dir, resample_path, clip, cfg.stack)
        out, report_path = tmp / "flow", tmp / "flow_report.json"
        report = extract_flow(index_path, frames_dir, resample_path, out, report_path, cfg, clip)  # warm-up
        for _ in range(args.repeats):  # interleaved so that all four see the same machine load
            start = time.perf_counter()
            extract_flow(index_path, frames_dir, resample_path, out, report_path, cfg, clip)
            stage_s.append(time.perf_counter() - start)
            single_s.append(opencv_seconds(pairs, tvl1, 1))
            threaded_s.append(opencv_seconds(pairs, tvl1, -1))
            limit_s.append(pool_seconds(pairs, tvl1, report["workers"]))
        stored = sum(p.stat().st_size for p in out.glob("flow-*.h5"))
    n, (h, w) = len(pairs), pairs[0][0].shape
    stage, single, threaded, limit = (n / statistics.median(s)
                                      for s in (stage_s, single_s, threaded_s, limit_s))
    return {
        "bench": "flow", "source": source, "videos": report["counts"]["stored"], "pairs": n,
        "size": f"{w}x{h}", "tvl1": "opencv defaults" if tvl1 == opencv_tvl1_defaults() else tvl1,
        "workers": report["workers"], "threads": cfg.threads, "repeats": args.repeats,
        "stage_pairs_per_s": round(stage, 2), "single_core_pairs_per_s": round(single, 2),
        "opencv_threads_pairs_per_s": round(threaded, 2), "opencv_threads": default_threads,
        "limit_pairs_per_s": round(limit, 2),
        "limit": f"{report['workers']} warm one-thread processes of TV-L1 alone, on preloaded pairs",
        "ratio": round(stage / single, 3), "opencv_threads_ratio": round(threaded / single, 3),
        "limit_ratio": round(limit / single, 3), "store_of_raw": round(stored / (n * h * w * 2), 3),
        "seconds": {"stage": [round(t, 3) for t in stage_s], "single_core": [round(t, 3) for t in single_s],
                    "opencv_threads": [round(t, 3) for t in threaded_s],
                    "limit": [round(t, 3) for t in limit_s]},
    }


LOADER_SYNTHETIC = {"samples": 512, "size": 64, "classes": 12, "stack": 2, "bound": 20.0}


def synthetic_shards(out_dir: Path, seed: int = 0) -> None:
    """A small shard set like the demo's (``LOADER_SYNTHETIC``): noisy images, flow mostly still."""
    from twostream.shards import MODALITIES, ShardWriter

    cfg, rng = LOADER_SYNTHETIC, np.random.default_rng(seed)
    n, s = cfg["samples"], cfg["size"]
    params = {"clip": {"frames": 3, "step": 6}, "flow": {"stack": cfg["stack"], "bound": cfg["bound"]},
              "shards": {"clips_per_shard": n}}
    flow = np.full((n, s, s, 2 * cfg["stack"]), 128, np.uint8)
    flow[:, s // 4:s // 2, s // 4:s // 2] = rng.integers(100, 156, (n, s // 4, s // 4, 2 * cfg["stack"]))
    samples = {"rgb": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8), "flow": flow,
               "sg3i": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)}
    labels = np.arange(n) % cfg["classes"]
    for modality in MODALITIES:
        (out_dir / modality).mkdir(parents=True, exist_ok=True)
        writer = ShardWriter(out_dir / modality, "train", modality, n, n,
                             [f"class{c}" for c in range(cfg["classes"])], params)
        writer.add(samples[modality], labels, np.arange(n) // 3, np.arange(n) % 3)


def loader_rate(loader: Any, seconds: float) -> tuple[float, int]:
    """Samples/s a DataLoader delivers over about ``seconds`` (first batch, worker start-up, untimed)."""
    batches = iter(loader)
    next(batches)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, _, _ in batches:
            n += len(x)
            if time.perf_counter() - start >= seconds:
                break
        else:
            batches = iter(loader)  # next epoch; persistent workers stay up
    return n / (time.perf_counter() - start), n


def train_rate(model: Any, batches: list, device: Any, seconds: float) -> tuple[float, int]:
    """Samples/s of forward + backward + AdamW steps on pre-loaded batches (first step untimed)."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step(x: Any, y: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step(*batches[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, y in batches:
            step(x, y)
            n += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return n / (time.perf_counter() - start), n


def bench_loader(args: argparse.Namespace) -> dict[str, Any]:
    """Samples/s of ShardDataset through a DataLoader vs training steps of the demo model."""
    import os

    import torch  # imported here: the other benchmarks do not need it
    from torch.utils.data import DataLoader

    from twostream.dataset import ShardDataset
    from twostream.models import build_model

    with tempfile.TemporaryDirectory() as tmp:
        shard_dir, source = Path(args.shards), args.shards
        if not (shard_dir / args.modality).is_dir():
            shard_dir, source = Path(tmp), f"synthetic ({LOADER_SYNTHETIC['samples']} samples, 64x64)"
            synthetic_shards(shard_dir)
        probe = ShardDataset(shard_dir, args.modality, "train", True, 1)
        crop = args.crop or int(min(probe.sample_shape[:2]) * 7 // 8)
        dataset = ShardDataset(shard_dir, args.modality, "train", True, crop)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        workers = os.cpu_count() or 1
        loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=workers,
                            persistent_workers=True, pin_memory=device.type == "cuda", drop_last=True)
        torch.manual_seed(0)
        load, n_loaded = loader_rate(loader, args.seconds)
        batches = [(x.to(device), y.to(device)) for (x, y, _), _ in zip(loader, range(4))]
        del loader  # stops the workers before training takes the cores
    torch.manual_seed(0)
    model = build_model("resnet18", dataset.num_classes, dataset.in_channels).to(device)
    train, n_trained = train_rate(model, batches, device, args.seconds)
    return {"bench": "loader", "source": source, "modality": args.modality, "samples": len(dataset),
            "shape": [args.batch, dataset.in_channels, crop, crop], "workers": workers,
            "device": str(device), "torch_threads": torch.get_num_threads(),
            "model": "twostream.models.build_model('resnet18'), AdamW",
            "loader_samples_per_s": round(load, 1), "train_samples_per_s": round(train, 1),
            "ratio": round(load / train, 2), "timed_samples": {"loader": n_loaded, "train": n_trained}}


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    """Samples/s of the train stage's loop with its shard loader vs the same loop on in-memory batches."""
    import itertools

    import torch  # imported here: the other benchmarks do not need it

    from twostream.config import BaseConfig, ModelConfig, TrainConfig
    from twostream.dataset import ShardDataset
    from twostream.engine import (
        Dist, RunSpec, build_optimizer, build_scheduler, configure_runtime, train_loader, train_one_epoch,
    )
    from twostream.models import build_model

    params = load_params(args.params)
    cfg = dataclasses.replace(section(params, "train", TrainConfig), **{
        k: getattr(args, k) for k in ("workers", "threads", "batch_size") if getattr(args, k) is not None})
    modality = "rgb" if args.stream == "spatial" else params["temporal"]["input"]
    spec = RunSpec(args.stream, modality, 1, section(params, "base", BaseConfig).seed,
                   section(params, "model", ModelConfig), cfg)
    dist = Dist(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    configure_runtime(cfg, dist)
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir, source = Path(args.shards), args.shards
        if not (shard_dir / modality).is_dir():
            shard_dir, source = Path(tmp), f"synthetic ({LOADER_SYNTHETIC['samples']} samples, 64x64)"
            synthetic_shards(shard_dir)
        data = ShardDataset(shard_dir, modality, "train", True, cfg.crop)
        steps = args.steps or len(data) // cfg.batch_size  # default: one epoch
        model = build_model(spec.model.backbone, data.num_classes, data.in_channels, "none", spec.model.hidden,
                            spec.model.dropout).to(dist.device, memory_format=torch.channels_last)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, steps, 1000)  # long schedule: lr stays near its peak
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        shape = (cfg.batch_size, data.in_channels, cfg.crop, cfg.crop)
        batches = [(torch.randn(shape), torch.randint(data.num_classes, (cfg.batch_size,)), None)] * steps
        real_s, limit_s = [], []
        train_one_epoch(model, batches[:2], optimizer, scheduler, criterion, dist)  # warm-up
        for epoch in range(args.repeats):  # interleaved: both see the same machine load
            for seconds, loader in ((real_s, itertools.islice(train_loader(data, spec, dist, epoch), steps)),
                                    (limit_s, batches)):
                start = time.perf_counter()
                train_one_epoch(model, loader, optimizer, scheduler, criterion, dist)
                if dist.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - start)
    real, limit = (steps * cfg.batch_size / statistics.median(s) for s in (real_s, limit_s))
    return {"bench": "train", "stream": args.stream, "modality": modality, "source": source,
            "samples": len(data), "shape": list(shape), "backbone": spec.model.backbone,
            "optimizer": cfg.optimizer,
            "device": str(dist.device), "workers": cfg.workers, "torch_threads": torch.get_num_threads(),
            "steps": steps, "repeats": args.repeats, "real_samples_per_s": round(real, 1),
            "limit_samples_per_s": round(limit, 1), "ratio": round(real / limit, 3),
            "seconds": {"real": [round(t, 2) for t in real_s], "limit": [round(t, 2) for t in limit_s]}}


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run one benchmark and print its JSON line."""
    parser = argparse.ArgumentParser(prog="python -m twostream.bench",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    decode = sub.add_parser("decode", help="frames stage vs ffmpeg -f null, frames/s")
    decode.add_argument("--repeats", type=int, default=3, help="timed runs; medians are reported")
    decode.set_defaults(func=bench_decode)
    store = sub.add_parser("store", help="frame storage candidates: size and random-read speed")
    store.add_argument("--videos", type=int, default=24, help="videos decoded for the test")
    store.add_argument("--reads", type=int, default=2000, help="random single-frame reads timed")
    store.set_defaults(func=bench_store)
    for p in (decode, store):
        p.add_argument("--root", default="data/demo", help="folder of videos, or an index.json")
        p.add_argument("--params", default="params.yaml", help="params file for the frames section")
    flow = sub.add_parser("flow", help="flow stage vs one-process OpenCV TV-L1, pairs/s")
    flow.add_argument("--pairs", type=int, default=240, help="frame pairs (whole videos, at least this many)")
    flow.add_argument("--repeats", type=int, default=3, help="timed runs; medians are reported")
    flow.add_argument("--data", default="data", help="folder with index.json, frames/, resample.json")
    flow.add_argument("--params", default="params.yaml", help="params file (flow, clip, demo_data, frames)")
    flow.add_argument("--workers", type=int, help="override flow.workers (0 = all cores)")
    flow.add_argument("--threads", type=int, help="override flow.threads (OpenCV threads per worker)")
    flow.set_defaults(func=bench_flow)
    loader = sub.add_parser("loader", help="ShardDataset + DataLoader vs training steps, samples/s")
    loader.add_argument("--modality", default="flow", choices=("rgb", "sg3i", "flow"))
    loader.add_argument("--batch", type=int, default=32, help="batch size")
    loader.add_argument("--seconds", type=float, default=10.0, help="timed seconds of each side")
    loader.add_argument("--shards", default="data/shards", help="shard folder; synthetic shards if absent")
    loader.add_argument("--crop", type=int, help="crop side; default 7/8 of the stored side")
    loader.set_defaults(func=bench_loader)
    train = sub.add_parser("train", help="train stage loop with its shard loader vs in-memory batches, samples/s")
    train.add_argument("--stream", default="temporal", choices=("spatial", "temporal"))
    train.add_argument("--steps", type=int, default=0, help="timed steps per repeat; 0 = one epoch")
    train.add_argument("--repeats", type=int, default=3, help="timed runs of each side; medians are reported")
    train.add_argument("--shards", default="data/shards", help="shard folder; synthetic shards if absent")
    train.add_argument("--params", default="params.yaml", help="params file (model, train, temporal, base)")
    train.add_argument("--workers", type=int, help="override train.workers")
    train.add_argument("--threads", type=int, help="override train.threads")
    train.add_argument("--batch-size", type=int, help="override train.batch_size")
    train.set_defaults(func=bench_train)
    args = parser.parse_args(argv)
    print(json.dumps(args.func(args)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
