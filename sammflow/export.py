"""Batch jobs that write files: flow maps + manifest, normalized crops, flows from crops, GIFs.

Every job goes clip by clip: a clip that fails becomes a manifest row with its status and
cause, and the others still run. Nothing is lost or mixed up:

* every file is written atomically (``sammflow.files.write_atomic``), so an interrupted run
  never leaves a half-written PNG, GIF, crop or manifest;
* ``params.json`` (every parameter, its hash, the inputs, package versions) is written when
  a job *starts*, and ``manifest.csv`` (one row per annotated clip) as clips finish (a
  failure at once, an ``ok`` row at most ``sammflow.outfolder.MANIFEST_INTERVAL`` s later, all
  when the job ends), clips not done yet marked ``pending``: whatever is in the folder is
  attributable at any moment;
* a re-run with the same parameters resumes: clips whose row is ``ok`` and whose outputs
  exist are kept; ``force=True`` recomputes them. Outputs made with other parameters (or
  from another input folder) are never mixed in: the job refuses, unless ``force=True``,
  which first removes the old outputs. The device and the quality thresholds are not
  "other parameters": the kept clips are re-judged with the new thresholds;
* nothing is written outside the output folder, which may be neither inside the dataset
  nor contain it, nor a non-empty folder that sammflow did not make; one job at a time
  writes to a folder (a lock);
* ``sammflow.log`` in the output folder records what needs attention (failures, with the
  full traceback of unexpected errors, interruptions, resumed and replaced outputs).

The folder rules live in ``sammflow.outfolder``, the rows and the resume plan in
``sammflow.manifest``, the worker processes in ``sammflow.workers``; this module holds the
per-clip work and the jobs themselves.

With ``scheduler=`` every job runs on a Dask cluster (``sammflow.cluster``: an address, or
``local:N``): each clip is a task there, apex face detection included, writing the same
files; this process keeps the output folder (lock, manifest, ``params.json``,
``features.npz``), so resume and refusal work as without one, and the outputs are the same,
byte for byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sammflow.animate import encode_gif, gif_frame_numbers
from sammflow.annotations import ClipAnnotation, RejectedRow
from sammflow.cluster import Scheduler, connect, prepare_workers
from sammflow.dataset import ClipFrames, Dataset, FrameError, InputError, read_grey
from sammflow.detect import FaceBox, LoadingDetector
from sammflow.encode import flow_arrays
from sammflow.features import FEATURES_FILE, array_name, encode_npy, gather
from sammflow.kinds import output_stem
from sammflow.files import encode_image, read_csv, read_json, write_atomic, write_csv
from sammflow.manifest import ALIGNMENT_COLUMNS, MANIFEST_COLUMNS, alignment_fields, annotated_in_order
from sammflow.outfolder import ALIGNMENT_FILE, MANIFEST_FILE, PARAMS_FILE, JobReport, OutputFolder
from sammflow.params import AnnotationParams, GifParams, PipelineParams
from sammflow.pipeline import BoxCache, ClipError, clip_flow, find_apex_faces, flow_from_crops, normalize_clip, spot_clip
from sammflow.workers import Prepare, Progress, RowCallback, default_workers, run_clips

__all__ = ["MANIFEST_COLUMNS", "JobReport", "default_workers", "export_flows", "export_gifs", "flow_map_name", "flows_from_normalized",
           "gif_name", "is_normalized", "normalize_dataset", "normalized_params", "sources_of", "zip_gifs", "zip_outputs", "GifZip"]

#: Written at the root of a normalized-crops folder, so later commands recognise it.
NORMALIZED_MARKER = PARAMS_FILE


def flow_map_name(clip: ClipAnnotation | RejectedRow) -> str:
    """The original scripts' file name, ``sub{SUBJECT}_{CLIP}.png`` for SAMM; the clip id (which
    holds the subject) for the other kinds (``sammflow.kinds.output_stem``)."""
    return f"{output_stem(clip.dataset, clip.subject, clip.clip)}.png"


def gif_name(clip: ClipAnnotation | RejectedRow) -> str:
    return f"{output_stem(clip.dataset, clip.subject, clip.clip)}.gif"


# ---------------------------------------------------------------- per-clip work (runs in worker processes)


def _spotted(clip: ClipAnnotation, frames: ClipFrames, box: FaceBox, params: PipelineParams) -> tuple[ClipAnnotation, dict[str, Any]]:
    """The clip with its apex spotted, if it is to be (``ClipAnnotation.spot``), and the row columns that say so."""
    if not clip.spot:
        return clip, {}
    spotted, _ = spot_clip(clip, frames, params=params, box=box)
    return spotted, {"apex": spotted.apex, "apex_source": spotted.apex_source}


def _write_arrays(out_dir: Path, clip: ClipAnnotation, flow: Any, params: PipelineParams) -> None:
    write_atomic(out_dir / array_name(clip.subject, clip.clip, clip.dataset), encode_npy(flow_arrays(flow, params=params.encode)))


def _flow_work(clip: ClipAnnotation, frames: ClipFrames, box: FaceBox, warnings: list[str], params: PipelineParams, out_dir: Path,
               arrays: bool = False) -> dict[str, Any]:
    clip, spotted = _spotted(clip, frames, box, params)
    result = clip_flow(clip, frames, params=params, box=box)
    name = flow_map_name(clip)
    write_atomic(out_dir / "flows" / name, encode_image(result.flow_map))
    if arrays:
        _write_arrays(out_dir, clip, result.flow, params)
    return {**alignment_fields(result.normalized, warnings), **spotted, "output": f"flows/{name}"}


def _normalize_work(clip: ClipAnnotation, frames: ClipFrames, box: FaceBox, warnings: list[str], params: PipelineParams, out_dir: Path) -> dict[str, Any]:
    clip, spotted = _spotted(clip, frames, box, params)
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
    return {**alignment_fields(normalized, warnings), **spotted, "output": f"{clip.subject}/{clip.clip}"}


def _aligned_flow_work(clip: ClipAnnotation, frames: ClipFrames, box: None, warnings: list[str], params: PipelineParams, out_dir: Path,
                       arrays: bool = False) -> dict[str, Any]:
    try:
        onset, apex = read_grey(frames.path(clip.onset)), read_grey(frames.path(clip.apex))
        flow, flow_map = flow_from_crops(onset, apex, params=params)
    except (FrameError, ValueError) as exc:
        raise ClipError(f"{clip.clip}: {exc}") from exc
    name = flow_map_name(clip)
    write_atomic(out_dir / "flows" / name, encode_image(flow_map))
    if arrays:
        _write_arrays(out_dir, clip, flow, params)
    return {"output": f"flows/{name}", "frames": 2}


def _gif_work(clip: ClipAnnotation, frames: ClipFrames, box: FaceBox | None, warnings: list[str], params: PipelineParams, out_dir: Path,
              gif: GifParams) -> dict[str, Any]:
    clip, spotted = _spotted(clip, frames, box, params) if box is not None else (clip, {})
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
        extra = alignment_fields(normalized, warnings)
    name = gif_name(clip)
    try:
        write_atomic(out_dir / name, encode_gif(crops, params=gif, numbers=numbers, clip=clip))
    except ValueError as exc:
        raise ClipError(f"{clip.clip}: {exc}") from exc
    return {**extra, **spotted, "frames": len(crops), "output": name}


# ---------------------------------------------------------------- jobs


@contextlib.contextmanager
def _face_step(folder: OutputFolder, params: PipelineParams, detector: Any, boxes: BoxCache | None) -> Iterator[Prepare]:
    """The per-clip step of this process: the apex face boxes (the detector stays out of the
    workers), several clips' at once. The detector is built in a thread while the worker
    processes start and the first apex frames are decoded (on a GPU that includes torch's
    import, ≈ 2.5 s)."""
    loading = LoadingDetector(params.detect, error=InputError) if detector is None and folder.todo else None
    found_by = loading or detector
    try:
        yield lambda items: find_apex_faces(items, params=params.detect, detector=found_by, boxes=boxes)
    finally:
        if loading is not None:
            loading.close()


def _cluster(scheduler: Scheduler | None) -> contextlib.AbstractContextManager[Any]:
    """A client of the job's Dask cluster (``sammflow.cluster.connect``), or ``None`` without one.
    Connected before the output folder is touched: an unreachable scheduler writes nothing."""
    return contextlib.nullcontext() if scheduler is None else connect(scheduler)


def _out(out_dir: str | Path, client: Any) -> str | Path:
    """The output folder as the job names it: absolute on a cluster (its workers' working folder is not ours)."""
    return Path(out_dir).expanduser().absolute() if client is not None else out_dir


@contextlib.contextmanager
def _clip_step(folder: OutputFolder, params: PipelineParams, client: Any, *, detect: bool = True, detector: Any = None,
               boxes: BoxCache | None = None) -> Iterator[dict[str, Any]]:
    """How ``run_clips`` runs the job's clips, as its keyword arguments: on the Dask cluster of
    ``client``, each task finding its clip's apex face (``detector`` and ``boxes`` unused: the
    workers detect), or the apex faces found here (``_face_step``) and the rest in worker
    processes. ``detect=False``: crops aligned already, no face to find."""
    if client is not None:
        if folder.todo:
            prepare_workers(client, params.detect if detect else None)
        yield {"cluster": client, "detect": params.detect if detect else None}
    elif detect:
        with _face_step(folder, params, detector, boxes) as prepare:
            yield {"prepare": prepare}
    else:
        yield {}


def sources_of(dataset: Dataset) -> dict[str, str]:
    """The inputs a job records in params.json (and compares on a re-run): dataset folder and annotation file."""
    if dataset.parts:  # a composite: each part's kind and folder
        return {"dataset": ";".join(f"{part.kind}={part.root}" for part in dataset.parts), "annotations": dataset.annotations.source,
                "dataset_kind": dataset.kind}
    return {"dataset": str(dataset.root), "annotations": dataset.annotations.source, "dataset_kind": dataset.kind}


def export_flows(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    params: PipelineParams = PipelineParams(),
    progress: Progress | None = None,
    detector: Any = None,
    boxes: BoxCache | None = None,
    workers: int = 1,
    force: bool = False,
    on_row: RowCallback | None = None,
    arrays: bool = False,
    scheduler: Scheduler | None = None,
) -> JobReport:
    """Raw frames → ``OUT/flows/sub{S}_{C}.png``, ``OUT/manifest.csv``, ``OUT/alignment.csv``, ``OUT/params.json``.

    Only the onset and apex frames of each clip are decoded and aligned (and, for a clip whose
    apex is to be spotted, the frames between onset and offset). Resumes a folder made with the
    same parameters (see the module docstring); ``force`` recomputes every clip, and replaces
    the outputs of other parameters instead of refusing them.

    Parameters
    ----------
    dataset : Dataset
        Resolved here with ``params.annotations`` (fixes, apex policy).
    detector : MTCNN, optional
        The process-wide one for ``params.detect`` if omitted.
    boxes : BoxCache, optional
        Apex boxes found earlier (the dashboard's disk cache): used, and added to.
    on_row : callable(done, total, row), optional
        Called with each clip's manifest row as it finishes.
    arrays : bool
        Also write ``OUT/features.npz`` (``sammflow.features``): u, v, strain and the model
        input ``X`` of every clip that succeeded, with labels and folds.
    scheduler : Scheduler, optional
        Run the clips on this Dask cluster (``sammflow.cluster``) instead of ``workers`` local
        processes: the same files. Its workers detect the faces (``detector`` and ``boxes``
        unused) and must see the dataset and ``out_dir`` at the same paths.

    Raises
    ------
    InputError
        Unusable output folder (inside the dataset, not writable, not a sammflow folder, in use
        by another run, holding outputs of other parameters without ``force``), a full disk, a
        Dask scheduler that cannot be reached.
    """
    dataset = dataset.resolved(params.annotations)
    with _cluster(scheduler) as client, OutputFolder(_out(out_dir, client), dataset, kind="flows", params=params, force=force,
                                                     sources=sources_of(dataset), items=annotated_in_order(dataset.annotations),
                                                     arrays=arrays) as folder:
        with _clip_step(folder, params, client, detector=detector, boxes=boxes) as step:
            run_clips(folder, _flow_work, (params, folder.out, arrays), workers=workers, progress=progress, on_row=on_row, **step)
        _gather(folder, arrays)
    assert folder.report is not None
    return folder.report


def _gather(folder: OutputFolder, arrays: bool) -> None:
    """``features.npz`` of the finished clips, when the job writes arrays. (One an earlier run
    with the same parameters wrote stays as it is: the same parameters give the same arrays.)"""
    if not arrays:
        return
    try:
        gather(folder.out, folder.rows, folder.params)
    except ValueError as exc:  # an array file removed or damaged by hand since its clip finished
        raise InputError(f"{folder.out / FEATURES_FILE}: not written: {exc}; re-run with --force to recompute") from exc


def normalize_dataset(
    dataset: Dataset,
    out_dir: str | Path,
    *,
    params: PipelineParams = PipelineParams(),
    progress: Progress | None = None,
    detector: Any = None,
    workers: int = 1,
    force: bool = False,
    scheduler: Scheduler | None = None,
) -> JobReport:
    """Align every frame of every annotated clip; write crops in the input's layout.

    ``OUT/<subject>/<clip>/<frame file stem>.png`` (lossless), ``OUT/<subject>/<clip>/alignment.csv``
    (frame, dx, dy, score, residual, angle, scale), ``OUT/manifest.csv`` and ``OUT/params.json``.
    Resumes, ``force`` and ``scheduler`` as ``export_flows``; ``dataset`` is resolved with ``params.annotations``.
    """
    dataset = dataset.resolved(params.annotations)
    with _cluster(scheduler) as client, OutputFolder(_out(out_dir, client), dataset, kind="normalized", params=params, force=force,
                                                     sources=sources_of(dataset), items=annotated_in_order(dataset.annotations)) as folder:
        with _clip_step(folder, params, client, detector=detector) as step:
            run_clips(folder, _normalize_work, (params, folder.out), workers=workers, progress=progress, **step)
    assert folder.report is not None
    return folder.report


def is_normalized(root: str | Path) -> bool:
    """Whether ``root`` is a folder written by ``normalize_dataset``."""
    content = read_json(Path(root) / NORMALIZED_MARKER)
    return isinstance(content, dict) and content.get("kind") == "normalized"


def normalized_params(root: str | Path) -> dict[str, Any]:
    """The ``params.json`` of a normalized-crops folder (empty if it cannot be read)."""
    content = read_json(Path(root) / NORMALIZED_MARKER)
    return content if isinstance(content, dict) else {}


def _with_recorded_apexes(dataset: Dataset) -> Dataset:
    """A normalized folder as a dataset with the annotation parameters its normalize run used,
    and the apexes it spotted: its crops were aligned to those."""
    recorded = normalized_params(dataset.root)
    dataset = dataset.resolved(AnnotationParams(**(recorded.get("params") or {}).get("annotations", {})))
    spotted = {r["clip"]: int(r["apex"]) for r in read_csv(dataset.root / MANIFEST_FILE)
               if r.get("status") == "ok" and r.get("apex_source") == "spotted" and r.get("apex", "").isdigit()}
    if not spotted:
        return dataset
    clips = tuple(dataclasses.replace(c, apex=spotted[c.clip], apex_source="spotted", spot=False)
                  if c.spot and c.clip in spotted and c.onset <= spotted[c.clip] <= c.offset else c for c in dataset.annotations.clips)
    return dataset.with_annotations(dataclasses.replace(dataset.annotations, clips=clips))


def _not_normalized(root: Path) -> dict[str, str]:
    """Clips a normalized folder's manifest does not mark ``ok``, and why (their crops, if any,
    are partial or from an interrupted run: never used)."""
    blocked = {}
    for row in read_csv(root / MANIFEST_FILE):
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
    arrays: bool = False,
    scheduler: Scheduler | None = None,
) -> JobReport:
    """Aligned crops (a ``normalize`` output) → flow maps, manifest and params.json (and
    ``features.npz`` with ``arrays``, and on a Dask cluster with ``scheduler``, as ``export_flows``).

    ``dataset`` is the normalized folder loaded as a dataset; the annotation, detection and
    alignment parameters recorded there are kept in this job's params.json, and the apexes it
    spotted are used. Clips the normalized folder's manifest does not mark ``ok`` fail with
    that reason.
    """
    recorded = normalized_params(dataset.root)
    settings = recorded.get("settings") or {}
    stages = {stage: {**(recorded.get("params") or {}).get(stage, {}), **settings.get(stage, {})} for stage in ("annotations", "detect", "align")}
    params = PipelineParams.from_dict({**stages, "flow": params.flow.to_dict(), "encode": params.encode.to_dict()}, preset=params.preset)
    dataset = _with_recorded_apexes(dataset)
    sources = {"dataset": recorded.get("dataset", ""), "normalized": str(dataset.root), "annotations": dataset.annotations.source,
               "dataset_kind": dataset.kind}
    with _cluster(scheduler) as client, OutputFolder(_out(out_dir, client), dataset, kind="flows", params=params, force=force,
                                                     sources=sources, items=annotated_in_order(dataset.annotations),
                                                     arrays=arrays) as folder:
        with _clip_step(folder, params, client, detect=False) as step:
            run_clips(folder, _aligned_flow_work, (params, folder.out, arrays), workers=workers, blocked=_not_normalized(dataset.root),
                      progress=progress, **step)
        _gather(folder, arrays)
    assert folder.report is not None
    return folder.report


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
    scheduler: Scheduler | None = None,
) -> JobReport:
    """Onset→apex (or →offset) GIFs ``OUT/sub{S}_{C}.gif`` for the chosen clips (default: all).

    Works on raw frames (normalizing only the animated frames) or on a ``normalize`` output.
    GIFs of other clips made earlier into the same folder with the same parameters stay (and
    keep their manifest rows). ``scheduler`` as ``export_flows``.
    """
    aligned = is_normalized(dataset.root)
    dataset = _with_recorded_apexes(dataset) if aligned else dataset.resolved(params.annotations)
    wanted = set(clips) if clips else None
    if wanted:
        unknown = wanted - set(dataset.annotations.by_clip) - {r.clip for r in dataset.annotations.rejected}
        if unknown:
            raise InputError(f"unknown clip(s): {', '.join(sorted(unknown))}")
    items = [c for c in annotated_in_order(dataset.annotations) if wanted is None or c.clip in wanted]
    with _cluster(scheduler) as client, OutputFolder(_out(out_dir, client), dataset, kind="gifs", params=params, force=force,
                                                     sources=sources_of(dataset), items=items, extra={"gif": gif.to_dict()},
                                                     keep_others=True) as folder:
        with _clip_step(folder, params, client, detect=not aligned, detector=detector) as step:
            run_clips(folder, _gif_work, (params, folder.out, gif), workers=workers,
                      blocked=_not_normalized(dataset.root) if aligned else None, progress=progress, **step)
    assert folder.report is not None
    return folder.report


