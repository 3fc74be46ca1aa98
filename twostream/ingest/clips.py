"""Clips: which resampled frames each clip, its SG3I image and its flow stack use.

At ``resample.fps`` a clip is ``clip.frames`` consecutive resampled frames; clips start
every ``clip.step`` resampled frames (the seed project's "mode 2"). All indices here
are positions in a video's list of resampled frames, not native frame numbers.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterator

import numpy as np


def clip_starts(n_kept: int, frames: int, step: int) -> list[int]:
    """First resampled frame of every clip of a video.

    Args:
        n_kept: number of resampled frames of the video.
        frames: frames per clip (``clip.frames``).
        step: frames between clip starts (``clip.step``).

    Returns:
        ``[0, step, 2*step, ...]`` for every clip that fits entirely in the video.

    Raises:
        ValueError: if ``frames`` or ``step`` is below 1.
    """
    if frames < 1 or step < 1:
        raise ValueError(f"clip.frames and clip.step must be >= 1; got {frames}, {step}")
    return list(range(0, n_kept - frames + 1, step))


def middle_frame(start: int, frames: int) -> int:
    """Resampled frame the spatial stream sees: the clip's middle one."""
    return start + frames // 2


def sg3i_frames(start: int, frames: int) -> tuple[int, int, int]:
    """The three frames of an SG3I image in time order: first, middle and last of the clip.

    Raises:
        ValueError: if the clip has fewer than 3 frames.
    """
    if frames < 3:
        raise ValueError(f"SG3I needs clip.frames >= 3; got {frames}")
    return start, start + frames // 2, start + frames - 1


def flow_pairs(start: int, frames: int, stack: int) -> list[int]:
    """First frame ``k`` of each of the ``stack`` flow pairs ``(k, k + 1)`` of a clip.

    The pairs are consecutive and centred in the clip.

    Raises:
        ValueError: if ``stack`` is below 1 or the clip has too few frames for it.
    """
    if not 1 <= stack <= frames - 1:
        raise ValueError(f"flow.stack must be in 1..clip.frames-1 = 1..{frames - 1}; got {stack}")
    first = start + (frames - 1 - stack) // 2
    return list(range(first, first + stack))


def needed_pairs(n_kept: int, frames: int, step: int, stack: int) -> list[int]:
    """Sorted first frames of every flow pair some clip of the video uses."""
    return sorted({k for s in clip_starts(n_kept, frames, step) for k in flow_pairs(s, frames, stack)})


def resample_indices(n_frames: int, src_fps: float, fps: float) -> np.ndarray:
    """Native frame indices kept when resampling to ``fps``.

    ``i_k = floor(k * src_fps / fps + 0.5)`` for ``k = 0, 1, ...`` while ``i_k < n_frames``:
    30 -> 6 fps keeps 0, 5, 10, ...; 25 -> 6 fps keeps the frames nearest k/6 s
    (0, 4, 8, 13, 17, 21, 25, ...). ``fps == 0`` or ``fps >= src_fps`` keeps every frame.

    Args:
        n_frames: frames of the video (>= 0).
        src_fps: its native frame rate (> 0).
        fps: target rate (>= 0; 0 = every frame).

    Returns:
        ``(K,) int64`` strictly increasing indices.

    Raises:
        ValueError: on a negative count or rate, or a non-positive ``src_fps``.
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0; got {n_frames}")
    if not src_fps > 0:
        raise ValueError(f"src_fps must be > 0; got {src_fps}")
    if fps < 0:
        raise ValueError(f"fps must be >= 0 (0 = every frame); got {fps}")
    if fps == 0 or fps >= src_fps:
        return np.arange(n_frames, dtype=np.int64)
    k = np.arange(n_frames, dtype=np.float64)  # i_k >= k, so k < n_frames covers every kept frame
    # multiply before dividing: exact for integer rates (30 -> 6 gives 5k exactly)
    indices = np.floor(k * src_fps / fps + 0.5).astype(np.int64)
    return indices[indices < n_frames]


def kept_stream(src_fps: float, fps: float) -> Iterator[int]:
    """``resample_indices`` as an endless increasing sequence, for a decoder that does not know
    the frame count yet: the same numbers, by the same float64 arithmetic, in the same order."""
    if not src_fps > 0:
        raise ValueError(f"src_fps must be > 0; got {src_fps}")
    if fps < 0:
        raise ValueError(f"fps must be >= 0 (0 = every frame); got {fps}")
    every = fps == 0 or fps >= src_fps
    for k in itertools.count():
        yield k if every else math.floor(k * src_fps / fps + 0.5)
