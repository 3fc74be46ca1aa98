"""Benchmark ``ray``: the ``flow`` stage on Ray with 1 and with 2 workers, at HMDB's 340x256.

An HMDB-shaped sample (``scale.write_sample``: 320x240 XviD at 30 fps, every video
``--seconds`` long, so that the videos cost the same) goes through the frames and resample
stages at 340x256 with the params of ``--params``. Then the flow stage runs, interleaved
over ``--repeats`` rounds so that every setting sees the same machine load, on two local
Ray clusters (``executors.local_cluster``: a head node with 1 CPU, one with 2) and, for
reference, on the local process pool with 1 and 2 workers. Each run writes a new folder and
is timed whole, the Ray connection included; every run's files are checked to be the same
bytes as the first's. ``ratio`` = median pairs/s with 2 Ray workers / with 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from twostream.bench.common import bench_index, frames_config, resample_fps
from twostream.bench.flow import flow_params
from twostream.bench.scale import write_sample
from twostream.runtime.config import ExecutorConfig, ResampleConfig
from twostream.runtime.executors import local_cluster
from twostream.motion.flow import extract_flow
from twostream.ingest.frames import extract_frames
from twostream.ingest.resample import resample_videos


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def _inputs(tmp: Path, args: argparse.Namespace, frames_kept: int) -> dict[str, Any]:
    """The sample's index.json, frames (340x256) and resample.json under ``tmp``."""
    sample = write_sample(tmp / "hmdb", args.videos, min(args.videos, 4), (args.seconds,) * 3, args.seed)
    index_path, _, _ = bench_index(str(tmp / "hmdb" / "videos"), tmp)
    frames = dataclasses.replace(frames_config(args.params), width=340, height=256)
    fps = resample_fps(args.params)
    report = extract_frames(index_path, tmp / "frames", tmp / "frames.json", frames, fps)
    if report["counts"]["failed"]:
        raise RuntimeError(f"the generated sample failed to decode: {report['failed']}")
    resample_videos(index_path, tmp / "frames", tmp / "resample.json", tmp / "sheet.png",
                    ResampleConfig(fps=fps), frames_kept)
    return sample


def bench_cluster(args: argparse.Namespace) -> dict[str, Any]:
    """Pairs/s of the flow stage on Ray with 1 and 2 workers, and on the local pool with 1 and 2."""
    cfg, clip, _ = flow_params(args.params)
    ray = ExecutorConfig(kind="ray", address="", videos_per_task=1, cpus_per_task=1, gpus_per_task=0,
                         max_retries=3)
    seconds: dict[str, list[float]] = {"ray_1": [], "ray_2": [], "local_1": [], "local_2": []}
    with tempfile.TemporaryDirectory() as tmp, local_cluster(1) as one, local_cluster(2) as two:
        tmp = Path(tmp)
        sample = _inputs(tmp, args, clip.frames)
        settings = {"ray_1": (cfg, dataclasses.replace(ray, address=one)),
                    "ray_2": (cfg, dataclasses.replace(ray, address=two)),
                    "local_1": (dataclasses.replace(cfg, workers=1), None),
                    "local_2": (dataclasses.replace(cfg, workers=2), None)}
        digests, pairs = set(), 0
        for r in range(args.repeats):
            for name, (flow, executor) in settings.items():
                out = tmp / f"flow-{name}-{r}"
                start = time.perf_counter()
                report = extract_flow(tmp / "index.json", tmp / "frames", tmp / "resample.json", out,
                                      tmp / f"{out.name}.json", flow, clip, executor=executor)
                seconds[name].append(time.perf_counter() - start)
                pairs = report["pairs"]
                digests.add(_digest(out) + (tmp / f"{out.name}.json").read_text())
    rate = {name: pairs / statistics.median(s) for name, s in seconds.items()}
    return {
        "bench": "ray", "videos": args.videos, "seconds_per_video": args.seconds, "size": "340x256",
        "source_frames": sample["frames"], "pairs": pairs, "repeats": args.repeats, "epsilon": cfg.epsilon,
        "pairs_per_s": {name: round(v, 2) for name, v in rate.items()},
        "identical": len(digests) == 1, "ratio": round(rate["ray_2"] / rate["ray_1"], 3),
        "local_ratio": round(rate["local_2"] / rate["local_1"], 3),
        "ray_vs_local_2": round(rate["ray_2"] / rate["local_2"], 3),
        "seconds": {name: [round(t, 2) for t in s] for name, s in seconds.items()},
    }


def add_arguments(sub: argparse._SubParsersAction) -> None:
    """The ``ray`` subcommand."""
    bench = sub.add_parser("ray", help="flow stage on local Ray clusters of 1 and 2 CPUs (and the local pool), "
                                       "pairs/s at 340x256")
    bench.add_argument("--videos", type=int, default=8, help="sample videos (HMDB-shaped, 320x240 XviD)")
    bench.add_argument("--seconds", type=float, default=3.0, help="length of every sample video")
    bench.add_argument("--seed", type=int, default=0, help="seed of the sample")
    bench.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    bench.add_argument("--params", default="params.yaml", help="params file (frames, resample, flow, clip)")
    bench.set_defaults(func=bench_cluster)
