"""The Streamlit layer of the dashboard: the only module of sammflow that imports Streamlit.

It owns what the pages share and nothing else:

* **the sidebar** (``sidebar``): which dataset — the generated demo by default, or a folder
  and annotation file typed in or given by ``SAMMFLOW_DATA`` / ``SAMMFLOW_ANNOTATIONS`` — and
  the processing parameters, one widget per parameter declared with a ``label`` in
  ``sammflow.params``. Every widget is bound to the URL (``bind="query-params"``), so a
  copied link reopens the same view. Paths are confined by ``sammflow.access`` (see there:
  what a page user can reach).
* **the session context** (``context``): the open dataset and the parameters, for the pages.
* **the cached compute layer**: ``st.cache_data`` around the pipeline's own functions and
  types (``NormalizedClip``, ``ClipFlow``), keyed by dataset + clip id + the hashes of the
  parameters that change the result (never by arrays); under it the on-disk
  ``sammflow.cache.ClipStore``, the one cache of apex boxes, so a restart or a change of a
  flow parameter or a quality threshold never re-detects nor re-aligns. MTCNN itself is the
  process-wide detector of ``sammflow.detect.load_detector``.

Tables, figures, paths and the export job are Streamlit-free modules (``sammflow.tables``,
``sammflow.figures``, ``sammflow.access``, ``sammflow.export``) that the pages call directly.
torch is only imported when a face box is missing from the disk cache, so the overview page
never pays its start-up.

Bad input is an ``st.error`` naming the path or clip and the cause, never a traceback: an
unusable dataset folder or annotation file in the sidebar (no page runs), a clip whose frames
cannot be decoded on the page that needed them (the other clips still show), and anything
unexpected in a page (``run_page``: the cause on the page, the traceback in the server log).
The dashboard has no upload widget: it reads datasets where they are.

The demo dataset of the first run is generated in a thread of the server process
(``sammflow.access.demo_build``), which the pages only watch: closing the tab does not stop
it, and a tab opened meanwhile shows its progress, then the dataset.

Memory: every ``st.cache_data`` has ``max_entries``. At the default 224 px crops the
in-memory caches hold at most about 512 × 0.1 MB (crops) + 128 × 0.6 MB (flows) + 32 × 1 MB
(GIFs) + 8 datasets ≈ 200 MB, shared by all sessions, on top of torch and MTCNN (≈ 0.65 GB
once loaded, only on a disk-cache miss); a session itself keeps only its page's images,
after an export its manifest rows, and after *Prepare zip* on the GIF page that zip
(``MAX_ZIP_BYTES`` at most).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from sammflow import __version__, access, export
from sammflow.export import GifZip, zip_gifs
from sammflow.access import ENV_DATA, ENV_ANNOTATIONS, ENV_DEVICE, ENV_ROOTS, DatasetRef, demo_config, demo_root
from sammflow.animate import encode_gif, gif_frame_numbers
from sammflow.cache import ENV_CACHE, ClipStore, aligned_crops, cache_dir, clip_of, mtcnn_track, prune
from sammflow.dataset import Dataset, FrameError, read_grey
from sammflow.demo import ANNOTATIONS
from sammflow.detect import FaceBox
from sammflow.figures import PairFigure, pair_figure as draw_pair
from sammflow.outfolder import JobReport
from sammflow.params import AlignParams, DetectParams, EncodeParams, FlowParams, GifParams, PipelineParams, declared
from sammflow.pipeline import ClipError, ClipFlow, NormalizedClip, flow_from_crops
from sammflow.tables import ready_ids
from sammflow.workers import RowCallback

#: The default demo's generation on the first run, measured (s): said on the page while it runs.
DEMO_FIRST_RUN_S = 25
#: Bounded in-memory caches (entries per cached function).
MAX_CLIP_ENTRIES = 512  # crops of one or two frames (≈ 50 KB each at 224 px)
MAX_FLOW_ENTRIES = 128  # ≈ 0.5 MB each (crops + float flow field)
MAX_ALIGNMENT_ENTRIES = 64  # per-frame match records of whole clips, no images
MAX_GIF_ENTRIES = 32
MAX_DATASET_ENTRIES = 8  # datasets read (annotations + frame paths)

_CTX_KEY = "_sammflow_context"
_LINKS_CHECKED = "_sammflow_links_checked"  # URL keys whose link values were checked (link_choice)
#: Dataset sources of the sidebar (URL values) and their captions.
_SOURCES = {"Demo": "generated SAMM-like dataset", "Folder": "a dataset on this machine"}
_STAGE_CLASSES = {"detect": DetectParams, "align": AlignParams, "flow": FlowParams, "encode": EncodeParams}
_GROUPS = {"detect": "Face detection", "align": "Alignment", "flow": "Optical flow (Farnebäck)", "encode": "Flow map"}


# ============================================================== sidebar parameters, widget helpers


def _widgets() -> list[tuple[str, dataclasses.Field[Any], Any]]:
    """(stage, field, declaration) of every parameter the sidebar shows (declared with a ``label``)."""
    return [(stage, f, p) for stage, cls in _STAGE_CLASSES.items() for f, p in declared(cls) if p.label]


def _reset_params() -> None:
    # through the widgets' keys: the widgets take no default argument (see _param_widget), so
    # this is the Session State API's supported way, not the one Streamlit warns about. Only the
    # changed ones: a key set this way is written to the link, as the default, explicitly.
    for _, f, p in _widgets():
        key = p.key or f.name
        if st.session_state.get(key, f.default) != f.default:
            st.session_state[key] = f.default


def _param_widget(f: dataclasses.Field[Any], p: Any) -> Any:
    """The widget of one declared parameter: a selectbox for options or choices, a toggle for a
    flag, else a slider over the declared slider range.

    Its value lives under its key only: the declared default is put there before the widget is
    first drawn (a link's value still wins on a fresh page load), and no ``value``/``index``
    argument is passed. Passing one as well as setting the key (which *Reset parameters* does)
    is the pattern Streamlit logs a warning with a stack trace about.
    """
    default = f.default
    key = p.key or f.name
    st.session_state.setdefault(key, default)
    common = {"key": key, "help": p.help[:1].upper() + p.help[1:] + ".", "bind": "query-params"}
    options = list(p.options or p.choices)
    if options:
        options = options if default in options else [default, *options]
        return st.selectbox(p.label, options, **common)
    if isinstance(default, bool):
        return st.toggle(p.label, **common)
    kind = type(default)
    low, high, step = p.slider
    return st.slider(p.label, kind(low), kind(high), step=kind(step), **common)


def params_sidebar() -> PipelineParams:
    """Render the processing parameters (in the sidebar) and build the parameter set.
    """
    values: dict[str, dict[str, Any]] = {stage: {} for stage in _STAGE_CLASSES}
    values["detect"]["device"] = os.environ.get(ENV_DEVICE, "cpu")
    st.subheader("Processing parameters")
    for stage, title in _GROUPS.items():
        with st.expander(title):
            for _, f, p in (w for w in _widgets() if w[0] == stage):
                values[stage][f.name] = _param_widget(f, p)
    st.button("Reset parameters", key="reset_params", on_click=_reset_params, width="stretch")
    return PipelineParams(**{stage: cls(**values[stage]) for stage, cls in _STAGE_CLASSES.items()})


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
    """What every page needs: the dataset (loaded) and the processing parameters."""

    ref: DatasetRef
    dataset: Dataset
    params: PipelineParams

    @property
    def key(self) -> str:
        """The dataset part of every in-memory cache key: paths + annotation file and folder signatures."""
        return f"{self.ref.root}|{self.ref.annotations}|{access.signature(self.ref.root, self.ref.annotations)}"


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


@st.cache_data(max_entries=MAX_DATASET_ENTRIES, ttl=600, show_spinner="Reading the dataset…")
def _load(root: str, annotations: str, signature: tuple[Any, ...]) -> Dataset:
    return access.load(root, annotations, signature)


def open_dataset(ref: DatasetRef) -> Dataset:
    """``sammflow.access.open_dataset``, read through the in-memory cache (10 min, or until *Rescan*)."""
    return access.open_dataset(ref, _load)


def _dataset_sidebar(notice: Any) -> DatasetRef:
    env_root = os.environ.get(ENV_DATA, "").strip()
    env_ann = os.environ.get(ENV_ANNOTATIONS, "").strip()
    st.subheader("Dataset")
    sources = list(_SOURCES) if not env_root else ["Folder", "Demo"]  # the default comes first
    source = st.radio("Source", sources, captions=[_SOURCES[s] for s in sources], key="source", bind="query-params",
                      label_visibility="collapsed", horizontal=True)
    if source == "Demo":
        root = ensure_demo(notice)
        return DatasetRef(str(root), str(root / ANNOTATIONS), demo=True)
    root = st.text_input("Dataset folder", value=env_root, key="data", bind="query-params",
                         placeholder="/data/SAMM", help=f"Holds <subject>/<clip>/<frame>.jpg. Default: ${ENV_DATA}. "
                         f"Must lie inside the folders this dashboard may open (${ENV_ROOTS}).").strip()
    ann = st.text_input("Annotation file", value=env_ann, key="ann", bind="query-params",
                        placeholder="FOLDER/samm.csv", help=f"samm.csv or the official .xlsx. Empty: FOLDER/samm.csv. Default: ${ENV_ANNOTATIONS}.").strip()
    root_path = Path(root).expanduser() if root else Path("")
    ann_path = Path(ann).expanduser() if ann else root_path / ANNOTATIONS
    return DatasetRef(str(root_path) if root else "", str(ann_path))


def sidebar() -> Context | None:
    """Render the shared sidebar; open the dataset; remember the context for the pages.

    Problems (a missing folder, an unreadable annotation file, invalid parameters) are shown
    with ``st.error`` in the main area, never as a traceback.
    """
    st.session_state.pop(_CTX_KEY, None)
    notice = st.empty()  # main-area slot for the first run's demo progress
    with st.sidebar:
        try:
            ref = _dataset_sidebar(notice)
            error = None
        except (OSError, ValueError) as exc:  # the demo could not be created (read-only cache, bad config)
            hint = f" Set {ENV_CACHE} to a writable folder, or open your own dataset." if isinstance(exc, OSError) else ""
            ref, error = None, f"Cannot create the demo dataset in {cache_dir()}: {exc}.{hint}"
        if st.button("Rescan dataset", help="Read the annotation file and the frames on disk again.", width="stretch"):
            # results in memory too (failures included); the disk cache checks its files itself
            for cached in (_load, _crops, _alignment, _flow, _gif):
                cached.clear()
        try:
            params = params_sidebar()
        except ValueError as exc:
            params, error = None, error or f"Invalid parameters: {exc}"
        st.caption(f"sammflow {__version__} · cache: {cache_dir()}")
    if error is None and ref is not None:
        try:
            ref = access.checked_ref(ref)
            dataset = open_dataset(ref)
        except ValueError as exc:
            error = f"{exc}\n\nFix the path in the sidebar, or choose the demo dataset."
    if error is not None or ref is None or params is None:
        st.error(error, icon=":material/error:")
        return None
    context = Context(ref, dataset, params)
    st.session_state[_CTX_KEY] = context
    with st.sidebar:
        n = len(dataset.annotations.clips)
        st.caption(f"**{ref.label}** · {n} annotated clips · {len(ready_ids(dataset))} ready · `{ref.root}`")
    return context


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


@st.cache_data(max_entries=MAX_CLIP_ENTRIES, show_spinner=False)
def _crops(dataset_key: str, clip_id: str, key: str, numbers: tuple[int, ...], _ctx: Context) -> NormalizedClip | str:
    # keyed by dataset + clip + detection/alignment hashes + frames; _ctx only supplies the
    # objects. A failure is cached as its message, so a faceless clip is not re-detected
    # on every rerun.
    try:
        return aligned_crops(_ctx.dataset, clip_id, _ctx.params, numbers, store=_store(_ctx.ref))
    except ClipError as exc:
        return str(exc)


def clip_error(clip_id: str, message: str, ctx: Context | None = None) -> ClipError:
    """A ``ClipError`` whose message starts with the clip id (``"006_1_1: <file>: <cause>"``).
    """
    if ctx is not None:
        message = message.replace(f"{Path(ctx.dataset.root)}{os.sep}", "")
    return ClipError(message if message.startswith(f"{clip_id}:") else f"{clip_id}: {message}")


def crops(ctx: Context, clip_id: str, numbers: Iterable[int]) -> NormalizedClip:
    """Aligned crops of some frames of a clip (memory cache → disk cache → compute).

    Raises
    ------
    ClipError
        With the reason (no face, frame missing ...).
    """
    result = _crops(ctx.key, clip_id, _crops_key(ctx.params), tuple(sorted({int(n) for n in numbers})), ctx)
    if isinstance(result, str):
        raise clip_error(clip_id, result, ctx)
    return result


@st.cache_data(max_entries=MAX_ALIGNMENT_ENTRIES, show_spinner=False)
def _alignment(dataset_key: str, clip_id: str, key: str, _ctx: Context) -> NormalizedClip | str:
    # every frame is aligned (and its crop cached on disk) but only the alignment stays in
    # memory: a long clip's crops are megabytes
    try:
        _, frames = clip_of(_ctx.dataset, clip_id)
        aligned = aligned_crops(_ctx.dataset, clip_id, _ctx.params, frames.numbers, store=_store(_ctx.ref))
    except ClipError as exc:
        return str(exc)
    return dataclasses.replace(aligned, crops={})


def alignment(ctx: Context, clip_id: str) -> NormalizedClip:
    """How every frame of a clip matched the apex crop (crops aligned and cached on disk).

    Raises
    ------
    ClipError
    """
    result = _alignment(ctx.key, clip_id, _crops_key(ctx.params), ctx)
    if isinstance(result, str):
        raise clip_error(clip_id, result, ctx)
    return result


def onset_apex(ctx: Context, clip_id: str) -> NormalizedClip:
    """Aligned onset and apex crops of a clip (``ClipError`` if it has none)."""
    ann, _ = clip_of(ctx.dataset, clip_id)  # ClipError for an id that is not a clip of the dataset
    return crops(ctx, clip_id, (ann.onset, ann.apex))


@st.cache_data(max_entries=MAX_FLOW_ENTRIES, show_spinner=False)
def _flow(dataset_key: str, clip_id: str, key: str, _ctx: Context) -> ClipFlow | str:
    # key = crop key + flow + encoding hashes: a flow parameter change recomputes only this
    try:
        pair = onset_apex(_ctx, clip_id)
    except ClipError as exc:
        return str(exc)
    field, flow_map = flow_from_crops(pair.crops[pair.clip.onset], pair.crops[pair.clip.apex], params=_ctx.params)
    return ClipFlow(pair, field, flow_map)


def flow(ctx: Context, clip_id: str) -> ClipFlow:
    """Onset→apex flow and map of a clip, as the export computes it. Only the flow and encoding
    run again when only flow or encoding parameters change: the crops come from the caches.

    Raises
    ------
    ClipError
        If the clip's crops cannot be made (no face, frame missing ...).
    """
    p = ctx.params
    result = _flow(ctx.key, clip_id, f"{_crops_key(p)}-{p.flow.hash}-{p.encode.hash}", ctx)
    if isinstance(result, str):
        raise clip_error(clip_id, result, ctx)
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
        ann, frames = clip_of(_ctx.dataset, clip_id)
        numbers = gif_frame_numbers(frames.numbers, ann, params=_params)
        # straight from the disk cache: only the GIF bytes are worth keeping in memory
        aligned = aligned_crops(_ctx.dataset, clip_id, _ctx.params, numbers, store=_store(_ctx.ref))
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
    result = _gif(ctx.key, clip_id, _crops_key(ctx.params), params.hash, ctx, params)
    if isinstance(result, str):
        raise clip_error(clip_id, result, ctx)
    return result


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


def export_flows(ctx: Context, out_dir: str | Path, on_row: RowCallback | None = None, *, force: bool = False) -> JobReport:
    """The command line's export (``sammflow.export.export_flows``) into a checked folder.

    The folder is checked by ``sammflow.access.export_folder`` first (allowed roots, outside the
    datasets); the job then resumes, or with ``force`` (the page's *Replace* and *Start over*)
    recomputes every clip and replaces the outputs of other parameters. Apex boxes the pages
    already found come from the disk cache, and boxes the export finds go there.

    Raises
    ------
    InputError
        A ``ValueError`` naming the folder and the rule it breaks, outputs of other parameters
        there (without ``force``; ``sammflow.export_choices.page_message`` words it for the page), or
        another run writing to it.
    """
    out = access.export_folder(ctx.dataset.root, out_dir)
    return export.export_flows(ctx.dataset, out, params=ctx.params, boxes=_store(ctx.ref), on_row=on_row, force=force)
