"""Training samples by reference: what a clip's sample is per modality, and where it is read from.

A sample of the ``shards`` stage is not a copy of pixels but a reference into a store,
one row of ``ref`` per clip (``clip_refs``):

- ``rgb``: ``[n]``, the native number of the clip's middle frame, in the frames store;
- ``sg3i``: ``[n0, n1, n2]``, the native numbers of its first, middle and last frame, in
  the frames store (their grayscale stacked as channels: ``sg3i_image``);
- ``flow``: ``[k0, ..., kL-1]``, its ``flow.stack`` pairs ``(k, k + 1)`` of resampled frames,
  in the flow store (x and y interleaved as ``2L`` channels: ``pairs_to_channels``).

``SampleReader`` turns a reference back into the ``(H, W, C) uint8`` sample, by the same
functions the shards stage's previews and ``predict`` use, so a network sees the same bytes
wherever its input comes from. Copies would cost more than the stores themselves at real
size (a raw 340x256 RGB sample is 255 KiB, one per clip; docs/storage.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from twostream.ingest.clips import flow_pairs, middle_frame
from twostream.motion.flowstore import FlowStore
from twostream.ingest.framestore import FrameStore
from twostream.motion.sg3istore import sg3i_image

MODALITIES = ("rgb", "sg3i", "flow")
ROLES = ("train", "val", "test")  # the roles that have shards
STORE_OF = {"rgb": "frames", "sg3i": "frames", "flow": "flow"}  # modality -> the store its refs point into


def pairs_to_channels(flow: np.ndarray) -> np.ndarray:
    """Interleave a flow stack as channels: ``(..., L, H, W, 2)`` -> ``(..., H, W, 2L)``.

    Channel ``2l`` is field ``l``'s x, channel ``2l + 1`` its y (x0, y0, x1, y1, ...).
    """
    moved = np.moveaxis(flow, -4, -2)  # (..., H, W, L, 2)
    return np.ascontiguousarray(moved).reshape(*moved.shape[:-2], -1)


def channels_to_pairs(x: np.ndarray) -> np.ndarray:
    """Inverse of ``pairs_to_channels``: ``(..., H, W, 2L)`` -> ``(..., L, H, W, 2)``."""
    split = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)  # (..., H, W, L, 2)
    return np.ascontiguousarray(np.moveaxis(split, -2, -4))


def clip_refs(kept: np.ndarray, starts: list[int], triples: list[list[int]], frames: int,
              stack: int) -> dict[str, np.ndarray]:
    """The reference of every clip of one video, per modality.

    Args:
        kept: ``(K,) int64`` native numbers of the video's resampled frames.
        starts: first resampled frame of each clip (``clips.clip_starts``).
        triples: per clip the native frames of its SG3I image (``SG3IStore.triples``).
        frames, stack: ``clip.frames`` and ``flow.stack`` (L).

    Returns:
        ``{"rgb": (C, 1), "sg3i": (C, 3), "flow": (C, L)}`` int64.
    """
    n = len(starts)
    return {"rgb": np.asarray([[kept[middle_frame(s, frames)]] for s in starts], np.int64).reshape(n, 1),
            "sg3i": np.asarray(triples, np.int64).reshape(n, 3),
            "flow": np.asarray([flow_pairs(s, frames, stack) for s in starts], np.int64).reshape(n, stack)}


class SampleReader:
    """``(H, W, C) uint8`` samples of one modality from references into its store.

    The store opens its files lazily, a bounded number per process: safe to build before a
    fork (DataLoader workers), and it pickles without handles.
    """

    def __init__(self, modality: str, store_dir: str | os.PathLike) -> None:
        """Open the store of ``modality`` at ``store_dir`` (its ``meta.json`` only).

        Raises:
            ValueError: on an unknown modality.
            FileNotFoundError: if the store is missing.
        """
        if modality not in STORE_OF:
            raise ValueError(f"modality must be one of {', '.join(STORE_OF)}; got {modality!r}")
        self.modality, self.root = modality, Path(store_dir)
        self.store: FrameStore | FlowStore = (FlowStore if modality == "flow" else FrameStore)(store_dir)

    def read(self, vid: int, ref: np.ndarray | list[int]) -> np.ndarray:
        """The sample ``ref`` of video ``vid``: ``(H, W, 3)`` for rgb and sg3i, ``(H, W, 2L)`` for flow."""
        ref = [int(r) for r in ref]
        if self.modality == "rgb":
            return self.store.read(vid, ref)[0]
        if self.modality == "sg3i":
            return sg3i_image(self.store, vid, ref)
        return pairs_to_channels(self.store.read(vid, ref))  # (L, H, W, 2) -> (H, W, 2L)

    def stamps(self, vids: list[int]) -> dict[str, Any]:
        """The part stamps of ``vids`` in the store: what the samples' bytes follow from."""
        return {str(v): self.store.meta["videos"][str(v)].get("stamp") for v in vids}

    def close(self) -> None:
        """Close this process's store files (they reopen on the next read)."""
        self.store.close()
