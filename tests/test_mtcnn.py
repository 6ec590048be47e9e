"""sammflow.mtcnn: facenet-pytorch's MTCNN results without facenet-pytorch or torchvision.

facenet-pytorch (and torchvision) are imported here only, as the reference. Measured on CPU
(torch 2.14, numpy 2.4, OpenCV 4.14):

* the torch engine: single images give facenet's boxes and probabilities bit for bit, so
  those comparisons are exact; a batch differs from its images run alone by ≤ 4.6e-5 px
  (≈ one float32 ulp at 500 px: the networks round slightly differently with batch size) and
  0 in probability, bounded below at 2e-4 px and 1e-6;
* the OpenCV engine (the CPU default): ≤ 1.2e-4 px from facenet's boxes and ≤ 1.2e-7 in
  probability (26 images: these and SAMM-size demo frames), bounded below at 5e-4 px and
  1e-6; a batch gives exactly what each image gets alone.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sammflow import mtcnn
from sammflow.dataset import read_grey
from sammflow.detect import BATCH, FaceBox, NoFaceError, detect_face, detect_faces, load_detector
from sammflow.params import DetectParams

BATCH_PX, BATCH_PROB = 2e-4, 1e-6
OPENCV_PX, OPENCV_PROB = 5e-4, 1e-6


@functools.cache
def facenet(min_face: int):
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, post_process=False, min_face_size=min_face)


@functools.cache
def ours(min_face: int) -> mtcnn.MTCNN:
    """The torch engine: facenet's results exactly."""
    return mtcnn.MTCNN(min_face_size=min_face, engine="torch")


