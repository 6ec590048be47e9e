"""MTCNN face box: finds the demo face, converts MTCNN's odd results once, at the edge."""

from __future__ import annotations

import numpy as np
import pytest

from sammflow.detect import FaceBox, NoFaceError, detect_face, load_detector
from sammflow.dataset import read_grey
from sammflow.params import DetectParams


def _apex_frame(root, truth, clip_id):
    clip = truth["by_clip"][clip_id]
    folder = root / clip["subject"] / clip_id
    (path,) = [p for p in folder.iterdir() if p.stem.endswith(str(clip["apex"]))]
    return read_grey(path), clip


def test_mtcnn_finds_the_demo_face(demo_root, demo_truth):
    for clip_id in demo_truth["by_clip"]:
        frame, clip = _apex_frame(demo_root, demo_truth, clip_id)
        box = detect_face(frame, frame_number=clip["apex"])
        truth = FaceBox.from_xyxy(clip["face_box"], shape=frame.shape)
        # the truth is MTCNN's own box on the source photograph, mapped into the frame
        assert box.iou(truth) > 0.75, (clip_id, box, truth)
        assert box.prob > 0.95 and box.frame == clip["apex"]


def test_downscaled_detection_maps_back_to_frame_pixels(demo_root, demo_truth):
    frame, _ = _apex_frame(demo_root, demo_truth, next(iter(demo_truth["by_clip"])))
    full = detect_face(frame, params=DetectParams(max_side=0))
    small = detect_face(frame, params=DetectParams(max_side=512))
    assert small.iou(full) > 0.85
    assert abs(small.width - full.width) < 0.1 * full.width


def test_grey_and_rgb_frames_give_the_same_box(demo_root, demo_truth):
    frame, _ = _apex_frame(demo_root, demo_truth, next(iter(demo_truth["by_clip"])))
    assert detect_face(frame) == detect_face(np.dstack([frame] * 3))


def test_blank_frame_has_no_face():
    with pytest.raises(NoFaceError):
        detect_face(np.full((480, 640), 128, np.uint8))


class FakeDetector:
    """Returns what MTCNN returns under numpy 2: object arrays, or None for no face."""

    def __init__(self, boxes, probs):
        self.boxes, self.probs = boxes, probs

    def detect(self, image):
        return self.boxes, self.probs


def test_object_arrays_are_converted_and_best_box_chosen():
    boxes = np.array([[10.4, 20.6, 110.2, 150.7], [300.0, 40.0, 380.0, 140.0]], dtype=object)
    probs = np.array([0.97, 0.999], dtype=object)
    box = detect_face(np.zeros((480, 640), np.uint8), detector=FakeDetector(boxes, probs), params=DetectParams(max_side=0))
    assert (box.x1, box.y1, box.x2, box.y2) == (300, 40, 380, 140)
    assert isinstance(box.x1, int) and box.prob == pytest.approx(0.999)


def test_box_is_scaled_back_from_the_detection_size():
    fake = FakeDetector(np.array([[100.0, 50.0, 200.0, 170.0]]), np.array([0.99]))
    box = detect_face(np.zeros((1088, 2040), np.uint8), detector=fake, params=DetectParams(max_side=510))
    assert (box.x1, box.y1, box.x2, box.y2) == (400, 200, 800, 680)  # ×4


def test_none_and_low_probability_mean_no_face():
    frame = np.zeros((100, 100), np.uint8)
    with pytest.raises(NoFaceError, match="no face"):
        detect_face(frame, detector=FakeDetector(None, [None]))
    with pytest.raises(NoFaceError, match="best 0.50"):
        detect_face(frame, detector=FakeDetector(np.array([[1.0, 1.0, 50.0, 50.0]]), np.array([0.5])))


def test_facebox_clipped_to_the_frame_and_checked():
    box = FaceBox.from_xyxy([-12.3, 5.6, 700.2, 90.0], shape=(100, 640))
    assert (box.x1, box.y1, box.x2, box.y2) == (0, 6, 640, 90)
    assert box.touches_border((100, 640))
    assert not FaceBox(10, 10, 50, 50).touches_border((100, 100))
    with pytest.raises(ValueError, match="empty face box"):
        FaceBox(10, 10, 10, 50)
    assert FaceBox(0, 0, 10, 10).iou(FaceBox(5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_cuda_request_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        load_detector("cuda")


def test_min_face_larger_than_the_detection_image_is_a_clear_no_face(face_image):
    # MTCNN itself fails with "torch.cat(): expected a non-empty list" (an unexpected error)
    with pytest.raises(NoFaceError, match=r"the detection image is 512×512 px, smaller than the smallest face looked for \(--min-face 600\)"):
        detect_face(face_image, params=DetectParams(min_face=600))


def test_a_loading_detector_stands_in_for_the_detector_being_built(monkeypatch):
    """Built in a thread (overlapping the start of a job), ``detect`` waits for it; it detects
    on one thread (the workers hold the other cores): torch's for a torch detector, OpenCV's
    for the OpenCV one, the caller's thread counts kept; a detector that cannot be built
    raises the caller's error type."""
    import cv2
    import torch

    import sammflow.detect as detect_module

    class Fake:
        engine = "torch"

        def detect(self, images):
            return "found", images, torch.get_num_threads(), cv2.getNumThreads()

    before, cv_before = torch.get_num_threads(), cv2.getNumThreads()
    monkeypatch.setattr(detect_module, "load_detector", lambda device, min_face: Fake())
    with detect_module.LoadingDetector(DetectParams()) as loading:
        assert loading.detect("image") == ("found", "image", 1, cv_before)
        assert torch.get_num_threads() == before
    Fake.engine = "opencv"
    cv2.setNumThreads(2)
    with detect_module.LoadingDetector(DetectParams()) as loading:
        assert loading.detect("image") == ("found", "image", before, 1)
        assert cv2.getNumThreads() == 2
    cv2.setNumThreads(cv_before)

    def missing(device, min_face):
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device='cpu'")

    monkeypatch.setattr(detect_module, "load_detector", missing)
    with detect_module.LoadingDetector(DetectParams(device="cuda:3"), error=LookupError) as loading:
        with pytest.raises(LookupError, match="'cuda:3' requested but CUDA is not available"):
            loading.detect("image")
    assert torch.get_num_threads() == before


def test_overlapping_detections_restore_opencv_threads_when_the_last_ends():
    """OpenCV's thread count is the process's: two detections that overlap (the grid's two
    threads) both run on one thread, and the count comes back when the last one ends."""
    import cv2

    import sammflow.detect as detect_module

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    first, second = detect_module._one_opencv_thread(), detect_module._one_opencv_thread()
    first.__enter__()
    second.__enter__()
    assert cv2.getNumThreads() == 1
    first.__exit__(None, None, None)
    assert cv2.getNumThreads() == 1  # the second still detects
    second.__exit__(None, None, None)
    assert cv2.getNumThreads() == 2
    cv2.setNumThreads(before)
