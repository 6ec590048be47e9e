"""The report of an output folder: one self-contained HTML file to show in a lab meeting.

``build_report(OUT)`` summarises what ``sammflow export`` or ``normalize`` (also ``flows`` and
``gif``) wrote into OUT, in six sections: the dataset and its annotation problems, the
alignment quality, the normalized grid, a sample of flow maps with their legend, a few clips in
detail, and every parameter with the command that reproduces the folder.

Everything is inside the one file: images as ``data:`` URIs (thumbnails as JPEG), plotly.js
inlined once, each chart as plotly JSON in a ``<script type="application/json">`` block drawn
by one loader script (charts stay interactive; two modebar buttons download a 2× PNG or an
SVG). It opens offline and requests nothing: no CDN, no web font, no MathJax.

What the folder does not hold (the aligned crops of an export, the flows behind its maps'
brightness scales, GIFs) is recomputed from the dataset recorded in ``params.json`` with the
recorded parameters and each clip's face box from ``manifest.csv`` (no face detection, no
network). A normalize output's crops are read from the folder. If the dataset cannot be
reached, the figures that need it are replaced by one sentence saying why, and the rest of
the report is written.

Plain functions, no Streamlit: the command line (``sammflow report OUT``) and the dashboard
call ``write_report`` / ``build_report``.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import shlex
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sammflow import __version__
from sammflow.annotations import ClipAnnotation, read_annotations
from sammflow.dataset import ClipFrames, Dataset, FrameError, discover, load_dataset, merge, read_grey
from sammflow.detect import FaceBox
from sammflow.features import FEATURES_FILE
from sammflow.files import read_csv, read_json, write_atomic
from sammflow.flow import FlowField
from sammflow.kinds import KINDS, output_stem, resolve as resolve_kind
from sammflow.labels import MEGC2019_CLASSES
from sammflow.manifest import MANIFEST_COLUMNS
from sammflow.outfolder import ALIGNMENT_FILE, MANIFEST_FILE, PARAMS_FILE
from sammflow.params import PRESETS, STAGE_CLASSES, STAGES, GifParams, PipelineParams, declared, option
from sammflow.pipeline import ClipError, flow_from_crops, normalize_clip
from sammflow.text import printable, show_path

#: The report's file name, in the output folder.
REPORT_FILE = "report.html"
#: Sections: id → title, in order (each a ``<section id=...>`` with an ``<h2>``).
SECTIONS = {"dataset": "Dataset and annotations", "alignment": "Alignment quality", "grid": "Normalized grid",
            "flows": "Flow maps", "clips": "Clips in detail", "parameters": "Parameters and the command that reproduces them"}
#: Seed of the flow-map sample (the dashboard's flow page draws with seeds too): the same folder gives the same sample.
SAMPLE_SEED = 0
#: Flow maps shown (a 3 × 3 grid) and clips shown in detail by default.
SAMPLE_SIZE = 9
DETAIL_CLIPS = 3
#: Clips of the alignment section's before / after difference pairs, and its tables' rows.
PAIRS = 3
WORST = 10
#: Grey levels below which a difference is hidden in the pairs (the alignment page's default).
DIFF_THRESHOLD = 12
#: Side of a grid thumbnail, px, and the JPEG quality of thumbnails and crops.
THUMB = 96
JPEG_QUALITY = 82
#: Side of a crop shown in the pairs and clip sections, and of a flow map enlarged, px.
CROP = 192
MAP = 168
#: Frames in a detail clip's onset→apex GIF at most (every n-th frame beyond).
GIF_FRAMES = 24
#: Threads recomputing aligned crops (OpenCV releases the GIL).
THREADS = max(1, min(4, os.cpu_count() or 1))
#: The report's fonts: the system's own (nothing is downloaded).
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
#: The MEGC2019 class of each ``label_megc`` value.
MEGC_NAMES = {str(i): name for i, name in enumerate(MEGC2019_CLASSES)} | {"-1": "not in MEGC2019"}

Progress = Callable[[str], None]


class ReportError(ValueError):
    """OUT is not a sammflow output folder (no params.json / manifest.csv), or unreadable: one
    line naming the folder and the cause."""


# ============================================================== the output folder


@dataclass(frozen=True)
class Output:
    """What an output folder holds.

    Attributes
    ----------
    out : Path
    content : dict
        ``params.json``.
    rows : list of dict
        ``manifest.csv``, one row per annotated clip.
    alignment : list of dict
        The per-frame alignment records (``alignment.csv``) with their ``clip``.
    """

    out: Path
    content: dict[str, Any]
    rows: list[dict[str, str]]
    alignment: list[dict[str, str]]

    @property
    def kind(self) -> str:
        """``flows`` (export, flows), ``normalized`` (normalize) or ``gifs`` (gif)."""
        return str(self.content.get("kind", ""))

    @property
    def ok(self) -> list[dict[str, str]]:
        return [r for r in self.rows if r.get("status") == "ok"]

    @property
    def params(self) -> PipelineParams:
        """The recorded parameters (``params`` and ``settings`` merged; what a newer sammflow
        added counts as its default, as a resumed run counts it)."""
        stages = {stage: {**(self.content.get("params") or {}).get(stage, {}), **(self.content.get("settings") or {}).get(stage, {})}
                  for stage in STAGES}
        return PipelineParams.from_dict(stages, preset=self.content.get("preset") or "")


def read_output(out_dir: str | Path) -> Output:
    """An output folder's ``params.json``, ``manifest.csv`` and alignment records.

    Raises
    ------
    ReportError
        Not a folder, not made by sammflow, or unreadable (one line naming it and the cause).
    """
    out = Path(out_dir)
    where = show_path(out)
    try:
        if not out.exists():
            raise ReportError(f"{where}: folder not found")
        if not out.is_dir():
            raise ReportError(f"{where}: not a folder (give the output folder of sammflow export or normalize)")
        params_path, manifest_path = out / PARAMS_FILE, out / MANIFEST_FILE
        if not params_path.is_file() and not manifest_path.is_file():
            raise ReportError(f"{where}: not a sammflow output folder (no {PARAMS_FILE}, no {MANIFEST_FILE})")
        if not params_path.is_file():
            raise ReportError(f"{where}: no {PARAMS_FILE}: not a sammflow output folder, or its run never started")
        content = read_json(params_path)
        if not (isinstance(content, dict) and "kind" in content and "params_hash" in content):
            raise ReportError(f"{where}: {PARAMS_FILE} is not sammflow's (not JSON, or no kind and params_hash)")
        if not manifest_path.is_file():
            raise ReportError(f"{where}: no {MANIFEST_FILE}: its run has not recorded any clip yet")
        with open(manifest_path, encoding="utf-8", errors="replace") as fh:
            header = fh.readline().strip()
        if header != ",".join(MANIFEST_COLUMNS):
            raise ReportError(f"{where}: {MANIFEST_FILE} is not a sammflow manifest (its columns differ)")
        rows = read_csv(manifest_path)
        alignment = _alignment_records(out, content.get("kind"), rows)
    except PermissionError as exc:
        raise ReportError(f"{where}: cannot read {show_path(exc.filename or out)} (permission denied)") from None
    except OSError as exc:
        raise ReportError(f"{where}: cannot read {show_path(exc.filename or out)} ({exc.strerror or exc})") from None
    except (ValueError, UnicodeError) as exc:
        if isinstance(exc, ReportError):
            raise
        raise ReportError(f"{where}: {MANIFEST_FILE} cannot be read ({exc})") from None
    return Output(out, content, rows, alignment)


def _alignment_records(out: Path, kind: Any, rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The per-frame alignment records: ``OUT/alignment.csv`` (with a ``clip`` column), or each
    clip folder's of a normalize output."""
    if kind != "normalized":
        return read_csv(out / ALIGNMENT_FILE)
    records = []
    for row in rows:
        if row.get("status") == "ok" and _plain(row.get("subject", "")) and _plain(row.get("clip", "")):
            records += [{"clip": row["clip"], **r} for r in read_csv(out / row["subject"] / row["clip"] / ALIGNMENT_FILE)]
    return records


