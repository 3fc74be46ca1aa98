"""Stage `resample`: pick the native frames each video keeps at `resample.fps`.

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/resample.py data/index.json data/frames data/resample.json plots/contact_sheet.png

Reads params `resample` and `clip.frames`. Writes the kept frame indices per video
(too-short videos listed apart, with their counts) and a contact sheet of one frame
per class.
"""

from __future__ import annotations

import logging

from twostream.runtime.config import ClipConfig, ResampleConfig, load_params, section, stage_main
from twostream.ingest.resample import resample_videos


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [index_json, frames_dir, resample_json, sheet_png]``."""
    if len(argv) != 4:
        raise SystemExit(
            "usage: python stages/resample.py INDEX_JSON FRAMES_DIR RESAMPLE_JSON SHEET_PNG"
        )
    index_path, frames_dir, out_path, sheet_path = argv
    params = load_params()
    cfg = section(params, "resample", ResampleConfig)
    clip = section(params, "clip", ClipConfig)
    doc = resample_videos(index_path, frames_dir, out_path, sheet_path, cfg, clip.frames)
    counts = doc["counts"]
    rate = f"{cfg.fps:g} fps" if cfg.fps else "every frame"
    print(
        f"resample: {counts['kept']} of {counts['stored']} videos at {rate}, "
        f"{counts['too_short']} shorter than {clip.frames} frames -> {out_path}, {sheet_path}"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("resample", main)
