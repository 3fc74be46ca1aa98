"""Stage `train@<stream>`: train the spatial or temporal stream (stage `score` then scores it).

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/train.py spatial data/shards models/spatial.pt dvclive/spatial

or the same under `torchrun --nproc_per_node N` for DDP. Reads params `base.seed`,
`model`, `train` and the stream's section (`spatial`: epochs; `temporal`: input, epochs).
The spatial stream reads `rgb` shards, the temporal stream `temporal.input` (flow | sg3i).
Checkpoints every epoch to `models/<stream>.resume.pt`, beside the model and no output
of dvc.yaml (a run stopped midway resumes from it; `engine.resume_path`), writes dvclive's
curves and, last, the final model, and removes the resume file.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from twostream.runtime.config import (
    BaseConfig, ModelConfig, StreamConfig, TemporalConfig, TrainConfig, load_params, section, stage_main,
)
from twostream.learn.engine import RunSpec, train_model

STREAMS = ("spatial", "temporal")


def run_spec(stream: str, params: dict) -> RunSpec:
    """The training run of ``stream`` described by ``params``.

    Raises:
        SystemExit: on an unknown stream (an argument, not a param).
        ParamsError: on a bad param, ``temporal.input`` included.
    """
    if stream not in STREAMS:
        raise SystemExit(f"train: stream must be one of {', '.join(STREAMS)}; got {stream!r}")
    own = section(params, stream, StreamConfig if stream == "spatial" else TemporalConfig)
    return RunSpec(stream, getattr(own, "input", "rgb"), own.epochs, section(params, "base", BaseConfig).seed,
                   section(params, "model", ModelConfig), section(params, "train", TrainConfig))


def print_epoch(stream: str, epochs: int) -> Callable[[dict], None]:
    """One line per epoch: wall time, throughput, losses, val accuracies, lr."""
    def show(r: dict) -> None:
        print(f"train@{stream} epoch {r['epoch']}/{epochs}: {r['seconds']:.1f} s "
              f"({r['samples_per_s']:.0f} samples/s), loss {r['train_loss']:.3f}, val loss "
              f"{r['val_loss']:.3f}, val clip {r['val_clip_top1']:.3f}, video {r['val_video_top1']:.3f}, "
              f"lr {r['lr']:.2e}", flush=True)
    return show


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [stream, shards_dir, model_pt, dvclive_dir]``."""
    if len(argv) != 4:
        raise SystemExit("usage: python stages/train.py STREAM SHARDS_DIR MODEL_PT DVCLIVE_DIR")
    stream, shard_dir, model_path, live_dir = argv
    spec = run_spec(stream, load_params())
    checkpoint = train_model(spec, shard_dir, model_path, live_dir, print_epoch(stream, spec.epochs))
    if os.environ.get("RANK", "0") == "0":
        seconds = sum(h["seconds"] for h in checkpoint["history"])
        print(f"train@{stream} ({spec.modality}, {spec.train.sampling} sampling): "
              f"{checkpoint['steps_per_epoch'] * checkpoint['epoch']} steps, val video top-1 "
              f"{checkpoint['history'][-1]['val_video_top1']:.3f}, {seconds:.0f} s -> {model_path}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("train", main)
