"""Batch jobs that write files: normalized crops, flow maps + manifest, GIFs.

Every job goes clip by clip: a clip that fails becomes a manifest row with its status and
cause, and the others still run. Nothing is lost or mixed up:

* every file is written atomically (a hidden temporary file in the same folder, then a
  rename), so an interrupted run never leaves a half-written PNG, GIF, crop or manifest;
  stale temporary files of a killed run are removed when the next run starts;
* ``params.json`` (every parameter, its hash, the inputs, package versions) is written when
  a job *starts*, and ``manifest.csv`` (one row per annotated clip) after every clip, clips
  not done yet marked ``pending``: whatever is in the folder is attributable at any moment;
* a re-run with the same parameters resumes: clips whose row is ``ok`` and whose outputs
  exist are kept; ``force=True`` recomputes them. Outputs made with other parameters (or
  from another input folder) are never mixed in: the job refuses, unless ``force=True``,
  which first removes the old outputs;
* nothing is written outside the output folder, which may be neither inside the dataset
  nor contain it, nor a non-empty folder that sammflow did not make; one job at a time
  writes to a folder (a lock);
* ``sammflow.log`` in the output folder records what needs attention (failures, with the
  full traceback of unexpected errors, interruptions, resumed and replaced outputs).
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import errno
import io
import json
import multiprocessing
import os
import re
import signal
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import sammflow
from sammflow.animate import encode_gif, gif_frame_numbers
from sammflow.annotations import Annotations, ClipAnnotation, RejectedRow
from sammflow.dataset import ClipFrames, Dataset, FrameError, InputError, read_grey, safe_path
from sammflow.detect import FaceBox
from sammflow.params import GifParams, PipelineParams
from sammflow.pipeline import ClipError, NormalizedClip, clip_flow, find_apex_face, flow_from_crops, normalize_clip

#: Columns of ``manifest.csv``, one row per annotated clip.
MANIFEST_COLUMNS = [
    "subject", "clip", "onset", "apex", "offset", "action_units", "emotion", "objective_class",
    "x1", "y1", "x2", "y2", "face_prob", "face_frame", "match_score_min", "residual_max", "align_trusted",
    "flagged_frames", "frames", "output", "status", "error", "warnings",
]
#: Manifest statuses: done, failed (``error`` says why), rejected annotation row, not done yet
#: (the run is going on, or was interrupted: re-run to resume).
STATUSES = ("ok", "failed", "invalid_annotation", "pending")
MANIFEST_FILE = "manifest.csv"
PARAMS_FILE = "params.json"
LOG_FILE = "sammflow.log"
#: Written at the root of a normalized-crops folder, so later commands recognise it.
NORMALIZED_MARKER = PARAMS_FILE
ALIGNMENT_FILE = "alignment.csv"
ALIGNMENT_COLUMNS = ["frame", "dx", "dy", "score", "residual", "angle", "scale"]
PACKAGES = ("numpy", "opencv-python-headless", "facenet-pytorch", "torch", "torchvision", "scikit-image", "imageio", "pillow")
#: ``write_atomic``'s temporary files: ``.<name>.<8 random chars>.tmp`` beside the target.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
#: Write errors after which no further clip can succeed: the job stops instead of failing every clip.
_FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}

Progress = Callable[[int, int, str], None]
#: ``on_row(done, total, row)``: called with each clip's manifest row as it is finished.
RowCallback = Callable[[int, int, dict[str, Any]], None]

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, outputs get the user's usual mode


@dataclass
class JobReport:
    """What a batch job did: one manifest row per annotated clip.

    ``resumed`` counts the clips kept from an earlier run with the same parameters, ``replaced``
    the files of an earlier run with other parameters removed (``force``), ``unexpected`` the
    clips that failed on an unexpected error (a bug: its traceback is in ``log``, the job's
    ``sammflow.log``, set if anything was written to it).
    """

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    resumed: int = 0
    log: Path | None = None
    replaced: int = 0
    unexpected: int = 0

    @property
    def ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.rows)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]

    def summary(self) -> str:
        text = f"{self.ok} of {len(self.rows)} clips ok, {len(self.failed)} failed → {self.out_dir}"
        if self.resumed:
            text += f" ({self.resumed} already done by an earlier run, kept)"
        if self.replaced:
            text += f" (replaced {self.replaced} files made with other parameters)"
        return text


# ---------------------------------------------------------------- files


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ""
    try:  # mkstemp inside: a Ctrl-C right after it must not leave the temporary file behind
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete ``write_atomic`` temporary files under ``folder`` (left by a killed run)."""
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


