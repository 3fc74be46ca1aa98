"""Stage ``resample``: the native frames every video keeps at ``resample.fps``, as indices.

The ``frames`` stage stores only those frames (it applies the same rule while it decodes,
``clips.kept_stream``); this stage writes their native numbers to ``data/resample.json``,
drops the videos too short for a clip, and draws a contact sheet (one tile per class).
The rule is by timestamp, with native frame ``i`` at ``i / src_fps`` seconds: resampled
frame ``k`` is the native frame nearest ``k / fps`` (``clips.resample_indices``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from twostream.ingest.clips import resample_indices  # noqa: F401 - re-export: the rule lives with the clips
from twostream.runtime.config import ResampleConfig
from twostream.ingest.framestore import FrameStore
from twostream.ingest.datasets.records import read_index
from twostream.runtime.jsonio import write_json

log = logging.getLogger(__name__)

TILE_MIN_PX = 128  # contact-sheet tiles are scaled up (nearest) to at least this width
LABEL_PX = 18  # height of the class-name strip under each tile
PAD_PX = 4


def read_resample(path: str | os.PathLike) -> dict[int, np.ndarray]:
    """Kept frame indices per video id from ``data/resample.json`` (too-short ones excluded).

    Returns:
        video id -> ``(K,) int64`` native frame indices.
    """
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return {int(vid): np.asarray(kept, dtype=np.int64) for vid, kept in doc["videos"].items()}


def label_below(image: np.ndarray, text: str, label_px: int = LABEL_PX, font_scale: float = 0.45,
                margin: int = 2) -> np.ndarray:
    """``(h, w, 3)`` RGB image -> ``(h + label_px, w, 3)`` with ``text`` centred in a white strip
    below it, black, its font shrunk when it is wider than ``w - margin`` (long class names);
    the contact sheet's tiles and the shards' preview panels."""
    h, w = image.shape[:2]
    out = np.full((h + label_px, w, 3), 255, np.uint8)
    out[:h] = image
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, font_scale
    (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
    if tw > w - margin:
        scale *= (w - margin) / tw
        (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
    origin = ((w - tw) // 2, h + (label_px + th) // 2)
    cv2.putText(out, text, origin, font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def contact_sheet(tiles: list[np.ndarray | None], names: list[str],
                  height: int, width: int) -> np.ndarray:
    """Grid of labelled frames, one per class.

    Args:
        tiles: per class a ``(height, width, 3) uint8`` RGB frame, or None (grey tile).
        names: class names, same order.
        height: frame height of the store.
        width: frame width of the store.

    Returns:
        ``(H, W, 3) uint8`` RGB image; tiles scaled up ``ceil(TILE_MIN_PX / width)``x
        (nearest), ``ceil(sqrt(n))`` columns.
    """
    scale = max(1, math.ceil(TILE_MIN_PX / width))
    blank = np.full((height, width, 3), 160, np.uint8)
    labelled = [
        label_below(cv2.resize(t if t is not None else blank, (width * scale, height * scale),
                               interpolation=cv2.INTER_NEAREST), name)
        for t, name in zip(tiles, names)
    ]
    cols = max(1, math.ceil(math.sqrt(len(labelled))))
    rows = max(1, math.ceil(len(labelled) / cols))
    th, tw = height * scale + LABEL_PX, width * scale
    sheet = np.full((PAD_PX + rows * (th + PAD_PX), PAD_PX + cols * (tw + PAD_PX), 3), 255, np.uint8)
    for n, tile in enumerate(labelled):
        y, x = PAD_PX + (n // cols) * (th + PAD_PX), PAD_PX + (n % cols) * (tw + PAD_PX)
        sheet[y:y + th, x:x + tw] = tile
    return sheet


def _sheet_tiles(index: list[dict[str, Any]], store: FrameStore,
                 kept: dict[int, np.ndarray]) -> tuple[list[np.ndarray | None], list[str]]:
    """Per class in label order: the middle kept frame of its first stored video."""
    classes = dict(sorted({r["label"]: r["class"] for r in index}.items()))
    first: dict[int, int] = {}
    for vid in store.video_ids:  # ascending ids = index order
        first.setdefault(index[vid]["label"], vid)
    tiles: list[np.ndarray | None] = []
    for label in classes:
        vid = first.get(label)
        tiles.append(None if vid is None else store.read(vid, [int(kept[vid][len(kept[vid]) // 2])])[0])
    return tiles, list(classes.values())


def resample_videos(index_path: str | os.PathLike, frames_dir: str | os.PathLike,
                    out_path: str | os.PathLike, sheet_path: str | os.PathLike,
                    cfg: ResampleConfig, clip_frames: int) -> dict[str, Any]:
    """Write the kept frame indices of every stored video, and the contact sheet.

    Args:
        index_path: ``data/index.json`` (paths and classes for the report and sheet).
        frames_dir: the ``frames`` stage's folder.
        out_path: ``data/resample.json``: ``{"fps", "clip_frames", "counts", "videos":
            {"<id>": [native indices]}, "too_short": [{"id", "path", "class", "n_kept"}]}``.
        sheet_path: PNG contact sheet.
        cfg: the ``resample`` params.
        clip_frames: ``clip.frames``; videos keeping fewer frames go to ``too_short``.

    Returns:
        The document written to ``out_path``.

    Raises:
        ValueError: on ``clip_frames`` < 1, or a frames store made at another ``resample.fps``.
    """
    if clip_frames < 1:
        raise ValueError(f"clip.frames must be >= 1; got {clip_frames}")
    index = read_index(index_path)
    store = FrameStore(frames_dir)
    if store.resample_fps != cfg.fps:
        raise ValueError(f"the frames store {frames_dir} holds the frames kept at {store.resample_fps:g} fps; "
                         f"resample.fps is {cfg.fps:g}: re-run the frames stage")
    kept: dict[int, np.ndarray] = {}
    videos, too_short = {}, []
    for vid in store.video_ids:
        kept[vid] = store.stored_indices(vid)
        if len(kept[vid]) < clip_frames:
            record = index[vid]
            too_short.append({"id": vid, "path": record["path"], "class": record["class"],
                              "n_kept": len(kept[vid])})
            log.warning("video %d (%s): %d frames at %g fps, fewer than clip.frames = %d",
                        vid, record["path"], len(kept[vid]), cfg.fps, clip_frames)
        else:
            videos[str(vid)] = kept[vid].tolist()
    doc = {"fps": cfg.fps, "clip_frames": clip_frames, "videos": videos, "too_short": too_short,
           "counts": {"stored": len(store), "kept": len(videos), "too_short": len(too_short)}}
    write_json(out_path, doc)
    with store:
        tiles, names = _sheet_tiles(index, store, kept)
    sheet = contact_sheet(tiles, names, store.height, store.width)
    Path(sheet_path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(sheet_path), np.ascontiguousarray(sheet[..., ::-1])):  # RGB -> BGR
        raise OSError(f"cv2 could not write the contact sheet to {sheet_path}")
    return doc
