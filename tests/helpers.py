"""Ground-truth builders and output-folder readers shared by the tests."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np

from sammflow.annotations import read_annotations
from sammflow.dataset import Dataset, load_dataset
from sammflow.detect import FaceBox

#: Where MTCNN finds the face in scikit-image's astronaut (512×512), rounded.
ASTRONAUT_FACE = (181, 62, 268, 172)


def place(image: np.ndarray, *, canvas: tuple[int, int], at: tuple[float, float], interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """``image`` translated by ``at`` = (x, y) px (sub-pixel allowed) into a canvas of (H, W),
    the rest filled by reflection so no artificial edge can attract a match."""
    matrix = np.float32([[1, 0, at[0]], [0, 1, at[1]]])
    return cv2.warpAffine(image, matrix, (canvas[1], canvas[0]), flags=interpolation, borderMode=cv2.BORDER_REFLECT_101)


def face_box(offset: tuple[int, int] = (0, 0)) -> FaceBox:
    x1, y1, x2, y2 = ASTRONAUT_FACE
    return FaceBox(x1 + offset[0], y1 + offset[1], x2 + offset[0], y2 + offset[1])


# ---------------------------------------------------------------- output folders


#: Written with every output but not part of it: compared separately.
BOOKKEEPING = {"params.json", "sammflow.log"}


def dataset(root: Path) -> Dataset:
    """The dataset at ``root`` with its own ``samm.csv``."""
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
    """``params.json`` without its times."""
    content = json.loads((out / "params.json").read_text())
    return {k: v for k, v in content.items() if k not in ("created", "finished")}


def run_cli(*args) -> tuple[int, str, str]:
    """``python -m sammflow ARGS`` in this process: exit code, stdout, stderr."""
    from sammflow.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()
