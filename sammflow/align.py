"""Normalization: align every frame of a clip to the apex face crop.

The apex frame's face box is the template. In every frame the template is first searched
within ``margin`` pixels of the box at whole pixels (``cv2.TM_CCOEFF_NORMED``, the original
scripts' method). The default ``"subpixel"`` method then refines that match by Gauss-Newton
least squares on the intensities (gain and bias included, so flicker does not bias it),
sampling the frame with a cubic kernel at exact sub-pixel positions. Regions whose residual
stays high — the brows or mouth moving on their own — are down-weighted, so the local
facial motion cannot drag the head alignment. Whole-pixel matching leaves up to 0.5 px of
jitter, which shows up in every flow map as false motion.

Coordinates: offsets are in original-frame pixels, ``(dx, dy)`` with +x right, +y down;
the crop of a frame is the apex box moved by its offset (and, with ``motion="similarity"``,
rotated by ``angle`` degrees and scaled by ``scale`` about the box centre).
Residuals are in crop pixels (at ``crop_size``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from sammflow.detect import FaceBox
from sammflow.params import INTERPOLATIONS, AlignParams

_STRIDE = 2  # refinement uses every 2nd pixel each way: 4× cheaper, same precision on faces
_BORDER = 4  # template pixels left out at the edges (gradients there are one-sided)
_MAX_ITERATIONS = 8
_CONVERGED = 0.002  # px: a refinement step smaller than this ends the iterations
_REGION_SIGMA = 4.0  # px on the stride grid (8 frame px): size of a "region" for robust weights
_REGION_CELLS = 16  # the residual energy is smoothed on a grid reduced 4× (2× for small faces), keeping this many cells a side
_CONVERGED_SHIFT = 0.01  # px: a shift's refinement ends at a step smaller than this (each step cuts the error ≈ 6×)
_COARSE_SIDE = 32  # template px, at least, on the coarse match's grid: 1/4 resolution for faces of 128 px and more, else 1/2
_SLACK = 2  # frame px around a shift's first sampling window converted with it (later ones stay within ~1 px)


@dataclass(frozen=True)
class FrameMatch:
    """Where the apex face was found in one frame.

    ``residual`` estimates, in crop pixels, how far the aligned crop may still be off: the
    distance to the best sub-pixel estimate plus two standard errors of that estimate.
    """

    dx: float
    dy: float
    score: float
    residual: float = 0.0
    angle: float = 0.0  # degrees, counter-clockwise in image axes (x right, y down): clockwise as seen on screen
    scale: float = 1.0


@dataclass(frozen=True)
class Alignment:
    """Per-frame alignment of one clip.

    Attributes
    ----------
    box : FaceBox
        The apex face box (frame px) every frame was matched against.
    frames : ndarray, int64, shape (N,)
        Absolute frame numbers, ascending.
    offsets : ndarray, float64, shape (N, 2)
        ``(dx, dy)`` in frame pixels: the crop of frame ``frames[i]`` is the box shifted by it.
    scores : ndarray, float64, shape (N,)
        Normalised correlation with the apex crop, in [-1, 1] (1 = identical).
    residuals : ndarray, float64, shape (N,)
        Residual shift estimate per frame, crop pixels (see ``FrameMatch``).
    angles, scales : ndarray, float64, shape (N,)
        Rotation (degrees) and scale per frame; 0 and 1 unless ``motion="similarity"``.
    """

    box: FaceBox
    frames: np.ndarray
    offsets: np.ndarray
    scores: np.ndarray
    residuals: np.ndarray = field(default=None)  # type: ignore[assignment]
    angles: np.ndarray = field(default=None)  # type: ignore[assignment]
    scales: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.frames)
        defaults = {"residuals": 0.0, "angles": 0.0, "scales": 1.0}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(n, value))
        if self.offsets.shape != (n, 2) or any(getattr(self, k).shape != (n,) for k in ("scores", *defaults)):
            raise ValueError(f"Alignment: frames {self.frames.shape}, offsets {self.offsets.shape}, scores {self.scores.shape} disagree")

    @classmethod
    def from_matches(cls, box: FaceBox, matches: Mapping[int, FrameMatch]) -> Alignment:
        numbers = sorted(matches)
        column = lambda name: np.asarray([getattr(matches[n], name) for n in numbers], dtype=np.float64)  # noqa: E731
        return cls(
            box=box,
            frames=np.asarray(numbers, dtype=np.int64),
            offsets=np.asarray([(matches[n].dx, matches[n].dy) for n in numbers], dtype=np.float64).reshape(-1, 2),
            scores=column("score"),
            residuals=column("residual"),
            angles=column("angle"),
            scales=column("scale"),
        )

    def matches(self) -> dict[int, FrameMatch]:
        """Per-frame matches by frame number, unrounded (inverse of ``from_matches``)."""
        return {
            int(n): FrameMatch(float(o[0]), float(o[1]), float(s), float(r), float(a), float(k))
            for n, o, s, r, a, k in zip(self.frames, self.offsets, self.scores, self.residuals, self.angles, self.scales)
        }

    @property
    def min_score(self) -> float:
        return float(self.scores.min()) if len(self.scores) else float("nan")

    @property
    def max_residual(self) -> float:
        return float(self.residuals.max()) if len(self.residuals) else float("nan")

    def flagged(self, params: AlignParams) -> np.ndarray:
        """Frame numbers whose alignment is not trusted (low score or high residual)."""
        bad = (self.scores < params.min_score) | (self.residuals > params.max_residual)
        return self.frames[bad]

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {"frame": int(f), "dx": round(float(o[0]), 4), "dy": round(float(o[1]), 4), "score": round(float(s), 5),
             "residual": round(float(r), 4), "angle": round(float(a), 4), "scale": round(float(k), 6)}
            for f, o, s, r, a, k in zip(self.frames, self.offsets, self.scores, self.residuals, self.angles, self.scales)
        ]


def apex_template(apex: np.ndarray, box: FaceBox) -> np.ndarray:
    """The apex face crop (template), shape (box.height, box.width)."""
    _check_grey(apex, "apex frame")
    if box.x2 > apex.shape[1] or box.y2 > apex.shape[0]:
        raise ValueError(f"face box {box.x1, box.y1, box.x2, box.y2} exceeds the apex frame {apex.shape[1]}×{apex.shape[0]}")
    return apex[box.y1:box.y2, box.x1:box.x2]


def match_frame(frame: np.ndarray, template: np.ndarray, box: FaceBox, *, margin: int = 40) -> FrameMatch:
    """Find ``template`` in ``frame`` within ``margin`` px of ``box`` (whole-pixel).

    Parameters
    ----------
    frame : ndarray, uint8, shape (H, W)
    template : ndarray, uint8, shape (box.height, box.width)
    box : FaceBox
        Where the template came from, in frame pixels.

    Returns
    -------
    FrameMatch
        Offset ``(dx, dy)`` of the best match from ``box`` in frame px, and its score.
    """
    _check_grey(frame, "frame")
    h, w = frame.shape
    x0, y0 = max(0, box.x1 - margin), max(0, box.y1 - margin)
    x1, y1 = min(w, box.x2 + margin), min(h, box.y2 + margin)
    window = frame[y0:y1, x0:x1]
    if window.shape[0] < template.shape[0] or window.shape[1] < template.shape[1]:
        raise ValueError(f"frame {w}×{h} is smaller than the {template.shape[1]}×{template.shape[0]} face crop")
    result = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    _, score, _, (mx, my) = cv2.minMaxLoc(result)
    return FrameMatch(dx=float(x0 + mx - box.x1), dy=float(y0 + my - box.y1), score=float(score))


def coarse_template(template: np.ndarray, factor: int = 2) -> np.ndarray:
    """The template at 1/``factor`` resolution (cut to a multiple of ``factor`` first, so the grid is exact)."""
    h, w = template.shape
    return cv2.resize(template[: h - h % factor, : w - w % factor], (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def match_frame_coarse(frame: np.ndarray, template_coarse: np.ndarray, box: FaceBox, *, margin: int = 40, factor: int = 2) -> FrameMatch:
    """``match_frame`` at 1/``factor`` resolution (``template_coarse`` from ``coarse_template`` with the
    same factor) with a parabolic peak fit: several times cheaper and within about a pixel, a
    start from which the sub-pixel refinement converges in two or three steps."""
    _check_grey(frame, "frame")
    h, w = frame.shape
    x0, y0 = max(0, box.x1 - margin), max(0, box.y1 - margin)
    x1, y1 = min(w, box.x2 + margin), min(h, box.y2 + margin)
    x1, y1 = x0 + (x1 - x0) // factor * factor, y0 + (y1 - y0) // factor * factor
    window = cv2.resize(frame[y0:y1, x0:x1], ((x1 - x0) // factor, (y1 - y0) // factor), interpolation=cv2.INTER_AREA)
    if window.shape[0] < template_coarse.shape[0] or window.shape[1] < template_coarse.shape[1]:
        raise ValueError(f"frame {w}×{h} is smaller than the {box.width}×{box.height} face crop")
    result = cv2.matchTemplate(window, template_coarse, cv2.TM_CCOEFF_NORMED)
    _, score, _, (mx, my) = cv2.minMaxLoc(result)
    fx, fy = _parabola(result, mx, my)
    # template pixel j sits at window pixel mx + j: frame x0 + f(mx + j) versus box.x1 + fj at apex
    return FrameMatch(dx=float(x0 + factor * (mx + fx) - box.x1), dy=float(y0 + factor * (my + fy) - box.y1), score=float(score))


def _parabola(surface: np.ndarray, x: int, y: int) -> tuple[float, float]:
    """Sub-pixel peak of ``surface`` around its maximum at (x, y), one parabola per axis."""
    def vertex(minus: float, centre: float, plus: float) -> float:
        curvature = minus - 2 * centre + plus
        return float(min(max(0.5 * (minus - plus) / curvature, -0.5), 0.5)) if curvature < 0 else 0.0

    h, w = surface.shape
    fx = vertex(surface[y, x - 1], surface[y, x], surface[y, x + 1]) if 0 < x < w - 1 else 0.0
    fy = vertex(surface[y - 1, x], surface[y, x], surface[y + 1, x]) if 0 < y < h - 1 else 0.0
    return fx, fy


class Reference:
    """The apex crop prepared for sub-pixel refinement (built once per clip).

    Holds the template's intensities and gradients on a ``_STRIDE`` grid, in float32.
    """

    def __init__(self, template: np.ndarray, *, motion: str = "translation") -> None:
        t = template.astype(np.float32)
        gx = cv2.Scharr(t, cv2.CV_32F, 1, 0) / 32.0
        gy = cv2.Scharr(t, cv2.CV_32F, 0, 1) / 32.0
        h, w = t.shape
        if min(h, w) <= 2 * _BORDER + 4 * _STRIDE:
            raise ValueError(f"face crop {w}×{h} is too small to refine")
        rows, cols = slice(_BORDER, h - _BORDER, _STRIDE), slice(_BORDER, w - _BORDER, _STRIDE)
        self.shape = (h, w)
        self.grid = t[rows, cols].shape
        self.values = t[rows, cols].ravel()
        ys, xs = np.mgrid[rows, cols].astype(np.float32)
        xs, ys = xs.ravel() - (w - 1) / 2.0, ys.ravel() - (h - 1) / 2.0  # about the crop centre
        gx, gy = gx[rows, cols].ravel(), gy[rows, cols].ravel()
        columns = [gx, gy] if motion == "translation" else [gx, gy, gx * xs + gy * ys, gy * xs - gx * ys]
        self.jacobian = np.stack(columns, axis=1)
        self.motion = motion
        self.rows, self.cols = rows, cols
        # the grid's first pixel (x, y) in the crop and the extent it spans: what ``_shifted_samples`` filters
        self.grid_origin = (cols.start, rows.start)
        self.grid_span = ((self.grid[1] - 1) * cols.step + 1, (self.grid[0] - 1) * rows.step + 1)
        # translation: the normal equations are a few dot products with these, computed once per clip
        self.gx, self.gy = np.ascontiguousarray(gx), np.ascontiguousarray(gy)
        self.gxx, self.gxy, self.gyy = gx * gx, gx * gy, gy * gy
        self.mean = float(self.values.mean())
        self.centred = self.values - np.float32(self.mean)
        self.variance = float(np.dot(self.centred, self.centred))


def refine_match(frame: np.ndarray, reference: Reference, box: FaceBox, start: FrameMatch, *, robust: bool = True, scale_to_crop: float = 1.0) -> FrameMatch:
    """Refine a whole-pixel match to sub-pixel precision.

    Minimises ``Σ w · (I(W(x; p)) − g·T(x) − b)²`` over the warp ``p`` (shift, or shift +
    rotation + scale) and the gain ``g`` and bias ``b``, by Gauss-Newton with the template's
    gradients. With ``robust``, every region of about 8×8 px gets a weight from its local
    residual energy (Tukey-like), so parts of the face that move on their own are left out:
    from the first step for a shift (whose normal equations are a few dot products of
    per-clip arrays), after it for a similarity.

    Parameters
    ----------
    frame : ndarray, uint8, shape (H, W)
    reference : Reference
        The apex crop prepared by ``Reference(template)``.
    start : FrameMatch
        The whole-pixel match (``match_frame``).
    scale_to_crop : float
        ``crop_size / box.width``: converts frame px to crop px for ``residual``.

    Returns
    -------
    FrameMatch
        Sub-pixel offset, correlation score at that offset, and the residual estimate.
    """
    if reference.motion == "translation":
        return _refine_translation(frame, reference, box, start, robust=robust, scale_to_crop=scale_to_crop)
    template = reference.values
    jacobian = reference.jacobian
    ones = np.ones_like(template)
    params = np.zeros(jacobian.shape[1], dtype=np.float64)
    params[0], params[1] = start.dx, start.dy
    weights = ones
    sampled = template
    covariance = np.zeros((2, 2))
    for iteration in range(_MAX_ITERATIONS):
        sampled = _sample(frame, box, params, reference)
        gain, bias = _photometric(sampled, template, weights)
        residual = sampled - gain * template - bias
        if robust and iteration >= 1:
            weights = _region_weights(residual, reference.grid)
        jw = jacobian * (gain * weights)[:, None]
        hessian = jw.T @ (gain * jacobian)
        try:
            step = -np.linalg.solve(hessian.astype(np.float64), (jw.T @ residual).astype(np.float64))
        except np.linalg.LinAlgError:
            break  # a flat template: keep the whole-pixel answer
        params += step
        # standard error of the shift: residual variance × (JᵀWJ)⁻¹, translation block
        dof = max(float(weights.sum()) - len(params) - 2, 1.0)
        variance = float((weights * residual * residual).sum()) / dof
        covariance = variance * np.linalg.inv(hessian.astype(np.float64))[:2, :2]
        if np.abs(step[:2]).max() < _CONVERGED and iteration >= (2 if robust else 1):
            break
    if not np.all(np.isfinite(params)) or np.hypot(params[0] - start.dx, params[1] - start.dy) > 2.0:
        # diverged (occlusion, blink, a very different frame): the whole-pixel match is safer
        return FrameMatch(start.dx, start.dy, start.score, residual=float("inf"))
    score = _correlation(sampled, template)
    error = 2.0 * float(np.sqrt(max(np.trace(covariance), 0.0)))
    angle, scale = _angle_scale(params)
    return FrameMatch(float(params[0]), float(params[1]), score, residual=error * scale_to_crop, angle=angle, scale=scale)


def _refine_translation(frame: np.ndarray, reference: Reference, box: FaceBox, start: FrameMatch, *, robust: bool,
                        scale_to_crop: float) -> FrameMatch:
    """``refine_match`` for a shift: the same Gauss-Newton iterations, with the normal
    equations as dot products of per-clip products of the template gradients (no N×2 arrays
    per iteration)."""
    template, gx, gy = reference.values, reference.gx, reference.gy
    dx, dy = start.dx, start.dy
    source = _FloatFrame(frame, slack=_SLACK)  # every iteration samples about the same window
    weights: np.ndarray | None = None  # None: all ones
    total = float(len(template))  # Σ weights
    sampled = template
    spread = 0.0  # trace of the shift's covariance
    for iteration in range(_MAX_ITERATIONS):
        sampled = _shifted_samples(source, box.x1 + dx, box.y1 + dy, reference)
        gain, bias = _photometric_fast(sampled, reference, weights, total)
        residual = np.multiply(template, np.float32(gain))  # sampled − gain·template − bias, in one buffer
        np.subtract(sampled, residual, out=residual)
        residual -= np.float32(bias)
        if robust:  # from the first step: the apex template's own expression must not pull the start
            weights = _region_weights(residual, reference.grid)
        if weights is None:
            weighted = residual
            hxx, hxy, hyy = float(reference.gxx.sum()), float(reference.gxy.sum()), float(reference.gyy.sum())
            total = float(len(residual))
        else:
            weighted = weights * residual
            hxx, hxy, hyy = float(np.dot(weights, reference.gxx)), float(np.dot(weights, reference.gxy)), float(np.dot(weights, reference.gyy))
            total = float(weights.sum())
        bx, by = gain * float(np.dot(gx, weighted)), gain * float(np.dot(gy, weighted))
        g2 = gain * gain
        det = g2 * g2 * (hxx * hyy - hxy * hxy)
        if not det > 1e-12 * max(g2 * g2 * hxx * hyy, 1e-30):
            break  # a flat template: keep the whole-pixel answer
        # step = −H⁻¹ b with H = g² [[hxx, hxy], [hxy, hyy]]: H⁻¹ = g²/det [[hyy, −hxy], [−hxy, hxx]]
        factor = g2 / det
        ixx, ixy, iyy = hyy * factor, -hxy * factor, hxx * factor
        step_x = -(ixx * bx + ixy * by)
        step_y = -(ixy * bx + iyy * by)
        dx, dy = dx + step_x, dy + step_y
        # standard error of the shift: residual variance × (JᵀWJ)⁻¹
        dof = max(total - 4.0, 1.0)
        variance = float(np.dot(weighted, residual)) / dof
        spread = variance * ixx + variance * iyy
        if max(abs(step_x), abs(step_y)) < _CONVERGED_SHIFT and iteration >= 1:
            break
    if not (np.isfinite(dx) and np.isfinite(dy)) or np.hypot(dx - start.dx, dy - start.dy) > 2.0:
        return FrameMatch(start.dx, start.dy, start.score, residual=float("inf"))
    error = 2.0 * math.sqrt(max(spread, 0.0))
    return FrameMatch(float(dx), float(dy), _correlation_with(sampled, reference), residual=error * scale_to_crop)


def _photometric_fast(sampled: np.ndarray, reference: Reference, weights: np.ndarray | None, total: float) -> tuple[float, float]:
    """``_photometric`` with the template's unweighted mean and variance computed once per clip
    (``total``: ``weights.sum()``, which the caller has)."""
    if weights is None:
        mean_s = float(sampled.mean())
        gain = float(np.dot(reference.centred, sampled)) / reference.variance if reference.variance > 0 else 1.0
        return gain, mean_s - gain * reference.mean
    weighted = weights * reference.values
    sum_t, sum_s = float(weighted.sum()), float(np.dot(weights, sampled))
    mean_t, mean_s = sum_t / total, sum_s / total
    var = float(np.dot(weighted, reference.values)) - sum_t * mean_t
    gain = (float(np.dot(weighted, sampled)) - sum_t * mean_s) / var if var > 0 else 1.0
    return gain, mean_s - gain * mean_t


def crop_aligned(frame: np.ndarray, box: FaceBox, dx: float = 0.0, dy: float = 0.0, *, params: AlignParams = AlignParams(),
                 angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Crop ``box`` moved by ``(dx, dy)`` (and rotated/scaled about its centre) and resize it.

    Sub-pixel offsets are sampled with the same cubic kernel the refinement uses, so an
    offset found to 0.01 px is applied to 0.01 px; pixels outside the frame replicate its border.

    Returns
    -------
    ndarray, uint8, shape (crop_size, crop_size)
    """
    _check_grey(frame, "frame")
    if angle == 0.0 and scale == 1.0:
        patch = _shifted_patch(_FloatFrame(frame), box.x1 + dx, box.y1 + dy, box.width, box.height)
    else:
        patch = _warped_patch(frame, box, _similarity_params(dx, dy, angle, scale))
    size = params.crop_size
    resized = cv2.resize(patch, (size, size), interpolation=INTERPOLATIONS[params.interpolation])
    np.rint(resized, out=resized)
    return np.clip(resized, 0, 255, out=resized).astype(np.uint8)


