"""Issue 6, nothing lost: atomic outputs, resumed re-runs, ``--force``, parameters never mixed,
the dataset and foreign folders never touched, and a killed export (SIGKILL, SIGTERM, Ctrl-C)
that, re-run, gives exactly the files of a clean run."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sammflow.annotations import read_annotations
from sammflow.cli import main
from sammflow.dataset import InputError, load_dataset
from sammflow.export import export_flows, export_gifs, flows_from_normalized, normalize_dataset
from sammflow.params import AlignParams, GifParams, PipelineParams

REPO = Path(__file__).parents[1]
#: Written with every output but not part of it: compared separately.
BOOKKEEPING = {"params.json", "sammflow.log"}


def dataset(root: Path):
    return load_dataset(root, read_annotations(root / "samm.csv"))


def manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def outputs(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(folder).items() if k not in BOOKKEEPING}


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def params_json(out: Path) -> dict:
    content = json.loads((out / "params.json").read_text())
    return {k: v for k, v in content.items() if k not in ("created", "finished")}


def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def clean(demo_root, tmp_path_factory) -> Path:
    """A clean, uninterrupted export of the demo dataset."""
    out = tmp_path_factory.mktemp("clean") / "out"
    assert export_flows(dataset(demo_root), out).ok == 4
    return out


# ---------------------------------------------------------------- resume, --force, refusals


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


def test_failed_clip_is_retried_after_the_fix(demo_copy, tmp_path):
    rows = list(csv.reader(open(demo_copy / "samm.csv", newline=""), delimiter=";"))[1:]
    subject, clip, _, onset = rows[0][:4]
    frame = next(p for p in (demo_copy / subject / clip).iterdir() if int(p.stem.split("_")[-1]) == int(onset))
    moved = frame.rename(tmp_path / frame.name)
    assert export_flows(dataset(demo_copy), tmp_path / "out").ok == 3
    moved.rename(frame)
    report = export_flows(dataset(demo_copy), tmp_path / "out")
    assert report.resumed == 3 and report.ok == 4 and [r["status"] for r in manifest(tmp_path / "out")] == ["ok"] * 4


def test_force_recomputes_every_clip_to_the_same_bytes(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    times = mtimes(out)
    report = export_flows(dataset(demo_root), out, force=True)
    assert report.resumed == 0 and report.ok == 4
    assert all(mtimes(out)[r["output"]] != times[r["output"]] for r in manifest(out))
    assert outputs(out) == outputs(clean)


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


def test_normalize_resumes_and_redoes_a_clip_with_a_crop_missing(demo_root, tmp_path):
    out = tmp_path / "aligned"
    assert normalize_dataset(dataset(demo_root), out).ok == 4
    before = outputs(out)
    victim = sorted((out / manifest(out)[1]["output"]).glob("*.png"))[3]
    victim.unlink()
    report = normalize_dataset(dataset(demo_root), out)
    assert report.resumed == 3 and outputs(out) == before


def test_a_run_that_finished_nothing_does_not_block_other_parameters(demo_root, tmp_path, monkeypatch):
    import sammflow.export

    monkeypatch.setattr(sammflow.export, "find_apex_face", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        export_flows(dataset(demo_root), tmp_path / "out", params=PipelineParams(align=AlignParams(margin=10)))
    monkeypatch.undo()
    assert [r["status"] for r in manifest(tmp_path / "out")] == ["pending"] * 4
    assert export_flows(dataset(demo_root), tmp_path / "out").ok == 4


def test_another_input_folder_is_refused(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    moved = Path(shutil.copytree(demo_root, tmp_path / "elsewhere"))
    with pytest.raises(InputError, match=f"made from {demo_root}, not {moved}"):
        export_flows(dataset(moved), out)


def test_another_kind_of_output_is_refused_even_with_force(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    for force in (False, True):
        with pytest.raises(InputError, match="holds a 'flows' output; this job writes 'normalized'"):
            normalize_dataset(dataset(demo_root), out, force=force)
    assert outputs(out) == outputs(clean)


def test_folder_with_outputs_but_no_params_json_needs_force(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    (out / "params.json").unlink()
    with pytest.raises(InputError, match="has outputs but no params.json"):
        export_flows(dataset(demo_root), out)
    assert export_flows(dataset(demo_root), out, force=True).ok == 4


def test_hand_edited_manifest_cannot_lead_outside_the_folder(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    bait = tmp_path / "bait.png"
    bait.write_bytes(b"keep me")
    text = (out / "manifest.csv").read_text()
    first = manifest(out)[0]
    (out / "manifest.csv").write_text(text.replace(first["output"], "../bait.png", 1).replace(first["clip"], "../..", 1))
    report = export_flows(dataset(demo_root), out, params=PipelineParams(align=AlignParams(margin=30)), force=True)
    assert report.ok == 4 and bait.read_bytes() == b"keep me"


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


def test_stale_temporary_files_are_removed_and_others_kept(demo_root, clean, tmp_path):
    out = Path(shutil.copytree(clean, tmp_path / "out"))
    stale = [out / "flows" / ".sub006_006_1_1.png.k3j_x9a2.tmp", out / ".manifest.csv.abcdefgh.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    mine = out / ".my-notes.tmp"
    mine.write_text("not sammflow's")
    export_flows(dataset(demo_root), out)
    assert not any(p.exists() for p in stale) and mine.exists()


def test_gif_subsets_add_up_in_one_folder(demo_root, tmp_path):
    clips = [c.clip for c in dataset(demo_root).annotations.clips]
    gif = GifParams(step=3, size=64)
    export_gifs(dataset(demo_root), tmp_path / "gifs", clips=clips[:1], gif=gif)
    report = export_gifs(dataset(demo_root), tmp_path / "gifs", clips=clips[1:3], gif=gif)
    assert [r["clip"] for r in report.rows] == clips[:3] and report.ok == 3
    assert len(list((tmp_path / "gifs").glob("*.gif"))) == 3
    with pytest.raises(InputError, match=r"other parameters \(gif.fps 10.0 → 5\)"):
        export_gifs(dataset(demo_root), tmp_path / "gifs", clips=clips[:1], gif=GifParams(step=3, size=64, fps=5))


def test_flows_never_use_the_crops_of_an_unfinished_normalize(demo_root, tmp_path):
    aligned = tmp_path / "aligned"
    assert normalize_dataset(dataset(demo_root), aligned).ok == 4
    rows = (aligned / "manifest.csv").read_text().splitlines()
    rows[2] = rows[2].replace(",ok,", ",pending,")  # as a killed normalize leaves it: crops there, not finished
    (aligned / "manifest.csv").write_text("\n".join(rows) + "\n")
    report = flows_from_normalized(load_dataset(aligned, read_annotations(demo_root / "samm.csv")), tmp_path / "maps")
    failed = report.failed
    assert len(failed) == 1 and "not normalized in" in failed[0]["error"] and "interrupted" in failed[0]["error"]


# ---------------------------------------------------------------- killed runs


@pytest.fixture(scope="module")
def twelve(demo_root, tmp_path_factory):
    """The demo's 4 clips three times over (hard links: never written), and its clean export."""
    root = tmp_path_factory.mktemp("twelve") / "DATA"
    root.mkdir()
    lines = (demo_root / "samm.csv").read_text().splitlines()
    out_lines = [lines[0]]
    for suffix in ("", "x", "y"):
        for line in lines[1:]:
            cells = line.split(";")
            shutil.copytree(demo_root / cells[0] / cells[1], root / cells[0] / (cells[1] + suffix), copy_function=os.link)
            out_lines.append(";".join([cells[0], cells[1] + suffix, *cells[2:]]))
    (root / "samm.csv").write_text("\r\n".join(out_lines) + "\r\n")
    out = root.parent / "clean"
    assert run_cli("export", root, out, "-q", "-j", "1")[0] == 0
    return root, out


