"""Alignment fidelity against the demo dataset's ground truth (issue 4's three measures).

1. residual shift between aligned frames that have no local motion (crop px at 224);
2. angle error of the strongest 5 % of the 28×28 map against the true motion direction;
3. distance between the map's magnitude-weighted peak and the true motion region (map px).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sammflow.align import FrameAligner, FrameMatch, apex_template
from sammflow.annotations import read_annotations
from sammflow.dataset import load_dataset, read_grey
from sammflow.demo import displacement_field, read_ground_truth
from sammflow.encode import decode_map
from sammflow.params import AlignParams, PipelineParams
from sammflow.pipeline import find_apex_face, flow_from_crops


@dataclass
class Fidelity:
    """Accumulated measures for one alignment method."""

    residuals: list[float] = field(default_factory=list)  # crop px, one per still frame
    angle_errors: list[float] = field(default_factory=list)  # degrees, one per clip
    pixel_errors: list[float] = field(default_factory=list)  # degrees, one per clip
    peak_distances: list[float] = field(default_factory=list)  # map px, one per clip
    align_seconds: float = 0.0
    frames: int = 0

    def summary(self) -> dict[str, float]:
        r = np.asarray(self.residuals)
        return {
            "residual_mean": float(r.mean()), "residual_p95": float(np.percentile(r, 95)),
            "angle_error_mean": float(np.mean(self.angle_errors)), "angle_error_max": float(np.max(self.angle_errors)),
            "pixel_angle_error_mean": float(np.mean(self.pixel_errors)),
            "peak_distance_mean": float(np.mean(self.peak_distances)),
            "align_ms_per_frame": 1000 * self.align_seconds / max(self.frames, 1),
        }


def true_jitter(clip_truth: dict) -> tuple[dict[int, np.ndarray], set[int]]:
    """The clip's true head jitter per frame (frame px, ``(dx, dy)``) and its frames without local motion."""
    jitter = {f["frame"]: np.array(f["jitter"]) for f in clip_truth["frames"]}
    still = {f["frame"] for f in clip_truth["frames"] if f["motion"] == 0.0}
    return jitter, still


def residual_shifts(clip_truth: dict, matches: Mapping[int, Any], apex: int, scale: float) -> list[float]:
    """Residual shift of each aligned frame without local motion (the apex left out), crop px.

    A frame's crop is the apex box moved by its match ``(dx, dy)``; aligned exactly, that is
    the frame's true jitter minus the apex's. The residual is the distance between the two,
    times ``scale`` (``crop_size / box.width``: frame px → crop px). Only the frames in
    ``matches`` count (any object with ``dx`` and ``dy``).
    """
    jitter, still = true_jitter(clip_truth)
    out = []
    for n in sorted(still - {apex}):
        if n not in matches:
            continue
        expected = jitter[n] - jitter[apex]
        out.append(float(np.hypot(matches[n].dx - expected[0], matches[n].dy - expected[1])) * scale)
    return out


def true_flow_in_crop(clip_truth: dict, box, crop_size: int, *, iterations: int = 30) -> np.ndarray:
    """The true onset→apex flow on the aligned crop grid: where each onset crop pixel is in the apex crop.

    The demo renders the apex frame by sampling the head at ``x − motion(x) − jitter``, with
    ``motion`` evaluated at frame position ``x``: the bumps stay where the ground truth puts
    them whatever the jitter, and ``motion`` is a pull field on the apex frame. The crops
    are the apex box on the apex frame (the onset crop aligned to it), so onset crop pixel
    ``p`` (frame position ``P``) moves by ``g`` with ``g = motion(P + g)``, solved by
    fixed-point iteration (a contraction: the bumps' gradient is well below 1). Frame px are
    then scaled to crop px, x and y apart (the box need not be square).

    Parameters
    ----------
    clip_truth : dict
        The clip's entry of ``ground_truth.json`` (its ``bumps``).
    box : FaceBox
        The apex face box the crops were cut from, frame px.
    crop_size : int
        Side of the aligned crop, px.

    Returns
    -------
    ndarray, float32, shape (crop_size, crop_size, 2)
        ``(dx, dy)`` in crop px.
    """
    u = (np.arange(crop_size) + 0.5) / crop_size
    xs = (box.x1 + u[None, :] * box.width - 0.5 + 0 * u[:, None]).astype(np.float32)
    ys = (box.y1 + u[:, None] * box.height - 0.5 + 0 * u[None, :]).astype(np.float32)
    field_ = displacement_field(clip_truth["bumps"], xs, ys)
    for _ in range(iterations):
        field_ = displacement_field(clip_truth["bumps"], xs + field_[..., 0], ys + field_[..., 1])
    field_[..., 0] *= crop_size / box.width
    field_[..., 1] *= crop_size / box.height
    return field_


