"""Batch jobs that write files: normalized crops, flow maps + manifest, GIFs.

Every job goes clip by clip: a clip that fails becomes a manifest row with its status and
cause, and the others still run. Every file is written atomically (temporary file +
rename), so an interrupted run never leaves a half-written PNG, GIF or manifest.
``params.json`` records every parameter, its hash and the package versions.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
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
from sammflow.dataset import ClipFrames, Dataset, FrameError, read_grey
from sammflow.detect import FaceBox
from sammflow.params import GifParams, PipelineParams
from sammflow.pipeline import ClipError, NormalizedClip, clip_flow, flow_from_crops, normalize_clip

#: Columns of ``manifest.csv``, one row per annotated clip.
MANIFEST_COLUMNS = [
    "subject", "clip", "onset", "apex", "offset", "action_units", "emotion", "objective_class",
    "x1", "y1", "x2", "y2", "face_prob", "face_frame", "match_score_min", "residual_max", "align_trusted",
    "flagged_frames", "frames", "output", "status", "error", "warnings",
]
#: Written at the root of a normalized-crops folder, so later commands recognise it.
NORMALIZED_MARKER = "params.json"
ALIGNMENT_FILE = "alignment.csv"
ALIGNMENT_COLUMNS = ["frame", "dx", "dy", "score", "residual", "angle", "scale"]
PACKAGES = ("numpy", "opencv-python-headless", "facenet-pytorch", "torch", "torchvision", "scikit-image", "imageio", "pillow")

Progress = Callable[[int, int, str], None]

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, outputs get the user's usual mode


@dataclass
class JobReport:
    """What a batch job did: one manifest row per annotated clip."""

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.rows)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]

    def summary(self) -> str:
        return f"{self.ok} of {len(self.rows)} clips ok, {len(self.failed)} failed → {self.out_dir}"


# ---------------------------------------------------------------- files


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def package_versions() -> dict[str, str]:
    versions = {"sammflow": sammflow.__version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_params(out_dir: Path, kind: str, params: PipelineParams | None, sources: dict[str, str], extra: dict[str, Any] | None = None) -> None:
    """``params.json``: every parameter, its hash, the inputs, package versions and the time."""
    content: dict[str, Any] = {
        "kind": kind,
        "params": params.to_dict() if params else None,
        "params_hash": params.hash if params else None,
        **sources,
        **(extra or {}),
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_atomic(out_dir / "params.json", (json.dumps(content, indent=2) + "\n").encode())


def check_output_dir(out_dir: Path, dataset_root: Path) -> None:
    """Refuse an output folder inside the dataset (the dataset is never written to)."""
    out = out_dir.resolve()
    root = dataset_root.resolve()
    if out == root or root in out.parents:
        raise ValueError(f"{out_dir}: output folder is inside the dataset folder {dataset_root}; choose a folder outside it")


def flow_map_name(clip: ClipAnnotation | RejectedRow) -> str:
    """The original scripts' file name, ``sub{SUBJECT}_{CLIP}.png``."""
    return f"sub{clip.subject}_{clip.clip}.png"


# ---------------------------------------------------------------- manifest rows


def _row(clip: ClipAnnotation | RejectedRow, status: str, error: str = "") -> dict[str, Any]:
    if isinstance(clip, RejectedRow):
        values = clip.values
        base = {k: values.get(k, "") for k in ("onset", "apex", "offset", "action_units", "emotion", "objective_class")}
    else:
        base = {k: getattr(clip, k) for k in ("onset", "apex", "offset", "action_units", "emotion", "objective_class")}
    return {"subject": clip.subject, "clip": clip.clip, **base, "status": status, "error": error}


def _box_fields(box: FaceBox) -> dict[str, Any]:
    return {"x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2, "face_prob": round(box.prob, 4), "face_frame": box.frame}


def _alignment_fields(normalized: NormalizedClip, params: PipelineParams) -> dict[str, Any]:
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
        "warnings": " | ".join(normalized.warnings),
    }


def _annotated_in_order(annotations: Annotations) -> list[ClipAnnotation | RejectedRow]:
    return sorted([*annotations.clips, *annotations.rejected], key=lambda c: c.row)


