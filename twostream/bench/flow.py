"""Benchmark of the ``flow`` stage against one-process OpenCV TV-L1 on the same frame pairs.

``flow``: TV-L1 pairs/s of the ``flow`` stage (``extract_flow``, its process pool,
params.yaml's ``flow``) and of plain OpenCV TV-L1 on the same frame pairs in one
process, with one thread and with OpenCV's default threads; medians over repeats;
``ratio`` = stage / one thread. Frames come from ``--data`` (``data/frames``) or from
demo videos rendered into a temp dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from twostream.bench.common import frames_config, resample_fps
from twostream.ingest.clips import needed_pairs
from twostream.runtime.config import ClipConfig, DemoConfig, FlowConfig, ResampleConfig, load_params, section
from twostream.ingest.demoset import render_dataset
from twostream.motion.opticalflow import TVL1_KEYWORDS
from twostream.motion.flow import compute_flow, extract_flow, pool_context, tvl1_params
from twostream.ingest.framestore import FrameStore
from twostream.ingest.frames import extract_frames
from twostream.runtime.jsonio import write_json
from twostream.ingest.resample import read_resample, resample_videos


def flow_params(params_path: str) -> tuple[FlowConfig, ClipConfig, DemoConfig]:
    """The ``flow``, ``clip`` and ``demo_data`` params; OpenCV's TV-L1 defaults without a file."""
    if Path(params_path).is_file():
        params = load_params(params_path)
        return (section(params, "flow", FlowConfig), section(params, "clip", ClipConfig),
                section(params, "demo_data", DemoConfig))
    return (FlowConfig(**opencv_tvl1_defaults(), backend="opencv", bound=20.0, stack=2, workers=0, threads=1,
                       max_failures=1.0, codec="jpeg", quality=95),
            ClipConfig(frames=3, step=6),
            DemoConfig(classes=8, videos_per_class=1, seconds=3.0, width=128, height=96, fps=30,
                       train_fraction=0.6, test_fraction=0.3, layout="hmdb51", workers=0))


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
        fps = resample_fps(args.params)
        extract_frames(index_path, frames_dir, tmp / "frames.json", frames_config(args.params), fps)
        resample_videos(index_path, frames_dir, resample_path, tmp / "sheet.png", ResampleConfig(fps=fps),
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


def pool_tvl1(pairs: list[tuple], tvl1: dict[str, Any], processes: int,
              repeats: int = 1) -> tuple[list[float], np.ndarray]:
    """OpenCV TV-L1 over ``pairs`` split evenly over ``processes`` warm one-thread processes.

    TV-L1 alone, no reading, quantising or storing: the flow stage's ceiling, and OpenCV
    on every core for ``bench flow --backend torch``. The pool's start and a warm-up call
    per process are outside the clock.

    Returns:
        Seconds of each of ``repeats`` runs, and the ``(N, H, W, 2) float32`` flow.
    """
    jobs = [(*pair, tvl1) for pair in pairs]
    share = math.ceil(len(jobs) / processes)
    with pool_context().Pool(processes, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        pool.starmap(compute_flow, [jobs[0]] * processes, chunksize=1)  # start and warm up
        seconds, flow = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            flow = pool.starmap(compute_flow, jobs, chunksize=share)
            seconds.append(time.perf_counter() - start)
    return seconds, np.stack(flow)


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
            limit_s.append(pool_tvl1(pairs, tvl1, report["workers"])[0][0])
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
