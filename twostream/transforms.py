"""Sample transforms: ``(H, W, C) uint8`` shard sample -> ``(C, crop, crop) float32`` tensor.

Two presets, side by side:

- ``train_preset``: random ``crop x crop`` window, normalise, horizontal flip with p 0.5;
- ``eval_preset``: centre ``crop x crop`` window, normalise.

Normalisation per modality (``normalize``):

- ``rgb`` and ``sg3i``: ``0..255 -> 0..1``, then ImageNet's mean/std per channel (SG3I's
  three time channels take the R, G, B constants), as ImageNet-initialised trunks expect.
- ``flow``: quantised ``q`` -> ``dequantize(q, bound) / FLOW_SCALE`` with
  ``dequantize(q) = q * 2 * bound / 255 - bound`` (``twostream.flow``): pixels of motion,
  divided by a fixed scale measured on the demo flow. The quantisation grid is symmetric
  about 127.5, so negating a dequantised value gives the value of ``255 - q``: a flip
  stays on the grid.

A horizontal flip of a flow stack mirrors the image and negates its x channels (even
channel indices: x0, y0, x1, y1, ...): leftward motion becomes rightward.
Randomness comes only from torch's global RNG, which DataLoader seeds per worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

MODALITIES = ("rgb", "sg3i", "flow")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Divisor in pixels: the demo's dequantised TV-L1 flow (3,240 train/val/test clips,
# 64x64 at 6 fps, bound 20, OpenCV's default TV-L1) has mean -0.004 px and std 0.32 px
# over all pixels (99% of |v| <= 1.1 px; the 20% of values with |v| > 0.2 px have std
# 0.69 px). Footage at a larger working size moves more pixels per frame: re-measure there.
FLOW_SCALE = 0.32


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


@lru_cache(maxsize=None)
def _affine(modality: str, bound: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)``, each ``(C or 1, 1, 1) float32``: ``normalize(q) = q * scale + shift``."""
    if modality == "flow":  # dequantize(q) / FLOW_SCALE
        step = 2 * bound / 255 / FLOW_SCALE
        return torch.tensor(step).view(1, 1, 1), torch.tensor(-bound / FLOW_SCALE).view(1, 1, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return 1 / (255 * std), -mean / std


def normalize(x: torch.Tensor, modality: str, bound: float | None = None) -> torch.Tensor:
    """Scale a ``(C, H, W)`` sample of 0..255 values (uint8 or float) to network input
    ``(C, H, W) float32`` (see the module docstring); ``x`` is not modified.

    Raises:
        ValueError: on an unknown modality, a flow sample without a positive ``bound``, or
            an image sample without 3 channels.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}; got {modality!r}")
    if modality == "flow" and (bound is None or not bound > 0):
        raise ValueError(f"flow needs its quantisation bound > 0; got {bound!r}")
    if modality != "flow" and x.shape[0] != 3:
        raise ValueError(f"{modality} samples have 3 channels; got {tuple(x.shape)}")
    scale, shift = _affine(modality, float(bound) if modality == "flow" else None)
    return x.to(torch.float32).mul(scale).add_(shift)


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
    bound: float | None = None  # flow quantisation bound (flow only)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}; got {self.modality!r}")
        if self.modality == "flow" and (self.bound is None or not self.bound > 0):
            raise ValueError(f"a flow preset needs the quantisation bound > 0; got {self.bound!r}")
        if self.crop < 1:
            raise ValueError(f"crop must be >= 1; got {self.crop}")

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        window = random_crop(x, self.crop) if self.train else center_crop(x, self.crop)
        # numpy's strided uint8 -> contiguous float32 copy is ~3x faster than torch's
        chw = torch.from_numpy(hwc_to_chw(window).astype(np.float32, order="C"))
        out = normalize(chw, self.modality, self.bound)
        if self.train and float(torch.rand(())) < 0.5:
            out = hflip(out, self.modality)
        return out


def train_preset(modality: str, crop: int, bound: float | None = None) -> Preset:
    """Training transform: random ``crop x crop`` window, normalise, flip with p 0.5."""
    return Preset(modality, crop, True, bound)


def eval_preset(modality: str, crop: int, bound: float | None = None) -> Preset:
    """Evaluation transform: centre ``crop x crop`` window, normalise (deterministic)."""
    return Preset(modality, crop, False, bound)
