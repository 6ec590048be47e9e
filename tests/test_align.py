"""Template-matching alignment against constructed ground truth (known shifts)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import face_box, place
from sammflow.align import Alignment, align_frames, apex_template, crop_aligned, match_frame
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


def test_aligned_crop_of_shifted_frame_equals_apex_crop(face_image, apex, box):
    frame = place(face_image, canvas=CANVAS, at=(BASE[0] - 9, BASE[1] + 14))
    crops, alignment = align_frames([(7, frame), (8, apex)], apex, box)
    assert np.array_equal(crops[7], crops[8])
    assert crops[7].shape == (224, 224) and crops[7].dtype == np.uint8
    assert alignment.offsets.tolist() == [[-9.0, 14.0], [0.0, 0.0]]


@pytest.mark.parametrize("shift", [(2.3, -1.4), (-5.6, 3.7), (0.4, 0.3), (11.2, -17.6)])
def test_subpixel_shift_within_half_pixel(face_image, apex, box, shift):
    frame = place(face_image, canvas=CANVAS, at=(BASE[0] + shift[0], BASE[1] + shift[1]))
    match = match_frame(frame, apex_template(apex, box), box)
    # whole-pixel matching: the best it can do is the nearest integer, 0.5 px at worst
    assert abs(match.dx - shift[0]) <= 0.5
    assert abs(match.dy - shift[1]) <= 0.5


def test_identical_frames_give_zero_offset(apex, box):
    crops, alignment = align_frames([(1, apex)], apex, box)
    assert alignment.offsets.tolist() == [[0.0, 0.0]]
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


def test_subpixel_crop_interpolates(apex, box):
    # half a pixel right is (up to rounding) the mean of the crops 0 and 1 px right
    params = AlignParams(crop_size=64, interpolation="nearest")
    half = crop_aligned(apex, box, 0.5, 0.0, params=params).astype(float)
    mean = (crop_aligned(apex, box, 0, 0, params=params).astype(float) + crop_aligned(apex, box, 1, 0, params=params)) / 2
    assert np.abs(half - mean).max() <= 1.0


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
