"""Encoding of a flow field into the exported map (hsv, uvs, uv), the model-ready arrays, and
decoding an hsv map back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sammflow.encode import (SCALES, MapScale, decode_map, dominant_direction, encode_flow, encode_hsv, flow_arrays, interior, map_scale,
                             normalise_channels)
from sammflow.flow import FlowField, optical_strain
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
    assert f.default == "robust" and p.choices == SCALES == ("robust", "minmax", "fixed")
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


# ---------------------------------------------------------------- fixed brightness scale


FIXED = EncodeParams(scale="fixed", fixed_scale=2.0)


def test_fixed_scale_is_the_declared_px_whatever_the_flow():
    for flow in (bump_flow(peak=0.5), bump_flow(peak=4.0), FlowField(np.zeros((16, 16, 2), np.float32))):
        assert map_scale(flow, params=FIXED) == MapScale("fixed", 0.0, 2.0)
    assert map_scale(bump_flow(), params=EncodeParams(scale="fixed", fixed_scale=0.75)).full == 0.75
    assert MapScale("fixed", 0.0, 2.0).label() == "full brightness = 2 px (fixed)"
    assert MapScale("fixed", 0.0, 0.125).label() == "full brightness = 0.125 px (fixed)"


def test_fixed_value_is_magnitude_over_the_fixed_scale_clipped():
    flow, _ = _quadrant_flow(64)  # magnitude 1 → 3 px from left to right
    magnitude = np.hypot(flow.uv[..., 0], flow.uv[..., 1])
    value = value_of(encode_hsv(flow, params=FIXED))
    expected = np.minimum(255.0, np.round(255.0 * magnitude / 2.0))
    assert np.abs(value - expected).max() <= 1  # HSV → BGR → HSV rounding
    assert (value[magnitude >= 2.0] == 255).all() and value[magnitude < 1.2].max() < 160


def test_fixed_scale_shows_the_same_motion_equally_bright_in_every_clip():
    """A subtle clip and a clip with a stronger motion elsewhere: with ``fixed`` the shared motion
    has the same brightness in both maps; a per-map scale (minmax, robust) dims it in the strong clip."""
    subtle = bump_flow(peak=1.0)  # 1 px at the brows
    strong_uv = subtle.uv.copy()
    ys, xs = np.mgrid[112:224, 0:112].astype(np.float32)
    strong_uv[112:, :112, 0] += 3.0 * np.exp(-((xs - 70) ** 2 + (ys - 160) ** 2) / (2 * 12.0**2))  # plus 3 px at the mouth
    strong = FlowField(strong_uv)
    brows = (slice(5, 12), slice(15, 22))  # around (0.65, 0.3) of the crop in the 28×28 map: crop rows 40–95, columns 120–175
    fixed = [value_of(encode_flow(f, params=FIXED))[brows] for f in (subtle, strong)]
    assert np.array_equal(fixed[0], fixed[1]) and fixed[0].max() > 100  # 1 px of 2: half brightness in both
    for params in (MINMAX, EncodeParams()):
        per_map = [value_of(encode_flow(f, params=params))[brows] for f in (subtle, strong)]
        assert per_map[1].max() < 0.5 * per_map[0].max()  # the stronger clip's own scale dims the brows


def test_fixed_scale_keeps_decode_and_dominant_direction_working():
    uv = np.zeros((64, 64, 2), np.float32)
    uv[20:30, 30:40] = (np.cos(np.radians(250)) * 1.0, np.sin(np.radians(250)) * 1.0)
    bgr = encode_flow(FlowField(uv), params=FIXED)
    assert abs(dominant_direction(bgr) - 250) < 4
    _, value = decode_map(encode_hsv(FlowField(uv), params=FIXED))
    assert value[25, 35] == pytest.approx(0.5, abs=1 / 255)  # 1 px / 2 px


# ---------------------------------------------------------------- model-ready arrays and the uvs / uv maps


def ramp_flow(size: int = 224) -> FlowField:
    """u rising left to right (−1 → 2 px), v rising top to bottom (0 → 1.5 px), a strain bump at the brows."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    u = -1.0 + 3.0 * xs / (size - 1)
    v = 1.5 * ys / (size - 1)
    return FlowField(np.dstack([u, v]).astype(np.float32) + bump_flow(size, peak=2.0).uv)


def test_flow_arrays_are_u_v_strain_at_the_map_size_in_crop_px():
    arrays = flow_arrays(FlowField(np.dstack([np.full((224, 224), 1.5), np.full((224, 224), -0.5)]).astype(np.float32)))
    assert arrays.dtype == np.float32 and arrays.shape == (3, 28, 28)
    # not rescaled by the resize factor (28 / 224): still 1.5 and −0.5 crop px; a translation has no strain
    np.testing.assert_allclose(arrays[0], 1.5, rtol=1e-6)
    np.testing.assert_allclose(arrays[1], -0.5, rtol=1e-6)
    assert np.abs(arrays[2]).max() < 1e-6
    assert flow_arrays(ramp_flow(), params=EncodeParams(size=14)).shape == (3, 14, 14)