def align_frames(
    frames: Iterable[tuple[int, np.ndarray]],
    apex: np.ndarray,
    box: FaceBox,
    *,
    params: AlignParams = AlignParams(),
) -> tuple[dict[int, np.ndarray], Alignment]:
    """Align frames to the apex crop.

    Parameters
    ----------
    frames : iterable of (frame number, ndarray uint8 (H, W))
        Frames of one clip, consumed one at a time (a generator keeps memory flat). The
        ``apex`` array itself among them is its own match: offset 0, score 1, residual 0.
    apex : ndarray, uint8, shape (H, W)
        The apex frame ``box`` was detected on.
    box : FaceBox
        Apex face box in frame pixels.

    Returns
    -------
    crops : dict of frame number → ndarray uint8 (crop_size, crop_size)
    alignment : Alignment
    """
    template = apex_template(apex, box)
    aligner = FrameAligner(template, box, params=params)
    crops: dict[int, np.ndarray] = {}
    matches: dict[int, FrameMatch] = {}
    for number, frame in frames:
        # the apex frame itself holds the template where the box is: no search (the refinement
        # would find 0 to within rounding, at the cost of a frame's alignment)
        matches[number] = _IDENTITY if frame is apex else aligner.match(frame)
        crops[number] = aligner.crop(frame, matches[number])
    return crops, Alignment.from_matches(box, matches)


