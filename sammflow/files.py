"""Files written atomically, and the small readers and encoders every writer shares.

Every file sammflow writes (maps, crops, GIFs, manifests, cache entries) goes through
``write_atomic``: a hidden temporary file in the same folder, then a rename, so a killed
process never leaves a half-written file; ``remove_stale_temp_files`` clears the temporary
files of a process killed between the two (only names carrying sammflow's marker,
``.sammflow-<name>.<8 random characters>.tmp``: a user's file is never taken for one).

Every text sammflow writes (CSV, logs) and prints goes through ``printable``: a path that is
not valid UTF-8 (a folder named in Latin-1 arrives as a ``str`` with lone surrogates) is
shown with its odd bytes as ``\\xNN`` instead of failing the write. Nothing here knows about
jobs or stages.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import sammflow
from sammflow.text import printable

#: Packages whose versions ``params.json`` records.
PACKAGES = ("numpy", "opencv-contrib-python-headless", "facenet-pytorch", "torch", "torchvision", "scikit-image", "imageio", "pillow")
#: The marker at the start of ``write_atomic``'s temporary files: only names carrying it are ever removed.
TEMP_PREFIX = ".sammflow-"
#: ``write_atomic``'s temporary files: ``.sammflow-<name>.<8 random chars>.tmp`` beside the target.
_TEMP_NAME = re.compile(r"^\.sammflow-.+\.[a-z0-9_]{8}\.tmp$")

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, outputs get the user's usual mode


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    Parameters
    ----------
    path : Path
        The target; its folder is created if missing.
    data : bytes
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ""
    try:  # mkstemp inside: a Ctrl-C right after it must not leave the temporary file behind
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of ``write_atomic``'s temporary files (it carries sammflow's marker)."""
    return bool(_TEMP_NAME.match(name))


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete ``write_atomic`` temporary files under ``folder`` (left by a killed run).

    Only names carrying sammflow's marker (``is_temp_name``) are removed; call it only on a
    folder sammflow made (``sammflow.outfolder`` checks that first).

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if _TEMP_NAME.match(name):
                path = Path(dirpath) / name
                try:
                    path.unlink()
                    removed.append(path)
                except OSError:
                    pass
    return removed


def append_text(path: Path, text: str) -> bool:
    """Append ``text`` (made ``printable``) to a UTF-8 text file; ``False`` if it cannot be written.

    For logs: writing one must never be the reason a run fails.
    """
    try:
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(printable(text))
        return True
    except (OSError, ValueError):
        return False


def encode_image(image: np.ndarray, suffix: str = ".png") -> bytes:
    """An image file's bytes (``cv2.imencode``: grey, or BGR colour).

    Raises
    ------
    ValueError
        If OpenCV cannot encode the array in that format.
    """
    ok, buffer = cv2.imencode(suffix, image)
    if not ok:
        raise ValueError(f"cannot encode a {image.dtype} {image.shape} image as {suffix}")
    return buffer.tobytes()


def csv_bytes(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> bytes:
    """UTF-8 CSV text of ``rows`` (values of other keys are left out), header first, ``\\n`` line ends;
    text that is not valid Unicode (a non-UTF-8 path) is written ``printable``."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return printable(text.getvalue()).encode("utf-8")


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """``csv_bytes`` written atomically."""
    write_atomic(path, csv_bytes(rows, columns))


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file written by ``write_csv`` (an empty list if there is none)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return []


def read_json(path: Path) -> Any:
    """A JSON file's content, or ``None`` if it is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def package_versions() -> dict[str, str]:
    """Versions of sammflow and the packages that shape its outputs."""
    versions = {"sammflow": sammflow.__version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
