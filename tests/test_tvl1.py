"""Torch TV-L1: its building blocks against OpenCV's, known shifts, agreement with OpenCV's
DualTVL1 on demo clips, batching, inputs and errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import shifted, texture
from twostream.motion import tvl1
from twostream.runtime.config import DemoConfig
from twostream.ingest.demo import CLASSES, render_video, video_seeds
from twostream.motion.flow import compute_flow
from twostream.motion.tvl1 import bandwidth_floor, pyramid_sizes, tvl1_batch, tvl1_flow

# OpenCV's own TV-L1 parameters, and params.yaml's (the same but epsilon 0.05)
OPENCV = {"tau": 0.25, "lambda_": 0.15, "theta": 0.3, "nscales": 5, "warps": 5, "epsilon": 0.01,
          "inner_iterations": 30, "outer_iterations": 10, "scale_step": 0.8, "gamma": 0.0,
          "median_filtering": 5}
PROJECT = {**OPENCV, "epsilon": 0.05}


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is as fast, and kinder to a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def demo_clip(class_index: int, size: int = 64) -> np.ndarray:
    """``(18, size, size) uint8`` grayscale frames 1/6 s apart of a 3-s demo video."""
    cfg = DemoConfig(classes=12, videos_per_class=1, seconds=3.0, width=128, height=96, fps=30,
                     train_fraction=0.6, test_fraction=0.3, layout="hmdb51", workers=1)
    video = render_video(CLASSES[class_index], cfg, video_seeds(0, class_index, 0)[1])[::5]
    return np.stack([cv2.cvtColor(cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
                     for f in video])


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))[None, None]


def test_pyramid_sizes_round_like_opencv_and_stop_under_16_px():
    assert pyramid_sizes(64, 64, 5, 0.8) == [(64, 64), (51, 51), (41, 41), (33, 33), (26, 26)]
    assert pyramid_sizes(240, 320, 5, 0.8) == [(240, 320), (192, 256), (154, 205), (123, 164), (98, 131)]
    assert pyramid_sizes(20, 40, 5, 0.8) == [(20, 40), (16, 32)]  # 13 px would be next
    assert pyramid_sizes(64, 64, 1, 0.8) == [(64, 64)]


def test_resize_matches_cv2_resize_both_ways():
    image = np.random.default_rng(0).uniform(0, 255, (51, 64)).astype(np.float32)
    down = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    assert down.shape == (41, 51)
    ours = tvl1._resize(nchw(image), (41, 51), (1.25, 1.25))[0, 0].numpy()
    np.testing.assert_allclose(ours, down, atol=1e-3)
    up = cv2.resize(down, (64, 51), interpolation=cv2.INTER_LINEAR)
    ours = tvl1._resize(nchw(down), (51, 64), (41 / 51, 51 / 64))[0, 0].numpy()
    np.testing.assert_allclose(ours, up, atol=1e-3)


def test_warp_matches_cv2_remap_cubic_with_zero_border():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (40, 48)).astype(np.float32)
    flow = rng.normal(0, 3, (40, 48, 2)).astype(np.float32)  # many samples fall outside
    xs = (np.arange(48)[None] + flow[..., 0]).astype(np.float32)
    ys = (np.arange(40)[:, None] + flow[..., 1]).astype(np.float32)
    expected = cv2.remap(image, xs, ys, cv2.INTER_CUBIC)  # constant 0 border
    ours = tvl1._warp(nchw(image), torch.from_numpy(flow).permute(2, 0, 1)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=5e-3)


def test_median_is_cv2_median_blur_exactly():
    values = np.random.default_rng(2).normal(0, 2, (2, 23, 31)).astype(np.float32)
    values[1, :5] = np.round(values[1, :5])  # ties
    for size in (3, 5):
        for use_opencv in (True, False):  # CPU's path, and the GPU's stacked median
            ours = tvl1._median(torch.from_numpy(values)[None], size, use_opencv)[0].numpy()
            for c in range(2):
                np.testing.assert_array_equal(ours[c], cv2.medianBlur(values[c], size))


def test_known_shifts_recovered_with_signs():
    shifts = [(0.5, -0.25), (-0.75, 0.5), (1.0, 0.0), (-2.0, 1.0)]
    image = texture(64, 64, seed=0)
    nexts = np.stack([shifted(image, dx, dy) for dx, dy in shifts])
    flow = tvl1_batch(torch.from_numpy(np.stack([image] * len(shifts))), torch.from_numpy(nexts), OPENCV)
    assert flow.shape == (4, 64, 64, 2) and flow.dtype == torch.float32
    for (dx, dy), field in zip(shifts, flow.numpy()):
        mean = field[8:-8, 8:-8].reshape(-1, 2).mean(axis=0)
        assert abs(mean[0] - dx) < 0.1 and abs(mean[1] - dy) < 0.1, (dx, dy, mean)
        assert np.sign(np.round(mean, 1)).tolist() == np.sign([dx, dy]).tolist()


def test_integer_shift_is_opencv_to_float_precision():
    image = texture(64, 64, seed=0)
    moved = shifted(image, -2.0, 1.0)
    ours = tvl1_flow(image, moved, OPENCV)
    assert ours.shape == (64, 64, 2) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, compute_flow(image, moved, OPENCV), atol=1e-3)


@pytest.mark.parametrize("class_index", [0, 5])
def test_agrees_with_opencv_on_demo_clips(class_index):
    frames = demo_clip(class_index)[:5]  # 4 consecutive 6-fps pairs
    ours = tvl1_batch(torch.from_numpy(frames[:-1]), torch.from_numpy(frames[1:]), PROJECT).numpy()
    theirs = np.stack([compute_flow(a, b, PROJECT) for a, b in zip(frames[:-1], frames[1:])])
    epe = np.linalg.norm(ours - theirs, axis=-1).mean()
    assert np.abs(theirs).max() > 1.0  # the clips do move
    assert epe <= 0.15, f"clip of class {class_index}: mean endpoint error {epe:.4f} px"


def test_batch_equals_each_pair_alone():
    frames = demo_clip(2)[:4]
    stats: dict = {}
    batch = tvl1_batch(torch.from_numpy(frames[:-1]), torch.from_numpy(frames[1:]), PROJECT, stats=stats)
    for k in range(3):
        alone = tvl1_batch(torch.from_numpy(frames[k:k + 1]), torch.from_numpy(frames[k + 1:k + 2]), PROJECT)
        # one pair alone and in a batch of three take tensors of other shapes, whose SIMD loops may
        # round a few values differently on other CPUs; a pair frozen at another iteration than
        # alone would differ by orders of magnitude more than this
        np.testing.assert_allclose(batch[k].numpy(), alone[0].numpy(), rtol=0, atol=1e-5)
    assert stats["levels"] == pyramid_sizes(64, 64, 5, 0.8)
    assert len(stats["iterations"]) == 5 and len(stats["pair_iterations"]) == 5
    for run, active in zip(stats["iterations"], stats["pair_iterations"]):
        assert 5 <= run <= 5 * 10 * 30 and run <= active <= 3 * run  # >= 1 per warp; frozen pairs not counted


def test_gpu_code_path_gives_the_same_flow(monkeypatch):
    """What a GPU runs (host checks every few steps, always masked; stacked median), on CPU."""
    frames = demo_clip(3)[:4]
    prev, nxt = torch.from_numpy(frames[:-1]), torch.from_numpy(frames[1:])
    cpu_path = tvl1_batch(prev, nxt, PROJECT)
    median = tvl1._median
    monkeypatch.setattr(tvl1, "_median", lambda flow, size: median(flow, size, use_opencv=False))
    np.testing.assert_array_equal(tvl1_batch(prev, nxt, PROJECT, sync_every=7).numpy(), cpu_path.numpy())


def test_numpy_entry_float_frames_and_chunks():
    frames = demo_clip(1)[:4]
    whole = tvl1_flow(frames[:-1], frames[1:], PROJECT, batch_size=8)
    assert whole.shape == (3, 64, 64, 2) and whole.dtype == np.float32
    np.testing.assert_allclose(tvl1_flow(frames[:-1], frames[1:], PROJECT, batch_size=2), whole, atol=1e-5)
    as_float = tvl1_batch(torch.from_numpy(frames[:-1] / np.float32(255)),
                          torch.from_numpy(frames[1:] / np.float32(255)), PROJECT).numpy()
    np.testing.assert_allclose(as_float, whole, atol=1e-3)  # float frames are 0..1, as in OpenCV
    assert tvl1_flow(frames[:0], frames[:0], PROJECT).shape == (0, 64, 64, 2)


def test_gamma_and_no_median_run_like_opencv():
    image = texture(32, 32, seed=3)
    moved = np.clip(shifted(image, 1.0, -0.5).astype(np.int16) + 12, 0, 255).astype(np.uint8)  # brighter
    params = {**OPENCV, "gamma": 0.1, "median_filtering": 1, "nscales": 3}
    ours = tvl1_flow(image, moved, params)
    epe = np.linalg.norm(ours - compute_flow(image, moved, params), axis=-1).mean()
    assert epe < 0.05, epe


@pytest.mark.parametrize("fails_when", ["wrapping", "running"])
def test_compile_falls_back_to_eager(monkeypatch, caplog, fails_when):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch, "compile", broken if fails_when == "wrapping" else lambda fn, **kw: broken)
    monkeypatch.setattr(tvl1, "_compiled", {})
    image = texture(32, 32, seed=4)
    moved = shifted(image, 1.0, 0.0)
    params = {**PROJECT, "nscales": 2}
    compiled = tvl1_flow(image, moved, params, compile=True)
    np.testing.assert_array_equal(compiled, tvl1_flow(image, moved, params))
    assert caplog.text.count("torch.compile unavailable (RuntimeError: no compiler)") == 1


def test_bad_inputs_name_the_problem():
    frames = torch.zeros(2, 16, 16, dtype=torch.uint8)
    with pytest.raises(KeyError, match="inner_iterations"):
        tvl1_batch(frames, frames, {k: v for k, v in PROJECT.items() if k != "inner_iterations"})
    with pytest.raises(ValueError, match=r"\(N, H, W\) of one shape; got \(2, 16, 16\) and \(2, 16, 8\)"):
        tvl1_batch(frames, frames[..., :8], PROJECT)
    with pytest.raises(ValueError, match=r"at least 3x3 pixels; got \(2, 16\)"):
        tvl1_batch(frames[:, :2], frames[:, :2], PROJECT)
    with pytest.raises(ValueError, match="uint8 .0..255. or float .0..1. of one dtype; got torch.int32"):
        tvl1_batch(frames.int(), frames.int(), PROJECT)
    with pytest.raises(ValueError, match="batch_size must be >= 1; got 0"):
        tvl1_flow(frames.numpy(), frames.numpy(), PROJECT, batch_size=0)


def test_bandwidth_floor_exact():
    # 64x64 pyramid: 4096 + 2601 + 1681 + 1089 + 676 = 10143 pixels
    seconds = bandwidth_floor(64, 64, OPENCV, [1, 1, 1, 1, 1], bytes_per_pixel=100, hbm_bytes_per_s=1e6)
    assert seconds == pytest.approx(10143 * 100 / 1e6)
    with pytest.raises(ValueError, match="one entry per level"):
        bandwidth_floor(64, 64, OPENCV, [1, 1])


def test_both_backends_take_the_same_tv_l1_keys():
    from twostream.motion.opticalflow import TVL1_KEYWORDS

    assert tvl1.PARAM_KEYS == tuple(TVL1_KEYWORDS)
