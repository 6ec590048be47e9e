"""The dashboard under use by others: what a link or a typed path can make it read, and what
bad input looks like to the user (issue 6, app side).

* Paths from widgets and URL query parameters are confined to the allowed roots
  (``SAMMFLOW_ROOTS`` + what the server was started with): an audit hook records every file
  the process opens or lists, and the tests assert nothing under a forbidden folder was.
  The path rules themselves (``sammflow.access``, no Streamlit) are tested directly in
  ``tests/test_access.py``; here they are tested through the pages and ``sammflow.ui``.
* Clip ids and frame numbers from a link only select among the dataset's own.
* Bad dataset folders, annotation files and frames are an ``st.error`` naming the path or
  clip and the cause; no traceback.
* Every Streamlit cache is bounded; there is no upload widget; only the Streamlit layer
  (``sammflow/ui.py``, ``app.py``, ``app_pages/``) imports Streamlit, and no one its private API.

The three-sessions-at-once load test is in ``tests/test_browser.py`` (it needs a server).
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from sammflow import access, tables, ui
from sammflow.annotations import read_annotations
from sammflow.dataset import InputError
from sammflow.params import GifParams, PipelineParams
from sammflow.pipeline import ClipError

from app_helpers import OUTSIDE, open_page, refused_export_folders, watching

pytest_plugins = ("app_fixtures",)  # the dashboard's fixtures, kept out of conftest.py
REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"

# ---------------------------------------------------------------- helpers


def assert_no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    shown = "\n".join(e.value for e in [*at.error, *at.warning])
    assert "Traceback" not in shown and 'File "' not in shown, shown


def clip_ids(root: Path) -> list[str]:
    return [c.clip for c in read_annotations(root / "samm.csv").clips]


def context(root: Path, annotations: Path | None = None) -> ui.Context:
    ref = access.DatasetRef(str(root), str(annotations or root / "samm.csv"))
    return ui.Context(ref, ui.open_dataset(ref), PipelineParams())


# ---------------------------------------------------------------- the rule


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_watch_sees_a_read_when_the_folder_is_allowed(allowed: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the same link works, and the audit hook records it, once the folder is allowed."""
    monkeypatch.setenv("SAMMFLOW_ROOTS", f"{allowed}{os.pathsep}{secret}")
    with watching(secret) as hits:
        at = open_page(None, {"source": "Folder", "data": str(secret), "ann": str(secret / "samm.csv")})
    assert not at.exception and not at.error and at.title[0].value == "Overview"
    assert any(h.startswith("open ") and h.endswith("samm.csv") for h in hits) and any("listdir" in h or "scandir" in h for h in hits)


@pytest.mark.slow
def test_an_existing_and_a_missing_outside_path_read_the_same(allowed: Path, secret: Path) -> None:
    """No existence oracle: outside the roots, the answer does not depend on what is there."""
    messages = []
    for name in ("SECRET", "NOTHING_HERE"):
        typed = str(secret.parent / name)
        at = open_page(None, {"source": "Folder", "data": typed})
        messages.append(at.error[0].value.replace(typed, "<path>"))
    assert messages[0] == messages[1]


# ---------------------------------------------------------------- clip ids and frames from a link


