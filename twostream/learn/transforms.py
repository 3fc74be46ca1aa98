"""Sample transforms: ``(H, W, C) uint8`` shard sample -> ``(C, crop, crop) float32`` tensor.

Two presets, side by side:

- ``train_preset``: a random window, normalise, horizontal flip with p 0.5. The window is
  ``crop x crop`` anywhere (``augment: crop``) or TSN's multi-scale one (``multiscale``): each
  side a fraction ``SCALES`` of the short side, the two at most one step apart (aspect
  jitter), at one of 13 fixed places (corners, centre, ...), resized to ``crop x crop``;
- ``eval_preset``: centre ``crop x crop`` window, normalise; ``Preset.views`` gives the 1, 3
  or 10 test-time crops of a sample (``view_windows``).

A ``Window`` is drawn once (``Preset.draw``) and applied (``Preset.apply``), so the snippets
of one video can share it. A flow window is the same on every channel; resized, its x and
y are multiplied by the resize factors, so the values stay pixels of the network's input.

Normalisation per modality (``normalize``):

- ``rgb`` and ``sg3i``: ``0..255 -> 0..1``, then ImageNet's mean/std per channel (SG3I's
  three time channels take the R, G, B constants), as ImageNet-initialised trunks expect.
- ``flow``: quantised ``q`` -> ``(q - FLOW_ZERO) * (2 * bound / 255) / scale``: pixels of
  motion measured from ``FLOW_ZERO = 128``, the code ``flow.quantize`` gives zero motion,
  so a still pixel enters the network as exactly 0 and a horizontal flip (which negates
  x) leaves it 0. ``scale`` is not a constant: it is the RMS of these values over the
  train split's flow (``flow_rms``), fitted by the train stage and stored in the
  checkpoint, because it grows with the working size and the frame rate (the 64 px demo
  at 6 fps: ~0.3 px; HMDB-51 at 340x256 and 6 fps: mean magnitude ~3.4 px).

A horizontal flip of a flow stack mirrors the image and negates its x channels (even
channel indices: x0, y0, x1, y1, ...): leftward motion becomes rightward.
Randomness comes only from torch's global RNG, which DataLoader seeds per worker.

``normalize`` and ``hflip`` are the plain tensor forms; a ``Preset`` gives their values bit
for bit but flips the uint8 window and folds the flow flip's negation into the multiplier,
so a sample costs one uint8 gather and one float pass (``python -m twostream.bench loader
--size 340x256`` measures it; docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

MODALITIES = ("rgb", "sg3i", "flow")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_ZERO = 128  # flow.quantize(0): the code of zero motion


def hwc_to_chw(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``(H, W, C)`` -> ``(C, H, W)``, a view of an ndarray or a tensor."""
    return x.permute(2, 0, 1) if isinstance(x, torch.Tensor) else x.transpose(2, 0, 1)


def _check_crop(height: int, width: int, crop: int) -> None:
    if not 1 <= crop <= min(height, width):
        raise ValueError(f"crop must be in 1..{min(height, width)} for a {height}x{width} sample; got {crop}")


def random_offsets(height: int, width: int, crop: int) -> tuple[int, int]:
    """``(top, left)`` of a uniformly placed ``crop x crop`` window, from torch's RNG (top first).

    Raises:
        ValueError: on a crop larger than the sample.
    """
    _check_crop(height, width, crop)
    return int(torch.randint(height - crop + 1, ())), int(torch.randint(width - crop + 1, ()))


def centre_offsets(height: int, width: int, crop: int) -> tuple[int, int]:
    """``(top, left)`` of the central ``crop x crop`` window (odd margins round down at top/left).

    Raises:
        ValueError: on a crop larger than the sample.
    """
    _check_crop(height, width, crop)
    return (height - crop) // 2, (width - crop) // 2


def random_crop(x: np.ndarray, crop: int) -> np.ndarray:
    """A uniformly placed ``crop x crop`` window of ``(H, W, C)`` (a view; ``random_offsets``)."""
    top, left = random_offsets(x.shape[0], x.shape[1], crop)
    return x[top:top + crop, left:left + crop]


def center_crop(x: np.ndarray, crop: int) -> np.ndarray:
    """The central ``crop x crop`` window of ``(H, W, C)`` (a view; ``centre_offsets``)."""
    top, left = centre_offsets(x.shape[0], x.shape[1], crop)
    return x[top:top + crop, left:left + crop]