def _preflight(dataset: Dataset, clip: ClipAnnotation, needed: tuple[str, ...]) -> ClipFrames:
    """The clip's frames, or ``ClipError`` if its folder or a needed frame is missing."""
    frames = dataset.clips_on_disk.get(clip.clip)
    if frames is None:
        raise ClipError(f"{clip.clip}: no folder {clip.subject}/{clip.clip} under {dataset.root}")
    missing = [f"{name} frame {getattr(clip, name)}" for name in needed if getattr(clip, name) not in frames.frames]
    if missing:
        raise ClipError(f"{clip.clip}: {', '.join(missing)} not on disk in {frames.folder}")
    return frames


def _run_clips(
    dataset: Dataset, needed: tuple[str, ...], work: Callable[[ClipAnnotation, ClipFrames], dict[str, Any]], progress: Progress | None
) -> list[dict[str, Any]]:
    """Run ``work`` per annotated clip; rejected rows and failures become manifest rows."""
    clips = _annotated_in_order(dataset.annotations)
    rows = []
    for i, clip in enumerate(clips):
        if isinstance(clip, RejectedRow):
            rows.append(_row(clip, "invalid_annotation", clip.cause))
        else:
            try:
                frames = _preflight(dataset, clip, needed)
                rows.append({**_row(clip, "ok"), **work(clip, frames)})
            except ClipError as exc:
                rows.append(_row(clip, "failed", str(exc)))
        if progress:
            progress(i + 1, len(clips), clip.clip)
    return rows


# ---------------------------------------------------------------- jobs


def export_flows(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    params: PipelineParams = PipelineParams(),
    progress: Progress | None = None,
    detector: Any = None,
) -> JobReport:
    """Raw frames → ``OUT/flows/sub{S}_{C}.png``, ``OUT/manifest.csv``, ``OUT/params.json``.

    Only the onset and apex frames of each clip are decoded and aligned.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, dataset.root)

    def work(clip: ClipAnnotation, frames: ClipFrames) -> dict[str, Any]:
        result = clip_flow(clip, frames, params=params, detector=detector)
        name = flow_map_name(clip)
        write_atomic(out_dir / "flows" / name, encode_image(result.flow_map))
        return {**_alignment_fields(result.normalized, params), "output": f"flows/{name}"}

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _run_clips(dataset, ("onset", "apex"), work, progress)
    write_csv(out_dir / "manifest.csv", rows, MANIFEST_COLUMNS)
    write_params(out_dir, "flows", params, {"dataset": str(dataset.root), "annotations": dataset.annotations.source})
    return JobReport(out_dir, rows)


def normalize_dataset(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    params: PipelineParams = PipelineParams(),
    progress: Progress | None = None,
    detector: Any = None,
) -> JobReport:
    """Align every frame of every annotated clip; write crops in the input's layout.

    ``OUT/<subject>/<clip>/<frame file stem>.png`` (lossless), ``OUT/<subject>/<clip>/alignment.csv``
    (frame, dx, dy, score), ``OUT/manifest.csv`` and ``OUT/params.json``.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, dataset.root)

    def work(clip: ClipAnnotation, frames: ClipFrames) -> dict[str, Any]:
        normalized = normalize_clip(clip, frames, params=params, detector=detector)
        clip_dir = out_dir / clip.subject / clip.clip
        for number, crop in normalized.crops.items():
            write_atomic(clip_dir / f"{frames.frames[number].stem}.png", encode_image(crop))
        write_csv(clip_dir / ALIGNMENT_FILE, normalized.alignment.to_records(), ALIGNMENT_COLUMNS)
        return {**_alignment_fields(normalized, params), "output": f"{clip.subject}/{clip.clip}"}

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _run_clips(dataset, ("onset", "apex"), work, progress)
    write_csv(out_dir / "manifest.csv", rows, MANIFEST_COLUMNS)
    write_params(out_dir, "normalized", params, {"dataset": str(dataset.root), "annotations": dataset.annotations.source})
    return JobReport(out_dir, rows)


def is_normalized(root: str | Path) -> bool:
    """Whether ``root`` is a folder written by ``normalize_dataset``."""
    try:
        return json.loads((Path(root) / NORMALIZED_MARKER).read_text()).get("kind") == "normalized"
    except (OSError, ValueError, AttributeError):
        return False


