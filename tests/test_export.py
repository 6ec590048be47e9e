"""The batch jobs on the demo dataset: the files that export / normalize / flows / gif write
(resume and refusal rules: ``test_outfolder.py``; the command line: ``test_cli*.py``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pytest

from sammflow.annotations import read_annotations
from sammflow.dataset import load_dataset
from sammflow.export import MANIFEST_COLUMNS, export_flows, export_gifs, flows_from_normalized, normalize_dataset
from sammflow.params import AlignParams, AnnotationParams, DetectParams, GifParams, PipelineParams
from sammflow.pipeline import normalize_clip


def _dataset(root):
    return load_dataset(root, read_annotations(root / "samm.csv"))


def _manifest(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_export_writes_maps_manifest_and_params(demo_root, tmp_path):
    out = tmp_path / "out"
    report = export_flows(_dataset(demo_root), out)
    assert report.ok == 4 and not report.failed
    rows = _manifest(out / "manifest.csv")
    assert list(rows[0]) == MANIFEST_COLUMNS
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "ok" and row["error"] == ""
        path = out / "flows" / f"sub{row['subject']}_{row['clip']}.png"
        assert row["output"] == f"flows/{path.name}"
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (28, 28, 3) and image.max() > 0
        assert int(row["x2"]) > int(row["x1"]) and int(row["y2"]) > int(row["y1"])
        assert 0.9 < float(row["match_score_min"]) <= 1.0
        assert len(row["subject"]) == 3 and row["emotion"]
    params = json.loads((out / "params.json").read_text())
    assert params["params"] == PipelineParams().output_dict()  # what changes the outputs, hashed
    assert params["settings"] == PipelineParams().judging_dict() == {"detect": {"device": "cpu"},
                                                                     "align": {"min_score": 0.8, "max_residual": 0.2}}
    assert params["params_hash"] == PipelineParams().hash
    assert params["params"]["flow"] == {"method": "farneback", "pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0, "head_motion": False}
    for package in ("numpy", "opencv-contrib-python-headless", "facenet-pytorch", "torch"):
        assert params["versions"][package] not in ("", "not installed")
    assert params["dataset"] == str(demo_root)


def test_a_clip_missing_its_apex_fails_alone(demo_copy, tmp_path):
    dataset = _dataset(demo_copy)
    victim, frames = dataset.ready()[1]
    frames.frames[victim.apex].unlink()
    report = export_flows(_dataset(demo_copy), tmp_path / "out")
    rows = {r["clip"]: r for r in _manifest(tmp_path / "out" / "manifest.csv")}
    assert rows[victim.clip]["status"] == "failed"
    assert f"apex frame {victim.apex} not on disk" in rows[victim.clip]["error"]
    assert victim.clip in rows[victim.clip]["error"]
    assert [r["clip"] for r in report.failed] == [victim.clip]
    assert sum(r["status"] == "ok" for r in rows.values()) == 3
    assert not (tmp_path / "out" / "flows" / f"sub{victim.subject}_{victim.clip}.png").exists()


def test_impossible_annotation_rows_are_reported_not_processed(demo_copy, tmp_path):
    csv_path = demo_copy / "samm.csv"
    with open(csv_path, "ab") as fh:  # a row like 032_3_1 of the real file: apex before onset
        fh.write(b"006;006_9_9;1;4896;1930;4970;75;Micro - 1/2;4A;Anger;3;\r\n")
    report = export_flows(_dataset(demo_copy), tmp_path / "out")
    row = next(r for r in report.rows if r["clip"] == "006_9_9")
    assert row["status"] == "invalid_annotation"
    assert "apex frame 1930 is before onset frame 4896" in row["error"]
    assert report.ok == 4


def test_blank_apex_frame_uses_a_neighbour_or_fails_clearly(demo_copy, tmp_path):
    dataset = _dataset(demo_copy)
    clip, frames = dataset.ready()[0]
    cv2.imwrite(str(frames.frames[clip.apex]), np.full((1088, 2040), 90, np.uint8))
    found = normalize_clip(clip, frames, numbers=[clip.onset, clip.apex])
    assert found.alignment.box.frame != clip.apex
    assert any("no face on apex frame" in w for w in found.warnings)
    params = PipelineParams(detect=DetectParams(neighbours=0))
    report = export_flows(_dataset(demo_copy), tmp_path / "out", params=params)
    row = next(r for r in report.rows if r["clip"] == clip.clip)
    assert row["status"] == "failed" and "no face" in row["error"] and clip.clip in row["error"]


def test_output_inside_the_dataset_is_refused(demo_root):
    with pytest.raises(ValueError, match="inside the dataset"):
        export_flows(_dataset(demo_root), demo_root / "maps")


@pytest.mark.slow
def test_normalize_then_flows_equals_export(demo_root, tmp_path):
    dataset = _dataset(demo_root)
    normalized = normalize_dataset(dataset, tmp_path / "aligned")
    assert normalized.ok == 4
    for clip, frames in dataset.ready():
        folder = tmp_path / "aligned" / clip.subject / clip.clip
        crops = sorted(folder.glob("*.png"))
        assert [p.stem for p in crops] == [p.stem for _, p in sorted(frames.frames.items())]  # same names as the input
        assert cv2.imread(str(crops[0]), cv2.IMREAD_UNCHANGED).shape == (224, 224)
        alignment = _manifest(folder / "alignment.csv")
        assert [int(r["frame"]) for r in alignment] == frames.numbers
    aligned = load_dataset(tmp_path / "aligned", dataset.annotations)
    flows = flows_from_normalized(aligned, tmp_path / "maps")
    exported = export_flows(dataset, tmp_path / "direct")
    assert flows.ok == exported.ok == 4
    for path in sorted((tmp_path / "direct" / "flows").glob("*.png")):
        # PNG crops are lossless and onset/apex get the same offsets either way
        assert np.array_equal(cv2.imread(str(path)), cv2.imread(str(tmp_path / "maps" / "flows" / path.name)))


def test_crop_size_and_map_size_are_configurable(demo_root, tmp_path):
    dataset = _dataset(demo_root)
    params = PipelineParams(align=AlignParams(crop_size=128), encode=PipelineParams().encode.__class__(size=32))
    export_flows(dataset, tmp_path / "out", params=params)
    image = cv2.imread(str(next((tmp_path / "out" / "flows").glob("*.png"))))
    assert image.shape == (32, 32, 3)
    assert json.loads((tmp_path / "out" / "params.json").read_text())["params"]["align"]["crop_size"] == 128


def test_gifs_have_one_frame_per_selected_frame(demo_root, tmp_path):
    dataset = _dataset(demo_root)
    clip, frames = dataset.ready()[0]
    gif = GifParams(step=2, size=96)
    report = export_gifs(dataset, tmp_path / "gifs", clips=[clip.clip], gif=gif)
    assert report.ok == 1 and len(report.rows) == 1
    data = (tmp_path / "gifs" / f"sub{clip.subject}_{clip.clip}.gif").read_bytes()
    frames_read = iio.imread(data, index=None)
    expected = [n for n in range(clip.onset, clip.apex + 1, 2)] + ([clip.apex] if (clip.apex - clip.onset) % 2 else [])
    assert frames_read.shape[:3] == (len(expected), 96, 96)
    with pytest.raises(ValueError, match="unknown clip"):
        export_gifs(dataset, tmp_path / "gifs", clips=["999_9_9"])


@pytest.mark.slow
def test_worker_processes_give_identical_outputs(demo_root, tmp_path):
    dataset = _dataset(demo_root)
    one = normalize_dataset(dataset, tmp_path / "one", workers=1)
    two = normalize_dataset(dataset, tmp_path / "two", workers=2)
    assert [r["clip"] for r in one.rows] == [r["clip"] for r in two.rows]  # manifest keeps annotation order
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file() and p.name != "params.json")
    assert len(files) > 40
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def _break_apex(root: Path, clip_id: str, apex: str) -> None:
    """Write an impossible apex for ``clip_id`` into the dataset's samm.csv."""
    lines = (root / "samm.csv").read_text().splitlines()
    header = lines[0].split(";")
    column = header.index("Apex Frame")
    for i, line in enumerate(lines):
        cells = line.split(";")
        if len(cells) > column and cells[1] == clip_id:
            cells[column] = apex
            lines[i] = ";".join(cells)
    (root / "samm.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_apex_auto_spots_an_impossible_apex_and_resumes(demo_copy, demo_truth, tmp_path):
    target = demo_truth["clips"][0]
    _break_apex(demo_copy, target["clip"], str(target["offset"] + 7))  # after the offset
    dataset = _dataset(demo_copy)
    plain = export_flows(dataset, tmp_path / "plain")
    assert {r["clip"]: r["status"] for r in plain.rows}[target["clip"]] == "invalid_annotation"
    params = PipelineParams(annotations=AnnotationParams(apex="auto"))
    report = export_flows(dataset, tmp_path / "auto", params=params)
    rows = {r["clip"]: r for r in report.rows}
    assert report.ok == 4 and rows[target["clip"]]["apex_source"] == "spotted"
    assert abs(int(rows[target["clip"]]["apex"]) - target["apex"]) <= 2
    assert {r["apex_source"] for c, r in rows.items() if c != target["clip"]} == {"annotated"}
    written = {r["clip"]: r for r in _manifest(tmp_path / "auto" / "manifest.csv")}
    assert written[target["clip"]]["apex"] == str(rows[target["clip"]]["apex"])
    again = export_flows(dataset, tmp_path / "auto", params=params)
    assert again.resumed == 4  # the spotted clip too: its onset and offset are unchanged


@pytest.mark.slow
def test_normalize_with_spotted_apexes_then_flows_uses_them(demo_copy, demo_truth, tmp_path):
    target = demo_truth["clips"][1]
    _break_apex(demo_copy, target["clip"], "")  # no apex at all
    dataset = _dataset(demo_copy)
    params = PipelineParams(annotations=AnnotationParams(apex="auto"))
    normalized = normalize_dataset(dataset, tmp_path / "aligned", params=params)
    spotted = {r["clip"]: r for r in normalized.rows}[target["clip"]]
    assert spotted["status"] == "ok" and spotted["apex_source"] == "spotted"
    aligned = load_dataset(tmp_path / "aligned", dataset.annotations)
    flows = flows_from_normalized(aligned, tmp_path / "maps")
    row = {r["clip"]: r for r in flows.rows}[target["clip"]]
    assert row["status"] == "ok" and row["apex"] == spotted["apex"] and row["apex_source"] == "spotted"
    direct = export_flows(dataset, tmp_path / "direct", params=params)
    name = f"sub{target['subject']}_{target['clip']}.png"
    assert {r["clip"]: r for r in direct.rows}[target["clip"]]["apex"] == spotted["apex"]
    assert np.array_equal(cv2.imread(str(tmp_path / "direct" / "flows" / name)), cv2.imread(str(tmp_path / "maps" / "flows" / name)))
    assert json.loads((tmp_path / "maps" / "params.json").read_text())["params"]["annotations"]["apex"] == "auto"