def flow_pixels(q: np.ndarray, bound: float) -> np.ndarray:
    """Quantised flow ``(...) uint8`` -> ``(...) float32`` pixels from zero motion:
    ``(q - FLOW_ZERO) * 2 * bound / 255`` (128 -> exactly 0; a grid symmetric about 0)."""
    return (np.asarray(q, dtype=np.float32) - np.float32(FLOW_ZERO)) * np.float32(2 * bound / 255)


def flow_rms(samples: list[np.ndarray] | np.ndarray, bound: float) -> float:
    """RMS of ``flow_pixels`` over every value of some ``(H, W, 2L) uint8`` flow samples: the
    ``scale`` of ``normalize``, so that the network sees flow of unit RMS.

    Raises:
        ValueError: on no samples, or flow that is zero everywhere (no scale to fit).
    """
    if len(samples) == 0:
        raise ValueError("need at least one flow sample to fit the flow scale")
    total = sum(float(np.square(flow_pixels(s, bound), dtype=np.float64).sum()) for s in samples)
    count = sum(int(np.asarray(s).size) for s in samples)
    rms = (total / count) ** 0.5
    if not rms > 0:
        raise ValueError(f"the {len(samples)} flow samples are all zero motion: no scale to fit")
    return rms


def check_flow(bound: float | None, scale: float | None) -> None:
    """Raise ValueError unless the flow ``bound`` and ``scale`` are both positive numbers."""
    if bound is None or not bound > 0:
        raise ValueError(f"flow needs its quantisation bound > 0; got {bound!r}")
    if scale is None or not scale > 0:
        raise ValueError(f"flow needs its scale > 0 (pixels, fitted on the train split); got {scale!r}")


@lru_cache(maxsize=None)
def _affine(modality: str, bound: float | None, scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shift, mul)``, each ``(C or 1, 1, 1) float32``: ``normalize(q) = (q + shift) * mul``."""
    if modality == "flow":  # (q - FLOW_ZERO) * step / scale: an exact subtraction, then one rounding
        mul = torch.tensor(2 * bound / 255 / scale, dtype=torch.float32)
        return torch.tensor(-float(FLOW_ZERO)).view(1, 1, 1), mul.view(1, 1, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return -255 * mean, 1 / (255 * std)


@lru_cache(maxsize=None)
def _fused_affine(modality: str, bound: float | None, scale: float | None, channels: int,
                  flip: bool, zoom: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """``_affine`` as read-only ndarrays ``(shift (C or 1, 1, 1), mul (C or 1, 1, 1)) float32`` for
    ``Preset``; for a flipped flow sample ``mul`` is negated on the x channels (even indices),
    which is ``hflip``'s negation exactly: ``a * -m == -(a * m)`` bit for bit in IEEE 754, whose
    round-to-nearest is symmetric about 0. ``zoom = (zx, zy)``: a flow window resized by these
    factors has its x channels multiplied by ``zx`` and its y channels by ``zy`` (motion in
    pixels of the resized image)."""
    shift, mul = (t.numpy().copy() for t in _affine(modality, bound, scale))
    if modality == "flow" and (flip or zoom != (1.0, 1.0)):
        mul = np.repeat(mul, channels, axis=0)
        if zoom != (1.0, 1.0):
            mul[0::2] *= np.float32(zoom[0])
            mul[1::2] *= np.float32(zoom[1])
        if flip:
            mul[0::2] = -mul[0::2]
    shift.flags.writeable = mul.flags.writeable = False
    return shift, mul


def normalize(x: torch.Tensor, modality: str, bound: float | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Scale a ``(C, H, W)`` sample of 0..255 values (uint8 or float) to network input
    ``(C, H, W) float32`` (see the module docstring); ``x`` is not modified.

    Args:
        x: the sample; modality: one of ``MODALITIES``.
        bound, scale: flow only: the quantisation bound and the fitted scale, in pixels.

    Raises:
        ValueError: on an unknown modality, a flow sample without a positive ``bound`` and
            ``scale``, or an image sample without 3 channels.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}; got {modality!r}")
    if modality == "flow":
        check_flow(bound, scale)
    elif x.shape[0] != 3:
        raise ValueError(f"{modality} samples have 3 channels; got {tuple(x.shape)}")
    flow = modality == "flow"
    shift, mul = _affine(modality, float(bound) if flow else None, float(scale) if flow else None)
    return x.to(torch.float32).add(shift).mul_(mul)


def hflip(x: torch.Tensor, modality: str) -> torch.Tensor:
    """Mirror a normalised ``(C, H, W)`` sample left-right; for flow also negate x (even channels)."""
    out = x.flip(-1)
    if modality == "flow":
        out[0::2] = -out[0::2]
    return out


AUGMENTS = ("crop", "multiscale")
SCALES = (1.0, 0.875, 0.75, 0.66)  # multiscale: window sides as fractions of the sample's short side (TSN)
MAX_DISTORT = 1  # multiscale: the height's and width's scales at most this many steps of SCALES apart
CROPS = (1, 3, 10)  # test-time crops per snippet (``view_windows``)


@dataclass(frozen=True)
class Window:
    """Where a sample's input comes from: a ``height x width`` window at ``(top, left)``, mirrored
    when ``flip``; resized to the preset's ``crop x crop`` when its sides differ from it."""

    top: int
    left: int
    height: int
    width: int
    flip: bool = False


