"""The bundled stand-in for HMDB-51: stick-figure action videos, in any layout the index reads.

``render_dataset`` writes XviD videos and the split or list files of ``demo_data.layout``
(``demolayouts``; by default HMDB-51's ``<out>/videos/<class>/<name>.avi`` and
``<out>/splits/<class>_test_split{1,2,3}.txt``). The data is built so that both
streams of a two-stream network are needed:

- time-reversed pairs (``sit_down``/``stand_up``, ``pick_up``/``put_down``) show the
  same frames in opposite order, so one frame cannot tell them apart;
- ``throw``/``shoot_ball`` move identically; only a bold static backboard marks
  ``shoot_ball`` (static, so optical flow sees it only through the small camera shake
  that moves the whole background);
- every other class differs in both its motion and its single-frame look.

Every video draws its randomness from ``SeedSequence([seed, class_index,
video_index])`` and is written by its own task, so the bytes do not depend on the
number of worker processes.
"""

from __future__ import annotations

import logging
import math
from statistics import NormalDist

import cv2
import numpy as np

from twostream.ingest import figure
from twostream.runtime.config import DemoConfig

log = logging.getLogger(__name__)

CLASSES = figure.CLASSES  # ordered: the first 8 hold both reversed pairs and the same-motion pair
MIN_CLASSES = 8
LUMA = np.array([0.299, 0.587, 0.114])
PAD = 3  # background margin in pixels that camera jitter reveals
NOISE_FIELDS = 8  # independent pixel-noise fields per video (each also used in its 4 flips)
def class_names(n: int) -> list[str]:
    """The first ``n`` demo classes, in dataset order.

    Raises:
        ValueError: if ``n`` is outside ``8..len(CLASSES)``.
    """
    if not MIN_CLASSES <= n <= len(CLASSES):
        raise ValueError(f"demo_data.classes must be in {MIN_CLASSES}..{len(CLASSES)}; got {n}")
    return list(CLASSES[:n])


def video_seeds(seed: int, class_index: int, video_index: int) -> tuple[np.random.SeedSequence, ...]:
    """The (name, render) seed sequences of one video, both from ``[seed, class, video]``."""
    return tuple(np.random.SeedSequence([seed, class_index, video_index]).spawn(2))


def _colour(rng: np.random.Generator, luma: float, chroma: float) -> np.ndarray:
    """RGB (float, 0..255) of about the given luma, with a random hue of the given strength."""
    d = rng.normal(size=3)
    d -= d @ LUMA
    d *= chroma / max(float(np.linalg.norm(d)), 1e-6)
    return np.clip(luma + d, 0, 255)


