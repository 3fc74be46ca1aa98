"""Sample transforms: ``(H, W, C) uint8`` shard sample -> ``(C, crop, crop) float32`` tensor.

Two presets, side by side:

- ``train_preset``: random ``crop x crop`` window, normalise, horizontal flip with p 0.5;
- ``eval_preset``: centre ``crop x crop`` window, normalise.

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
--size 340x256``: flow of L=5 in 224 px crops, 0.44 ms of CPU per sample against 0.89 ms).
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


def _check_crop(x: np.ndarray, crop: int) -> None:
    if not 1 <= crop <= min(x.shape[0], x.shape[1]):
        raise ValueError(f"crop must be in 1..{min(x.shape[0], x.shape[1])} for a "
                         f"{x.shape[0]}x{x.shape[1]} sample; got {crop}")


def random_crop(x: np.ndarray, crop: int) -> np.ndarray:
    """A uniformly placed ``crop x crop`` window of ``(H, W, C)`` (a view); offsets from torch's RNG."""
    _check_crop(x, crop)
    top = int(torch.randint(x.shape[0] - crop + 1, ()))
    left = int(torch.randint(x.shape[1] - crop + 1, ()))
    return x[top:top + crop, left:left + crop]


def center_crop(x: np.ndarray, crop: int) -> np.ndarray:
    """The central ``crop x crop`` window of ``(H, W, C)`` (a view; odd margins round down at top/left)."""
    _check_crop(x, crop)
    top, left = (x.shape[0] - crop) // 2, (x.shape[1] - crop) // 2
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
                  flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """``_affine`` as read-only ndarrays ``(shift (C or 1, 1, 1), mul (C or 1, 1, 1)) float32`` for
    ``Preset``; for a flipped flow sample ``mul`` is negated on the x channels (even indices),
    which is ``hflip``'s negation exactly: ``a * -m == -(a * m)`` bit for bit in IEEE 754, whose
    round-to-nearest is symmetric about 0."""
    shift, mul = (t.numpy().copy() for t in _affine(modality, bound, scale))
    if modality == "flow" and flip:
        mul = np.repeat(mul, channels, axis=0)
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


@dataclass(frozen=True)
class Preset:
    """A sample transform: ``(H, W, C) uint8`` ndarray -> ``(C, crop, crop) float32`` tensor."""

    modality: str  # rgb | sg3i | flow
    crop: int  # output side in pixels
    train: bool  # True: random crop + flip with p 0.5; False: centre crop
    bound: float | None = None  # flow only: quantisation bound in pixels
    scale: float | None = None  # flow only: divisor in pixels (``flow_rms`` of the train split)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}; got {self.modality!r}")
        if self.modality == "flow":
            check_flow(self.bound, self.scale)
        if self.crop < 1:
            raise ValueError(f"crop must be >= 1; got {self.crop}")

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """``(H, W, C) uint8`` -> ``(C, crop, crop) float32``: the values of ``normalize`` of the
        window (then ``hflip`` when drawn), bit for bit, with the same RNG draws (crop offsets, then
        the flip); the uint8 window is flipped and laid out as CHW before the one float pass.

        Raises:
            ValueError: on a crop larger than the sample, or an image sample without 3 channels.
        """
        window = random_crop(x, self.crop) if self.train else center_crop(x, self.crop)
        if self.modality != "flow" and window.shape[2] != 3:
            raise ValueError(f"{self.modality} samples have 3 channels; got {tuple(x.shape)}")
        flip = self.train and float(torch.rand(())) < 0.5
        if flip:
            window = window[:, ::-1]  # mirroring the bytes is 4x cheaper than mirroring the floats
        chw = np.ascontiguousarray(hwc_to_chw(window))  # (C, crop, crop) uint8: the one gather, a byte a value
        flow = self.modality == "flow"  # normalize's cache key: Python floats for flow, else None
        shift, mul = _fused_affine(self.modality, float(self.bound) if flow else None,
                                   float(self.scale) if flow else None, chw.shape[0], flip)
        out = np.empty(chw.shape, np.float32)  # (C, crop, crop) float32: the sample, no temporaries
        np.add(chw, shift, out=out)  # float32(q) + shift, one rounding, as normalize's add
        np.multiply(out, mul, out=out)  # then * mul, one rounding, as normalize's mul_
        return torch.from_numpy(out)


def train_preset(modality: str, crop: int, bound: float | None = None, scale: float | None = None) -> Preset:
    """Training transform: random ``crop x crop`` window, normalise, flip with p 0.5."""
    return Preset(modality, crop, True, bound, scale)


def eval_preset(modality: str, crop: int, bound: float | None = None, scale: float | None = None) -> Preset:
    """Evaluation transform: centre ``crop x crop`` window, normalise (deterministic)."""
    return Preset(modality, crop, False, bound, scale)
