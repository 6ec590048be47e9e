"""Batch jobs that write files: normalized crops, flow maps + manifest, GIFs.

Every job goes clip by clip: a clip that fails becomes a manifest row with its status and
cause, and the others still run. Every file is written atomically (temporary file +
rename), so an interrupted run never leaves a half-written PNG, GIF or manifest.
``params.json`` records every parameter, its hash and the package versions.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import multiprocessing
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
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
from sammflow.dataset import ClipFrames, Dataset, FrameError, read_grey
from sammflow.detect import FaceBox
from sammflow.params import GifParams, PipelineParams
from sammflow.pipeline import ClipError, NormalizedClip, clip_flow, find_apex_face, flow_from_crops, normalize_clip

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
        "warnings": " | ".join([*warnings, *normalized.warnings]),
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


def default_workers() -> int:
    """Worker processes for batch jobs: one per core."""
    return max(1, os.cpu_count() or 1)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool kept for the life of this process (the app, a notebook), so only the
    first batch pays for starting the workers. Spawned, not forked: safe after torch's threads."""
    pool = _POOLS.get(workers)
    if pool is None or getattr(pool, "_broken", False):
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
        pool.submit(int)  # start the workers now, while this process imports torch for detection
        _POOLS[workers] = pool
    return pool


def shutdown_pools() -> None:
    """Stop the kept worker processes (also done at exit)."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(cancel_futures=True)


atexit.register(shutdown_pools)


def _run_clips(
    dataset: Dataset,
    work: Callable[..., dict[str, Any]],
    args: tuple[Any, ...],
    *,
    params: PipelineParams,
    progress: Progress | None,
    detector: Any = None,
    detect: bool = True,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Run ``work(clip, frames, box, warnings, *args)`` for every annotated clip.

    Face boxes are found here, in this process (torch stays out of the workers); the rest of
    each clip runs in ``workers`` processes (``work`` must be a module-level function). A
    rejected annotation row or a ``ClipError`` becomes the clip's manifest row; the batch goes on.
    """
    clips = _annotated_in_order(dataset.annotations)
    rows: dict[int, dict[str, Any]] = {}
    done = 0

    def finish(index: int, row: dict[str, Any]) -> None:
        nonlocal done
        rows[index] = row
        done += 1
        if progress:
            progress(done, len(clips), str(row["clip"]))

    pool = _pool(workers) if workers > 1 and len(dataset.annotations.clips) > 1 else None
    pending: dict[Future[dict[str, Any]], tuple[int, ClipAnnotation]] = {}
    try:
        for index, clip in enumerate(clips):
            if isinstance(clip, RejectedRow):
                finish(index, _row(clip, "invalid_annotation", clip.cause))
                continue
            try:
                frames = _preflight(dataset, clip, ("onset", "apex"))
                box, warnings = find_apex_face(clip, frames, params=params.detect, detector=detector) if detect else (None, [])
                if pool is None:
                    finish(index, {**_row(clip, "ok"), **work(clip, frames, box, warnings, *args)})
                else:
                    pending[pool.submit(work, clip, frames, box, warnings, *args)] = (index, clip)
            except Exception as exc:  # noqa: BLE001 - one clip's failure must not stop the batch
                finish(index, _row(clip, "failed", _cause(clip, exc)))
        for future in as_completed(pending):
            index, clip = pending[future]
            try:
                finish(index, {**_row(clip, "ok"), **future.result()})
            except Exception as exc:  # noqa: BLE001
                finish(index, _row(clip, "failed", _cause(clip, exc)))
    finally:
        for future in pending:
            future.cancel()  # interrupted: do not leave queued clips running
    return [rows[i] for i in sorted(rows)]


def _cause(clip: ClipAnnotation, exc: Exception) -> str:
    """A failure's message: ``ClipError`` texts name their clip; anything else is unexpected."""
    if isinstance(exc, ClipError):
        return str(exc)
    if isinstance(exc, BrokenProcessPool):
        return f"{clip.clip}: the worker process died (out of memory or killed); re-run to retry"
    return f"{clip.clip}: unexpected {type(exc).__name__}: {exc}"


def _finish_job(out_dir: Path, kind: str, params: PipelineParams, rows: list[dict[str, Any]], sources: dict[str, str],
                extra: dict[str, Any] | None = None) -> JobReport:
    write_csv(out_dir / "manifest.csv", rows, MANIFEST_COLUMNS)
    write_params(out_dir, kind, params, sources, extra)
    return JobReport(out_dir, rows)


