"""``sammflow.cache``: the on-disk cache the dashboard reads through.

What it must guarantee: it returns the pipeline's own results (a ``NormalizedClip`` equal to
``normalize_clip``'s), never a stale one (a changed frame is realigned, a changed apex frame
redetected), and it is keyed by what changes the output only: the quality thresholds and the
torch device leave it warm, a geometry parameter does not. Work is counted by wrapping the
functions the cache calls (``normalize_clip`` for alignment, ``detect_face`` for MTCNN).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sammflow import cache, pipeline
from sammflow.annotations import read_annotations
from sammflow.cache import ClipStore, aligned_crops
from sammflow.dataset import Dataset, load_dataset
from sammflow.params import AlignParams, AnnotationParams, DetectParams, PipelineParams
from sammflow.pipeline import ClipError, NormalizedClip, find_apex_face, normalize_clip, spot_clip
from sammflow.spot import motion_curve

pytest_plugins = ("app_fixtures",)  # the demo dataset of the dashboard tests (app_data)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def counts(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Calls of ``normalize_clip`` by the cache (with the frames it aligned) and of MTCNN
    (``detect_face``) by the pipeline's apex search and by ``mtcnn_track``."""
    calls: dict[str, list] = {"normalize": [], "detect": []}
    real_normalize, real_detect = cache.normalize_clip, pipeline.detect_face

    def normalize(*args, **kwargs):
        calls["normalize"].append(sorted(kwargs["numbers"]))
        return real_normalize(*args, **kwargs)

    def detect(*args, **kwargs):
        calls["detect"].append(kwargs.get("frame_number"))
        return real_detect(*args, **kwargs)

    monkeypatch.setattr(cache, "normalize_clip", normalize)
    monkeypatch.setattr(pipeline, "detect_face", detect)
    monkeypatch.setattr(cache, "detect_face", detect)
    return calls


@pytest.fixture(scope="module")
def dataset(app_data: Path) -> Dataset:
    return load_dataset(app_data, read_annotations(app_data / "samm.csv"))


def assert_same(a: NormalizedClip, b: NormalizedClip) -> None:
    """Equal crops (exactly) and equal alignment (every number, exactly)."""
    assert a.clip == b.clip and sorted(a.crops) == sorted(b.crops)
    for n in a.crops:
        assert a.crops[n].dtype == b.crops[n].dtype == np.uint8 and np.array_equal(a.crops[n], b.crops[n]), n
    assert a.alignment.box == b.alignment.box
    for name in ("frames", "offsets", "scores", "residuals", "angles", "scales"):
        assert np.array_equal(getattr(a.alignment, name), getattr(b.alignment, name)), name


# ---------------------------------------------------------------- the pipeline's result, read through


def test_aligned_crops_are_normalize_clips_crops(dataset: Dataset, tmp_path: Path, counts: dict[str, list]) -> None:
    ann, frames = dataset.clip(dataset.annotations.clips[0].clip)
    params = PipelineParams()
    numbers = [ann.onset, ann.apex, ann.offset]
    expected = normalize_clip(ann, frames, params=params, numbers=numbers)
    store = ClipStore(dataset.root, base=tmp_path)
    counts["normalize"].clear()
    first = aligned_crops(dataset, ann.clip, params, numbers, store=store)  # computed and stored
    again = aligned_crops(dataset, ann.clip, params, reversed(numbers), store=store)  # read back from disk
    restarted = aligned_crops(dataset, ann.clip, params, numbers, store=ClipStore(dataset.root, base=tmp_path))
    assert counts["normalize"] == [sorted(numbers)]  # once, for the three frames
    for result in (first, again, restarted):
        assert isinstance(result, NormalizedClip) and sorted(result.crops) == sorted(numbers)
        assert_same(result, expected)
        assert result.warnings == tuple(expected.warnings)
    # a subset is a subset; one new frame is aligned alone
    assert_same(aligned_crops(dataset, ann.clip, params, [ann.apex], store=store),
                normalize_clip(ann, frames, params=params, numbers=[ann.apex]))
    counts["normalize"].clear()
    more = aligned_crops(dataset, ann.clip, params, [ann.onset, ann.onset + 1], store=store)
    assert counts["normalize"] == [[ann.onset + 1]]
    assert_same(more, normalize_clip(ann, frames, params=params, numbers=[ann.onset, ann.onset + 1]))


