"""Stage `sg3i`: stacked grayscale 3-channel images (SG3I) of every clip.

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/sg3i.py data/index.json data/frames data/resample.json data/sg3i

Reads params section `clip`. Writes `meta.json` into the sg3i folder: per clip of every
video, the native frames (first, middle, last) whose grayscale, stacked as the three
channels in time order, is its SG3I image (made from the frames store when read).
"""

from __future__ import annotations

import logging

from twostream.runtime.config import ClipConfig, load_params, section, stage_main
from twostream.motion.sg3i import build_sg3i


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [index_json, frames_dir, resample_json, sg3i_dir]``."""
    if len(argv) != 4:
        raise SystemExit("usage: python stages/sg3i.py INDEX_JSON FRAMES_DIR RESAMPLE_JSON SG3I_DIR")
    index_path, frames_dir, resample_path, out_dir = argv
    clip = section(load_params(), "clip", ClipConfig)
    meta = build_sg3i(index_path, frames_dir, resample_path, out_dir, clip)
    counts = meta["counts"]
    print(f"sg3i: {counts['clips']} clips of {counts['videos']} videos "
          f"({clip.frames} frames every {clip.step}) -> {out_dir}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("sg3i", main)