#: The apex frame's match with its own crop.
_IDENTITY = FrameMatch(0.0, 0.0, 1.0, residual=0.0)


class FrameAligner:
    """Aligns frames of one clip to its apex crop with the chosen method.

    ``whole_pixel`` keeps the original scripts' crops but still measures, per frame, how far
    they are from the sub-pixel estimate (its ``residual``), so the two can be compared.
    """

    def __init__(self, template: np.ndarray, box: FaceBox, *, params: AlignParams = AlignParams()) -> None:
        self.template, self.box, self.params = template, box, params
        self.to_crop = params.crop_size / box.width
        motion = params.motion if params.method == "subpixel" else "translation"
        self.reference = Reference(template, motion=motion)
        # coarse-to-fine: the refinement needs a start within ~1 px, which a quarter (or half) resolution gives
        side = min(template.shape)
        self.coarse_factor = 4 if side >= 4 * _COARSE_SIDE else 2
        self.template_coarse = coarse_template(template, self.coarse_factor) if side >= 2 * _COARSE_SIDE else None

    def match(self, frame: np.ndarray) -> FrameMatch:
        if self.params.method == "subpixel" and self.template_coarse is not None:
            start = match_frame_coarse(frame, self.template_coarse, self.box, margin=self.params.margin, factor=self.coarse_factor)
            return refine_match(frame, self.reference, self.box, start, robust=self.params.robust, scale_to_crop=self.to_crop)
        coarse = match_frame(frame, self.template, self.box, margin=self.params.margin)
        fine = refine_match(frame, self.reference, self.box, coarse, robust=self.params.robust, scale_to_crop=self.to_crop)
        if self.params.method == "subpixel":
            return fine
        left = float(np.hypot(fine.dx - coarse.dx, fine.dy - coarse.dy)) * self.to_crop + fine.residual
        return FrameMatch(coarse.dx, coarse.dy, coarse.score, residual=left)

    def crop(self, frame: np.ndarray, match: FrameMatch) -> np.ndarray:
        return crop_aligned(frame, self.box, match.dx, match.dy, params=self.params, angle=match.angle, scale=match.scale)


