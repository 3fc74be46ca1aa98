"""Stage ``sg3i``: stacked grayscale 3-channel images (SG3I, Kim & Won 2020) of every clip.

An SG3I image is three grayscale frames of a clip (first, middle, last; see
``clips.sg3i_frames``) stacked as the 3 channels in time order, so an ImageNet-shaped
network sees motion as colour fringes. Grayscale is the frames store's grayscale decode
(``FrameStore.read_gray``: a JPEG's own luma, about twice as fast as decoding colour and
converting it; ``to_gray``, ``cv2.COLOR_RGB2GRAY`` as in the flow stage, for RGB arrays).

The images are made where that is cheap: from the frames store, when a sample is read.
Stored, they would cost more than every other store together (one raw ``(H, W, 3)``
image per clip: 255 KiB at 340x256, 17 KiB per decoded source frame at 6 fps with a
clip every 3 resampled frames), while making one reads and converts three frames. So
the stage writes only which frames make each clip's image (``data/sg3i/meta.json``):
``{"layout", "params": {"clip": ...}, "frames": <frames store, relative to this folder>,
"counts", "videos": {"<id>": {"clips": C, "frames": [[n0, n1, n2], ...]}}}`` with native
frame numbers, and ``SG3IStore`` reads images through the frames store.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from twostream.ingest.clips import clip_starts, sg3i_frames
from twostream.runtime.config import ClipConfig, to_dict
from twostream.ingest.framestore import FrameStore
from twostream.ingest.h5store import META_NAME
from twostream.ingest.datasets.records import read_index
from twostream.runtime.jsonio import write_json
from twostream.ingest.resample import read_resample
from twostream.motion.sg3istore import times_to_channels

log = logging.getLogger(__name__)

LAYOUT = "per clip [first, middle, last] native frames; image (H, W, 3) uint8 = their grayscale as channels"


def to_gray(frames: np.ndarray) -> np.ndarray:
    """Grayscale of RGB frames, as the flow stage computes it.

    Args:
        frames: ``(N, H, W, 3) uint8`` RGB.

    Returns:
        ``(N, H, W) uint8`` (``cv2.COLOR_RGB2GRAY``: 0.299 R + 0.587 G + 0.114 B, rounded).
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8; got {frames.shape} {frames.dtype}")
    out = np.empty(frames.shape[:3], np.uint8)
    for i, frame in enumerate(frames):
        out[i] = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return out


def sg3i_images(kept_rgb: np.ndarray, clip: ClipConfig) -> np.ndarray:
    """SG3I image of every clip of one video.

    Args:
        kept_rgb: ``(K, H, W, 3) uint8`` the video's resampled frames, in order.
        clip: clip geometry; clips are ``clips.clip_starts(K, clip.frames, clip.step)``.

    Returns:
        ``(C, H, W, 3) uint8``: channel ``j`` of image ``c`` is frame ``sg3i_frames(...)[j]``
        of clip ``c`` in grayscale (time order: first, middle, last).

    Raises:
        ValueError: if ``clip.frames`` < 3 or the frames are not ``(K, H, W, 3) uint8``.
    """
    gray = to_gray(kept_rgb)
    triples = [sg3i_frames(s, clip.frames) for s in clip_starts(len(gray), clip.frames, clip.step)]
    if not triples:
        return np.empty((0, *gray.shape[1:], 3), np.uint8)
    return times_to_channels(gray[np.asarray(triples)])  # (C, 3, H, W) -> (C, H, W, 3)


def video_sg3i(store: FrameStore, kept: np.ndarray, vid: int, clip: ClipConfig) -> np.ndarray:
    """SG3I images ``(C, H, W, 3) uint8`` of video ``vid``, reading only the frames they use.

    Args:
        store: the frames store.
        kept: ``(K,) int64`` native indices of the video's resampled frames.
        vid: video id.
        clip: clip geometry.
    """
    starts = clip_starts(len(kept), clip.frames, clip.step)
    triples = [sg3i_frames(s, clip.frames) for s in starts]
    used = sorted({k for t in triples for k in t})
    gray = np.zeros((len(kept), store.height, store.width), np.uint8)  # unused ones stay 0
    if used:
        gray[used] = store.read_gray(vid, kept[used])
    if not triples:
        return np.empty((0, store.height, store.width, 3), np.uint8)
    return times_to_channels(gray[np.asarray(triples)])  # (C, 3, H, W) -> (C, H, W, 3)


def build_sg3i(index_path: str | os.PathLike, frames_dir: str | os.PathLike,
               resample_path: str | os.PathLike, out_dir: str | os.PathLike,
               clip: ClipConfig) -> dict[str, Any]:
    """Write which frames make the SG3I image of every clip of every video of ``resample.json``.

    Args:
        index_path: ``data/index.json`` (checks every id).
        frames_dir: the frames store (its path is recorded relative to ``out_dir``).
        resample_path: ``data/resample.json``: the kept frames per video.
        out_dir: folder for ``meta.json``.
        clip: clip geometry (``clip.frames`` >= 3).

    Returns:
        The ``meta.json`` document.

    Raises:
        ValueError: if ``clip.frames`` < 3 or a video id is not in the index.
    """
    sg3i_frames(0, clip.frames)  # fails early on clips too short for SG3I
    index, kept = read_index(index_path), read_resample(resample_path)
    bad = [vid for vid in kept if not 0 <= vid < len(index)]
    if bad:
        raise ValueError(f"{resample_path} names videos {bad} outside the index's 0..{len(index) - 1}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = {}
    for vid in sorted(kept):
        triples = [[int(kept[vid][k]) for k in sg3i_frames(s, clip.frames)]
                   for s in clip_starts(len(kept[vid]), clip.frames, clip.step)]
        videos[str(vid)] = {"clips": len(triples), "frames": triples}
    meta = {"layout": LAYOUT, "params": {"clip": to_dict(clip)},
            "frames": Path(os.path.relpath(frames_dir, out_dir)).as_posix(), "videos": videos,
            "counts": {"videos": len(videos), "clips": sum(v["clips"] for v in videos.values())}}
    (out_dir / META_NAME).unlink(missing_ok=True)
    write_json(out_dir / META_NAME, meta)
    log.info("sg3i: %d clips of %d videos -> %s", meta["counts"]["clips"], len(videos), out_dir)
    return meta
