"""Flow pictures: the colour wheel and HSV colour coding."""

from __future__ import annotations

import numpy as np
import pytest

from twostream.motion.flowviz import colour_wheel, flow_to_hsv


def test_flow_to_hsv_colours():
    assert colour_wheel().shape == (55, 3)
    still = flow_to_hsv(np.zeros((4, 5, 2), np.float32))
    assert still.shape == (4, 5, 3) and still.dtype == np.uint8
    assert (still == 255).all()  # no motion is white
    field = np.array([[[1, 0], [-1, 0], [0, -1], [0, 1], [0.5, 0], [2, 0]]], np.float32)
    rgb = flow_to_hsv(field, max_magnitude=1.0)[0]
    np.testing.assert_array_equal(rgb[0], [255, 0, 0])  # rightward: full red
    np.testing.assert_array_equal(rgb[4], [255, 128, 128])  # half the magnitude: half saturated
    np.testing.assert_array_equal(rgb[5], [191, 0, 0])  # beyond max_magnitude: darkened
    assert len({tuple(c) for c in rgb[:4]}) == 4  # right, left, up, down: four hues
    assert rgb[1, 0] == 0 and rgb[1, 2] == 255  # leftward is the opposite side: blue-cyan
    np.testing.assert_array_equal(flow_to_hsv(field), flow_to_hsv(field, max_magnitude=2.0))
    with pytest.raises(ValueError, match=r"\(H, W, 2\); got \(4, 2\)"):
        flow_to_hsv(np.zeros((4, 2), np.float32))
