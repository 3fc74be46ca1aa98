"""Stage `fuse`: the fusion of the two streams, evaluated on test: late (average | network | svm,
fitted on the val scores) or inside the network (conv: the fused network trained from the streams).

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/fuse.py data/scores metrics/fusion.json models/fusion.pt plots/fusion metrics/fusion_cost.json \
        models/spatial.pt models/temporal.pt data/shards models/convfusion.pt data/scores/conv dvclive/convfusion

or the same under `torchrun --nproc_per_node N` (conv trains the fused network with DDP).
Reads params `fusion`, section `fuse` (every method's settings), `train` and `views` (conv trains
and is scored as the streams are) and `base.seed`. Writes the metrics JSON, the fitted fusion
(`predict` uses it), `confusion.csv`, `per_class.csv` and `per_class.png` in the plots folder,
and the method's cost (trainable parameters, fit seconds). With `fusion: conv` it first trains
the fused network (checkpointed every epoch to `models/convfusion.resume.pt`: a killed run
resumes) and scores val and test through it; with another method those outputs are
placeholders, so switching methods never trains anything but the fused network.
"""

from __future__ import annotations

import logging
import os
import time

from twostream.runtime.config import (
    BaseConfig, FuseConfig, TrainConfig, ViewsConfig, choice, load_params, section, stage_main,
)
from twostream.evaluate.convtrain import train_conv_fusion, write_placeholder
from twostream.evaluate.fusion import METHODS, fuse

USAGE = ("usage: python stages/fuse.py SCORES_DIR METRICS_JSON FUSION_MODEL PLOTS_DIR COST_JSON SPATIAL_PT "
         "TEMPORAL_PT SHARDS_DIR CONV_MODEL CONV_SCORES DVCLIVE_DIR")


def main(argv: list[str]) -> None:
    """Run the stage on the arguments of ``USAGE``."""
    if len(argv) != 11:
        raise SystemExit(USAGE)
    scores_dir, metrics_path, model_path, plots_dir, cost_path, spatial, temporal, shards, conv_model, conv_scores, \
        live_dir = argv
    params = load_params()
    method = choice(params, "fusion", METHODS)
    cfg, seed = section(params, "fuse", FuseConfig), section(params, "base", BaseConfig).seed
    begin = time.perf_counter()
    if method == "conv":
        train, views = section(params, "train", TrainConfig), section(params, "views", ViewsConfig)
        c = train_conv_fusion(spatial, temporal, shards, conv_model, conv_scores, live_dir, cfg, train, views, seed,
                              print_epoch(cfg))
        if os.environ.get("RANK", "0") != "0":
            return  # rank 0 evaluates and writes
        print(f"fuse (conv: {cfg.function} at {cfg.layer}, time {cfg.time}): {c['trainable_params']:,} trainable "
              f"parameters, {c['train_steps']} steps, {c['seconds']:.0f} s -> {conv_model}, {conv_scores}", flush=True)
    else:
        write_placeholder(conv_model, conv_scores, live_dir, method)
    m = fuse(scores_dir, metrics_path, model_path, plots_dir, method, cfg, seed, cost_path)
    streams = ", ".join(f"{name} {top1:.3f}" for name, top1 in m["streams"].items())
    print(f"fuse ({method}): test video top-1 {m['video_top1']:.3f} ({streams}), clip top-1 "
          f"{m['clip_top1']:.3f}, {time.perf_counter() - begin:.1f} s -> {metrics_path}, {model_path}, "
          f"{plots_dir}", flush=True)


def print_epoch(cfg: FuseConfig):
    """One line per epoch of the fused network's training."""
    def show(r: dict) -> None:
        print(f"fuse (conv) epoch {r['epoch']}/{cfg.epochs}: {r['seconds']:.1f} s, loss {r['train_loss']:.3f}, "
              f"val loss {r['val_loss']:.3f}, val video {r['val_video_top1']:.3f}", flush=True)
    return show


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("fuse", main)
