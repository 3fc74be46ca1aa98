"""Reading SG3I images: the ``sg3i`` stage's folder, and the image of three frames of the frames store.

An SG3I image is three grayscale frames of a clip (first, middle, last) stacked as the 3
channels in time order, so an ImageNet-shaped network sees motion as colour fringes
(Kim & Won 2020). Grayscale is the frames store's grayscale decode (``FrameStore.read_gray``:
a JPEG's own luma). The images are made when a sample is read (``sg3i_image``); the ``sg3i``
stage (``twostream.motion.sg3i``) writes only which frames make each clip's image, which
``SG3IStore`` reads: ``data/sg3i/meta.json`` ``{"layout", "params": {"clip": ...}, "frames":
<frames store, relative to this folder>, "counts", "videos": {"<id>": {"clips": C, "frames":
[[n0, n1, n2], ...]}}}`` with native frame numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from twostream.ingest.framestore import FrameStore
from twostream.ingest.h5store import META_NAME


def times_to_channels(gray: np.ndarray) -> np.ndarray:
    """Stack time as channels: ``(..., 3, H, W)`` grayscale -> ``(..., H, W, 3)``."""
    return np.ascontiguousarray(np.moveaxis(gray, -3, -1))


def sg3i_image(frames: FrameStore, vid: int, triple: list[int] | np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` SG3I image of the native frames ``triple`` (first, middle, last) of ``vid``:
    their grayscale as the frames store decodes it (``FrameStore.read_gray``) stacked as channels."""
    return times_to_channels(frames.read_gray(vid, triple))



class SG3IStore:
    """Read access to the ``sg3i`` stage's folder: SG3I images made from the frames store.

    The frames store opens its files lazily, a bounded number per process (see
    ``parts.EncodedItems``): safe to build before a fork, and it pickles without handles.
    """

    def __init__(self, sg3i_dir: str | os.PathLike, frames_dir: str | os.PathLike | None = None) -> None:
        """Read ``meta.json`` of ``sg3i_dir``; the frames store is the one it names, unless given.

        Raises:
            FileNotFoundError: if ``sg3i_dir`` has no ``meta.json``, or the frames store is missing.
        """
        self.root = Path(sg3i_dir)
        with open(self.root / META_NAME, encoding="utf-8") as f:
            self.meta: dict[str, Any] = json.load(f)
        self.params: dict[str, Any] = self.meta["params"]
        self._triples = {int(vid): v["frames"] for vid, v in self.meta["videos"].items()}
        self.frames = FrameStore(frames_dir if frames_dir is not None else self.root / self.meta["frames"])

    @property
    def video_ids(self) -> list[int]:
        """Ids of the videos with SG3I images, ascending."""
        return sorted(self._triples)

    def __len__(self) -> int:
        return len(self._triples)

    def __contains__(self, vid: object) -> bool:
        return vid in self._triples

    def triples(self, vid: int) -> list[list[int]]:
        """Per clip of ``vid``: the native frames of its image (first, middle, last).

        Raises:
            KeyError: if the video is not in the store.
        """
        try:
            return self._triples[vid]
        except KeyError:
            raise KeyError(f"video {vid!r} is not in the SG3I store {self.root} ({len(self)} videos)") from None

    def n_clips(self, vid: int) -> int:
        """Number of clips of video ``vid``.

        Raises:
            KeyError: if the video is not in the store.
        """
        return len(self.triples(vid))

    def read(self, vid: int, clips: list[int] | np.ndarray | None = None) -> np.ndarray:
        """SG3I images of video ``vid``.

        Args:
            vid: video id.
            clips: clip numbers, any order, repeats allowed; None = all.

        Returns:
            ``(len(clips) or C, H, W, 3) uint8``.

        Raises:
            KeyError: if the video is not in the store.
            IndexError: if a clip number is outside ``0..C-1``.
        """
        triples = self.triples(vid)
        numbers = range(len(triples)) if clips is None else [int(c) for c in np.asarray(clips).reshape(-1)]
        bad = [c for c in numbers if not 0 <= c < len(triples)]
        if bad:
            raise IndexError(f"clip indices of video {vid} must be in 0..{len(triples) - 1}; got {bad}")
        if not numbers:
            return np.empty((0, self.frames.height, self.frames.width, 3), np.uint8)
        return np.stack([sg3i_image(self.frames, vid, triples[c]) for c in numbers])

    def close(self) -> None:
        """Close this process's frame files (they reopen on the next read)."""
        self.frames.close()

    def __enter__(self) -> SG3IStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