# ---------------------------------------------------------------- sampling


def _cubic_weights(fraction: float) -> np.ndarray:
    """Keys cubic (a = −0.5) weights of the 4 pixels around a position ``floor + fraction``.

    Computed on Python floats: numpy's per-call overhead on four elements cost more than the
    filtering the weights feed (the same float64 operations, so the same weights)."""
    a = -0.5

    def weight(x: float) -> float:
        if x <= 1.0:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a

    f = float(fraction)
    return np.array([weight(1.0 + f), weight(f), weight(1.0 - f), weight(2.0 - f)], dtype=np.float32)


def _window(frame: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """``frame[y0:y0+height, x0:x0+width]`` as float32, edges replicated where it leaves the frame."""
    h, w = frame.shape
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + width, w), min(y0 + height, h)
    if cx0 >= cx1 or cy0 >= cy1:
        raise ValueError(f"crop at ({x0}, {y0}) size {width}×{height} lies outside the {w}×{h} frame")
    part = frame[cy0:cy1, cx0:cx1].astype(np.float32)
    if (cx0, cy0, cx1, cy1) != (x0, y0, x0 + width, y0 + height):
        part = cv2.copyMakeBorder(part, cy0 - y0, y0 + height - cy1, cx0 - x0, x0 + width - cx1, cv2.BORDER_REPLICATE)
    return part


