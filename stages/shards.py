"""Stage `shards`: every train/val/test clip as a sample of each modality, in HDF5 shards.

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/shards.py data/index.json data/frames data/resample.json data/sg3i data/flow \
        data/frames_report.json data/flow_report.json data/shards plots/previews

Reads params `clip`, `flow.stack`, `flow.bound` and `shards`. Writes
`data/shards/{rgb,sg3i,flow}/{train,val,test}-NNNNN.h5`, `data/shards/{rgb,sg3i,flow}/expected.json`
(every video the index names per role, and those without samples with the reason from the
frames, resample or flow report), `data/shards/summary.json` and one preview PNG per class
(RGB frame, SG3I image, first flow field) for a few classes. A video missing from a store
is left out of every modality and listed; stores made with other params are an error.
"""

from __future__ import annotations

import logging

from twostream.runtime.config import ClipConfig, FlowConfig, ShardsConfig, load_params, section, stage_main
from twostream.samples.shards import ShardsError, build_shards


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [index, frames, resample, sg3i, flow, frames_report, flow_report,
    shards_dir, previews_dir]``."""
    if len(argv) != 9:
        raise SystemExit("usage: python stages/shards.py INDEX_JSON FRAMES_DIR RESAMPLE_JSON SG3I_DIR "
                         "FLOW_DIR FRAMES_REPORT FLOW_REPORT SHARDS_DIR PREVIEWS_DIR")
    index_path, frames_dir, resample_path, sg3i_dir, flow_dir, *reports, out_dir, previews_dir = argv
    params = load_params()
    clip = section(params, "clip", ClipConfig)
    flow = section(params, "flow", FlowConfig)
    cfg = section(params, "shards", ShardsConfig)
    try:
        summary = build_shards(index_path, frames_dir, resample_path, sg3i_dir, flow_dir, out_dir,
                               previews_dir, clip, flow.stack, flow.bound, cfg, reports)
    except ShardsError as e:
        raise SystemExit(f"shards: {e}") from None
    samples = summary["samples"]["rgb"]
    missing = ", ".join(f"{len(v)} {role}" for role, v in summary["missing"].items())
    print(f"shards: {samples['train']} train, {samples['val']} val, {samples['test']} test clips "
          f"x 3 modalities, {summary['total_bytes'] / 2**20:.1f} MiB -> {out_dir}, {previews_dir}; "
          f"videos without samples (counted as wrong): {missing}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("shards", main)