@pytest.mark.slow
@pytest.mark.parametrize(("page", "query", "key"), [
    ("app_pages/alignment.py", {"clip": "../../etc"}, "clip"),
    ("app_pages/alignment.py", {"clip": "999_9_9"}, "clip"),
    ("app_pages/alignment.py", {"a": "99999", "b": "-5"}, "a"),
    ("app_pages/flow.py", {"clip": "../../etc/passwd"}, "clip"),
    ("app_pages/gifs.py", {"gif_clips": ["../../etc", "999_9_9"]}, "gif_clips"),
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
    if page == "app_pages/alignment.py":
        at.slider(key="thr").set_value(20).run()
        assert not any(w.value.startswith("Ignored from the link") for w in at.warning)


@pytest.mark.slow
def test_the_compute_layer_refuses_clip_ids_and_frames_not_in_the_dataset(app_env: dict[str, str]) -> None:
    ctx = context(Path(app_env["SAMMFLOW_DATA"]))
    calls = {
        "crops": lambda c: ui.crops(ctx, c, [1]), "alignment": lambda c: ui.alignment(ctx, c), "flow": lambda c: ui.flow(ctx, c),
        "gif": lambda c: ui.gif(ctx, c, GifParams()), "mtcnn_boxes": lambda c: ui.mtcnn_boxes(ctx, c),
        "frame_grey": lambda c: ui.frame_grey(ctx, c, 1), "frame_number": lambda c: tables.frame_number(ctx.dataset, c, "onset"),
        "onset_apex": lambda c: ui.onset_apex(ctx, c),
    }
    for name, call in calls.items():
        for clip in ("../../etc", "999_9_9"):
            with pytest.raises(ClipError, match=f"^{clip.replace('.', '[.]')}: ") as caught:
                call(clip)
            assert "not a valid annotated clip" in str(caught.value), (name, caught.value)
    assert tables.caption(ctx.dataset, "../../etc") == "../../etc"
    clip = tables.ready_ids(ctx.dataset)[0]
    with pytest.raises(ClipError, match=f"^{clip}: .*frame 99999 not found"):
        ui.frame_grey(ctx, clip, 99999)


# ---------------------------------------------------------------- the export folder


@pytest.mark.slow
def test_the_dashboard_export_refuses_a_folder_the_rules_refuse(app_env: dict[str, str], allowed: Path, secret: Path) -> None:
    """``ui.export_flows`` checks the folder (``sammflow.access.export_folder``, tested in
    tests/test_access.py) before anything is written, read or listed there."""
    ctx = context(Path(app_env["SAMMFLOW_DATA"]))
    data = Path(app_env["SAMMFLOW_DATA"])
    refused = refused_export_folders(data, allowed, secret)
    with watching(secret, allowed / "link") as hits:
        for typed, cause in refused.items():
            with pytest.raises(InputError) as caught:
                ui.export_flows(ctx, typed)
            assert cause in str(caught.value) and typed in str(caught.value), (typed, str(caught.value))
    assert hits == [] and not (secret / "out").exists() and not (data / "maps").exists()
    assert not (allowed / "notes" / "flows").exists() and not (allowed / "notes" / "manifest.csv").exists()


@pytest.mark.slow
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


@pytest.mark.slow
def test_export_page_names_the_refused_folder(app_env: dict[str, str], allowed: Path, secret: Path) -> None:
    at = open_page("app_pages/export.py")
    typed = f"{allowed}/../SECRET/out"
    with watching(secret) as hits:
        at.text_input(key="out_dir").set_value(typed).run()  # the page looks at the folder before any click
    assert_no_traceback(at)
    assert len(at.error) == 1 and at.error[0].value.startswith(f"Output folder `{typed}` {OUTSIDE}")
    assert not [b for b in at.button if b.key in ("run_export", "export_restart", "export_replace", "export_new_folder")]
    assert hits == [] and not (secret / "out").exists() and not at.success


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
            fh.truncate(access.MAX_ANNOTATION_BYTES + 1)
    return path


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("page", ["app_pages/flow.py", "app_pages/grid.py", "app_pages/gifs.py"], ids=["flow", "grid", "gifs"])
def test_frames_that_fail_name_the_clip_and_file_and_the_rest_still_shows(damaged: dict[str, str], page: str) -> None:
    clips = clip_ids(Path(os.environ["SAMMFLOW_DATA"]))
    at = open_page(page, {"gif_clips": clips} if page == "app_pages/gifs.py" else None)
    assert_no_traceback(at)
    errors = [e.value for e in at.error]
    assert errors and all(e.split(": ", 1)[0] in damaged for e in errors), errors  # each names its clip first
    for clip, name in damaged.items():
        message = next(e for e in errors if e.startswith(f"{clip}: "))
        assert name in message and any(cause in message for cause in ("not a decodable image", "not a readable image", "empty file")), message
    assert len(at.image) >= 2  # the two intact clips still show


@pytest.mark.slow
def test_the_alignment_page_of_a_damaged_clip_says_which_frame(damaged: dict[str, str]) -> None:
    clip, name = next(iter(damaged.items()))
    at = open_page("app_pages/alignment.py", {"clip": clip})
    assert_no_traceback(at)
    assert len(at.error) == 1 and at.error[0].value.startswith(f"{clip}: ") and name in at.error[0].value


@pytest.mark.slow
def test_an_unexpected_error_in_a_page_is_a_message_not_a_traceback(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(dataset):
        raise RuntimeError("summary exploded")

    monkeypatch.setattr(tables, "summary", broken)  # the overview page calls tables.summary
    at = open_page()
    assert not at.exception
    assert len(at.error) == 1 and "Overview" in at.error[0].value and "RuntimeError: summary exploded" in at.error[0].value
    assert "server log" in at.error[0].value


# ---------------------------------------------------------------- bounded caches, no uploads, one Streamlit layer


def _streamlit_sources() -> list[Path]:
    return [APP, REPO / "sammflow" / "ui.py", *sorted((REPO / "app_pages").glob("*.py"))]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


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
    # the compute caches of the issue-9 layer (no detector cache: MTCNN is detect.load_detector's)
    assert {"ui.py:_load", "ui.py:_crops", "ui.py:_alignment", "ui.py:_grid", "ui.py:_flow_field", "ui.py:_gif"} <= {name for name, _ in caches}, caches
    assert len(caches) >= 6, caches
    assert [name for name, bounded in caches if not bounded] == []


def test_the_dashboard_has_no_upload_widget() -> None:
    sources = _streamlit_sources()
    assert len(sources) == 9  # app.py, ui.py and the seven pages
    for path in sources:
        assert "file_uploader" not in path.read_text(), path
    assert "no upload widget" in ui.__doc__
    # the rules of what a page user can reach live with the path checks (no Streamlit there)
    assert "what a page user can reach" in access.__doc__ and "no upload widget" in access.__doc__


def test_only_the_streamlit_layer_imports_streamlit() -> None:
    importers = {path.name for path in sorted((REPO / "sammflow").glob("*.py"))
                 if any(m == "streamlit" or m.startswith("streamlit.") for m in _imported_modules(path))}
    assert importers == {"ui.py"}
    for path in [APP, *sorted((REPO / "app_pages").glob("*.py"))]:
        assert "streamlit" in _imported_modules(path), path  # the pages are Streamlit scripts, of course


@pytest.mark.slow
def test_the_modules_the_pages_call_load_neither_streamlit_nor_torch() -> None:
    code = ("import sys, sammflow.access, sammflow.tables, sammflow.figures, sammflow.cache, sammflow.export\n"
            "print(sorted(m for m in ('streamlit', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


#: Streamlit's private API that st.navigation apps used to need (spelled in two parts so that
#: this file does not contain them).
PRIVATE = ("streamlit." + "runtime", "Pages" + "Manager", "st." + "runtime")


def test_no_private_streamlit_api_anywhere_in_the_repository() -> None:
    skip = {".git", ".venv", "test-artifacts", "__pycache__", "node_modules"}
    found = []
    checked = 0
    for path in REPO.rglob("*"):
        if any(part in skip for part in path.relative_to(REPO).parts) or not path.is_file():
            continue
        if path.suffix not in (".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".yml", ".yaml"):
            continue
        checked += 1
        text = path.read_text(errors="replace")
        found += [f"{path.relative_to(REPO)}: {name}" for name in PRIVATE if name in text]
        if path.suffix == ".py":
            # only public submodules may be imported (streamlit.testing.v1 for AppTest)
            found += [f"{path.relative_to(REPO)}: import {m}" for m in _imported_modules(path)
                      if m.startswith("streamlit.") and m not in ("streamlit.testing.v1", "streamlit.components.v1")]
    assert checked > 40 and found == []
    # the pages live in a folder st.navigation owns, not in pages/ (Streamlit's old multipage folder)
    assert not (REPO / "pages").exists() and len(list((REPO / "app_pages").glob("*.py"))) == 7


# ---------------------------------------------------------------- offline: nothing fetched from the internet


def test_the_tab_icon_is_a_local_image_drawn_by_the_repository() -> None:
    """Issue 10.18: ``page_icon=":material/…:"`` (or an emoji) makes the browser fetch the icon from
    a CDN, which fails offline. The icon is ``static/favicon.png``, drawn by ``static/make_favicon.py``.
    (tests/test_browser.py records every request the page makes and finds none leaving localhost.)"""
    source = APP.read_text()
    config = next(node for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "set_page_config")
    icon = next(k.value for k in config.keywords if k.arg == "page_icon")
    assert ast.unparse(icon) == "str(FAVICON)" and 'FAVICON = Path(__file__).resolve().parent / "static" / "favicon.png"' in source
    assert ":material/blur_on:" not in source
    favicon = REPO / "static" / "favicon.png"
    with Image.open(favicon) as image:
        assert image.format == "PNG" and image.size == (64, 64) and image.mode == "RGBA"
        shipped = np.asarray(image)
    drawn = runpy.run_path(str(REPO / "static" / "make_favicon.py"))["favicon"]()  # the script draws what ships
    assert np.array_equal(shipped, drawn)
    assert shipped[0, 0, 3] == 0 and shipped[32, 32, 3] == 255  # transparent corners, an opaque disc
