"""The Streamlit layer of the dashboard: the only module of sammflow that imports Streamlit.

It owns what the pages share and nothing else:

* **the sidebar** (``sidebar``): which dataset — the generated demo by default; a folder of
  any kind (``sammflow.kinds``: a *Kind* box, auto by default) with its annotation file (by
  default the kind's file found in the folder), typed in or given by ``SAMMFLOW_DATA`` /
  ``SAMMFLOW_ANNOTATIONS``; a *Video* file with its events, extracted into the cache
  (``sammflow.access.extract_video``; an event without an apex sets the apex policy to
  ``auto``, which spots it); or a *Composite* of one folder per kind, merged — and the
  processing parameters, one widget per parameter declared with a ``label`` in
  ``sammflow.params`` (``STAGE_CLASSES``: the annotation settings first), each shown only
  where it has an effect (``Param.applies``), and a preset (``PRESETS``) above the flow
  parameters that sets them all. Every widget is bound to the URL (``bind="query-params"``),
  so a copied link reopens the same view. Paths are confined by ``sammflow.access`` (see
  there: what a page user can reach). Under them, the format every chart's camera button
  downloads (``CHART_FORMAT_KEY``: a 2× PNG or an SVG), which the pages' charts take from
  ``chart``.
* **the session context** (``context``): the open dataset, resolved with the sidebar's
  annotation settings (``Dataset.resolved``), and the parameters, for the pages.
* **the cached compute layer**: ``st.cache_data`` around the pipeline's own functions and
  types (``NormalizedClip``, ``FlowField``), keyed by dataset (+ annotation settings) + clip id
  + the hashes of the parameters that change the result (never by arrays); under it the
  on-disk ``sammflow.cache.ClipStore``, the one cache of apex boxes, so a restart or a change
  of a flow parameter or a quality threshold never re-detects nor re-aligns. A flow field is
  kept by its crops and the flow parameters active under its method; its map is encoded on
  each call (milliseconds), so a map parameter computes no flow. The pages that show many
  clips get them together (``sammflow.tiles``): ``grid`` aligns on the worker pool and is then
  kept whole as drawn; ``flows`` computes in threads. A clip whose apex is to be spotted is
  spotted first (``spotted``, ``sammflow.pipeline.spot_clip``), and every page then uses that
  apex, as the export does. MTCNN itself is the process-wide detector of
  ``sammflow.detect.load_detector``.

The *Download report* button of an export (``report_button``) builds the folder's HTML report
(``sammflow.report``) only when it is clicked.

Tables, figures, paths and the export job are Streamlit-free modules (``sammflow.tables``,
``sammflow.figures``, ``sammflow.access``, ``sammflow.export``) that the pages call directly.
MTCNN is only loaded when a face box is missing from the disk cache (on CPU it runs on
OpenCV: torch is never imported).

Bad input is an ``st.error`` naming the path or clip and the cause, never a traceback: an
unusable dataset folder or annotation file in the sidebar (no page runs), a clip whose frames
cannot be decoded on the page that needed them (the other clips still show), and anything
unexpected in a page (``run_page``: the cause on the page, the traceback in the server log).
The dashboard has no upload widget: it reads datasets where they are.

The demo dataset of the first run is generated in a thread of the server process
(``sammflow.access.demo_build``), which the pages only watch: closing the tab does not stop
it, and a tab opened meanwhile shows its progress, then the dataset.

Memory: every ``st.cache_data`` has ``max_entries``. At the default 224 px crops the
in-memory caches hold at most about 512 × 0.1 MB (crops) + 128 × 0.4 MB (flow fields) + 6 ×
8 MB (grids of SAMM's 159 clips) + 32 × 1 MB (GIFs) + 2 × 8 datasets (as read, and resolved)
≈ 200 MB, shared by all sessions (spotted apexes and motion curves are a few KB each), on top
of MTCNN (a few MB on OpenCV, only on a disk-cache miss; ≈ 0.65 GB with torch on a GPU) and the worker
processes of ``sammflow.workers`` (one per core, started by the first grid or TV-L1 sample
that needs them, kept for the server's life); a session itself keeps only its page's
images, after an export its manifest rows, and after *Prepare zip* on the GIF page that zip
(``MAX_ZIP_BYTES`` at most).
"""

from __future__ import annotations

import dataclasses
import html
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import streamlit as st

from sammflow import __version__, access, charts, export, tables, tiles
from sammflow.export import GifZip, zip_gifs
from sammflow.access import AUTO, ENV_DATA, ENV_ANNOTATIONS, ENV_DEVICE, ENV_ROOTS, DatasetRef, demo_config, demo_root, kind_title
from sammflow.animate import encode_gif, gif_frame_numbers
from sammflow.annotations import ClipAnnotation
from sammflow.cache import ENV_CACHE, ClipStore, aligned_crops, cache_dir, clip_of, motion, mtcnn_track, prune, spotted_clip
from sammflow.cluster import Scheduler
from sammflow.dataset import Dataset, FrameError, read_grey
from sammflow.demo import ANNOTATIONS
from sammflow.detect import FaceBox
from sammflow.figures import PairFigure, pair_figure as draw_pair
from sammflow.encode import encode_flow
from sammflow.flow import FlowField, FlowMethodUnavailable, require_method
from sammflow.kinds import KINDS
from sammflow.outfolder import JobReport
from sammflow.params import PRESETS, STAGE_CLASSES, AnnotationParams, GifParams, Param, PipelineParams, declared
from sammflow.pipeline import ClipError, ClipFlow, NormalizedClip
from sammflow.tables import frame_rate, ready_ids
from sammflow.text import printable, show_path
from sammflow.tiles import FrameRequest, Grid
from sammflow.workers import RowCallback

#: The default demo's generation on the first run, measured (s): said on the page while it runs.
DEMO_FIRST_RUN_S = 25
#: Bounded in-memory caches (entries per cached function).
MAX_CLIP_ENTRIES = 512  # crops of one or two frames (≈ 50 KB each at 224 px)
MAX_FLOW_ENTRIES = 128  # ≈ 0.4 MB each (float flow field)
MAX_GRID_ENTRIES = 6  # a whole grid, ≈ 50 KB a tile (8 MB for SAMM's 159 clips)
MAX_ALIGNMENT_ENTRIES = 64  # per-frame match records of whole clips, no images
MAX_GIF_ENTRIES = 32
MAX_DATASET_ENTRIES = 8  # datasets read (annotations + frame paths)

