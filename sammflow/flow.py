"""Dense optical flow between the aligned onset and apex crops (Farnebäck)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sammflow.params import FlowParams


@dataclass(frozen=True)
class FlowField:
    """A dense displacement field.

    Attributes
    ----------
    uv : ndarray, float32, shape (H, W, 2)
        Displacement in crop pixels from the first image to the second: ``uv[..., 0]`` along
        +x (right), ``uv[..., 1]`` along +y (down).
    """

    uv: np.ndarray

    def __post_init__(self) -> None:
        if self.uv.ndim != 3 or self.uv.shape[2] != 2:
            raise ValueError(f"flow must have shape (H, W, 2), got {self.uv.shape}")

    @property
    def magnitude(self) -> np.ndarray:
        """(H, W) float32, crop pixels."""
        return np.hypot(self.uv[..., 0], self.uv[..., 1])

    @property
    def angle(self) -> np.ndarray:
        """(H, W) float32 degrees in [0, 360): 0° = +x (right), 90° = +y (down)."""
        return np.degrees(np.arctan2(self.uv[..., 1], self.uv[..., 0])) % 360.0


def compute_flow(onset: np.ndarray, apex: np.ndarray, *, params: FlowParams = FlowParams()) -> FlowField:
    """Farnebäck flow from ``onset`` to ``apex``.

    Parameters
    ----------
    onset, apex : ndarray, uint8, shape (H, W)
        Aligned grey crops of the same shape.

    Returns
    -------
    FlowField
        Where each onset pixel moved to in the apex crop, in crop pixels.
    """
    for name, image in (("onset", onset), ("apex", apex)):
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"{name} must be a grey uint8 (H, W) array, got {image.dtype} {image.shape}")
    if onset.shape != apex.shape:
        raise ValueError(f"onset {onset.shape} and apex {apex.shape} crops differ in shape")
    uv = cv2.calcOpticalFlowFarneback(
        onset, apex, None,
        params.pyr_scale, params.levels, params.winsize, params.iterations,
        params.poly_n, params.poly_sigma, params.flags,
    )
    if params.head_motion:
        uv = uv - head_motion(uv)
    return FlowField(uv)


#: The stable region used for head-motion compensation, as fractions of the crop (x1, y1, x2, y2):
#: the nose in an MTCNN face box, which no facial action unit moves much.
NOSE_REGION = (0.40, 0.42, 0.60, 0.62)


def head_motion(uv: np.ndarray, *, region: tuple[float, float, float, float] = NOSE_REGION) -> np.ndarray:
    """Median flow over ``region`` (fractions of the crop): the global head motion left after
    alignment, as SoftNet / MTSN estimate it from the nose.

    Returns
    -------
    ndarray, float32, shape (2,)
        ``(dx, dy)`` in crop pixels.
    """
    h, w = uv.shape[:2]
    x1, y1, x2, y2 = region
    patch = uv[int(y1 * h):max(int(y2 * h), int(y1 * h) + 1), int(x1 * w):max(int(x2 * w), int(x1 * w) + 1)]
    return np.median(patch.reshape(-1, 2), axis=0).astype(np.float32)