def map_measures(flow_map: np.ndarray, truth: np.ndarray, top: float = 0.05) -> tuple[float, float, float]:
    """Measures of a flow map against the true field (crop px, any size) over its strongest pixels.

    Returns
    -------
    direction_error : float
        Degrees between the value-weighted mean direction of the strongest ``top`` fraction of
        map pixels and the mean true motion over the same pixels.
    pixel_error : float
        Value-weighted mean, over those pixels, of each pixel's angle error against the true
        local direction (stricter: symmetric errors do not cancel).
    peak_distance : float
        Value-weighted mean distance (map px) of those pixels from the true motion region
        (pixels with at least half the peak true magnitude); 0 inside it.
    """
    size = flow_map.shape[0]
    angle, value = decode_map(flow_map)
    true_small = cv2.resize(truth, (size, size), interpolation=cv2.INTER_AREA)
    true_mag = np.hypot(true_small[..., 0], true_small[..., 1])
    true_angle = np.degrees(np.arctan2(true_small[..., 1], true_small[..., 0])) % 360
    strongest = value >= max(np.quantile(value, 1 - top), 1e-9)
    weights = value[strongest]
    radians = np.radians(angle[strongest])
    found = np.degrees(np.arctan2((weights * np.sin(radians)).sum(), (weights * np.cos(radians)).sum()))
    expected = np.degrees(np.arctan2((weights * true_small[..., 1][strongest]).sum(), (weights * true_small[..., 0][strongest]).sum()))
    direction_error = float(abs((found - expected + 180) % 360 - 180))
    difference = np.abs((angle - true_angle + 180) % 360 - 180)
    pixel_error = float(np.average(difference[strongest], weights=weights))
    region = (true_mag >= 0.5 * true_mag.max()).astype(np.uint8)
    outside = cv2.distanceTransform(1 - region, cv2.DIST_L2, 5)
    peak_distance = float(np.average(outside[strongest], weights=weights))
    return direction_error, pixel_error, peak_distance


def measure(root: Path, methods: dict[str, AlignParams | None]) -> dict[str, dict[str, float]]:
    """Run every method on every clip of a demo dataset; returns each method's summary.

    A method given as ``None`` is the oracle: crops cut at the true head offsets (perfect
    alignment), the floor the flow itself sets.
    """
    dataset = load_dataset(root, read_annotations(root / "samm.csv"))
    truth = read_ground_truth(root)
    results = {name: Fidelity() for name in methods}
    for clip, frames in dataset.ready():
        clip_truth = truth["by_clip"][clip.clip]
        jitter, _ = true_jitter(clip_truth)
        box, _ = find_apex_face(clip, frames)
        decoded = {n: read_grey(frames.path(n)) for n in frames.numbers}
        apex = decoded[clip.apex]
        for name, method in methods.items():
            result = results[name]
            params = method or AlignParams()
            aligner = FrameAligner(apex_template(apex, box), box, params=params)
            crops = {}
            start = time.perf_counter()
            matches = {}
            for n, frame in decoded.items():
                if method is None:
                    dx, dy = jitter[n] - jitter[clip.apex]
                    matches[n] = FrameMatch(float(dx), float(dy), 1.0)
                else:
                    matches[n] = aligner.match(frame)
                crops[n] = aligner.crop(frame, matches[n])
            result.align_seconds += time.perf_counter() - start
            result.frames += len(decoded)
            result.residuals.extend(residual_shifts(clip_truth, matches, clip.apex, params.crop_size / box.width))
            _, flow_map = flow_from_crops(crops[clip.onset], crops[clip.apex], params=PipelineParams(align=params))
            true = true_flow_in_crop(clip_truth, box, params.crop_size)
            angle_error, pixel_error, distance = map_measures(flow_map, true)
            result.angle_errors.append(angle_error)
            result.pixel_errors.append(pixel_error)
            result.peak_distances.append(distance)
    return {name: r.summary() for name, r in results.items()}
