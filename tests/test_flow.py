"""Farnebäck flow between aligned crops, against known displacement fields (head-motion
compensation: ``test_flow_head_motion.py``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers import place
from sammflow.flow import compute_flow
from sammflow.params import FlowParams


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


def test_small_window_border_artefacts_do_not_darken_the_map(crop):
    """Issue 10 item 13: at a small ``winsize`` Farnebäck's estimates at the crop's edge reach
    many times the real motion; with the original min-max brightness one of them set the scale
    and the map went nearly black. The default (robust) scale ignores them."""
    from sammflow.encode import encode_flow, map_scale
    from sammflow.params import EncodeParams

    ys, xs = np.mgrid[0:224, 0:224].astype(np.float32)
    weight = np.exp(-((xs - 80) ** 2 + (ys - 60) ** 2) / (2 * 14.0**2))
    moved = cv2.remap(crop, xs, ys + 2.0 * weight.astype(np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)  # 2 px up
    flow = compute_flow(crop, moved, params=FlowParams(winsize=3))
    edge = np.ones((224, 224), bool)
    edge[14:-14, 14:-14] = False
    assert flow.magnitude[edge].max() > 4 * flow.magnitude[~edge].max()  # the artefact (measured 17.3 px against 3.6 px inside)
    values = {scale: cv2.cvtColor(encode_flow(flow, params=EncodeParams(scale=scale)), cv2.COLOR_BGR2HSV)[..., 2].astype(float)
              for scale in ("minmax", "robust")}
    bump = (slice(6, 9), slice(9, 11))  # around (60, 80) of the crop in the 28×28 map
    assert values["minmax"].mean() < 1.5 and values["minmax"][bump].max() < 40  # measured 0.9 and 26: nearly black
    assert values["robust"].mean() > 8 and values["robust"][bump].min() > 200  # measured 9.5 and 234: the motion shows
    assert 1.5 < map_scale(flow).full < 1.7  # measured 1.61 px: the real motion's scale
