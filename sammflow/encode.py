"""Encoding of a flow field into the map models train on, and into model-ready arrays.

What a map PNG holds (``EncodeParams.channels``); every map is ``params.size`` square, uint8,
BGR (``cv2.imwrite`` order):

``hsv`` (default: the original scripts)
    Direction as hue, magnitude as brightness, at crop resolution, then resized
    (``params.interpolation``, area by default). OpenCV HSV, hue 0–180: hue = angle° / 2
    (0° = +x right, 90° = +y down), saturation = 255, value = brightness from the magnitude
    (below); HSV → BGR. ``decode_map`` inverts the direction and the relative magnitude.
``uvs`` (the STSTNet / HTNet input)
    R = u, G = v, B = optical strain (``sammflow.flow.optical_strain``): the arrays of
    ``flow_arrays`` (u and v in crop px, strain computed at crop resolution, each resized to
    the map size), each min-max normalised to [0, 1] on its own (``normalise_channels``),
    times 255, rounded. In the BGR array the strain is channel 0 and u channel 2, so the
    PNG's red is u. What the map shows is each quantity's pattern, not its size: a constant
    channel (no motion) is 0.
``uv`` (OFF-ApexNet)
    R = u, G = v as in ``uvs``, B = 0.

Brightness scale of an ``hsv`` map (``EncodeParams.scale``):

``robust`` (default)
    ``value = min(255, round(255 · |uv| / s))`` with ``s`` = the 99th percentile of ``|uv|``
    over the *interior* of the field: the field without a border of ``min(H, W) // 16`` px on
    each side (14 px of a 224 crop). Zero motion is black, ``s`` px and more is full
    brightness (the strongest 1 % of the interior saturates). Farnebäck's estimates are
    unreliable within about a window of the crop's edge: at small ``winsize`` (3–7) single
    edge pixels reach 10–50 px against ≈ 2–4 px of real motion, and with min-max one such
    pixel sets the scale and the whole map goes nearly black. Those artefacts lie within
    ≈ 10 px of the edge of a 224 crop and cover far less than 1 % of it, so neither the
    percentile nor the interior lets them decide the scale. If ``s`` is 0 (at least 99 % of
    the interior does not move), the interior's largest magnitude is used, then the whole
    field's; a field without motion is black.
``minmax`` (the original scripts)
    ``value = round(255 · (|uv| − min) / (max − min))`` over the whole field; a uniform
    magnitude (including no motion) is black.
``fixed``
    ``value = min(255, round(255 · |uv| / EncodeParams.fixed_scale))``: one scale for every
    clip, so that brightness compares across clips (the same motion is equally bright in a
    subtle and in a strong clip); motion above ``fixed_scale`` px saturates.

``robust`` and ``minmax`` normalise each map on its own, as the original scripts and the
STSTNet / HTNet preprocessing do: what a model sees is the *pattern* of motion, not its
absolute size. ``map_scale`` says which magnitudes (crop px) black and full brightness
stand for, for the legend ("full brightness = 2.41 px").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sammflow.flow import FlowField, optical_strain
from sammflow.params import INTERPOLATIONS, MAP_SCALES, EncodeParams

#: The brightness scales of ``EncodeParams.scale`` (declared there).
SCALES = MAP_SCALES
#: Percentile of the interior magnitude shown at full brightness (``robust``).
PERCENTILE = 99.0
#: The border left out of the robust scale, as a fraction of the field's shorter side (floored).
BORDER_FRACTION = 1 / 16
#: A channel whose values differ by at most this fraction of its largest |value| is constant
#: (``normalise_channels``): a resize leaves a constant float32 field a few ULPs uneven, and
#: min-max would blow that rounding up to the full 0–1 range.
CONSTANT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MapScale:
    """The magnitudes (crop px) that a map's black and full brightness stand for.

    Attributes
    ----------
    method : str
        ``"robust"``, ``"minmax"`` or ``"fixed"`` (``EncodeParams.scale``).
    zero : float
        Magnitude shown black: 0 for ``robust`` and ``fixed``, the field's smallest magnitude
        for ``minmax``.
    full : float
        Magnitude shown at full brightness (``robust``, ``fixed``: larger magnitudes are
        clipped to it; ``fixed``: ``EncodeParams.fixed_scale``). ``full <= zero`` means no
        brightness at all: the whole map is black.
    """

    method: str
    zero: float
    full: float

    def value(self, magnitude: np.ndarray) -> np.ndarray:
        """HSV value (brightness) of each magnitude (float32 crop px): uint8, same shape."""
        # float32 arithmetic as in the original scripts: minmax maps are byte-identical to theirs
        span = float(np.float32(self.full) - np.float32(self.zero))
        if not span > 0:
            return np.zeros(magnitude.shape, np.uint8)
        scaled = (magnitude - np.float32(self.zero)) * (255.0 / span)
        return np.round(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)

    def label(self) -> str:
        """One line for a legend, e.g. ``"full brightness = 2.41 px"`` (crop px)."""
        if not self.full - self.zero > 0:
            return "no motion: all black" if self.method == "robust" else "uniform magnitude: all black"
        if self.method == "robust":
            return f"full brightness = {_px(self.full)} px"
        if self.method == "fixed":
            return f"full brightness = {_px(self.full)} px (fixed)"
        return f"black = {_px(self.zero)} px, full = {_px(self.full)} px"


def _px(value: float) -> str:
    """A magnitude with three significant digits (0.0123, 0.123, 1.23, 12.3)."""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def interior(field: np.ndarray) -> np.ndarray:
    """``field`` without a border of ``min(H, W) // 16`` px on each side (all of it when that is 0)."""
    border = int(min(field.shape[:2]) * BORDER_FRACTION)
    return field[border:field.shape[0] - border, border:field.shape[1] - border] if border else field


