"""The bad-input catalogue of issue 10 for parameters, options, output folders and
interruptions: each case is run through the command line (in this process) and checked for
the README's promises:

* one line on stderr naming the flag or file and the cause (nothing on stdout);
* the exit code (2: the input as a whole is unusable; 130 / 143: interrupted);
* no traceback;
* the dataset untouched;
* nothing written outside the output folder (not even in the temporary folder), and for a
  bad option nothing written at all: options are checked before any work.

Frame, annotation-file and dataset-path cases: ``test_cli_inputs.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

import sammflow.cli
import sammflow.export
from helpers import manifest
from sammflow.cli import main
from sammflow.workers import available_cores


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(*args: str | Path) -> Run:
    """``python -m sammflow ARGS`` in this process; argparse's own exit is a code like any other."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return Run(code, out.getvalue(), err.getvalue())


#: What torch itself makes in the temporary folder the first time it detects a face in a process (its
#: compiler's cache folder): not sammflow's doing, and made once per machine and user in real use.
TORCH_CACHE = "torchinductor_"


def files_under(folder: Path, *, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder`` (hidden ones included); files with their size and modification
    time (a folder's own time changes when something is made and removed in it: only its presence counts)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        if skip is not None and Path(dirpath) == skip.parent:
            dirnames[:] = [d for d in dirnames if d != skip.name]
            filenames = [f for f in filenames if f != skip.name]
        dirnames[:] = [d for d in dirnames if not (Path(dirpath).name == "tmpdir" and d.startswith(TORCH_CACHE))]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            stat = path.lstat()
            found[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns) if path.is_file() else (0, 0)
    return found


@pytest.fixture()
def place(tmp_path, monkeypatch):
    """A work folder for OUT and a private temporary folder (where a crash log would go)."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmpdir"))
    (tmp_path / "tmpdir").mkdir()
    (tmp_path / "work").mkdir()
    return tmp_path


def check(run: Run, code: int, text: str, *, data: Path, data_before: dict, place: Path, out: Path, place_before: dict) -> None:
    """The README's promises for one bad input."""
    assert run.code == code, (run.code, run.err)
    assert "Traceback" not in run.out + run.err
    assert len(run.err_lines) == 1, run.err
    assert text in run.err_lines[0], run.err_lines
    if code == 2:
        assert run.out == "" and run.err_lines[0].startswith("error: ")
    assert files_under(data) == data_before  # the dataset is never touched
    assert files_under(place, skip=out) == place_before  # nothing outside OUT, the temporary folder included
    assert [p.name for p in (place / "tmpdir").iterdir() if not p.name.startswith(TORCH_CACHE)] == []  # no crash log: not a bug


# ---------------------------------------------------------------- parameters and options: refused before any work

#: case: (command line after the command name, with D = dataset, O = output folder; the line's text)
OPTION_CASES = {
    # Farnebäck (sammflow.params.FlowParams): named by their flags, not their field names
    "winsize_even": ("export D O --winsize 14", "--winsize must be odd (OpenCV averages over winsize + 1 px when it is even: "
                                                 "14 would give the flow of 15), got 14"),
    "winsize_too_small": ("export D O --winsize 1", "--winsize must be in [3, 2047], got 1"),
    "winsize_beyond_a_c_int": ("export D O --winsize 10000000001", "--winsize must be in [3, 2047], got 10000000001"),
    "flow_flags_initial_flow": ("export D O --flow-flags 4", "--flow-flags must be one of [0, 256], got 4"),
    "poly_n_even": ("export D O --poly-n 6", "--poly-n must be one of [5, 7], got 6"),
    "poly_sigma_degenerate": ("export D O --poly-sigma 0.1", "--poly-sigma must be in [0.25, 10], got 0.1"),
    "pyr_scale_one": ("export D O --pyr-scale 1", "--pyr-scale must be in (0, 1), got 1.0"),
    "levels_huge": ("export D O --levels 10000000000", "--levels must be in [1, 50], got 10000000000"),
    "iterations_zero": ("export D O --iterations 0", "--iterations must be in [1, 100], got 0"),
    "flows_command_checks_first": ("flows D O --iterations 0", "--iterations must be in [1, 100], got 0"),
    # detection, alignment, map, GIF
    "device_unknown": ("export D O --device gpu", "--device must be cpu, cuda, cuda:N or mps, got 'gpu'"),
    "detect_max_side_small": ("export D O --detect-max-side 32", "--detect-max-side must be 0 or >= 64, got 32"),
    "min_prob_nan": ("export D O --min-prob nan", "argument --min-prob: not a finite number: 'nan'"),
    "max_residual_infinite": ("export D O --max-residual inf", "argument --max-residual: not a finite number: 'inf'"),
    "max_residual_zero": ("export D O --max-residual 0", "--max-residual must be > 0, got 0.0"),
    "method_unknown": ("normalize D O --method bilinear", "--method must be one of ['subpixel', 'whole_pixel'], got 'bilinear'"),
    "method_given_a_flag_name": ("normalize D O --method robust", "--method must be one of ['subpixel', 'whole_pixel'], got 'robust'"),
    "crop_size_tiny": ("normalize D O --crop-size 8", "--crop-size must be in [16, 2048], got 8"),
    "map_size_not_gif_size": ("export D O --map-size 3", "--map-size must be in [4, 1024], got 3"),
    "gif_size_not_map_size": ("gif D O --gif-size 8", "--gif-size must be in [16, 1024], got 8"),
    "gif_step_zero": ("gif D O --step 0", "--step must be >= 1, got 0"),
    "gif_fps_zero": ("gif D O --fps 0", "--fps must be in [0.5, 100], got 0.0"),
    "integer_given_text": ("export D O --winsize fifteen", "argument --winsize: invalid int value: 'fifteen'"),
    # options of the commands themselves
    "workers_zero": ("export D O -j 0", "--workers must be >= 1, got 0"),
    "workers_negative": ("export D O --workers -3", "--workers must be >= 1, got -3"),
    "workers_absurd": ("export D O -j 1000", f"--workers 1000: more than 4 × the {available_cores()} core(s) of this machine; "
                                             f"use at most {4 * available_cores()}, or leave it out for one per core"),
    "workers_not_a_number": ("export D O -j many", "argument --workers/-j: invalid int value: 'many'"),
    "misspelt_flag": ("export D O --winsze 15", "unrecognized arguments: --winsze 15"),
    "output_folder_missing": ("export D", "DATA is missing: give a dataset folder or a video file and OUT, or --dataset KIND=PATH"),
    "gif_unknown_clip": ("gif D O --clip 999_9_9 -c 006_1_1", "--clip 999_9_9: not annotated in "),
    "demo_no_subjects": ("demo O --subjects 0", "--subjects must be in [1, 99], got 0"),
    "demo_too_many_clips": ("demo O --clips 21", "--clips must be in [1, 20], got 21"),
    "demo_too_few_frames": ("demo O --frames 4", "--frames must be in [5, 10000], got 4"),
    "demo_negative_seed": ("demo O --seed -1", "--seed must be >= 0, got -1"),
    "demo_negative_jitter": ("demo O --jitter -1", "--jitter must be in [0, 100], got -1"),
    "demo_amplitude_nan": ("demo O --amplitude nan", "argument --amplitude: not a finite number: 'nan'"),
}


@pytest.mark.parametrize("case", OPTION_CASES)
def test_a_bad_option_is_one_line_naming_its_flag_before_any_work(case, demo_root, place, monkeypatch):
    command, text = OPTION_CASES[case]
    out = place / "work" / "OUT"
    calls = []
    if case != "gif_unknown_clip":  # a clip id is checked against the annotations: read, but no clip processed
        monkeypatch.setattr(sammflow.cli, "load_dataset", lambda *a: calls.append(a))  # the rest before the dataset is even read
    data_before, place_before = files_under(demo_root), files_under(place, skip=out)
    argv = [{"D": str(demo_root), "O": str(out)}.get(word, word) for word in command.split()]
    run = run_cli(*argv)
    check(run, 2, text, data=demo_root, data_before=data_before, place=place, out=out, place_before=place_before)
    assert not out.exists() and calls == []  # nothing written at all


# ---------------------------------------------------------------- output folders


def _name_too_long(work: Path) -> Path:
    return work / ("x" * 300)


def _below_a_name_too_long(work: Path) -> Path:
    return work / ("x" * 300) / "maps"


def _link_loop(work: Path) -> Path:
    (work / "loop").symlink_to(work / "loop")
    return work / "loop"


def _only_hidden_user_files(work: Path) -> Path:
    (work / "notes").mkdir()
    (work / "notes" / ".notes").write_text("my notes")
    return work / "notes"


def _user_file_that_looks_temporary(work: Path) -> Path:
    (work / "mine").mkdir()
    (work / "mine" / ".x.png.abcd1234.tmp").write_text("mine, not sammflow's")
    return work / "mine"


def _a_device(work: Path) -> Path:
    return Path(os.devnull)


def _manifest_not_utf8(work: Path) -> Path:
    (work / "edited").mkdir()
    from sammflow.manifest import MANIFEST_COLUMNS

    (work / "edited" / "manifest.csv").write_bytes((",".join(MANIFEST_COLUMNS) + "\n006,006_1_1,caf\xe9\n").encode("latin-1"))
    return work / "edited"


# case: (make(work) -> OUT, the line's text (OUT's path is checked separately), OUT as given stays as it was)
OUTPUT_CASES = {
    "name_too_long": (_name_too_long, ": file name too long"),
    "below_a_name_too_long": (_below_a_name_too_long, ": file name too long"),
    "symbolic_link_loop": (_link_loop, ": too many levels of symbolic links"),
    "only_hidden_user_files": (_only_hidden_user_files, ": folder is not empty (.notes) and was not made by sammflow"),
    "user_file_that_looks_temporary": (_user_file_that_looks_temporary,
                                       ": folder is not empty (.x.png.abcd1234.tmp) and was not made by sammflow"),
    "a_device": (_a_device, ": is a file, expected an output folder"),
    "manifest_edited_in_latin1": (_manifest_not_utf8, "manifest.csv: cannot read this manifest ('utf-8' codec can't decode byte 0xe9"),
}


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_an_unusable_output_folder_is_one_line_and_left_as_it_was(case, demo_root, place):
    make, text = OUTPUT_CASES[case]
    out = make(place / "work")
    data_before, place_before = files_under(demo_root), files_under(place, skip=out)
    try:
        out_before = files_under(out) if out.is_dir() and not out.is_symlink() else None
    except OSError:  # a name too long
        out_before = None
    run = run_cli("export", demo_root, out, "-q", "-j", "1")
    check(run, 2, text, data=demo_root, data_before=data_before, place=place, out=out, place_before=place_before)
    assert run.err_lines[0].startswith(f"error: {out}")  # names the folder (or its manifest)
    if out_before is not None:
        assert files_under(out) == out_before  # not adopted, nothing deleted


@pytest.mark.parametrize("annotations", [False, True], ids=["its_samm_csv", "annotations_elsewhere"])
def test_a_dataset_folder_name_too_long_is_one_line(demo_root, place, annotations):
    data = place / "work" / ("y" * 300)
    out = place / "work" / "OUT"
    place_before = files_under(place, skip=out)
    run = run_cli("export", data, out, "-q", *(["-a", demo_root / "samm.csv"] if annotations else []))
    check(run, 2, ": file name too long", data=demo_root, data_before=files_under(demo_root), place=place, out=out,
          place_before=place_before)
    assert run.err_lines[0].startswith(f"error: {data}") and not out.exists()


def test_a_rule_between_two_parameters_names_both_flags(monkeypatch):
    """No declared rule ties two parameters today; one that does is told with both flags."""
    from sammflow.params import DetectParams

    def post_init(self):
        if self.min_face > self.max_side:
            raise ValueError(f"min_face must be <= max_side, got {self.min_face} > {self.max_side}")

    monkeypatch.setattr(DetectParams, "__post_init__", post_init)
    run = run_cli("export", "D", "O", "--min-face", "700", "--detect-max-side", "640")
    assert (run.code, run.err_lines) == (2, ["error: --min-face must be <= --detect-max-side, got 700 > 640"])


# ---------------------------------------------------------------- paths that are not UTF-8 (item 1)

LATIN1 = os.fsdecode(b"caf\xe9")  # a folder named in Latin-1: on Linux a str with a lone surrogate
SHOWN = "caf\\xe9"  # how sammflow prints and writes it


@contextlib.contextmanager
def strict_terminal():
    """stdout and stderr as on a UTF-8 terminal (errors="strict": a message that cannot be encoded fails).
    Yields ``text(name)``, what was written there. (Set in the test itself: pytest re-installs its own
    capture between a fixture's set-up and the test.)"""
    streams = {name: io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict") for name in ("stdout", "stderr")}

    def text(name: str) -> str:
        streams[name].flush()
        return streams[name].buffer.getvalue().decode("utf-8")

    with contextlib.redirect_stdout(streams["stdout"]), contextlib.redirect_stderr(streams["stderr"]):
        yield text


@pytest.mark.slow
def test_latin1_dataset_and_output_folders_export_and_report_in_one_line_each(demo_root, place):
    """A dataset and an output folder named in Latin-1, one clip failing: the good clips get their
    maps; the failure is one printable line; manifest, alignment records and log are valid UTF-8."""
    data = Path(shutil.copytree(demo_root, place / f"{LATIN1} data" / "DATA"))
    rows = manifest_rows(data)
    subject, clip, onset = rows[1][0], rows[1][1], int(rows[1][3])
    next(p for p in (data / subject / clip).iterdir() if int(p.stem.rsplit("_", 1)[1]) == onset).unlink()
    out = place / "work" / f"résultats {LATIN1}"
    data_before, place_before = files_under(data), files_under(place, skip=out)
    with strict_terminal() as terminal:
        code = main(["export", str(data), str(out), "-q", "-j", "1"])
    out_text, err_text = terminal("stdout"), terminal("stderr")
    assert code == 1 and "Traceback" not in out_text + err_text
    shown_data = str(data).replace(LATIN1, SHOWN)
    assert err_text.splitlines() == [f"failed: {clip}: onset frame {onset} not on disk in {shown_data}/{subject}/{clip}"]
    assert out_text.splitlines() == [f"3 of 4 clips ok, 1 failed → {str(out).replace(LATIN1, SHOWN)}"]
    written = manifest(out)  # strict UTF-8 reader
    assert [r["status"] for r in written] == ["ok", "failed", "ok", "ok"]
    assert all((out / r["output"]).is_file() for r in written if r["status"] == "ok")  # the good clips got their maps
    assert written[1]["error"] == f"{clip}: onset frame {onset} not on disk in {shown_data}/{subject}/{clip}"
    (out / "alignment.csv").read_bytes().decode("utf-8")
    assert f"not on disk in {shown_data}" in (out / "sammflow.log").read_bytes().decode("utf-8")
    assert files_under(data) == data_before and files_under(place, skip=out) == {**place_before}


def manifest_rows(root: Path) -> list[list[str]]:
    import csv

    with open(root / "samm.csv", newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh, delimiter=";"))[1:]


def test_an_unexpected_error_with_a_latin1_output_folder_is_one_printable_line(demo_root, place, monkeypatch):
    def crash(*args, **kwargs):
        raise ZeroDivisionError(f"division by zero in {place / LATIN1}")

    monkeypatch.setattr(sammflow.export, "export_flows", crash)
    out = place / "work" / LATIN1
    with strict_terminal() as terminal:
        code = main(["export", str(demo_root), str(out), "-q"])
    err = terminal("stderr")
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    log = next((place / "tmpdir").iterdir())  # no output folder to log into: the temporary folder, and the line says so
    assert err.splitlines() == [f"error: unexpected ZeroDivisionError: division by zero in {place}/{SHOWN} (details in the temporary "
                                f"folder, as there is no output folder to log into: {log})"]
    assert f"division by zero in {place}/{SHOWN}" in log.read_bytes().decode("utf-8")


# ---------------------------------------------------------------- interruptions


def test_ctrl_c_while_the_dataset_is_read_writes_nothing(demo_root, place, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sammflow.cli, "load_dataset", interrupted)
    out = place / "work" / "OUT"
    data_before, place_before = files_under(demo_root), files_under(place, skip=out)
    run = run_cli("export", demo_root, out, "-q")
    check(run, 130, f"interrupted (SIGINT); nothing was written to {out}", data=demo_root, data_before=data_before, place=place,
          out=out, place_before=place_before)
    assert run.err_lines == [f"interrupted (SIGINT); nothing was written to {out}"] and not out.exists()


@pytest.mark.slow
def test_sigterm_during_the_first_clip_leaves_a_resumable_folder(demo_root, place, monkeypatch):
    real = sammflow.export.find_apex_faces

    def terminated(items, **kwargs):
        raise sammflow.cli.Terminated(signal.SIGTERM)

    monkeypatch.setattr(sammflow.export, "find_apex_faces", terminated)
    out = place / "work" / "OUT"
    data_before, place_before = files_under(demo_root), files_under(place, skip=out)
    run = run_cli("export", demo_root, out, "-q", "-j", "1")
    check(run, 143, f"interrupted (SIGTERM); finished clips are kept in {out} (the rest are 'pending' in its manifest.csv): "
                    "re-run the same command to resume", data=demo_root, data_before=data_before, place=place, out=out,
          place_before=place_before)
    assert [r["status"] for r in manifest(out)] == ["pending"] * 4
    assert "stopped by SIGTERM: 4 clip(s) left pending" in (out / "sammflow.log").read_text()
    monkeypatch.setattr(sammflow.export, "find_apex_faces", real)
    again = run_cli("export", demo_root, out, "-q", "-j", "1")
    assert again.code == 0 and [r["status"] for r in manifest(out)] == ["ok"] * 4


def test_ctrl_c_during_the_demo_leaves_nothing(place, monkeypatch):
    import sammflow.demo

    real = sammflow.demo.generate_demo

    def interrupted(out_dir, config, progress=None):
        def stop(done, total, label):
            if done >= 2:
                raise KeyboardInterrupt

        return real(out_dir, config, progress=stop)

    monkeypatch.setattr(sammflow.demo, "generate_demo", interrupted)
    out = place / "work" / "DEMO"
    place_before = files_under(place)
    run = run_cli("demo", out, "--subjects", "1", "--clips", "1", "--frames", "6")
    assert (run.code, run.err_lines, run.out) == (130, [f"interrupted (SIGINT); nothing was written to {out}"], "")
    assert files_under(place) == place_before  # no half-built (hidden) folder beside it either
