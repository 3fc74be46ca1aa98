"""Reading the ``flow`` stage's store, and the quantisation its fields are stored in.

What the store holds (``data/flow/``; written by ``twostream.motion.flow``):

- ``parts/<class>/<file name>.h5``: one file per video of ``data/resample.json``, named by
  its stable id (the index record's ``key``), holding the quantised flow (``quantize``) of
  the ``P`` pairs some clip needs: ``(P, H, W, 2) uint8`` when read, channel 0 = x
  right-positive, 1 = y down-positive, zero motion = 128. Each field (x, then y, of every
  pair) is one grayscale image encoded on its own (``codec``: JPEG, as denseflow stores
  flow, or lossless PNG). Datasets ``data`` ``(B,) uint8`` (the encoded fields back to back)
  and ``offsets`` ``(2P + 1,) int64``; attributes ``pairs``: ``(P,) int64`` first resampled
  frame ``k`` of each pair ``(k, k + 1)``, increasing, ``codec``, and ``part_key``.
- ``meta.json``: ``{"layout", "quantisation", "storage", "params", "clip", "width",
  "height", "videos": {"<id>": {"shard", "dataset", "stamp", "pairs"}}}``.

This module is what the stages after ``flow`` (and training, through the samples) need of the
store, and nothing of how flow is computed (TV-L1, pools, executors), so that a change to
the computing code re-runs no reader.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from twostream.ingest.codec import decode_image
from twostream.ingest.h5store import EncodedItems, VideoStore

LAYOUT = ("per video: data (B,) uint8 encoded fields back to back, x then y of each pair; offsets (2P + 1,) "
          "int64; read as (P, H, W, 2) uint8, channel 0 = x (right +), 1 = y (down +); attribute pairs (P,) int64")
QUANTISATION = "q = floor(255 * (clip(v, -bound, bound) + bound) / (2 * bound) + 0.5); zero = 128"


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """Quantise flow like denseflow: ``floor(255 * (clip(v, -b, b) + b) / (2b) + 0.5)``.

    Zero motion maps to 128, ``-b`` to 0, ``+b`` to 255; the step is ``2b / 255``.

    Args:
        flow: ``(..., 2) float32`` displacements in pixels.
        bound: ``b > 0``, in pixels.

    Returns:
        ``uint8`` array of the same shape.

    Raises:
        ValueError: if ``bound`` is not positive or the flow has a NaN or infinity.
    """
    if not bound > 0:
        raise ValueError(f"flow.bound must be > 0; got {bound!r}")
    flow = np.asarray(flow, dtype=np.float32)
    if not np.isfinite(flow).all():
        raise ValueError(f"flow has {int((~np.isfinite(flow)).sum())} non-finite values")
    scaled = (np.clip(flow, -bound, bound) + np.float32(bound)) * np.float32(255 / (2 * bound))
    return np.floor(scaled + np.float32(0.5)).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float) -> np.ndarray:
    """Inverse of ``quantize``: ``q * 2b / 255 - b`` (error <= ``b / 255`` inside the bound).

    Args:
        q: ``(..., 2) uint8`` quantised flow.
        bound: the ``b`` it was quantised with.

    Returns:
        ``float32`` array of the same shape, in pixels.

    Raises:
        ValueError: if ``bound`` is not positive.
    """
    if not bound > 0:
        raise ValueError(f"flow.bound must be > 0; got {bound!r}")
    return np.asarray(q, dtype=np.float32) * np.float32(2 * bound / 255) - np.float32(bound)



class FlowStore(VideoStore):
    """Read access to the ``flow`` stage's output folder.

    Part files open lazily, a bounded number per process, as ``FrameStore``'s do (see
    ``EncodedItems``): safe to build before a fork, and it pickles without handles.
    """

    missing_message = ("video {vid!r} has no flow in {root} ({n} videos stored; "
                       "failed ones are listed in the flow report)")

    def __init__(self, flow_dir: str | os.PathLike) -> None:
        """Read ``meta.json`` of ``flow_dir``.

        Raises:
            FileNotFoundError: if ``flow_dir`` has no ``meta.json``.
        """
        super().__init__(flow_dir)
        self.params: dict[str, Any] = self.meta["params"]
        self.bound: float = float(self.params["bound"])
        self.stack: int = int(self.params["stack"])
        self.width: int = self.meta["width"]
        self.height: int = self.meta["height"]
        self._rows = {vid: {k: row for row, k in enumerate(v["pairs"])} for vid, v in self._videos.items()}
        self._items = EncodedItems(self.root)  # the encoded fields, read without HDF5 calls

    def pairs(self, vid: int) -> list[int]:
        """First resampled frames ``k`` of the stored pairs ``(k, k + 1)`` of ``vid``, increasing.

        Raises:
            KeyError: if the video has no stored flow.
        """
        return list(self._entry(vid)["pairs"])

    def read(self, vid: int, pairs: list[int] | np.ndarray) -> np.ndarray:
        """Quantised flow of some pairs of a video (``dequantize(q, store.bound)`` for pixels).

        Args:
            vid: video id.
            pairs: first resampled frames ``k`` of the pairs ``(k, k + 1)``; any order, repeats allowed.

        Returns:
            ``(len(pairs), H, W, 2) uint8``; channel 0 = x, 1 = y; 128 = no motion.

        Raises:
            KeyError: if the video, or one of the pairs, is not stored (names it).
        """
        stored = self.pairs(vid)
        rows_of = self._rows[vid]
        missing = [int(k) for k in pairs if int(k) not in rows_of]
        if missing:
            raise KeyError(f"video {vid} has no stored flow pair(s) {missing}; stored pairs: {stored}")
        part = self._entry(vid)["shard"]
        out = np.empty((len(pairs), self.height, self.width, 2), np.uint8)
        for n, k in enumerate(pairs):
            for c in (0, 1):  # field 2 * row + c: x, then y
                out[n, ..., c] = decode_image(self._items.read(part, 2 * rows_of[int(k)] + c), gray=True)
        return out

    def close(self) -> None:
        """Close this process's files (they reopen on the next read)."""
        super().close()
        self._items.close()
