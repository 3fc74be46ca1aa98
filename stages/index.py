"""Stage `index`: list a dataset root's videos with their labels and train/val/test roles.

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/index.py <data.root> data/index.json data/index_report.json

Reads params sections `data` and `base`. Writes the index (a JSON list of
{"key", "path", "class", "label", "role", "sha256"}: a stable id `<class>/<file name>`
and the hash of the video's bytes beside its path and labels) and a report of every
problem met, then prints one summary line.
"""

from __future__ import annotations

import logging

from twostream.config import BaseConfig, DataConfig, load_params, section, stage_main
from twostream.hmdb51 import build_index, summarize
from twostream.jsonio import write_json

log = logging.getLogger("stages.index")


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [root, index_json, report_json]``."""
    if len(argv) != 3:
        raise SystemExit("usage: python stages/index.py ROOT INDEX_JSON REPORT_JSON")
    root, index_path, report_path = argv
    params = load_params()
    data = section(params, "data", DataConfig)
    base = section(params, "base", BaseConfig)
    if root != data.root:
        log.warning("ROOT %r differs from params data.root %r; indexing %r", root, data.root, root)
    index, report = build_index(
        root,
        split=data.split,
        val_fraction=data.val_fraction,
        unused_as_train=data.unused_as_train,
        seed=base.seed,
    )
    write_json(index_path, index)
    write_json(report_path, report)
    print(f"index: {summarize(report)} -> {index_path}, {report_path}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("index", main)
