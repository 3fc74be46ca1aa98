"""Benchmarks of the pipeline's stages against their own lower limits.

The command line of ``python -m twostream.bench <command> [options]``: one subcommand
per benchmark, each printing ONE JSON line (see the package docstring for what each
measures). Flags are added per benchmark group, next to each other here, so a new flag
(say a ``--backend`` of ``flow``) goes into its group's function.
"""

from __future__ import annotations

import argparse
import json
import sys

from twostream.bench import cluster, correspondence, index, tvl1
from twostream.bench.flow import bench_flow
from twostream.bench.frames import bench_decode, bench_store
from twostream.bench.memory import bench_memory
from twostream.bench.scale import bench_scale
from twostream.bench.train import bench_loader, bench_train


def _add_frames(sub: argparse._SubParsersAction) -> None:
    """``decode`` and ``store``."""
    decode = sub.add_parser("decode", help="frames stage vs ffmpeg -f null, native frames/s")
    decode.add_argument("--repeats", type=int, default=3, help="timed runs, each into a new folder; medians")
    decode.set_defaults(func=bench_decode)
    store = sub.add_parser("store", help="frames.codec choice: KiB/frame, one-core decodes/s, grey-level "
                                         "error and TV-L1 endpoint error vs lossless frames")
    store.add_argument("--size", help="WxH working size; default the params' frames size (HMDB: 340x256)")
    store.add_argument("--qualities", type=int, nargs="+", default=[75, 90, 95], help="JPEG qualities compared")
    store.add_argument("--videos", type=int, default=24, help="videos stored (the first of --root)")
    store.add_argument("--reads", type=int, default=1000, help="random single-frame reads per timed repeat")
    store.add_argument("--repeats", type=int, default=5, help="timed read repeats; medians are reported")
    store.add_argument("--pairs", type=int, default=24, help="consecutive stored frame pairs for TV-L1")
    store.set_defaults(func=bench_store)
    for p in (decode, store):
        p.add_argument("--root", default="data/demo", help="folder of videos, or an index.json")
        p.add_argument("--params", default="params.yaml", help="params file (frames, resample, flow sections)")
        p.add_argument("--fps", type=float, help="resample rate: which native frames are stored (0 = all); "
                                                 "default the params' resample.fps")


def _add_flow(sub: argparse._SubParsersAction) -> None:
    """``flow``."""
    flow = sub.add_parser("flow", help="flow stage vs one-process OpenCV TV-L1, pairs/s "
                                       "(--backend torch: torch TV-L1 vs OpenCV on all cores)")
    flow.add_argument("--backend", default="opencv", choices=("opencv", "torch"),
                      help="opencv: the stage's scaling over the cores; torch: the torch backend on the "
                           "available device vs OpenCV on every core, at --size")
    flow.add_argument("--pairs", type=int, help="frame pairs (whole videos, at least this many); "
                                               "default 960 (opencv), 64 (torch)")
    flow.add_argument("--repeats", type=int, default=3, help="timed runs; medians are reported")
    flow.add_argument("--data", default="data", help="folder with index.json, frames/, resample.json")
    flow.add_argument("--params", default="params.yaml", help="params file (flow, clip, demo_data, frames)")
    flow.add_argument("--workers", type=int, help="override flow.workers (0 = all cores)")
    flow.add_argument("--threads", type=int, help="override flow.threads (OpenCV threads per worker)")
    tvl1.add_arguments(flow, skip=("--pairs", "--repeats", "--params"))
    flow.set_defaults(func=_flow)


def _flow(args: argparse.Namespace) -> dict:
    """``bench flow``: the OpenCV stage's scaling, or the torch backend against OpenCV."""
    if args.backend == "torch":
        args.pairs = args.pairs or 64
        return tvl1.run(args)
    args.pairs = args.pairs or 960  # the stage starts a pool: fewer pairs would time mostly that
    return bench_flow(args)


def _add_train(sub: argparse._SubParsersAction) -> None:
    """``loader`` and ``train``."""
    loader = sub.add_parser("loader", help="ShardDataset samples/s per core per modality, read vs transform; "
                                           "without --size also DataLoader vs training steps")
    loader.add_argument("--modality", default="flow", choices=("rgb", "sg3i", "flow", "all"))
    loader.add_argument("--size", help="WxH: synthetic shards at this size instead of --shards "
                                       "(per-core figures only unless --compare-train)")
    loader.add_argument("--stack", type=int, nargs="+", default=[2, 5],
                        help="flow stacks L of the synthetic shards at --size (2L channels)")
    loader.add_argument("--reads", type=int, default=256, help="random samples per timed per-core run")
    loader.add_argument("--repeats", type=int, default=5, help="timed per-core runs; medians are reported")
    loader.add_argument("--compare-train", action="store_true",
                        help="also DataLoader vs training steps at --size (always done without --size)")
    loader.add_argument("--batch", type=int, default=32, help="batch size of the comparison")
    loader.add_argument("--seconds", type=float, default=10.0, help="timed seconds of each side of the comparison")
    loader.add_argument("--shards", default="data/shards", help="shard folder; synthetic shards if absent")
    loader.add_argument("--crop", type=int, help="crop side; default 224 with --size, else 7/8 of the stored side")
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


def _add_scale(sub: argparse._SubParsersAction) -> None:
    """``scale``."""
    scale = sub.add_parser("scale", help="data stages through DVC on a generated HMDB-shaped sample: disk, "
                                         "time and memory per stage, extrapolated to HMDB-51 and Kinetics-400")
    scale.add_argument("--videos", type=int, default=300, help="sample videos (320x240 XviD, 30 fps)")
    scale.add_argument("--classes", type=int, default=10, help="sample classes")
    scale.add_argument("--seconds", type=float, nargs=3, default=(3.0, 1.0, 10.0), metavar=("MEDIAN", "MIN", "MAX"),
                       help="video lengths: log-normal around MEDIAN, clipped to MIN..MAX")
    scale.add_argument("--seed", type=int, default=0, help="seed of the sample")
    scale.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="params.yaml override, repeatable (e.g. resample.fps=0); applied after "
                            "frames.width=340 frames.height=256")
    scale.add_argument("--cache-type", help="DVC cache.type of the copy (e.g. hardlink); default DVC's own")
    scale.add_argument("--keep", metavar="DIR", help="work in DIR (new or empty) and keep it; default a temp folder")
    scale.set_defaults(func=bench_scale)


def _add_memory(sub: argparse._SubParsersAction) -> None:
    """``memory``."""
    memory = sub.add_parser("memory", help="peak RSS of decoding a long clip: decode_video vs VideoReader blocks")
    memory.add_argument("--minutes", type=float, default=10.0, help="length of the generated 640x272 clip")
    memory.add_argument("--width", type=int, default=340, help="decode width in pixels")
    memory.add_argument("--height", type=int, default=256, help="decode height in pixels")
    memory.set_defaults(func=bench_memory)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m twostream.bench``: decode, store, flow, loader, train, memory, scale, ray, index,
    correspondence.

    Returns:
        A parser whose parsed namespace has ``func(args) -> dict`` (the benchmark to run).
    """
    parser = argparse.ArgumentParser(prog="python -m twostream.bench",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_frames(sub)
    _add_flow(sub)
    _add_train(sub)
    _add_memory(sub)
    _add_scale(sub)
    cluster.add_arguments(sub)
    index.add_arguments(sub)
    correspondence.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run one benchmark and print its JSON line."""
    args = build_parser().parse_args(argv)
    print(json.dumps(args.func(args)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