_CTX_KEY = "_sammflow_context"
_LINKS_CHECKED = "_sammflow_links_checked"  # URL keys whose link values were checked (link_choice)
#: Dataset sources of the sidebar (URL values) and their captions.
_SOURCES = {"Demo": "generated SAMM-like dataset", "Folder": "a dataset on this machine", "Video": "a video file and its events",
            "Composite": "one dataset per kind, merged"}
#: The kind box's options: auto, then every kind (shown by title, which the link holds too).
_KIND_OPTIONS = (AUTO, *KINDS)
#: The sidebar's expander of each stage's parameters (``sammflow.params.STAGE_CLASSES``), in order.
_GROUPS = {"annotations": "Annotations", "detect": "Face detection", "align": "Alignment", "flow": "Optical flow", "encode": "Flow map"}
#: The preset of a new session: sammflow's defaults (the command line's default too).
DEFAULT_PRESET = "seed"
#: Widget key and URL query parameter of the preset.
PRESET_KEY = "preset"
#: Widget key and URL query parameter of the format every chart downloads in, and its options
#: (shown, and held in the link) → ``sammflow.charts.IMAGE_FORMATS``.
CHART_FORMAT_KEY = "chart_format"
CHART_FORMATS = {"PNG": "png", "SVG": "svg"}
#: The stages whose widgets a chosen preset sets (every one: its value, else the default); the
#: preset box is drawn above the first of them.
PRESET_STAGES = tuple(stage for stage in STAGE_CLASSES if stage in ("flow", "encode")
                      or any(stage in preset.values for preset in PRESETS.values()))


# ============================================================== sidebar parameters, widget helpers


def _widgets() -> list[tuple[str, dataclasses.Field[Any], Param]]:
    """(stage, field, declaration) of every parameter the sidebar shows (declared with a ``label``)."""
    return [(stage, f, p) for stage, cls in STAGE_CLASSES.items() for f, p in declared(cls) if p.label]


def _key(f: dataclasses.Field[Any], p: Param) -> str:
    return p.key or f.name


def _chosen_preset() -> str:
    name = st.session_state.get(PRESET_KEY, DEFAULT_PRESET)
    return name if name in PRESETS else DEFAULT_PRESET


def _set_widgets(stages: Iterable[str]) -> None:
    """Put the chosen preset's values (the defaults where it sets none) in the widgets of ``stages``.

    Through the widgets' keys: the widgets take no default argument (see ``_param_widget``),
    so this is the Session State API's supported way, not the one Streamlit warns about. Only
    the widgets holding another value: a key set this way is written to the link, explicitly;
    a widget not drawn yet starts from the preset's value anyway.
    """
    values = PipelineParams.from_preset(_chosen_preset()).to_dict()
    for stage, f, p in _widgets():
        key = _key(f, p)
        if stage in stages and key in st.session_state and st.session_state[key] != values[stage][f.name]:
            st.session_state[key] = values[stage][f.name]


def _reset_params() -> None:
    # every parameter back to the preset's value (sammflow's defaults with seed)
    _set_widgets(STAGE_CLASSES)


def _apply_preset() -> None:
    # a chosen preset sets all the flow and map widgets: those it names to its values, the rest to the defaults
    _set_widgets(PRESET_STAGES)


def _param_widget(f: dataclasses.Field[Any], p: Param, start: Any) -> Any:
    """The widget of one declared parameter: a selectbox for options or choices, a toggle for a
    flag, else a slider over the declared slider range.

    Its value lives under its key only: ``start`` (the preset's value, else the declared
    default) is put there before the widget is first drawn (a link's value still wins on a
    fresh page load), and no ``value``/``index`` argument is passed. Passing one as well as
    setting the key (which *Reset parameters* and the preset do) is the pattern Streamlit logs
    a warning with a stack trace about.
    """
    default = f.default
    key = _key(f, p)
    st.session_state.setdefault(key, start)
    common = {"key": key, "help": p.help[:1].upper() + p.help[1:] + ".", "bind": "query-params"}
    options = list(p.options or p.choices)
    if options:
        options = [*(v for v in (default, start) if v not in options), *options]
        return st.selectbox(p.label, list(dict.fromkeys(options)), **common)
    if isinstance(default, bool):
        return st.toggle(p.label, **common)
    kind = type(default)
    low, high, step = p.slider
    return st.slider(p.label, kind(low), kind(high), step=kind(step), **common)


def _preset_box() -> str:
    """The preset selectbox and its title; returns the chosen preset's name."""
    st.session_state.setdefault(PRESET_KEY, DEFAULT_PRESET)
    # plain names as options: a bound widget's link holds what a format_func would return
    name = st.selectbox("Preset", list(PRESETS), key=PRESET_KEY, bind="query-params", on_change=_apply_preset,
                        help="The parameters of a model's published preprocessing. Choosing one sets every flow and flow-map "
                             "parameter (its values, the defaults for the rest); any of them can be changed after. "
                             + " ".join(f"**{n}**: {preset.title}." for n, preset in PRESETS.items()))
    st.caption(PRESETS[name].title)
    return name


def params_sidebar() -> PipelineParams:
    """Render the processing parameters (in the sidebar) and build the parameter set.

    One widget per parameter declared with a ``label``, in an expander per stage; a parameter
    is shown only where it has an effect with the values above it (``Param.applies``: the
    TV-L1 parameters under ``method = tvl1``), and the hidden ones keep the preset's values.
    The preset box stands above the flow parameters; the set carries its name, and the
    parameters changed from it are listed under it (``PipelineParams.preset_changes``).

    Raises
    ------
    ValueError
        An invalid combination (``PipelineParams``' own checks), for the sidebar's message.
    """
    chosen: dict[str, dict[str, Any]] = {stage: {} for stage in STAGE_CLASSES}
    chosen["detect"]["device"] = os.environ.get(ENV_DEVICE, "cpu")
    start = PipelineParams().to_dict()  # the preset's values once it is drawn (the stages above it: the defaults)
    name, changed = DEFAULT_PRESET, None
    st.subheader("Processing parameters")
    for stage, title in _GROUPS.items():
        if stage == PRESET_STAGES[0]:
            name = _preset_box()
            start = PipelineParams.from_preset(name).to_dict()
            changed = st.empty()
        with st.expander(title):
            for _, f, p in (w for w in _widgets() if w[0] == stage):
                if all(chosen[stage].get(other, start[stage][other]) == value for other, value in p.applies):
                    chosen[stage][f.name] = _param_widget(f, p, start[stage][f.name])
    st.button("Reset parameters", key="reset_params", on_click=_reset_params, width="stretch",
              help="Every parameter back to the preset's value (with seed: sammflow's defaults).")
    params = PipelineParams.from_preset(name, chosen)
    if changed is not None and params.preset_changes():
        changed.caption(f":material/tune: changed from preset: {', '.join(params.preset_changes())}")
    return params