def _contrast_luma(rng: np.random.Generator, bg: float) -> float:
    """A luma at least 100 levels away from the background's mean luma ``bg``."""
    return rng.uniform(bg + 100, min(255.0, bg + 170)) if bg < 127.5 else rng.uniform(max(0.0, bg - 170), bg - 100)


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    """Static textured background: smooth noise plus stripes and blobs.

    Returns:
        ``(h, w, 3) float32`` RGB image whose luma stays within 45 of its mean, and that mean.
    """
    luma = rng.uniform(55, 200)
    img = np.empty((h, w, 3), np.float32)
    img[:] = _colour(rng, luma, rng.uniform(10, 60))
    for cells, amp in ((int(rng.integers(2, 5)), 28.0), (max(2, h // 8), 10.0)):
        small = rng.normal(0, amp, (cells, cells + 1, 3)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(1, 4))):  # stripes
        p, a = rng.uniform(0, [w, h]), rng.uniform(0, math.pi)
        d = 2 * (w + h) * np.array([math.cos(a), math.sin(a)])
        col = _colour(rng, luma + rng.uniform(-35, 35), rng.uniform(10, 50))
        cv2.line(img, tuple(np.round(p - d).astype(int)), tuple(np.round(p + d).astype(int)),
                 col.tolist(), int(rng.integers(3, 9)), cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4))):  # blobs
        centre = tuple(np.round(rng.uniform(0, [w, h])).astype(int))
        axes = tuple(int(v) for v in rng.integers(4, max(6, h // 4), 2))
        col = _colour(rng, luma + rng.uniform(-35, 35), rng.uniform(10, 50))
        cv2.ellipse(img, centre, axes, rng.uniform(0, 180), 0, 360, col.tolist(), -1, cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    dev = img @ LUMA.astype(np.float32) - luma
    img = luma + (img - luma) * min(1.0, 45.0 / max(float(np.abs(dev).max()), 1e-6))
    return np.clip(img, 0, 255), luma


def _jitter(rng: np.random.Generator, n: int) -> np.ndarray:
    """Camera shake: a slow random walk of 1..2 px at most, ``(n, 2)`` pixels in 1/4 px steps."""
    walk = np.cumsum(rng.normal(size=(n + 8, 2)), axis=0)
    walk = np.stack([np.convolve(walk[:, i], np.ones(9) / 9, mode="valid") for i in (0, 1)], axis=1)[:n]
    walk -= walk.mean(axis=0)
    walk *= rng.uniform(1.0, 2.0) / max(float(np.abs(walk).max()), 1e-6)
    return np.round(walk * 4) / 4


def _layout(rng: np.random.Generator, poses: np.ndarray, extra: np.ndarray, w: int, h: int):
    """Random size, facing and place of the figure so that all of its motion stays in frame.

    Args:
        poses: ``(T, J, 2)`` joints in figure units; ``extra``: ``(N, 2)`` more points (props).

    Returns:
        ``(scale px per figure unit, facing +1 | -1, (2,) pixel position of the figure origin)``.
    """
    pts = np.concatenate([poses.reshape(-1, 2), extra.reshape(-1, 2)])
    x0, y0 = pts.min(axis=0) - [0.12, 0.06]
    x1, y1 = pts.max(axis=0) + [0.12, 0.12]
    scale = min(rng.uniform(0.5, 0.8) * h, 0.999 * (w - 2) / (x1 - x0), 0.999 * (h - 2) / (y1 - y0))
    facing = 1 if rng.uniform() < 0.5 else -1
    lo, hi = (1 - scale * x0, w - 1 - scale * x1) if facing > 0 else (1 + scale * x1, w - 1 + scale * x0)
    anchor = np.array([rng.uniform(lo, hi), rng.uniform(1 + scale * y1, h - 1 + scale * y0)])
    return scale, facing, anchor


def _backboard(rng: np.random.Generator, img: np.ndarray, facing: int, luma: float, w: int, h: int) -> None:
    """Draw a bold basketball backboard, hoop and pole on the side the figure faces (in place)."""
    bw, bh = rng.uniform(0.16, 0.22) * w, rng.uniform(0.24, 0.32) * h
    x0 = w - rng.uniform(1, 0.06 * w) - bw if facing > 0 else rng.uniform(1, 0.06 * w)
    y0 = rng.uniform(1, 0.15 * h)
    box = np.array([x0, y0, x0 + bw, y0 + bh]) + PAD
    outer = box[2] if facing > 0 else box[0]
    pole = max(4, round(0.05 * w))
    cv2.line(img, (int(outer), int(box[3])), (int(outer), h + 2 * PAD), (128.0, 128.0, 128.0), pole)
    board = _colour(rng, _contrast_luma(rng, luma), rng.uniform(60, 110)).tolist()
    cv2.rectangle(img, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), board, -1)
    edge = (255.0, 255.0, 255.0) if luma < 127.5 else (0.0, 0.0, 0.0)
    cv2.rectangle(img, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), edge, 2)
    cx, cy = (box[0] + box[2]) / 2, box[3] - 0.3 * bh
    cv2.rectangle(img, (int(cx - 0.22 * bw), int(cy - 0.22 * bh)), (int(cx + 0.22 * bw), int(box[3] - 2)),
                  (220.0, 30.0, 30.0), 2)
    hoop = (int(cx - facing * 0.1 * bw), int(box[3] + 2))
    cv2.ellipse(img, hoop, (int(0.35 * bw), max(2, int(0.05 * h))), 0, 0, 360, (255.0, 120.0, 0.0), 3)


_Z = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)])  # Gaussian quantiles