def fixed_offsets(height: int, width: int, h: int, w: int) -> list[tuple[int, int]]:
    """The 13 ``(top, left)`` positions of an ``h x w`` window in a ``height x width`` sample that
    TSN's corner cropping draws from: the four corners, the centre, the middles of the four
    sides, and the centres of the four quarters (duplicates kept, as drawn)."""
    dy, dx = (height - h) // 4, (width - w) // 4
    return [(0, 0), (0, 4 * dx), (4 * dy, 0), (4 * dy, 4 * dx), (2 * dy, 2 * dx),
            (2 * dy, 0), (2 * dy, 4 * dx), (4 * dy, 2 * dx), (0, 2 * dx),
            (dy, dx), (dy, 3 * dx), (3 * dy, dx), (3 * dy, 3 * dx)]


def scale_pairs(height: int, width: int, crop: int, scales: tuple[float, ...] = SCALES,
                max_distort: int = MAX_DISTORT) -> list[tuple[int, int]]:
    """The ``(h, w)`` window sizes multiscale cropping draws from: each side ``scale * short side``
    (at least 1, at most the crop's own side when that is within 2 pixels, as TSN snaps them),
    the two sides' scales at most ``max_distort`` steps apart (aspect jitter)."""
    base = min(height, width)
    sides = [max(1, int(base * s)) for s in scales]
    sides = [crop if abs(side - crop) < 3 else side for side in sides]
    return [(sides[i], sides[j]) for i in range(len(sides)) for j in range(len(sides))
            if abs(i - j) <= max_distort and sides[i] <= height and sides[j] <= width]


def view_windows(height: int, width: int, crop: int, crops: int) -> list[Window]:
    """The test-time windows of one snippet: 1 (the centre), 3 (start, centre and end along the
    long side, centred across it) or 10 (the four corners and the centre, then the same five
    mirrored), each ``crop x crop``.

    Raises:
        ValueError: on another number of crops, or a crop larger than the sample.
    """
    if crops not in CROPS:
        raise ValueError(f"crops must be one of {', '.join(map(str, CROPS))}; got {crops}")
    cy, cx = centre_offsets(height, width, crop)
    ey, ex = height - crop, width - crop
    if crops == 1:
        places = [(cy, cx)]
    elif crops == 3:
        places = [(cy, 0), (cy, cx), (cy, ex)] if width >= height else [(0, cx), (cy, cx), (ey, cx)]
    else:
        places = [(0, 0), (0, ex), (ey, 0), (ey, ex), (cy, cx)]
    windows = [Window(top, left, crop, crop) for top, left in places]
    if crops == 10:
        windows += [Window(w.top, w.left, crop, crop, True) for w in windows]
    return windows


