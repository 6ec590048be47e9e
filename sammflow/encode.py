"""HSV encoding of a flow field into the colour flow map models train on.

Convention of the original scripts (OpenCV HSV, hue 0–180):
hue = angle° / 2 (0° = +x right, 90° = +y down), saturation = 255,
value = magnitude min-max normalised to 0–255; HSV → BGR; resized with INTER_AREA.
``decode_map`` inverts the direction and the relative magnitude.
"""

from __future__ import annotations

import cv2
import numpy as np

from sammflow.flow import FlowField
from sammflow.params import INTERPOLATIONS, EncodeParams


def encode_hsv(flow: FlowField) -> np.ndarray:
    """Full-resolution HSV encoding.

    Returns
    -------
    ndarray, uint8, shape (H, W, 3), BGR
    """
    magnitude, angle = cv2.cartToPolar(flow.uv[..., 0], flow.uv[..., 1], angleInDegrees=True)
    hsv = np.empty(flow.uv.shape[:2] + (3,), dtype=np.uint8)
    hsv[..., 0] = np.round(angle / 2.0).astype(np.int32) % 180
    hsv[..., 1] = 255
    span = float(magnitude.max() - magnitude.min())
    if span > 0:
        hsv[..., 2] = np.round((magnitude - magnitude.min()) * (255.0 / span)).astype(np.uint8)
    else:  # no motion at all (or uniform motion): nothing stands out
        hsv[..., 2] = 0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def encode_flow(flow: FlowField, *, params: EncodeParams = EncodeParams()) -> np.ndarray:
    """The flow map: HSV-encoded flow resized to ``params.size``.

    Returns
    -------
    ndarray, uint8, shape (size, size, 3), BGR (write with ``cv2.imwrite``)
    """
    bgr = encode_hsv(flow)
    return cv2.resize(bgr, (params.size, params.size), interpolation=INTERPOLATIONS[params.interpolation])


def decode_map(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invert the encoding of a flow map.

    Parameters
    ----------
    bgr : ndarray, uint8, shape (H, W, 3)

    Returns
    -------
    angle : ndarray, float64, shape (H, W)
        Direction in degrees [0, 360), 0° = +x, 90° = +y (down); quantised to 2°.
    value : ndarray, float64, shape (H, W)
        Relative magnitude in [0, 1] (min-max normalised per map).
    """
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) BGR map, got {bgr.dtype} {bgr.shape}")
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    return hsv[..., 0].astype(np.float64) * 2.0, hsv[..., 2].astype(np.float64) / 255.0


def dominant_direction(bgr: np.ndarray, *, top_fraction: float = 0.05) -> float:
    """Magnitude-weighted circular mean direction (degrees) of the strongest pixels of a map."""
    angle, value = decode_map(bgr)
    threshold = np.quantile(value, 1.0 - top_fraction)
    mask = value >= max(threshold, 1e-9)
    if not mask.any():
        raise ValueError("flow map has no motion to take a direction from")
    radians = np.radians(angle[mask])
    weights = value[mask]
    return float(np.degrees(np.arctan2((weights * np.sin(radians)).sum(), (weights * np.cos(radians)).sum())) % 360.0)