@functools.cache
def on_opencv(min_face: int) -> mtcnn.MTCNN:
    """The OpenCV engine (the CPU default)."""
    return mtcnn.MTCNN(min_face_size=min_face)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def demo_frames(demo_root: Path) -> list[np.ndarray]:
    """SAMM-size demo frames as detection sees them: decoded at half size, downscaled to 640 px, RGB."""
    paths = sorted(demo_root.rglob("*.jpg"))
    frames = []
    for path in paths[:: max(1, len(paths) // 6)][:6]:
        grey = read_grey(path, reduce=2)
        small = cv2.resize(grey, None, fx=640 / max(grey.shape), fy=640 / max(grey.shape), interpolation=cv2.INTER_AREA)
        frames.append(np.ascontiguousarray(np.dstack([small] * 3)))
    return frames


def assert_close(mine: tuple, theirs: tuple) -> None:
    """Our OpenCV engine's ``detect`` result is facenet's up to its float rounding: the same faces, in the same order."""
    (boxes, probs), (fboxes, fprobs) = mine, theirs
    if fboxes is None:
        assert boxes is None and list(probs) == [None]
        return
    assert boxes is not None and boxes.dtype == np.float32 and probs.dtype == np.float32
    assert boxes.shape == np.asarray(fboxes).shape
    np.testing.assert_allclose(boxes, np.asarray(fboxes, dtype=np.float32), rtol=0, atol=OPENCV_PX)
    np.testing.assert_allclose(probs, np.asarray(fprobs, dtype=np.float32), rtol=0, atol=OPENCV_PROB)


def assert_same(mine: tuple, theirs: tuple) -> None:
    """Our ``detect`` result is facenet's exactly (facenet gives float32 values, some in object arrays)."""
    (boxes, probs), (fboxes, fprobs) = mine, theirs
    if fboxes is None:
        assert boxes is None and list(probs) == [None] and list(fprobs) == [None]
        return
    assert boxes is not None and boxes.dtype == np.float32 and probs.dtype == np.float32
    np.testing.assert_array_equal(boxes, np.asarray(fboxes, dtype=np.float32))
    np.testing.assert_array_equal(probs, np.asarray(fprobs, dtype=np.float32))


@pytest.mark.parametrize(("name", "min_face"), [("colour", 20), ("colour", 40), ("grey", 40), ("wide", 40), ("small", 40), ("grey", 80)])
def test_astronaut_as_facenet(astronaut: np.ndarray, name: str, min_face: int) -> None:
    grey = np.dstack([cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)] * 3)
    image = {
        "colour": astronaut,
        "grey": grey,
        "wide": np.ascontiguousarray(np.pad(grey, ((0, 0), (200, 300), (0, 0)), mode="reflect")),  # 1012×512, two mirrored faces
        "small": cv2.resize(astronaut, (180, 180), interpolation=cv2.INTER_AREA),  # a ≈ 30 px face, near the pyramid's end
    }[name]
    found = ours(min_face).detect(image)
    theirs = facenet(min_face).detect(image)
    assert_same(found, theirs)
    assert found[0] is not None and found[1][0] > 0.95
    assert_close(on_opencv(min_face).detect(image), theirs)


def test_demo_frames_as_facenet(demo_frames: list[np.ndarray]) -> None:
    for min_face, frames in ((40, demo_frames), (20, demo_frames[:1])):
        for frame in frames:
            found = ours(min_face).detect(frame)
            theirs = facenet(min_face).detect(frame)
            assert_same(found, theirs)
            assert found[0] is not None and found[1][0] > 0.95
            assert_close(on_opencv(min_face).detect(frame), theirs)


def test_no_face_is_none_as_facenet() -> None:
    noise = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    for image in (noise, np.full((200, 300, 3), 128, np.uint8)):
        assert_same(ours(40).detect(image), facenet(40).detect(image))
        assert_close(on_opencv(40).detect(image), facenet(40).detect(image))
        for detector in (ours(40), on_opencv(40)):
            faces = detector.find_faces(image)
            assert [(f.boxes.shape, f.probs.shape) for f in faces] == [((0, 4), (0,))]


def test_image_smaller_than_the_smallest_face_has_no_face() -> None:
    # facenet raises "torch.cat(): expected a non-empty list of Tensors" (an empty pyramid)
    assert ours(40).detect(np.zeros((30, 60, 3), np.uint8)) == (None, [None])
    assert on_opencv(40).detect(np.zeros((30, 60, 3), np.uint8)) == (None, [None])


def test_batch_equals_singles(astronaut: np.ndarray, demo_frames: list[np.ndarray]) -> None:
    noise = np.random.default_rng(4).integers(0, 256, demo_frames[0].shape, dtype=np.uint8)
    batch = [*demo_frames[:3], noise, demo_frames[3][:, ::-1].copy()]
    boxes, probs = ours(40).detect(batch)
    assert isinstance(boxes, list) and len(boxes) == len(probs) == len(batch)
    for image, b, p in zip(batch, boxes, probs):
        single_boxes, single_probs = ours(40).detect(image)
        if single_boxes is None:
            assert b is None and p == [None]
            continue
        assert b.shape == single_boxes.shape
        np.testing.assert_allclose(b, single_boxes, rtol=0, atol=BATCH_PX)
        np.testing.assert_allclose(p, single_probs, rtol=0, atol=BATCH_PROB)
    # and facenet's own batch (its NMS offsets each image's boxes; no tie or rounding hit that here)
    fboxes, fprobs = facenet(40).detect(batch)
    for b, p, fb, fp in zip(boxes, probs, fboxes, fprobs):
        assert_same((b, p), (fb, fp))
    # a 4-D array is a batch too; a single image is not
    stacked = ours(40).detect(np.stack(batch[:2]))
    assert [len(b) for b in stacked[0]] == [len(b) for b in boxes[:2]]
    assert ours(40).detect(astronaut)[0].ndim == 2
    # the OpenCV engine runs each image alone: a batch is its images' results exactly
    cv_boxes, cv_probs = on_opencv(40).detect(batch)
    for image, b, p in zip(batch, cv_boxes, cv_probs):
        single_boxes, single_probs = on_opencv(40).detect(image)
        if single_boxes is None:
            assert b is None and p == [None]
        else:
            np.testing.assert_array_equal(b, single_boxes)
            np.testing.assert_array_equal(p, single_probs)


def test_images_of_a_batch_must_have_one_size(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="one size"):
        ours(40).detect([astronaut, astronaut[:100]])
    with pytest.raises(ValueError, match="RGB"):
        ours(40).detect(astronaut[..., 0])


def test_largest_first_or_most_probable_first(astronaut: np.ndarray) -> None:
    smaller = np.pad(cv2.resize(astronaut, (307, 307), interpolation=cv2.INTER_AREA), ((0, 205), (0, 0), (0, 0)))
    two = np.ascontiguousarray(np.hstack([smaller, astronaut]))  # the larger face second
    boxes, probs = ours(40).detect(two)
    assert len(boxes) == 2
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert areas[0] > areas[1]
    assert_same((boxes, probs), facenet(40).detect(two))
    by_prob = mtcnn.MTCNN(min_face_size=40, select_largest=False, engine="torch").find_faces(two)[0]
    assert list(by_prob.probs) == sorted(by_prob.probs, reverse=True)
    assert sorted(map(tuple, by_prob.boxes.tolist())) == sorted(map(tuple, boxes.tolist()))


# ---------------------------------------------------------------- the pieces against facenet's / torch's


def test_weights_are_facenets_and_checked(tmp_path: Path) -> None:
    import torch

    folder = mtcnn.weights_dir()
    assert folder.name == "data" and folder.parent.name == "facenet_pytorch"
    for net in mtcnn.LAYERS:  # read without torch, the same numbers as torch.load
        ours_read, theirs = mtcnn.load_weights(net), torch.load(folder / f"{net}.pt", weights_only=True)
        assert set(ours_read) == set(theirs)
        for key, value in theirs.items():
            assert ours_read[key].flags.c_contiguous and ours_read[key].dtype == np.float32
            np.testing.assert_array_equal(ours_read[key], value.numpy())
    assert set(mtcnn.load_weights("onet")) == {f"{layer}.{kind}" for layer in mtcnn.LAYERS["onet"]
                                               for kind in (("weight",) if layer.startswith("prelu") else ("weight", "bias"))}
    # torch.save's zip format is read too, and a state dict of the wrong network is refused
    state = torch.load(folder / "rnet.pt", weights_only=True)
    torch.save(state, tmp_path / "rnet.pt")
    np.testing.assert_array_equal(mtcnn.load_weights("rnet", tmp_path)["dense4.weight"], state["dense4.weight"].numpy())
    torch.save(state, tmp_path / "pnet.pt")
    with pytest.raises(ValueError, match="not facenet-pytorch's pnet"):
        mtcnn.load_weights("pnet", tmp_path)
    # anything but tensors is never unpickled (as torch.load(weights_only=True))
    torch.save({"conv1.weight": state["conv1.weight"], "x": print}, tmp_path / "onet.pt")
    with pytest.raises(ValueError, match="not a torch state dict"):
        mtcnn.load_weights("onet", tmp_path)
    (tmp_path / "onet.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a torch state dict"):
        mtcnn.load_weights("onet", tmp_path)


def test_opencv_networks_compute_facenets() -> None:
    """The Caffe definitions written for OpenCV are facenet's networks: the same outputs as the
    torch engine's on random inputs, to float rounding (measured ≤ 4.8e-6 in regressions, 1.4e-5 in probabilities)."""
    rng = np.random.default_rng(8)
    torch_nets, opencv_nets = ours(40)._nets, on_opencv(40)._nets
    for net, shape in (("pnet", (1, 3, 61, 87)), ("rnet", (7, 3, 24, 24)), ("onet", (5, 3, 48, 48))):
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        (reg, probs), (treg, tprobs) = opencv_nets.run(net, x), torch_nets.run(net, x)
        assert reg.shape == treg.shape and probs.shape == tprobs.shape
        np.testing.assert_allclose(reg, treg, rtol=0, atol=2e-5)
        np.testing.assert_allclose(probs, tprobs, rtol=0, atol=5e-5)


def test_the_torch_engine_convolves_in_full_float32() -> None:
    """On CUDA, cuDNN's default TF32 moved boxes by 0.01 px from the CPU's and a batched frame
    by 1.5 px from itself alone (measured on an H200): the torch engine turns it off while it
    detects, and back on after."""
    import torch

    before = torch.backends.cudnn.allow_tf32
    with ours(40)._nets.inference():
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.is_inference_mode_enabled()
    assert torch.backends.cudnn.allow_tf32 == before


def test_the_opencv_engine_runs_on_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenCV 5 has no Caffe importer: there the torch engine runs on CPU too
    monkeypatch.setattr(mtcnn, "opencv_engine_available", lambda: False)
    assert mtcnn.MTCNN(min_face_size=40).engine == "torch"
    with pytest.raises(ValueError, match="Caffe importer"):
        mtcnn.MTCNN(engine="opencv")
    monkeypatch.undo()
    assert mtcnn.opencv_engine_available()  # requirements.txt's OpenCV 4.14
    with pytest.raises(ValueError, match="cpu only"):
        mtcnn.MTCNN(device="cuda", engine="opencv")
    with pytest.raises(ValueError, match="engine must be"):
        mtcnn.MTCNN(engine="onnx")
    assert on_opencv(40).engine == "opencv" and "engine='opencv'" in repr(on_opencv(40))


@pytest.mark.parametrize("count", [300, 1500])  # torchvision changes method (and tie order) above 1000 boxes
def test_nms_chooses_as_torchvision(count: int) -> None:
    import torch
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(count)
    corner = rng.integers(0, 200, (count, 2)).astype(np.float32) + rng.choice([0, 0.5, 0.25], (count, 2)).astype(np.float32)
    boxes = np.hstack([corner, corner + rng.integers(8, 40, (count, 1)).astype(np.float32)])
    scores = rng.choice(np.float32([0.6, 0.7, 0.8, 0.9, 1.0]), count)  # many ties
    one_image = np.zeros(count, dtype=np.int64)
    nms = ours(40)._nets.batched_nms
    for threshold in (0.5, 0.7):
        theirs = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(one_image), threshold)
        np.testing.assert_array_equal(nms(boxes, scores, one_image, threshold), theirs.numpy())
    # two images: each one's picks, in its own order, are what it gets alone
    images = rng.integers(0, 2, count)
    both = nms(boxes, scores, images, 0.7)
    for image in (0, 1):
        members = np.flatnonzero(images == image)
        alone = nms(boxes[members], scores[members], images[members] * 0, 0.7)
        np.testing.assert_array_equal(both[images[both] == image], members[alone])
    # the OpenCV engine's NMS keeps the same boxes (its tie order above 1000 boxes is numpy's stable sort, not torch's)
    kept = on_opencv(40)._nets.batched_nms(boxes, scores, one_image, 0.7)
    assert sorted(kept.tolist()) == sorted(nms(boxes, scores, one_image, 0.7).tolist())


