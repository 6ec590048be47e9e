"""Helpers shared by the dashboard tests (plain functions; the fixtures are in app_fixtures.py)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from sammflow import access

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT = 120  # first detection imports torch (seconds on a 2-core machine)
#: How ``sammflow.access`` starts the message refusing a path outside the allowed roots.
OUTSIDE = "is outside the folders this dashboard may open"


def open_page(page: str | None = None, query: dict[str, str | list[str]] | None = None) -> AppTest:
    """Run app.py (optionally with URL query parameters), then switch to ``page``."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if query:
        at.query_params.update(query)
    at.run()
    if page:
        at.switch_page(page).run()
    return at


# ---------------------------------------------------------------- what a download button downloads


@dataclass(frozen=True)
class Download:
    """What a download button downloads: its data (a callable: a deferred button's own, run only
    when asked, as on a click), MIME type and file name."""

    data: Callable[[], Any]
    mime: str | None
    file_name: str | None

    def read(self) -> bytes:
        data = self.data()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def record_downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Download]:
    """Every download button the app draws from now on (``st.download_button`` and any
    container's), by its key, else its label (``download_of``); the latest run's wins.

    AppTest shows a button's label and key but not its data, so the data is caught on its way
    in, through Streamlit's public objects only: ``st.download_button`` is bound to the main
    container, whose class every column shares."""
    made: dict[str, Download] = {}
    main = st.download_button.__self__
    container = type(main)
    original = container.download_button

    def download_button(self: Any, label: str, data: Any, *args: Any, **kwargs: Any) -> Any:
        made[kwargs.get("key") or label] = Download(data if callable(data) else (lambda: data), kwargs.get("mime"),
                                                    kwargs.get("file_name"))
        return original(self, label, data, *args, **kwargs)

    monkeypatch.setattr(container, "download_button", download_button)
    monkeypatch.setattr(st, "download_button", functools.partial(download_button, main))
    return made


def download_of(button: Any, made: dict[str, Download]) -> Download:
    """What clicking ``button`` (an AppTest download button) downloads, from ``record_downloads``'s record."""
    return made[button.key or button.label]


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


sys.addaudithook(_audit)  # once per process: this module is imported once


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


def refused_export_folders(data: Path, allowed: Path, secret: Path) -> dict[str, str]:
    """Output folders the batch export must refuse (as typed) → a phrase of the reason.

    ``data`` is the open dataset, ``allowed`` the one allowed root (holding ``link`` →
    ``secret``, see the ``allowed`` fixture); the folders and files that make a case are
    created in ``allowed`` here.
    """
    refused = {
        str(secret / "out"): OUTSIDE,
        f"{allowed}/../SECRET/out": OUTSIDE,
        f"{allowed}/link/out": OUTSIDE,
        str(data / "maps"): "inside the dataset folder",
        str(Path(access.demo_root(access.demo_config())) / "maps"): "inside the dataset folder",  # the demo is a dataset too
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
    return refused


def write_video(frames: list[Path], path: Path, fps: float = 30.0) -> Path:
    """``frames`` (image files, in order) as a Motion-JPEG .avi at ``path``: a short video
    OpenCV's own writer makes without any codec library."""
    import cv2

    first = cv2.imread(str(frames[0]))
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    try:
        for frame in frames:
            writer.write(cv2.imread(str(frame)))
    finally:
        writer.release()
    return path