def preset(key: str, options: Sequence[Any], default: Any) -> None:
    """Give a selection widget a valid value before it is drawn.

    For widgets whose options depend on another choice (the frames of the chosen clip).
    Never pass ``index`` to such a widget: its value comes from here or from the URL (which
    wins on a fresh page load).
    """
    if st.session_state.get(key) not in options:
        st.session_state[key] = default


def forget(*keys: str) -> Callable[[], None]:
    """An ``on_change`` callback dropping dependent choices (the frames when the clip changes).
    """

    def callback() -> None:
        for key in keys:
            st.session_state.pop(key, None)

    return callback


def link_choice(key: str, options: Sequence[Any], rule: str) -> list[str]:
    """Say so on the page when a link asks a selection widget for a value it does not offer.

    Call before drawing the widget bound to ``key``. Streamlit itself drops a URL value that
    is not among the options (``?clip=../../etc`` reads nothing: the widget falls back to its
    default); this makes the fallback visible instead of silent. Checked once per session and
    key: the values of the link that opened the page.

    Returns
    -------
    list of str
        The link's values for ``key`` that the widget offers, on the first call of the session
        for ``key`` (a link's choice, which a page may treat as the user's); ``[]`` on later calls.
    """
    checked = st.session_state.setdefault(_LINKS_CHECKED, set())
    if key in checked:
        # only a session's first run has the link's values: later, the URL holds the widget's own
        # values (and those of the previous clip while the frames are being reset)
        return []
    checked.add(key)
    offered = {str(o) for o in options}
    values = st.query_params.get_all(key)
    rejected = [v for v in values if v not in offered]
    if rejected:
        shown = ", ".join(f"`{v[:80]}`" for v in rejected[:3]) + (f" and {len(rejected) - 3} more" if len(rejected) > 3 else "")
        st.warning(f"Ignored from the link: {key} = {shown}, not {rule}.", icon=":material/link_off:")
    return [v for v in values if v in offered]


def run_page(page: Any) -> None:
    """Run a page; an unexpected exception becomes an ``st.error`` naming the page and the
    cause, with the traceback in the server log rather than in the browser.

    Expected problems (a clip that cannot be aligned, a bad path) are handled by the pages
    themselves with messages of their own; this is the net under them.
    """
    try:
        page.run()
    except Exception as exc:  # noqa: BLE001 - st.stop / st.rerun are BaseExceptions and pass through
        logging.getLogger("sammflow.ui").exception("page %r failed", getattr(page, "title", page))
        st.error(f"The page *{getattr(page, 'title', '')}* stopped on an unexpected error: {type(exc).__name__}: {exc}. "
                 "The full traceback is in the dashboard's server log.", icon=":material/error:")


# ============================================================== dataset choice


@dataclass(frozen=True)
class Context:
    """What every page needs: the dataset (loaded, and resolved with ``params.annotations``:
    ``open_dataset``), the processing parameters and the format the charts download in
    (``sammflow.charts.IMAGE_FORMATS``)."""

    ref: DatasetRef
    dataset: Dataset
    params: PipelineParams
    chart_format: str = "png"  # what the charts' camera button downloads (``chart``)

    @property
    def key(self) -> str:
        """The dataset part of every in-memory cache key: each folder's kind, path, annotation
        file and their signatures (``sammflow.access.ref_key``) + the annotation parameters
        (fixes and apex policy change the clips)."""
        return f"{access.ref_key(self.ref)}|{self.params.annotations.hash}"

    @property
    def fps(self) -> float | None:
        """The clips' frame rate: a video's own, else the kind's (``sammflow.tables.frame_rate``;
        ``None`` for a composite of different rates)."""
        return self.ref.fps or frame_rate(self.dataset)


#: How often a page watching the demo's generation redraws its progress bar (s).
DEMO_POLL_S = 0.25


def ensure_demo(place: Any = None) -> Path:
    """The demo dataset's folder in the cache, generated on first use with a progress bar.

    The generation runs in a thread of the server process (``sammflow.access.demo_build``),
    not in this session: closing the tab does not stop or lose it, and a tab opened meanwhile
    (in any session) shows the same progress and then the dataset, without starting over.

    Raises
    ------
    OSError, ValueError
        The generation failed (a read-only cache, a bad ``$SAMMFLOW_DEMO_CONFIG``).
    """
    config = demo_config()
    root = demo_root(config)
    build = access.demo_build(config)
    if build is None:
        return root
    place = place if place is not None else st.empty()
    with place.container():
        st.info(f"First run: generating a SAMM-like demo dataset in `{root}` (about {DEMO_FIRST_RUN_S} s, once; it goes on "
                f"if this tab is closed). Set `{ENV_DATA}` or choose *Folder* in the sidebar to open your own dataset.",
                icon=":material/hourglass_top:")
        bar = st.progress(build.fraction, text=build.text())
    while not build.wait(DEMO_POLL_S):
        bar.progress(build.fraction, text=build.text())  # stops here, not the build, when the tab goes
    place.empty()
    if build.error is not None:
        raise build.error if isinstance(build.error, (OSError, ValueError)) else OSError(f"{type(build.error).__name__}: {build.error}")
    return root


# Datasets are read-only once made: one object shared by every rerun and session
# (st.cache_data would unpickle a copy on each rerun, ≈ 10 ms for 160 clips, more with long clips).
@st.cache_resource(max_entries=MAX_DATASET_ENTRIES, ttl=600, show_spinner="Reading the dataset…")
def _load(root: str, annotations: str, signature: tuple[Any, ...], kind: str) -> Dataset:
    return access.load(root, annotations, signature, kind)


