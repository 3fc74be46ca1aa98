"""Stage `index`: list a dataset root's videos with their labels and train/val/test roles.

Usage (the `cmd` of dvc.yaml; params.yaml is read from the current directory):

    python stages/index.py <data.root> data/index.json data/index_report.json

Reads params sections `data` and `base`. The root may be HMDB-51, UCF101, class folders per
split (Kinetics) or video lists (`data.format`, `auto` recognises it). Writes the index (a
JSON list of {"key", "path", "class", "label", "role", "sha256"}: a stable id and the hash of
the video's bytes beside its path and labels) and a report of what was found and of every
problem met, then prints one summary line. Hashes run on every core; the hashes of files whose
size and mtime are unchanged come from `.dvc/tmp/index_hashes.sqlite` (DVC's scratch folder).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from twostream.runtime.config import BaseConfig, DataConfig, load_params, section, stage_main, usable_cores
from twostream.ingest.datasets.common import FormatError, HashCache, summarize
from twostream.ingest.datasets.index import build_index
from twostream.runtime.jsonio import write_json

log = logging.getLogger("stages.index")
HASH_CACHE = Path(".dvc") / "tmp" / "index_hashes.sqlite"  # beside DVC's own state; never an output


def main(argv: list[str]) -> None:
    """Run the stage on ``argv = [root, index_json, report_json]``."""
    if len(argv) != 3:
        raise SystemExit("usage: python stages/index.py ROOT INDEX_JSON REPORT_JSON")
    root, index_path, report_path = argv
    params = load_params()
    data, base = section(params, "data", DataConfig), section(params, "base", BaseConfig)
    if root != data.root:
        log.warning("ROOT %r differs from params data.root %r; indexing %r", root, data.root, root)
    cache = HashCache(HASH_CACHE) if HASH_CACHE.parent.parent.is_dir() else None
    hashing: dict[str, int] = {}
    begin = time.perf_counter()
    try:
        index, report = build_index(root, data.split, data.val_fraction, data.unused_as_train, base.seed,
                                    data.format, data.annotations, cache, usable_cores(), True, hashing)
    except FormatError as e:
        raise SystemExit(f"index: {e}") from None
    finally:
        if cache is not None:
            cache.close()
    write_json(index_path, index)
    write_json(report_path, report)
    print(f"index: {summarize(report)} ({hashing['hashed']} videos hashed, {hashing['cached']} unchanged, "
          f"{time.perf_counter() - begin:.1f} s) -> {index_path}, {report_path}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stage_main("index", main)
