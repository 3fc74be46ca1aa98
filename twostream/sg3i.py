"""Stage ``sg3i``: stacked grayscale 3-channel images (SG3I, Kim & Won 2020) of every clip.

An SG3I image is three grayscale frames of a clip (first, middle, last; see
``clips.sg3i_frames``) stacked as the 3 channels in time order, so an ImageNet-shaped
network sees motion as colour fringes. Grayscale is ``cv2.COLOR_RGB2GRAY``, as in the
flow stage.

On disk (``data/sg3i/``):

- ``sg3i-NNNNN.h5``: as many videos per file as the frames store holds (its
  ``videos_per_shard``), in id order; one dataset per video named by its zero-padded
  id: ``(C, H, W, 3) uint8`` for its C clips, one image per chunk, uncompressed (see
  ``COMPRESSION``); attribute ``n_clips``.
- ``meta.json``: ``{"layout", "params": {"clip": ...}, "counts", "videos": {"<id>":
  {"shard", "dataset", "clips"}}}``.

Every file is byte-deterministic: fixed HDF5 ``libver``, no timestamps, ids in order.
The shard writing and the lazy per-process reading are ``twostream.h5store``'s.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from twostream.clips import clip_starts, sg3i_frames
from twostream.config import ClipConfig, to_dict
from twostream.frames import FrameStore
from twostream.h5store import META_NAME, VideoShardWriter, VideoStore, clear_shards
from twostream.hmdb51 import read_index, write_json
from twostream.resample import read_resample

log = logging.getLogger(__name__)

SHARD_NAME = "sg3i-{:05d}.h5"
# Raw, as the shards stage keeps SG3I samples: on the demo's noisy 64x64 images gzip-1
# keeps 69% of the bytes but makes random reads 5x slower (measured for the shards).
COMPRESSION = None
LAYOUT = "(C, H, W, 3) uint8: per clip its first, middle, last grayscale frame as channels 0, 1, 2"


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


def times_to_channels(gray: np.ndarray) -> np.ndarray:
    """Stack time as channels: ``(..., 3, H, W)`` grayscale -> ``(..., H, W, 3)``."""
    return np.ascontiguousarray(np.moveaxis(gray, -3, -1))


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
    used = sorted({k for s in starts for k in sg3i_frames(s, clip.frames)})
    frames = np.zeros((len(kept), store.height, store.width, 3), np.uint8)  # unused ones stay 0
    if used:
        frames[used] = store.read(vid, kept[used])
    return sg3i_images(frames, clip)


def build_sg3i(index_path: str | os.PathLike, frames_dir: str | os.PathLike,
               resample_path: str | os.PathLike, out_dir: str | os.PathLike,
               clip: ClipConfig) -> dict[str, Any]:
    """Write the SG3I images of every clip of every video of ``resample.json``.

    Args:
        index_path: ``data/index.json`` (checks every id; paths for the log).
        frames_dir: the frames store.
        resample_path: ``data/resample.json``: the kept frames per video.
        out_dir: folder for ``sg3i-NNNNN.h5`` and ``meta.json`` (earlier shards are removed).
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
    out_dir = clear_shards(out_dir, SHARD_NAME)
    videos, n_clips = {}, 0
    with FrameStore(frames_dir) as store, \
            VideoShardWriter(out_dir, SHARD_NAME, int(store.params["videos_per_shard"])) as writer:
        for vid in tqdm(sorted(kept), desc="sg3i", unit="video"):
            images = video_sg3i(store, kept[vid], vid, clip)  # (C, H, W, 3) uint8
            entry = writer.add(vid, images, {"n_clips": np.int64(len(images))}, compression=COMPRESSION)
            videos[str(vid)] = {**entry, "clips": len(images)}
            n_clips += len(images)
    meta = {"layout": LAYOUT, "params": {"clip": to_dict(clip)}, "videos": videos,
            "counts": {"videos": len(videos), "clips": n_clips}}
    write_json(out_dir / META_NAME, meta)
    log.info("sg3i: %d clips of %d videos -> %s", n_clips, len(videos), out_dir)
    return meta


class SG3IStore(VideoStore):
    """Read access to the ``sg3i`` stage's folder.

    HDF5 files open lazily, one handle per shard per process (a store built before a fork
    opens its own handles in each child; see ``h5store.VideoStore``); it pickles without handles.
    """

    missing_message = "video {vid!r} is not in the SG3I store {root} ({n} videos)"

    def __init__(self, sg3i_dir: str | os.PathLike) -> None:
        """Read ``meta.json`` of ``sg3i_dir``.

        Raises:
            FileNotFoundError: if ``sg3i_dir`` has no ``meta.json``.
        """
        super().__init__(sg3i_dir)
        self.params: dict[str, Any] = self.meta["params"]

    def n_clips(self, vid: int) -> int:
        """Number of clips stored for video ``vid`` (no HDF5 access).

        Raises:
            KeyError: if the video is not stored.
        """
        return int(self._entry(vid)["clips"])

    def read(self, vid: int, clips: list[int] | np.ndarray | None = None) -> np.ndarray:
        """SG3I images of video ``vid``.

        Args:
            vid: video id.
            clips: clip numbers, any order, repeats allowed; None = all.

        Returns:
            ``(len(clips) or C, H, W, 3) uint8``.

        Raises:
            KeyError: if the video is not stored.
            IndexError: if a clip number is outside ``0..C-1``.
        """
        return self._read_rows(vid, clips, "clip")
