"""Pictures of optical flow: the Middlebury colour wheel and HSV colour coding."""

from __future__ import annotations

import numpy as np


def colour_wheel() -> np.ndarray:
    """The Middlebury flow colour wheel: 55 hues red, yellow, green, cyan, blue, magenta.

    Returns:
        ``(55, 3) float32`` RGB in 0..1; entry 0 is red, the hue of rightward motion.
    """
    keys = [(1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1), (1, 0, 1), (1, 0, 0)]
    steps = [15, 6, 4, 11, 13, 6]  # Middlebury's segment lengths (perceptually even-ish)
    ramps = [np.array(a, np.float32) + np.outer(np.arange(n) / n, np.subtract(b, a)).astype(np.float32)
             for a, b, n in zip(keys, keys[1:], steps)]
    return np.concatenate(ramps).astype(np.float32)


def flow_to_hsv(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow field (Middlebury style): hue = direction, saturation = magnitude.

    Zero motion is white; a motion of ``max_magnitude`` has the wheel's full colour
    (rightward red); faster motion is the full colour darkened to 75%.

    Args:
        flow: ``(H, W, 2) float32``, x right-positive, y down-positive.
        max_magnitude: magnitude of full saturation; None = the field's largest (or 1
            if it is all zero).

    Returns:
        ``(H, W, 3) uint8`` RGB.

    Raises:
        ValueError: if ``flow`` is not ``(H, W, 2)`` or ``max_magnitude`` is not positive.
    """
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be (H, W, 2); got {flow.shape}")
    u, v = flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32)
    magnitude = np.hypot(u, v)
    if max_magnitude is None:
        max_magnitude = float(magnitude.max()) or 1.0
    if not max_magnitude > 0:
        raise ValueError(f"max_magnitude must be > 0 or None; got {max_magnitude!r}")
    wheel = colour_wheel()
    n = len(wheel)
    position = (np.arctan2(-v, -u) / np.pi + 1) / 2 * n  # 0 (and n) = rightward
    k0 = np.floor(position).astype(np.int64) % n
    frac = (position - np.floor(position))[..., None]
    hue = (1 - frac) * wheel[k0] + frac * wheel[(k0 + 1) % n]
    radius = (magnitude / np.float32(max_magnitude))[..., None]
    colour = np.where(radius <= 1, 1 - radius * (1 - hue), hue * 0.75)
    return np.floor(255 * colour + 0.5).astype(np.uint8)
