"""``run_clips``: every clip of an output folder through a work function, here or in worker
processes; one clip's failure is its row, a full disk stops the batch. Tested with a stand-in
work function on a tiny dataset of blank frames (no detection, no alignment)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from sammflow.annotations import read_annotations
from sammflow.dataset import InputError, load_dataset
from sammflow.detect import FaceBox
from sammflow.files import read_csv
from sammflow.manifest import annotated_in_order
from sammflow.outfolder import OutputFolder
from sammflow.params import PipelineParams
from sammflow.pipeline import ClipError
import sammflow.workers
from sammflow.workers import available_cores, default_workers, preflight, run_clips

HEADER = "Subject;Filename;Inducement Code;Onset Frame;Apex Frame;Offset Frame;Duration;Micro;Action Units;Estimated Emotion;Objective Classes;Notes"
#: clip → (onset, apex, offset); frames 10–20 of each are on disk
CLIPS = {"006_1_1": (10, 12, 14), "006_1_2": (11, 15, 19), "006_1_3": (10, 11, 20), "006_1_4": (12, 13, 14)}
BOX = FaceBox(1, 1, 7, 7, prob=0.99, frame=12)


def work(clip, frames, box, warnings, tag):
    """The stand-in per-clip work: module level, so worker processes can run it."""
    if clip.clip == "006_1_3":
        raise ClipError(f"{clip.clip}: no face found on apex frame {clip.apex}")
    if clip.clip == "006_1_4" and tag == "buggy":
        return {}["a bug"]
    return {"output": f"{tag}/{clip.clip}/{os.getpid()}", "frames": len(frames.frames), "x1": box.x1, "warnings": " | ".join(warnings)}


@pytest.fixture()
def tiny(tmp_path) -> Path:
    """4 clips of 11 blank 8×8 frames (made per test: a test may damage it)."""
    root = tmp_path / "DATA"
    lines = [HEADER]
    for clip, (onset, apex, offset) in CLIPS.items():
        folder = root / "006" / clip
        folder.mkdir(parents=True)
        for n in range(10, 21):
            cv2.imwrite(str(folder / f"006_{n:05d}.png"), np.full((8, 8), n, np.uint8))
        lines.append(f"006;{clip};1;{onset};{apex};{offset};5;Micro - 1/2;4;Anger;3;")
    (root / "samm.csv").write_text("\r\n".join(lines) + "\r\n")
    return root


def _dataset(root):
    return load_dataset(root, read_annotations(root / "samm.csv"))


def _folder(dataset, out):
    return OutputFolder(out, dataset, kind="flows", params=PipelineParams(), items=annotated_in_order(dataset.annotations),
                        sources={"dataset": str(dataset.root), "annotations": dataset.annotations.source})


def _prepare(items):
    return [(BOX, [f"prepared {clip.clip} here, pid {os.getpid()}"]) for clip, _ in items]


def test_every_clip_is_recorded_in_order_with_progress(tiny, tmp_path):
    dataset = _dataset(tiny)
    progress, rows = [], []
    with _folder(dataset, tmp_path / "out") as folder:
        run_clips(folder, work, ("here",), prepare=_prepare, progress=lambda *a: progress.append(a), on_row=lambda *a: rows.append(a))
    assert progress == [(0, 4, ""), (1, 4, "006_1_1"), (2, 4, "006_1_2"), (3, 4, "006_1_3"), (4, 4, "006_1_4")]
    assert [(done, total, row["clip"], row["status"]) for done, total, row in rows] == [
        (1, 4, "006_1_1", "ok"), (2, 4, "006_1_2", "ok"), (3, 4, "006_1_3", "failed"), (4, 4, "006_1_4", "ok")]
    manifest = read_csv(tmp_path / "out" / "manifest.csv")
    assert [(r["clip"], r["status"]) for r in manifest] == [(c, "failed" if c == "006_1_3" else "ok") for c in CLIPS]
    first = manifest[0]
    assert first["output"] == f"here/006_1_1/{os.getpid()}" and first["frames"] == "11" and first["x1"] == "1"
    assert first["warnings"] == f"prepared 006_1_1 here, pid {os.getpid()}" and first["emotion"] == "Anger"
    assert manifest[2]["error"] == "006_1_3: no face found on apex frame 11" and manifest[2]["output"] == ""
    assert folder.report.ok == 3 and folder.report.unexpected == 0


def test_blocked_missing_and_buggy_clips_fail_alone(tiny, tmp_path):
    (tiny / "006" / "006_1_2" / "006_00015.png").unlink()  # 006_1_2 loses its apex
    with _folder(_dataset(tiny), tmp_path / "out") as folder:
        run_clips(folder, work, ("buggy",), prepare=_prepare, blocked={"006_1_1": "not normalized in X (pending)"})
    errors = {r["clip"]: (r["status"], r["error"]) for r in read_csv(tmp_path / "out" / "manifest.csv")}
    log = tmp_path / "out" / "sammflow.log"
    assert errors == {
        "006_1_1": ("failed", "006_1_1: not normalized in X (pending)"),
        "006_1_2": ("failed", f"006_1_2: apex frame 15 not on disk in {tiny / '006' / '006_1_2'}"),
        "006_1_3": ("failed", "006_1_3: no face found on apex frame 11"),
        "006_1_4": ("failed", f"006_1_4: unexpected KeyError: 'a bug' (traceback in {log})"),
    }
    assert folder.report.unexpected == 1 and 'return {}["a bug"]' in log.read_text()


def test_a_full_disk_stops_the_batch(tiny, tmp_path):
    calls = []

    def prepare(items):
        calls.extend(clip.clip for clip, _ in items)
        return [OSError(errno.ENOSPC, "No space left on device") if clip.clip == "006_1_2" else result
                for (clip, _), result in zip(items, _prepare(items))]

    with pytest.raises(InputError, match=r"cannot write outputs \(No space left on device\); finished clips are kept, re-run to resume"):
        with _folder(_dataset(tiny), tmp_path / "out") as folder:
            run_clips(folder, work, ("here",), prepare=prepare)
    assert calls == ["006_1_1", "006_1_2", "006_1_3"]  # prepared in batches of 1, 2, ...: nothing worked on after it
    assert [r["status"] for r in read_csv(tmp_path / "out" / "manifest.csv")] == ["ok", "pending", "pending", "pending"]


def test_preflight_names_the_clip_and_what_is_missing(tiny):
    dataset = _dataset(tiny)
    clip = dataset.annotations.by_clip["006_1_2"]
    assert preflight(dataset, clip).numbers == list(range(10, 21))
    late = clip.__class__(clip.subject, clip.clip, 25, 26, 30)
    with pytest.raises(ClipError, match=r"^006_1_2: onset frame 25, apex frame 26 not on disk in .*006_1_2$"):
        preflight(dataset, late)
    assert preflight(dataset, clip.__class__(clip.subject, clip.clip, 10, 11, 30), needed=("onset", "apex"))
    with pytest.raises(ClipError, match="offset frame 30 not on disk"):
        preflight(dataset, clip.__class__(clip.subject, clip.clip, 10, 11, 30), needed=("onset", "apex", "offset"))
    with pytest.raises(ClipError, match=f"^007_1_1: no folder 007/007_1_1 under {tiny}$"):
        preflight(dataset, clip.__class__("007", "007_1_1", 10, 11, 12))


def test_default_workers_is_one_per_available_core():
    assert default_workers() == available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("requested, cores, todo, started", [(1000, 2, 4, 2), (1000, 16, 3, 3), (2, 1, 4, None), (8, 16, 1, None)])
def test_never_more_workers_than_cores_or_clips_to_do(tiny, tmp_path, monkeypatch, requested, cores, todo, started):
    pools = []
    monkeypatch.setattr(sammflow.workers, "available_cores", lambda: cores)
    monkeypatch.setattr(sammflow.workers, "_pool", lambda workers: pools.append(workers) or _InlinePool())
    dataset = _dataset(tiny)
    with _folder(dataset, tmp_path / "out") as folder:
        folder.todo = folder.todo[:todo]
        run_clips(folder, work, ("here",), prepare=_prepare, workers=requested)
    assert pools == ([started] if started else [])  # None: everything ran here, no pool at all


class _InlinePool:
    """Stands in for the process pool: runs each task at once (the test counts the workers asked for)."""

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future = Future()
        future.set_result(fn(*args))
        return future


LATIN1 = os.fsdecode(b"caf\xe9")


def test_an_out_folder_named_in_latin1_keeps_its_log_and_manifest(tiny, tmp_path):
    """Failures in an output folder whose name is not UTF-8: logged and in the manifest, with \\xe9 for the odd byte."""
    (tiny / "006" / "006_1_2" / "006_00015.png").unlink()
    out = tmp_path / LATIN1
    with _folder(_dataset(tiny), out) as folder:
        run_clips(folder, work, ("buggy",), prepare=_prepare)
    rows = {r["clip"]: r for r in read_csv(out / "manifest.csv")}
    assert [rows[c]["status"] for c in CLIPS] == ["ok", "failed", "failed", "failed"]
    shown = str(tmp_path) + "/caf\\xe9"
    assert rows["006_1_4"]["error"] == f"006_1_4: unexpected KeyError: 'a bug' (traceback in {shown}/sammflow.log)"
    log = (out / "sammflow.log").read_bytes().decode("utf-8")  # valid UTF-8
    assert 'return {}["a bug"]' in log and "failed: 006_1_2: apex frame 15 not on disk" in log


def test_an_unwritable_log_is_said_and_never_stops_the_batch(tiny, tmp_path, monkeypatch):
    import sammflow.outfolder

    monkeypatch.setattr(sammflow.outfolder, "append_text", lambda path, text: False)
    with _folder(_dataset(tiny), tmp_path / "out") as folder:
        run_clips(folder, work, ("buggy",), prepare=_prepare)
    rows = {r["clip"]: r for r in read_csv(tmp_path / "out" / "manifest.csv")}
    log = tmp_path / "out" / "sammflow.log"
    assert rows["006_1_4"]["error"] == f"006_1_4: unexpected KeyError: 'a bug' (its traceback could not be written to {log})"
    assert folder.report.log is None and not log.exists()


@pytest.mark.slow
def test_worker_processes_give_the_same_rows(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(sammflow.workers, "available_cores", lambda: 2)  # worker processes even on a one-core machine
    dataset = _dataset(tiny)
    with _folder(dataset, tmp_path / "one") as folder:
        run_clips(folder, work, ("here",), prepare=_prepare, workers=1)
    with _folder(dataset, tmp_path / "two") as folder:
        run_clips(folder, work, ("here",), prepare=_prepare, workers=2)
    one, two = read_csv(tmp_path / "one" / "manifest.csv"), read_csv(tmp_path / "two" / "manifest.csv")
    assert [r["clip"] for r in two] == list(CLIPS)  # annotation order, whatever order the workers finish in
    pids = {r["output"].rsplit("/", 1)[1] for r in two if r["status"] == "ok"}
    assert str(os.getpid()) not in pids  # the work ran in the worker processes...
    assert all(r["warnings"].endswith(f"pid {os.getpid()}") for r in two if r["status"] == "ok")  # ...the preparation here
    strip = lambda rows: [{k: v for k, v in r.items() if k != "output"} for r in rows]  # noqa: E731
    assert strip(one) == strip(two)
