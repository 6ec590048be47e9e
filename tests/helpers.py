"""Ground-truth builders shared by the tests."""

from __future__ import annotations

import cv2
import numpy as np

from sammflow.detect import FaceBox

#: Where MTCNN finds the face in scikit-image's astronaut (512×512), rounded.
ASTRONAUT_FACE = (181, 62, 268, 172)


def place(image: np.ndarray, *, canvas: tuple[int, int], at: tuple[float, float], interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """``image`` translated by ``at`` = (x, y) px (sub-pixel allowed) into a canvas of (H, W),
    the rest filled by reflection so no artificial edge can attract a match."""
    matrix = np.float32([[1, 0, at[0]], [0, 1, at[1]]])
    return cv2.warpAffine(image, matrix, (canvas[1], canvas[0]), flags=interpolation, borderMode=cv2.BORDER_REFLECT_101)


def face_box(offset: tuple[int, int] = (0, 0)) -> FaceBox:
    x1, y1, x2, y2 = ASTRONAUT_FACE
    return FaceBox(x1 + offset[0], y1 + offset[1], x2 + offset[0], y2 + offset[1])
