"""The dashboard under use by others: what a link or a typed path can make it read, and what
bad input looks like to the user (issue 6, app side).

* Paths from widgets and URL query parameters are confined to the allowed roots
  (``SAMMFLOW_ROOTS`` + what the server was started with): an audit hook records every file
  the process opens or lists, and the tests assert nothing under a forbidden folder was.
* Clip ids and frame numbers from a link only select among the dataset's own.
* Bad dataset folders, annotation files and frames are an ``st.error`` naming the path or
  clip and the cause; no traceback.
* Every Streamlit cache is bounded; there is no upload widget.

The three-sessions-at-once load test is in ``tests/test_browser.py`` (it needs a server).
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sammflow import ui
from sammflow.annotations import read_annotations
from sammflow.dataset import InputError
from sammflow.params import GifParams, PipelineParams
from sammflow.pipeline import ClipError

from app_helpers import open_page

pytest_plugins = ("app_fixtures",)  # the dashboard's fixtures, kept out of conftest.py
REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
TIMEOUT = 120
pytestmark = pytest.mark.usefixtures("navigation_mode")
OUTSIDE = "is outside the folders this dashboard may open"

# ---------------------------------------------------------------- watching what the process reads

_WATCHED: list[tuple[str, list[str]]] = []
_EVENTS = {"open", "os.listdir", "os.scandir", "os.chdir", "shutil.copytree", "shutil.copyfile"}


def _audit(event: str, args: tuple) -> None:
    # process-wide and permanent (audit hooks cannot be removed): does nothing unless a test watches
    if not _WATCHED or event not in _EVENTS or not args or isinstance(args[0], int) or args[0] is None:
        return
    try:
        path = os.fsdecode(args[0])
    except TypeError:
        return
    for prefix, hits in _WATCHED:
        if path == prefix or path.startswith(prefix + os.sep):
            hits.append(f"{event} {path}")


sys.addaudithook(_audit)


@contextlib.contextmanager
def watching(*folders: Path) -> Iterator[list[str]]:
    """Every open / listing of a path under ``folders`` (as the process spelled it) while inside."""
    hits: list[str] = []
    entries = [(str(folder), hits) for folder in folders]
    _WATCHED.extend(entries)
    try:
        yield hits
    finally:
        for entry in entries:
            _WATCHED.remove(entry)


# ---------------------------------------------------------------- helpers


def assert_no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    shown = "\n".join(e.value for e in [*at.error, *at.warning])
    assert "Traceback" not in shown and 'File "' not in shown, shown


def clip_ids(root: Path) -> list[str]:
    return [c.clip for c in read_annotations(root / "samm.csv").clips]


def context(root: Path, annotations: Path | None = None) -> ui.Context:
    ref = ui.DatasetRef(str(root), str(annotations or root / "samm.csv"))
    return ui.Context(ref, ui.open_dataset(ref), PipelineParams())


@pytest.fixture()
def secret(app_data: Path, tmp_path: Path) -> Path:
    """A perfectly good dataset the dashboard must not open: outside every allowed root."""
    return Path(shutil.copytree(app_data, tmp_path / "SECRET"))


@pytest.fixture()
def allowed(app_env: dict[str, str], tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``SAMMFLOW_ROOTS`` = one folder, holding a symbolic link to ``secret``."""
    root = tmp_path / "ALLOWED"
    root.mkdir()
    (root / "link").symlink_to(secret, target_is_directory=True)
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(root))
    return root


# ---------------------------------------------------------------- the rule


def test_allowed_roots_are_the_listed_folders_plus_what_the_server_was_started_with(app_env: dict[str, str], tmp_path: Path,
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAMMFLOW_ROOTS", raising=False)
    data = Path(app_env["SAMMFLOW_DATA"]).resolve()
    roots = ui.allowed_roots()
    assert roots[0] == Path.cwd().resolve()  # unset: the working folder
    assert data in roots and data / "samm.csv" in roots and Path(ui.default_out_dir()).resolve() in roots
    assert Path.home().resolve() not in roots or Path.home().resolve() == Path.cwd().resolve()
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("SAMMFLOW_ROOTS", f"{a}{os.pathsep}{b}{os.pathsep}")
    roots = ui.allowed_roots()
    assert roots[:2] == [a.resolve(), b.resolve()] and Path.cwd().resolve() not in roots and data in roots


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "tilde", "missing"])
def test_allowed_path_resolves_before_it_checks(allowed: Path, secret: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(secret.parent))
    typed = {"absolute": str(secret), "dotdot": f"{allowed}/../SECRET/006", "symlink": f"{allowed}/link/006",
             "tilde": "~/SECRET", "missing": f"{allowed}/../SECRET/no/such/folder"}[how]
    with watching(secret, allowed / "link") as hits:
        with pytest.raises(InputError) as caught:
            ui.allowed_path(typed, "Dataset folder")
    message = str(caught.value)
    assert message.startswith(f"Dataset folder `{typed}` {OUTSIDE}") and str(allowed) in message and "SAMMFLOW_ROOTS" in message
    assert hits == []
    # inside the root, through a link that stays inside: allowed, and resolved
    (allowed / "inside").mkdir()
    (allowed / "alias").symlink_to(allowed / "inside")
    assert ui.allowed_path(f"{allowed}/alias/../inside", "x") == (allowed / "inside").resolve()
    assert ui.allowed_path(f"{allowed}/alias", "x") == (allowed / "inside").resolve()


