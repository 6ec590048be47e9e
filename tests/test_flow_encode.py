"""Farnebäck flow and its HSV encoding, against known displacement fields."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers import place
from sammflow.encode import decode_map, dominant_direction, encode_flow, encode_hsv
from sammflow.flow import FlowField, compute_flow
from sammflow.params import EncodeParams, FlowParams


@pytest.fixture(scope="module")
def crop(face_image: np.ndarray) -> np.ndarray:
    return cv2.resize(face_image[40:200, 150:300], (224, 224), interpolation=cv2.INTER_AREA)


def _interior(a: np.ndarray, border: int = 24) -> np.ndarray:
    return a[border:-border, border:-border]


@pytest.mark.parametrize("shift, direction", [((2.0, 0.0), 0.0), ((0.0, 2.0), 90.0), ((-1.5, -1.5), 225.0), ((1.0, -2.0), 296.57)])
def test_translation_gives_its_displacement_and_direction(crop, shift, direction):
    moved = place(crop, canvas=crop.shape, at=shift)
    flow = compute_flow(crop, moved)
    mean = _interior(flow.uv).reshape(-1, 2).mean(axis=0)
    # Farnebäck on a textured face: mean displacement within 0.2 px of the truth
    assert np.allclose(mean, shift, atol=0.2)
    angle = np.degrees(np.arctan2(mean[1], mean[0])) % 360
    assert min(abs(angle - direction), 360 - abs(angle - direction)) < 5


def test_local_motion_is_found_where_it_happens(crop):
    # a Gaussian bump moving pixels 2 px down around (150, 70), nothing elsewhere
    ys, xs = np.mgrid[0:224, 0:224].astype(np.float32)
    weight = np.exp(-((xs - 150) ** 2 + (ys - 70) ** 2) / (2 * 14.0**2))
    moved = cv2.remap(crop, xs, ys - 2.0 * weight.astype(np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    flow = compute_flow(crop, moved)
    centre = flow.uv[64:77, 144:157].reshape(-1, 2).mean(axis=0)
    assert centre[1] > 1.2 and abs(centre[0]) < 0.4  # down
    far = flow.magnitude[150:210, 20:80]
    assert far.mean() < 0.1
    assert 80 < flow.angle[70, 150] < 100


def test_identical_frames_give_zero_flow(crop):
    flow = compute_flow(crop, crop)
    # zero wherever there is texture; Farnebäck's local fits are ill-posed in the few flat,
    # saturated pixels (≈ 0.4 % of this crop), where it returns small spurious vectors
    assert np.percentile(flow.magnitude, 95) < 1e-3
    assert (flow.magnitude > 0.05).mean() < 0.01
    assert flow.magnitude.mean() < 0.01


def test_flow_refuses_mismatched_or_colour_input(crop):
    with pytest.raises(ValueError, match="differ in shape"):
        compute_flow(crop, crop[:100])
    with pytest.raises(ValueError, match="grey uint8"):
        compute_flow(np.dstack([crop] * 3), crop)


def test_flow_parameters_matter(crop):
    moved = place(crop, canvas=crop.shape, at=(1.5, 0.5))
    a = compute_flow(crop, moved, params=FlowParams()).uv
    b = compute_flow(crop, moved, params=FlowParams(winsize=31, levels=1)).uv
    assert not np.allclose(a, b)


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