# ---------------------------------------------------------------- per-clip work (runs in worker processes)


def _flow_work(clip: ClipAnnotation, frames: ClipFrames, box: FaceBox, warnings: list[str], params: PipelineParams, out_dir: Path) -> dict[str, Any]:
    result = clip_flow(clip, frames, params=params, box=box)
    name = flow_map_name(clip)
    write_atomic(out_dir / "flows" / name, encode_image(result.flow_map))
    return {**_alignment_fields(result.normalized, params, warnings), "output": f"flows/{name}"}


def _normalize_work(clip: ClipAnnotation, frames: ClipFrames, box: FaceBox, warnings: list[str], params: PipelineParams, out_dir: Path) -> dict[str, Any]:
    normalized = normalize_clip(clip, frames, params=params, box=box)
    clip_dir = out_dir / clip.subject / clip.clip
    for number, crop in normalized.crops.items():
        write_atomic(clip_dir / f"{frames.frames[number].stem}.png", encode_image(crop))
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
    name = f"sub{clip.subject}_{clip.clip}.gif"
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
) -> JobReport:
    """Raw frames → ``OUT/flows/sub{S}_{C}.png``, ``OUT/manifest.csv``, ``OUT/params.json``.

    Only the onset and apex frames of each clip are decoded and aligned.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, dataset.root)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _run_clips(dataset, _flow_work, (params, out_dir), params=params, progress=progress, detector=detector, workers=workers)
    return _finish_job(out_dir, "flows", params, rows, {"dataset": str(dataset.root), "annotations": dataset.annotations.source})


def normalize_dataset(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    params: PipelineParams = PipelineParams(),
    progress: Progress | None = None,
    detector: Any = None,
    workers: int = 1,
) -> JobReport:
    """Align every frame of every annotated clip; write crops in the input's layout.

    ``OUT/<subject>/<clip>/<frame file stem>.png`` (lossless), ``OUT/<subject>/<clip>/alignment.csv``
    (frame, dx, dy, score, residual, angle, scale), ``OUT/manifest.csv`` and ``OUT/params.json``.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, dataset.root)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _run_clips(dataset, _normalize_work, (params, out_dir), params=params, progress=progress, detector=detector, workers=workers)
    return _finish_job(out_dir, "normalized", params, rows, {"dataset": str(dataset.root), "annotations": dataset.annotations.source})


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
    workers: int = 1,
) -> JobReport:
    """Aligned crops (a ``normalize`` output) → flow maps, manifest and params.json.

    ``dataset`` is the normalized folder loaded as a dataset; the detection and alignment
    parameters recorded there are kept in this job's params.json.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, dataset.root)
    recorded = normalized_params(dataset.root)
    params = PipelineParams.from_dict({**(recorded.get("params") or {}), "flow": params.flow.to_dict(), "encode": params.encode.to_dict()})
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _run_clips(dataset, _aligned_flow_work, (params, out_dir), params=params, progress=progress, detect=False, workers=workers)
    return _finish_job(out_dir, "flows", params, rows,
                       {"dataset": recorded.get("dataset", ""), "normalized": str(dataset.root), "annotations": dataset.annotations.source})


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
) -> JobReport:
    """Onset→apex (or →offset) GIFs ``OUT/sub{S}_{C}.gif`` for the chosen clips (default: all).

    Works on raw frames (normalizing only the animated frames) or on a ``normalize`` output.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, dataset.root)
    wanted = set(clips) if clips else None
    if wanted:
        unknown = wanted - set(dataset.annotations.by_clip) - {r.clip for r in dataset.annotations.rejected}
        if unknown:
            raise ValueError(f"unknown clip(s): {', '.join(sorted(unknown))}")
    subset = Dataset(dataset.root, _only(dataset.annotations, wanted), dataset.clips_on_disk, dataset.issues) if wanted else dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _run_clips(subset, _gif_work, (params, out_dir, gif), params=params, progress=progress, detector=detector,
                      detect=not is_normalized(dataset.root), workers=workers)
    return _finish_job(out_dir, "gifs", params, rows, {"dataset": str(dataset.root), "annotations": dataset.annotations.source}, {"gif": gif.to_dict()})


def _only(annotations: Annotations, wanted: set[str]) -> Annotations:
    return Annotations(
        source=annotations.source,
        clips=tuple(c for c in annotations.clips if c.clip in wanted),
        rejected=tuple(r for r in annotations.rejected if r.clip in wanted),
        problems=tuple(p for p in annotations.problems if p.clip in wanted),
    )