def test_flow_arrays_area_average_a_known_field():
    ys, xs = np.mgrid[0:224, 0:224].astype(np.float32)
    u = ((xs // 4) % 2).astype(np.float32)  # 4 px stripes of 0 and 1: every 8×8 block averages to 0.5
    v = 0.01 * ys  # each map row i averages crop rows 8i … 8i + 7: 0.01 · (8i + 3.5)
    arrays = flow_arrays(FlowField(np.dstack([u, v])))
    np.testing.assert_allclose(arrays[0], 0.5, atol=1e-6)
    np.testing.assert_allclose(arrays[1], 0.01 * (8 * np.arange(28) + 3.5)[:, None] * np.ones((1, 28)), atol=1e-5)
    linear = flow_arrays(FlowField(np.dstack([u, v])), params=EncodeParams(interpolation="nearest"))
    assert set(np.unique(linear[0])) <= {0.0, 1.0}  # another filter, other values: the parameter is used


def test_strain_is_computed_at_crop_resolution_then_resized():
    ys, xs = np.mgrid[0:224, 0:224].astype(np.float32)
    stretch = FlowField(np.dstack([0.02 * xs, np.zeros_like(xs)]))  # ε = 0.02 per crop px everywhere
    np.testing.assert_allclose(flow_arrays(stretch)[2], 0.02, rtol=1e-4)  # strain of the 28×28 u would be 8× that
    flow = ramp_flow()
    expected = cv2.resize(optical_strain(flow.uv), (28, 28), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(flow_arrays(flow)[2], expected)


def test_normalise_channels_min_max_each_channel_on_its_own():
    rng = np.random.default_rng(0)
    arrays = np.stack([rng.normal(0, 2, (28, 28)), rng.normal(5, 0.1, (28, 28)), np.full((28, 28), 3.0)]).astype(np.float32)
    x = normalise_channels(arrays)
    assert x.dtype == np.float32 and x.shape == (28, 28, 3)
    for c in range(2):
        assert x[..., c].min() == 0.0 and x[..., c].max() == 1.0
        expected = (arrays[c] - arrays[c].min()) / (arrays[c].max() - arrays[c].min())
        np.testing.assert_allclose(x[..., c], expected, atol=1e-6)
    assert (x[..., 2] == 0).all()  # a constant channel: all 0, not NaN
    assert normalise_channels(arrays[:2]).shape == (28, 28, 2)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        normalise_channels(arrays[0])


@pytest.mark.parametrize("channels", ["uvs", "uv"])
def test_uvs_and_uv_maps_hold_red_u_green_v_in_bgr_order(channels):
    flow = ramp_flow()
    bgr = encode_flow(flow, params=EncodeParams(channels=channels))
    assert bgr.dtype == np.uint8 and bgr.shape == (28, 28, 3) and bgr.flags["C_CONTIGUOUS"]
    arrays = flow_arrays(flow)
    expected = np.round(255 * normalise_channels(arrays)).astype(np.uint8)
    np.testing.assert_array_equal(bgr[..., 2], expected[..., 0])  # red: u
    np.testing.assert_array_equal(bgr[..., 1], expected[..., 1])  # green: v
    if channels == "uvs":
        np.testing.assert_array_equal(bgr[..., 0], expected[..., 2])  # blue: strain
        assert bgr[..., 0].max() == 255 and bgr[..., 0].min() == 0
    else:
        assert not bgr[..., 0].any()  # uv: blue is empty
    # the ramps: red rises left to right, green top to bottom (bump aside), each over the full 0–255
    assert bgr[14, -1, 2] > bgr[14, 0, 2] and bgr[-1, 3, 1] > bgr[0, 3, 1]
    assert bgr[..., 2].min() == 0 and bgr[..., 2].max() == 255 and bgr[..., 1].min() == 0 and bgr[..., 1].max() == 255


def test_uvs_png_reads_back_with_red_u(tmp_path):
    flow = ramp_flow()
    path = tmp_path / "sub006_006_1_2.png"
    assert cv2.imwrite(str(path), encode_flow(flow, params=EncodeParams(channels="uvs")))
    rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(rgb, np.round(255 * normalise_channels(flow_arrays(flow))).astype(np.uint8))


def test_uvs_map_of_no_motion_or_uniform_motion_is_black():
    for uv in (np.zeros((64, 64, 2), np.float32), np.dstack([np.full((64, 64), 1.2), np.full((64, 64), -0.4)]).astype(np.float32)):
        for channels in ("uvs", "uv"):
            assert encode_flow(FlowField(uv), params=EncodeParams(channels=channels)).max() == 0


def test_a_channel_constant_up_to_resize_rounding_is_constant():
    # area-resizing a constant −0.4 from 64 to 28 px leaves −0.4 and −0.39999998: one float32 step,
    # which a plain min-max would stretch to 0 and 1
    v = cv2.resize(np.full((64, 64), -0.4, np.float32), (28, 28), interpolation=cv2.INTER_AREA)
    assert v.max() > v.min()
    x = normalise_channels(np.stack([v, np.linspace(0, 1e-3, 28 * 28, dtype=np.float32).reshape(28, 28)]))
    assert (x[..., 0] == 0).all()
    assert x[..., 1].min() == 0 and x[..., 1].max() == 1  # a small but real variation is still stretched


def test_scale_does_not_change_uvs_maps():
    flow = ramp_flow()
    maps = [encode_flow(flow, params=EncodeParams(channels="uvs", scale=scale)) for scale in SCALES]
    assert all(np.array_equal(maps[0], m) for m in maps[1:])
    assert EncodeParams(channels="uvs", scale="minmax").hash == EncodeParams(channels="uvs").hash  # and not the hash
