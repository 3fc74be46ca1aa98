"""Stage `flow`: TV-L1 optical flow of the frame pairs the clips use, quantised to uint8.

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/flow.py data/index.json data/frames data/resample.json data/flow data/flow_report.json

Reads params sections `flow` and `clip`, and `executor` (local or ray: where the videos are
computed). Writes `parts/<class>/<file>.h5` and `meta.json` into the flow folder, reusing
the parts an earlier (or killed) run finished, and a report with counts, pairs and every
video whose flow failed, with the reason. Exits non-zero only when more than
`flow.max_failures` of the videos fail.
"""

from __future__ import annotations

import logging

from twostream.runtime.config import ClipConfig, ExecutorConfig, FlowConfig, load_params, section, stage_main
from twostream.runtime.executors import ClusterError
from twostream.motion.flow import FlowError, extract_flow


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [index_json, frames_dir, resample_json, flow_dir, report_json]``."""
    if len(argv) != 5:
        raise SystemExit(
            "usage: python stages/flow.py INDEX_JSON FRAMES_DIR RESAMPLE_JSON FLOW_DIR REPORT_JSON"
        )
    index_path, frames_dir, resample_path, flow_dir, report_path = argv
    params = load_params()
    executor = section(params, "executor", ExecutorConfig)  # execution only: not in dvc.yaml
    cfg = section(params, "flow", FlowConfig)
    clip = section(params, "clip", ClipConfig)
    try:
        report = extract_flow(index_path, frames_dir, resample_path, flow_dir, report_path, cfg, clip,
                              executor=executor)
    except (FlowError, ClusterError) as e:
        raise SystemExit(f"flow: {e}") from None
    counts = report["counts"]
    print(
        f"flow: {counts['stored']} of {counts['videos']} videos, {report['pairs']} pairs "
        f"({report['computed']} videos computed now, {report['reused']} kept from an earlier run) in "
        f"{report['seconds']:.1f} s ({report['pairs_per_second']:.1f} pairs/s, {report['workers']} "
        f"workers x {report['threads']} threads), {counts['failed']} failed -> {flow_dir}, {report_path}"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("flow", main)
