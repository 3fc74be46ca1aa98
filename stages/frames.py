"""Stage `frames`: decode the indexed videos into one part file per video at the working size.

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/frames.py data/index.json data/frames data/frames_report.json

Reads params sections `frames` and `resample` (its `fps` decides which frames are stored),
and `executor` (local or ray: where the videos are decoded). Writes `parts/<class>/<file>.h5`
and `meta.json` into the frames folder, reusing the parts an earlier (or killed) run
finished, and a report listing every failed or skipped video with a reason. Exits non-zero
only when more than `frames.max_failures` of the videos fail.
"""

from __future__ import annotations

import logging

from twostream.runtime.config import ExecutorConfig, FramesConfig, ResampleConfig, load_params, section, stage_main
from twostream.runtime.executors import ClusterError
from twostream.ingest.frames import FramesError, extract_frames


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [index_json, frames_dir, report_json]``."""
    if len(argv) != 3:
        raise SystemExit("usage: python stages/frames.py INDEX_JSON FRAMES_DIR REPORT_JSON")
    index_path, frames_dir, report_path = argv
    params = load_params()
    executor = section(params, "executor", ExecutorConfig)  # execution only: not in dvc.yaml
    cfg, resample = section(params, "frames", FramesConfig), section(params, "resample", ResampleConfig)
    try:
        report = extract_frames(index_path, frames_dir, report_path, cfg, resample.fps, executor=executor)
    except (FramesError, ClusterError) as e:
        raise SystemExit(f"frames: {e}") from None
    counts = report["counts"]
    print(
        f"frames: {counts['stored']} of {counts['attempted']} videos stored at {cfg.width}x{cfg.height} "
        f"({report['computed']} decoded now, {report['reused']} kept from an earlier run), "
        f"{counts['failed']} failed, {counts['skipped']} skipped -> {frames_dir}, {report_path}"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("frames", main)
