"""Stage `frames`: decode the indexed videos into HDF5 shards at the working size.

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/frames.py data/index.json data/frames data/frames_report.json

Reads params section `frames`. Writes `frames-NNNNN.h5` shards and `meta.json` into
the frames folder, and a report listing every failed or skipped video with a reason.
Exits non-zero only when more than `frames.max_failures` of the videos fail.
"""

from __future__ import annotations

import logging

from twostream.config import FramesConfig, load_params, section, stage_main
from twostream.frames import FramesError, extract_frames


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [index_json, frames_dir, report_json]``."""
    if len(argv) != 3:
        raise SystemExit("usage: python stages/frames.py INDEX_JSON FRAMES_DIR REPORT_JSON")
    index_path, frames_dir, report_path = argv
    cfg = section(load_params(), "frames", FramesConfig)
    try:
        report = extract_frames(index_path, frames_dir, report_path, cfg)
    except FramesError as e:
        raise SystemExit(f"frames: {e}") from None
    counts = report["counts"]
    print(
        f"frames: {counts['stored']} of {counts['attempted']} videos stored at "
        f"{cfg.width}x{cfg.height}, {counts['failed']} failed, {counts['skipped']} skipped "
        f"-> {frames_dir}, {report_path}"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("frames", main)
