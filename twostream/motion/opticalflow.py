"""TV-L1 optical flow between two frames: the backends and their params.

``compute_flow`` runs OpenCV's ``DualTVL1OpticalFlow`` (``flow.backend: opencv``) or the same
algorithm in PyTorch (``torch``, ``twostream.motion.tvl1``, batched, on CUDA when available); the
``flow`` stage (``twostream.motion.flow``) calls it per pair and stores ``flowstore.quantize``'s output.
"""

from __future__ import annotations

import os
from dataclasses import is_dataclass
from typing import Any, Mapping

import cv2
import numpy as np

from twostream.runtime.config import RULES, FlowConfig, to_dict

BACKENDS = ("opencv", "torch", "auto")  # "auto": torch when CUDA is available, else opencv
# FlowConfig key -> keyword of cv2.optflow.DualTVL1OpticalFlow_create (note "innner")
TVL1_KEYWORDS = {
    "tau": "tau", "lambda_": "lambda_", "theta": "theta", "nscales": "nscales", "warps": "warps",
    "epsilon": "epsilon", "inner_iterations": "innnerIterations",
    "outer_iterations": "outerIterations", "scale_step": "scaleStep", "gamma": "gamma",
    "median_filtering": "medianFiltering",
}
_tvl1_cache: dict[tuple, Any] = {}  # (pid, params) -> DualTVL1OpticalFlow of this process
def tvl1_params(params: FlowConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The TV-L1 keys of ``params``, checked.

    Args:
        params: a ``FlowConfig`` or a mapping with its TV-L1 keys (others are ignored,
            except ``backend``, which must be one of ``BACKENDS`` when present).

    Returns:
        ``{FlowConfig key: value}`` for the keys of ``TVL1_KEYWORDS``.

    Raises:
        KeyError: if a TV-L1 key is missing.
        ValueError: on a value outside its range, or an unknown backend.
    """
    values = to_dict(params) if is_dataclass(params) else dict(params)
    resolve_backend(values.get("backend", "opencv"))
    missing = [k for k in TVL1_KEYWORDS if k not in values]
    if missing:
        raise KeyError(f"flow params lack TV-L1 keys {missing}; need {list(TVL1_KEYWORDS)}")
    for key in TVL1_KEYWORDS:  # the ranges params.yaml is checked against (config.RULES)
        rule = RULES[FlowConfig][key]
        if not rule.ok(values[key]):
            raise ValueError(f"flow.{key} must be {rule.text}; got {values[key]!r}")
    return {k: values[k] for k in TVL1_KEYWORDS}


def resolve_backend(backend: str) -> str:
    """``opencv`` or ``torch`` for a ``flow.backend`` value (``auto``: torch when CUDA is available).

    Raises:
        ValueError: on a value outside ``BACKENDS``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"flow.backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        return "torch" if _cuda() else "opencv"
    return backend


def _backend(params: FlowConfig | Mapping[str, Any]) -> str:
    return resolve_backend(params.backend if is_dataclass(params) else params.get("backend", "opencv"))


def _tvl1(params: dict[str, Any]) -> Any:
    """This process's OpenCV TV-L1 object for ``params`` (built once, reused)."""
    key = (os.getpid(), *sorted(params.items()))
    if key not in _tvl1_cache:
        kwargs = {TVL1_KEYWORDS[k]: v for k, v in params.items()}
        _tvl1_cache[key] = cv2.optflow.DualTVL1OpticalFlow_create(**kwargs)
    return _tvl1_cache[key]


def compute_flow(prev: np.ndarray, next: np.ndarray, params: FlowConfig | Mapping[str, Any]) -> np.ndarray:
    """TV-L1 optical flow from ``prev`` to ``next``.

    ``params["backend"]`` (or ``FlowConfig.backend``) picks OpenCV's ``DualTVL1OpticalFlow``
    (``opencv``, the default) or the same algorithm in PyTorch (``torch``, ``twostream.motion.tvl1``,
    on CUDA when available); ``auto`` is torch when CUDA is available.

    Args:
        prev: ``(H, W) uint8`` grayscale frame at time t.
        next: ``(H, W) uint8`` grayscale frame at time t + 1.
        params: a ``FlowConfig`` or a mapping with its TV-L1 keys (see ``tvl1_params``).

    Returns:
        ``(H, W, 2) float32`` displacement in pixels of each pixel of ``prev``:
        channel 0 = x (right positive), 1 = y (down positive).

    Raises:
        ValueError: if the frames are not two ``(H, W) uint8`` arrays of one shape, or
            on bad params (see ``tvl1_params``).
    """
    for name, frame in (("prev", prev), ("next", next)):
        if frame.ndim != 2 or frame.dtype != np.uint8:
            raise ValueError(f"{name} must be an (H, W) uint8 grayscale frame; "
                             f"got {frame.shape} {frame.dtype}")
    if prev.shape != next.shape:
        raise ValueError(f"prev and next must have one shape; got {prev.shape} and {next.shape}")
    tvl1 = tvl1_params(params)
    if _backend(params) == "torch":
        from twostream.motion.tvl1 import tvl1_flow

        return tvl1_flow(prev, next, tvl1)
    return _tvl1(tvl1).calc(prev, next, None)


def _cuda() -> bool:
    import torch  # here only: the OpenCV path does not pay for importing torch

    return torch.cuda.is_available()