def encode_image(image: np.ndarray, suffix: str = ".png") -> bytes:
    ok, buffer = cv2.imencode(suffix, image)
    if not ok:
        raise ValueError(f"cannot encode a {image.dtype} {image.shape} image as {suffix}")
    return buffer.tobytes()


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue().encode())


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``manifest.csv`` (an empty list if there is none)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return []


def package_versions() -> dict[str, str]:
    versions = {"sammflow": sammflow.__version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_params(out_dir: Path, kind: str, params: PipelineParams | None, sources: dict[str, str], extra: dict[str, Any] | None = None,
                 *, created: str | None = None, running: bool = False) -> None:
    """``params.json``: every parameter, its hash, the inputs, package versions and the time.

    ``created`` is when the folder's outputs were first started (default: now); ``finished``
    is ``null`` while a job is ``running`` (written when it starts) and the time it ended after.
    """
    content: dict[str, Any] = {
        "kind": kind,
        "params": params.to_dict() if params else None,
        "params_hash": params.hash if params else None,
        **sources,
        **(extra or {}),
        "versions": package_versions(),
        "created": created or _now(),
        "finished": None if running else _now(),
    }
    write_atomic(Path(out_dir) / PARAMS_FILE, (json.dumps(content, indent=2) + "\n").encode())


def check_output_dir(out_dir: Path, dataset_root: Path) -> None:
    """Refuse an output folder inside the dataset (the dataset is never written to), one that
    contains the dataset, and a file. Raises ``InputError`` (a ``ValueError``)."""
    out = Path(out_dir).expanduser().resolve()
    root = Path(dataset_root).expanduser().resolve()
    if out == root or root in out.parents:
        raise InputError(f"{out_dir}: output folder is inside the dataset folder {dataset_root}; choose a folder outside it")
    if out in root.parents:
        raise InputError(f"{out_dir}: output folder contains the dataset folder {dataset_root}; choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out_dir}: is a file, expected an output folder")


def flow_map_name(clip: ClipAnnotation | RejectedRow) -> str:
    """The original scripts' file name, ``sub{SUBJECT}_{CLIP}.png``."""
    return f"sub{clip.subject}_{clip.clip}.png"


def gif_name(clip: ClipAnnotation | RejectedRow) -> str:
    return f"sub{clip.subject}_{clip.clip}.gif"


# ---------------------------------------------------------------- manifest rows


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _row(clip: ClipAnnotation | RejectedRow, status: str, error: str = "") -> dict[str, Any]:
    if isinstance(clip, RejectedRow):
        error = f"{clip.clip or '?'} (annotation row {clip.row}): {error}"
        values = clip.values
        base = {k: values.get(k, "") for k in ("onset", "apex", "offset", "action_units", "emotion", "objective_class")}
    else:
        base = {k: getattr(clip, k) for k in ("onset", "apex", "offset", "action_units", "emotion", "objective_class")}
    return {"subject": clip.subject, "clip": clip.clip, **base, "status": status, "error": _one_line(error)}


def _box_fields(box: FaceBox) -> dict[str, Any]:
    return {"x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2, "face_prob": round(box.prob, 4), "face_frame": box.frame}


def _alignment_fields(normalized: NormalizedClip, params: PipelineParams, warnings: list[str]) -> dict[str, Any]:
    """Manifest columns of a clip's alignment: its box, worst frame, and whether it is trusted."""
    alignment = normalized.alignment
    flagged = alignment.flagged(params.align)
    return {
        **_box_fields(alignment.box),
        "match_score_min": round(alignment.min_score, 4),
        "residual_max": round(alignment.max_residual, 4),
        "align_trusted": "yes" if len(flagged) == 0 else "no",
        "flagged_frames": " ".join(str(int(n)) for n in flagged),
        "frames": len(alignment.frames),
        "warnings": _one_line(" | ".join([*warnings, *normalized.warnings])),
    }


def _annotated_in_order(annotations: Annotations) -> list[ClipAnnotation | RejectedRow]:
    return sorted([*annotations.clips, *annotations.rejected], key=lambda c: c.row)


def _preflight(dataset: Dataset, clip: ClipAnnotation, needed: tuple[str, ...]) -> ClipFrames:
    """The clip's frames, or ``ClipError`` if its folder or a needed frame is missing."""
    frames = dataset.clips_on_disk.get(clip.clip)
    if frames is None:
        issues = [*dataset.issues_for(clip.clip), *dataset.issues_for(clip.subject)]
        unreadable = [i.message.split(": ", 1)[1] for i in issues if i.kind == "unreadable"]  # "<folder>: cannot read ..."
        if unreadable:
            raise ClipError(f"{clip.clip}: {unreadable[0]}")
        raise ClipError(f"{clip.clip}: no folder {clip.subject}/{clip.clip} under {dataset.root}")
    missing = [f"{name} frame {getattr(clip, name)}" for name in needed if getattr(clip, name) not in frames.frames]
    if missing:
        raise ClipError(f"{clip.clip}: {', '.join(missing)} not on disk in {frames.folder}")
    return frames


# ---------------------------------------------------------------- output folders


def _plain_name(name: str) -> bool:
    """A manifest value usable as one path component (a hand-edited manifest must not lead out)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\x00" not in name


def _clip_files(kind: str, out: Path, subject: str, clip: str) -> list[Path]:
    """The files a job of ``kind`` writes for one clip that exist in ``out``."""
    if not (_plain_name(subject) and _plain_name(clip)):
        return []
    if kind == "normalized":
        folder = out / subject / clip
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix == ".png" or p.name == ALIGNMENT_FILE))
    path = out / "flows" / f"sub{subject}_{clip}.png" if kind == "flows" else out / f"sub{subject}_{clip}.gif"
    return [path] if path.is_file() else []


def _outputs_present(kind: str, out: Path, row: dict[str, Any]) -> bool:
    """Whether the files a manifest row lists as its output are all in ``out``."""
    output = str(row.get("output") or "")
    try:
        path = safe_path(out, output)
    except InputError:
        return False
    if not output or path == out.resolve():
        return False
    if kind == "normalized":
        try:
            expected = int(row.get("frames") or -1)
        except ValueError:
            return False
        return (path / ALIGNMENT_FILE).is_file() and sum(1 for _ in path.glob("*.png")) == expected
    return path.is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_our_params(content: Any) -> bool:
    return isinstance(content, dict) and "kind" in content and "params_hash" in content


def _is_our_manifest(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip() == ",".join(MANIFEST_COLUMNS)
    except OSError:
        return False


def existing_output(folder: Path, kind: str, *, label: str | None = None) -> dict[str, Any] | None:
    """What sammflow output ``folder`` already holds, checked before a ``kind`` job writes there.

    Returns
    -------
    dict or None
        Its ``params.json`` content; ``{}`` when only our manifest is there; ``None`` when
        the folder holds nothing (or does not exist).

    Raises
    ------
    InputError
        A non-empty folder sammflow did not make, or another command's output. Messages
        name the folder as ``label`` (default: its path).
    """
    label = label or str(folder)
    if not folder.is_dir():
        return None
    params_path = folder / PARAMS_FILE
    content = _read_json(params_path) if params_path.exists() else None
    if not (_is_our_params(content) or _is_our_manifest(folder / MANIFEST_FILE)):
        others = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name != LOG_FILE)
        if others:
            raise InputError(f"{label}: folder is not empty ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) "
                             f"and was not made by sammflow; choose a new or empty output folder")
        return None
    if not _is_our_params(content):
        return {}
    if content["kind"] != kind:
        raise InputError(f"{label}: holds a '{content['kind']}' output; this job writes '{kind}': choose another output folder")
    return content


def _input_of(content: dict[str, Any]) -> str:
    return str(content.get("normalized") or content.get("dataset") or "")


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return a == b


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What makes ``old`` (a params.json) and ``new`` describe different outputs, in words."""
    found = []
    if old.get("params_hash") != new.get("params_hash") or old.get("gif") != new.get("gif"):
        a = _flatten({"params": old.get("params") or {}, "gif": old.get("gif") or {}})
        b = _flatten({"params": new.get("params") or {}, "gif": new.get("gif") or {}})
        changed = [f"{k.removeprefix('params.')} {a.get(k, '-')} → {b.get(k, '-')}"
                   for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        found.append(f"made with other parameters ({', '.join(changed[:4]) or 'hash ' + str(old.get('params_hash'))}"
                     + (f", +{len(changed) - 4} more" if len(changed) > 4 else "") + ")")
    if not _same_path(_input_of(old), _input_of(new)):
        found.append(f"made from {_input_of(old)}, not {_input_of(new)}")
    return found


class _JobLog:
    """``OUT/sammflow.log``, appended to only when something needs attention; each run's
    first entry is preceded by a header naming the run."""

    def __init__(self, path: Path, header: str) -> None:
        self.path, self.header, self.used = path, header, False

    def write(self, text: str) -> None:
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                if not self.used:
                    fh.write(f"\n=== {stamp} {self.header}\n")
                fh.write(f"{stamp} {text.rstrip()}\n")
            self.used = True
        except OSError:
            pass  # the log must never be the reason a run fails


class _Job:
    """One batch job's output folder: checked, locked, resumed or replaced, kept consistent.

    ``open`` validates and prepares the folder and writes the initial manifest (every clip to
    do ``pending``) and params.json; ``record`` rewrites the manifest after each clip;
    ``close`` writes the final manifest and marks params.json finished.
    """

    def __init__(self, out_dir: str | Path, dataset: Dataset, *, kind: str, params: PipelineParams, sources: dict[str, str],
                 extra: dict[str, Any] | None = None, force: bool = False) -> None:
        self.out = Path(out_dir).expanduser()
        self.dataset, self.kind, self.params, self.sources, self.extra, self.force = dataset, kind, params, sources, extra or {}, force
        self.rows: list[dict[str, Any]] = []
        self.todo: list[tuple[int, ClipAnnotation]] = []
        self.resumed = 0
        self.replaced = 0
        self.unexpected = 0
        self.created: str | None = None
        self._lock_fd: int | None = None
        self.log = _JobLog(self.out / LOG_FILE, f"{kind} job (sammflow {sammflow.__version__}): input {_input_of(sources)}, "
                                                f"params hash {params.hash}, pid {os.getpid()}")

    # -- opening

    def open(self, items: Sequence[ClipAnnotation | RejectedRow], *, keep_others: bool = False) -> None:
        """Prepare the folder for ``items`` (annotation order). ``keep_others``: previous rows of
        clips not in ``items`` (a GIF subset) stay in the manifest if their outputs are there."""
        check_output_dir(self.out, self.dataset.root)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{self.out}: cannot create the output folder ({exc.strerror or exc})") from exc
        self._lock()
        try:
            previous = self._previous()
            stale = remove_stale_temp_files(self.out)
            if stale:
                self.log.write(f"removed {len(stale)} temporary file(s) left by an interrupted run")
            self._plan(items, previous, keep_others)
            try:
                self._write_manifest()  # before params.json: a row is never attributed to parameters that did not make it
                write_params(self.out, self.kind, self.params, self.sources, self.extra, created=self.created, running=True)
            except PermissionError as exc:
                raise InputError(f"{self.out}: cannot write to the output folder ({exc.strerror or exc})") from exc
        except BaseException:
            self._unlock()
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock, one run at a time is up to the user
            return
        try:
            fd = os.open(self.out, os.O_RDONLY)
        except OSError as exc:
            raise InputError(f"{self.out}: cannot open the output folder ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(f"{self.out}: another sammflow run is writing to this folder; "
                             f"wait for it to finish or choose another folder") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    def _previous(self) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
        """The folder's params.json and manifest rows; refuses folders that are not ours."""
        content = existing_output(self.out, self.kind)
        if content is None:
            return None, []
        manifest_path = self.out / MANIFEST_FILE
        return (content or None), read_manifest(manifest_path) if manifest_path.exists() else []

    def _plan(self, items: Sequence[ClipAnnotation | RejectedRow], previous: tuple[dict[str, Any] | None, list[dict[str, str]]],
              keep_others: bool) -> None:
        old_params, old_rows = previous
        new = {"params": self.params.to_dict(), "params_hash": self.params.hash, **self.sources, **self.extra}
        made = [r for r in old_rows if r.get("status") == "ok"]
        if old_params is None:
            differences = ["has outputs but no params.json, so their parameters are unknown"] if made else []
        else:
            differences = _differences(old_params, new)
        if differences and made and not self.force:  # nothing finished there (say, a typo'd option): nothing to protect
            raise InputError(f"{self.out}: {'; '.join(differences)}; use a new output folder, or --force to replace its outputs")
        carried: dict[str, dict[str, str]] = {}
        if differences:
            self._remove_old_outputs(old_rows, items, differences)
        else:
            self.created = (old_params or {}).get("created")
            carried = {r["clip"]: r for r in made}
        selected = {item.clip for item in items}
        order = _annotated_in_order(self.dataset.annotations) if keep_others else list(items)
        for item in order:
            if item.clip not in selected:  # a clip outside a GIF subset: kept if an earlier run made it
                old = carried.get(item.clip)
                if isinstance(item, ClipAnnotation) and old and self._resumable(item, old):
                    self.rows.append(self._carry(item, old))
                continue
            if isinstance(item, RejectedRow):
                self.rows.append(_row(item, "invalid_annotation", item.cause))
            elif not self.force and item.clip in carried and self._resumable(item, carried[item.clip]):
                self.rows.append(self._carry(item, carried.pop(item.clip)))
                self.resumed += 1
            else:
                self.todo.append((len(self.rows), item))
                self.rows.append(_row(item, "pending"))
        if self.resumed:
            self.log.write(f"resumed: {self.resumed} clip(s) done by an earlier run with the same parameters kept, {len(self.todo)} to do")

    def _resumable(self, clip: ClipAnnotation, old: dict[str, str]) -> bool:
        same_annotation = old.get("subject") == clip.subject and all(
            old.get(k) == str(getattr(clip, k)) for k in ("onset", "apex", "offset"))
        return same_annotation and _outputs_present(self.kind, self.out, old)

    @staticmethod
    def _carry(clip: ClipAnnotation, old: dict[str, str]) -> dict[str, Any]:
        # descriptive columns follow the (possibly edited) annotation; the rest describes the outputs
        return {**old, **{k: getattr(clip, k) for k in ("action_units", "emotion", "objective_class")}}

    def _remove_old_outputs(self, old_rows: list[dict[str, str]], items: Sequence[ClipAnnotation | RejectedRow], why: list[str]) -> None:
        """``force`` with other parameters: the outputs of the earlier run go before any new one is
        written, so the folder never holds maps of two parameter sets."""
        names = {(r.get("subject", ""), r.get("clip", "")) for r in old_rows} | {(i.subject, i.clip) for i in items}
        removed = 0
        for subject, clip in sorted(names):
            for path in _clip_files(self.kind, self.out, subject, clip):
                path.unlink(missing_ok=True)
                removed += 1
            folder = self.out / subject / clip if self.kind == "normalized" and _plain_name(subject) and _plain_name(clip) else None
            for empty in (folder, folder.parent if folder else None):
                if empty is not None and empty.is_dir() and not any(empty.iterdir()):
                    empty.rmdir()
        self.replaced = removed
        how = "--force" if self.force else "nothing was finished there"
        self.log.write(f"replacing ({how}): {'; '.join(why)}; removed {removed} output file(s) of the earlier run")

    # -- during the run

    def record(self, index: int, row: dict[str, Any], exc: BaseException | None = None) -> None:
        """Set one clip's row and rewrite the manifest; log a failure (with the traceback of an
        unexpected one)."""
        if row["status"] == "failed":
            clip = row["clip"]
            left = _clip_files(self.kind, self.out, str(row["subject"]), str(clip))
            if left:
                where = left[0].relative_to(self.out)
                row["error"] += f" (older files of this clip, made with the same parameters, are still there: {where})"
            detail = "".join(traceback.format_exception(exc)) if exc is not None and not isinstance(exc, ClipError) else ""
            self.unexpected += bool(detail)
            self.log.write(f"failed: {row['error']}" + (f"\n{detail}" if detail else ""))
        self.rows[index] = row
        self._write_manifest()

    def _write_manifest(self) -> None:
        try:
            write_csv(self.out / MANIFEST_FILE, self.rows, MANIFEST_COLUMNS)
        except OSError as exc:
            if exc.errno in _FATAL_WRITE_ERRORS:
                raise InputError(f"{self.out}: cannot write the manifest ({exc.strerror})") from exc
            raise

    # -- closing

    def close(self, interrupted: BaseException | None = None) -> JobReport:
        try:
            if interrupted is None:
                self._write_manifest()
                write_params(self.out, self.kind, self.params, self.sources, self.extra, created=self.created)
                failed = sum(r["status"] != "ok" for r in self.rows)
                if failed and self.log.used:
                    self.log.write(f"finished: {len(self.rows) - failed} of {len(self.rows)} clips ok, {failed} failed")
            else:
                pending = sum(r["status"] == "pending" for r in self.rows)
                if isinstance(interrupted, KeyboardInterrupt):
                    what = f"by {interrupted}" if str(interrupted) else "by SIGINT (Ctrl-C)"
                else:
                    what = f"by {type(interrupted).__name__}: {_one_line(str(interrupted))}"
                expected = isinstance(interrupted, (KeyboardInterrupt, InputError))
                detail = "" if expected else "\n" + "".join(traceback.format_exception(interrupted))
                self.log.write(f"stopped {what}: {pending} clip(s) left pending; re-run to resume{detail}")
                try:
                    self._write_manifest()
                except Exception:  # noqa: BLE001 - the manifest on disk is from the last finished clip: still consistent
                    pass
        finally:
            self._unlock()
        return JobReport(self.out, self.rows, self.resumed, self.log.path if self.log.used else None, self.replaced, self.unexpected)


def default_workers() -> int:
    """Worker processes for batch jobs: one per core."""
    return max(1, os.cpu_count() or 1)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe
    # Ctrl-C reaches the whole process group: the main process stops the batch; a worker
    # finishes its clip (atomic writes) instead of dying with a traceback on the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool kept for the life of this process (the app, a notebook), so only the
    first batch pays for starting the workers. Spawned, not forked: safe after torch's threads."""
    pool = _POOLS.get(workers)
    if pool is None or getattr(pool, "_broken", False):
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
        # Start every worker now (one per task while none is idle yet), while this process imports
        # torch for detection, and with Ctrl-C ignored: a child started that way ignores it from
        # its first instruction, so a Ctrl-C during its start-up prints no traceback either.
        with _sigint_ignored():
            for _ in range(workers):
                pool.submit(int)
        _POOLS[workers] = pool
    return pool


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to do, the worker initializer still ignores it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def shutdown_pools() -> None:
    """Stop the kept worker processes (also done at exit)."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(cancel_futures=True)


atexit.register(shutdown_pools)


def _run_clips(
    job: _Job,
    work: Callable[..., dict[str, Any]],
    args: tuple[Any, ...],
    *,
    params: PipelineParams,
    progress: Progress | None,
    detector: Any = None,
    detect: bool = True,
    workers: int = 1,
    blocked: dict[str, str] | None = None,
    on_row: RowCallback | None = None,
) -> JobReport:
    """Run ``work(clip, frames, box, warnings, *args)`` for every clip ``job`` has to do.

    Face boxes are found here, in this process (torch stays out of the workers); the rest of
    each clip runs in ``workers`` processes (``work`` must be a module-level function). A
    ``ClipError`` or any unexpected exception becomes the clip's manifest row (the traceback
    goes to the log) and the batch goes on. ``blocked`` maps clips that must not run to why.
    """
    dataset = job.dataset
    total, done = len(job.rows), len(job.rows) - len(job.todo)
    if progress:
        progress(done, total, f"{job.resumed} already done" if job.resumed else "")

    def finish(index: int, row: dict[str, Any], exc: BaseException | None = None) -> None:
        nonlocal done
        job.record(index, row, exc)
        done += 1
        if progress:
            progress(done, total, str(row["clip"]))
        if on_row:
            on_row(done, total, job.rows[index])

    def failed(index: int, clip: ClipAnnotation, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno in _FATAL_WRITE_ERRORS:  # a full disk: no later clip can succeed either
            raise InputError(f"{job.out}: cannot write outputs ({exc.strerror}); finished clips are kept, re-run to resume") from exc
        finish(index, _row(clip, "failed", _cause(clip, exc, job)), exc)

    def collect(block: bool) -> None:
        """Record finished clips: all of them (``block``), or those done by now, waiting only
        while the workers have ``2 × workers`` clips queued (detection need not run further ahead)."""
        while pending:
            if block or len(pending) >= 2 * workers:
                done_now, _ = wait(pending, return_when=FIRST_COMPLETED)
            else:
                done_now = {f for f in pending if f.done()}
                if not done_now:
                    return
            for future in done_now:
                index, clip = pending.pop(future)
                try:
                    row = {**_row(clip, "ok"), **future.result()}
                except Exception as exc:  # noqa: BLE001
                    failed(index, clip, exc)
                else:
                    finish(index, row)
            if not block and len(pending) < 2 * workers:
                return

    pool = _pool(workers) if workers > 1 and len(job.todo) > 1 else None
    pending: dict[Future[dict[str, Any]], tuple[int, ClipAnnotation]] = {}
    try:
        if detect and detector is None and job.todo:
            from sammflow.detect import load_detector

            try:
                detector = load_detector(params.detect.device, params.detect.min_face)
            except RuntimeError as exc:  # CUDA asked for but missing: the same for every clip
                raise InputError(str(exc)) from exc
        for index, clip in job.todo:
            try:
                if blocked and clip.clip in blocked:
                    raise ClipError(f"{clip.clip}: {blocked[clip.clip]}")
                frames = _preflight(dataset, clip, ("onset", "apex"))
                box, warnings = find_apex_face(clip, frames, params=params.detect, detector=detector) if detect else (None, [])
                if pool is None:
                    finish(index, {**_row(clip, "ok"), **work(clip, frames, box, warnings, *args)})
                else:
                    pending[pool.submit(work, clip, frames, box, warnings, *args)] = (index, clip)
            except Exception as exc:  # noqa: BLE001 - one clip's failure must not stop the batch
                failed(index, clip, exc)
            collect(block=False)
        collect(block=True)
    except BaseException as exc:
        for future, (index, clip) in pending.items():
            future.cancel()  # interrupted: do not leave queued clips running
            if future.done() and not future.cancelled() and future.exception() is None and job.rows[index]["status"] == "pending":
                job.rows[index] = {**_row(clip, "ok"), **future.result()}  # finished before the interrupt: keep it
        job.close(interrupted=exc)
        raise
    return job.close()


def _cause(clip: ClipAnnotation, exc: Exception, job: _Job) -> str:
    """A failure's message: ``ClipError`` texts name their clip; anything else is unexpected."""
    if isinstance(exc, ClipError):
        return str(exc)
    if isinstance(exc, BrokenProcessPool):
        return f"{clip.clip}: the worker process died (out of memory or killed); re-run to retry"
    return f"{clip.clip}: unexpected {type(exc).__name__}: {exc} (traceback in {job.log.path})"


# ---------------------------------------------------------------- per-clip work (runs in worker processes)


def _flow_work(clip: ClipAnnotation, frames: ClipFrames, box: FaceBox, warnings: list[str], params: PipelineParams, out_dir: Path) -> dict[str, Any]:
    result = clip_flow(clip, frames, params=params, box=box)
    name = flow_map_name(clip)
    write_atomic(out_dir / "flows" / name, encode_image(result.flow_map))
    return {**_alignment_fields(result.normalized, params, warnings), "output": f"flows/{name}"}


def _normalize_work(clip: ClipAnnotation, frames: ClipFrames, box: FaceBox, warnings: list[str], params: PipelineParams, out_dir: Path) -> dict[str, Any]:
    normalized = normalize_clip(clip, frames, params=params, box=box)
    clip_dir = out_dir / clip.subject / clip.clip
    names = {f"{frames.frames[number].stem}.png": crop for number, crop in normalized.crops.items()}
    if clip_dir.is_dir():  # crops of frames no longer on disk (an earlier run, same parameters) would be counted as this clip's
        for old in clip_dir.glob("*.png"):
            if old.name not in names:
                old.unlink()
    for name, crop in names.items():
        write_atomic(clip_dir / name, encode_image(crop))
    write_csv(clip_dir / ALIGNMENT_FILE, normalized.alignment.to_records(), ALIGNMENT_COLUMNS)
    return {**_alignment_fields(normalized, params, warnings), "output": f"{clip.subject}/{clip.clip}"}


def _aligned_flow_work(clip: ClipAnnotation, frames: ClipFrames, box: None, warnings: list[str], params: PipelineParams, out_dir: Path) -> dict[str, Any]:
    try:
        onset, apex = read_grey(frames.path(clip.onset)), read_grey(frames.path(clip.apex))
        _, flow_map = flow_from_crops(onset, apex, params=params)
    except (FrameError, ValueError) as exc:
        raise ClipError(f"{clip.clip}: {exc}") from exc
    name = flow_map_name(clip)
    write_atomic(out_dir / "flows" / name, encode_image(flow_map))
    return {"output": f"flows/{name}", "frames": 2}


def _gif_work(clip: ClipAnnotation, frames: ClipFrames, box: FaceBox | None, warnings: list[str], params: PipelineParams, out_dir: Path,
              gif: GifParams) -> dict[str, Any]:
    numbers = gif_frame_numbers(frames.numbers, clip, params=gif)
    if box is None:  # a normalize output: the frames are aligned crops already
        try:
            crops = [read_grey(frames.path(n)) for n in numbers]
        except FrameError as exc:
            raise ClipError(f"{clip.clip}: {exc}") from exc
        extra: dict[str, Any] = {}
    else:
        normalized = normalize_clip(clip, frames, params=params, numbers=numbers, box=box)
        crops = [normalized.crops[n] for n in numbers]
        extra = _alignment_fields(normalized, params, warnings)
    name = gif_name(clip)
    try:
        write_atomic(out_dir / name, encode_gif(crops, params=gif))
    except ValueError as exc:
        raise ClipError(f"{clip.clip}: {exc}") from exc
    return {**extra, "frames": len(crops), "output": name}


# ---------------------------------------------------------------- jobs


def export_flows(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    params: PipelineParams = PipelineParams(),
    progress: Progress | None = None,
    detector: Any = None,
    workers: int = 1,
    force: bool = False,
    on_row: RowCallback | None = None,
) -> JobReport:
    """Raw frames → ``OUT/flows/sub{S}_{C}.png``, ``OUT/manifest.csv``, ``OUT/params.json``.

    Only the onset and apex frames of each clip are decoded and aligned. Resumes a folder made
    with the same parameters (see the module docstring); ``force`` recomputes every clip, and
    replaces the outputs of other parameters instead of refusing them.

    Raises
    ------
    InputError
        Unusable output folder (inside the dataset, not writable, not a sammflow folder, in use
        by another run, holding outputs of other parameters without ``force``), a full disk.
    """
    job = _Job(out_dir, dataset, kind="flows", params=params, force=force,
               sources={"dataset": str(dataset.root), "annotations": dataset.annotations.source})
    job.open(_annotated_in_order(dataset.annotations))
    return _run_clips(job, _flow_work, (params, job.out), params=params, progress=progress, detector=detector, workers=workers,
                      on_row=on_row)


def normalize_dataset(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    params: PipelineParams = PipelineParams(),
    progress: Progress | None = None,
    detector: Any = None,
    workers: int = 1,
    force: bool = False,
) -> JobReport:
    """Align every frame of every annotated clip; write crops in the input's layout.

    ``OUT/<subject>/<clip>/<frame file stem>.png`` (lossless), ``OUT/<subject>/<clip>/alignment.csv``
    (frame, dx, dy, score, residual, angle, scale), ``OUT/manifest.csv`` and ``OUT/params.json``.
    Resumes and ``force`` as ``export_flows``.
    """
    job = _Job(out_dir, dataset, kind="normalized", params=params, force=force,
               sources={"dataset": str(dataset.root), "annotations": dataset.annotations.source})
    job.open(_annotated_in_order(dataset.annotations))
    return _run_clips(job, _normalize_work, (params, job.out), params=params, progress=progress, detector=detector, workers=workers)


def is_normalized(root: str | Path) -> bool:
    """Whether ``root`` is a folder written by ``normalize_dataset``."""
    content = _read_json(Path(root) / NORMALIZED_MARKER)
    return isinstance(content, dict) and content.get("kind") == "normalized"


def normalized_params(root: str | Path) -> dict[str, Any]:
    """The ``params.json`` of a normalized-crops folder."""
    return json.loads((Path(root) / NORMALIZED_MARKER).read_text())


def _not_normalized(root: Path) -> dict[str, str]:
    """Clips a normalized folder's manifest does not mark ``ok``, and why (their crops, if any,
    are partial or from an interrupted run: never used)."""
    blocked = {}
    for row in read_manifest(root / MANIFEST_FILE):
        if row.get("status") == "pending":
            blocked[row["clip"]] = f"not normalized in {root} (that run was interrupted; re-run normalize to finish it)"
        elif row.get("status") != "ok":
            blocked[row["clip"]] = f"not normalized in {root} ({row.get('status')}: {row.get('error', '')})"
    return blocked


def flows_from_normalized(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    params: PipelineParams = PipelineParams(),
    progress: Progress | None = None,
    workers: int = 1,
    force: bool = False,
) -> JobReport:
    """Aligned crops (a ``normalize`` output) → flow maps, manifest and params.json.

    ``dataset`` is the normalized folder loaded as a dataset; the detection and alignment
    parameters recorded there are kept in this job's params.json. Clips the normalized
    folder's manifest does not mark ``ok`` fail with that reason.
    """
    recorded = normalized_params(dataset.root)
    params = PipelineParams.from_dict({**(recorded.get("params") or {}), "flow": params.flow.to_dict(), "encode": params.encode.to_dict()})
    job = _Job(out_dir, dataset, kind="flows", params=params, force=force,
               sources={"dataset": recorded.get("dataset", ""), "normalized": str(dataset.root), "annotations": dataset.annotations.source})
    job.open(_annotated_in_order(dataset.annotations))
    return _run_clips(job, _aligned_flow_work, (params, job.out), params=params, progress=progress, detect=False, workers=workers,
                      blocked=_not_normalized(dataset.root))


def export_gifs(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    clips: list[str] | None = None,
    params: PipelineParams = PipelineParams(),
    gif: GifParams = GifParams(),
    progress: Progress | None = None,
    detector: Any = None,
    workers: int = 1,
    force: bool = False,
) -> JobReport:
    """Onset→apex (or →offset) GIFs ``OUT/sub{S}_{C}.gif`` for the chosen clips (default: all).

    Works on raw frames (normalizing only the animated frames) or on a ``normalize`` output.
    GIFs of other clips made earlier into the same folder with the same parameters stay (and
    keep their manifest rows).
    """
    wanted = set(clips) if clips else None
    if wanted:
        unknown = wanted - set(dataset.annotations.by_clip) - {r.clip for r in dataset.annotations.rejected}
        if unknown:
            raise InputError(f"unknown clip(s): {', '.join(sorted(unknown))}")
    aligned = is_normalized(dataset.root)
    items = [c for c in _annotated_in_order(dataset.annotations) if wanted is None or c.clip in wanted]
    job = _Job(out_dir, dataset, kind="gifs", params=params, force=force,
               sources={"dataset": str(dataset.root), "annotations": dataset.annotations.source}, extra={"gif": gif.to_dict()})
    job.open(items, keep_others=True)
    return _run_clips(job, _gif_work, (params, job.out, gif), params=params, progress=progress, detector=detector,
                      detect=not aligned, workers=workers, blocked=_not_normalized(dataset.root) if aligned else None)
