"""Template-matching alignment against constructed ground truth (known shifts)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import face_box, place
from sammflow.detect import FaceBox
import cv2

from sammflow.align import Alignment, FrameAligner, _FloatFrame, align_frames, apex_template, crop_aligned, match_frame
from sammflow.params import AlignParams

CANVAS = (700, 760)
BASE = (100, 90)  # where the 512×512 face sits in the apex canvas


@pytest.fixture(scope="module")
def apex(face_image: np.ndarray) -> np.ndarray:
    return place(face_image, canvas=CANVAS, at=BASE)


@pytest.fixture(scope="module")
def box():
    return face_box(BASE)


@pytest.mark.parametrize("shift", [(0, 0), (7, -3), (-13, 21), (25, -31), (40, -40), (-40, 40)])
def test_integer_shift_recovered_exactly(face_image, apex, box, shift):
    frame = place(face_image, canvas=CANVAS, at=(BASE[0] + shift[0], BASE[1] + shift[1]))
    match = match_frame(frame, apex_template(apex, box), box, margin=40)
    assert (match.dx, match.dy) == shift
    assert match.score > 0.999


WHOLE = AlignParams(method="whole_pixel")


def test_aligned_crop_of_shifted_frame_equals_apex_crop(face_image, apex, box):
    frame = place(face_image, canvas=CANVAS, at=(BASE[0] - 9, BASE[1] + 14))
    crops, alignment = align_frames([(7, frame), (8, apex)], apex, box, params=WHOLE)
    assert np.array_equal(crops[7], crops[8])
    assert crops[7].shape == (224, 224) and crops[7].dtype == np.uint8
    assert alignment.offsets.tolist() == [[-9.0, 14.0], [0.0, 0.0]]
    # the sub-pixel default lands on the same integer shift, to well under a hundredth of a pixel
    crops, alignment = align_frames([(7, frame), (8, apex)], apex, box)
    assert np.allclose(alignment.offsets, [[-9.0, 14.0], [0.0, 0.0]], atol=0.005)
    assert np.abs(crops[7].astype(int) - crops[8]).max() <= 1


@pytest.mark.parametrize("shift", [(2.3, -1.4), (-5.6, 3.7), (0.4, 0.3), (11.2, -17.6)])
def test_subpixel_shift_within_half_pixel(face_image, apex, box, shift):
    frame = place(face_image, canvas=CANVAS, at=(BASE[0] + shift[0], BASE[1] + shift[1]))
    match = match_frame(frame, apex_template(apex, box), box)
    # whole-pixel matching: the best it can do is the nearest integer, 0.5 px at worst
    assert abs(match.dx - shift[0]) <= 0.5
    assert abs(match.dy - shift[1]) <= 0.5


@pytest.mark.parametrize("params", [WHOLE, AlignParams()], ids=["whole_pixel", "subpixel"])
def test_identical_frames_give_zero_offset(apex, box, params):
    crops, alignment = align_frames([(1, apex)], apex, box, params=params)
    assert np.abs(alignment.offsets).max() < 1e-3
    assert alignment.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert alignment.min_score == pytest.approx(1.0, abs=1e-5)


def test_search_is_limited_to_the_margin(face_image, apex, box):
    frame = place(face_image, canvas=CANVAS, at=(BASE[0] + 30, BASE[1]))
    match = match_frame(frame, apex_template(apex, box), box, margin=10)
    assert abs(match.dx) <= 10 and abs(match.dy) <= 10
    assert match.score < 0.9  # the true position was out of reach: a low score says so


def test_box_near_frame_border_clips_the_search_window(face_image):
    # face placed so the box starts 5 px from the left edge: the window cannot extend 40 px left
    at = (5 - 181, 20)
    apex = place(face_image, canvas=(600, 600), at=at)
    box = face_box((at[0], at[1]))
    frame = place(face_image, canvas=(600, 600), at=(at[0] + 3, at[1] - 2))
    match = match_frame(frame, apex_template(apex, box), box)
    assert (match.dx, match.dy) == (3, -2)


def test_crop_resized_to_crop_size(apex, box):
    crop = crop_aligned(apex, box, params=AlignParams(crop_size=112))
    assert crop.shape == (112, 112)


def test_subpixel_crop_samples_exact_positions():
    # cubic interpolation reproduces a linear ramp exactly: the crop must equal the ramp at
    # the shifted positions, up to the final rounding to uint8
    ys, xs = np.mgrid[0:120, 0:120].astype(np.float64)
    ramp = (20 + xs + ys).astype(np.uint8)  # integer-valued: the source holds no rounding error
    box = FaceBox(20, 20, 84, 84)
    for dx, dy in [(0.3, -0.7), (-2.25, 1.5), (0.03125, 0.0), (5.0, -3.0)]:
        crop = crop_aligned(ramp, box, dx, dy, params=AlignParams(crop_size=64))
        expected = 20 + (xs[20:84, 20:84] + dx) + (ys[20:84, 20:84] + dy)
        assert np.abs(crop - expected).max() <= 0.5 + 1e-6, (dx, dy)


def test_windows_of_a_frame_converted_once_replicate_its_edges():
    # the refinement converts the frame around its first window once and reads the later windows
    # from that part: each must be the frame there, edges replicated, inside the part or not
    frame = np.random.default_rng(5).integers(0, 256, (50, 70), dtype=np.uint8)
    source = _FloatFrame(frame, slack=2)
    for x0, y0 in [(-3, 40), (-1, 41), (-5, 42), (0, 38), (2, 44), (-3, 30), (55, -4)]:
        ys, xs = np.clip(np.arange(y0, y0 + 15), 0, 49), np.clip(np.arange(x0, x0 + 20), 0, 69)
        window = source.window(x0, y0, 20, 15)
        assert window.dtype == np.float32
        assert np.array_equal(window, frame[np.ix_(ys, xs)]), (x0, y0)


def test_frame_smaller_than_crop_is_refused(apex, box):
    with pytest.raises(ValueError, match="smaller than"):
        match_frame(apex[:50, :50], apex_template(apex, box), box)


def test_colour_frame_is_refused(apex, box):
    with pytest.raises(ValueError, match="grey uint8"):
        match_frame(np.dstack([apex] * 3), apex_template(apex, box), box)


def test_alignment_checks_shapes(box):
    with pytest.raises(ValueError, match="disagree"):
        Alignment(box, np.arange(3), np.zeros((2, 2)), np.zeros(3))


def test_params_validated():
    with pytest.raises(ValueError, match="margin"):
        AlignParams(margin=-1)
    with pytest.raises(ValueError, match="interpolation"):
        AlignParams(interpolation="bogus")


# ---------------------------------------------------------------- sub-pixel (issue 4)


def _aligner(apex, box, **kwargs):
    return FrameAligner(apex_template(apex, box), box, params=AlignParams(**kwargs))


@pytest.mark.parametrize("shift", [(2.3, -1.4), (-5.6, 3.7), (0.5, 0.5), (0.13, -0.29), (17.85, -24.12)])
def test_subpixel_shift_recovered_within_005_px(face_image, apex, box, shift):
    frame = place(face_image, canvas=CANVAS, at=(BASE[0] + shift[0], BASE[1] + shift[1]))
    match = _aligner(apex, box).match(frame)
    # 0.05 px at frame scale; the crop scale (224 / 87) makes that 0.13 crop px here, and the
    # SAMM-size demo is measured in crop px by bench/
    assert abs(match.dx - shift[0]) <= 0.05 and abs(match.dy - shift[1]) <= 0.05, match
    assert match.score > 0.99 and match.residual < 0.1


def test_local_motion_does_not_drag_the_alignment(face_image, apex, box):
    # brows pushed 3 px down (a Gaussian bump over the left brow and eye), head shifted (1.3, -0.6)
    ys, xs = np.mgrid[0:512, 0:512].astype(np.float32)
    bump = 3.0 * np.exp(-((xs - 205) ** 2 + (ys - 92) ** 2) / (2 * 12.0**2)).astype(np.float32)
    moved = cv2.remap(face_image, xs, ys - bump, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    shift = (1.3, -0.6)
    frame = place(moved, canvas=CANVAS, at=(BASE[0] + shift[0], BASE[1] + shift[1]))
    robust = _aligner(apex, box).match(frame)
    assert abs(robust.dx - shift[0]) <= 0.05 and abs(robust.dy - shift[1]) <= 0.05, robust
    plain = _aligner(apex, box, robust=False).match(frame)
    # without the robust weights the moving brow drags the fit: the test can see the difference
    assert np.hypot(plain.dx - shift[0], plain.dy - shift[1]) > np.hypot(robust.dx - shift[0], robust.dy - shift[1])


def test_whole_pixel_residual_measures_what_it_leaves(face_image, apex, box):
    shift = (3.4, -2.3)
    frame = place(face_image, canvas=CANVAS, at=(BASE[0] + shift[0], BASE[1] + shift[1]))
    match = _aligner(apex, box, method="whole_pixel").match(frame)
    assert (match.dx, match.dy) == (3.0, -2.0)
    left = np.hypot(0.4, 0.3) * 224 / box.width  # what rounding left, in crop px
    # residual = distance to the sub-pixel estimate + 2 standard errors of that estimate
    assert left - 0.05 <= match.residual <= left + 0.25
    flagged = Alignment.from_matches(box, {1: match}).flagged(AlignParams(max_residual=0.2))
    assert flagged.tolist() == [1]


@pytest.mark.parametrize("screen_angle", [-1.5, 1.5], ids=["clockwise_on_screen", "counter_clockwise_on_screen"])
def test_similarity_recovers_a_small_head_roll(face_image, apex, box, screen_angle):
    cx, cy = box.x1 + (box.width - 1) / 2, box.y1 + (box.height - 1) / 2
    rotation = cv2.getRotationMatrix2D((cx, cy), screen_angle, 1.0)  # OpenCV's angle is counter-clockwise on screen
    rotation[:, 2] += (0.7, -0.4)
    frame = cv2.warpAffine(apex, rotation, apex.shape[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    match = _aligner(apex, box, motion="similarity").match(frame)
    # FrameMatch.angle turns +x towards +y (counter-clockwise with y up; with image rows growing
    # downwards that is clockwise on screen): the opposite sign of OpenCV's. Measured: +1.514 for
    # OpenCV's -1.5, -1.492 for its +1.5.
    assert abs(match.angle - (-screen_angle)) < 0.1 and abs(match.scale - 1.0) < 0.005, match
    translation_only = _aligner(apex, box).match(frame)
    assert match.score > translation_only.score
    # the sign is the one the crop uses: undoing the measured roll gives back the apex crop
    crops, _ = align_frames([(1, frame), (2, apex)], apex, box, params=AlignParams(motion="similarity"))
    wrong = crop_aligned(frame, box, match.dx, match.dy, params=AlignParams(motion="similarity"), angle=-match.angle, scale=match.scale)
    assert np.abs(crops[1].astype(int) - crops[2]).mean() < 0.5 * np.abs(wrong.astype(int) - crops[2]).mean()


def test_the_apex_frame_is_its_own_match(face_image, apex, box):
    shifted = place(face_image, canvas=CANVAS, at=(BASE[0] + 1.3, BASE[1] - 0.6))
    crops, alignment = align_frames([(7, shifted), (9, apex)], apex, box)
    matches = alignment.matches()
    assert (matches[9].dx, matches[9].dy, matches[9].score, matches[9].residual) == (0.0, 0.0, 1.0, 0.0)
    # what the search would have found for it: the same, to within rounding
    searched = _aligner(apex, box).match(apex.copy())
    assert abs(searched.dx) < 1e-4 and abs(searched.dy) < 1e-4 and searched.score > 0.99999
    np.testing.assert_array_equal(crops[9], crop_aligned(apex, box))
    assert abs(matches[7].dx - 1.3) < 0.05 and abs(matches[7].dy + 0.6) < 0.05