def test_aligned_crops_name_the_clip_and_the_frame(dataset: Dataset, tmp_path: Path) -> None:
    store = ClipStore(dataset.root, base=tmp_path)
    with pytest.raises(ClipError, match="^999_9_9: not a valid annotated clip"):
        aligned_crops(dataset, "999_9_9", PipelineParams(), [1], store=store)
    ann = dataset.annotations.clips[1]
    with pytest.raises(ClipError, match=f"^{ann.clip}: frame 99999 not on disk"):
        aligned_crops(dataset, ann.clip, PipelineParams(), [ann.onset, 99999], store=store)


# ---------------------------------------------------------------- never stale


def test_a_changed_frame_is_not_served_stale(app_data: Path, tmp_path: Path, counts: dict[str, list]) -> None:
    root = Path(shutil.copytree(app_data, tmp_path / "DATA"))  # its frames get changed below
    dataset = load_dataset(root, read_annotations(root / "samm.csv"))
    ann, frames = dataset.clip(dataset.annotations.clips[0].clip)
    store = ClipStore(root, base=tmp_path / "cache")
    params = PipelineParams()
    first = aligned_crops(dataset, ann.clip, params, [ann.onset, ann.apex], store=store)
    again = aligned_crops(dataset, ann.clip, params, [ann.onset, ann.apex], store=store)
    assert len(counts["detect"]) == 1 and len(counts["normalize"]) == 1  # the box and the crops came from disk the second time
    assert_same(first, again)
    # same size and modification time rules: a touched onset frame is realigned ...
    onset_path = frames.frames[ann.onset]
    assert store.get_crop(ann.clip, params.detect.hash, params.align.hash, ann.onset, onset_path, first.alignment.box,
                          apex=frames.frames[ann.apex]) is not None
    stat = os.stat(onset_path)
    os.utime(onset_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert store.get_crop(ann.clip, params.detect.hash, params.align.hash, ann.onset, onset_path, first.alignment.box,
                          apex=frames.frames[ann.apex]) is None
    aligned_crops(dataset, ann.clip, params, [ann.onset, ann.apex], store=store)
    assert counts["normalize"][-1] == [ann.onset] and len(counts["detect"]) == 1
    # ... and a frame whose content changed gives the new content's crop, not the old one
    shutil.copyfile(frames.frames[ann.offset], onset_path)
    changed = aligned_crops(dataset, ann.clip, params, [ann.onset], store=store)
    assert_same(changed, normalize_clip(ann, frames, params=params, numbers=[ann.onset], box=first.alignment.box))
    assert not np.array_equal(changed.crops[ann.onset], first.crops[ann.onset])
    # a changed apex frame: the box itself is redetected
    apex_path = frames.frames[ann.apex]
    stat = os.stat(apex_path)
    os.utime(apex_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    aligned_crops(dataset, ann.clip, params, [ann.onset], store=store)
    assert len(counts["detect"]) == 2


def test_a_damaged_entry_is_recomputed(dataset: Dataset, tmp_path: Path, counts: dict[str, list]) -> None:
    ann = dataset.annotations.clips[0]
    store = ClipStore(dataset.root, base=tmp_path)
    params = PipelineParams()
    first = aligned_crops(dataset, ann.clip, params, [ann.onset], store=store)
    folder = store.align_dir(ann.clip, params.detect.hash, params.align.hash)
    (folder / f"f{ann.onset}.png").write_bytes(b"not a png")
    (store.detect_dir(ann.clip, params.detect.hash) / "box.json").write_text("{")
    counts["normalize"].clear()
    counts["detect"].clear()
    assert_same(aligned_crops(dataset, ann.clip, params, [ann.onset], store=store), first)
    assert counts["normalize"] == [[ann.onset]] and len(counts["detect"]) == 1


# ---------------------------------------------------------------- spotted apexes (issue 11)


def test_crops_aligned_to_another_apex_are_not_served_for_the_annotated_one(dataset: Dataset, tmp_path: Path,
                                                                              counts: dict[str, list]) -> None:
    """A spotted apex is another frame with the same face box: crops aligned to it are the
    export's (``normalize_clip`` of the spotted clip with the annotated apex's box), and
    neither set of crops is served for the other."""
    ann, frames = dataset.clip(dataset.annotations.clips[1].clip)
    store = ClipStore(dataset.root, base=tmp_path)
    params = PipelineParams()
    numbers = [ann.onset, ann.apex, ann.apex + 1]
    annotated = aligned_crops(dataset, ann.clip, params, numbers, store=store)
    other = dataclasses.replace(ann, apex=ann.apex + 1, apex_source="spotted")
    spotted = aligned_crops(dataset, ann.clip, params, numbers, store=store, clip=other)
    assert counts["normalize"] == [numbers, numbers] and len(counts["detect"]) == 1  # one box, realigned to the other template
    assert spotted.clip == other and spotted.alignment.box == annotated.alignment.box
    assert_same(spotted, normalize_clip(other, frames, params=params, numbers=numbers, box=annotated.alignment.box))
    assert not np.array_equal(spotted.crops[ann.onset], annotated.crops[ann.onset])
    # each template's crops are computed again when the other's are on disk, never mixed up
    assert_same(aligned_crops(dataset, ann.clip, params, numbers, store=store), annotated)
    assert len(counts["normalize"]) == 3


def test_spotted_clip_is_spot_clip_from_the_stored_box(app_data: Path, tmp_path: Path, counts: dict[str, list]) -> None:
    dataset = load_dataset(app_data, read_annotations(app_data / "samm.csv")).resolved(AnnotationParams(apex="spot"))
    ann, frames = dataset.clip(dataset.annotations.clips[1].clip)
    assert ann.spot
    store = ClipStore(dataset.root, base=tmp_path)
    box, _ = cache.apex_box(dataset, ann.clip, PipelineParams().detect, store=store)
    clip, curve = cache.spotted_clip(dataset, ann.clip, PipelineParams(), store=store)
    assert (clip, curve) == spot_clip(ann, frames, box=box)
    assert clip.apex_source == "spotted" and not clip.spot and sorted(curve) == frames.span(ann.onset, ann.offset)
    assert len(counts["detect"]) == 1  # the box of the provisional apex, from the store
    assert cache.motion(dataset, ann.clip, PipelineParams(), store=store) == (clip, curve)  # the curve it was spotted on
    # a clip not to be spotted: itself, no curve, nothing computed
    plain = load_dataset(app_data, read_annotations(app_data / "samm.csv"))
    counts["normalize"].clear()
    assert cache.spotted_clip(plain, ann.clip, PipelineParams(), store=store) == (plain.annotations.by_clip[ann.clip], {})
    assert counts["normalize"] == []


def test_motion_of_an_annotated_clip_is_the_curve_of_its_aligned_crops(dataset: Dataset, tmp_path: Path) -> None:
    ann, frames = dataset.clip(dataset.annotations.clips[0].clip)
    store = ClipStore(dataset.root, base=tmp_path)
    clip, curve = cache.motion(dataset, ann.clip, PipelineParams(), store=store)
    numbers = frames.span(ann.onset, ann.offset)
    crops = normalize_clip(ann, frames, numbers=numbers).crops
    assert clip == ann and curve == motion_curve(crops, ann.onset)
    assert sorted(curve) == numbers and curve[ann.onset] == 0.0
    assert max(curve, key=curve.get) in range(ann.onset + 1, ann.offset + 1)
    with pytest.raises(ClipError, match="^999_9_9: "):
        cache.motion(dataset, "999_9_9", PipelineParams(), store=store)


# ---------------------------------------------------------------- keyed by what changes the output


@pytest.mark.parametrize("change", [
    {"align": {"min_score": 0.999}}, {"align": {"max_residual": 1.5}}, {"detect": {"device": "cuda:7"}},
    {"align": {"min_score": 0.1, "max_residual": 0.05}, "detect": {"device": "cpu"}},
], ids=["min_score", "max_residual", "device", "all"])
def test_quality_thresholds_and_the_device_keep_the_cache_warm(dataset: Dataset, tmp_path: Path, counts: dict[str, list],
                                                                change: dict[str, dict]) -> None:
    ann = dataset.annotations.clips[2]
    store = ClipStore(dataset.root, base=tmp_path)
    params = PipelineParams()
    numbers = [ann.onset, ann.apex]
    warm = aligned_crops(dataset, ann.clip, params, numbers, store=store)
    assert len(counts["normalize"]) == 1 and len(counts["detect"]) == 1
    changed = dataclasses.replace(params, **{stage: dataclasses.replace(getattr(params, stage), **values)
                                             for stage, values in change.items()})
    assert changed != params and changed.hash == params.hash
    assert (changed.detect.hash, changed.align.hash) == (params.detect.hash, params.align.hash)
    # a device without CUDA would fail to load MTCNN: nothing is detected, nothing realigned
    result = aligned_crops(dataset, ann.clip, changed, numbers, store=store)
    assert len(counts["normalize"]) == 1 and len(counts["detect"]) == 1
    assert_same(result, warm)


@pytest.mark.parametrize(("stage", "values", "redetects"), [
    ("align", {"margin": 41}, False), ("align", {"crop_size": 160}, False), ("align", {"method": "whole_pixel"}, False),
    ("detect", {"min_prob": 0.95}, True),
], ids=["margin", "crop_size", "method", "min_prob"])
def test_an_output_parameter_recomputes(dataset: Dataset, tmp_path: Path, counts: dict[str, list], stage: str, values: dict,
                                        redetects: bool) -> None:
    ann = dataset.annotations.clips[2]
    store = ClipStore(dataset.root, base=tmp_path)
    params = PipelineParams()
    numbers = [ann.onset, ann.apex]
    aligned_crops(dataset, ann.clip, params, numbers, store=store)
    changed = dataclasses.replace(params, **{stage: dataclasses.replace(getattr(params, stage), **values)})
    assert changed.hash != params.hash
    result = aligned_crops(dataset, ann.clip, changed, numbers, store=store)
    assert counts["normalize"] == [numbers, numbers] and len(counts["detect"]) == (2 if redetects else 1)
    assert_same(result, normalize_clip(ann, dataset.clip(ann.clip)[1], params=changed, numbers=numbers))
    # and the first parameter set is still cached beside it
    aligned_crops(dataset, ann.clip, params, numbers, store=store)
    assert len(counts["normalize"]) == 2


# ---------------------------------------------------------------- the one apex-box cache


def test_find_apex_face_with_a_store_detects_once(dataset: Dataset, tmp_path: Path, counts: dict[str, list]) -> None:
    ann, frames = dataset.clip(dataset.annotations.clips[3].clip)
    store = ClipStore(dataset.root, base=tmp_path)
    box, warnings = find_apex_face(ann, frames, params=DetectParams(), boxes=store)
    assert counts["detect"] == [ann.apex]
    entry = json.loads((store.detect_dir(ann.clip, DetectParams().hash) / "box.json").read_text())
    assert entry["box"] == box.to_dict() and entry["warnings"] == warnings
    assert find_apex_face(ann, frames, params=DetectParams(), boxes=store) == (box, warnings)
    assert find_apex_face(ann, frames, params=DetectParams(), boxes=ClipStore(dataset.root, base=tmp_path)) == (box, warnings)  # a restart
    assert find_apex_face(ann, frames, params=DetectParams(device="cuda:7"), boxes=store) == (box, warnings)  # no CUDA needed
    assert counts["detect"] == [ann.apex]
    # what the store holds is what detection without it finds
    assert find_apex_face(ann, frames, params=DetectParams()) == (box, warnings) and len(counts["detect"]) == 2
    # another detection parameter: found again, kept apart
    find_apex_face(ann, frames, params=DetectParams(min_prob=0.95), boxes=store)
    assert len(counts["detect"]) == 3
    assert len(list(store.root.glob(f"{ann.clip}/*/box.json"))) == 2


def test_the_store_is_the_only_apex_box_cache(dataset: Dataset, counts: dict[str, list]) -> None:
    """Without a store nothing is remembered in the process (no hidden in-memory box cache)."""
    ann, frames = dataset.clip(dataset.annotations.clips[3].clip)
    first = find_apex_face(ann, frames)
    assert find_apex_face(ann, frames) == first
    assert counts["detect"] == [ann.apex, ann.apex]


def test_mtcnn_track_is_detected_once_per_clip(dataset: Dataset, tmp_path: Path, counts: dict[str, list]) -> None:
    ann, frames = dataset.clip(dataset.annotations.clips[1].clip)
    store = ClipStore(dataset.root, base=tmp_path)
    progress: list[tuple[int, int]] = []
    track = cache.mtcnn_track(dataset, ann.clip, DetectParams(), store=store, progress=lambda d, t: progress.append((d, t)))
    assert sorted(track) == frames.numbers and all(box is not None for box in track.values())
    assert counts["detect"] == frames.numbers and progress == [(i + 1, len(frames.numbers)) for i in range(len(frames.numbers))]
    progress.clear()
    assert cache.mtcnn_track(dataset, ann.clip, DetectParams(device="cuda:7"), store=store, progress=lambda d, t: progress.append((d, t))) == track
    assert counts["detect"] == frames.numbers and progress == []  # from disk, no progress to report


# ---------------------------------------------------------------- housekeeping


def test_prune_removes_the_least_recently_used_crop_folders(tmp_path: Path) -> None:
    folders = [tmp_path / "clips" / "DATA-x" / f"c{i}" / "dh" / "ah" for i in range(5)]
    for i, folder in enumerate(folders):
        folder.mkdir(parents=True)
        os.utime(folder, (1_000_000 + i, 1_000_000 + i))
    os.utime(folders[0], (2_000_000, 2_000_000))  # used last (ClipStore.touch)
    assert cache.prune(tmp_path, max_entries=2) == 3
    assert [f.exists() for f in folders] == [True, False, False, False, True]
    assert cache.prune(tmp_path, max_entries=2) == 0


def test_clip_ids_become_one_safe_path_component(tmp_path: Path) -> None:
    store = ClipStore(tmp_path / "DATA", base=tmp_path / "cache")
    for clip in ("../../etc", "a/b", "..", "006_1_1"):
        folder = store.detect_dir(clip, "h")
        assert folder.parent.parent == store.root and folder.parent.name not in ("..", ".", "")
    assert store.detect_dir("006_1_1", "h").parent.name == "006_1_1"


def test_crops_are_stored_lossless(dataset: Dataset, tmp_path: Path) -> None:
    ann = dataset.annotations.clips[0]
    store = ClipStore(dataset.root, base=tmp_path)
    params = PipelineParams(align=AlignParams(crop_size=112))
    result = aligned_crops(dataset, ann.clip, params, [ann.apex], store=store)
    png = store.align_dir(ann.clip, params.detect.hash, params.align.hash) / f"f{ann.apex}.png"
    assert np.array_equal(cv2.imread(str(png), cv2.IMREAD_GRAYSCALE), result.crops[ann.apex])
    assert result.crops[ann.apex].shape == (112, 112)


@pytest.mark.slow
def test_disk_cache_module_imports_neither_torch_nor_streamlit() -> None:
    code = "import sys, sammflow.cache\nprint(sorted(m for m in ('torch', 'streamlit') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_dataset_and_a_cache_in_latin1_folders(demo_root: Path, tmp_path: Path) -> None:
    """Folder names that are not UTF-8 (issue 10): keys, entries and messages all work."""
    latin1 = os.fsdecode(b"donn\xe9es")
    root = Path(shutil.copytree(demo_root, tmp_path / latin1 / "DATA"))
    dataset = load_dataset(root, read_annotations(root / "samm.csv"))
    store = ClipStore(root, base=tmp_path / latin1 / "cache")
    clip = dataset.annotations.clips[0]
    params = PipelineParams()
    first = aligned_crops(dataset, clip.clip, params, [clip.onset, clip.apex], store=store)
    assert_same(aligned_crops(dataset, clip.clip, params, [clip.onset, clip.apex], store=store), first)  # read back from the cache
    frames = dataset.clips_on_disk[clip.clip]
    missing = max(frames.numbers) + 1
    with pytest.raises(ClipError) as exc:
        aligned_crops(dataset, clip.clip, params, [missing], store=store)
    assert "donn\\xe9es" in str(exc.value) and str(exc.value).encode("utf-8")