@st.cache_resource(max_entries=MAX_DATASET_ENTRIES, ttl=600, show_spinner="Applying the annotation settings…")
def _resolve(dataset_key: str, params_hash: str, _dataset: Dataset, _params: AnnotationParams) -> Dataset:
    # keyed by the dataset (``access.ref_key``: kinds, paths, signatures) + the annotation parameters' hash
    return _dataset.resolved(_params)


def open_dataset(ref: DatasetRef, params: AnnotationParams = AnnotationParams()) -> Dataset:
    """``sammflow.access.open_dataset``, read through the in-memory cache (10 min, or until *Rescan*;
    a composite: each of its folders), resolved with ``params`` (``Dataset.resolved``: shipped
    fixes, apex policy), cached alike.

    Raises
    ------
    ValueError
        As ``sammflow.access.open_dataset``, with a message for ``st.error``.
    """
    ref = access.resolved_ref(ref)
    dataset = access.open_dataset(ref, _load)
    if params == dataset.annotations.params:
        return dataset
    return _resolve(access.ref_key(ref), params.hash, dataset, params)


def _dataset_sidebar(notice: Any) -> DatasetRef:
    """The dataset choice: the source (demo, folder, video, composite) and its inputs.

    Raises
    ------
    ValueError
        With the message for ``st.error``: the demo could not be created, a composite's line or
        a video's events are not valid, the video cannot be extracted.
    """
    env_root = os.environ.get(ENV_DATA, "").strip()
    st.subheader("Dataset")
    sources = list(_SOURCES) if not env_root else ["Folder", "Demo", "Video", "Composite"]  # the default comes first
    source = st.radio("Source", sources, captions=[_SOURCES[s] for s in sources], key="source", bind="query-params",
                      label_visibility="collapsed", horizontal=True)
    if source == "Demo":
        try:
            root = ensure_demo(notice)
        except (OSError, ValueError) as exc:  # the demo could not be created (read-only cache, bad config)
            hint = f" Set {ENV_CACHE} to a writable folder, or open your own dataset." if isinstance(exc, OSError) else ""
            raise ValueError(f"Cannot create the demo dataset in {cache_dir()}: {exc}.{hint}") from None
        return DatasetRef(str(root), str(root / ANNOTATIONS), demo=True, kind="samm")
    if source == "Video":
        return _video_sidebar(notice)
    if source == "Composite":
        text = st.text_area("Datasets", key="composite", bind="query-params", placeholder="samm=/data/SAMM\ncasme2=/data/CASME2",
                            help="One dataset per line, `KIND=PATH[,annotations=FILE]` (as `sammflow export --dataset`), one of "
                                 f"each kind: {', '.join(f'**{name}** ({k.title})' for name, k in KINDS.items())}. Without "
                                 "`annotations=`, the kind's file in the folder. Subjects and clips are prefixed by their kind "
                                 "(`samm-006`), so leave-one-subject-out folds never mix two people.")
        try:
            return access.composite_ref(text)
        except ValueError as exc:
            raise ValueError(f"{exc}\n\nType the composite's datasets in the sidebar, or choose the demo dataset.") from None
    root = st.text_input("Dataset folder", value=env_root, key="data", bind="query-params", placeholder="/data/SAMM",
                         help="The dataset's folder as released: SAMM's `<subject>/<clip>/` frames, CASME II's `sub01/EP02_01f/`, "
                              f"SMIC's `HS/s1/micro/negative/s1_ne_01/` … Default: ${ENV_DATA}. "
                              f"Must lie inside the folders this dashboard may open (${ENV_ROOTS}).").strip()
    link_choice("kind", [_kind_label(k) for k in _KIND_OPTIONS], "a dataset kind")  # a bad link's kind is said, not silently dropped
    kind = st.selectbox("Kind", _KIND_OPTIONS, format_func=_kind_label, key="kind", bind="query-params",
                        help="Which dataset this is (its layout and annotation format). *auto*: from the annotation file's name, "
                             "then the folder's files and layout.")
    ann = st.text_input("Annotation file", value=os.environ.get(ENV_ANNOTATIONS, "").strip(), key="ann", bind="query-params",
                        placeholder="found in the folder",
                        help="Empty: the kind's file in the dataset folder ("
                             + "; ".join(f"{k.title}: {', '.join(f'`{p}`' for p in k.annotation_files[:2])}" for k in KINDS.values())
                             + f"). Default: ${ENV_ANNOTATIONS}.").strip()
    return DatasetRef(root, ann, kind=kind)


def _kind_label(kind: str) -> str:
    return AUTO if kind == AUTO else KINDS[kind].title


def _widget_key(stage: str, name: str) -> str:
    """The sidebar widget's key of a declared parameter (``"annotations"``, ``"apex"`` → ``apex_policy``)."""
    return next(_key(f, p) for s, f, p in _widgets() if s == stage and f.name == name)


