"""Draws ``static/favicon.png``, the dashboard's tab icon: the flow maps' colour wheel (hue =
direction, brightness = magnitude) on a transparent 64×64 square.

The icon ships in the repository so that the page never fetches one from the internet (a
``page_icon`` emoji or ``:material/…:`` icon is loaded from a CDN by the browser, which fails
offline). Run ``.venv/bin/python static/make_favicon.py`` to draw it again; it is deterministic
and needs only numpy and OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

FAVICON = Path(__file__).resolve().parent / "favicon.png"
SIZE = 64


def favicon(size: int = SIZE) -> np.ndarray:
    """The icon as RGBA, uint8, (size, size, 4): a colour wheel disc, anti-aliased, transparent around it."""
    centre = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xs - centre, ys - centre
    radius = np.hypot(dx, dy) / (size / 2 - 1)
    hue = (np.degrees(np.arctan2(dy, dx)) % 360) / 2  # OpenCV hue: 0-179, 0° = +x, 90° = +y (down), as the maps
    value = np.clip(0.25 + 0.75 * radius, 0, 1) * 255
    hsv = np.dstack([hue, np.full_like(hue, 255), value]).astype(np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    alpha = (np.clip((1 - radius) * (size / 2 - 1) + 0.5, 0, 1) * 255).astype(np.uint8)  # one px soft edge
    return np.dstack([rgb, alpha])


def main() -> None:
    ok, png = cv2.imencode(".png", cv2.cvtColor(favicon(), cv2.COLOR_RGBA2BGRA))
    if not ok:
        raise SystemExit("could not encode the favicon")
    FAVICON.write_bytes(png.tobytes())
    print(f"wrote {FAVICON} ({len(png)} bytes)")


if __name__ == "__main__":
    main()