def zip_outputs(report: JobReport) -> bytes:
    """The outputs of a job's ``ok`` clips with its ``manifest.csv`` and ``params.json`` (and
    ``alignment.csv`` and ``features.npz`` where there are), as a zip archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in (MANIFEST_FILE, PARAMS_FILE, ALIGNMENT_FILE, FEATURES_FILE):
            if (report.out_dir / name).is_file():
                archive.write(report.out_dir / name, name)
        for row in report.rows:
            if row["status"] == "ok" and row.get("output") and (report.out_dir / row["output"]).is_file():
                archive.write(report.out_dir / row["output"], row["output"])
    return buffer.getvalue()


@dataclass(frozen=True)
class GifZip:
    """The GIFs of several clips in one zip archive (``gif_zip``).

    ``data`` holds ``sub{S}_{C}.gif`` per clip in ``included``; ``failed`` names each clip that
    has none and why (``"006_1_1: apex frame … not on disk"``); ``left_out`` the clips not
    tried because a bound (``MAX_ZIP_CLIPS``, ``MAX_ZIP_BYTES``) was reached.
    """

    data: bytes
    included: tuple[str, ...]
    failed: tuple[str, ...]
    left_out: tuple[str, ...]


def zip_gifs(clips: Sequence[ClipAnnotation], make: Callable[[ClipAnnotation], bytes], *, max_clips: int, max_bytes: int,
             progress: Callable[[int, int, str], None] | None = None) -> GifZip:
    """GIFs of several clips as one zip archive (``sub{S}_{C}.gif`` each), bounded.

    Parameters
    ----------
    clips : sequence of ClipAnnotation
    make : callable(clip) -> bytes
        A clip's GIF; a ``ClipError`` leaves the clip out, named with its cause.
    max_clips, max_bytes : int
        At most this many clips are tried, and the archive stops short of this many bytes.
    progress : callable(done, total, clip), optional
        Called before each clip.
    """
    chosen, left_out = list(clips[:max_clips]), [c.clip for c in clips[max_clips:]]
    included, failed, size = [], [], 0
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # GIFs are compressed already
        for i, clip in enumerate(chosen):
            if progress:
                progress(i, len(chosen), clip.clip)
            try:
                data = make(clip)
            except ClipError as exc:
                failed.append(str(exc))
                continue
            if size + len(data) > max_bytes:
                left_out = [c.clip for c in chosen[i:]] + left_out
                break
            archive.writestr(gif_name(clip), data)
            included.append(clip.clip)
            size += len(data)
    if progress:
        progress(len(chosen), len(chosen), "")
    return GifZip(buffer.getvalue(), tuple(included), tuple(failed), tuple(left_out))