def _video_sidebar(notice: Any) -> DatasetRef:
    """The video source: the file, its events (a CSV, or one event's onset / apex / offset), the
    frames extracted into the cache with a progress bar (once per video and events)."""
    video = st.text_input("Video file", key="video", bind="query-params", placeholder="/data/me/take1.mp4",
                          help="A video OpenCV reads (.mp4, .avi, .mov, .mkv …), inside the folders this dashboard may open "
                               f"(${ENV_ROOTS}). The frames of its events are extracted once into the cache.").strip()
    events_csv = st.text_input("Events file (CSV)", key="events", bind="query-params", placeholder="empty: one event, below",
                               help="A table with onset and offset columns and optionally apex, emotion and name: one clip per "
                                    "row. Frames are 0-based frame indices of the video.").strip()
    onset = apex = offset = None
    if not events_csv:
        c1, c2, c3 = st.columns(3)
        common = {"min_value": 0, "value": None, "step": 1, "bind": "query-params"}
        onset = c1.number_input("Onset", key="v_onset", help="The event's first frame (0-based frame index of the video).", **common)
        apex = c2.number_input("Apex", key="v_apex", help="Its apex frame. Empty: spotted (the apex policy *auto*).", **common)
        offset = c3.number_input("Offset", key="v_offset", help="Its last frame.", **common)
    if not video:
        raise ValueError("No video file given: type the path of a video file in the sidebar (and its events), or choose the demo dataset.")
    hint = "\n\nFix the video file or its events in the sidebar, or choose the demo dataset."
    try:
        facts = access.video_facts(video)
        st.caption(f"{facts['frames'] or '?'} frames · {facts['fps']:g} fps · {facts['width']}×{facts['height']} px; "
                   "frames are numbered from 0")
        events = access.video_events(events_csv, onset, offset, apex)
    except ValueError as exc:
        raise ValueError(f"{exc}{hint}") from None
    spotted = [i for i, event in enumerate(events, start=1) if event.apex is None]
    if spotted:
        key = _widget_key("annotations", "apex")
        if st.session_state.get(key, AnnotationParams().apex) == "annotated":
            st.session_state[key] = "auto"  # before its widget is drawn (below): the supported way to set it
        which = f"event {spotted[0]} has" if len(spotted) == 1 else f"{len(spotted)} events have"
        st.caption(f":material/info: {which.capitalize()} no apex: it is spotted (the frame of peak motion). The apex policy "
                   f"is *{st.session_state[key]}* (*Annotations* below); *annotated* would reject such an event.")
    bar = None

    def progress(done: int, total: int, label: str) -> None:
        nonlocal bar
        if bar is None:
            bar = notice.progress(0.0)
        bar.progress(done / max(total, 1), text=f"Extracting the frames of {label}: frame {done} of {total}")

    try:
        source = access.extract_video(video, events, progress=progress)
    except ValueError as exc:
        raise ValueError(f"{exc}{hint}") from None
    finally:
        notice.empty()
    return source.ref


def _where(ref: DatasetRef) -> str:
    """Each folder of a resolved dataset and its annotation file, for the sidebar's caption."""
    return " · ".join(f"`{part.root}` (`{Path(part.annotations).name}`)" for part in ref.parts or (ref,))


def sidebar() -> Context | None:
    """Render the shared sidebar; open the dataset; remember the context for the pages.

    Problems (a missing folder, an unreadable annotation file, invalid parameters) are shown
    with ``st.error`` in the main area, never as a traceback.
    """
    st.session_state.pop(_CTX_KEY, None)
    notice = st.empty()  # main-area slot for the first run's demo progress, and a video's extraction
    with st.sidebar:
        try:
            ref, error = _dataset_sidebar(notice), None
        except ValueError as exc:
            ref, error = None, str(exc)
        if st.button("Rescan dataset", help="Read the annotation file and the frames on disk again.", width="stretch"):
            # results in memory too (failures included); the disk cache checks its files itself
            for cached in (_load, _resolve, _spotted, _motion, _crops, _alignment, _grid, _flow_field, _gif):
                cached.clear()
        try:
            params = params_sidebar()
        except ValueError as exc:
            params, error = None, error or f"Invalid parameters: {exc}"
        chart_format = _chart_format_choice()
        st.caption(f"sammflow {__version__} · cache: {cache_dir()}")
    if error is None and ref is not None:
        try:
            ref = access.resolved_ref(ref)
            dataset = open_dataset(ref, params.annotations)
        except ValueError as exc:
            error = f"{exc}\n\nFix the path in the sidebar, or choose the demo dataset."
    if error is not None or ref is None or params is None:
        st.error(error, icon=":material/error:")
        return None
    context = Context(ref, dataset, params, chart_format)
    st.session_state[_CTX_KEY] = context
    with st.sidebar:
        n = len(dataset.annotations.clips)
        kind = "" if ref.parts else f" · {kind_title(ref.kind)}"  # a composite's label is its kinds
        st.caption(f"**{ref.label}**{kind} · {n} annotated clips · {len(ready_ids(dataset))} ready · {_where(ref)}")
    return context


def _chart_format_choice() -> str:
    """The sidebar's choice of what every chart's camera button downloads: ``"png"`` or ``"svg"``."""
    shown = st.segmented_control("Chart downloads", list(CHART_FORMATS), default="PNG", required=True, key=CHART_FORMAT_KEY,
                                 bind="query-params",
                                 help="What the camera button of every chart's toolbar downloads: **PNG** at twice the chart's "
                                      "size, or **SVG** (vector: sharp at any size, editable). Images download as 2× PNG.")
    return CHART_FORMATS.get(shown, "png")


def chart(place: Any, fig: Any, filename: str, **kwargs: Any) -> None:
    """Draw a plotly chart whose camera button downloads it as ``filename`` in the sidebar's format
    (``sammflow.charts.plotly_config``). Every page draws its charts through here.

    Parameters
    ----------
    place : streamlit module or container
        ``st``, a column, …
    fig : plotly.graph_objects.Figure
    filename : str
        The download's name, without extension.
    **kwargs
        For ``plotly_chart`` (``key``, ``width`` …).
    """
    place.plotly_chart(fig, config=charts.plotly_config(filename, image_format=context().chart_format), **kwargs)


def context() -> Context:
    """The context the sidebar built in this run (pages call this first).

    A page runs only through app.py after a successful sidebar, which stores the context; a
    page file run on its own gets a message instead.
    """
    ctx = st.session_state.get(_CTX_KEY)
    if ctx is None:
        st.error("No dataset is open. Start the dashboard with `streamlit run app.py`.")
        st.stop()
    return ctx


# ============================================================== cached compute layer


@st.cache_resource(max_entries=4)
def _prune_once(base: str) -> int:
    # bound the disk cache once per process; cheap (a directory listing)
    return prune(Path(base))


def _store(ref: DatasetRef) -> ClipStore:
    _prune_once(str(cache_dir()))
    return ClipStore(ref.root)


def _crops_key(params: PipelineParams) -> str:
    return f"{params.detect.hash}-{params.align.hash}"


def clip_error(clip_id: str, message: str, ctx: Context | None = None) -> ClipError:
    """A ``ClipError`` whose message starts with the clip id (``"006_1_1: <file>: <cause>"``).
    """
    if ctx is not None:
        for root in ctx.dataset.roots:
            message = message.replace(f"{Path(root)}{os.sep}", "")
    return ClipError(message if message.startswith(f"{clip_id}:") else f"{clip_id}: {message}")


T = TypeVar("T")


def _succeeded(result: T | str, clip_id: str, ctx: Context) -> T:
    """A cached result, or the ``ClipError`` of a failure cached as its message."""
    if isinstance(result, str):
        raise clip_error(clip_id, result, ctx)
    return result