def test_min_nms_chooses_as_facenet() -> None:
    import torch
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy

    rng = np.random.default_rng(5)
    corner = rng.uniform(0, 100, (60, 2)).astype(np.float32)
    boxes = np.hstack([corner, corner + rng.uniform(20, 60, (60, 1)).astype(np.float32)])
    scores = rng.choice(np.float32([0.9, 0.99, 1.0]), 60)
    zeros = np.zeros(60, np.int64)
    theirs = batched_nms_numpy(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(zeros), 0.7, "Min")
    np.testing.assert_array_equal(mtcnn._batched_nms_min(boxes, scores, zeros, 0.7), theirs.numpy())


def test_pyramid_and_crops_resample_as_torch() -> None:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(6)
    batch = rng.integers(0, 256, (2, 77, 131, 3), dtype=np.uint8)
    floats = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    for fallback in (None, ours(40)._nets.resampler(batch)):  # the OpenCV engine's, the torch engine's
        pixels = mtcnn._Pixels(batch, fallback)
        for size in [(23, 41), (77, 131), (100, 200), (12, 13)]:
            level = torch.from_numpy(pixels.level(*size))
            reference = F.interpolate(floats, size=size, mode="area")
            assert torch.equal(level, reference) and level.stride() == reference.stride()
        top, bottom, left, right = (np.array(v, np.int32) for v in ([0, 10, 50], [77, 30, 52], [0, 100, 7], [60, 131, 70]))
        inds = np.array([0, 1, 1])
        for size in (24, 48):
            crops = torch.from_numpy(pixels.crops(inds, top, bottom, left, right, size))
            reference = torch.cat([F.interpolate(floats[i, :, t:b, l:r].unsqueeze(0), size=(size, size), mode="area")
                                   for i, t, b, l, r in zip(inds, top, bottom, left, right)])
            assert torch.equal(crops, reference) and crops.stride() == reference.stride()
    # not uint8: torch resamples for the torch engine; the OpenCV engine sums in float64
    as_float = batch.astype(np.float32) + 0.25
    reference = F.interpolate(torch.from_numpy(as_float).permute(0, 3, 1, 2), size=(23, 41), mode="area")
    assert torch.equal(mtcnn._Pixels(as_float, ours(40)._nets.resampler(as_float)).level(23, 41), reference)
    np.testing.assert_allclose(mtcnn._Pixels(as_float).level(23, 41), reference.numpy(), rtol=1e-6)


