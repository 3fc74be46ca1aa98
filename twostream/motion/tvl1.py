"""TV-L1 optical flow in plain PyTorch, batched over frame pairs, on CPU or CUDA alike.

The same algorithm as OpenCV's ``DualTVL1OpticalFlow`` (``optflow`` module; Zach, Pock
and Bischof 2007, after Sanchez, Meinhardt-Llopis and Facciolo's IPOL version), step for
step, with the same parameters:

- pyramid: level ``s`` is level ``s - 1`` resized by ``scale_step`` (bilinear, no
  pre-blur, sizes rounded to nearest, as ``cv2.resize(..., fx=scale_step)``); levels
  narrower or lower than 16 px are dropped; the flow starts at zero on the coarsest one
  and is resized (bilinear) and divided by ``scale_step`` on the way up;
- per level: the dual variables ``p`` start at zero; ``warps`` times: warp ``I1`` and its
  centred gradient by the current flow (bicubic, a = -0.75, zero outside the image, as
  ``cv2.remap(..., INTER_CUBIC)``), then up to ``outer_iterations`` rounds of (median
  filter of the flow when ``median_filtering > 1``; up to ``inner_iterations`` of
  thresholding step, primal step, dual step) while the squared update summed over the
  level, ``sum (u_new - u)^2``, exceeds ``epsilon^2 * H * W``.

The stopping rule is per pair: a pair whose update fell below the threshold is frozen
(its flow and dual variables keep their values) for the rest of that warp while the
others go on, so each pair gets exactly the iterations OpenCV would give it and a
pair's flow does not depend on its batch. Running the whole batch until all converged
would let fast pairs drift on (different flow than OpenCV's, and than the same pair
alone). Frozen pairs still cost their share of the arithmetic; the loop ends as soon
as all are frozen (checked on the host every ``sync_every`` iterations, so a GPU does
not wait on the host each step).

Layouts: frames ``(N, H, W)`` uint8 (0..255) or float (0..1, scaled by 255 like OpenCV);
flow ``(N, H, W, 2) float32``, channel 0 = x (right positive), 1 = y (down positive),
as ``twostream.motion.flow.compute_flow``. Internally ``(N, C, H, W)`` flow with C = 2 (3 with
``gamma``, the illumination term) and ``(N, C, 2, H, W)`` dual variables.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# the flow params TV-L1 takes, the same for both backends (opticalflow.TVL1_KEYWORDS maps them to
# OpenCV's keywords; tests/test_tvl1.py checks that the two name the same keys)
PARAM_KEYS = ("tau", "lambda_", "theta", "nscales", "warps", "epsilon", "inner_iterations", "outer_iterations",
              "scale_step", "gamma", "median_filtering")
MIN_LEVEL_SIZE = 16  # OpenCV stops the pyramid at a level narrower or lower than this
FLT_EPSILON = float(np.finfo(np.float32).eps)  # OpenCV's "gradient is zero" threshold
_compiled: dict[str, Callable] = {}  # "step" -> torch.compile'd _step, once it worked


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to compute on: ``None`` or ``"auto"`` = CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _linear_matrix(n_out: int, n_in: int, scale: float) -> np.ndarray:
    """``(n_out, n_in) float32`` weights of OpenCV's bilinear resize along one axis.

    Output ``d`` samples the input at ``(d + 0.5) * scale - 0.5`` (float32, as OpenCV),
    clamped to the edge pixels.
    """
    src = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    left = np.floor(src).astype(np.int64)
    frac = (src - left).astype(np.float32)
    low, high = left < 0, left >= n_in - 1
    frac[low | high] = 0
    left = np.clip(left, 0, n_in - 1)
    weights = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    weights[rows, left] += 1 - frac
    np.add.at(weights, (rows, np.minimum(left + 1, n_in - 1)), frac)
    return weights


def _resize(x: torch.Tensor, size: tuple[int, int], scale: tuple[float, float]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` to ``(N, C, *size)``, OpenCV's sampling.

    ``scale`` = (y, x) input pixels per output pixel, as OpenCV uses it (``1 / fx`` when
    resizing by a factor, ``in / out`` when resizing to a size).
    """
    h, w = x.shape[-2:]
    wy = torch.from_numpy(_linear_matrix(size[0], h, scale[0])).to(x.device)
    wx = torch.from_numpy(_linear_matrix(size[1], w, scale[1])).to(x.device)
    return torch.einsum("yh,nchw,xw->ncyx", wy, x, wx)