class _FloatFrame:
    """A frame read as float32 windows (``_window``): the first window, grown by ``slack`` px
    on each side, is converted once and later windows inside it are views of it.

    The refinement of a shift asks for about the same window 2–8 times, a fraction of a pixel
    apart: converting it once spares a uint8 → float32 pass over the box per iteration. A
    window outside that part is converted on its own.
    """

    def __init__(self, frame: np.ndarray, *, slack: int = 0) -> None:
        self.frame, self.slack = frame, slack
        self.part: np.ndarray | None = None
        self.origin = (0, 0)

    def window(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """``_window(frame, x0, y0, width, height)``, a view of the converted part where it lies inside."""
        if self.part is None:
            s = self.slack
            self.origin = (x0 - s, y0 - s)
            self.part = _window(self.frame, x0 - s, y0 - s, width + 2 * s, height + 2 * s)
        left, top = x0 - self.origin[0], y0 - self.origin[1]
        if left >= 0 and top >= 0 and left + width <= self.part.shape[1] and top + height <= self.part.shape[0]:
            return self.part[top:top + height, left:left + width]
        return _window(self.frame, x0, y0, width, height)


def _shifted_patch(source: _FloatFrame, x: float, y: float, width: int, height: int) -> np.ndarray:
    """float32 (height, width) patch whose pixel (0, 0) samples the frame at (x, y), cubic.

    A shift has the same sub-pixel weights everywhere, so sampling is one separable filter
    with exact float weights (``cv2.remap`` would quantise positions to 1/32 px).
    """
    ix, iy = math.floor(x), math.floor(y)
    fx, fy = x - ix, y - iy
    if fx == 0.0 and fy == 0.0:
        return source.window(ix, iy, width, height)
    window = source.window(ix - 1, iy - 1, width + 3, height + 3)
    out = cv2.sepFilter2D(window, cv2.CV_32F, _cubic_weights(fx), _cubic_weights(fy), anchor=(0, 0), borderType=cv2.BORDER_ISOLATED)
    return out[:height, :width]


def _similarity_params(dx: float, dy: float, angle: float, scale: float) -> np.ndarray:
    theta = np.radians(angle)
    return np.array([dx, dy, scale * np.cos(theta) - 1.0, scale * np.sin(theta)])


def _angle_scale(params: np.ndarray) -> tuple[float, float]:
    if len(params) == 2:
        return 0.0, 1.0
    a, b = 1.0 + params[2], params[3]
    return float(np.degrees(np.arctan2(b, a))), float(np.hypot(a, b))


def _affine(box: FaceBox, params: np.ndarray) -> np.ndarray:
    """2×3 matrix mapping crop pixel (u, v) to frame coordinates under similarity ``params``."""
    a, b = 1.0 + params[2], params[3]
    cx, cy = (box.width - 1) / 2.0, (box.height - 1) / 2.0
    tx = box.x1 + cx + params[0]
    ty = box.y1 + cy + params[1]
    return np.array([[a, -b, tx - a * cx + b * cy], [b, a, ty - b * cx - a * cy]], dtype=np.float64)


def _warped_patch(frame: np.ndarray, box: FaceBox, params: np.ndarray) -> np.ndarray:
    matrix = _affine(box, params)
    return cv2.warpAffine(frame.astype(np.float32), matrix, (box.width, box.height), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _shifted_samples(source: _FloatFrame, x: float, y: float, reference: Reference) -> np.ndarray:
    """The template grid's samples (``reference.rows``/``cols``) of the box whose pixel (0, 0)
    is at frame (x, y), cubic: ``_shifted_patch(...)[rows, cols]`` up to float rounding.

    Only the grid's rows are filtered vertically (four row-strided views weighted and added,
    which OpenCV takes without a copy) and only those rows horizontally: half the work of
    filtering the whole box and subsampling it.
    """
    (c0, r0), (span_x, span_y) = reference.grid_origin, reference.grid_span
    step_y, step_x = reference.rows.step, reference.cols.step
    rows, cols = reference.grid
    x, y = x + c0, y + r0
    ix, iy = math.floor(x), math.floor(y)
    window = source.window(ix - 1, iy - 1, span_x + 3, span_y + 3)
    wy = _cubic_weights(y - iy)
    taps = [window[k:k + step_y * (rows - 1) + 1:step_y] for k in range(4)]  # tap k of every grid row
    vertical = cv2.addWeighted(taps[0], float(wy[0]), taps[1], float(wy[1]), 0.0)
    cv2.add(vertical, cv2.addWeighted(taps[2], float(wy[2]), taps[3], float(wy[3]), 0.0), dst=vertical)
    kernel = _cubic_weights(x - ix).reshape(1, 4)
    filtered = cv2.filter2D(vertical, cv2.CV_32F, kernel, anchor=(0, 0), borderType=cv2.BORDER_ISOLATED)
    return filtered[:, : step_x * (cols - 1) + 1 : step_x].ravel()


def _sample(frame: np.ndarray, box: FaceBox, params: np.ndarray, reference: Reference) -> np.ndarray:
    h, w = reference.shape
    if reference.motion == "translation":
        patch = _shifted_patch(_FloatFrame(frame), box.x1 + params[0], box.y1 + params[1], w, h)
    else:
        patch = _warped_patch(frame, box, params)
    return patch[reference.rows, reference.cols].ravel()


def _photometric(sampled: np.ndarray, template: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares gain and bias with ``sampled ≈ gain · template + bias``."""
    total = float(weights.sum())
    mean_t = float((weights * template).sum()) / total
    mean_s = float((weights * sampled).sum()) / total
    dt = template - mean_t
    var = float((weights * dt * dt).sum())
    gain = float((weights * dt * (sampled - mean_s)).sum()) / var if var > 0 else 1.0
    return gain, mean_s - gain * mean_t


def _region_weights(residual: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Weights in [0, 1] from the local residual energy: regions far above the typical
    energy (moving features) get ~0, the rest ~1.

    The energy is smoothed at a quarter of the grid's resolution (half for small faces; σ =
    ``_REGION_SIGMA`` / 4 there, ``_REGION_SIGMA`` on the grid) and interpolated back: a
    region is 8×8 frame px, far coarser than the grid, so this gives weights as good at a
    fraction of the cost.
    """
    h, w = grid
    energy = (residual * residual).reshape(grid).astype(np.float32, copy=False)
    f = 4 if min(h, w) >= 4 * _REGION_CELLS else 2
    even = energy[: max(h - h % f, f), : max(w - w % f, f)]  # an exact reduction (OpenCV's fast path)
    small = cv2.resize(even, (even.shape[1] // f, even.shape[0] // f), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), _REGION_SIGMA / f)
    energy = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).ravel()
    typical = _median(energy[::3])  # a third of the points give the same median
    if typical <= 1e-6:
        return np.ones_like(residual)
    # (1 − u)² where u = energy / (4 × typical) < 1, else 0; OpenCV passes over ``energy`` (a new array)
    cv2.addWeighted(energy, -1.0 / (4.0 * typical), energy, 0.0, 1.0, dst=energy)
    cv2.threshold(energy, 0.0, 0.0, cv2.THRESH_TOZERO, dst=energy)
    return cv2.multiply(energy, energy, dst=energy).ravel()


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D array, by one partial sort (several times faster): for an even
    count, the lower middle value is the largest of the lower half."""
    n = len(values)
    half = n // 2
    ordered = np.partition(values, half)
    if n % 2:
        return float(ordered[half])
    return (float(ordered[:half].max()) + float(ordered[half])) / 2.0


def _correlation_with(sampled: np.ndarray, reference: Reference) -> float:
    """``_correlation(sampled, reference.values)`` from the template's centred values and
    variance, computed once per clip."""
    n = len(sampled)
    total = float(sampled.sum())
    spread = float(np.dot(sampled, sampled)) - total * total / n
    denominator = float(np.sqrt(spread * reference.variance)) if spread > 0 else 0.0
    return float(np.dot(reference.centred, sampled)) / denominator if denominator > 0 else 0.0


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    da, db = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((da * da).sum() * (db * db).sum()))
    return float((da * db).sum()) / denominator if denominator > 0 else 0.0


def _check_grey(image: np.ndarray, what: str) -> None:
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"{what} must be a grey uint8 (H, W) array, got {image.dtype} {image.shape}")