@pytest.mark.parametrize(("key", "value"), [
    ("data", "{secret}"),
    ("data", "{allowed}/../SECRET"),
    ("data", "{allowed}/link"),
    ("ann", "{secret}/samm.csv"),
    ("ann", "{allowed}/link/samm.csv"),
    ("ann", "{allowed}/../SECRET/samm.csv"),
], ids=["folder", "folder-dotdot", "folder-symlink", "annotations", "annotations-symlink", "annotations-dotdot"])
def test_a_crafted_link_cannot_open_a_folder_outside_the_roots(allowed: Path, secret: Path, key: str, value: str) -> None:
    typed = value.format(secret=secret, allowed=allowed)
    (allowed / "006" / "006_1_1").mkdir(parents=True)  # a dataset folder that is allowed, for the annotation cases
    query = {"source": "Folder", "data": str(allowed), key: typed}
    with watching(secret, allowed / "link") as hits:
        at = open_page(None, query)
    assert_no_traceback(at)
    assert not at.title and not at.dataframe  # no page ran, nothing listed
    assert len(at.error) == 1
    message = at.error[0].value
    what = "Dataset folder" if key == "data" else "Annotation file"
    assert message.startswith(f"{what} `{typed}` {OUTSIDE}") and "SAMMFLOW_ROOTS" in message
    assert "Subject" not in message and "006_1_1" not in message  # nothing of the secret dataset leaks
    assert hits == [], hits


