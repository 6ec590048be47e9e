"""HSV encoding of a flow field into the exported map, and decoding it back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sammflow.encode import SCALES, MapScale, decode_map, dominant_direction, encode_flow, encode_hsv, interior, map_scale
from sammflow.flow import FlowField
from sammflow.params import EncodeParams, declared

MINMAX = EncodeParams(scale="minmax")


def original_encode_hsv(flow: FlowField) -> np.ndarray:
    """The original scripts' encoding (sammflow before issue 10), verbatim: the ``minmax`` scale."""
    magnitude, angle = cv2.cartToPolar(flow.uv[..., 0], flow.uv[..., 1], angleInDegrees=True)
    hsv = np.empty(flow.uv.shape[:2] + (3,), dtype=np.uint8)
    hsv[..., 0] = np.round(angle / 2.0).astype(np.int32) % 180
    hsv[..., 1] = 255
    span = float(magnitude.max() - magnitude.min())
    if span > 0:
        hsv[..., 2] = np.round((magnitude - magnitude.min()) * (255.0 / span)).astype(np.uint8)
    else:
        hsv[..., 2] = 0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def value_of(bgr: np.ndarray) -> np.ndarray:
    """HSV value (brightness), 0–255."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)[..., 2].astype(float)


def bump_flow(size: int = 224, peak: float = 2.0, artefact: float = 0.0) -> FlowField:
    """A Gaussian bump of downward motion (``peak`` px) at the brows, still elsewhere, plus, if
    ``artefact``, what Farnebäck makes of the crop's edge at a small window: a few 3 px wide
    streaks of ``artefact`` px along the top and left edges (≈ 0.3 % of the field)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    weight = np.exp(-((xs - size * 0.65) ** 2 + (ys - size * 0.3) ** 2) / (2 * (size * 0.07) ** 2))
    uv = np.dstack([np.zeros_like(weight), peak * weight]).astype(np.float32)
    if artefact:
        uv[0:3, 40:90] = (artefact, -artefact / 3)
        uv[100:140, 0:2] = (-artefact, 0.0)
    return FlowField(uv)


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
    uniform = FlowField(np.dstack([np.zeros((4, 4), np.float32), np.full((4, 4), 2.0, np.float32)]))
    hsv = cv2.cvtColor(encode_hsv(uniform, params=MINMAX), cv2.COLOR_BGR2HSV)
    assert hsv[..., 2].max() == 0  # uniform motion: min-max value is 0 everywhere
    hsv = cv2.cvtColor(encode_hsv(uniform), cv2.COLOR_BGR2HSV)
    assert (hsv[..., 2] == 255).all() and (hsv[..., 0] == 45).all()  # robust: 2 px is the scale, shown at full brightness, 90° → hue 45


def test_value_is_min_max_normalised_magnitude():
    flow, _ = _quadrant_flow()
    hsv = cv2.cvtColor(encode_hsv(flow, params=MINMAX), cv2.COLOR_BGR2HSV)
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


# ---------------------------------------------------------------- brightness scale (issue 10, item 13)


def test_the_scale_is_declared_with_its_flag_and_sidebar_widget():
    (f, p), = [(f, p) for f, p in declared(EncodeParams) if f.name == "scale"]
    assert f.default == "robust" and p.choices == SCALES == ("robust", "minmax")
    assert p.flag == "map-scale" and p.label and p.key == "map_scale" and p.output and "99th percentile" in p.help
    assert EncodeParams().hash != MINMAX.hash  # another scale, other bytes
    with pytest.raises(ValueError, match="scale must be one of"):
        EncodeParams(scale="max")


@pytest.mark.parametrize("seed", range(4))
def test_minmax_is_the_original_encoding_byte_for_byte(seed):
    rng = np.random.default_rng(seed)
    uv = rng.normal(0, 1.5, (60, 50, 2)).astype(np.float32) * rng.uniform(0, 1, (60, 50, 1)).astype(np.float32)
    for flow in (FlowField(uv), _quadrant_flow(64)[0], FlowField(np.zeros((8, 8, 2), np.float32)), bump_flow(112, artefact=30.0)):
        assert np.array_equal(encode_hsv(flow, params=MINMAX), original_encode_hsv(flow))


