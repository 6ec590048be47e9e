"""The output folder a job owns (``sammflow.outfolder``): resumed re-runs, ``--force``,
parameters never mixed, foreign folders never touched, one writer at a time, and quality
thresholds and devices that change no output byte (issue 6, issue 9). Killed runs:
``test_cli_interrupt.py``; the resume plan as a pure function: ``test_manifest.py``.

The tests that re-run jobs over the demo dataset are marked ``slow``."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import BOOKKEEPING, dataset, manifest, mtimes, outputs, params_json, run_cli, snapshot
from sammflow.annotations import read_annotations
from sammflow.dataset import InputError, load_dataset
from sammflow.export import export_flows, export_gifs, flows_from_normalized, normalize_dataset
from sammflow.files import read_csv
from sammflow.outfolder import JobReport, check_output_dir, clip_files, existing_output, outputs_present
from sammflow.params import AlignParams, GifParams, PipelineParams


@pytest.fixture(scope="module")
def clean(demo_root, tmp_path_factory) -> Path:
    """A clean, uninterrupted export of the demo dataset."""
    out = tmp_path_factory.mktemp("clean") / "out"
    assert export_flows(dataset(demo_root), out).ok == 4
    return out


# ---------------------------------------------------------------- resume, --force, refusals


@pytest.mark.slow
def test_rerun_keeps_everything_and_changes_nothing(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    before, times = snapshot(out), mtimes(out)
    report = export_flows(dataset(demo_root), out)
    assert report.resumed == 4 and report.ok == 4 and "(4 already done by an earlier run, kept)" in report.summary()
    assert outputs(out) == {k: v for k, v in before.items() if k not in BOOKKEEPING}
    maps = [r["output"] for r in manifest(out)]
    assert [mtimes(out)[m] for m in maps] == [times[m] for m in maps]  # not even rewritten
    assert params_json(out) == params_json(clean)
    assert json.loads((out / "params.json").read_text())["created"] == json.loads((clean / "params.json").read_text())["created"]


@pytest.mark.slow
def test_rerun_redoes_only_what_is_missing_or_re_annotated(demo_copy, clean, tmp_path):
    out = tmp_path / "out"
    export_flows(dataset(demo_copy), out)
    rows = manifest(out)
    (out / rows[0]["output"]).unlink()  # an output deleted by hand
    lines = (demo_copy / "samm.csv").read_bytes().split(b"\r\n")  # an apex corrected by hand (and an emotion relabelled)
    lines[2] = lines[2].replace(f";{rows[1]['apex']};".encode(), f";{int(rows[1]['apex']) - 1};".encode())
    lines[3] = lines[3].replace(rows[2]["emotion"].encode(), b"Disgust")
    (demo_copy / "samm.csv").write_bytes(b"\r\n".join(lines))
    times = mtimes(out)
    report = export_flows(dataset(demo_copy), out)
    assert report.resumed == 2 and report.ok == 4
    again = manifest(out)
    assert again[1]["apex"] == str(int(rows[1]["apex"]) - 1) and again[2]["emotion"] == "Disgust"
    assert mtimes(out)[rows[2]["output"]] == times[rows[2]["output"]]  # relabelled only: not recomputed
    assert mtimes(out)[rows[1]["output"]] != times[rows[1]["output"]]
    assert (out / rows[0]["output"]).read_bytes() == (clean / rows[0]["output"]).read_bytes()


@pytest.mark.slow
def test_failed_clip_is_retried_after_the_fix(demo_copy, tmp_path):
    rows = list(csv.reader(open(demo_copy / "samm.csv", newline=""), delimiter=";"))[1:]
    subject, clip, _, onset = rows[0][:4]
    frame = next(p for p in (demo_copy / subject / clip).iterdir() if int(p.stem.split("_")[-1]) == int(onset))
    moved = frame.rename(tmp_path / frame.name)
    assert export_flows(dataset(demo_copy), tmp_path / "out").ok == 3
    moved.rename(frame)
    report = export_flows(dataset(demo_copy), tmp_path / "out")
    assert report.resumed == 3 and report.ok == 4 and [r["status"] for r in manifest(tmp_path / "out")] == ["ok"] * 4


@pytest.mark.slow
def test_force_recomputes_every_clip_to_the_same_bytes(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    times = mtimes(out)
    report = export_flows(dataset(demo_root), out, force=True)
    assert report.resumed == 0 and report.ok == 4
    assert all(mtimes(out)[r["output"]] != times[r["output"]] for r in manifest(out))
    assert outputs(out) == outputs(clean)


@pytest.mark.slow
def test_other_parameters_are_refused_and_the_folder_left_alone(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    before, times = snapshot(out), mtimes(out)
    with pytest.raises(InputError, match=r"made with other parameters \(align.margin 40 → 30\); use a new output folder, or --force"):
        export_flows(dataset(demo_root), out, params=PipelineParams(align=AlignParams(margin=30)))
    assert snapshot(out) == before and mtimes(out) == times
    code, _, err = run_cli("export", demo_root, out, "-q", "--margin", "30", "--crop-size", "200")
    assert code == 2 and err.strip() == (f"error: {out}: made with other parameters (align.crop_size 224 → 200, align.margin 40 → 30); "
                                         "use a new output folder, or --force to replace its outputs")
    assert snapshot(out) == before


@pytest.mark.slow
def test_force_with_other_parameters_replaces_every_old_output(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    other = PipelineParams(align=AlignParams(crop_size=160))
    fresh = export_flows(dataset(demo_root), tmp_path / "fresh", params=other)
    report = export_flows(dataset(demo_root), out, params=other, force=True)
    assert report.replaced == 4 and "(replaced 4 files made with other parameters)" in report.summary()
    assert outputs(out) == outputs(tmp_path / "fresh") and fresh.ok == 4
    assert params_json(out)["params_hash"] == other.hash
    log = (out / "sammflow.log").read_text()
    assert "replacing (--force): made with other parameters (align.crop_size 224 → 160); removed 4 output file(s)" in log


@pytest.mark.slow
def test_normalize_resumes_and_redoes_a_clip_with_a_crop_missing(demo_root, tmp_path):
    out = tmp_path / "aligned"
    assert normalize_dataset(dataset(demo_root), out).ok == 4
    before = outputs(out)
    victim = sorted((out / manifest(out)[1]["output"]).glob("*.png"))[3]
    victim.unlink()
    report = normalize_dataset(dataset(demo_root), out)
    assert report.resumed == 3 and outputs(out) == before


@pytest.mark.slow
def test_a_run_that_finished_nothing_does_not_block_other_parameters(demo_root, tmp_path, monkeypatch):
    import sammflow.export

    monkeypatch.setattr(sammflow.export, "find_apex_faces", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        export_flows(dataset(demo_root), tmp_path / "out", params=PipelineParams(align=AlignParams(margin=10)))
    monkeypatch.undo()
    assert [r["status"] for r in manifest(tmp_path / "out")] == ["pending"] * 4
    assert export_flows(dataset(demo_root), tmp_path / "out").ok == 4


@pytest.mark.slow
def test_another_input_folder_is_refused(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    moved = Path(shutil.copytree(demo_root, tmp_path / "elsewhere"))
    with pytest.raises(InputError, match=f"made from {demo_root}, not {moved}"):
        export_flows(dataset(moved), out)


@pytest.mark.slow
def test_another_kind_of_output_is_refused_even_with_force(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    for force in (False, True):
        with pytest.raises(InputError, match="holds a 'flows' output; this job writes 'normalized'"):
            normalize_dataset(dataset(demo_root), out, force=force)
    assert outputs(out) == outputs(clean)


@pytest.mark.slow
def test_folder_with_outputs_but_no_params_json_needs_force(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    (out / "params.json").unlink()
    with pytest.raises(InputError, match="has outputs but no params.json"):
        export_flows(dataset(demo_root), out)
    assert export_flows(dataset(demo_root), out, force=True).ok == 4


@pytest.mark.slow
def test_hand_edited_manifest_cannot_lead_outside_the_folder(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    bait = tmp_path / "bait.png"
    bait.write_bytes(b"keep me")
    text = (out / "manifest.csv").read_text()
    first = manifest(out)[0]
    (out / "manifest.csv").write_text(text.replace(first["output"], "../bait.png", 1).replace(first["clip"], "../..", 1))
    report = export_flows(dataset(demo_root), out, params=PipelineParams(align=AlignParams(margin=30)), force=True)
    assert report.ok == 4 and bait.read_bytes() == b"keep me"


@pytest.mark.slow
def test_one_run_at_a_time_per_folder(demo_root, tmp_path):
    import fcntl

    (tmp_path / "out").mkdir()
    fd = os.open(tmp_path / "out", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="another sammflow run is writing to this folder"):
            export_flows(dataset(demo_root), tmp_path / "out")
    finally:
        os.close(fd)
    assert export_flows(dataset(demo_root), tmp_path / "out").ok == 4


@pytest.mark.slow
def test_stale_temporary_files_are_removed_and_others_kept(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    stale = [out / "flows" / ".sammflow-sub006_006_1_1.png.k3j_x9a2.tmp", out / ".sammflow-manifest.csv.abcdefgh.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    mine = [out / ".my-notes.tmp", out / ".x.png.abcd1234.tmp", out / "flows" / ".sub006_006_1_1.png.k3j_x9a2.tmp"]  # no sammflow marker
    for path in mine:
        path.write_text("not sammflow's")
    export_flows(dataset(demo_root), out)
    assert not any(p.exists() for p in stale) and all(p.read_text() == "not sammflow's" for p in mine)


def test_temporary_looking_files_are_never_removed_from_a_folder_sammflow_did_not_make(demo_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lookalike = out / ".sammflow-notes.txt.abcd1234.tmp"  # even with the marker: the folder is not ours
    lookalike.write_text("mine")
    (out / "draft.txt").write_text("mine too")
    with pytest.raises(InputError, match=r"folder is not empty \(draft.txt\) and was not made by sammflow"):
        export_flows(dataset(demo_root), out)
    assert lookalike.read_text() == "mine" and sorted(p.name for p in out.iterdir()) == [lookalike.name, "draft.txt"]


def test_a_folder_holding_only_hidden_user_files_is_not_empty(demo_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".notes").write_text("my notes")
    (out / ".x.png.abcd1234.tmp").write_text("looks like an old temporary file, is mine")
    with pytest.raises(InputError, match=r"out: folder is not empty \(.notes, .x.png.abcd1234.tmp\) and was not made by sammflow"):
        export_flows(dataset(demo_root), out)
    assert sorted(p.name for p in out.iterdir()) == [".notes", ".x.png.abcd1234.tmp"]
    assert (out / ".x.png.abcd1234.tmp").read_text() == "looks like an old temporary file, is mine"


def test_a_first_run_killed_before_its_manifest_leaves_a_folder_that_is_resumed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    temp = out / ".sammflow-manifest.csv.abcd1234.tmp"  # all a SIGKILLed first run may leave
    temp.write_text("half")
    assert existing_output(out, "flows") is None  # nothing there but our own temporary file: empty


def test_an_output_folder_name_too_long_is_an_input_error(demo_root, tmp_path):
    with pytest.raises(InputError, match=r"x{300}: file name too long"):
        check_output_dir(tmp_path / ("x" * 300), demo_root)
    with pytest.raises(InputError, match=r"x{300}/out: file name too long"):
        export_flows(dataset(demo_root), tmp_path / ("x" * 300) / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_gif_subsets_add_up_in_one_folder(demo_root, tmp_path):
    clips = [c.clip for c in dataset(demo_root).annotations.clips]
    gif = GifParams(step=3, size=64)
    export_gifs(dataset(demo_root), tmp_path / "gifs", clips=clips[:1], gif=gif)
    report = export_gifs(dataset(demo_root), tmp_path / "gifs", clips=clips[1:3], gif=gif)
    assert [r["clip"] for r in report.rows] == clips[:3] and report.ok == 3
    assert len(list((tmp_path / "gifs").glob("*.gif"))) == 3
    with pytest.raises(InputError, match=r"other parameters \(gif.fps 10.0 → 5\)"):
        export_gifs(dataset(demo_root), tmp_path / "gifs", clips=clips[:1], gif=GifParams(step=3, size=64, fps=5))


@pytest.mark.slow
def test_flows_never_use_the_crops_of_an_unfinished_normalize(demo_root, tmp_path):
    aligned = tmp_path / "aligned"
    assert normalize_dataset(dataset(demo_root), aligned).ok == 4
    rows = (aligned / "manifest.csv").read_text().splitlines()
    rows[2] = rows[2].replace(",ok,", ",pending,")  # as a killed normalize leaves it: crops there, not finished
    (aligned / "manifest.csv").write_text("\n".join(rows) + "\n")
    report = flows_from_normalized(load_dataset(aligned, read_annotations(demo_root / "samm.csv")), tmp_path / "maps")
    failed = report.failed
    assert len(failed) == 1 and "not normalized in" in failed[0]["error"] and "interrupted" in failed[0]["error"]


# ---------------------------------------------------------------- what does not change outputs (issue 9)


def _records_by_clip(path: Path) -> dict[str, list[dict[str, str]]]:
    by_clip: dict[str, list[dict[str, str]]] = {}
    for record in read_csv(path):
        by_clip.setdefault(record.pop("clip", ""), []).append(record)
    return by_clip


def _flagged(records, min_score, max_residual) -> str:
    return " ".join(r["frame"] for r in records if float(r["score"]) < min_score or float(r["residual"]) > max_residual)


@pytest.mark.slow
def test_other_thresholds_resume_and_rejudge_the_kept_clips(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    before, times = outputs(out), mtimes(out)
    code, stdout, err = run_cli("export", demo_root, out, "-q", "-j", "1", "--min-score", "0.9999", "--max-residual", "0.01")
    assert (code, err) == (0, ""), err
    assert stdout.strip() == f"4 of 4 clips ok, 0 failed → {out} (4 already done by an earlier run, kept)"
    rows = manifest(out)
    maps = [r["output"] for r in rows]
    assert all(outputs(out)[m] == before[m] for m in maps) and [mtimes(out)[m] for m in maps] == [times[m] for m in maps]
    assert outputs(out)["alignment.csv"] == before["alignment.csv"]  # the per-frame records are what they were...
    records = _records_by_clip(out / "alignment.csv")
    for row in rows:  # ...and the verdicts follow from them with the new thresholds
        flagged = _flagged(records[row["clip"]], 0.9999, 0.01)
        assert flagged and row["align_trusted"] == "no" and row["flagged_frames"] == flagged, (row["clip"], flagged)
    old_rows = {r["clip"]: r for r in manifest(clean)}
    assert [{k: v for k, v in r.items() if k not in ("align_trusted", "flagged_frames")} for r in rows] == [
        {k: v for k, v in old_rows[r["clip"]].items() if k not in ("align_trusted", "flagged_frames")} for r in rows]
    assert all(r["align_trusted"] == "yes" for r in old_rows.values())  # the defaults trusted them all
    content, first = params_json(out), params_json(clean)
    assert content["params"] == first["params"] and content["params_hash"] == first["params_hash"]
    assert content["settings"] == {"detect": {"device": "cpu"}, "align": {"min_score": 0.9999, "max_residual": 0.01}}
    assert "quality thresholds changed" in (out / "sammflow.log").read_text()
    # back to the default thresholds: the first run's manifest again, byte for byte
    code, stdout, _ = run_cli("export", demo_root, out, "-q", "-j", "1")
    assert code == 0 and "(4 already done by an earlier run, kept)" in stdout
    assert outputs(out) == outputs(clean) and params_json(out) == params_json(clean)


@pytest.mark.slow
def test_normalize_rejudges_kept_clips_from_their_alignment_csv(demo_root, tmp_path):
    out = tmp_path / "aligned"
    assert normalize_dataset(dataset(demo_root), out).ok == 4
    before, times = outputs(out), mtimes(out)
    strict = PipelineParams(align=AlignParams(min_score=0.9999, max_residual=0.01))
    report = normalize_dataset(dataset(demo_root), out, params=strict)
    assert report.resumed == 4 and report.ok == 4
    assert {k: v for k, v in outputs(out).items() if k != "manifest.csv"} == {k: v for k, v in before.items() if k != "manifest.csv"}
    assert {k: v for k, v in mtimes(out).items() if k.endswith(".png")} == {k: v for k, v in times.items() if k.endswith(".png")}
    for row in manifest(out):
        records = read_csv(out / row["output"] / "alignment.csv")
        assert len(records) == int(row["frames"]) > 2
        flagged = _flagged(records, 0.9999, 0.01)
        assert flagged and row["align_trusted"] == "no" and row["flagged_frames"] == flagged
    assert normalize_dataset(dataset(demo_root), out).resumed == 4 and outputs(out) == before


@pytest.mark.slow
def test_another_device_resumes(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    content = json.loads((out / "params.json").read_text())
    content["settings"]["detect"]["device"] = "cuda:0"  # made on a GPU machine
    (out / "params.json").write_text(json.dumps(content, indent=2) + "\n")
    times = mtimes(out)
    code, stdout, err = run_cli("export", demo_root, out, "-q", "-j", "1", "--device", "cpu")
    assert (code, err) == (0, "") and "(4 already done by an earlier run, kept)" in stdout
    assert outputs(out) == outputs(clean) and all(mtimes(out)[r["output"]] == times[r["output"]] for r in manifest(out))
    assert params_json(out) == params_json(clean)
    # and the other way round: with every clip done, nothing is detected, so not even CUDA is needed
    code, stdout, err = run_cli("export", demo_root, out, "-q", "-j", "1", "--device", "cuda:0")
    assert (code, err) == (0, "") and "(4 already done by an earlier run, kept)" in stdout
    assert outputs(out) == outputs(clean) and params_json(out)["settings"]["detect"] == {"device": "cuda:0"}


@pytest.mark.slow
def test_a_params_json_of_an_earlier_version_resumes(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    content = json.loads((out / "params.json").read_text())
    # earlier versions hashed the device and the thresholds: listed among "params", no "settings"
    content["params"] = PipelineParams(align=AlignParams(min_score=0.7)).to_dict()
    content["params_hash"] = "4fca4ec27e14"
    del content["settings"]
    (out / "params.json").write_text(json.dumps(content, indent=2) + "\n")
    report = export_flows(dataset(demo_root), out)
    assert report.resumed == 4 and outputs(out) == outputs(clean)
    assert params_json(out) == params_json(clean)  # rewritten in today's form


# ---------------------------------------------------------------- recognising a folder


def test_existing_output_recognises_our_folders_only(demo_root, clean, tmp_path):
    assert existing_output(tmp_path / "missing", "flows") is None
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"")  # made by the system, not the user
    (tmp_path / "empty" / "sammflow.log").write_text("a log only")
    assert existing_output(tmp_path / "empty", "flows") is None
    (tmp_path / "empty" / ".notes").write_text("a user's hidden file")
    with pytest.raises(InputError, match=r"folder is not empty \(.notes\) and was not made by sammflow"):
        existing_output(tmp_path / "empty", "flows")
    assert existing_output(clean, "flows") == json.loads((clean / "params.json").read_text())
    only_manifest = tmp_path / "only_manifest"
    only_manifest.mkdir()
    shutil.copy(clean / "manifest.csv", only_manifest)
    assert existing_output(only_manifest, "flows") == {}
    with pytest.raises(InputError, match="^the output: holds a 'flows' output; this job writes 'gifs'"):
        existing_output(clean, "gifs", label="the output")
    (tmp_path / "thesis").mkdir()
    for name in ("a.tex", "b.tex", "c.tex", "d.tex"):
        (tmp_path / "thesis" / name).write_text("mine")
    with pytest.raises(InputError, match=r"thesis: folder is not empty \(a.tex, b.tex, c.tex, ...\) and was not made by sammflow"):
        existing_output(tmp_path / "thesis", "flows")
    with pytest.raises(InputError, match="inside the dataset"):
        check_output_dir(demo_root / "006", demo_root)
    with pytest.raises(InputError, match="contains the dataset"):
        check_output_dir(demo_root.parent, demo_root)
    check_output_dir(tmp_path / "new", demo_root)


def test_outputs_of_a_row_must_be_inside_the_folder_and_complete(clean, tmp_path):
    row = manifest(clean)[0]
    assert outputs_present("flows", clean, row)
    assert clip_files("flows", clean, row["subject"], row["clip"]) == [clean / row["output"]]
    for output in ("", ".", "../clean/" + row["output"], "/etc/passwd", "flows/missing.png"):
        assert not outputs_present("flows", clean, {**row, "output": output}), output
    for subject, clip in ((".." , row["clip"]), (row["subject"], "../x"), ("", row["clip"])):
        assert clip_files("flows", clean, subject, clip) == []
    aligned = tmp_path / "aligned" / "006" / "006_1_1"
    aligned.mkdir(parents=True)
    for name in ("006_01.png", "006_02.png", "alignment.csv", "notes.txt"):
        (aligned / name).write_bytes(b"x")
    row = {"output": "006/006_1_1", "frames": "2"}
    assert outputs_present("normalized", tmp_path / "aligned", row)
    assert not outputs_present("normalized", tmp_path / "aligned", {**row, "frames": "3"})  # a crop missing
    assert not outputs_present("normalized", tmp_path / "aligned", {**row, "frames": "two"})
    assert [p.name for p in clip_files("normalized", tmp_path / "aligned", "006", "006_1_1")] == ["006_01.png", "006_02.png", "alignment.csv"]
    (aligned / "alignment.csv").unlink()
    assert not outputs_present("normalized", tmp_path / "aligned", row)


def test_job_report_summary(tmp_path):
    rows = [{"status": "ok"}, {"status": "ok"}, {"status": "failed"}, {"status": "invalid_annotation"}]
    report = JobReport(tmp_path, rows, resumed=1, replaced=3)
    assert report.ok == 2 and report.failed == rows[2:]
    assert report.summary() == (f"2 of 4 clips ok, 2 failed → {tmp_path} (1 already done by an earlier run, kept)"
                                " (replaced 3 files made with other parameters)")
    assert JobReport(tmp_path, rows[:1]).summary() == f"1 of 1 clips ok, 0 failed → {tmp_path}"