def _start_and_stop(data: Path, out: Path, sig: int, *, group: bool, workers: int) -> subprocess.CompletedProcess:
    """``python -m sammflow export`` in a new session, sent ``sig`` once its manifest holds a finished clip."""
    process = subprocess.Popen([sys.executable, "-m", "sammflow", "export", str(data), str(out), "-q", "-j", str(workers)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "manifest.csv").is_file() and ",ok," in (out / "manifest.csv").read_text():
            break
        time.sleep(0.005)
    (os.killpg if group else os.kill)(process.pid, sig)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _assert_resumes_to_the_clean_run(data: Path, out: Path, clean: Path) -> None:
    statuses = [r["status"] for r in manifest(out)]
    assert "ok" in statuses and "pending" in statuses, statuses  # really stopped mid-run
    assert set(statuses) <= {"ok", "pending"}
    code, stdout, _ = run_cli("export", data, out, "-q", "-j", "1")
    assert code == 0 and f"({statuses.count('ok')} already done by an earlier run, kept)" in stdout
    assert outputs(out) == outputs(clean)  # the same files, byte for byte, the manifest included; no temporary file left
    assert params_json(out) == params_json(clean)


def test_sigkill_mid_export_then_rerun_equals_a_clean_run(twelve, tmp_path):
    data, clean = twelve
    out = tmp_path / "out"
    killed = _start_and_stop(data, out, signal.SIGKILL, group=True, workers=1)
    assert killed.returncode == -signal.SIGKILL
    (out / "flows" / ".sub006_006_1_1x.png.a1b2c3d4.tmp").write_bytes(b"\x89PNG half")  # what a kill mid-write leaves
    assert json.loads((out / "params.json").read_text())["finished"] is None  # written at the start
    _assert_resumes_to_the_clean_run(data, out, clean)


@pytest.mark.parametrize("sig, group, code", [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)], ids=["sigterm", "ctrl_c"])
def test_stopped_export_says_so_in_one_line_then_resumes(twelve, tmp_path, sig, group, code):
    """SIGTERM to the main process, or Ctrl-C to the whole process group (workers included)."""
    data, clean = twelve
    out = tmp_path / "out"
    stopped = _start_and_stop(data, out, sig, group=group, workers=2)
    assert stopped.returncode == code, stopped.stderr
    assert stopped.stderr.strip() == (f"interrupted ({signal.Signals(sig).name}); finished clips are kept in {out} "
                                      f"(the rest are 'pending' in its manifest.csv): re-run the same command to resume")
    assert "stopped by" in (out / "sammflow.log").read_text()
    assert not list(out.rglob("*.tmp"))  # a graceful stop leaves no temporary file at all
    _assert_resumes_to_the_clean_run(data, out, clean)