@st.cache_data(max_entries=MAX_ALIGNMENT_ENTRIES, show_spinner=False)
def _spotted(dataset_key: str, clip_id: str, key: str, _ctx: Context) -> tuple[ClipAnnotation, dict[int, float]] | str:
    # keyed by dataset (+ annotation parameters) + clip + detection/alignment hashes: what spotting depends on
    try:
        return spotted_clip(_ctx.dataset, clip_id, _ctx.params, store=_store(_ctx.ref))
    except ClipError as exc:
        return str(exc)


def spotted(ctx: Context, clip_id: str) -> tuple[ClipAnnotation, dict[int, float]]:
    """``sammflow.cache.spotted_clip``: the clip with its apex spotted if it is to be (the
    sidebar's apex policy), and the motion curve it was spotted on (empty if it was not).

    Spotting aligns every frame from onset to offset (seconds for a SAMM clip), once per clip
    and parameter set: every page then uses the spotted apex, as the export does.

    Raises
    ------
    ClipError
        Unknown clip, no face, too few frames to spot from.
    """
    return _succeeded(_spotted(ctx.key, clip_id, _crops_key(ctx.params), ctx), clip_id, ctx)


def annotation(ctx: Context, clip_id: str) -> ClipAnnotation:
    """A clip as the pages process it: the dataset's annotation, its apex spotted where it is to
    be (``spotted``; a clip not to be spotted costs nothing).

    Raises
    ------
    ClipError
    """
    return spotted(ctx, clip_id)[0]


@st.cache_data(max_entries=MAX_ALIGNMENT_ENTRIES, show_spinner=False)
def _motion(dataset_key: str, clip_id: str, key: str, _ctx: Context) -> dict[int, float] | str:
    try:
        return motion(_ctx.dataset, clip_id, _ctx.params, store=_store(_ctx.ref))[1]
    except ClipError as exc:
        return str(exc)


def motion_curve(ctx: Context, clip_id: str) -> dict[int, float]:
    """The clip's facial motion from its onset, per frame from onset to offset (crop px;
    ``sammflow.cache.motion``): the curve a spotted apex is the peak of.

    Raises
    ------
    ClipError
    """
    return _succeeded(_motion(ctx.key, clip_id, _crops_key(ctx.params), ctx), clip_id, ctx)


@st.cache_data(max_entries=MAX_CLIP_ENTRIES, show_spinner=False)
def _crops(dataset_key: str, clip_id: str, key: str, numbers: tuple[int, ...], _ctx: Context) -> NormalizedClip | str:
    # keyed by dataset + clip + detection/alignment hashes + frames; _ctx only supplies the
    # objects. A failure is cached as its message, so a faceless clip is not re-detected
    # on every rerun.
    try:
        return aligned_crops(_ctx.dataset, clip_id, _ctx.params, numbers, store=_store(_ctx.ref), clip=annotation(_ctx, clip_id))
    except ClipError as exc:
        return str(exc)


def crops(ctx: Context, clip_id: str, numbers: Iterable[int]) -> NormalizedClip:
    """Aligned crops of some frames of a clip (memory cache → disk cache → compute), aligned to
    its apex (``annotation``: a spotted one where the apex policy says so).

    Raises
    ------
    ClipError
        With the reason (no face, frame missing ...).
    """
    return _succeeded(_crops(ctx.key, clip_id, _crops_key(ctx.params), tuple(sorted({int(n) for n in numbers})), ctx), clip_id, ctx)


@st.cache_data(max_entries=MAX_ALIGNMENT_ENTRIES, show_spinner=False)
def _alignment(dataset_key: str, clip_id: str, key: str, _ctx: Context) -> NormalizedClip | str:
    # every frame is aligned (and its crop cached on disk) but only the alignment stays in
    # memory: a long clip's crops are megabytes
    try:
        _, frames = clip_of(_ctx.dataset, clip_id)
        aligned = aligned_crops(_ctx.dataset, clip_id, _ctx.params, frames.numbers, store=_store(_ctx.ref),
                                clip=annotation(_ctx, clip_id))
    except ClipError as exc:
        return str(exc)
    return dataclasses.replace(aligned, crops={})


def alignment(ctx: Context, clip_id: str) -> NormalizedClip:
    """How every frame of a clip matched the apex crop (crops aligned and cached on disk).

    Raises
    ------
    ClipError
    """
    return _succeeded(_alignment(ctx.key, clip_id, _crops_key(ctx.params), ctx), clip_id, ctx)


def onset_apex(ctx: Context, clip_id: str) -> NormalizedClip:
    """Aligned onset and apex crops of a clip (``ClipError`` if it has none); the apex spotted
    where it is to be."""
    ann = annotation(ctx, clip_id)  # ClipError for an id that is not a clip of the dataset
    return crops(ctx, clip_id, (ann.onset, ann.apex))


class _NotCached(Exception):
    """A memory cache's function asked for a value it does not hold (``_grid``, ``_flow_field``).

    Those functions store results made outside them: in parallel (``sammflow.tiles``) and with
    a progress bar, which the body of a ``st.cache_data`` function could not drive. Called with
    ``_made=None`` they look up (raising this, which Streamlit never caches); called with a
    value they store it under their key.
    """


@st.cache_data(max_entries=MAX_GRID_ENTRIES, show_spinner=False)
def _grid(dataset_key: str, key: str, which: str, per: str, _made: Grid | None = None) -> Grid:
    # keyed by dataset + detection/alignment hashes + frame role + clip/subject: the tiles as drawn
    if _made is None:
        raise _NotCached
    return _made


