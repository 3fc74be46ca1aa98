"""Transforms: layouts, crops, normalisation per modality, the flow flip, presets, RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twostream.motion.flow import quantize
from twostream.learn.transforms import (
    FLOW_ZERO, IMAGENET_MEAN, IMAGENET_STD, center_crop, eval_preset, hflip, hwc_to_chw, normalize,
    flow_pixels, flow_rms, random_crop, train_preset,
)


def grid(h: int, w: int, c: int) -> np.ndarray:
    """``(h, w, c) uint8`` with value ``100*y + 10*x + ch`` (distinct while small)."""
    y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    return (100 * y + 10 * x + ch).astype(np.uint8)


def test_hwc_to_chw():
    x = torch.from_numpy(grid(2, 3, 4))
    out = hwc_to_chw(x)
    assert out.shape == (4, 2, 3)
    assert out[3, 1, 2] == 100 + 20 + 3


def test_center_crop_window():
    x = grid(2, 5, 1)
    np.testing.assert_array_equal(center_crop(x, 2)[..., 0], [[10, 20], [110, 120]])  # odd margin: 1 left
    np.testing.assert_array_equal(center_crop(grid(6, 6, 1), 6), grid(6, 6, 1))
    with pytest.raises(ValueError, match="crop must be in 1..2 for a 2x5 sample; got 3"):
        center_crop(x, 3)


def test_random_crop_is_seeded_and_covers_every_offset():
    x = grid(4, 5, 1)  # 3x3 windows: 2 top offsets x 3 left offsets
    torch.manual_seed(3)
    first = [random_crop(x, 3)[0, 0, 0] for _ in range(60)]
    torch.manual_seed(3)
    again = [random_crop(x, 3)[0, 0, 0] for _ in range(60)]
    assert first == again
    assert sorted(set(int(v) for v in first)) == [0, 10, 20, 100, 110, 120]


def test_normalize_images_with_imagenet_constants():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2).expand(3, 1, 2)
    for modality in ("rgb", "sg3i"):
        out = normalize(x, modality)
        assert out.dtype == torch.float32 and out.shape == (3, 1, 2)
        for c in range(3):
            assert out[c, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], abs=1e-6)
            assert out[c, 0, 1].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], abs=1e-6)
    with pytest.raises(ValueError, match="rgb samples have 3 channels"):
        normalize(torch.zeros(4, 1, 1, dtype=torch.uint8), "rgb")


SCALE = 0.5  # a flow scale in pixels


def test_normalize_flow_zero_motion_is_exactly_zero_and_symmetric():
    assert int(quantize(np.zeros((1, 2), np.float32), 20.0)[0, 0]) == FLOW_ZERO
    q = torch.tensor([128, 255, 0, 127, 129, 138], dtype=torch.uint8).view(6, 1, 1)
    out = normalize(q, "flow", bound=20.0, scale=SCALE).view(-1)
    step = 40 / 255 / SCALE  # one quantisation step, scaled
    assert out[0].item() == 0.0  # zero motion is exactly 0, so a flip leaves a still pixel still
    np.testing.assert_allclose(out.numpy(), [0, 127 * step, -128 * step, -step, step, 10 * step], rtol=1e-6)
    assert out[3].item() == -out[4].item()  # 127 and 129 mirror about zero
    flipped = hflip(normalize(q.view(2, 3, 1).expand(2, 3, 2), "flow", 20.0, SCALE), "flow")
    assert flipped[0, 0].tolist() == [0.0, 0.0] and flipped[1, 0].tolist() == [out[3].item()] * 2
    with pytest.raises(ValueError, match="bound > 0; got None"):
        normalize(q, "flow", scale=SCALE)
    with pytest.raises(ValueError, match=r"scale > 0 \(pixels, fitted on the train split\); got None"):
        normalize(q, "flow", bound=20.0)
    with pytest.raises(ValueError, match="modality must be one of rgb, sg3i, flow; got 'depth'"):
        normalize(q, "depth")


def test_flow_rms_is_the_scale_of_unit_rms_inputs():
    q = np.array([[[128, 138], [118, 128]]], dtype=np.uint8)  # (H=1, W=2, 2): 0, +10, -10, 0 steps
    step = 40 / 255
    np.testing.assert_allclose(flow_pixels(q, 20.0).reshape(-1), [0, 10 * step, -10 * step, 0], rtol=1e-6)
    rms = flow_rms([q, np.full_like(q, 128)], 20.0)  # 2 of 8 values at 10 steps
    assert rms == pytest.approx(10 * step * 0.5, rel=1e-6)
    x = normalize(torch.from_numpy(q.transpose(2, 0, 1).copy()), "flow", 20.0, rms)
    assert float(x.square().mean().sqrt()) == pytest.approx(2 ** 0.5, rel=1e-5)  # 4 values, 2 moving
    with pytest.raises(ValueError, match="all zero motion"):
        flow_rms([np.full((2, 2, 2), 128, np.uint8)], 20.0)
    with pytest.raises(ValueError, match="at least one flow sample"):
        flow_rms([], 20.0)


def test_flow_flip_mirrors_and_negates_x_channels():
    x = torch.arange(4 * 2 * 3, dtype=torch.float32).view(4, 2, 3) - 10  # (2L=4, H=2, W=3)
    out = hflip(x, "flow")
    for c in range(4):
        sign = -1 if c % 2 == 0 else 1  # channels x0, y0, x1, y1
        for h in range(2):
            for w in range(3):
                assert out[c, h, w] == sign * x[c, h, 2 - w]
    one = torch.tensor([[[1.0, 2.0, -3.0]], [[4.0, -5.0, 6.0]]])  # x and y of one 1x3 field
    assert hflip(one, "flow").tolist() == [[[3.0, -2.0, -1.0]], [[6.0, -5.0, 4.0]]]
    np.testing.assert_array_equal(hflip(x, "rgb").numpy(), x.flip(-1).numpy())  # no negation
    np.testing.assert_array_equal(x.numpy(), (torch.arange(24.0).view(4, 2, 3) - 10).numpy())  # input kept


def test_eval_preset_is_centre_crop_and_deterministic():
    x = grid(6, 7, 4)
    preset = eval_preset("flow", 4, bound=20.0, scale=SCALE)
    out = preset(x)
    assert out.shape == (4, 4, 4) and out.dtype == torch.float32
    expected = torch.from_numpy(flow_pixels(x[1:5, 1:5], 20.0) / SCALE).permute(2, 0, 1)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(preset(x), out, rtol=0, atol=0)


def test_train_preset_flips_half_the_time_and_follows_torch_seed():
    x = grid(4, 4, 3)
    preset = train_preset("rgb", 4)  # full-size crop: only the flip is random
    plain = eval_preset("rgb", 4)(x)
    torch.manual_seed(0)
    outs = [preset(x) for _ in range(400)]
    flipped = [bool(torch.equal(o, hflip(plain, "rgb"))) for o in outs]
    assert all(f or torch.equal(o, plain) for f, o in zip(flipped, outs))
    assert 160 < sum(flipped) < 240
    torch.manual_seed(0)
    assert [bool(torch.equal(preset(x), hflip(plain, "rgb"))) for _ in range(400)] == flipped


def test_preset_arguments_checked():
    with pytest.raises(ValueError, match="flow needs its quantisation bound > 0; got None"):
        train_preset("flow", 4, scale=SCALE)
    with pytest.raises(ValueError, match="flow needs its scale > 0"):
        train_preset("flow", 4, bound=20.0)
    with pytest.raises(ValueError, match="crop must be >= 1; got 0"):
        eval_preset("rgb", 0)
    with pytest.raises(ValueError, match=r"sg3i samples have 3 channels; got \(6, 6, 4\)"):
        train_preset("sg3i", 4)(grid(6, 6, 4))


def reference_preset(x: np.ndarray, modality: str, crop: int, train: bool, bound: float | None = None,
                     scale: float | None = None) -> np.ndarray:
    """The preset written plainly: the same draws (top, left, then the flip), the float32
    window, ``(q + shift) * mul`` with the constants computed as ``normalize`` does, then the
    mirror and, for flow, the x channels negated. ``(H, W, C) uint8 -> (C, crop, crop) float32``."""
    h, w, _ = x.shape
    if train:
        top, left = int(torch.randint(h - crop + 1, ())), int(torch.randint(w - crop + 1, ()))
    else:
        top, left = (h - crop) // 2, (w - crop) // 2
    q = x[top:top + crop, left:left + crop].astype(np.float32).transpose(2, 0, 1)  # (C, crop, crop)
    if modality == "flow":
        shift, mul = np.float32(-FLOW_ZERO), np.float32(2 * bound / 255 / scale)
    else:
        shift = (np.float32(-255) * np.array(IMAGENET_MEAN, np.float32)).reshape(3, 1, 1)
        mul = (np.float32(1) / (np.float32(255) * np.array(IMAGENET_STD, np.float32))).reshape(3, 1, 1)
    out = (q + shift) * mul
    if train and float(torch.rand(())) < 0.5:
        out = out[:, :, ::-1].copy()
        if modality == "flow":
            out[0::2] = -out[0::2]
    return out


@pytest.mark.parametrize("modality,channels", [("rgb", 3), ("sg3i", 3), ("flow", 4), ("flow", 10)])
@pytest.mark.parametrize("train", [True, False])
def test_preset_equals_the_plain_reference_bit_for_bit_with_the_same_draws(modality, channels, train):
    # Tolerance 0: both compute float32(q) + shift, then * mul, in float32, with the same
    # constants; the preset flips the uint8 window instead of the floats (a permutation, exact)
    # and folds the flow negation into mul, and a * -m == -(a * m) exactly in IEEE 754.
    x = np.random.default_rng(channels).integers(0, 256, (9, 11, channels), dtype=np.uint8)
    bound, scale = (20.0, 0.7) if modality == "flow" else (None, None)
    preset = (train_preset if train else eval_preset)(modality, 6, bound, scale)
    flips = set()
    for seed in range(24):
        torch.manual_seed(seed)
        out = preset(x)
        after = torch.get_rng_state()
        torch.manual_seed(seed)
        expected = reference_preset(x, modality, 6, train, bound, scale)
        assert torch.equal(torch.get_rng_state(), after)  # the same draws, no more, no fewer
        assert out.dtype == torch.float32 and out.shape == (channels, 6, 6) and out.is_contiguous()
        np.testing.assert_array_equal(out.numpy(), expected)
        torch.manual_seed(seed)  # and the public tensor functions, composed as the preset used to
        window = random_crop(x, 6) if train else center_crop(x, 6)
        plain = normalize(torch.from_numpy(hwc_to_chw(window).astype(np.float32)), modality, bound, scale)
        flipped = train and float(torch.rand(())) < 0.5
        flips.add(flipped)
        torch.testing.assert_close(out, hflip(plain, modality) if flipped else plain, rtol=0, atol=0)
    assert flips == ({True, False} if train else {False})
    assert x.flags.writeable and preset(x).data_ptr() != preset(x).data_ptr()  # a new tensor each call


def test_view_windows_centre_long_side_and_ten_crops():
    from twostream.learn.transforms import Window, view_windows

    assert view_windows(8, 12, 6, 1) == [Window(1, 3, 6, 6)]
    assert view_windows(8, 12, 6, 3) == [Window(1, 0, 6, 6), Window(1, 3, 6, 6), Window(1, 6, 6, 6)]
    assert view_windows(12, 8, 6, 3) == [Window(0, 1, 6, 6), Window(3, 1, 6, 6), Window(6, 1, 6, 6)]
    ten = view_windows(8, 12, 6, 10)
    corners = [(0, 0), (0, 6), (2, 0), (2, 6), (1, 3)]
    assert [(w.top, w.left) for w in ten] == corners + corners
    assert [w.flip for w in ten] == [False] * 5 + [True] * 5
    with pytest.raises(ValueError, match="crops must be one of 1, 3, 10; got 5"):
        view_windows(8, 12, 6, 5)
    with pytest.raises(ValueError, match="crop must be in 1..8"):
        view_windows(8, 12, 9, 1)


def test_views_are_the_preset_applied_to_each_window():
    from twostream.learn.transforms import Window

    q = quantize(np.random.default_rng(3).normal(0, 4, (8, 12, 4)).astype(np.float32), 20.0)
    preset = eval_preset("flow", 6, bound=20.0, scale=SCALE)
    views = preset.views(q, 10)
    assert views.shape == (10, 4, 6, 6) and views.dtype == torch.float32
    torch.testing.assert_close(views[4], preset(q), rtol=0, atol=0)  # the centre crop is the eval preset's
    corner = normalize(hwc_to_chw(torch.from_numpy(q[2:8, 6:12].copy())), "flow", 20.0, SCALE)
    torch.testing.assert_close(views[3], corner, rtol=0, atol=0)
    torch.testing.assert_close(views[8], hflip(corner, "flow"), rtol=0, atol=0)  # mirrored, x negated
    assert preset.apply(q, Window(2, 6, 6, 6, True)).equal(views[8])


def test_multiscale_windows_follow_tsn_sizes_and_places():
    from twostream.learn.transforms import fixed_offsets, scale_pairs

    # short side 256, scales 1, .875, .75, .66 -> 256, 224 (snapped to the crop), 192, 168
    pairs = scale_pairs(256, 340, 224)
    assert set(pairs) == {(256, 256), (256, 224), (224, 256), (224, 224), (224, 192), (192, 224),
                          (192, 192), (192, 168), (168, 192), (168, 168)}
    offsets = fixed_offsets(256, 340, 192, 224)
    assert len(offsets) == 13 and offsets[:5] == [(0, 0), (0, 116), (64, 0), (64, 116), (32, 58)]
    preset = train_preset("rgb", 224, augment="multiscale")
    torch.manual_seed(0)
    drawn = [preset.draw(256, 340) for _ in range(400)]
    assert {(w.height, w.width) for w in drawn} == set(pairs)  # every size is drawn, no other
    assert all((w.top, w.left) in fixed_offsets(256, 340, w.height, w.width) for w in drawn)
    assert 150 < sum(w.flip for w in drawn) < 250
    torch.manual_seed(0)
    assert [preset.draw(256, 340) for _ in range(400)] == drawn  # torch's RNG decides


def test_multiscale_resizes_and_scales_flow_by_the_resize_factors():
    from twostream.learn.transforms import Window

    # uniform motion (+4 px right, -2 px down) everywhere: after resizing a 12 x 8 window to 6 x 6
    # the motion is (4 * 6/8, -2 * 6/12) = (3, -1) pixels of the network's input
    q = np.empty((16, 16, 2), np.uint8)
    q[..., 0], q[..., 1] = quantize(np.float32(4.0), 20.0), quantize(np.float32(-2.0), 20.0)
    preset = train_preset("flow", 6, bound=20.0, scale=1.0, augment="multiscale")
    out = preset.apply(q, Window(2, 4, 12, 8))
    step = 40 / 255  # the quantisation step
    x, y = flow_pixels(q[0, 0, 0], 20.0), flow_pixels(q[0, 0, 1], 20.0)
    np.testing.assert_allclose(out[0].numpy(), x * 6 / 8, atol=1e-5)
    np.testing.assert_allclose(out[1].numpy(), y * 6 / 12, atol=1e-5)
    assert abs(x - 4.0) <= step and abs(y + 2.0) <= step
    flipped = preset.apply(q, Window(2, 4, 12, 8, True))
    np.testing.assert_allclose(flipped[0].numpy(), -x * 6 / 8, atol=1e-5)  # a flip still negates x
    rgb = train_preset("rgb", 6, augment="multiscale").apply(grid(16, 16, 3), Window(0, 0, 12, 12))
    assert rgb.shape == (3, 6, 6)
    with pytest.raises(ValueError, match="augment must be one of crop, multiscale; got 'jitter'"):
        train_preset("rgb", 6, augment="jitter")
    with pytest.raises(ValueError, match="outside"):
        preset.apply(q, Window(10, 0, 12, 8))
