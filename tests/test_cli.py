"""The command line: help, summaries, exit codes, no tracebacks for bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from sammflow.cli import main

COMMANDS = ["demo", "normalize", "flows", "gif", "export"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m sammflow " + command in capsys.readouterr().out


@pytest.mark.slow
def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "sammflow", "--help"], capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=60)
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.slow
def test_export_summary_and_success_exit(demo_root, tmp_path, capsys):
    assert main(["export", str(demo_root), str(tmp_path / "out"), "--quiet", "--winsize", "21", "--map-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 clips ok, 0 failed" in out
    assert '"winsize": 21' in (tmp_path / "out" / "params.json").read_text()


@pytest.mark.slow
def test_failed_clip_gives_exit_1_and_names_the_clip(demo_copy, tmp_path, capsys):
    rows = list(csv.reader(open(demo_copy / "samm.csv", newline=""), delimiter=";"))
    subject, clip, onset = rows[2][0], rows[2][1], rows[2][3]
    next((demo_copy / subject / clip).glob(f"*{onset}.jpg")).unlink()
    assert main(["export", str(demo_copy), str(tmp_path / "out"), "-q"]) == 1
    captured = capsys.readouterr()
    assert "3 of 4 clips ok, 1 failed" in captured.out
    assert f"{clip}: onset frame {int(onset)} not on disk" in captured.err


@pytest.mark.slow
def test_normalize_flows_and_gif_commands(demo_root, tmp_path, capsys):
    assert main(["normalize", str(demo_root), str(tmp_path / "aligned"), "-q"]) == 0
    assert main(["flows", str(tmp_path / "aligned"), str(tmp_path / "maps"), "-q"]) == 0
    assert len(list((tmp_path / "maps" / "flows").glob("sub*.png"))) == 4
    assert main(["gif", str(tmp_path / "aligned"), str(tmp_path / "gifs"), "-q", "--step", "3", "--to-offset"]) == 0
    assert len(list((tmp_path / "gifs").glob("sub*.gif"))) == 4
    assert capsys.readouterr().out.count("4 of 4 clips ok") == 3


def test_flows_refuses_raw_frames(demo_root, tmp_path, capsys):
    assert main(["flows", str(demo_root), str(tmp_path / "maps"), "-q"]) == 2
    assert "not a 'normalize' output" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "{tmp}/nowhere", "{tmp}/out"], "dataset folder not found, so no annotation file (samm.csv, "),
        (["export", "{tmp}/nowhere", "{tmp}/out", "-a", "{tmp}/nowhere.csv"], "annotation file not found"),
        (["export", "{demo}", "{demo}/out"], "inside the dataset folder"),
        (["export", "{demo}", "{tmp}/out", "--margin", "-3"], "--margin must be >= 0, got -3"),
        (["export", "{demo}", "{tmp}/out", "--preset", "htnet"], "--preset must be one of ['seed', 'ststnet', 'offapexnet'], got 'htnet'"),
        (["export", "{demo}", "{tmp}/out", "--apex", "centre"], "--apex must be one of ['annotated', 'auto', 'spot', 'middle'], got 'centre'"),
        (["export", "{demo}", "{tmp}/out", "--flow-method", "dis", "--dis-patch-size", "16", "--dis-finest-scale", "3"],
         "--dis-finest-scale 3 is coarser than the coarsest level DIS builds for a 224 px crop (--crop-size) with 16 px patches "
         "(--dis-patch-size): at most 2"),
        (["export", "{demo}", "{tmp}/out", "--map-scale", "fixed", "--map-fixed-scale", "0"], "--map-fixed-scale must be in [0.001, 1000], got 0"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, message, demo_root, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, demo=demo_root) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_dataset_folder_with_annotations(tmp_path, capsys):
    (tmp_path / "samm.csv").write_bytes(Path(__file__).with_name("data").joinpath("samm.csv").read_bytes())
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out"), "-a", str(tmp_path / "samm.csv")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_demo_command(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--subjects", "1", "--clips", "1", "--frames", "6", "-q"]) == 0
    assert "1 clips × 6 frames" in capsys.readouterr().out
    assert (tmp_path / "demo" / "samm.csv").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("do not touch")
    assert main(["demo", str(tmp_path / "mine"), "-q"]) == 2
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "do not touch"


def test_tvl1_without_opencv_contrib_is_one_line_before_any_work(demo_root, tmp_path, capsys, monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "optflow")  # opencv-python-headless instead of the contrib build
    assert main(["export", str(demo_root), str(tmp_path / "out"), "--preset", "ststnet", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs OpenCV's contrib build" in err and "opencv-contrib-python-headless==4.14.0.94" in err
    assert not (tmp_path / "out").exists()
    assert main(["export", str(demo_root), str(tmp_path / "out2"), "--preset", "ststnet", "--flow-method", "dis", "-q"]) == 0


@pytest.mark.slow
def test_export_of_a_video_event(demo_root, demo_truth, tmp_path, capsys, monkeypatch):
    import cv2

    monkeypatch.setenv("SAMMFLOW_CACHE", str(tmp_path / "cache"))
    truth = demo_truth["clips"][0]
    frames = sorted((demo_root / truth["subject"] / truth["clip"]).glob("*.jpg"))
    first = int(frames[0].stem.rsplit("_", 1)[1])
    video = tmp_path / "my clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (1020, 544), False)
    for path in frames:
        writer.write(cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (1020, 544), interpolation=cv2.INTER_AREA))
    writer.release()
    onset, apex, offset = (truth[k] - first for k in ("onset", "apex", "offset"))  # 0-based frame indices of the video
    assert main(["export", str(video), str(tmp_path / "out"), "--onset", str(onset), "--offset", str(offset), "-q", "-j", "1"]) == 0
    row = _rows(tmp_path / "out")[0]
    assert row["status"] == "ok" and row["apex_source"] == "spotted" and abs(int(row["apex"]) - apex) <= 2
    assert (tmp_path / "out" / row["output"]).is_file()
    capsys.readouterr()
    assert main(["export", str(video), str(tmp_path / "out2"), "--onset", str(onset), "--apex", str(apex), "--offset", str(offset),
                 "-q", "-j", "1"]) == 0
    assert _rows(tmp_path / "out2")[0]["apex"] == str(apex) and _rows(tmp_path / "out2")[0]["apex_source"] == "annotated"
    assert main(["export", str(video), str(tmp_path / "out3"), "--onset", str(onset), "--offset", "999", "-q"]) == 2
    assert "offset 999 is after the video's last frame" in capsys.readouterr().err
    assert main(["export", str(video), str(tmp_path / "out4"), "-q"]) == 2
    assert "a video needs its event: --onset N --offset N" in capsys.readouterr().err
    assert main(["export", str(demo_root), str(tmp_path / "out5"), "--onset", "3", "-q"]) == 2
    assert "--onset: only for a video file" in capsys.readouterr().err


def _rows(out):
    import csv

    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