@dataclass(frozen=True)
class Preset:
    """A sample transform: ``(H, W, C) uint8`` ndarray -> ``(C, crop, crop) float32`` tensor."""

    modality: str  # rgb | sg3i | flow
    crop: int  # output side in pixels
    train: bool  # True: a random window (``augment``) + flip with p 0.5; False: centre crop
    bound: float | None = None  # flow only: quantisation bound in pixels
    scale: float | None = None  # flow only: divisor in pixels (``flow_rms`` of the train split)
    augment: str = "crop"  # training windows: crop (crop x crop anywhere) | multiscale (TSN's, resized)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}; got {self.modality!r}")
        if self.modality == "flow":
            check_flow(self.bound, self.scale)
        if self.crop < 1:
            raise ValueError(f"crop must be >= 1; got {self.crop}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}; got {self.augment!r}")

    def draw(self, height: int, width: int) -> Window:
        """The window of one training sample of ``height x width`` (eval: the centre crop), from
        torch's RNG: ``crop`` draws its top, its left, then the flip; ``multiscale`` draws a size
        of ``scale_pairs``, a position of ``fixed_offsets``, then the flip.

        Raises:
            ValueError: on a crop larger than the sample.
        """
        if not self.train:
            return Window(*centre_offsets(height, width, self.crop), self.crop, self.crop)
        if self.augment == "crop":
            top, left = random_offsets(height, width, self.crop)
            h = w = self.crop
        else:
            _check_crop(height, width, self.crop)
            pairs = scale_pairs(height, width, self.crop)
            h, w = pairs[int(torch.randint(len(pairs), ()))]
            offsets = fixed_offsets(height, width, h, w)
            top, left = offsets[int(torch.randint(len(offsets), ()))]
        return Window(top, left, h, w, float(torch.rand(())) < 0.5)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """``(H, W, C) uint8`` -> ``(C, crop, crop) float32``: ``apply`` of a ``draw`` window.

        For ``crop`` windows the values are those of ``normalize`` of the window (then ``hflip``
        when drawn), bit for bit, with the same RNG draws (crop offsets, then the flip).

        Raises:
            ValueError: on a crop larger than the sample, or an image sample without 3 channels.
        """
        return self.apply(x, self.draw(x.shape[0], x.shape[1]))

    def apply(self, x: np.ndarray, window: Window) -> torch.Tensor:
        """The network input of ``x`` through ``window``: cut, mirrored if it says so, resized
        to ``crop x crop`` (bilinear on the bytes; flow's x and y then scaled by the resize
        factors), normalised. The uint8 window is flipped and laid out as CHW before the one
        float pass; mirroring the bytes is 4x cheaper than mirroring the floats.

        Raises:
            ValueError: on a window outside the sample, or an image sample without 3 channels.
        """
        if self.modality != "flow" and x.shape[2] != 3:
            raise ValueError(f"{self.modality} samples have 3 channels; got {tuple(x.shape)}")
        t, l, h, w = window.top, window.left, window.height, window.width
        if not (0 <= t and t + h <= x.shape[0] and 0 <= l and l + w <= x.shape[1] and h >= 1 and w >= 1):
            raise ValueError(f"window {window} is outside the {x.shape[0]}x{x.shape[1]} sample")
        cut = x[t:t + h, l:l + w]
        if window.flip:
            cut = cut[:, ::-1]
        zoom = (1.0, 1.0)
        if (h, w) != (self.crop, self.crop):
            cut = _resize(cut, self.crop)
            zoom = (self.crop / w, self.crop / h)
        chw = np.ascontiguousarray(hwc_to_chw(cut))  # (C, crop, crop) uint8: the one gather, a byte a value
        flow = self.modality == "flow"  # normalize's cache key: Python floats for flow, else None
        shift, mul = _fused_affine(self.modality, float(self.bound) if flow else None,
                                   float(self.scale) if flow else None, chw.shape[0], window.flip,
                                   zoom if flow else (1.0, 1.0))
        out = np.empty(chw.shape, np.float32)  # (C, crop, crop) float32: the sample, no temporaries
        np.add(chw, shift, out=out)  # float32(q) + shift, one rounding, as normalize's add
        np.multiply(out, mul, out=out)  # then * mul, one rounding, as normalize's mul_
        return torch.from_numpy(out)

    def views(self, x: np.ndarray, crops: int) -> torch.Tensor:
        """The test-time views of one sample: ``(crops, C, crop, crop) float32``, one per window of
        ``view_windows`` (1, 3 or 10)."""
        return torch.stack([self.apply(x, w) for w in view_windows(x.shape[0], x.shape[1], self.crop, crops)])


def _resize(x: np.ndarray, side: int) -> np.ndarray:
    """``(h, w, C) uint8`` -> ``(side, side, C) uint8``, bilinear (OpenCV, any number of channels)."""
    import cv2  # only multiscale windows are resized

    out = cv2.resize(np.ascontiguousarray(x), (side, side), interpolation=cv2.INTER_LINEAR)
    return out.reshape(side, side, x.shape[2])


def train_preset(modality: str, crop: int, bound: float | None = None, scale: float | None = None,
                 augment: str = "crop") -> Preset:
    """Training transform: a random window (``augment``: crop | multiscale), normalise, flip with p 0.5."""
    return Preset(modality, crop, True, bound, scale, augment)


def eval_preset(modality: str, crop: int, bound: float | None = None, scale: float | None = None) -> Preset:
    """Evaluation transform: centre ``crop x crop`` window, normalise (deterministic)."""
    return Preset(modality, crop, False, bound, scale)
