"""HSV encoding of a flow field into the exported map, and decoding it back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sammflow.encode import decode_map, dominant_direction, encode_flow, encode_hsv
from sammflow.flow import FlowField
from sammflow.params import EncodeParams


def _quadrant_flow(size: int = 224) -> tuple[FlowField, dict[tuple[int, int], float]]:
    """Four quadrants moving right, down, left-up and up-right, magnitude rising left to right."""
    half = size // 2
    angles = {(0, 0): 0.0, (0, 1): 90.0, (1, 0): 225.0, (1, 1): 300.0}  # (row, col) of quadrant → degrees
    uv = np.zeros((size, size, 2), np.float32)
    magnitude = np.linspace(1.0, 3.0, size, dtype=np.float32)[None, :]
    for (r, c), deg in angles.items():
        rows, cols = slice(r * half, (r + 1) * half), slice(c * half, (c + 1) * half)
        uv[rows, cols, 0] = magnitude[:, cols] * np.cos(np.radians(deg))
        uv[rows, cols, 1] = magnitude[:, cols] * np.sin(np.radians(deg))
    return FlowField(uv), angles


def test_encoding_convention_hue_is_half_the_angle():
    right = FlowField(np.dstack([np.ones((8, 8), np.float32) * np.linspace(0, 2, 8, dtype=np.float32), np.zeros((8, 8), np.float32)]))
    bgr = encode_hsv(right)
    b, g, r = bgr[0, -1]
    assert (b, g, r) == (0, 0, 255)  # 0° → hue 0 → red, at full value where the magnitude peaks
    hsv = cv2.cvtColor(encode_hsv(FlowField(np.dstack([np.zeros((4, 4), np.float32), np.full((4, 4), 2.0, np.float32)]))), cv2.COLOR_BGR2HSV)
    assert hsv[..., 2].max() == 0  # uniform motion: min-max value is 0 everywhere


def test_value_is_min_max_normalised_magnitude():
    flow, _ = _quadrant_flow()
    hsv = cv2.cvtColor(encode_hsv(flow), cv2.COLOR_BGR2HSV)
    assert hsv[..., 2].max() == 255 and hsv[..., 2].min() == 0
    # value rises with magnitude, which rises left to right
    assert np.all(np.diff(hsv[10, :, 2].astype(int)) >= -1)


def test_zero_flow_encodes_black():
    bgr = encode_flow(FlowField(np.zeros((50, 50, 2), np.float32)))
    assert bgr.shape == (28, 28, 3) and bgr.max() == 0


def test_written_png_decodes_to_the_encoded_directions(tmp_path):
    flow, angles = _quadrant_flow()
    bgr = encode_flow(flow, params=EncodeParams(size=28))
    path = tmp_path / "sub006_006_1_2.png"
    assert cv2.imwrite(str(path), bgr)
    back = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert back.shape == (28, 28, 3)
    angle, value = decode_map(back)
    for (r, c), deg in angles.items():
        # a pixel well inside the quadrant (INTER_AREA mixes only same-direction pixels there)
        y, x = r * 14 + 7, c * 14 + 10
        assert value[y, x] > 0.3
        error = abs((angle[y, x] - deg + 180) % 360 - 180)
        assert error <= 4.0, (r, c, angle[y, x], deg)  # hue is quantised to 2°, plus HSV↔BGR rounding


def test_dominant_direction_of_a_single_motion():
    uv = np.zeros((64, 64, 2), np.float32)
    uv[20:30, 30:40] = (np.cos(np.radians(250)) * 2, np.sin(np.radians(250)) * 2)
    assert abs(dominant_direction(encode_flow(FlowField(uv))) - 250) < 4


def test_decode_refuses_grey():
    with pytest.raises(ValueError, match="BGR"):
        decode_map(np.zeros((28, 28), np.uint8))
