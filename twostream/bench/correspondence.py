"""``bench correspondence``: what only fusion inside the network can learn.

Every clip shows two squares of different colours but the same luminance on a dark background;
one of them moves (2 px a frame, in a random direction), the other stands still, and the class is
which colour moves. One frame cannot tell (both squares are always there), and optical flow cannot
tell either: TV-L1 runs on grayscale, where the two squares look the same, so it sees that
something moves, not what (with unequal luminance a flow stream reached 0.60, since a darker
square moves with other flow). So each stream, and every fusion of their scores, stays near
chance (0.5); fusion inside the network sees where the motion is and which colour is there.

The clips go through the pipeline's own code: quantised TV-L1 fields (``flowstore.quantize`` of
``opticalflow.compute_flow``), the shards' writer, both streams trained and scored
(``engine.train_model``, ``evaluation.score_model``), the late fusions fitted on val
(``fusion.fuse``), and the fused network trained and scored (``convtrain.train_conv_fusion``).
Prints the test video top-1 of every method per seed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from twostream.runtime.config import FuseConfig, ModelConfig, TrainConfig, ViewsConfig
from twostream.evaluate.convtrain import train_conv_fusion
from twostream.learn.engine import RunSpec, train_model
from twostream.evaluate.evaluation import score_model
from twostream.motion.flowstore import quantize
from twostream.evaluate.fusion import SCORE_METHODS, fuse
from twostream.motion.opticalflow import compute_flow
from twostream.samples.shards import ShardWriter

COLOURS = ((200, 60, 140), (60, 135, 120))  # RGB: 0.299 R + 0.587 G + 0.114 B = 111 for both
BACKGROUND = 25
CLASSES = ["first colour moves", "second colour moves"]
ROLES = {"train": 400, "val": 100, "test": 200}
FLOW = {"tau": 0.25, "lambda_": 0.15, "theta": 0.3, "nscales": 3, "warps": 5, "epsilon": 0.1,
        "inner_iterations": 30, "outer_iterations": 10, "scale_step": 0.8, "gamma": 0.0, "median_filtering": 5}
BOUND = 20.0
MODEL = ModelConfig(backbone="resnet18", pretrained="none", hidden=64, dropout=0.5)


def train_config(size: int) -> TrainConfig:
    return TrainConfig(optimizer="adamw", lr=0.001, momentum=0.9, weight_decay=0.01, warmup_epochs=0.5,
                       label_smoothing=0.1, batch_size=32, crop=size, sampling="clip", segments=3, augment="crop",
                       partial_bn=False, workers=0, threads=0)


def fuse_config(layer: str = "layer3", epochs: int = 6) -> FuseConfig:
    return FuseConfig(weights=[1.0, 1.0], hidden=64, lr=0.01, weight_decay=0.001, max_epochs=500, patience=50,
                      holdout=0.25, svm_c=1.0, layer=layer, function="conv", time="none", snippets=1, freeze=True,
                      epochs=epochs, flow_tower=0.5)


def check_luminance() -> int:
    """The one grey level both colours take in ``cv2.COLOR_RGB2GRAY`` (as the flow stage converts).

    Raises:
        AssertionError: if the colours differ in grayscale.
    """
    grey = {int(cv2.cvtColor(np.uint8([[c]]), cv2.COLOR_RGB2GRAY)[0, 0]) for c in COLOURS}
    assert len(grey) == 1, f"the two colours must have one luminance; got {grey}"
    return grey.pop()


def clip(rng: np.random.Generator, label: int, size: int, side: int) -> np.ndarray:
    """``(3, size, size, 3) uint8``: three frames of one clip of class ``label`` (which colour moves)."""
    step = rng.choice([(2, 0), (-2, 0), (0, 2), (0, -2), (2, 2), (-2, -2), (2, -2), (-2, 2)])
    lo, hi = 4 + 4, size - side - 4 - 4  # room for two 2-px steps either way
    while True:
        places = rng.integers(lo, hi + 1, (2, 2))  # (square, (y, x))
        if np.abs(places[0] - places[1]).max() >= side + 6:  # apart, also after moving
            break
    frames = np.full((3, size, size, 3), BACKGROUND, np.uint8)
    for t in range(3):
        for square in (0, 1):
            y, x = places[square] + (step * (t - 1) if square == label else 0)
            frames[t, y:y + side, x:x + side] = COLOURS[square]
    return frames


def samples(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The clip's RGB sample (its middle frame) and flow sample (its two TV-L1 fields, x and y
    interleaved, quantised at ``BOUND``): ``(H, W, 3)`` and ``(H, W, 4)`` uint8."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    fields = [quantize(compute_flow(grey[t], grey[t + 1], FLOW), BOUND) for t in (0, 1)]  # (H, W, 2) each
    return frames[1], np.concatenate(fields, axis=-1)


def write_shards(out: Path, seed: int, size: int, side: int) -> None:
    """rgb and flow shards of the three roles, one clip per video, classes balanced."""
    rng = np.random.default_rng(seed)
    params = {"clip": {"frames": 3, "step": 3}, "flow": {"stack": 2, "bound": BOUND}, "shards": {"clips_per_shard": 4096}}
    first = 0
    for role, n in ROLES.items():
        labels = np.arange(n) % 2
        pairs = [samples(clip(rng, int(label), size, side)) for label in labels]
        videos, clips = np.arange(first, first + n), np.zeros(n, np.int64)
        first += n
        for modality, column in (("rgb", 0), ("flow", 1)):
            (out / modality).mkdir(parents=True, exist_ok=True)
            writer = ShardWriter(out / modality, role, modality, n, 4096, CLASSES, params)
            writer.add(np.stack([p[column] for p in pairs]), labels, videos, clips)
            writer.close()


def run_seed(work: Path, seed: int, size: int = 64, side: int = 12, stream_epochs: int = 3,
             conv_epochs: int = 6, layers: tuple[str, ...] = ("layer3",)) -> dict[str, Any]:
    """Test video top-1 of each stream, each late fusion and conv fusion at each of ``layers``."""
    check_luminance()
    shards, scores = work / "shards", work / "scores"
    write_shards(shards, seed, size, side)
    train, views = train_config(size), ViewsConfig(snippets=0, crops=1)
    top1 = {}
    for stream, modality in (("spatial", "rgb"), ("temporal", "flow")):
        checkpoint = train_model(RunSpec(stream, modality, stream_epochs, seed, MODEL, train), shards,
                                 work / f"{stream}.pt", work / "live" / stream)
        top1[stream] = score_model(checkpoint, shards, views, work / f"{stream}.json", scores / stream)["video_top1"]
    for method in SCORE_METHODS:
        top1[method] = fuse(scores, work / "m.json", work / "fusion.pt", work / "plots", method, fuse_config(),
                            seed)["video_top1"]
    for layer in layers:
        cfg = fuse_config(layer, conv_epochs)
        summary = train_conv_fusion(work / "spatial.pt", work / "temporal.pt", shards, work / f"conv_{layer}.pt",
                                    scores / "conv", work / "live" / "conv", cfg, train, views, seed)
        top1[f"conv_{layer}"] = fuse(scores, work / "m.json", work / "fusion.pt", work / "plots", "conv", cfg,
                                     seed)["video_top1"]
        top1[f"conv_{layer}_trainable_params"] = summary["trainable_params"]
    return top1


def add_arguments(sub: argparse._SubParsersAction) -> None:
    """The ``correspondence`` subcommand."""
    p = sub.add_parser("correspondence", help="two colours of one luminance, one moves: each stream and every "
                                              "late fusion vs conv fusion, test video top-1 per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--layers", nargs="+", default=["layer3", "layer4"], choices=("layer3", "layer4"))
    p.add_argument("--stream-epochs", type=int, default=3)
    p.add_argument("--conv-epochs", type=int, default=6)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    per_seed = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="bench-correspondence-") as tmp:
            per_seed[seed] = run_seed(Path(tmp), seed, stream_epochs=args.stream_epochs, conv_epochs=args.conv_epochs,
                                      layers=tuple(args.layers))
    methods = [k for k in per_seed[args.seeds[0]] if not k.endswith("_params")]
    return {"bench": "correspondence", "chance": 0.5, "test_videos": ROLES["test"], "seeds": args.seeds,
            "per_seed": per_seed,
            "median": {m: statistics.median(r[m] for r in per_seed.values()) for m in methods},
            "min": {m: min(r[m] for r in per_seed.values()) for m in methods}}