def grid(ctx: Context, which: str, per: str, progress: Callable[[int, int, str], None] | None = None) -> Grid:
    """The normalized grid: one aligned frame (``which``: first, onset, apex) of every ready clip,
    or of each subject's first (``per``: ``sammflow.tables.grid_clips``), captioned
    ``"<clip> · <which> <frame>"``, and a message naming each clip that has none.

    Each clip as the pages process it (``annotation``: a spotted apex where there is one).
    Made by ``sammflow.tiles.aligned_frames`` (boxes and crops read from the disk store,
    the missing ones made in parallel and put there), then held in memory as a whole.

    Parameters
    ----------
    progress : callable(done, total, text), optional
        Called while the tiles are made (not when the grid is in memory).
    """
    key = (ctx.key, _crops_key(ctx.params), which, per)
    try:
        return _grid(*key)
    except _NotCached:
        pass
    requests: list[FrameRequest] = []
    failed: dict[str, str] = {}
    clips = tables.grid_clips(ctx.dataset, per)
    for i, clip in enumerate(clips):
        try:
            annotated, frames = clip_of(ctx.dataset, clip)
            if annotated.spot and progress:  # seconds a clip, once (every frame from onset to offset aligned)
                progress(i, len(clips), "Spotting the apexes")
            ann = annotation(ctx, clip)
            requests.append(FrameRequest(ann, annotated, frames, tables.frame_number(ctx.dataset, clip, which, clip=ann)))
        except ClipError as exc:
            failed[clip] = str(clip_error(clip, str(exc), ctx))
    settled = len(failed)  # clips that failed before (unknown, no face to spot from): counted as done
    results = tiles.aligned_frames(requests, ctx.params, store=_store(ctx.ref), progress=progress and (
        lambda done, total, stage: progress(settled + done, len(clips), stage)))
    shown: dict[str, tuple[np.ndarray, str]] = {}
    for req, result in zip(requests, results):
        if isinstance(result, ClipError):
            failed[req.clip.clip] = str(clip_error(req.clip.clip, str(result), ctx))
        else:
            shown[req.clip.clip] = (result.crops[req.number], f"{req.clip.clip} · {which} {req.number}")
    made = Grid(tuple(shown[c] for c in clips if c in shown), tuple(failed[c] for c in clips if c in failed))
    return _grid(*key, made)


@st.cache_data(max_entries=MAX_FLOW_ENTRIES, show_spinner=False)
def _flow_field(dataset_key: str, clip_id: str, key: str, _made: FlowField | None = None) -> FlowField:
    # keyed by the crops (dataset + clip + detection/alignment hashes) + the flow parameters'
    # hash, which leaves out those inactive under the method: a change of the map's encoding,
    # or of another method's parameter, reuses the field
    if _made is None:
        raise _NotCached
    return _made


def flows(ctx: Context, clips: Iterable[str]) -> dict[str, ClipFlow | ClipError]:
    """Onset→apex flow and map of each clip, as the export computes them (the apex spotted
    where it is to be), or why a clip has none.

    The flow fields are held in memory by crops and active flow parameters; the maps are
    encoded from them on each call (milliseconds), so a change of a map parameter computes no
    flow and a change of a flow parameter no crop. Fields not in memory are computed together,
    one per core at a time (``sammflow.tiles.compute_flows``).

    Returns
    -------
    dict of clip → ClipFlow or ClipError
        The error names the clip: its crops cannot be made (no face, frame missing ...) or the
        flow method cannot run here.
    """
    p = ctx.params
    key = f"{_crops_key(p)}-{p.flow.hash}"
    results: dict[str, ClipFlow | ClipError] = {}
    pairs: dict[str, NormalizedClip] = {}
    fields: dict[str, FlowField] = {}
    for clip in dict.fromkeys(clips):
        try:
            pairs[clip] = onset_apex(ctx, clip)
        except ClipError as exc:
            results[clip] = exc
            continue
        try:
            fields[clip] = _flow_field(ctx.key, clip, key)
        except _NotCached:
            pass
    missing = [clip for clip in pairs if clip not in fields]
    if missing:
        try:
            require_method(p.flow.method)
        except FlowMethodUnavailable as exc:  # TV-L1 without OpenCV's contrib build
            results.update((clip, clip_error(clip, str(exc), ctx)) for clip in missing)
            missing = []
        crops = [(pairs[clip].crops[pairs[clip].clip.onset], pairs[clip].crops[pairs[clip].clip.apex]) for clip in missing]
        for clip, field in zip(missing, tiles.compute_flows(crops, p.flow)):
            fields[clip] = _flow_field(ctx.key, clip, key, field)
    for clip, field in fields.items():
        results[clip] = ClipFlow(pairs[clip], field, encode_flow(field, params=p.encode))
    return {clip: results[clip] for clip in dict.fromkeys(clips)}


def flow(ctx: Context, clip_id: str) -> ClipFlow:
    """Onset→apex flow and map of one clip (``flows``).

    Raises
    ------
    ClipError
        If the clip's crops cannot be made (no face, frame missing ...) or the flow method
        cannot run here.
    """
    result = flows(ctx, [clip_id])[clip_id]
    if isinstance(result, ClipError):
        raise result
    return result


def mtcnn_boxes(ctx: Context, clip_id: str, progress: Callable[[int, int], None] | None = None) -> dict[int, FaceBox | None]:
    """MTCNN's own box on every frame of a clip: the "before" of the alignment diagnostics.

    Stored on disk only (a few hundred bytes per frame, read back in milliseconds), so that the
    detection loop can report progress, which a ``st.cache_data`` function could not.

    Raises
    ------
    ClipError
    """
    try:
        return mtcnn_track(ctx.dataset, clip_id, ctx.params.detect, store=_store(ctx.ref), progress=progress)
    except ClipError as exc:
        raise clip_error(clip_id, str(exc), ctx) from None


@st.cache_data(max_entries=MAX_GIF_ENTRIES, show_spinner=False)
def _gif(dataset_key: str, clip_id: str, key: str, gif_key: str, _ctx: Context, _params: GifParams) -> tuple[bytes, int] | str:
    try:
        _, frames = clip_of(_ctx.dataset, clip_id)
        ann = annotation(_ctx, clip_id)
        numbers = gif_frame_numbers(frames.numbers, ann, params=_params)
        # straight from the disk cache: only the GIF bytes are worth keeping in memory
        aligned = aligned_crops(_ctx.dataset, clip_id, _ctx.params, numbers, store=_store(_ctx.ref), clip=ann)
        return encode_gif([aligned.crops[n] for n in numbers], params=_params, numbers=numbers, clip=ann), len(numbers)
    except (ClipError, ValueError) as exc:
        return str(exc)


def gif(ctx: Context, clip_id: str, params: GifParams) -> tuple[bytes, int]:
    """Onset→apex (→offset) animation of aligned crops, encoded at display size, each frame
    labelled with its number and the onset / apex / offset markers (``params.labels``).

    Raises
    ------
    ClipError
    """
    return _succeeded(_gif(ctx.key, clip_id, _crops_key(ctx.params), params.hash, ctx, params), clip_id, ctx)


