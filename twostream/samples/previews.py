"""The shards stage's previews: one clip per class, its RGB frame, SG3I image and first flow field side by side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from twostream.motion.flowviz import flow_to_hsv
from twostream.motion.flowstore import dequantize
from twostream.ingest.resample import label_below
from twostream.samples.refs import channels_to_pairs

PREVIEW_SCALE = 3  # nearest-neighbour upscaling of small preview panels ...
PREVIEW_MAX_PX = 384  # ... up to this width (at 340x256 a panel is shown as it is)
PREVIEW_LABEL_PX = 16
PREVIEW_FONT_SCALE = 0.4
PREVIEW_LABEL_MARGIN = 4  # the label's font shrinks when it is wider than the panel less this


def _labelled(panel: np.ndarray, text: str) -> np.ndarray:
    """``(h, w, 3)`` RGB panel -> ``(h + PREVIEW_LABEL_PX, w, 3)`` with ``text`` under it."""
    return label_below(panel, text, PREVIEW_LABEL_PX, PREVIEW_FONT_SCALE, PREVIEW_LABEL_MARGIN)


def preview_image(title: str, rgb: np.ndarray, sg3i: np.ndarray, flow: np.ndarray, bound: float) -> np.ndarray:
    """One clip side by side: RGB frame, SG3I image (time as R, G, B), first flow field (colour wheel).

    Args:
        title: text above the panels.
        rgb: ``(H, W, 3) uint8``; sg3i: ``(H, W, 3) uint8``; flow: ``(H, W, 2L) uint8`` quantised.
        bound: ``flow.bound`` to dequantise with.

    Returns:
        ``(H', W', 3) uint8`` RGB, panels scaled ``PREVIEW_SCALE``x (nearest), less where that would
        make them wider than ``PREVIEW_MAX_PX``.
    """
    field = dequantize(channels_to_pairs(flow)[0], bound)  # (H, W, 2) float32 pixels
    panels = [(rgb, "RGB middle frame"), (sg3i, "SG3I: t0 t1 t2 = R G B"), (flow_to_hsv(field), "flow 1 (HSV)")]
    h, w = rgb.shape[:2]
    scale = max(1, min(PREVIEW_SCALE, PREVIEW_MAX_PX // w))
    big = [_labelled(cv2.resize(p, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST), t)
           for p, t in panels]
    gap = np.full((big[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([big[0], gap, big[1], gap, big[2]], axis=1)
    title_strip = _labelled(np.zeros((0, row.shape[1], 3), np.uint8), title)  # a label under nothing
    return np.concatenate([title_strip, row], axis=0)


def write_previews(previews_dir: str | os.PathLike, previews: dict[str, dict[str, Any]],
                   bound: float) -> list[Path]:
    """Write ``<class>.png`` per entry of ``{class: {"title": str, "rgb", "sg3i", "flow": sample}}``.

    Earlier PNGs in ``previews_dir`` are removed first.
    """
    previews_dir = Path(previews_dir)
    previews_dir.mkdir(parents=True, exist_ok=True)
    for old in previews_dir.glob("*.png"):
        old.unlink()
    paths = []
    for name, s in previews.items():
        image = preview_image(s["title"], s["rgb"], s["sg3i"], s["flow"], bound)
        paths.append(previews_dir / f"{name}.png")
        if not cv2.imwrite(str(paths[-1]), np.ascontiguousarray(image[..., ::-1])):  # RGB -> BGR
            raise OSError(f"cv2 could not write the preview {paths[-1]}")
    return paths