# ---------------------------------------------------------------- sammflow.detect on top of it


@pytest.mark.slow
def test_detection_on_cpu_imports_neither_torch_nor_facenet() -> None:
    code = (
        "import sys\nimport numpy as np\nimport sammflow.detect as d\n"
        "from skimage import data\n"
        "box = d.detect_face(data.astronaut())\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'facenet_pytorch') if m in sys.modules), box.x1)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("]")[0] + "]" == "[]"  # on CPU: OpenCV, not even torch


def test_load_detector_builds_ours() -> None:
    detector = load_detector("cpu", 40)
    assert isinstance(detector, mtcnn.MTCNN) and detector.min_face_size == 40 and load_detector("cpu", 40) is detector
    assert detector.engine == "opencv"


def test_detect_faces_equals_detect_face_per_frame(demo_root: Path, astronaut: np.ndarray) -> None:
    paths = sorted(demo_root.rglob("*.jpg"))[:5]
    half = [read_grey(p, reduce=2) for p in paths[:3]]  # 1020×544
    full = [read_grey(p) for p in paths[3:5]]  # 2040×1088: the same detection size as half
    noise = np.random.default_rng(7).integers(0, 256, half[0].shape, dtype=np.uint8)
    tiny = np.zeros((20, 30), np.uint8)
    frames = [half[0], astronaut, full[0], noise, half[1], tiny, full[1], half[2]]
    params = DetectParams()
    found = detect_faces(frames, params=params, frame_numbers=range(10, 10 + len(frames)))
    assert len(found) == len(frames)
    for number, (frame, result) in enumerate(zip(frames, found), start=10):
        try:
            expected: FaceBox | NoFaceError = detect_face(frame, params=params, frame_number=number)
        except NoFaceError as exc:
            expected = exc
        if isinstance(expected, NoFaceError):
            assert isinstance(result, NoFaceError) and str(result) == str(expected)
        else:
            assert isinstance(result, FaceBox)
            assert (result.x1, result.y1, result.x2, result.y2) == (expected.x1, expected.y1, expected.x2, expected.y2)
            assert result.frame == number
            assert result.prob == pytest.approx(expected.prob, abs=BATCH_PROB)
    assert isinstance(found[3], NoFaceError) and isinstance(found[5], NoFaceError)
    assert "smaller than the smallest face" in str(found[5])