def normalized_params(root: str | Path) -> dict[str, Any]:
    """The ``params.json`` of a normalized-crops folder."""
    return json.loads((Path(root) / NORMALIZED_MARKER).read_text())


def flows_from_normalized(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    params: PipelineParams = PipelineParams(),
    progress: Progress | None = None,
) -> JobReport:
    """Aligned crops (a ``normalize`` output) → flow maps, manifest and params.json.

    ``dataset`` is the normalized folder loaded as a dataset; the detection and alignment
    parameters recorded there are kept in this job's params.json.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, dataset.root)
    recorded = normalized_params(dataset.root)
    params = PipelineParams.from_dict({**(recorded.get("params") or {}), "flow": params.flow.to_dict(), "encode": params.encode.to_dict()})

    def work(clip: ClipAnnotation, frames: ClipFrames) -> dict[str, Any]:
        try:
            onset, apex = read_grey(frames.path(clip.onset)), read_grey(frames.path(clip.apex))
            _, flow_map = flow_from_crops(onset, apex, params=params)
        except (FrameError, ValueError) as exc:
            raise ClipError(f"{clip.clip}: {exc}") from exc
        name = flow_map_name(clip)
        write_atomic(out_dir / "flows" / name, encode_image(flow_map))
        return {"output": f"flows/{name}", "frames": 2}

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _run_clips(dataset, ("onset", "apex"), work, progress)
    write_csv(out_dir / "manifest.csv", rows, MANIFEST_COLUMNS)
    write_params(out_dir, "flows", params, {"dataset": recorded.get("dataset", ""), "normalized": str(dataset.root), "annotations": dataset.annotations.source})
    return JobReport(out_dir, rows)


def export_gifs(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    clips: list[str] | None = None,
    params: PipelineParams = PipelineParams(),
    gif: GifParams = GifParams(),
    progress: Progress | None = None,
    detector: Any = None,
) -> JobReport:
    """Onset→apex (or →offset) GIFs ``OUT/sub{S}_{C}.gif`` for the chosen clips (default: all).

    Works on raw frames (normalizing only the animated frames) or on a ``normalize`` output.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, dataset.root)
    aligned = is_normalized(dataset.root)
    wanted = set(clips) if clips else None
    if wanted:
        unknown = wanted - set(dataset.annotations.by_clip) - {r.clip for r in dataset.annotations.rejected}
        if unknown:
            raise ValueError(f"unknown clip(s): {', '.join(sorted(unknown))}")
    subset = Dataset(dataset.root, _only(dataset.annotations, wanted), dataset.clips_on_disk, dataset.issues) if wanted else dataset

    def work(clip: ClipAnnotation, frames: ClipFrames) -> dict[str, Any]:
        numbers = gif_frame_numbers(frames.numbers, clip, params=gif)
        if aligned:
            try:
                crops = [read_grey(frames.path(n)) for n in numbers]
            except FrameError as exc:
                raise ClipError(f"{clip.clip}: {exc}") from exc
            extra: dict[str, Any] = {}
        else:
            normalized = normalize_clip(clip, frames, params=params, numbers=numbers, detector=detector)
            crops = [normalized.crops[n] for n in numbers]
            extra = _alignment_fields(normalized, params)
        name = f"sub{clip.subject}_{clip.clip}.gif"
        try:
            write_atomic(out_dir / name, encode_gif(crops, params=gif))
        except ValueError as exc:
            raise ClipError(f"{clip.clip}: {exc}") from exc
        return {**extra, "frames": len(crops), "output": name}

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _run_clips(subset, ("onset", "apex"), work, progress)
    write_csv(out_dir / "manifest.csv", rows, MANIFEST_COLUMNS)
    write_params(out_dir, "gifs", params, {"dataset": str(dataset.root), "annotations": dataset.annotations.source}, {"gif": gif.to_dict()})
    return JobReport(out_dir, rows)


def _only(annotations: Annotations, wanted: set[str]) -> Annotations:
    return Annotations(
        source=annotations.source,
        clips=tuple(c for c in annotations.clips if c.clip in wanted),
        rejected=tuple(r for r in annotations.rejected if r.clip in wanted),
        problems=tuple(p for p in annotations.problems if p.clip in wanted),
    )
