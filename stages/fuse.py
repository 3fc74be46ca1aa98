"""Stage `fuse`: late fusion of the two streams' scores, fitted on val, evaluated on test.

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/fuse.py data/scores metrics/fusion.json models/fusion.pt plots/fusion

Reads params `fusion` (average | network | svm), section `fuse` (the methods' settings)
and `base.seed`. Reads `<scores>/{spatial,temporal}/{val,test}.npz`; writes the metrics
JSON, the fitted fusion (`predict` uses it) and, in the plots folder, `confusion.csv`,
`per_class.csv` and `per_class.png`.
"""

from __future__ import annotations

import logging
import time

from twostream.config import BaseConfig, FuseConfig, choice, load_params, section, stage_main
from twostream.fusion import METHODS, fuse


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [scores_dir, metrics_json, fusion_model, plots_dir]``."""
    if len(argv) != 4:
        raise SystemExit("usage: python stages/fuse.py SCORES_DIR METRICS_JSON FUSION_MODEL PLOTS_DIR")
    scores_dir, metrics_path, model_path, plots_dir = argv
    params = load_params()
    method = choice(params, "fusion", METHODS)
    cfg, seed = section(params, "fuse", FuseConfig), section(params, "base", BaseConfig).seed
    begin = time.perf_counter()
    m = fuse(scores_dir, metrics_path, model_path, plots_dir, method, cfg, seed)
    streams = ", ".join(f"{name} {top1:.3f}" for name, top1 in m["streams"].items())
    print(f"fuse ({method}): test video top-1 {m['video_top1']:.3f} ({streams}), clip top-1 "
          f"{m['clip_top1']:.3f}, {time.perf_counter() - begin:.1f} s -> {metrics_path}, {model_path}, "
          f"{plots_dir}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("fuse", main)
