"""Reading the ``frames`` stage's store: ``FrameStore`` gives a video's stored frames by native number.

What the store holds (``data/frames/``; written by ``twostream.ingest.frames``):

- ``parts/<class>/<file name>.h5``: one file per video, named by its stable id (the index
  record's ``key``), holding the native frames ``resample.fps`` keeps
  (``clips.resample_indices``; every frame at ``resample.fps`` 0) at the working size, each
  encoded on its own (``codec``: JPEG or lossless PNG). Datasets: ``data`` ``(B,) uint8``,
  the encoded frames back to back; ``offsets`` ``(S + 1,) int64``, where stored frame ``s``
  starts and ends in ``data``. Attributes: ``fps`` (native rate), ``n_frames`` (native
  frames decoded), ``codec``, ``warnings`` (ffmpeg's errors for a video that still decoded
  whole, JSON), ``part_key`` (``parts.part_key``).
- ``meta.json``: ``{"layout", "storage", "params", "resample_fps", "videos": {"<id>":
  {"shard", "dataset", "key", "stamp", "fps", "n_frames", "n_stored"}}}`` with ``<id>`` the
  video's position in the index (what the later stages and the shards number videos by).

This module is what the stages after ``frames`` (and training, through the samples) need of
the store, and nothing of how it is made (decoding, pools, executors), so that a change to
the making code re-runs no reader.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from twostream.ingest.clips import resample_indices
from twostream.ingest.codec import decode_image
from twostream.ingest.h5store import EncodedItems, VideoStore

LAYOUT = "per video: data (B,) uint8 encoded RGB frames back to back, offsets (S + 1,) int64"


class FrameInfo(NamedTuple):
    """What the store knows of a video without reading its frames."""

    fps: float  # native frame rate; frame i is at i / fps seconds
    n_frames: int  # native frames decoded


def decode_frame(data: np.ndarray, gray: bool = False) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB frame from the bytes ``encode_frame`` made (``(n,) uint8``), or with
    ``gray`` its ``(H, W) uint8`` grayscale as the decoder gives it (a JPEG's own luma: about twice
    as fast as decoding colour, and what SG3I images are made of)."""
    return decode_image(data, gray)



class FrameStore(VideoStore):
    """Read access to the ``frames`` stage's output folder, by native frame number.

    Part files open lazily, a bounded number per process (see ``EncodedItems``): safe to
    build before a fork (DataLoader or pool workers), and it pickles without handles.
    """

    missing_message = ("video {vid!r} is not in {root} ({n} videos stored; failed and "
                       "skipped ones are listed in the frames report)")

    def __init__(self, frames_dir: str | os.PathLike) -> None:
        """Read ``meta.json`` of ``frames_dir``.

        Raises:
            FileNotFoundError: if ``frames_dir`` has no ``meta.json``.
        """
        super().__init__(frames_dir)
        self.params: dict[str, Any] = self.meta["params"]
        self.width: int = self.params["width"]
        self.height: int = self.params["height"]
        self.resample_fps: float = float(self.meta["resample_fps"])
        self._rows: dict[int, dict[int, int]] = {}  # per video: native frame number -> stored row
        self._items = EncodedItems(self.root)

    def info(self, vid: int) -> FrameInfo:
        """``FrameInfo(fps, n_frames)`` of video ``vid`` (no HDF5 access).

        Raises:
            KeyError: if the video is not stored.
        """
        entry = self._entry(vid)
        return FrameInfo(float(entry["fps"]), int(entry["n_frames"]))

    def stored_indices(self, vid: int) -> np.ndarray:
        """``(S,) int64`` native numbers of the frames stored for ``vid``, increasing."""
        info = self.info(vid)
        return resample_indices(info.n_frames, info.fps, self.resample_fps)

    def read_gray(self, vid: int, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """``(len(indices) or S, H, W) uint8`` grayscale frames of video ``vid`` as the decoder gives
        them (``decode_frame(..., gray=True)``); arguments and errors as ``read``'s."""
        return self.read(vid, indices, gray=True)

    def read(self, vid: int, indices: np.ndarray | list[int] | None = None, gray: bool = False) -> np.ndarray:
        """Frames of video ``vid``, decoded.

        Args:
            vid: video id.
            indices: native frame numbers, any order, repeats allowed, each one the store
                holds (``stored_indices``); None = every stored frame.
            gray: decode to grayscale (``read_gray``).

        Returns:
            ``(len(indices) or S, H, W, 3) uint8`` RGB frames (``(..., H, W)`` with ``gray``).

        Raises:
            KeyError: if the video is not stored.
            IndexError: if a frame is not stored (outside the video or not kept at ``resample_fps``).
        """
        if vid not in self._rows:
            self._rows[vid] = {int(n): row for row, n in enumerate(self.stored_indices(vid))}
        rows_of = self._rows[vid]
        wanted = list(rows_of.values()) if indices is None else [int(i) for i in np.asarray(indices).reshape(-1)]
        if indices is not None:
            bad = [i for i in wanted if i not in rows_of]
            if bad:
                raise IndexError(f"frames {bad} of video {vid} are not stored: it holds the "
                                 f"{len(rows_of)} native frames kept at {self.resample_fps:g} fps of "
                                 f"{self.info(vid).n_frames}")
            wanted = [rows_of[i] for i in wanted]
        part = self._entry(vid)["shard"]
        out = np.empty((len(wanted), self.height, self.width, *(() if gray else (3,))), np.uint8)
        for n, row in enumerate(wanted):
            out[n] = decode_frame(self._items.read(part, row), gray)
        return out

    def close(self) -> None:
        """Close this process's files (they reopen on the next read)."""
        super().close()
        self._items.close()