def map_scale(flow: FlowField, *, params: EncodeParams = EncodeParams()) -> MapScale:
    """The brightness scale ``encode_flow`` uses for this flow (see the module docstring).

    Parameters
    ----------
    flow : FlowField
    params : EncodeParams
        Only ``scale`` and ``fixed_scale`` are used (the scale of an ``hsv`` map).

    Returns
    -------
    MapScale
        ``full`` is the magnitude (crop px) shown at full brightness: what a legend shows.
    """
    return _scale(_polar(flow)[0], params)


def _polar(flow: FlowField) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude (crop px) and angle (degrees) of a flow, float32, as the encoding reads them."""
    return cv2.cartToPolar(flow.uv[..., 0], flow.uv[..., 1], angleInDegrees=True)


def _scale(magnitude: np.ndarray, params: EncodeParams) -> MapScale:
    if params.scale == "fixed":
        return MapScale("fixed", 0.0, float(params.fixed_scale))
    if params.scale == "minmax":
        return MapScale("minmax", float(magnitude.min()), float(magnitude.max()))
    inner = interior(magnitude)
    full = float(np.percentile(inner, PERCENTILE))
    if not full > 0:
        full = float(inner.max())
    if not full > 0:
        full = float(magnitude.max())
    return MapScale("robust", 0.0, full)


def encode_hsv(flow: FlowField, *, params: EncodeParams = EncodeParams(), scale: MapScale | None = None) -> np.ndarray:
    """Full-resolution HSV encoding.

    Parameters
    ----------
    flow : FlowField
    params : EncodeParams
        ``scale`` picks the brightness scale (``map_scale``).
    scale : MapScale, optional
        A given scale instead (the colour legend draws a synthetic field with a fixed one).

    Returns
    -------
    ndarray, uint8, shape (H, W, 3), BGR
    """
    magnitude, angle = _polar(flow)
    hsv = np.empty(flow.uv.shape[:2] + (3,), dtype=np.uint8)
    hsv[..., 0] = np.round(angle / 2.0).astype(np.int32) % 180
    hsv[..., 1] = 255
    hsv[..., 2] = (scale or _scale(magnitude, params)).value(magnitude)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def flow_arrays(flow: FlowField, *, params: EncodeParams = EncodeParams()) -> np.ndarray:
    """u, v and optical strain at the map size: the model-ready arrays.

    Parameters
    ----------
    flow : FlowField
        (H, W) crop flow.
    params : EncodeParams
        ``size`` and ``interpolation`` (area by default: each map pixel is the mean over the
        crop pixels it covers).

    Returns
    -------
    ndarray, float32, shape (3, size, size)
        u (+x right) and v (+y down) in crop px (not rescaled by the resize factor), and the
        optical strain (``sammflow.flow.optical_strain``) computed at crop resolution, each
        resized.
    """
    size, interpolation = (params.size, params.size), INTERPOLATIONS[params.interpolation]
    uv = cv2.resize(np.ascontiguousarray(flow.uv, dtype=np.float32), size, interpolation=interpolation)
    strain = cv2.resize(optical_strain(flow.uv), size, interpolation=interpolation)
    return np.stack([uv[..., 0], uv[..., 1], strain]).astype(np.float32)


def normalise_channels(arrays: np.ndarray) -> np.ndarray:
    """Each channel min-max normalised to [0, 1] on its own, channels last (the STSTNet / HTNet ``X``).

    Parameters
    ----------
    arrays : ndarray, shape (C, H, W)
        E.g. ``flow_arrays``' u, v, strain.

    Returns
    -------
    ndarray, float32, shape (H, W, C)
        ``(a − min) / (max − min)`` per channel; a constant channel (up to float rounding:
        ``CONSTANT_TOLERANCE``) is all 0.
    """
    if arrays.ndim != 3:
        raise ValueError(f"expected channels first (C, H, W), got shape {arrays.shape}")
    values = arrays.astype(np.float64)
    low = values.min(axis=(1, 2), keepdims=True)
    span = values.max(axis=(1, 2), keepdims=True) - low
    varies = span > CONSTANT_TOLERANCE * np.abs(values).max(axis=(1, 2), keepdims=True)
    scaled = np.divide(values - low, span, out=np.zeros_like(values), where=varies)
    return np.moveaxis(scaled, 0, -1).astype(np.float32)


def encode_flow(flow: FlowField, *, params: EncodeParams = EncodeParams()) -> np.ndarray:
    """The flow map: what ``params.channels`` says (module docstring), at ``params.size``.

    Returns
    -------
    ndarray, uint8, shape (size, size, 3), BGR (write with ``cv2.imwrite``)
        ``hsv``: the HSV encoding, resized. ``uvs``: red u, green v, blue strain, each
        min-max normalised. ``uv``: red u, green v, blue 0.
    """
    if params.channels == "hsv":
        bgr = encode_hsv(flow, params=params)
        return cv2.resize(bgr, (params.size, params.size), interpolation=INTERPOLATIONS[params.interpolation])
    normalised = normalise_channels(flow_arrays(flow, params=params)[:3 if params.channels == "uvs" else 2])
    rgb = np.zeros((params.size, params.size, 3), np.uint8)
    rgb[..., :normalised.shape[2]] = np.round(255 * normalised)
    return np.ascontiguousarray(rgb[..., ::-1])


def decode_map(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invert the encoding of an ``hsv`` flow map.

    Parameters
    ----------
    bgr : ndarray, uint8, shape (H, W, 3)

    Returns
    -------
    angle : ndarray, float64, shape (H, W)
        Direction in degrees [0, 360), 0° = +x, 90° = +y (down); quantised to 2°.
    value : ndarray, float64, shape (H, W)
        Relative magnitude in [0, 1]: magnitude / ``MapScale.full`` of the map (``robust``,
        ``fixed``: clipped at 1), or min-max normalised (``minmax``).
    """
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) BGR map, got {bgr.dtype} {bgr.shape}")
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    return hsv[..., 0].astype(np.float64) * 2.0, hsv[..., 2].astype(np.float64) / 255.0


def dominant_direction(bgr: np.ndarray, *, top_fraction: float = 0.05) -> float:
    """Magnitude-weighted circular mean direction (degrees) of the strongest pixels of an ``hsv`` map."""
    angle, value = decode_map(bgr)
    threshold = np.quantile(value, 1.0 - top_fraction)
    mask = value >= max(threshold, 1e-9)
    if not mask.any():
        raise ValueError("flow map has no motion to take a direction from")
    radians = np.radians(angle[mask])
    weights = value[mask]
    return float(np.degrees(np.arctan2((weights * np.sin(radians)).sum(), (weights * np.cos(radians)).sum())) % 360.0)
