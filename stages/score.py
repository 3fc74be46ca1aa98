"""Stage `score@<stream>`: score val and test by a trained stream through the test-time views.

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/score.py spatial models/spatial.pt data/shards metrics/spatial.json data/scores/spatial

Reads the params `views` (snippets, crops) and `train.workers`. Every video of val and test is
scored by `views.snippets` evenly spaced clips (0 = every clip) times `views.crops` crops;
a video's score is the mean softmax over them. Writes `<scores>/{val,test}.npz` (one row per
scored clip, the mean over its crops), `<scores>/report.json` and the metrics JSON. A change
of views re-runs this stage and `fuse`, not training.
"""

from __future__ import annotations

import logging
import os
import time

from twostream.runtime.config import TrainConfig, ViewsConfig, load_params, section, stage_main
from twostream.evaluate.evaluation import score_model
from twostream.learn.scoring import load_checkpoint

STREAMS = ("spatial", "temporal")


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [stream, model_pt, shards_dir, metrics_json, scores_dir]``."""
    if len(argv) != 5:
        raise SystemExit("usage: python stages/score.py STREAM MODEL_PT SHARDS_DIR METRICS_JSON SCORES_DIR")
    stream, model_path, shard_dir, metrics_path, scores_dir = argv
    if stream not in STREAMS:
        raise SystemExit(f"score: stream must be one of {', '.join(STREAMS)}; got {stream!r}")
    params = load_params()
    views = section(params, "views", ViewsConfig)
    workers = section(params, "train", TrainConfig).workers
    begin = time.perf_counter()
    checkpoint = load_checkpoint(model_path)
    if checkpoint.get("stream") != stream:
        raise SystemExit(f"score: {model_path} is the {checkpoint.get('stream')!r} stream, not {stream!r}")
    m = score_model(checkpoint, shard_dir, views, metrics_path, scores_dir, workers)
    if os.environ.get("RANK", "0") == "0":
        print(f"score@{stream} ({checkpoint['modality']}, {views.snippets or 'every'} clips x {views.crops} "
              f"crops): test video top-1 {m['video_top1']:.3f}, clip top-1 {m['clip_top1']:.3f}, val video "
              f"top-1 {m['val_video_top1']:.3f}, {time.perf_counter() - begin:.0f} s -> {metrics_path}, "
              f"{scores_dir}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("score", main)