def _plain(name: str) -> bool:
    """A manifest value usable as one path component (a hand-edited manifest must not lead out)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\x00" not in name


# ============================================================== where the frames are


def locate(recorded: str, out: Path) -> Path:
    """A path recorded in ``params.json``: as given (relative paths are relative to the folder
    the command ran in), else relative to OUT's parent (the folder moved with its dataset)."""
    path = Path(recorded)
    if path.exists() or path.is_absolute():
        return path
    beside = out.parent / path
    return beside if beside.exists() else path


@dataclass
class Frames:
    """Where a report finds the frames of a clip, and its aligned crops.

    ``dataset`` is the raw dataset recorded in ``params.json`` (loaded with the recorded
    annotation parameters), or ``None`` with ``why`` saying why not; ``crops`` the clips of a
    normalize output (OUT itself, or the folder a ``flows`` run read), whose crops are read
    rather than recomputed.
    """

    params: PipelineParams
    dataset: Dataset | None = None
    why: str = ""
    crops: dict[str, ClipFrames] | None = None

    @classmethod
    def of(cls, output: Output) -> Frames:
        frames = cls(output.params)
        content = output.content
        aligned = output.out if output.kind == "normalized" else (locate(content["normalized"], output.out) if content.get("normalized") else None)
        if aligned is not None and aligned.is_dir():
            try:
                frames.crops = discover(aligned)[0]
            except OSError:
                frames.crops = None
        try:
            frames.dataset = _load_dataset(content, output.out, frames.params)
        except (OSError, ValueError) as exc:
            frames.why = printable(" ".join(str(exc).split()) or type(exc).__name__)
        return frames

    @property
    def reachable(self) -> bool:
        """Whether aligned crops can be had (from a normalize output or the raw dataset)."""
        return self.crops is not None or self.dataset is not None

    def unreachable(self, what: str) -> str:
        """The sentence that replaces figures needing the frames."""
        return _note(f"{what} need the frames, and the dataset recorded in {PARAMS_FILE} cannot be read: {self.why}. "
                     "The rest of the report does not need them.")

    def clip(self, row: dict[str, str]) -> tuple[ClipAnnotation, ClipFrames, bool]:
        """A manifest row's clip (onset, apex and offset as processed: a spotted apex is the
        manifest's), its frames, and whether those are aligned crops already.

        Raises
        ------
        ClipError
            Its folder is missing, or its row is not a usable clip.
        """
        try:
            clip = ClipAnnotation(subject=row["subject"], clip=row["clip"], onset=int(row["onset"]), apex=int(row["apex"]),
                                  offset=int(row["offset"]), emotion=row.get("emotion", ""), action_units=row.get("action_units", ""),
                                  dataset=(row.get("dataset") or "samm"))
        except (KeyError, ValueError) as exc:
            raise ClipError(f"{row.get('clip', '?')}: not a usable manifest row ({exc})") from None
        if self.crops is not None and clip.clip in self.crops:
            return clip, self.crops[clip.clip], True
        if self.dataset is None:
            raise ClipError(f"{clip.clip}: {self.why}")
        frames = self.dataset.clips_on_disk.get(clip.clip)
        if frames is None:
            raise ClipError(self.dataset.folder_problem(clip.clip) or f"{clip.clip}: no folder")
        return clip, frames, False

    def aligned(self, row: dict[str, str], numbers: Sequence[int]) -> dict[int, np.ndarray]:
        """Aligned crops of frames ``numbers`` of a clip, uint8 (crop_size, crop_size), by number.

        Raises
        ------
        ClipError
            Missing folder or frame, unreadable frame, no face box in the manifest.
        """
        clip, frames, crops = self.clip(row)
        if crops:
            try:
                return {n: read_grey(frames.path(n)) for n in numbers}
            except FrameError as exc:
                raise ClipError(f"{clip.clip}: {exc}") from exc
        return normalize_clip(clip, frames, params=self.params, numbers=numbers, box=box_of(row)).crops

    def raw(self, row: dict[str, str], number: int) -> np.ndarray:
        """A raw frame of a clip, uint8 (H, W) (``ClipError`` where it cannot be read)."""
        if self.dataset is None:
            raise ClipError(f"{row.get('clip', '?')}: {self.why}")
        frames = self.dataset.clips_on_disk.get(row.get("clip", ""))
        if frames is None:
            raise ClipError(self.dataset.folder_problem(row.get("clip", "")) or f"{row.get('clip')}: no folder")
        try:
            return read_grey(frames.path(number))
        except FrameError as exc:
            raise ClipError(str(exc)) from exc


def box_of(row: dict[str, str]) -> FaceBox:
    """A clip's apex face box from its manifest row (frame px)."""
    try:
        frame = row.get("face_frame") or ""
        return FaceBox(int(row["x1"]), int(row["y1"]), int(row["x2"]), int(row["y2"]), float(row.get("face_prob") or 1.0),
                       int(frame) if frame.lstrip("-").isdigit() else None)
    except (KeyError, ValueError) as exc:
        raise ClipError(f"{row.get('clip', '?')}: no face box in {MANIFEST_FILE} ({exc})") from None