def pyramid_sizes(height: int, width: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """``(H, W)`` of each pyramid level, finest first, as OpenCV's TV-L1 builds them.

    Args:
        height, width: the frames' size.
        nscales: levels asked for.
        scale_step: size ratio between levels, in (0, 1).

    Returns:
        Up to ``nscales`` sizes; level ``s`` is ``round(size[s - 1] * scale_step)``, and
        the pyramid ends before the first level under ``MIN_LEVEL_SIZE`` px.
    """
    sizes = [(height, width)]
    for _ in range(1, nscales):
        h, w = (round(v * scale_step) for v in sizes[-1])  # cvRound: half to even, as round()
        if h < MIN_LEVEL_SIZE or w < MIN_LEVEL_SIZE:
            break
        sizes.append((h, w))
    return sizes


def _centred_gradient(image: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` -> ``(N, 2, H, W)`` half central differences (x, y), replicated edges."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    gy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return torch.cat([gx, gy], dim=1)


def _warp(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bicubic backward warp of ``(N, K, H, W)`` by ``(N, 2, H, W)`` flow, zeros outside.

    Samples ``images`` at ``(x + flow_x, y + flow_y)`` like ``cv2.remap`` with
    ``INTER_CUBIC`` and a constant 0 border.
    """
    h, w = images.shape[-2:]
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    grid = torch.stack([(xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1,
                        (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1], dim=-1)  # (N, H, W, 2)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


def _median(flow: torch.Tensor, size: int, use_opencv: bool | None = None) -> torch.Tensor:
    """``size`` x ``size`` median of each channel of ``(N, C, H, W)`` float32, replicated
    edges: ``cv2.medianBlur`` of a float image, exactly.

    ``use_opencv`` (None = on CPU for the sizes OpenCV filters floats with, 3 and 5):
    ``cv2.medianBlur`` itself, image by image, 10x faster than torch's median on CPU;
    else the windows stacked on a last axis and one ``median`` over it (two kernels on
    a GPU).
    """
    if use_opencv is None:
        use_opencv = flow.device.type == "cpu" and size in (3, 5)
    if use_opencv:
        images = flow.detach().contiguous().numpy()  # (N, C, H, W) view of the CPU tensor
        out = np.empty_like(images)
        for index in np.ndindex(images.shape[:2]):
            out[index] = cv2.medianBlur(images[index], size)
        return torch.from_numpy(out)
    h, w, r = flow.shape[-2], flow.shape[-1], size // 2
    padded = F.pad(flow, (r, r, r, r), mode="replicate")
    windows = [padded[..., i:i + h, j:j + w] for i in range(size) for j in range(size)]
    return torch.stack(windows, dim=-1).median(dim=-1).values


def _divergence(p: torch.Tensor) -> torch.Tensor:
    """``(N, C, 2, H, W)`` dual field -> ``(N, C, H, W)`` backward-difference divergence.

    ``div = p_x(x) - p_x(x - 1) + p_y(y) - p_y(y - 1)`` with zeros before the first column
    and row (the negative adjoint of ``_forward_gradient``).
    """
    px, py = p[:, :, 0], p[:, :, 1]
    div = px + py
    div[..., 1:] -= px[..., :-1]
    div[..., 1:, :] -= py[..., :-1, :]
    return div


def _forward_gradient(u: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, 2, H, W)`` forward differences, 0 on the last column/row."""
    du = u.new_zeros(*u.shape[:2], 2, *u.shape[2:])
    torch.sub(u[..., 1:], u[..., :-1], out=du[:, :, 0, :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=du[:, :, 1, :-1, :])
    return du


def _step(u: torch.Tensor, p: torch.Tensor, active: torch.Tensor | None, coeff: torch.Tensor,
          neg_inv_grad: torch.Tensor, rho_c: torch.Tensor, l_t: float, theta: float, taut: float,
          threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One inner iteration for the pairs still ``active``; the others keep ``u`` and ``p``.

    Args:
        u: ``(N, C, H, W)`` flow (C = 2, or 3 with the illumination term).
        p: ``(N, C, 2, H, W)`` dual variables.
        active: ``(N,) bool`` pairs not yet converged in this warp; None = all (no masking).
        coeff: ``(N, C, H, W)`` the data term's coefficients: the warped gradient of
            ``I1`` (x, y) and, with gamma, the constant gamma.
        neg_inv_grad: ``(N, 1, H, W)`` ``-1 / |grad I1w|^2``, 0 where that norm is
            under float32's epsilon.
        rho_c: ``(N, 1, H, W)`` constant part of the residual.
        l_t, theta, taut: ``lambda * theta``, ``theta``, ``tau / theta``.
        threshold: ``epsilon^2 * H * W``.

    Returns:
        ``(u, p, active)`` after the iteration; a pair stays active while its squared
        update exceeds ``threshold``.
    """
    rho = rho_c
    for c in range(u.shape[1]):
        rho = torch.addcmul(rho, coeff[:, c:c + 1], u[:, c:c + 1])
    # OpenCV's three cases (rho < -l_t |g|^2, rho > l_t |g|^2, between) are this clamp
    step = rho.mul_(neg_inv_grad).clamp_(-l_t, l_t)
    u_new = torch.addcmul(u, step, coeff).add_(_divergence(p), alpha=theta)  # v, then the primal step
    diff = u_new - u
    error = diff.mul_(diff).sum(dim=(1, 2, 3))
    if active is not None:
        u_new = torch.where(active.view(-1, 1, 1, 1), u_new, u)
    du = _forward_gradient(u_new)
    denom = du.square().sum(dim=2, keepdim=True).sqrt_().mul_(taut).add_(1)  # 1 + taut |Du|
    p_new = torch.add(p, du, alpha=taut).div_(denom)
    if active is None:
        return u_new, p_new, error > threshold
    return u_new, torch.where(active.view(-1, 1, 1, 1, 1), p_new, p), active & (error > threshold)


class _Compiled:
    """``_step`` through ``torch.compile``; on the first failure (no compiler, an
    unsupported device...) it logs once and runs eagerly from then on."""

    def __init__(self) -> None:
        self.fn: Callable | None = None
        try:
            self.fn = torch.compile(_step, dynamic=True)
        except Exception as e:  # noqa: BLE001 - compiling is an optional speed-up
            self._give_up(e)

    def _give_up(self, e: Exception) -> None:
        log.warning("torch.compile unavailable (%s: %s); TV-L1 runs eagerly", type(e).__name__, e)
        self.fn = None

    def __call__(self, *args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.fn is not None:
            try:
                return self.fn(*args)
            except Exception as e:  # noqa: BLE001 - an error of the step itself recurs below
                self._give_up(e)
        return _step(*args)


def _stepper(compile: bool) -> Callable:
    """``_step``, or its compiled form (made once per process) when ``compile``."""
    if not compile:
        return _step
    if "step" not in _compiled:
        _compiled["step"] = _Compiled()
    return _compiled["step"]


def _one_scale(i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, cfg: Mapping[str, Any],
               step: Callable, sync_every: int, counts: list[int]) -> torch.Tensor:
    """OpenCV's ``procOneScale``: refine ``(N, C, H, W)`` flow ``u`` on one level.

    ``i0``, ``i1`` are ``(N, 1, H, W) float32``; ``counts`` gets [batch iterations run,
    pair-iterations active (a 0-d tensor)] added.
    """
    n, c, h, w = u.shape
    l_t, theta, taut = cfg["lambda_"] * cfg["theta"], cfg["theta"], cfg["tau"] / cfg["theta"]
    threshold = float(np.float32(cfg["epsilon"] ** 2 * h * w))
    sources = torch.cat([i1, _centred_gradient(i1)], dim=1)  # (N, 3, H, W): I1, I1x, I1y
    p = u.new_zeros(n, c, 2, h, w)
    for _ in range(cfg["warps"]):
        warped = _warp(sources, u[:, :2])
        i1w, gxy = warped[:, :1], warped[:, 1:]
        grad = gxy.square().sum(dim=1, keepdim=True)  # OpenCV leaves gamma^2 out of it
        # where |g|^2 <= FLT_EPSILON OpenCV steps by l_t * g (|.| < 2e-4 l_t) or 0; this, by 0
        neg_inv_grad = torch.where(grad > FLT_EPSILON, -1 / grad.clamp_min(FLT_EPSILON), 0.0)
        rho_c = i1w - (gxy * u[:, :2]).sum(dim=1, keepdim=True) - i0
        coeff = gxy if c == 2 else torch.cat([gxy, torch.full_like(i0, cfg["gamma"])], dim=1)
        active = torch.ones(n, dtype=torch.bool, device=u.device)
        for _ in range(cfg["outer_iterations"]):
            if not bool(active.any()):
                break
            if cfg["median_filtering"] > 1:
                filtered = _median(u[:, :2], cfg["median_filtering"])
                u = torch.cat([torch.where(active.view(-1, 1, 1, 1), filtered, u[:, :2]), u[:, 2:]], dim=1)
            for inner in range(cfg["inner_iterations"]):
                if inner and inner % sync_every == 0 and not bool(active.any()):
                    break
                counts[1] = counts[1] + active.sum()  # stays on the device: no wait
                # on CPU the host knows each step whether all pairs are active: then skip the masks
                mask = None if sync_every == 1 and bool(active.all()) else active
                u, p, active = step(u, p, mask, coeff, neg_inv_grad, rho_c, l_t, theta, taut, threshold)
                counts[0] += 1
    return u


def _check(prev: torch.Tensor, next: torch.Tensor, params: Mapping[str, Any]) -> dict[str, Any]:
    """The TV-L1 params of ``params``, after checking the frames' layout."""
    missing = [k for k in PARAM_KEYS if k not in params]
    if missing:
        raise KeyError(f"TV-L1 params lack {missing}; need {list(PARAM_KEYS)}")
    if prev.ndim != 3 or prev.shape != next.shape:
        raise ValueError(f"prev and next must be (N, H, W) of one shape; got {tuple(prev.shape)} "
                         f"and {tuple(next.shape)}")
    if min(prev.shape[1:]) < 3:
        raise ValueError(f"frames must be at least 3x3 pixels; got {tuple(prev.shape[1:])}")
    if prev.dtype != next.dtype or not (prev.dtype == torch.uint8 or prev.dtype.is_floating_point):
        raise ValueError(f"frames must be uint8 (0..255) or float (0..1) of one dtype; "
                         f"got {prev.dtype} and {next.dtype}")
    return {k: params[k] for k in PARAM_KEYS}


def tvl1_batch(prev: torch.Tensor, next: torch.Tensor, params: Mapping[str, Any], *,
               sync_every: int | None = None, compile: bool = False,
               stats: dict[str, Any] | None = None) -> torch.Tensor:
    """TV-L1 flow from ``prev[i]`` to ``next[i]`` for a batch of pairs, on their device.

    Args:
        prev: ``(N, H, W)`` uint8 (0..255) or float (0..1) grayscale frames at time t.
        next: the same at time t + 1.
        params: mapping with the keys of ``PARAM_KEYS`` (a ``FlowConfig`` as a dict; its
            ranges are checked by ``twostream.motion.flow.tvl1_params``).
        sync_every: inner iterations between host checks that some pair is still active
            (None: 1 on CPU, 10 on other devices); the result does not depend on it.
        compile: run the inner iteration through ``torch.compile`` (falls back to eager).
        stats: if given, filled with ``levels`` ((H, W) finest first), ``iterations``
            (inner iterations the batch ran per level, finest first) and
            ``pair_iterations`` (of those, the pairs' active ones summed, per level).

    Returns:
        ``(N, H, W, 2) float32`` flow on the frames' device: channel 0 = x (right
        positive), 1 = y (down positive).

    Raises:
        KeyError: if a TV-L1 key is missing.
        ValueError: if the frames are not two ``(N, H, W)`` uint8/float tensors of one
            shape, at least 3x3.
    """
    cfg = _check(prev, next, params)
    device = prev.device
    sync_every = sync_every or (1 if device.type == "cpu" else 10)
    scale = 1.0 if prev.dtype == torch.uint8 else 255.0
    frames = torch.stack([prev, next], dim=1).to(torch.float32) * scale  # (N, 2, H, W)
    n, _, h, w = frames.shape
    sizes = pyramid_sizes(h, w, cfg["nscales"], cfg["scale_step"])
    levels = [frames]
    for size in sizes[1:]:
        levels.append(_resize(levels[-1], size, (1 / cfg["scale_step"],) * 2))
    c = 3 if cfg["gamma"] != 0 else 2
    u = frames.new_zeros(n, c, *sizes[-1])
    step, counts = _stepper(compile), [[0, 0] for _ in sizes]
    for s in range(len(sizes) - 1, -1, -1):
        u = _one_scale(levels[s][:, :1], levels[s][:, 1:], u, cfg, step, sync_every, counts[s])
        if s:
            (h0, w0), (h1, w1) = sizes[s - 1], sizes[s]
            u = _resize(u, sizes[s - 1], (h1 / h0, w1 / w0))
            u = torch.cat([u[:, :2] / cfg["scale_step"], u[:, 2:]], dim=1)  # u3 is not a length
    if stats is not None:
        stats.update(levels=sizes, iterations=[k[0] for k in counts],
                     pair_iterations=[int(k[1]) for k in counts])
    return u[:, :2].permute(0, 2, 3, 1).contiguous()


def tvl1_flow(prev: np.ndarray, next: np.ndarray, params: Mapping[str, Any], *,
              device: str | torch.device | None = None, batch_size: int = 64,
              compile: bool = False) -> np.ndarray:
    """TV-L1 flow of many frame pairs with the torch backend, numpy in and out.

    Args:
        prev: ``(N, H, W) uint8`` grayscale frames at time t (or one ``(H, W)`` frame).
        next: the same at time t + 1.
        params: mapping with the keys of ``PARAM_KEYS``.
        device: where to compute (None / "auto" = CUDA when available, else CPU).
        batch_size: pairs per ``tvl1_batch`` call (memory: about 100 float32 maps of
            ``H x W`` per pair at the finest level).
        compile: see ``tvl1_batch``.

    Returns:
        ``(N, H, W, 2) float32`` (``(H, W, 2)`` for one pair), x right-positive, y down-positive.

    Raises:
        ValueError: on frames of different shapes or a ``batch_size`` < 1; see ``tvl1_batch``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    single = np.ndim(prev) == 2
    prev_t, next_t = (torch.from_numpy(np.ascontiguousarray(a)[None] if single else np.ascontiguousarray(a))
                      for a in (prev, next))
    target = resolve_device(device)
    parts = []
    for start in range(0, max(len(prev_t), 1), batch_size):
        chunk = slice(start, start + batch_size)
        parts.append(tvl1_batch(prev_t[chunk].to(target), next_t[chunk].to(target), params,
                                compile=compile).cpu().numpy())
    flow = np.concatenate(parts) if parts else np.empty((0, *prev_t.shape[1:], 2), np.float32)
    return flow[0] if single else flow


def bandwidth_floor(height: int, width: int, params: Mapping[str, Any], iterations: Sequence[float],
                    bytes_per_pixel: int = 88, hbm_bytes_per_s: float = 3.35e12) -> float:
    """Lower limit in seconds per pair of a memory-bound TV-L1 at ``height`` x ``width``.

    Only the inner iterations count (warps and medians run at most ``warps *
    outer_iterations`` times per level, the inner step up to 30 times as often).

    Args:
        height, width: frame size.
        params: TV-L1 params (``nscales``, ``scale_step``).
        iterations: inner iterations of one pair per level, finest first (as many as the
            pyramid has levels; e.g. ``stats["pair_iterations"]`` / N).
        bytes_per_pixel: bytes moved per pixel per inner iteration (88 = two fused
            kernels: read I1wx, I1wy, grad, rho_c, u (2), p (4), write u (2); then read
            u (2), p (4), write p (4); float32).
        hbm_bytes_per_s: memory bandwidth (H100 SXM: 3.35e12).

    Returns:
        Seconds per pair: ``sum over levels H_s * W_s * iterations_s * bytes / bandwidth``.

    Raises:
        ValueError: if ``iterations`` does not have one entry per pyramid level.
    """
    sizes = pyramid_sizes(height, width, params["nscales"], params["scale_step"])
    if len(iterations) != len(sizes):
        raise ValueError(f"iterations must have one entry per level ({len(sizes)}: {sizes}); "
                         f"got {len(iterations)}")
    pixels = sum(h * w * k for (h, w), k in zip(sizes, iterations))
    return pixels * bytes_per_pixel / hbm_bytes_per_s


__all__ = ["PARAM_KEYS", "bandwidth_floor", "pyramid_sizes", "resolve_device", "tvl1_batch", "tvl1_flow"]