def test_robust_value_is_magnitude_over_the_interior_99th_percentile_clipped():
    flow, _ = _quadrant_flow(224)  # magnitude 1 → 3 px from left to right
    scale = map_scale(flow)
    magnitude = np.hypot(flow.uv[..., 0], flow.uv[..., 1])
    assert interior(magnitude).shape == (224 - 28, 224 - 28)  # 224 // 16 = 14 px left out on each side
    assert scale == MapScale("robust", 0.0, pytest.approx(float(np.percentile(magnitude[14:-14, 14:-14], 99)), rel=1e-6))
    assert 2.85 < scale.full < 2.87 < magnitude[:, :210].max()  # below the 2.87–3 px of the right edge, not in the interior
    value = value_of(encode_hsv(flow))
    expected = np.minimum(255.0, np.round(255.0 * magnitude / scale.full))
    assert np.abs(value - expected).max() <= 1  # HSV → BGR → HSV rounding
    assert (value[:, magnitude[0] >= scale.full + 0.01] == 255).all() and value.min() == round(255 / scale.full)  # clipped; 1 px → 90


def test_a_border_artefact_does_not_darken_the_map():
    """Issue 10 item 13: one bright border streak of Farnebäck (small winsize) set the min-max scale."""
    clean, streaked = bump_flow(), bump_flow(artefact=40.0)
    assert map_scale(streaked).full == map_scale(clean).full  # the interior decides
    assert 1.5 < map_scale(clean).full < 1.6  # 99th percentile of the 2 px bump (measured 1.56)
    maps = {name: value_of(encode_flow(flow)) for name, flow in (("clean", clean), ("streaked", streaked))}
    # the 28×28 map around the bump is (near) full brightness with or without the streaks, and equal away from the edge
    assert maps["streaked"][7:10, 17:20].min() >= 220 and maps["streaked"][8, 18] == 255
    assert np.array_equal(maps["streaked"][3:-3, 3:-3], maps["clean"][3:-3, 3:-3])
    assert maps["streaked"].mean() > 10  # measured 11.0 (clean: 9.8)
    original = value_of(encode_flow(streaked, params=MINMAX))
    assert original.mean() < 2 and original[7:10, 17:20].max() < 15  # the original: nearly black (1.5), the bump at 5 % (12)


def test_uniform_motion_has_a_direction_and_full_brightness():
    uv = np.zeros((64, 64, 2), np.float32)
    uv[...] = (np.cos(np.radians(135)) * 1.5, np.sin(np.radians(135)) * 1.5)
    bgr = encode_flow(FlowField(uv))
    assert (value_of(bgr) == 255).all()
    assert abs(dominant_direction(bgr) - 135) <= 2
    assert map_scale(FlowField(uv)).label() == "full brightness = 1.5 px"
    with pytest.raises(ValueError, match="no motion"):  # the original: black, no direction
        dominant_direction(encode_flow(FlowField(uv), params=MINMAX))


def test_motion_in_under_one_percent_of_the_interior_still_reaches_full_brightness():
    uv = np.zeros((224, 224, 2), np.float32)
    uv[100:106, 100:106] = (0.0, -0.8)  # 36 px: 0.1 % of the interior, whose 99th percentile is 0
    scale = map_scale(FlowField(uv))
    assert scale.full == pytest.approx(0.8)  # the interior's largest magnitude instead
    assert value_of(encode_hsv(FlowField(uv)))[100:106, 100:106].min() == 255
    only_border = np.zeros((224, 224, 2), np.float32)
    only_border[0:2, :] = (1.0, 0.0)  # nothing moves inside: the whole field's largest magnitude
    assert map_scale(FlowField(only_border)).full == pytest.approx(1.0)


def test_no_motion_is_black_with_both_scales_and_says_so():
    still = FlowField(np.zeros((32, 32, 2), np.float32))
    for params in (EncodeParams(), MINMAX):
        assert encode_flow(still, params=params).max() == 0
    assert map_scale(still) == MapScale("robust", 0.0, 0.0) and map_scale(still).label() == "no motion: all black"


def test_scale_labels_name_the_px_of_full_brightness():
    assert MapScale("robust", 0.0, 2.4137).label() == "full brightness = 2.41 px"
    assert MapScale("robust", 0.0, 0.012345).label() == "full brightness = 0.0123 px"
    assert MapScale("minmax", 0.0213, 3.951).label() == "black = 0.0213 px, full = 3.95 px"
    flow = bump_flow(artefact=40.0)
    assert map_scale(flow, params=MINMAX) == MapScale("minmax", 0.0, pytest.approx(40.0 * np.hypot(1, 1 / 3), rel=1e-6))


def test_decoded_value_times_the_scale_is_the_magnitude():
    flow = bump_flow(peak=2.0)
    scale = map_scale(flow)
    angle, value = decode_map(encode_hsv(flow))
    magnitude = np.hypot(flow.uv[..., 0], flow.uv[..., 1])
    below = magnitude < scale.full
    assert np.abs(value[below] * scale.full - magnitude[below]).max() <= scale.full / 255 + 1e-6  # one brightness level
    moving = magnitude > 0.2
    assert np.abs((angle[moving] - 90 + 180) % 360 - 180).max() <= 2  # hue: the direction, unchanged (down)