def composite_parts(content: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A composite's parts as ``params.json`` records them (``"samm=/a;casme2=/b"``, the
    annotation files in the same order): (kind, dataset path, annotation file or "")."""
    files = str(content.get("annotations") or "").split(";")
    specs = [spec.partition("=") for spec in str(content.get("dataset") or "").split(";")]
    return [(kind, path, files[i] if i < len(files) else "") for i, (kind, _, path) in enumerate(specs)]


def _load_dataset(content: dict[str, Any], out: Path, params: PipelineParams) -> Dataset:
    """The dataset ``params.json`` records (a composite's parts too), with the recorded annotation parameters.

    Raises
    ------
    OSError, ValueError
        Saying why it cannot be read (a moved folder, an unreadable annotation file).
    """
    recorded = str(content.get("dataset") or "")
    if not recorded:
        raise FileNotFoundError(f"{PARAMS_FILE} records no dataset folder")
    kind = str(content.get("dataset_kind") or "")
    sources = str(content.get("annotations") or "")
    if "+" in kind:
        parts = [_load_one(locate(path, out), locate(file, out) if file else None, part_kind, params)
                 for part_kind, path, file in composite_parts(content)]
        return merge(parts).resolved(params.annotations)
    return _load_one(locate(recorded, out), locate(sources, out) if sources else None, kind or "auto", params)


def _load_one(root: Path, annotations: Path | None, kind: str, params: PipelineParams) -> Dataset:
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {show_path(root)} not found (moved, or another machine's path?)")
    kind, found = resolve_kind(root, annotations if annotations is not None and annotations.is_file() else None, kind)
    if found is None:
        raise FileNotFoundError(f"annotation file {show_path(annotations or root)} not found")
    return load_dataset(root, read_annotations(found, params=params.annotations, dataset=kind))


# ============================================================== HTML pieces


def _e(value: Any) -> str:
    """Text from a file, escaped for HTML (any path made printable first)."""
    return html.escape(printable(str(value)))


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _details(summary: str, content: str) -> str:
    return f"<details><summary>{_e(summary)}</summary>{content}</details>"


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_bytes(image: np.ndarray, fmt: str = "png") -> bytes:
    """An image's file bytes: ``png`` (lossless) or ``jpeg`` (thumbnails and crops: smaller).

    Parameters
    ----------
    image : ndarray, uint8, (H, W) grey or (H, W, 3) RGB
    fmt : {"png", "jpeg"}
    """
    from PIL import Image

    buffer = io.BytesIO()
    picture = Image.fromarray(np.ascontiguousarray(image))
    if fmt == "jpeg":
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _img(image: np.ndarray, alt: str, *, fmt: str = "png", cls: str = "", title: str = "") -> str:
    src = _uri(image_bytes(image, fmt), f"image/{fmt}")
    h, w = image.shape[:2]
    extra = f' title="{_e(title)}"' if title else ""
    return f'<img src="{src}" alt="{_e(alt)}" width="{w}" height="{h}" class="{cls}"{extra}>'


def _figure(content: str, caption: str, *, cls: str = "") -> str:
    return f'<figure class="{cls}">{content}<figcaption>{caption}</figcaption></figure>'


class Charts:
    """The report's plotly charts, each embedded as JSON and drawn by the one loader script."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: Any, filename: str, caption: str = "") -> str:
        """A chart's ``<figure>``: a div, its figure as JSON, and an escaped caption."""
        self.count += 1
        name = f"chart-{self.count}"
        fig.update_layout(font={"family": FONT})
        data = fig.to_json().replace("<", "\\u003c")  # JSON text: nothing in it can close the script block
        caption_html = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
        return (f'<figure class="chart"><div class="plot" id="{name}" data-filename="{_e(filename)}"></div>'
                f'<script type="application/json" class="plot-data" data-for="{name}">{data}</script>{caption_html}</figure>')


# ============================================================== sections


def _counts_table(counter: Counter[str]) -> str:
    return _table(("value", "clips"), [(k or "—", v) for k, v in counter.most_common()], cls="compact")


def dataset_section(output: Output, frames: Frames, charts: Charts) -> str:
    """Dataset kind, folders, clip counts, label distributions and annotation problems."""
    from sammflow.charts import count_chart

    import pandas as pd

    content, rows, ok = output.content, output.rows, output.ok
    status = Counter(r.get("status", "") for r in rows)
    subjects = sorted({r.get("subject", "") for r in rows})
    facts = [("output folder", show_path(output.out)), ("written by", _command_name(output)),
             ("dataset kind", content.get("dataset_kind") or "—"), ("dataset folder", content.get("dataset") or "—"),
             ("annotation file", content.get("annotations") or "—")]
    if content.get("normalized"):
        facts.append(("aligned crops read from", content["normalized"]))
    facts += [("clips (manifest rows)", len(rows)), ("ok", status.get("ok", 0)),
              ("not ok", ", ".join(f"{n} {s}" for s, n in status.items() if s != "ok") or "none"),
              ("subjects", f"{len(subjects)}: {', '.join(subjects[:40])}{' …' if len(subjects) > 40 else ''}"),
              ("run", f"started {content.get('created') or '?'}, " + (f"finished {content['finished']}" if content.get("finished")
                                                                       else "not finished (still running, or interrupted: pending clips)"))]
    features = output.out / FEATURES_FILE
    if features.is_file():
        from sammflow.tables import features_summary

        try:
            facts.append(("model arrays", features_summary(features)))
        except (OSError, ValueError, KeyError) as exc:
            facts.append(("model arrays", f"{FEATURES_FILE} cannot be read: {exc}"))
    parts = [_table(("", ""), facts, cls="facts")]

    if ok:
        table = pd.DataFrame(ok, columns=MANIFEST_COLUMNS)
        table["MEGC2019 class"] = [MEGC_NAMES.get(str(r.get("label_megc", "")), "—") for r in ok]
        table["objective class"] = table["objective_class"]
        plots = [charts(count_chart(table, "MEGC2019 class", "MEGC2019 class (label_megc)"), "megc2019_classes"),
                 charts(count_chart(table, "emotion", "Emotion (as annotated)"), "emotions"),
                 charts(count_chart(table, "objective class", "Objective class"), "objective_classes"),
                 charts(count_chart(table, "subject", "Clips per subject"), "clips_per_subject")]
        parts.append(f'<p>Label distributions of the {len(ok)} clips exported (status ok). Hover for counts; the modebar downloads '
                     f'each chart as PNG or SVG.</p><div class="charts2">{"".join(plots)}</div>')
    else:
        parts.append(_note("No clip is ok in this folder: no label distribution to show."))
    parts.append(_problems(output, frames))
    return "".join(parts)


def _command_name(output: Output) -> str:
    return {"flows": "sammflow flows (from a normalize output)" if output.content.get("normalized") else "sammflow export",
            "normalized": "sammflow normalize", "gifs": "sammflow gif"}.get(output.kind, output.kind)


def _problems(output: Output, frames: Frames) -> str:
    """Failed clips with their cause, clips with fixes, missing frames and warnings: counts, each list in a ``<details>``."""
    failed = [r for r in output.rows if r.get("status") != "ok"]
    fixed = [r for r in output.rows if r.get("fixes")]
    warned = [r for r in output.rows if r.get("warnings")]
    missing = []
    if frames.dataset is not None:
        missing = [i for i in frames.dataset.issues if i.kind == "missing_frame"]
    items = []
    by_status = Counter(r.get("status", "") for r in failed)
    items.append(_details(f"{len(failed)} clip(s) not ok" + (f" ({', '.join(f'{n} {s}' for s, n in by_status.items())})" if failed else ""),
                          _table(("clip", "subject", "status", "cause"), [(r.get("clip"), r.get("subject"), r.get("status"), r.get("error"))
                                                                          for r in failed]) if failed else _note("None.")))
    items.append(_details(f"{len(fixed)} clip(s) with published annotation fixes applied",
                          _table(("clip", "apex source", "fixes"), [(r.get("clip"), r.get("apex_source"), r.get("fixes")) for r in fixed])
                          if fixed else _note("None" + ("" if output.params.annotations.fix else " (run without --fix-annotations)") + ".")))
    if frames.dataset is not None:
        kinds = Counter(" ".join(i.message.split(": ", 1)[-1].split()[:1]) for i in missing)
        summary = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        items.append(_details(f"{len(missing)} annotated frame(s) not on disk" + (f" ({summary} frames)" if missing else ""),
                              _table(("clip", "problem"), [(i.clip, i.message) for i in missing]) if missing else _note("None.")))
        other = [i for i in frames.dataset.issues if i.kind not in ("missing_frame", "no_folder")]
        if other:
            items.append(_details(f"{len(other)} other dataset warning(s)", _table(("clip", "kind", "warning"),
                                                                                   [(i.clip, i.kind, i.message) for i in other])))
        problems = [p for p in frames.dataset.annotations.problems if p.severity != "error"]
        if problems:
            items.append(_details(f"{len(problems)} annotation warning(s)", _table(("clip", "warning"), [(p.clip, str(p)) for p in problems])))
    else:
        items.append(_note(f"Frames missing on disk are listed when the dataset can be read: {frames.why}."))
    items.append(_details(f"{len(warned)} clip(s) with warnings while processing",
                          _table(("clip", "warnings"), [(r.get("clip"), r.get("warnings")) for r in warned]) if warned else _note("None.")))
    return "<h3>Annotation problems and fixes</h3>" + "".join(items)


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def alignment_section(output: Output, frames: Frames, charts: Charts, crops: dict[str, dict[int, np.ndarray] | str]) -> str:
    """Per-frame match scores and residuals, the worst clips and their flagged frames, before/after pairs."""
    import plotly.graph_objects as go

    from sammflow.charts import ACCENT, FLAG, LABEL_MARGIN, style

    params = output.params.align
    apex = {r["clip"]: r.get("apex") for r in output.rows}
    records = [r for r in output.alignment if str(r.get("frame")) != str(apex.get(r.get("clip")))]  # the apex is its own match
    parts = []
    if records:
        scores = [v for v in (_number(r.get("score")) for r in records) if math.isfinite(v)]
        residuals = [v for v in (_number(r.get("residual")) for r in records) if math.isfinite(v)]
        plots = []
        for values, title, axis, limit, side, name in (
                (scores, "Match score per frame", "match score (correlation with the apex crop)", params.min_score, "below", "match_scores"),
                (residuals, "Residual shift per frame", "residual shift estimate (crop px)", params.max_residual, "above", "residuals")):
            low, high = min([*values, limit]), max([*values, limit])  # the threshold in view, and bars wide enough to see
            bins = {"start": low, "end": high + (high - low) / 40 + 1e-9, "size": (high - low) / 40 or 1.0}
            fig = go.Figure(go.Histogram(x=values, xbins=bins, marker={"color": ACCENT, "line": {"width": 1, "color": "white"}},
                                         hovertemplate=f"{axis}: %{{x}}<br>frames: %{{y}}<extra></extra>"))
            fig.add_vline(x=limit, line={"color": FLAG, "dash": "dash", "width": 1.5}, annotation_text=f"flag {side} {limit:g}",
                          annotation_position="top right", annotation_font={"color": FLAG, "size": 12})
            fig.update_xaxes(title=axis)
            fig.update_yaxes(title="frames", rangemode="tozero")
            plots.append(charts(style(fig, title=title, right=LABEL_MARGIN), name))
        parts.append(f"<p>{len(records)} aligned frames of {len({r.get('clip') for r in records})} clips (each clip's apex frame, "
                     f"its own reference, left out). Frames are flagged below a match score of {params.min_score:g} or above a "
                     f"residual of {params.max_residual:g} crop px (<code>--min-score</code>, <code>--max-residual</code>).</p>"
                     f'<div class="charts2">{"".join(plots)}</div>')
    else:
        parts.append(_note(f"No per-frame alignment records ({ALIGNMENT_FILE}) in this folder."))
    ok = output.ok
    trusted = Counter(r.get("align_trusted") or "—" for r in ok)
    parts.append(f"<p>Clips whose every frame passes: {trusted.get('yes', 0)} of {len(ok)}; flagged: {trusted.get('no', 0)}.</p>")
    by_score = sorted(ok, key=lambda r: (_number(r.get("match_score_min")), r.get("clip", "")))
    by_residual = sorted(ok, key=lambda r: (-_number(r.get("residual_max")) if math.isfinite(_number(r.get("residual_max"))) else 0,
                                            r.get("clip", "")))
    header = ("clip", "lowest match score", "largest residual (px)", "trusted", "flagged frames")
    cells = lambda r: (r.get("clip"), r.get("match_score_min"), r.get("residual_max"), r.get("align_trusted"), r.get("flagged_frames") or "—")  # noqa: E731
    parts.append('<div class="cols2">'
                 f'<div><h3>Lowest match scores</h3>{_table(header, [cells(r) for r in by_score[:WORST]])}</div>'
                 f'<div><h3>Largest residuals</h3>{_table(header, [cells(r) for r in by_residual[:WORST]])}</div></div>')
    parts.append("<h3>Before and after alignment</h3>")
    if frames.dataset is None:
        parts.append(frames.unreachable("The before / after pairs"))
    else:
        parts.append(f"<p>The {PAIRS} clips with the lowest match score. Top: the onset and apex frames cropped to the apex face "
                     "box (MTCNN on the apex), before alignment: head motion shows as difference everywhere. Bottom: the aligned "
                     f"crops. Differences of at least {DIFF_THRESHOLD} grey levels are shown (inferno), the rest black.</p>")
        for row in by_score[:PAIRS]:
            parts.append(_pair(row, frames, crops.get(row["clip"])))
    return "".join(parts)


def _pair(row: dict[str, str], frames: Frames, crops: dict[int, np.ndarray] | str | None) -> str:
    """One clip's before / after difference figure: onset vs apex, apex-box crops vs aligned crops."""
    from sammflow.figures import pair_figure, resize

    clip = row["clip"]
    try:
        if not isinstance(crops, dict):
            raise ClipError(crops or f"{clip}: no aligned crops")
        onset, apex = int(row["onset"]), int(row["apex"])
        box = box_of(row)
        raw = [frames.raw(row, n) for n in (onset, apex)]
        figure = pair_figure(raw, (box, box), (crops[onset], crops[apex]), DIFF_THRESHOLD)
    except (ClipError, KeyError, ValueError) as exc:
        return _note(f"{clip}: no before / after figure ({exc})")
    before, after = figure.before, figure.after
    cells = [(before[0], f"apex box on onset frame {onset}"), (before[1], f"apex box on apex frame {apex}"),
             (before[2], f"difference: {figure.before_fraction:.1%} of pixels"),
             (after[0], f"aligned onset {onset}"), (after[1], f"aligned apex {apex}"),
             (after[2], f"difference: {figure.after_fraction:.1%} of pixels")]
    tiles = "".join(_figure(_img(resize(image, CROP), text, fmt="png" if i % 3 == 2 else "jpeg"), _e(text), cls="tile")
                    for i, (image, text) in enumerate(cells) if image is not None)
    return (f'<div class="pair"><h4>{_e(clip)} · lowest match score {_e(row.get("match_score_min"))}</h4>'
            f'<div class="tiles3">{tiles}</div></div>')


def grid_section(output: Output, frames: Frames, crops: dict[str, dict[int, np.ndarray] | str], firsts: dict[str, int]) -> str:
    """Every ok clip's first, onset and apex aligned crops as small JPEG thumbnails."""
    from sammflow.figures import resize

    if not frames.reachable:
        return frames.unreachable("The normalized grid's aligned crops")
    size = output.params.align.crop_size
    cards, failed = [], []
    for row in output.ok:
        clip = row["clip"]
        got = crops.get(clip)
        if not isinstance(got, dict):
            failed.append((clip, got or "not computed"))
            continue
        numbers = (("first", firsts[clip]), ("onset", int(row["onset"])), ("apex", int(row["apex"])))
        thumbs = "".join(_img(resize(got[n], THUMB), f"{clip} {which} frame {n}", fmt="jpeg", title=f"{which}: frame {n}")
                         for which, n in numbers)
        emotion = f" · {_e(row.get('emotion'))}" if row.get("emotion") else ""
        flag = ' <span class="flag" title="a frame is flagged">flagged</span>' if row.get("align_trusted") == "no" else ""
        cards.append(f'<div class="card"><div class="thumbs">{thumbs}</div><div class="label">{_e(clip)}{emotion}{flag}</div></div>')
    source = "read from this normalize output" if output.kind == "normalized" else (
        "read from the normalize output it was made from" if frames.crops is not None else
        "recomputed from the dataset with the recorded parameters and each clip's face box from the manifest")
    intro = (f"<p>Each ok clip: its first, onset and apex frames, aligned to the apex face crop ({size}×{size} px, shown at "
             f"{THUMB} px; {source}). A still face in the same place in all three is what alignment should give.</p>")
    problems = _details(f"{len(failed)} clip(s) without crops", _table(("clip", "why"), failed)) if failed else ""
    return intro + f'<div class="grid">{"".join(cards)}</div>' + problems


def flows_section(output: Output, frames: Frames, sample: list[str], flows: dict[str, tuple[FlowField, np.ndarray] | str]) -> str:
    """A seeded 3 × 3 sample of flow maps with captions, the colour wheel and each map's scale."""
    from sammflow.encode import map_scale
    from sammflow.figures import colour_wheel, enlarge, map_channels, map_legend

    encode = output.params.encode
    rows = {r["clip"]: r for r in output.rows}
    maps_here = output.kind == "flows"
    tiles = []
    first_flow = None
    for clip in sample:
        row = rows[clip]
        got = flows.get(clip)
        flow = got[0] if isinstance(got, tuple) else None
        first_flow = first_flow or flow
        picture = None
        if maps_here and _plain_relative(row.get("output", "")) and (output.out / row["output"]).is_file():
            picture = _read_rgb(output.out / row["output"])
        elif isinstance(got, tuple):
            picture = np.ascontiguousarray(got[1][..., ::-1])
        if picture is None:
            tiles.append(_figure(_note(f"no map: {got}" if isinstance(got, str) else "no map"), _e(clip), cls="tile map"))
            continue
        if flow is None:
            scale = f"scale not known: {got}" if isinstance(got, str) else "scale not known"
        elif encode.channels == "hsv":
            scale = map_scale(flow, params=encode).label()
        else:
            scale = "; ".join(f"{c[0].upper()}: {low:.3g} … {high:.3g} {unit}" for c, _, low, high, unit in map_channels(flow, params=encode))
        caption = f"<b>{_e(clip)}</b>" + (f" · {_e(row['emotion'])}" if row.get("emotion") else "") + f"<br>{_e(scale)}"
        tiles.append(_figure(_img(enlarge(picture, MAP), f"flow map of {clip}"), caption, cls="tile map"))
    made = ("read from this folder's flows/" if maps_here else
            "computed for this report with the recorded flow and map parameters (this folder holds no maps)")
    h, w = encode.size, encode.size
    if encode.channels == "hsv":
        if encode.scale == "fixed":
            how = f"Every map has the same scale: full brightness = {encode.fixed_scale:g} crop px (<code>--map-scale fixed</code>)."
        elif encode.scale == "minmax":
            how = "Each map is normalised on its own: black = its smallest, full brightness = its largest magnitude (<code>--map-scale minmax</code>)."
        else:
            how = ("Each map is normalised on its own: full brightness = the 99th percentile of its flow magnitude away from the "
                   "crop's border, stronger motion clipped. A still face is as bright as a strong expression: compare each caption's "
                   "scale, not brightness, across maps.")
        fixed = encode.scale == "fixed" and first_flow is not None  # one scale for all: the wheel says it
        wheel = map_legend(first_flow, params=encode, size=220)[0] if fixed else colour_wheel(220)
        legend = _figure(_img(wheel, "colour wheel: direction is hue, magnitude is brightness"),
                         "Direction = hue (0° right, 90° down, image directions), magnitude = brightness.", cls="legend")
    else:
        how = ("Each channel of each map is min-max normalised on its own (R = u, G = v, B = "
               + ("optical strain" if encode.channels == "uvs" else "0") + "): each caption gives what 0 and 255 stand for.")
        legend = (_figure(_img(map_legend(first_flow, params=encode, size=220)[0], "map channels"),
                          "Channels of the first map (crop px; strain px/px).", cls="legend") if first_flow is not None else "")
    if frames.reachable or maps_here:
        why = "" if frames.reachable else " " + frames.unreachable("The maps' brightness scales")
    else:
        return frames.unreachable("The flow maps")
    intro = (f"<p>{len(sample)} clips drawn at random (seed {SAMPLE_SEED}, the same every time) from the {len(output.ok)} ok clips; "
             f"{w}×{h} maps {made}, enlarged with their real pixels. {how}</p>{why}")
    return intro + f'<div class="flows"><div class="tiles3">{"".join(tiles)}</div>{legend}</div>'


def _plain_relative(text: str) -> bool:
    parts = Path(text).parts
    return bool(parts) and not Path(text).is_absolute() and all(_plain(p) for p in parts)


def _read_rgb(path: Path) -> np.ndarray | None:
    """An image file as RGB, or ``None`` when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def clips_section(output: Output, frames: Frames, chosen: list[str], flows: dict[str, tuple[FlowField, np.ndarray] | str],
                  charts: Charts, progress: Progress, *, asked: bool = False) -> str:
    """For each chosen clip: aligned onset and apex, an onset→apex GIF, and u, v, strain as interactive heatmaps."""
    from sammflow.animate import label_frame
    from sammflow.charts import CHANNELS, channel_chart
    from sammflow.figures import resize

    rows = {r["clip"]: r for r in output.rows}
    parts = [f"<p>{len(chosen)} clip(s) ({'as asked' if asked else 'the first of the flow sample'}): "
             "aligned onset and apex, the motion between them as a GIF (slowed down), and the flow's u, v and optical strain at "
             "crop resolution (hover for values; colour ranges hold 99 % of the face's values, the rest saturates).</p>"]
    if not frames.reachable:
        return parts[0] + frames.unreachable("The clips' crops, GIFs and flows")
    for clip in chosen:
        row = rows[clip]
        progress(f"clip {clip}: crops, GIF and flow channels")
        if row.get("status") != "ok":
            parts.append(f"<h3>{_e(clip)}</h3>" + _note(f"{clip} is {row.get('status')}: {row.get('error') or 'no output'}"))
            continue
        onset, apex = int(row["onset"]), int(row["apex"])
        try:
            clip_ann, clip_frames, _ = frames.clip(row)
            gif_file = output.out / f"{output_stem(clip_ann.dataset, clip_ann.subject, clip_ann.clip)}.gif"
            if output.kind == "gifs" and gif_file.is_file():
                gif, gif_note = gif_file.read_bytes(), "this folder's GIF"
            else:
                gif, gif_note = _gif(row, frames, clip_ann, clip_frames)
            stills = frames.aligned(row, (onset, apex))
        except (ClipError, ValueError, OSError) as exc:
            parts.append(f"<h3>{_e(clip)}</h3>" + _note(str(exc)))
            continue
        images = [_figure(_img(label_frame(resize(stills[n], CROP), n, marker), f"{clip} aligned {marker}", fmt="jpeg"),
                          f"aligned {marker} (frame {n})", cls="tile") for n, marker in ((onset, "onset"), (apex, "apex"))]
        images.append(_figure(f'<img src="{_uri(gif, "image/gif")}" alt="{_e(clip)} onset to apex" width="{CROP}" height="{CROP}">',
                              _e(gif_note), cls="tile"))
        got = flows.get(clip)
        if isinstance(got, tuple):
            flow = got[0]
            fields = (flow.uv[..., 0], flow.uv[..., 1], flow.strain)
            heatmaps = "".join(charts(channel_chart(values, title, unit, signed=signed, height=300), f"{clip}_{title.split(':')[0]}")
                               for values, (title, unit, signed) in zip(fields, CHANNELS))
            channels = f'<div class="charts3">{heatmaps}</div>'
        else:
            channels = _note(f"no flow: {got}")
        label = " · ".join(_e(v) for v in (row.get("emotion"), f"AU {row['action_units']}" if row.get("action_units") else "") if v)
        parts.append(f'<h3>{_e(clip)}{" · " + label if label else ""}</h3><div class="tiles3">{"".join(images)}</div>{channels}')
    return "".join(parts)


def _gif(row: dict[str, str], frames: Frames, clip: ClipAnnotation, clip_frames: ClipFrames) -> tuple[bytes, str]:
    """An onset→apex GIF of aligned crops (every n-th frame: at most ``GIF_FRAMES``), and its caption."""
    from sammflow.animate import encode_gif, gif_frame_numbers

    span = clip_frames.span(clip.onset, clip.apex)
    step = max(1, math.ceil(len(span) / GIF_FRAMES))
    gif = GifParams(step=step, size=CROP, fps=8.0)
    numbers = gif_frame_numbers(clip_frames.numbers, clip, params=gif)
    crops = frames.aligned(row, numbers)
    fps = KINDS[clip.dataset].fps if clip.dataset in KINDS else None
    rate = f", filmed at {fps:g} fps" if fps else ""
    return (encode_gif([crops[n] for n in numbers], params=gif, numbers=numbers, clip=clip),
            f"onset → apex, {len(numbers)} frames ({'every frame' if step == 1 else f'every {step}th frame'} on disk), shown at "
            f"{gif.fps:g} fps{rate}")


def parameters_section(output: Output) -> str:
    """Every parameter, the preset and its changes, versions, hash, times, and the command that reproduces the folder."""
    content = output.content
    params = output.params
    preset = content.get("preset") or ""
    base = PipelineParams.from_preset(preset).to_dict() if preset in PRESETS else PipelineParams().to_dict()
    recorded = content.get("params") or {}
    settings = content.get("settings") or {}
    rows, unused = [], []
    for stage, cls in STAGE_CLASSES.items():
        values = getattr(params, stage)
        for f, p in declared(cls):
            value = getattr(values, f.name)
            if f.name in settings.get(stage, {}):
                role = "setting (not in the hash)"
            elif f.name in recorded.get(stage, {}):
                role = "in the hash"
            else:
                role = "not used here" if not values.active(f.name) else "default (added since)"
            changed = "changed" if value != base[stage][f.name] else ""
            (unused if role == "not used here" else rows).append((STAGES[stage], option(f, p), value, role, changed))
    argv = reproduce_argv(output)
    command = shlex.join(["sammflow", *argv])
    gif = content.get("gif")
    changes = content.get("preset_changes") or []
    facts = [("kind", content.get("kind")), ("params_hash", content.get("params_hash")), ("preset", preset or "none"),
             ("changed from the preset", ", ".join(changes) or "nothing"), ("created", content.get("created") or "?"),
             ("finished", content.get("finished") or "not finished")]
    if preset in PRESETS:
        facts.append(("preset's basis", PRESETS[preset].basis))
    versions = content.get("versions") or {}
    parts = [f'<p>The command that makes this folder again (from {PARAMS_FILE}; flags only where a value differs from the preset\'s):</p>'
             f'<pre class="command"><code>{_e(command)}</code></pre>',
             _table(("", ""), facts, cls="facts"),
             "<h3>Every parameter</h3>",
             _table(("stage", "flag", "value", "role", "vs preset"), rows, cls="params"),
             _details(f"{len(unused)} parameter(s) without effect with these values (another flow method's, say)",
                      _table(("stage", "flag", "value", "role", "vs preset"), unused, cls="params")) if unused else ""]
    if isinstance(gif, dict):
        parts.append("<h3>Animation</h3>" + _table(("parameter", "value"), sorted(gif.items())))
    parts.append("<h3>Package versions</h3>" + _table(("package", "version"), sorted(versions.items()), cls="compact"))
    parts.append(f'<p class="small">Report made by sammflow {_e(__version__)} on '
                 f'{_e(datetime.now(timezone.utc).isoformat(timespec="seconds"))}.</p>')
    return "".join(parts)


def _value_args(flag: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, repr(value) if isinstance(value, float) else str(value)]


#: The parameter stages each command takes on its command line.
_COMMAND_STAGES = {"export": tuple(STAGES), "normalize": ("annotations", "detect", "align"), "flows": ("flow", "encode"),
                   "gif": ("annotations", "detect", "align")}


def reproduce_argv(output: Output) -> list[str]:
    """The command line (without ``sammflow``) that makes this folder again, from its ``params.json``.

    Every parameter its command takes that differs from the preset's value (the defaults
    without one) is given by its flag; the quality thresholds and the device (outside the
    hash, in ``settings``) too where they differ. Parsed by ``sammflow.cli``, it gives the
    recorded ``params_hash``.

    Returns
    -------
    list of str
        ``["export", DATA, OUT, "-a", ANNOTATIONS, "--preset", "seed", "--winsize", "21", ...]``.
    """
    content = output.content
    kind, out = output.kind, str(output.out)
    dataset, annotations = str(content.get("dataset") or "DATA"), str(content.get("annotations") or "")
    dataset_kind = str(content.get("dataset_kind") or "")
    if kind == "normalized":
        command = "normalize"
    elif kind == "gifs":
        command = "gif"
    elif content.get("normalized"):
        command = "flows"
    else:
        command = "export"
    if command == "flows":
        argv = ["flows", str(content["normalized"]), out]
    elif "+" in dataset_kind:  # a composite: --dataset KIND=PATH,annotations=FILE each
        argv = [command, out]
        for part_kind, path, file in composite_parts(content):
            argv += ["--dataset", f"{part_kind}={path}" + (f",annotations={file}" if file else "")]
    else:
        argv = [command, dataset, out] + (["-a", annotations] if annotations else [])
        if dataset_kind and dataset_kind != "samm":
            argv += ["--kind", dataset_kind]
    preset = content.get("preset") or "seed"
    if command in ("export", "flows"):
        argv += ["--preset", preset]
    base = PipelineParams.from_preset(preset if command in ("export", "flows") and preset in PRESETS else "seed")
    params = output.params
    for stage in _COMMAND_STAGES[command]:
        mine, theirs = getattr(params, stage), getattr(base, stage)
        for f, p in declared(STAGE_CLASSES[stage]):
            value = getattr(mine, f.name)
            if value != getattr(theirs, f.name) and (mine.active(f.name) or not p.output):
                argv += _value_args(option(f, p), value)
    if command == "gif" and isinstance(content.get("gif"), dict):
        defaults = GifParams()
        for f, p in declared(GifParams):
            value = content["gif"].get(f.name, getattr(defaults, f.name))
            if value != getattr(defaults, f.name):
                argv += _value_args(option(f, p), value)
        argv += [arg for row in output.rows for arg in ("-c", row["clip"])] if len(output.rows) else []
    if command in ("export", "flows") and (output.out / FEATURES_FILE).is_file():
        argv.append("--arrays")
    return argv


# ============================================================== the page


CSS = """
:root { --ink: #1d2430; --muted: #5b6472; --line: #d9dee5; --accent: #1f5fa8; --flag: #c0392b; --paper: #fff; --soft: #f4f6f9; }
* { box-sizing: border-box; }
html { font-size: 18px; }
body { margin: 0; font-family: FONT; color: var(--ink); background: var(--paper); line-height: 1.45; }
header, main { max-width: 1280px; margin: 0 auto; padding: 0 28px; }
header { padding-top: 28px; }
h1 { font-size: 2rem; margin: 0 0 .2em; }
h2 { font-size: 1.55rem; margin: 1.6em 0 .6em; padding-top: .6em; border-top: 3px solid var(--accent); }
h3 { font-size: 1.2rem; margin: 1.3em 0 .5em; }
h4 { font-size: 1.05rem; margin: 1em 0 .4em; }
p { max-width: 75ch; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em; }
pre.command { background: #10161f; color: #e8eef6; padding: 14px 16px; border-radius: 6px; white-space: pre-wrap; word-break: break-all; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 18px; margin: 18px 0; }
nav.toc ol { margin: .3em 0; padding-left: 1.4em; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
.subtitle, .small, figcaption { color: var(--muted); }
.small { font-size: .8rem; }
.note { background: #fff7e6; border-left: 4px solid #e0a030; padding: 8px 12px; max-width: none; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .85rem; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); }
table.facts td:first-child { color: var(--muted); white-space: nowrap; }
table.params td:nth-child(2) { font-family: ui-monospace, Menlo, Consolas, monospace; }
details { margin: .4em 0; }
summary { cursor: pointer; font-weight: 600; }
details table { margin-left: 1.2em; }
figure { margin: 0; }
figcaption { font-size: .8rem; margin-top: 4px; }
.charts2, .charts3, .cols2 { display: grid; gap: 18px; }
.charts2, .cols2 { grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); }
.charts3 { grid-template-columns: repeat(auto-fit, minmax(330px, 1fr)); }
.chart { border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
.tiles3 { display: grid; grid-template-columns: repeat(3, max-content); gap: 14px 18px; }
.tile img, .legend img { display: block; image-rendering: auto; }
.map img { image-rendering: pixelated; }
.flows { display: flex; gap: 28px; align-items: flex-start; flex-wrap: wrap; }
.legend { max-width: 240px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(310px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 5px; }
.thumbs { display: flex; gap: 3px; }
.thumbs img { width: 96px; height: 96px; }
.label { font-size: .75rem; margin-top: 3px; overflow-wrap: anywhere; }
.flag { color: var(--flag); font-weight: 600; }
.pair { margin-bottom: 18px; }
@media print { h2 { break-before: page; } .chart { break-inside: avoid; } }
""".replace("FONT", FONT)

#: Draws every chart: its JSON, ``Plotly.newPlot``, no plotly logo, and two download buttons.
LOADER = """
(function () {
  function download(format, label) {
    return {
      name: label,
      icon: format === 'svg' ? Plotly.Icons.disk : Plotly.Icons.camera,
      click: function (gd) {
        Plotly.downloadImage(gd, {format: format, scale: format === 'png' ? 2 : 1, filename: gd.dataset.filename || 'chart'});
      }
    };
  }
  var buttons = [download('png', 'Download PNG (2×)'), download('svg', 'Download SVG')];
  var config = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ['toImage'], modeBarButtonsToAdd: buttons};
  document.querySelectorAll('script.plot-data').forEach(function (block) {
    var div = document.getElementById(block.dataset.for);
    var figure = JSON.parse(block.textContent);
    Plotly.newPlot(div, figure.data || [], figure.layout || {}, config);
  });
})();
"""


def _page(title: str, subtitle: str, sections: dict[str, str]) -> str:
    from plotly.offline import get_plotlyjs

    toc = "".join(f'<li><a href="#{key}">{_e(SECTIONS[key])}</a></li>' for key in sections)
    body = "".join(f'<section id="{key}"><h2>{_e(SECTIONS[key])}</h2>{content}</section>' for key, content in sections.items())
    plotly_js = get_plotlyjs().replace("</script", "<\\/script")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style>"
            f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script><script>{plotly_js}</script></head>"
            f'<body><header><h1>{_e(title)}</h1><p class="subtitle">{subtitle}</p>'
            f'<nav class="toc"><b>Contents</b><ol>{toc}</ol></nav></header><main>{body}</main>'
            f"<script>{LOADER}</script></body></html>\n")


# ============================================================== the report


def _chosen(output: Output, clips: Sequence[str] | None, sample: list[str]) -> list[str]:
    if not clips:
        return sample[:DETAIL_CLIPS]
    known = {r.get("clip") for r in output.rows}
    unknown = [c for c in clips if c not in known]
    if unknown:
        raise ReportError(f"{show_path(output.out)}: --clips {', '.join(unknown)}: not in its {MANIFEST_FILE}")
    return list(dict.fromkeys(clips))


def _compute(output: Output, frames: Frames, wanted: list[str], progress: Progress) -> tuple[dict[str, Any], dict[str, int]]:
    """Aligned first / onset / apex crops of the ok clips (``wanted`` first), in threads; each
    clip's crops by frame number, or why there are none; and each clip's first frame."""
    rows = {r["clip"]: r for r in output.rows}

    def one(clip: str) -> tuple[dict[int, np.ndarray] | str, int]:
        row = rows[clip]
        try:
            _, clip_frames, _ = frames.clip(row)
            first = clip_frames.numbers[0]
            return frames.aligned(row, sorted({first, int(row["onset"]), int(row["apex"])})), first
        except (ClipError, ValueError, IndexError) as exc:
            return str(exc), -1

    crops: dict[str, Any] = {}
    firsts: dict[str, int] = {}
    if not frames.reachable:
        return crops, firsts
    order = list(dict.fromkeys([*wanted, *(r["clip"] for r in output.ok)]))
    with ThreadPoolExecutor(THREADS) as pool:
        for i, (clip, (got, first)) in enumerate(zip(order, pool.map(one, order)), start=1):
            crops[clip], firsts[clip] = got, first
            if i % 20 == 0 or i == len(order):
                progress(f"aligned crops: {i} of {len(order)} clips")
    return crops, firsts


def build_report(out_dir: str | Path, *, clips: Sequence[str] | None = None, progress: Callable[[str], None] | None = None) -> str:
    """The report of an output folder as one HTML string.

    Parameters
    ----------
    out_dir : str or Path
        A folder written by ``sammflow export`` or ``normalize`` (or ``flows``, ``gif``).
    clips : sequence of str, optional
        Clips shown in detail (default: the first ``DETAIL_CLIPS`` of the flow-map sample).
    progress : callable(str), optional
        Told what is being done (for a command line or a page).

    Returns
    -------
    str
        A self-contained HTML document (images as ``data:`` URIs, plotly.js inlined, no
        request when opened).

    Raises
    ------
    ReportError
        ``out_dir`` is not a sammflow output folder or cannot be read, or ``clips`` names a
        clip its manifest does not hold.
    """
    say = progress or (lambda text: None)
    output = read_output(out_dir)
    ok = [r["clip"] for r in output.ok]
    from sammflow.tables import sample as draw

    sample = draw(ok, SAMPLE_SEED, SAMPLE_SIZE)
    chosen = _chosen(output, clips, sample)
    say(f"reading the dataset recorded in {PARAMS_FILE}")
    frames = Frames.of(output)
    crops, firsts = _compute(output, frames, [*sample, *chosen], say)
    say("flows of the sampled clips")
    params = output.params
    flows: dict[str, tuple[FlowField, np.ndarray] | str] = {}
    for clip in dict.fromkeys([*sample, *chosen]):
        got = crops.get(clip)
        row = next(r for r in output.rows if r["clip"] == clip)
        if isinstance(got, dict):
            try:
                flows[clip] = flow_from_crops(got[int(row["onset"])], got[int(row["apex"])], params=params)
            except (ValueError, KeyError) as exc:
                flows[clip] = f"{clip}: {exc}"
        else:
            flows[clip] = got if isinstance(got, str) else (frames.why or f"{clip}: not ok")
    charts = Charts()
    say("dataset and alignment sections")
    sections = {"dataset": dataset_section(output, frames, charts), "alignment": alignment_section(output, frames, charts, crops)}
    say("normalized grid")
    sections["grid"] = grid_section(output, frames, crops, firsts)
    sections["flows"] = flows_section(output, frames, sample, flows)
    sections["clips"] = clips_section(output, frames, chosen, flows, charts, say, asked=bool(clips))
    sections["parameters"] = parameters_section(output)
    name = output.out.resolve().name or str(output.out)
    subtitle = (f"{_e(_command_name(output))} output · {len(ok)} of {len(output.rows)} clips ok · params_hash "
                f"<code>{_e(output.content.get('params_hash'))}</code> · {_e(output.content.get('dataset_kind') or '')}")
    say("page")
    return _page(f"sammflow report: {printable(name)}", subtitle, sections)


def write_report(out_dir: str | Path, *, clips: Sequence[str] | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """``build_report``, written atomically (``sammflow.files.write_atomic``) to ``OUT/report.html``; returns the path.

    Raises
    ------
    ReportError
        As ``build_report``, or the file cannot be written (one line naming it and the cause).
    """
    text = build_report(out_dir, clips=clips, progress=progress)
    path = Path(out_dir) / REPORT_FILE
    try:
        write_atomic(path, text.encode("utf-8"))
    except OSError as exc:
        raise ReportError(f"{show_path(path)}: cannot be written ({exc.strerror or exc})") from None
    return path