#: The page's "all GIFs" zip: at most this many clips (each is aligned frame by frame), and this
#: many bytes in all (the zip is held in the session's memory until it is downloaded).
MAX_ZIP_CLIPS = 40
MAX_ZIP_BYTES = 50 * 2**20


def gif_zip(ctx: Context, clips: Sequence[str], params: GifParams, progress: Callable[[int, int, str], None] | None = None) -> GifZip:
    """The GIFs of ``clips`` (``gif``: from the caches where the page already made them) as one
    zip (``sammflow.export.zip_gifs``), bounded by ``MAX_ZIP_CLIPS`` clips and ``MAX_ZIP_BYTES``."""
    annotations = [ctx.dataset.annotations.by_clip[clip] for clip in clips]
    return zip_gifs(annotations, lambda ann: gif(ctx, ann.clip, params)[0], max_clips=MAX_ZIP_CLIPS, max_bytes=MAX_ZIP_BYTES,
                    progress=progress)


def frame_grey(ctx: Context, clip_id: str, number: int) -> np.ndarray:
    """A raw frame, grey (one decode, not cached: the diagnostics need two).

    Raises
    ------
    ClipError
        If the frame is not on disk or unreadable.
    """
    _, frames = clip_of(ctx.dataset, clip_id)
    try:
        return read_grey(frames.path(number))
    except FrameError as exc:
        raise clip_error(clip_id, str(exc), ctx) from exc


def pair_figure(ctx: Context, clip_id: str, a: int, b: int, threshold: int, track: dict[int, FaceBox | None]) -> PairFigure:
    """``sammflow.figures.pair_figure`` of frames ``a`` and ``b``: raw frames where MTCNN found a
    face (``track``, from ``mtcnn_boxes``), aligned crops from the caches.

    Raises
    ------
    ClipError
    """
    boxes = [track.get(a), track.get(b)]
    frames = [frame_grey(ctx, clip_id, n) if box is not None else None for n, box in zip((a, b), boxes)]
    aligned = crops(ctx, clip_id, (a, b))
    return draw_pair(frames, boxes, [aligned.crops[a], aligned.crops[b]], threshold)


def export_flows(ctx: Context, out_dir: str | Path, on_row: RowCallback | None = None, *, force: bool = False,
                 arrays: bool = False, scheduler: Scheduler | None = None) -> JobReport:
    """The command line's export (``sammflow.export.export_flows``) into a checked folder.

    The folder is checked by ``sammflow.access.export_folder`` first (allowed roots, outside the
    datasets); the job then resumes, or with ``force`` (the page's *Replace* and *Start over*)
    recomputes every clip and replaces the outputs of other parameters. Apex boxes the pages
    already found come from the disk cache, and boxes the export finds go there. With
    ``arrays`` the job also writes ``features.npz`` (``sammflow.features``). With ``scheduler``
    the clips run on that Dask cluster (``sammflow.cluster``), whose workers find the boxes.

    Raises
    ------
    InputError
        A ``ValueError`` naming the folder and the rule it breaks, outputs of other parameters
        there (without ``force``; ``sammflow.export_choices.page_message`` words it for the page),
        another run writing to it, or a Dask scheduler that cannot be reached.
    """
    out = access.export_folder(ctx.dataset.roots, out_dir)
    return export.export_flows(ctx.dataset, out, params=ctx.params, boxes=_store(ctx.ref), on_row=on_row, force=force, arrays=arrays,
                               scheduler=scheduler)


def report_html(out_dir: str | Path) -> str:
    """The self-contained HTML report of an export folder (``sammflow.report.build_report``), or,
    where it cannot be built, a small HTML page saying why.

    Called when the report's download button is clicked, outside the page's run: an exception
    there would only break the download, unexplained, so the cause goes into the file instead.
    """
    from sammflow.report import build_report  # on click only: the page does not import it

    try:
        return build_report(out_dir)
    except (ValueError, OSError) as exc:  # ReportError (a ValueError): not a sammflow output; unreadable files
        return report_error_html(out_dir, exc)


def report_error_html(out_dir: str | Path, error: BaseException) -> str:
    """A small HTML page saying that the report of ``out_dir`` could not be built, and why."""
    where = html.escape(show_path(out_dir))
    cause = html.escape(printable(str(error) or type(error).__name__))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>sammflow report: not built</title></head>\n'
            f'<body><h1>No report</h1><p id="error">The report of <code>{where}</code> could not be built: {cause}</p></body></html>\n')


def report_button(place: Any, out_dir: str | Path, *, key: str) -> None:
    """The *Download report (HTML)* button of an export folder: ``report_html``, built on click."""
    place.download_button("Download report (HTML)", lambda: report_html(out_dir), file_name="report.html", mime="text/html",
                          on_click="ignore", icon=":material/summarize:", key=key,
                          help="The folder's self-contained HTML report (dataset, parameters, each clip's result), built when clicked.")


# ============================================================== recognition check

#: Session key of the recognition runs kept (``evaluation``), and how many.
EVALUATIONS_KEY = "_recognition_runs"
MAX_EVALUATIONS = 8


def evaluation(features: Path, model: str, epochs: int, seed: int,
               progress: Callable[[int, int, str], None] | None = None) -> Any:
    """The leave-one-subject-out run of ``features`` (``sammflow.recognition.evaluate``), written as
    ``evaluation.json`` beside it as the command writes it, and kept in the session by the file
    (path, size, modification time) and the settings, so that a rerun of the page does not train
    again. Raises ``FileNotFoundError`` / ``sammflow.recognition.EvaluationError`` (a
    ``ValueError``) naming the file, ``OSError`` if the result cannot be written."""
    from sammflow import recognition

    data = recognition.load_labelled(features)  # the folder's features.npz, checked
    info = data.source.stat()
    key = (str(data.source), info.st_size, info.st_mtime_ns, model, int(epochs), int(seed))
    runs = st.session_state.setdefault(EVALUATIONS_KEY, {})
    if key not in runs:
        result = recognition.evaluate(data, model, seed=int(seed), epochs=int(epochs), progress=progress)
        recognition.write_evaluation(result)
        while len(runs) >= MAX_EVALUATIONS:
            runs.pop(next(iter(runs)))
        runs[key] = result
    return runs[key]