def _noise_bank(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian pixel noise (sigma 3..6 levels) for a video, as saturating uint8 parts.

    ``NOISE_FIELDS`` fields of independent per-pixel noise, each in its four flips, so a
    frame can draw one of ``4 * NOISE_FIELDS`` fields (cheaper than fresh noise per frame).
    A byte per pixel indexes the 256 Gaussian quantiles.

    Returns:
        ``(up, down)``, each ``(4 * NOISE_FIELDS, h, w, 3) uint8``: noise = up - down.
    """
    noise = np.round(rng.uniform(3.0, 6.0) * _Z)
    n = NOISE_FIELDS * h * w * 3
    idx = rng.bit_generator.random_raw(n // 8 + 1).view(np.uint8)[:n].reshape(NOISE_FIELDS * h, w * 3)
    parts = []
    for lut in (np.maximum(noise, 0), np.maximum(-noise, 0)):
        fields = cv2.LUT(idx, lut.astype(np.uint8)).reshape(NOISE_FIELDS, h, w, 3)
        parts.append(np.stack([f if code is None else cv2.flip(f, code) for code in (None, 0, 1, -1) for f in fields]))
    return parts[0], parts[1]


def _shifted(layer: np.ndarray, cache: dict, q: np.ndarray, w: int, h: int) -> np.ndarray:
    """``layer`` seen through a camera offset by ``q`` px (a view of a cached sub-pixel shift)."""
    iq = np.floor(q).astype(int)
    key = tuple(q - iq)
    if key not in cache:
        m = np.float32([[1, 0, key[0]], [0, 1, key[1]]])
        cache[key] = cv2.warpAffine(layer, m, layer.shape[1::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_REFLECT)
    return cache[key][iq[1]:iq[1] + h, iq[0]:iq[0] + w]


def _scene(rng: np.random.Generator, cls: str, motion: figure.Motion, poses: np.ndarray, w: int, h: int):
    """Static layer (background and props) and the figure's joints in pixels.

    Returns:
        ``(layer (h + 2 PAD, w + 2 PAD, 3) uint8, joints (T, J, 2) px, boxes (T, 2) px or None,
        colours (figure, far limbs, props), limb px, head px, box half size px)``.
    """
    segs = np.array(figure.props(cls, motion), float).reshape(-1, 4)
    held = [figure.held_box(cls, p) for p in poses]
    boxes = np.array(held) if held[0] is not None else None
    extra = [segs.reshape(-1, 2)] + ([boxes - figure.BOX, boxes + figure.BOX] if boxes is not None else [])
    bg, luma = _background(rng, h + 2 * PAD, w + 2 * PAD)
    # a muted figure and strongly coloured props, both far from the background's luma
    colour = _colour(rng, _contrast_luma(rng, luma), rng.uniform(10, 60))
    far, prop = 0.85 * colour + 0.15 * luma, _colour(rng, _contrast_luma(rng, luma), rng.uniform(100, 160))
    scale, facing, anchor = _layout(rng, poses, np.concatenate(extra), w, h)
    sx = np.array([facing * scale, -scale])  # figure units -> pixels (y down)
    limb, head = max(4, round(0.075 * scale)), max(3, round(1.1 * figure.HEAD_R * scale))
    if len(segs):
        figure.draw_segments(bg, np.concatenate([anchor + segs[:, :2] * sx, anchor + segs[:, 2:] * sx], 1) + PAD,
                             prop.tolist(), limb)
    if cls == "shoot_ball":
        _backboard(rng, bg, facing, luma, w, h)
    colours = tuple(tuple(float(v) for v in c) for c in (colour, far, prop))
    boxes_px = anchor + boxes * sx if boxes is not None else None
    half = np.array(figure.BOX) * scale
    return np.round(bg).astype(np.uint8), anchor + poses * sx, boxes_px, colours, limb, head, half


def render_video(cls: str, cfg: DemoConfig, ss: np.random.SeedSequence) -> np.ndarray:
    """Render one video of class ``cls``.

    Args:
        cls: class name from ``CLASSES``.
        cfg: size, length and rate of the video.
        ss: the video's render seed (see ``video_seeds``).

    Returns:
        ``(T, H, W, 3) uint8`` RGB frames, ``T = round(seconds * fps)``.
    """
    rng = np.random.default_rng(ss)
    w, h, n = cfg.width, cfg.height, round(cfg.seconds * cfg.fps)
    motion = figure.sample_motion(cls, rng, cfg.seconds)
    poses = np.stack([figure.pose(cls, k / max(n - 1, 1), motion) for k in range(n)])
    layer, joints, boxes, colours, limb, head, half = _scene(rng, cls, motion, poses, w, h)
    jitter = _jitter(rng, n)
    up, down = _noise_bank(rng, h, w)
    fields = rng.integers(0, len(up), n)
    video, cache = np.empty((n, h, w, 3), np.uint8), {}
    for k in range(n):
        frame = video[k]
        frame[:] = _shifted(layer, cache, PAD - jitter[k], w, h)
        if boxes is not None:
            figure.draw_box(frame, boxes[k] + jitter[k], half, colours[2], colours[1])
        figure.draw_figure(frame, joints[k] + jitter[k], colours[0], colours[1], limb, head)
        cv2.add(frame, up[fields[k]], dst=frame)
        cv2.subtract(frame, down[fields[k]], dst=frame)
    return video
