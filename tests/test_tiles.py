"""``sammflow.tiles``: many clips at once for the dashboard (the grid's aligned frames, the flow
page's sample flows).

What it must guarantee: the results of the one-clip functions it stands in for
(``sammflow.cache.aligned_crops``, ``sammflow.pipeline.find_apex_face``,
``sammflow.flow.compute_flow``), whether computed here or in worker processes; the boxes and
crops it makes land in the disk store, where the other pages find them; what the store holds
is neither detected nor aligned again; one clip's failure is that clip's, named.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sammflow import cache, detect, tiles
from sammflow.annotations import read_annotations
from sammflow.cache import ClipStore, aligned_crops
from sammflow.dataset import Dataset, load_dataset
from sammflow.flow import compute_flow
from sammflow.params import FlowParams, PipelineParams
from sammflow.pipeline import ClipError, NormalizedClip, find_apex_face
from sammflow.tiles import FrameRequest, aligned_frames, compute_flows

pytest_plugins = ("app_fixtures",)  # the demo dataset of the dashboard tests (app_data)


@pytest.fixture(scope="module")
def dataset(app_data: Path) -> Dataset:
    return load_dataset(app_data, read_annotations(app_data / "samm.csv"))


def requests(dataset: Dataset, which: str = "onset") -> list[FrameRequest]:
    out = []
    for ann, frames in dataset.ready():
        out.append(FrameRequest(ann, ann, frames, getattr(ann, which)))
    return out


def assert_same(a: NormalizedClip, b: NormalizedClip) -> None:
    assert a.clip == b.clip and sorted(a.crops) == sorted(b.crops) and a.warnings == b.warnings
    for n in a.crops:
        assert np.array_equal(a.crops[n], b.crops[n]), n
    assert a.alignment.box == b.alignment.box
    for name in ("frames", "offsets", "scores", "residuals", "angles", "scales"):
        assert np.array_equal(getattr(a.alignment, name), getattr(b.alignment, name)), name


@pytest.fixture()
def work(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """What ``aligned_frames`` computes in this process: the clips whose apex boxes it looks
    for, and whether it aligned anything here (``normalize_clip`` of the cache, with one worker)."""
    calls: dict[str, list] = {"faces": [], "normalize": []}
    real_faces, real_normalize = tiles.find_apex_faces, cache.normalize_clip

    def faces(items, **kwargs):
        calls["faces"] += [clip.clip for clip, _ in items]
        return real_faces(items, **kwargs)

    def normalize(*args, **kwargs):
        calls["normalize"].append(sorted(kwargs["numbers"]))
        return real_normalize(*args, **kwargs)

    monkeypatch.setattr(tiles, "find_apex_faces", faces)
    monkeypatch.setattr(cache, "normalize_clip", normalize)
    return calls


@pytest.mark.parametrize("workers", [1, 2])
def test_aligned_frames_are_the_caches_crops_and_fill_the_store(dataset: Dataset, tmp_path: Path, work: dict[str, list],
                                                                monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    store = ClipStore(dataset.root, base=tmp_path)
    params = PipelineParams()
    wanted = requests(dataset)
    progress: list[tuple[int, int, str]] = []
    made = aligned_frames(wanted, params, store=store, workers=workers, progress=lambda *args: progress.append(args))
    assert work["faces"] == [req.clip.clip for req in wanted]
    assert [d for d, _, _ in progress] == sorted(d for d, _, _ in progress) and progress[-1][:2] == (len(wanted), len(wanted))
    stages = [text for _, _, text in progress]
    assert stages[0] in ("Loading the face detector", "Detecting faces") and set(stages) <= {
        "Loading the face detector", "Detecting faces", "Aligning"}
    for req, result in zip(wanted, made):
        assert isinstance(result, NormalizedClip) and sorted(result.crops) == [req.number]
        box, warnings = find_apex_face(req.annotated, req.frames, params=params.detect)
        assert result.alignment.box == box and list(result.warnings) == warnings
    # everything is in the store now: the cache reads the same results back, detecting and aligning nothing
    monkeypatch.setattr(detect, "load_detector", lambda *args: pytest.fail("the boxes are in the store"))
    work["normalize"].clear()
    for req, result in zip(wanted, made):
        assert_same(aligned_crops(dataset, req.clip.clip, params, [req.number], store=store), result)
    again = aligned_frames(wanted, params, store=store, workers=workers, progress=lambda *args: progress.append(args))
    for first, second in zip(made, again):
        assert_same(first, second)
    assert work["normalize"] == [] and work["faces"] == [req.clip.clip for req in wanted]


def test_a_stored_box_is_not_looked_for_again(dataset: Dataset, tmp_path: Path, work: dict[str, list]) -> None:
    store = ClipStore(dataset.root, base=tmp_path)
    params = PipelineParams()
    onsets = requests(dataset)
    aligned_frames(onsets[:1], params, store=store, workers=1)
    assert work["faces"] == [onsets[0].clip.clip] and work["normalize"] == [[onsets[0].number]]
    apexes = requests(dataset, "apex")
    made = aligned_frames(apexes, params, store=store, workers=1)  # a box in the store, its apex crop not yet
    assert work["faces"] == [req.clip.clip for req in onsets]  # the first clip's box was not looked for again
    assert work["normalize"] == [[req.number] for req in [onsets[0], *apexes]]
    for req, result in zip(apexes, made):
        assert_same(result, aligned_crops(dataset, req.clip.clip, params, [req.number], store=store))


def test_a_spotted_apex_is_the_template_and_the_annotated_apex_gives_the_box(dataset: Dataset, tmp_path: Path) -> None:
    store = ClipStore(dataset.root, base=tmp_path)
    params = PipelineParams()
    ann, frames = dataset.ready()[1]
    spotted = dataclasses.replace(ann, apex=ann.apex + 1, apex_source="spotted")
    made = aligned_frames([FrameRequest(spotted, ann, frames, ann.onset)], params, store=store, workers=1)[0]
    assert_same(made, aligned_crops(dataset, ann.clip, params, [ann.onset], store=store, clip=spotted))
    assert made.clip == spotted


def test_failing_clips_are_named_and_the_others_still_come(dataset: Dataset, tmp_path: Path) -> None:
    root = Path(shutil.copytree(dataset.root, tmp_path / "DATA"))
    broken = load_dataset(root, read_annotations(root / "samm.csv"))
    wanted = requests(broken)
    (onset_clip, apex_clip) = (wanted[0], wanted[1])
    onset_clip.frames.path(onset_clip.number).write_bytes(b"not a jpeg")
    apex_clip.frames.path(apex_clip.annotated.apex).unlink()
    store = ClipStore(root, base=tmp_path / "cache")
    made = aligned_frames(wanted, PipelineParams(), store=store, workers=2)
    assert isinstance(made[0], ClipError) and str(made[0]).startswith(f"{onset_clip.clip.clip}: ")
    assert onset_clip.frames.path(onset_clip.number).name in str(made[0])
    assert isinstance(made[1], ClipError) and str(made[1]).startswith(f"{apex_clip.clip.clip}: ")
    assert apex_clip.frames.path(apex_clip.annotated.apex).name in str(made[1])
    assert all(isinstance(result, NormalizedClip) for result in made[2:])


def test_no_face_is_the_clips_error(dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = requests(dataset)[:2]

    class Faceless:
        def detect(self, images):
            return ([None] * len(images), [None] * len(images)) if isinstance(images, list) else (None, None)

    monkeypatch.setattr(detect, "load_detector", lambda *args: Faceless())
    made = aligned_frames(wanted, PipelineParams(), store=ClipStore(dataset.root, base=tmp_path), workers=1)
    for req, result in zip(wanted, made):
        assert isinstance(result, ClipError) and str(result).startswith(f"{req.clip.clip}: no face found on apex frame {req.clip.apex}")


def test_torch_gets_its_threads_back(dataset: Dataset, tmp_path: Path) -> None:
    aligned_frames(requests(dataset)[:2], PipelineParams(), store=ClipStore(dataset.root, base=tmp_path), workers=2)
    torch = sys.modules["torch"]
    before = torch.get_num_threads()
    aligned_frames(requests(dataset, "apex")[:2], PipelineParams(), store=ClipStore(dataset.root, base=tmp_path / "other"), workers=2)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("method", ["farneback", "tvl1"])
def test_compute_flows_are_compute_flows_fields(face_image: np.ndarray, method: str) -> None:
    if method == "tvl1" and not hasattr(cv2, "optflow"):
        pytest.skip("TV-L1 needs OpenCV's contrib build")
    crop = cv2.resize(face_image, (112, 112), interpolation=cv2.INTER_AREA)
    pairs = [(crop, np.roll(crop, shift, axis=1)) for shift in (1, 2, 3)]
    params = FlowParams(method=method)
    for threads in (1, 2):
        fields = compute_flows(pairs, params, threads=threads)
        for (onset, apex), field in zip(pairs, fields):
            assert np.array_equal(field.uv, compute_flow(onset, apex, params=params).uv)
