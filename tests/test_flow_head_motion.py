"""Head-motion compensation (``FlowParams.head_motion``): the nose region's median flow is the
global head motion left after alignment, and it is subtracted from the whole field."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sammflow.flow import NOSE_REGION, compute_flow, head_motion
from sammflow.params import FlowParams

#: Global head motion left after alignment, crop px, and a local brow raise (vertical bump).
SHIFT = (0.6, -0.4)
BROW = (80, 60)  # x, y of the bump centre, crop px: above the nose region
BUMP = 2.0


def _nose(uv: np.ndarray) -> np.ndarray:
    h, w = uv.shape[:2]
    x1, y1, x2, y2 = NOSE_REGION
    return uv[int(y1 * h):int(y2 * h), int(x1 * w):int(x2 * w)].reshape(-1, 2)


@pytest.fixture(scope="module")
def pair(face_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 224 px face crop and the same face moved by ``SHIFT`` everywhere plus a brow bump."""
    onset = cv2.resize(face_image[40:200, 160:300], (224, 224), interpolation=cv2.INTER_AREA)
    ys, xs = np.mgrid[0:224, 0:224].astype(np.float32)
    bump = BUMP * np.exp(-((xs - BROW[0]) ** 2 + (ys - BROW[1]) ** 2) / (2 * 12.0 ** 2))
    apex = cv2.remap(onset, xs - SHIFT[0], ys - SHIFT[1] - bump, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    return onset, apex


def test_head_motion_is_the_median_of_the_nose_region():
    uv = np.zeros((100, 100, 2), np.float32)
    uv[...] = (0.7, -0.3)
    uv[10:30, 10:30, 1] += 3.0  # the brows move: outside the nose region
    uv[45:50, 45:50] += 5.0  # a quarter of the nose region moves too: the median ignores it
    assert head_motion(uv) == pytest.approx((0.7, -0.3), abs=1e-6)


def test_without_compensation_the_nose_shows_the_global_shift(pair):
    flow = compute_flow(*pair, params=FlowParams())
    assert np.median(_nose(flow.uv), axis=0) == pytest.approx(SHIFT, abs=0.05)  # measured 0.031 / 0.026 off


def test_compensation_subtracts_the_nose_median_everywhere(pair):
    raw = compute_flow(*pair, params=FlowParams())
    compensated = compute_flow(*pair, params=FlowParams(head_motion=True))
    np.testing.assert_allclose(compensated.uv, raw.uv - head_motion(raw.uv), atol=1e-6)
    assert np.abs(np.median(_nose(compensated.uv), axis=0)).max() < 1e-6
    # the brow raise stays, the global shift is gone from it: x was ≈ 0.49, is ≈ -0.08 (truth 0)
    brow = compensated.uv[BROW[1], BROW[0]]
    assert abs(brow[0]) < 0.12 and abs(raw.uv[BROW[1], BROW[0], 0]) > 0.4
    assert brow[1] > 0.75 * BUMP  # measured 1.58 of 2.0 (Farnebäck smooths the peak)
