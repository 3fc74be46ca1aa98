"""Benchmark of the torch TV-L1 backend against OpenCV on all CPU cores, one JSON line.

``python -m twostream.bench flow --backend torch`` (also ``python -m twostream.bench.tvl1``): demo frame pairs at 320x240 (frames 1/5 s apart, as the pipeline's 6 fps
resampling of 30 fps video), TV-L1 params from ``params.yaml``'s ``flow`` (OpenCV's
defaults without the file). Reports pairs/s of ``tvl1.tvl1_batch`` on the available
device (after a warm-up batch) and of OpenCV's DualTVL1 in one warm one-thread process
per CPU core (the flow stage's way), medians over repeats, the endpoint error between
the two, the iterations the torch backend ran and the memory-bandwidth floor they imply.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from twostream.bench.flow import opencv_tvl1_defaults, pool_tvl1
from twostream.runtime.config import DemoConfig, FlowConfig, load_params, section
from twostream.ingest.demo import CLASSES, render_video, video_seeds
from twostream.motion.flow import tvl1_params
from twostream.motion.tvl1 import bandwidth_floor, resolve_device, tvl1_batch

FRAME_STEP = 5  # 30 fps demo video -> 6 fps pairs


def demo_pairs(n: int, width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` consecutive 6-fps grayscale pairs of demo videos rendered at ``width`` x ``height``.

    Returns:
        ``(prev, next)``, each ``(n, height, width) uint8``.
    """
    cfg = DemoConfig(classes=len(CLASSES), videos_per_class=1, seconds=3.0, width=width, height=height,
                     fps=30, train_fraction=0.6, test_fraction=0.3, layout="hmdb51", workers=1)
    prev, nxt, video = [], [], 0
    while len(prev) < n:
        ci = video % len(CLASSES)
        rgb = render_video(CLASSES[ci], cfg, video_seeds(seed, ci, video // len(CLASSES))[1])[::FRAME_STEP]
        gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in rgb]
        prev += gray[:-1]
        nxt += gray[1:]
        video += 1
    return np.stack(prev[:n]), np.stack(nxt[:n])


def tvl1_config(params_path: str) -> dict[str, Any]:
    """The TV-L1 keys of ``params.yaml``'s ``flow`` section; OpenCV's defaults without the file."""
    if not Path(params_path).is_file():
        return opencv_tvl1_defaults()
    return tvl1_params(section(load_params(params_path), "flow", FlowConfig))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_run(prev: np.ndarray, nxt: np.ndarray, params: dict[str, Any], device: torch.device,
              batch_size: int, compile: bool) -> tuple[float, np.ndarray, list[int]]:
    """Seconds, ``(N, H, W, 2)`` flow and active pair-iterations per level of the torch backend.

    Frames are moved to the device before the clock starts; the flow comes back after it stops.
    """
    prev_t, next_t = torch.from_numpy(prev).to(device), torch.from_numpy(nxt).to(device)
    flows, iterations = [], None
    _synchronize(device)
    start = time.perf_counter()
    for i in range(0, len(prev_t), batch_size):
        stats: dict[str, Any] = {}
        flows.append(tvl1_batch(prev_t[i:i + batch_size], next_t[i:i + batch_size], params,
                                compile=compile, stats=stats))
        counts = stats["pair_iterations"]
        iterations = counts if iterations is None else [a + b for a, b in zip(iterations, counts)]
    _synchronize(device)
    seconds = time.perf_counter() - start
    return seconds, torch.cat(flows).cpu().numpy(), iterations


def bench_torch_flow(pairs: int = 64, width: int = 320, height: int = 240, params_path: str = "params.yaml",
                     device: str | None = None, batch_size: int = 64, repeats: int = 3,
                     processes: int = 0, compile: bool = False) -> dict[str, Any]:
    """Pairs/s of the torch TV-L1 backend and of OpenCV on all CPU cores, and their endpoint error.

    Args:
        pairs: demo frame pairs timed.
        width, height: frame size.
        params_path: params file whose ``flow`` TV-L1 keys are used.
        device: torch device (None = CUDA when available, else CPU with torch's threads).
        batch_size: pairs per ``tvl1_batch`` call.
        repeats: timed runs of each side; medians are reported.
        processes: OpenCV processes (0 = one per CPU core).
        compile: run the torch inner iteration through ``torch.compile``.

    Returns:
        The JSON-ready report.
    """
    params, target = tvl1_config(params_path), resolve_device(device)
    processes = processes or (os.cpu_count() or 1)
    prev, nxt = demo_pairs(pairs, width, height)
    torch_run(prev[:batch_size], nxt[:batch_size], params, target, batch_size, compile)  # warm-up
    torch_s, cv_s = [], []
    for _ in range(repeats):
        seconds, flow_torch, iterations = torch_run(prev, nxt, params, target, batch_size, compile)
        torch_s.append(seconds)
    cv_s, flow_cv = pool_tvl1(list(zip(prev, nxt)), params, processes, repeats)
    epe = np.linalg.norm(flow_torch - flow_cv, axis=-1).mean(axis=(1, 2))  # (N,) mean per pair
    torch_rate, cv_rate = pairs / statistics.median(torch_s), pairs / statistics.median(cv_s)
    per_pair = [k / pairs for k in iterations]
    floor_s = bandwidth_floor(height, width, params, per_pair)
    name = torch.cuda.get_device_name(target) if target.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {
        "bench": "flow", "backend": "torch", "device": name, "size": f"{width}x{height}", "pairs": pairs,
        "batch_size": batch_size, "compile": compile, "tvl1": params, "repeats": repeats,
        "torch_pairs_per_s": round(torch_rate, 2), "opencv_pairs_per_s": round(cv_rate, 2),
        "opencv_processes": processes, "ratio": round(torch_rate / cv_rate, 3),  # torch / OpenCV, all cores
        "epe_mean": round(float(epe.mean()), 4), "epe_max_pair": round(float(epe.max()), 4),
        "iterations_per_pair": [round(k, 1) for k in per_pair],
        "bandwidth_floor_pairs_per_s": round(1 / floor_s, 1) if floor_s else None,
        "bandwidth_floor": "88 B/pixel/iteration, 3.35e12 B/s (H100 SXM HBM3)",
        "seconds": {"torch": [round(t, 3) for t in torch_s], "opencv": [round(t, 3) for t in cv_s]},
    }


OPTIONS = {  # option -> (add_argument keywords); the names match bench_torch_flow's arguments
    "--pairs": {"type": int, "default": 64, "help": "demo frame pairs timed"},
    "--size": {"default": "320x240", "help": "frame size WxH"},
    "--params": {"default": "params.yaml", "help": "params file (flow section)"},
    "--device": {"help": "torch device; default CUDA when available, else CPU"},
    "--batch-size": {"type": int, "default": 64, "help": "pairs per torch batch"},
    "--repeats": {"type": int, "default": 3, "help": "timed runs; medians are reported"},
    "--processes": {"type": int, "default": 0, "help": "OpenCV processes; 0 = all cores"},
    "--compile": {"action": "store_true", "help": "torch.compile the inner iteration"},
}


def add_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add ``OPTIONS`` but those in ``skip`` (a parser that already has, e.g., ``--pairs``)."""
    for option, kwargs in OPTIONS.items():
        if option not in skip:
            parser.add_argument(option, **kwargs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """``bench_torch_flow`` from parsed ``add_arguments`` options.

    Raises:
        SystemExit: on a size that is not ``WxH``.
    """
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be WxH, e.g. 320x240; got {args.size!r}") from None
    return bench_torch_flow(args.pairs, width, height, args.params, args.device, args.batch_size,
                            args.repeats, args.processes, args.compile)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    print(json.dumps(run(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
