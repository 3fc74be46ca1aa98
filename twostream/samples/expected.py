"""Which videos each role expects: the index's, and why some of them have no samples.

The ``shards`` stage writes ``<modality>/expected.json`` with it, so that evaluation counts a
missing video as wrong (``metrics.evaluate(..., expected=...)``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

ROLES = ("train", "val", "test")
EXPECTED_NAME = "expected.json"  # per modality folder: the index's videos per role, and the missing ones


def stage_reasons(report_paths: list[str | os.PathLike]) -> dict[int, str]:
    """Why earlier stages dropped videos: id -> ``"<report>: <reason>"`` from the ``failed`` and
    ``skipped`` lists of stage reports (frames, flow) and the ``too_short`` list of resample.json
    (the first report that names a video wins)."""
    reasons: dict[int, str] = {}
    for path in report_paths:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        for key in ("failed", "skipped", "too_short"):
            for entry in doc.get(key, []):
                reason = entry.get("reason") or f"too short: {entry.get('n_kept')} resampled frames"
                reasons.setdefault(int(entry["id"]), f"{Path(path).name}: {reason}")
    return reasons


def expected_videos(index: list[dict[str, Any]], plan: dict[str, list[Any]],
                    reasons: dict[int, str]) -> dict[str, Any]:
    """Per role, every video the index names and those of them that have no samples.

    Returns:
        ``{"expected": {role: [[id, label], ...]}, "missing": {role: [{"id", "path", "class",
        "label", "reason"}]}}``, ids ascending; a missing video's reason comes from
        ``reasons``, else ``"not in the frames store"``.
    """
    present = {v.vid for videos in plan.values() for v in videos}
    doc: dict[str, Any] = {"expected": {role: [] for role in ROLES}, "missing": {role: [] for role in ROLES}}
    for vid, record in enumerate(index):
        if record["role"] not in ROLES:
            continue
        doc["expected"][record["role"]].append([vid, int(record["label"])])
        if vid not in present:
            doc["missing"][record["role"]].append({
                "id": vid, "path": record["path"], "class": record["class"], "label": int(record["label"]),
                "reason": reasons.get(vid, "not in the frames store")})
    return doc


def read_expected(shard_dir: str | os.PathLike, modality: str, role: str
                  ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]] | None:
    """The videos the index names for ``role``, from ``<shard_dir>/<modality>/expected.json``.

    Returns:
        ``(ids (V,) int64, labels (V,) int64, missing records)``, or None if the folder
        has no such file (shards written by other code than the shards stage).
    """
    path = Path(shard_dir) / modality / EXPECTED_NAME
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    pairs = np.asarray(doc["expected"][role], dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1], doc["missing"][role]