def test_the_watch_sees_a_read_when_the_folder_is_allowed(allowed: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the same link works, and the audit hook records it, once the folder is allowed."""
    monkeypatch.setenv("SAMMFLOW_ROOTS", f"{allowed}{os.pathsep}{secret}")
    with watching(secret) as hits:
        at = open_page(None, {"source": "Folder", "data": str(secret), "ann": str(secret / "samm.csv")})
    assert not at.exception and not at.error and at.title[0].value == "Overview"
    assert any(h.startswith("open ") and h.endswith("samm.csv") for h in hits) and any("listdir" in h or "scandir" in h for h in hits)


def test_an_existing_and_a_missing_outside_path_read_the_same(allowed: Path, secret: Path) -> None:
    """No existence oracle: outside the roots, the answer does not depend on what is there."""
    messages = []
    for name in ("SECRET", "NOTHING_HERE"):
        typed = str(secret.parent / name)
        at = open_page(None, {"source": "Folder", "data": typed})
        messages.append(at.error[0].value.replace(typed, "<path>"))
    assert messages[0] == messages[1]


# ---------------------------------------------------------------- clip ids and frames from a link


@pytest.mark.parametrize(("page", "query", "key"), [
    ("pages/alignment.py", {"clip": "../../etc"}, "clip"),
    ("pages/alignment.py", {"clip": "999_9_9"}, "clip"),
    ("pages/alignment.py", {"a": "99999", "b": "-5"}, "a"),
    ("pages/flow.py", {"clip": "../../etc/passwd"}, "clip"),
    ("pages/gifs.py", {"gif_clips": ["../../etc", "999_9_9"]}, "gif_clips"),
], ids=["alignment-dotdot", "alignment-unknown", "alignment-frames", "flow-dotdot", "gifs"])
def test_a_link_to_an_unknown_clip_or_frame_is_ignored_visibly(app_env: dict[str, str], page: str, query: dict, key: str) -> None:
    at = open_page(page, query)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title  # the page ran, on valid choices
    values = query[key] if isinstance(query[key], list) else [query[key]]
    warning = next(w.value for w in at.warning if w.value.startswith("Ignored from the link"))
    assert all(f"`{v}`" in warning for v in values), warning
    if key == "clip":
        assert at.selectbox(key="clip").value in clip_ids(Path(app_env["SAMMFLOW_DATA"]))
    if key == "a":
        assert "not a frame of 006_1_1 on disk" in warning and at.selectbox(key="a").value != 99999
    # the next interaction is quiet: the warning was about the link only
    if page == "pages/alignment.py":
        at.slider(key="thr").set_value(20).run()
        assert not any(w.value.startswith("Ignored from the link") for w in at.warning)


def test_the_compute_layer_refuses_clip_ids_and_frames_not_in_the_dataset(app_env: dict[str, str]) -> None:
    ctx = context(Path(app_env["SAMMFLOW_DATA"]))
    calls = {
        "crops": lambda c: ui.crops(ctx, c, [1]), "alignment": lambda c: ui.alignment(ctx, c), "flow": lambda c: ui.flow(ctx, c),
        "gif": lambda c: ui.gif(ctx, c, GifParams()), "mtcnn_boxes": lambda c: ui.mtcnn_boxes(ctx, c),
        "frame_grey": lambda c: ui.frame_grey(ctx, c, 1), "frame_number": lambda c: ui.frame_number(ctx, c, "onset"),
        "onset_apex": lambda c: ui.onset_apex(ctx, c),
    }
    for name, call in calls.items():
        for clip in ("../../etc", "999_9_9"):
            with pytest.raises(ClipError, match=f"^{clip.replace('.', '[.]')}: ") as caught:
                call(clip)
            assert "not a valid annotated clip" in str(caught.value), (name, caught.value)
    assert ui.caption(ctx, "../../etc") == "../../etc"
    clip = ctx.ready_ids()[0]
    with pytest.raises(ClipError, match=f"^{clip}: .*frame 99999 not found"):
        ui.frame_grey(ctx, clip, 99999)


# ---------------------------------------------------------------- the export folder


def test_export_folder_rules(app_env: dict[str, str], allowed: Path, secret: Path, tmp_path: Path) -> None:
    ctx = context(Path(app_env["SAMMFLOW_DATA"]))
    data = Path(app_env["SAMMFLOW_DATA"])
    refused = {
        str(secret / "out"): OUTSIDE,
        f"{allowed}/../SECRET/out": OUTSIDE,
        f"{allowed}/link/out": OUTSIDE,
        str(data / "maps"): "inside the dataset folder",
        str(Path(ui.demo_root(ui.demo_config())) / "maps"): "inside the dataset folder",  # the demo is a dataset too
    }
    notes = allowed / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("x")
    refused[str(notes)] = "not empty (thesis.tex) and was not made by sammflow"
    (allowed / "a_file").write_text("x")
    refused[str(allowed / "a_file")] = "is a file"
    normalized = allowed / "crops"
    normalized.mkdir()
    (normalized / "params.json").write_text(json.dumps({"kind": "normalized", "params_hash": "x"}))
    refused[str(normalized)] = "holds a 'normalized' output"
    refused[""] = "No output folder given"
    with watching(secret, allowed / "link") as hits:
        for typed, cause in refused.items():
            with pytest.raises(InputError) as caught:
                ui.export_flows(ctx, typed)
            assert cause in str(caught.value) and typed in str(caught.value), (typed, str(caught.value))
    assert hits == [] and not (secret / "out").exists() and not (data / "maps").exists()
    # a new folder, an empty one, and an earlier flow export are fine
    assert ui.export_folder(ctx, str(allowed / "new" / "flows")) == (allowed / "new" / "flows").resolve()
    (allowed / "empty").mkdir()
    assert ui.export_folder(ctx, str(allowed / "empty")) == (allowed / "empty").resolve()
    earlier = allowed / "earlier"
    earlier.mkdir()
    (earlier / "params.json").write_text(json.dumps({"kind": "flows", "params_hash": "x"}))
    (earlier / "flows").mkdir()
    assert ui.export_folder(ctx, str(earlier)) == earlier.resolve()


def test_one_export_at_a_time_per_folder(app_env: dict[str, str], allowed: Path) -> None:
    ctx = context(Path(app_env["SAMMFLOW_DATA"]))
    out = allowed / "busy"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)  # what a sammflow command (or another session) holds while it writes
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="another sammflow run is writing to this folder"):
            ui.export_flows(ctx, str(out))
    finally:
        os.close(fd)
    assert list(out.iterdir()) == []


def test_export_page_names_the_refused_folder(app_env: dict[str, str], allowed: Path, secret: Path) -> None:
    at = open_page("pages/export.py")
    typed = f"{allowed}/../SECRET/out"
    at.text_input(key="out_dir").set_value(typed).run()
    at.button(key="run_export").click().run()
    assert_no_traceback(at)
    assert len(at.error) == 1 and at.error[0].value.startswith(f"Output folder `{typed}` {OUTSIDE}")
    assert not (secret / "out").exists() and not at.success


# ---------------------------------------------------------------- bad input, as the user sees it


def _annotation(kind: str, folder: Path) -> Path:
    path = folder / {"folder": "samm_dir", "garbage": "samm.csv", "empty": "empty.csv", "xlsx": "codes.xlsx", "huge": "big.csv"}[kind]
    if kind == "folder":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 64)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "xlsx":
        path.write_bytes(b"PK\x03\x04 this is not a zip")
    elif kind == "huge":
        with open(path, "wb") as fh:  # sparse: costs no disk
            fh.truncate(ui.MAX_ANNOTATION_BYTES + 1)
    return path


@pytest.mark.parametrize(("kind", "cause"), [
    ("folder", "is a folder"), ("garbage", "binary file"), ("empty", "empty"), ("xlsx", "not a readable .xlsx"), ("huge", "wrong file?"),
])
def test_a_bad_annotation_file_is_named_with_its_cause(app_env: dict[str, str], allowed: Path, kind: str, cause: str) -> None:
    path = _annotation(kind, allowed)
    with watching(path) as hits:
        at = open_page(None, {"ann": str(path)})
    assert_no_traceback(at)
    assert not at.title and len(at.error) == 1
    assert str(path) in at.error[0].value and cause in at.error[0].value, at.error[0].value
    if kind == "huge":
        assert hits == []  # refused on its size, never parsed


@pytest.fixture()
def damaged(app_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_env: dict[str, str]) -> dict[str, str]:
    """A copy of the dataset whose first clip's onset frame is garbage and whose second clip's
    apex frame is an empty file; the dashboard opens it. Returns clip id → the damaged file."""
    root = Path(shutil.copytree(app_data, tmp_path / "DAMAGED"))
    truth = json.loads((root / "ground_truth.json").read_text())
    broken = {}
    for clip, role, content in ((truth["clips"][0], "onset", b"not a jpeg"), (truth["clips"][1], "apex", b"")):
        frame = next((root / clip["subject"] / clip["clip"]).glob(f"*{clip[role]}.jpg"))
        frame.write_bytes(content)
        broken[clip["clip"]] = frame.name
    monkeypatch.setenv("SAMMFLOW_DATA", str(root))
    monkeypatch.setenv("SAMMFLOW_ANNOTATIONS", str(root / "samm.csv"))
    return broken


@pytest.mark.parametrize("page", ["pages/flow.py", "pages/grid.py", "pages/gifs.py"], ids=["flow", "grid", "gifs"])
def test_frames_that_fail_name_the_clip_and_file_and_the_rest_still_shows(damaged: dict[str, str], page: str) -> None:
    clips = clip_ids(Path(os.environ["SAMMFLOW_DATA"]))
    at = open_page(page, {"gif_clips": clips} if page == "pages/gifs.py" else None)
    assert_no_traceback(at)
    errors = [e.value for e in at.error]
    assert errors and all(e.split(": ", 1)[0] in damaged for e in errors), errors  # each names its clip first
    for clip, name in damaged.items():
        message = next(e for e in errors if e.startswith(f"{clip}: "))
        assert name in message and ("not a decodable image" in message or "not a readable image" in message), message
    assert len(at.image) >= 2  # the two intact clips still show


def test_the_alignment_page_of_a_damaged_clip_says_which_frame(damaged: dict[str, str]) -> None:
    clip, name = next(iter(damaged.items()))
    at = open_page("pages/alignment.py", {"clip": clip})
    assert_no_traceback(at)
    assert len(at.error) == 1 and at.error[0].value.startswith(f"{clip}: ") and name in at.error[0].value


def test_an_unexpected_error_in_a_page_is_a_message_not_a_traceback(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(dataset):
        raise RuntimeError("summary exploded")

    monkeypatch.setattr(ui, "summary", broken)
    at = open_page()
    assert not at.exception
    assert len(at.error) == 1 and "Overview" in at.error[0].value and "RuntimeError: summary exploded" in at.error[0].value
    assert "server log" in at.error[0].value


# ---------------------------------------------------------------- bounded caches, no uploads


def _streamlit_sources() -> list[Path]:
    return [APP, REPO / "sammflow" / "ui.py", *sorted((REPO / "pages").glob("*.py"))]


def test_every_streamlit_cache_has_max_entries() -> None:
    caches = []
    for path in _streamlit_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(target, ast.Attribute) and target.attr in ("cache_data", "cache_resource"):
                    keywords = {k.arg for k in deco.keywords} if isinstance(deco, ast.Call) else set()
                    caches.append((f"{path.name}:{node.name}", "max_entries" in keywords))
    assert len(caches) >= 8, caches
    assert [name for name, bounded in caches if not bounded] == []


def test_the_dashboard_has_no_upload_widget() -> None:
    for path in _streamlit_sources():
        assert "file_uploader" not in path.read_text(), path
    assert "no upload widget" in ui.__doc__