class BatchRecorder:
    """Stands in for MTCNN: a face box where the image's top-left pixel says, records the batches."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, tuple[int, ...]]] = []

    def detect(self, images):
        self.batches.append((len(images), images[0].shape))
        boxes = [np.array([[10.0, 10.0, 50.0, 60.0]]) if image[0, 0, 0] else None for image in images]
        probs = [np.array([0.99]) if image[0, 0, 0] else [None] for image in images]
        return boxes, probs


def test_detect_faces_batches_frames_by_detection_size() -> None:
    frames = [np.full((100, 120), i % 5, np.uint8) for i in range(BATCH + 5)] + [np.full((90, 80), 1, np.uint8)] * 2
    recorder = BatchRecorder()
    found = detect_faces(frames, params=DetectParams(max_side=0), detector=recorder)
    assert recorder.batches == [(BATCH, (100, 120, 3)), (5, (100, 120, 3)), (2, (90, 80, 3))]
    assert [isinstance(f, FaceBox) for f in found] == [bool(i % 5) for i in range(BATCH + 5)] + [True, True]
    assert found[1] == FaceBox(10, 10, 50, 60, prob=0.99)
    assert "no face found" in str(found[0])
    with pytest.raises(ValueError, match="frame numbers"):
        detect_faces(frames[:2], detector=recorder, frame_numbers=[1])
    with pytest.raises(ValueError, match="uint8"):
        detect_faces([np.zeros((10, 10), np.float32)], detector=recorder)
    assert detect_faces([], detector=None) == []


def test_detect_faces_with_facenets_own_detector(astronaut: np.ndarray) -> None:
    # facenet's MTCNN takes a list too (object arrays come back): detect_faces converts them
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    frames = [grey, grey[:, ::-1].copy()]
    theirs = detect_faces(frames, params=DetectParams(max_side=0), detector=facenet(40))
    assert detect_faces(frames, params=DetectParams(max_side=0), detector=ours(40)) == theirs
    on_cpu = detect_faces(frames, params=DetectParams(max_side=0))  # the OpenCV engine: the same whole-pixel boxes
    assert [(f.x1, f.y1, f.x2, f.y2) for f in on_cpu] == [(f.x1, f.y1, f.x2, f.y2) for f in theirs]
    assert [f.prob for f in on_cpu] == pytest.approx([f.prob for f in theirs], abs=OPENCV_PROB)
    assert json.dumps([f.to_dict() for f in on_cpu])  # plain Python numbers


class Unsettled:
    """Stands in for MTCNN whose batched arithmetic lands a box coordinate next to a half pixel
    (where it rounds) or two faces' probabilities next to each other; alone, it is clear of both."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def detect(self, images):
        if isinstance(images, list):  # a batch
            self.calls.append(len(images))
            near_half = [np.array([[10.4996, 10.0, 50.0, 60.0]]), np.array([[20.0, 20.0, 70.0, 90.0], [21.0, 21.0, 71.0, 91.0]])]
            probs = [np.array([0.99]), np.array([0.95, 0.94995])]
            return near_half, probs
        self.calls.append(1)
        return np.array([[11.0, 10.0, 50.0, 60.0]]), np.array([0.99])


def test_a_batched_result_that_could_round_otherwise_is_detected_again_alone() -> None:
    """A clip's box must not depend on which clips it was detected with: a batched result whose
    rounding (to whole pixels, or of which face is most probable) the networks' last-bit batch
    differences could change is replaced by the frame's own."""
    frames = [np.full((100, 120), 1, np.uint8), np.full((100, 120), 2, np.uint8)]
    detector = Unsettled()
    found = detect_faces(frames, params=DetectParams(max_side=0), detector=detector)
    assert detector.calls == [2, 1, 1]  # the batch, then each frame alone
    assert found == [FaceBox(11, 10, 50, 60, prob=0.99)] * 2
