"""The Streamlit layer of the dashboard: the only module of sammflow that imports Streamlit.

It owns three things the pages share:

* **the sidebar** (``sidebar``): which dataset — the generated demo by default, or a folder
  and annotation file typed in or given by ``SAMMFLOW_DATA`` / ``SAMMFLOW_ANNOTATIONS`` — and
  the processing parameters. Every widget is bound to the URL (``bind="query-params"``),
  so a copied link reopens the same view.
* **the cached compute layer**: MTCNN in ``st.cache_resource``; boxes, aligned crops, flows,
  maps and GIFs in ``st.cache_data`` keyed by dataset + clip id + parameter hashes (never
  by arrays); under it the on-disk cache of ``sammflow.cache``, so a restart or a change of
  a flow parameter never re-detects nor re-aligns.
* **figure helpers** (plain numpy/OpenCV/PIL): colour wheel, flow arrows, difference
  images, captioned panels, PNG bytes.

torch is never imported here: ``sammflow.detect.load_detector`` imports it, and it is
only called when a face box is missing from the disk cache. The overview page therefore
never pays torch's start-up.

Paths and links: what a page user can reach
-------------------------------------------
The dashboard may run on a shared lab server, where whoever opens the page (or a link someone
crafted) is not whoever started the server. So every path that comes from a widget or a URL
query parameter — the dataset folder (``?data=``), the annotation file (``?ann=``), the
export output folder — is expanded (``~``), made absolute (relative to the working folder),
resolved (``..`` and symbolic links followed, ``Path.resolve``) and must then lie inside one
of the **allowed roots** (``allowed_roots``), *before* anything is read, listed or even
checked for existence there. Otherwise the page shows an ``st.error`` naming the path, the rule
and the allowed roots, and reads nothing. The allowed roots are:

* ``$SAMMFLOW_ROOTS``: folders separated by ``:`` (``os.pathsep``), set by whoever starts
  the server, e.g. ``SAMMFLOW_ROOTS=/data/micro:/scratch/flows``; if it is unset or empty,
  the **working folder** the server was started from (``streamlit run app.py`` is started in
  the sammflow checkout, whose ``out/`` holds the default exports);
* always, the locations the server was started with, which the person starting it chose:
  ``$SAMMFLOW_DATA`` (that folder), ``$SAMMFLOW_ANNOTATIONS`` (that file only, not its
  folder), ``$SAMMFLOW_OUT`` (else ``./out/flows``, the default export folder), and the
  generated demo dataset's folder in the cache.

Not the home folder by default: on a lab server it holds the server account's credentials
(``~/.ssh``, ``~/.netrc``, cloud tokens), and an annotation-file error quotes the file's first
line. Datasets elsewhere need ``SAMMFLOW_ROOTS``. Only the paths a page user gives are
confined: symbolic links *inside* a dataset folder were put there by the dataset's owner and
are followed. The export folder must further resolve outside every dataset folder (the open
one, ``$SAMMFLOW_DATA``, the demo), and be new, empty, or an earlier sammflow output; one
export at a time writes to a folder (the same ``flock`` as the command line's jobs).

Other values from a link (clip ids, frame numbers, parameter values, choices) only select
among the options a widget offers: Streamlit drops a URL value that is not one of them, and
``link_choice`` says so on the page (``?clip=../../etc`` → "not a ready clip of this
dataset"). The compute functions check clip ids against the dataset too (``ClipError``),
and the disk cache turns clip ids into a single safe path component.

Uploads: the dashboard has no upload widget (it reads datasets where they are), so no file
is ever decoded from a request; ``server.maxUploadSize`` in ``.streamlit/config.toml`` only
caps what Streamlit's upload endpoint would accept. An annotation file larger than
``MAX_ANNOTATION_BYTES`` is refused before it is parsed.

Bad input is an ``st.error`` naming the path or clip and the cause, never a traceback: an
unusable dataset folder or annotation file in the sidebar (no page runs), a clip whose frames
cannot be decoded on the page that needed them (the other clips still show), and anything
unexpected in a page (``run_page``: the cause on the page, the traceback in the server log).

Memory: every ``st.cache_data`` and ``st.cache_resource`` has ``max_entries``. At the default
224 px crops the in-memory caches hold at most about 512 × 0.1 MB (crops) + 128 × 0.6 MB
(flows) + 32 × 1 MB (GIFs) + 8 datasets ≈ 200 MB, shared by all sessions, on top of torch
and MTCNN (≈ 0.65 GB once loaded, only on a disk-cache miss); a session itself keeps only its
page's images and, after an export, its manifest rows. Three sessions at once (two tuning the
flow page, one exporting; ``tests/test_browser.py``) measured 0.9 GB for the server with
torch loaded, 0.26 GB without.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import random
import re
import threading
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from sammflow import __version__
from sammflow import cache as disk
from sammflow.animate import encode_gif, gif_frame_numbers
from sammflow.annotations import AnnotationError, read_annotations
from sammflow.dataset import Dataset, FrameError, InputError, load_dataset, read_grey, safe_path
from sammflow.demo import ANNOTATIONS, DemoConfig, generate_demo, read_ground_truth
from sammflow.detect import FaceBox, load_detector
from sammflow.encode import dominant_direction
from sammflow.export import check_output_dir, existing_output
from sammflow.figures import (  # noqa: F401 - re-exported: pages draw through ui
    ACCENT,
    BEFORE,
    FLAG,
    SAMM_FPS,
    PLOTLY_CONFIG,
    colour_wheel,
    count_chart,
    difference,
    enlarge,
    flow_arrows,
    histogram,
    jitter_chart,
    mtcnn_crop,
    panel,
    plotly_config,
    png,
    resize,
    score_chart,
    style,
)
from sammflow.params import AlignParams, DetectParams, EncodeParams, FlowParams, GifParams, PipelineParams
from sammflow.pipeline import ClipError, flow_from_crops

#: Environment variables read by the dashboard.
ENV_DATA = "SAMMFLOW_DATA"  # dataset folder (default: the generated demo)
ENV_ANNOTATIONS = "SAMMFLOW_ANNOTATIONS"  # annotation file (default: DATA/samm.csv)
ENV_DEMO_CONFIG = "SAMMFLOW_DEMO_CONFIG"  # JSON of DemoConfig fields, e.g. a small demo for tests
ENV_OUT = "SAMMFLOW_OUT"  # default output folder of the batch export
ENV_DEVICE = "SAMMFLOW_DEVICE"  # torch device of MTCNN (default cpu)
ENV_ROOTS = "SAMMFLOW_ROOTS"  # folders a page user may open or export to (see the module docstring)

#: Annotation tables are tens of KB (SAMM's xlsx ≈ 100 KB): a bigger file is the wrong file.
MAX_ANNOTATION_BYTES = 20 * 1024 * 1024

#: Bounded in-memory caches (entries per cached function).
MAX_CLIP_ENTRIES = 512  # crops of one or two frames (≈ 50 KB each at 224 px)
MAX_FLOW_ENTRIES = 128  # ≈ 0.5 MB each (crops + float flow field)
MAX_ALIGNMENT_ENTRIES = 64  # per-frame match records of whole clips, no images
MAX_GIF_ENTRIES = 32
MAX_DATASET_ENTRIES = 8  # datasets read (annotations + frame paths)
MAX_DETECTOR_ENTRIES = 4  # MTCNN instances (device × minimum face size), ≈ 2 MB each

_CTX_KEY = "_sammflow_context"
_LINKS_CHECKED = "_sammflow_links_checked"  # URL keys whose link values were checked (link_choice)
_ALONE_RERUNS = "_sammflow_alone_reruns"  # reruns of a page that ran without app.py (context)
#: Dataset sources of the sidebar (URL values) and their captions.
_SOURCES = {"Demo": "generated SAMM-like dataset", "Folder": "a dataset on this machine"}


# ============================================================== sidebar parameters, widget helpers


@dataclass(frozen=True)
class Knob:
    """One processing parameter as a sidebar widget bound to the URL.

    ``key`` is the widget key and the URL query parameter; ``options`` makes a selectbox,
    ``(lo, hi, step)`` a slider, neither a toggle.
    """

    stage: str  # "detect" | "align" | "flow" | "encode"
    field: str
    label: str
    key: str
    options: tuple[Any, ...] = ()
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    help: str = ""


_STAGES = {"detect": DetectParams, "align": AlignParams, "flow": FlowParams, "encode": EncodeParams}
_GROUPS = {
    "detect": "Face detection",
    "align": "Alignment",
    "flow": "Optical flow (Farnebäck)",
    "encode": "Flow map",
}
KNOBS: tuple[Knob, ...] = (
    Knob("detect", "max_side", "Detection size (longer side, px)", "max_side", options=(320, 480, 640, 960, 0),
         help="Frames are downscaled to this for MTCNN; 0 = full resolution."),
    Knob("detect", "min_prob", "Minimum face probability", "min_prob", lo=0.5, hi=0.99, step=0.01),
    Knob("detect", "min_face", "Minimum face size (px at detection size)", "min_face", lo=12, hi=200, step=4),
    Knob("align", "method", "Method", "method", options=("subpixel", "whole_pixel"),
         help="subpixel: template match refined to ≈0.02 px; whole_pixel: the original scripts."),
    Knob("align", "motion", "Motion model", "motion", options=("translation", "similarity"),
         help="similarity adds small rotation and scale (sub-pixel method only)."),
    Knob("align", "margin", "Search margin (frame px)", "margin", lo=0, hi=120, step=5),
    Knob("align", "crop_size", "Crop size (px)", "crop_size", options=(112, 160, 224, 256, 320)),
    Knob("align", "robust", "Ignore regions that move on their own", "robust",
         help="Down-weight brows and mouth so local facial motion cannot drag the alignment (sub-pixel method)."),
    Knob("align", "min_score", "Flag frames with match score below", "min_score", lo=0.0, hi=1.0, step=0.01),
    Knob("align", "max_residual", "Flag frames with residual above (crop px)", "max_residual", lo=0.05, hi=2.0, step=0.05),
    Knob("flow", "winsize", "Window size", "winsize", lo=3, hi=61, step=2),
    Knob("flow", "levels", "Pyramid levels", "levels", lo=1, hi=6, step=1),
    Knob("flow", "pyr_scale", "Pyramid scale", "pyr_scale", lo=0.1, hi=0.9, step=0.05),
    Knob("flow", "iterations", "Iterations", "iterations", lo=1, hi=10, step=1),
    Knob("flow", "poly_n", "Polynomial neighbourhood", "poly_n", options=(5, 7)),
    Knob("flow", "poly_sigma", "Polynomial sigma", "poly_sigma", lo=0.5, hi=2.0, step=0.05),
    Knob("flow", "head_motion", "Subtract residual head motion (nose median)", "head_motion"),
    Knob("encode", "size", "Map size (px)", "map_size", options=(14, 28, 32, 48, 64, 112)),
    Knob("encode", "interpolation", "Map resize filter", "map_interp", options=("area", "linear", "cubic", "nearest")),
)


def _knobs() -> list[Knob]:
    """The knobs whose field exists in this version of the parameter classes."""
    names = {stage: {f.name for f in dataclasses.fields(cls)} for stage, cls in _STAGES.items()}
    return [k for k in KNOBS if k.field in names[k.stage]]


def _default(knob: Knob) -> Any:
    return getattr(_STAGES[knob.stage](), knob.field)


def _reset_params() -> None:
    for knob in _knobs():
        st.session_state[knob.key] = _default(knob)


def _param_widget(knob: Knob) -> Any:
    default = _default(knob)
    common = {"key": knob.key, "help": knob.help or None, "bind": "query-params"}
    if knob.options:
        options = list(knob.options) if default in knob.options else [default, *knob.options]
        return st.selectbox(knob.label, options, index=options.index(default), **common)
    if isinstance(default, bool):
        return st.toggle(knob.label, value=default, **common)
    kind = type(default)
    return st.slider(knob.label, kind(knob.lo), kind(knob.hi), default, step=kind(knob.step), **common)


def params_sidebar() -> PipelineParams:
    """Render the processing parameters (in the sidebar) and build the parameter set.

    Returns
    -------
    PipelineParams
        The sidebar's values on top of the defaults; ``ValueError`` if a combination is invalid.
    """
    values: dict[str, dict[str, Any]] = {stage: {} for stage in _STAGES}
    st.subheader("Processing parameters")
    for stage, title in _GROUPS.items():
        with st.expander(title):
            for knob in (k for k in _knobs() if k.stage == stage):
                values[stage][knob.field] = _param_widget(knob)
    st.button("Reset parameters", key="reset_params", on_click=_reset_params, width="stretch")
    device = os.environ.get(ENV_DEVICE, "cpu")
    return PipelineParams(
        detect=DetectParams(**{"device": device, **values["detect"]}),
        align=AlignParams(**values["align"]),
        flow=FlowParams(**values["flow"]),
        encode=EncodeParams(**values["encode"]),
    )


def preset(key: str, options: Sequence[Any], default: Any) -> None:
    """Give a selection widget a valid value before it is drawn.

    For widgets whose options depend on another choice (the frames of the chosen clip).
    Never pass ``index`` to such a widget: its value comes from here or from the URL (which
    wins on a fresh page load).

    Parameters
    ----------
    key : str
        The widget's key.
    options : sequence
    default : object
        Used when the current value is missing or not among ``options``.
    """
    if st.session_state.get(key) not in options:
        st.session_state[key] = default


def forget(*keys: str) -> Callable[[], None]:
    """An ``on_change`` callback dropping dependent choices (the frames when the clip changes).

    Parameters
    ----------
    *keys : str
        Widget keys to drop.

    Returns
    -------
    callable
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

    Parameters
    ----------
    key : str
        The widget's key, which is its URL query parameter.
    options : sequence
        What the widget offers; URL values are compared with ``str(option)``.
    rule : str
        What a value must be, completing "not ...": ``"a ready clip of this dataset"``.

    Returns
    -------
    list of str
        The rejected values (empty when the link's values are all offered, or absent).
    """
    checked = st.session_state.setdefault(_LINKS_CHECKED, set())
    if key in checked:
        # only a session's first run has the link's values: later, the URL holds the widget's own
        # values (and those of the previous clip while the frames are being reset)
        return []
    checked.add(key)
    offered = {str(o) for o in options}
    rejected = [v for v in st.query_params.get_all(key) if v not in offered]
    if rejected:
        shown = ", ".join(f"`{v[:80]}`" for v in rejected[:3]) + (f" and {len(rejected) - 3} more" if len(rejected) > 3 else "")
        st.warning(f"Ignored from the link: {key} = {shown}, not {rule}.", icon=":material/link_off:")
    return rejected


def run_page(page: Any) -> None:
    """Run a page; an unexpected exception becomes an ``st.error`` naming the page and the
    cause, with the traceback in the server log rather than in the browser.

    Expected problems (a clip that cannot be aligned, a bad path) are handled by the pages
    themselves with messages of their own; this is the net under them.

    Parameters
    ----------
    page : streamlit StreamlitPage
        From ``st.navigation``.
    """
    try:
        page.run()
    except Exception as exc:  # noqa: BLE001 - st.stop / st.rerun are BaseExceptions and pass through
        logging.getLogger("sammflow.ui").exception("page %r failed", getattr(page, "title", page))
        st.error(f"The page *{getattr(page, 'title', '')}* stopped on an unexpected error: {type(exc).__name__}: {exc}. "
                 "The full traceback is in the dashboard's server log.", icon=":material/error:")


# ============================================================== dataset choice


@dataclass(frozen=True)
class DatasetRef:
    """Which dataset the session looks at: the in-memory cache key of everything per clip."""

    root: str
    annotations: str
    demo: bool = False

    @property
    def label(self) -> str:
        return "demo dataset" if self.demo else Path(self.root).name


@dataclass(frozen=True)
class Context:
    """What every page needs: the dataset (loaded) and the processing parameters."""

    ref: DatasetRef
    dataset: Dataset
    params: PipelineParams

    @property
    def key(self) -> str:
        """The dataset part of every in-memory cache key: paths + annotation file and folder signatures."""
        return f"{self.ref.root}|{self.ref.annotations}|{_signature(self.ref.root, self.ref.annotations)}"

    def ready_ids(self) -> list[str]:
        """Clips whose onset and apex frames are on disk, in annotation order."""
        return [ann.clip for ann, _ in self.dataset.ready()]


def allowed_roots() -> list[Path]:
    """The folders (and files) a page user may open or export to; read on every run.

    Returns
    -------
    list of Path
        Resolved, without duplicates: the ``$SAMMFLOW_ROOTS`` folders (``:``-separated; the
        working folder if unset or empty), then ``$SAMMFLOW_DATA``, ``$SAMMFLOW_ANNOTATIONS``
        (the file itself), the default export folder (``$SAMMFLOW_OUT``, else ``./out/flows``)
        and the demo dataset's folder. See the module docstring for why.
    """
    listed = [e.strip() for e in os.environ.get(ENV_ROOTS, "").split(os.pathsep) if e.strip()]
    entries = listed or [str(Path.cwd())]
    entries += [os.environ.get(name, "").strip() for name in (ENV_DATA, ENV_ANNOTATIONS)]
    entries.append(default_out_dir())
    try:
        entries.append(str(demo_root(demo_config())))
    except ValueError:  # a bad $SAMMFLOW_DEMO_CONFIG: the sidebar reports it when the demo is chosen
        pass
    roots: list[Path] = []
    for entry in filter(None, entries):
        try:
            root = Path(entry).expanduser().resolve()
        except (OSError, RuntimeError):  # an unknown ~user, a symbolic-link loop: nothing to allow
            continue
        if root not in roots:
            roots.append(root)
    return roots


def allowed_path(text: str | Path, what: str) -> Path:
    """A path given by a page user (a widget, a URL query parameter), confined to the allowed roots.

    Checked before anything is read, listed or tested for existence at the path, so the answer
    is the same whether or not something exists outside the roots.

    Parameters
    ----------
    text : str or Path
        As typed: ``~`` is expanded, a relative path is taken from the working folder.
    what : str
        What the path is for, to start the message with (``"Dataset folder"``).

    Returns
    -------
    Path
        Absolute, with ``..`` and symbolic links resolved, inside one of ``allowed_roots()``.

    Raises
    ------
    InputError
        A ``ValueError`` whose message names the path, the rule and the allowed roots.
    """
    typed = str(text).strip()
    try:
        if "\x00" in typed:
            raise ValueError("it contains a NUL character")
        path = Path(typed).expanduser()
        path = path if path.is_absolute() else Path.cwd() / path
        roots = allowed_roots()
        for root in roots:
            try:
                return safe_path(root, path)
            except InputError:
                continue
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"{what} {typed!r} is not a usable path ({exc}).") from None
    listed = "\n".join(f"- `{r}`" for r in roots) or "- none"
    raise InputError(f"{what} `{typed}` is outside the folders this dashboard may open.\n\n"
                     f"Paths are resolved (`..` and symbolic links followed) and must lie inside one of:\n{listed}\n\n"
                     f"Whoever starts the dashboard can allow more folders with `{ENV_ROOTS}` (separated by `{os.pathsep}`).")


def checked_ref(ref: DatasetRef) -> DatasetRef:
    """``ref`` with its dataset folder and annotation file resolved inside the allowed roots.

    Parameters
    ----------
    ref : DatasetRef

    Returns
    -------
    DatasetRef

    Raises
    ------
    InputError
        An empty folder, or a path outside the allowed roots (``allowed_path``).
    """
    if not ref.root.strip():
        raise InputError("No dataset folder given: type the folder that holds <subject>/<clip>/ frames, or choose the demo dataset.")
    root = allowed_path(ref.root, "Dataset folder")
    ann = allowed_path(ref.annotations, "Annotation file")
    return DatasetRef(str(root), str(ann), ref.demo)


def demo_config() -> DemoConfig:
    """The demo dataset's configuration.

    Returns
    -------
    DemoConfig
        ``DemoConfig()``, or the fields given as a JSON object in ``$SAMMFLOW_DEMO_CONFIG``
        (tests use a small one).

    Raises
    ------
    ValueError
        If the variable is not a JSON object of valid ``DemoConfig`` fields.
    """
    raw = os.environ.get(ENV_DEMO_CONFIG, "").strip()
    if not raw:
        return DemoConfig()
    try:
        return DemoConfig(**json.loads(raw))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{ENV_DEMO_CONFIG}={raw!r} is not a JSON object of DemoConfig fields ({exc})") from exc


@st.cache_resource(max_entries=1)
def _demo_lock() -> threading.Lock:
    # one generation per process even when several sessions open the app at once
    return threading.Lock()


def ensure_demo(place: Any = None) -> Path:
    """The demo dataset's folder in the cache, generated on first use with a progress bar.

    Parameters
    ----------
    place : st.empty placeholder, optional
        Where to show the progress (the main area); ``st`` if omitted.

    Returns
    -------
    Path
        ``cache_dir()/demo-<config hash>``; reused as is once it exists.
    """
    config = demo_config()
    root = demo_root(config)
    if _demo_ready(root, config):
        return root
    with _demo_lock():
        if not _demo_ready(root, config):
            place = place if place is not None else st.empty()
            with place.container():
                st.info(f"First run: generating a SAMM-like demo dataset in `{root}` (about 15 s, once). "
                        f"Set `{ENV_DATA}` or choose *Folder* in the sidebar to open your own dataset.", icon=":material/hourglass_top:")
                bar = st.progress(0.0, text="Creating the demo dataset…")

            def progress(done: int, total: int, clip: str) -> None:
                bar.progress(done / total, text=f"Creating the demo dataset: clip {clip}, frame {done} of {total}")

            generate_demo(root, config, progress=progress)
            place.empty()
    return root


def demo_root(config: DemoConfig) -> Path:
    """The demo dataset's folder in the cache (``cache_dir()/demo-<config hash>``)."""
    return disk.cache_dir() / f"demo-{config.hash}"


def _demo_ready(root: Path, config: DemoConfig) -> bool:
    try:
        return read_ground_truth(root)["config_hash"] == config.hash
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _signature(root: str, annotations: str) -> tuple[Any, ...]:
    """Changes when the annotation file or the dataset's top folder changes (cache key)."""
    return (*disk.file_signature(annotations), *disk.file_signature(root))


@st.cache_data(max_entries=MAX_DATASET_ENTRIES, ttl=600, show_spinner="Reading the dataset…")
def _load(root: str, annotations: str, signature: tuple[Any, ...]) -> Dataset:
    return load_dataset(root, read_annotations(annotations))


def open_dataset(ref: DatasetRef) -> Dataset:
    """Read the annotations and discover the frames (cached for 10 min, or until *Rescan*).

    Parameters
    ----------
    ref : DatasetRef
        Its paths are confined to the allowed roots first (``checked_ref``).

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        With a message naming the path and the problem (outside the allowed roots, missing
        folder, unreadable annotation file, no annotated clip in the folder ...), for ``st.error``.
    """
    ref = checked_ref(ref)
    root, ann = Path(ref.root), Path(ref.annotations)
    if not root.exists():
        raise ValueError(f"Dataset folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"Not a folder: {root} (expected the dataset folder holding <subject>/<clip>/ frames)")
    if not ann.exists():
        raise ValueError(f"Annotation file not found: {ann}")
    if ann.is_dir():
        raise ValueError(f"Not a file: {ann} is a folder (expected the annotation file, samm.csv or the official .xlsx)")
    size = disk.file_signature(ann)[0]
    if size > MAX_ANNOTATION_BYTES:
        raise ValueError(f"Annotation file {ann} is {size / 2**20:.0f} MB; an annotation table is at most "
                         f"{MAX_ANNOTATION_BYTES // 2**20} MB (SAMM's is about 0.1 MB): wrong file?")
    try:
        dataset = _load(str(root), str(ann), _signature(str(root), str(ann)))
    except AnnotationError as exc:
        raise ValueError(f"Cannot use the annotation file: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise ValueError(f"Cannot read the dataset: {exc}") from exc
    clips = dataset.annotations.clips
    if clips and not any(c.clip in dataset.clips_on_disk for c in clips):
        # the wrong folder or the wrong annotation file, not many individually broken clips
        expected = ", ".join(f"{c.subject}/{c.clip}/" for c in clips[:2])
        found = f"found {len(dataset.clips_on_disk)} other clip folders" if dataset.clips_on_disk else "found no clip folders with frames"
        raise ValueError(f"None of the {len(clips)} annotated clips has a folder in {root} (expected e.g. {expected}; {found}). "
                         "Wrong dataset folder or annotation file?")
    return dataset


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

    Returns
    -------
    Context or None
        ``None`` when the dataset cannot be used; the page should not run then.
    """
    st.session_state.pop(_CTX_KEY, None)
    notice = st.empty()  # main-area slot for the first run's demo progress
    with st.sidebar:
        try:
            ref = _dataset_sidebar(notice)
            error = None
        except (OSError, ValueError) as exc:  # the demo could not be created (read-only cache, bad config)
            hint = f" Set {disk.ENV_CACHE} to a writable folder, or open your own dataset." if isinstance(exc, OSError) else ""
            ref, error = None, f"Cannot create the demo dataset in {disk.cache_dir()}: {exc}.{hint}"
        if st.button("Rescan dataset", help="Read the annotation file and the frames on disk again.", width="stretch"):
            # results in memory too (failures included); the disk cache checks its files itself
            for cached in (_load, _crops, _alignment, _flow, _gif):
                cached.clear()
        try:
            params = params_sidebar()
        except ValueError as exc:
            params, error = None, error or f"Invalid parameters: {exc}"
        st.caption(f"sammflow {__version__} · cache: {disk.cache_dir()}")
    if error is None and ref is not None:
        try:
            ref = checked_ref(ref)
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
        st.caption(f"**{ref.label}** · {n} annotated clips · {len(context.ready_ids())} ready · `{ref.root}`")
    return context


def context() -> Context:
    """The context the sidebar built in this run (pages call this first).

    Streamlit takes a ``pages/`` folder for an old-style multipage app until ``st.navigation``
    has run once in the server process: a deep link (``/flow?clip=...``) as the first request
    after a start would run the page file alone, without app.py's sidebar. The page then
    switches Streamlit to ``st.navigation`` mode and reruns the same URL through app.py.

    Several sessions can make that first request at once (tabs reconnecting after a restart):
    those whose page started alone before the first one switched the mode find it switched
    already, and no context. A page only runs through app.py after a successful sidebar, which
    stores the context, so a missing context means "ran alone": rerun through app.py as well.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
    ctx = st.session_state.get(_CTX_KEY)
    if ctx is None:
        reruns = st.session_state.get(_ALONE_RERUNS, 0)
        if reruns < 2:  # bounded: never a rerun loop
            st.session_state[_ALONE_RERUNS] = reruns + 1
            st.rerun()
        st.error("No dataset is open. Start the dashboard with `streamlit run app.py`.")
        st.stop()
    st.session_state.pop(_ALONE_RERUNS, None)
    return ctx


# ============================================================== cached compute layer


@st.cache_resource(max_entries=MAX_DETECTOR_ENTRIES, show_spinner="Loading the MTCNN face detector (first use only)…")
def detector(device: str = "cpu", min_face: int = 40) -> Any:
    """facenet-pytorch's MTCNN, built once per process (imports torch).

    Parameters
    ----------
    device : str
        Torch device, ``"cpu"`` or ``"cuda"``.
    min_face : int
        MTCNN's smallest face, px at detection size (``DetectParams.min_face``).

    Returns
    -------
    facenet_pytorch.MTCNN
    """
    return load_detector(device, min_face)


@st.cache_resource(max_entries=4)
def _prune_once(base: str) -> int:
    # bound the disk cache once per process; cheap (a directory listing)
    return disk.prune(Path(base))


def _store(ref: DatasetRef) -> disk.ClipStore:
    _prune_once(str(disk.cache_dir()))
    return disk.ClipStore(ref.root)


def _detector_for(params: PipelineParams) -> Callable[[], Any]:
    return lambda: detector(params.detect.device, params.detect.min_face)


def _crops_key(params: PipelineParams) -> str:
    return f"{params.detect.hash}-{params.align.hash}"


@st.cache_data(max_entries=MAX_CLIP_ENTRIES, show_spinner=False)
def _crops(dataset_key: str, clip_id: str, key: str, numbers: tuple[int, ...], _ctx: Context) -> disk.AlignedCrops | str:
    # keyed by dataset + clip + detection/alignment hashes + frames; _ctx only supplies the
    # objects. A failure is cached as its message, so a faceless clip is not re-detected
    # on every rerun.
    try:
        return disk.aligned_crops(_ctx.dataset, clip_id, _ctx.params, numbers, store=_store(_ctx.ref), detector=_detector_for(_ctx.params))
    except ClipError as exc:
        return str(exc)


def clip_error(clip_id: str, message: str, ctx: Context | None = None) -> ClipError:
    """A ``ClipError`` whose message starts with the clip id (``"006_1_1: <file>: <cause>"``).

    Parameters
    ----------
    clip_id : str
    message : str
        The cause, as the pipeline worded it (it may already start with the clip id).
    ctx : Context, optional
        Files inside its dataset folder are then named relative to it
        (``006/006_1_1/006_04660.jpg``): the folder is in the sidebar, and a page's narrow
        columns read better without it.

    Returns
    -------
    ClipError
    """
    if ctx is not None:
        message = message.replace(f"{Path(ctx.dataset.root)}{os.sep}", "")
    return ClipError(message if message.startswith(f"{clip_id}:") else f"{clip_id}: {message}")


def crops(ctx: Context, clip_id: str, numbers: Iterable[int]) -> disk.AlignedCrops:
    """Aligned crops of some frames of a clip (memory cache → disk cache → compute).

    Parameters
    ----------
    ctx : Context
    clip_id : str
    numbers : iterable of int
        Absolute frame numbers.

    Returns
    -------
    sammflow.cache.AlignedCrops

    Raises
    ------
    ClipError
        With the reason (no face, frame missing ...).
    """
    result = _crops(ctx.key, clip_id, _crops_key(ctx.params), tuple(sorted(set(numbers))), ctx)
    if isinstance(result, str):
        raise clip_error(clip_id, result, ctx)
    return result


@st.cache_data(max_entries=MAX_ALIGNMENT_ENTRIES, show_spinner=False)
def _alignment(dataset_key: str, clip_id: str, key: str, _ctx: Context) -> disk.AlignedCrops | str:
    # every frame is aligned (and its crop cached on disk) but only the match records stay
    # in memory: a long clip's crops are megabytes
    try:
        _, frames = disk.clip_of(_ctx.dataset, clip_id)
        aligned = disk.aligned_crops(_ctx.dataset, clip_id, _ctx.params, frames.numbers, store=_store(_ctx.ref), detector=_detector_for(_ctx.params))
    except ClipError as exc:
        return str(exc)
    return dataclasses.replace(aligned, crops={})


def alignment(ctx: Context, clip_id: str) -> disk.AlignedCrops:
    """How every frame of a clip matched the apex crop (crops aligned and cached on disk).

    Parameters
    ----------
    ctx : Context
    clip_id : str

    Returns
    -------
    sammflow.cache.AlignedCrops
        ``box``, ``warnings`` and ``matches`` of every frame on disk; ``crops`` is empty
        (use ``crops`` for the frames to show).

    Raises
    ------
    ClipError
    """
    result = _alignment(ctx.key, clip_id, _crops_key(ctx.params), ctx)
    if isinstance(result, str):
        raise clip_error(clip_id, result, ctx)
    return result


def onset_apex(ctx: Context, clip_id: str) -> disk.AlignedCrops:
    """Aligned onset and apex crops of a clip.

    Parameters
    ----------
    ctx : Context
    clip_id : str

    Returns
    -------
    sammflow.cache.AlignedCrops
        ``crops`` holds the onset and apex frames.

    Raises
    ------
    ClipError
    """
    ann, _ = disk.clip_of(ctx.dataset, clip_id)  # ClipError for an id that is not a clip of the dataset
    return crops(ctx, clip_id, (ann.onset, ann.apex))


@dataclass(frozen=True)
class FlowResult:
    """Flow between a clip's aligned onset and apex crops, and its encoded map."""

    clip: str
    onset: np.ndarray  # uint8 (crop, crop)
    apex: np.ndarray  # uint8 (crop, crop)
    uv: np.ndarray  # float32 (crop, crop, 2), crop px, +x right, +y down
    flow_map: np.ndarray  # uint8 (size, size, 3) BGR, as exported

    @property
    def map_rgb(self) -> np.ndarray:
        return np.ascontiguousarray(self.flow_map[..., ::-1])

    @property
    def magnitude(self) -> np.ndarray:
        return np.hypot(self.uv[..., 0], self.uv[..., 1])


@st.cache_data(max_entries=MAX_FLOW_ENTRIES, show_spinner=False)
def _flow(dataset_key: str, clip_id: str, key: str, _ctx: Context) -> FlowResult | str:
    # key = crop key + flow + encoding hashes: a flow parameter change recomputes only this
    try:
        pair = onset_apex(_ctx, clip_id)
    except ClipError as exc:
        return str(exc)
    ann = _ctx.dataset.annotations.by_clip[clip_id]
    onset, apex = pair.crops[ann.onset], pair.crops[ann.apex]
    field, flow_map = flow_from_crops(onset, apex, params=_ctx.params)
    return FlowResult(clip_id, onset, apex, field.uv, flow_map)


def flow(ctx: Context, clip_id: str) -> FlowResult:
    """Onset→apex flow and map of a clip. Only the flow and encoding run again when only
    flow or encoding parameters change: the crops come from the caches.

    Parameters
    ----------
    ctx : Context
    clip_id : str

    Returns
    -------
    FlowResult

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

    Parameters
    ----------
    ctx : Context
    clip_id : str
    progress : callable(done, total), optional
        Called after each detected frame.

    Returns
    -------
    dict of int → FaceBox or None
        By frame number; ``None`` where MTCNN finds no face.

    Raises
    ------
    ClipError
    """
    try:
        return disk.mtcnn_track(ctx.dataset, clip_id, ctx.params.detect, store=_store(ctx.ref), detector=_detector_for(ctx.params),
                                progress=progress)
    except ClipError as exc:
        raise clip_error(clip_id, str(exc), ctx) from None


@st.cache_data(max_entries=MAX_GIF_ENTRIES, show_spinner=False)
def _gif(dataset_key: str, clip_id: str, key: str, gif_key: str, _ctx: Context, _params: GifParams) -> tuple[bytes, int] | str:
    try:
        ann, frames = disk.clip_of(_ctx.dataset, clip_id)
        numbers = gif_frame_numbers(frames.numbers, ann, params=_params)
        # straight from the disk cache: only the GIF bytes are worth keeping in memory
        aligned = disk.aligned_crops(_ctx.dataset, clip_id, _ctx.params, numbers, store=_store(_ctx.ref), detector=_detector_for(_ctx.params))
        return encode_gif([aligned.crops[n] for n in numbers], params=_params), len(numbers)
    except (ClipError, ValueError) as exc:
        return str(exc)


def gif(ctx: Context, clip_id: str, params: GifParams) -> tuple[bytes, int]:
    """Onset→apex (→offset) animation of aligned crops, encoded at display size.

    Parameters
    ----------
    ctx : Context
    clip_id : str
    params : GifParams
        Speed, frame step, whether to go on to the offset, and the size in px.

    Returns
    -------
    data : bytes
        GIF file content, ``params.size`` px square: show it with ``st.image(data, width=params.size)``.
    frames : int
        Number of frames animated.

    Raises
    ------
    ClipError
    """
    result = _gif(ctx.key, clip_id, _crops_key(ctx.params), params.hash, ctx, params)
    if isinstance(result, str):
        raise clip_error(clip_id, result, ctx)
    return result


def frame_grey(ctx: Context, clip_id: str, number: int) -> np.ndarray:
    """A raw frame, grey (one decode, not cached: the diagnostics need two).

    Parameters
    ----------
    ctx : Context
    clip_id : str
    number : int
        Absolute frame number.

    Returns
    -------
    ndarray, uint8, (H, W)

    Raises
    ------
    ClipError
        If the frame is not on disk or unreadable.
    """
    _, frames = disk.clip_of(ctx.dataset, clip_id)
    try:
        return read_grey(frames.path(number))
    except FrameError as exc:
        raise clip_error(clip_id, str(exc), ctx) from exc


# ============================================================== dataset tables


def aus_of(text: str) -> list[int]:
    """Action-unit numbers in a SAMM AU string.

    Parameters
    ----------
    text : str
        e.g. ``"R14+4(+7)"``.

    Returns
    -------
    list of int
        Sorted, unique: ``[4, 7, 14]``.
    """
    return sorted({int(n) for n in re.findall(r"\d+", text or "")})


def annotation_table(dataset: Dataset) -> Any:
    """One row per annotation row (valid and rejected) with its status on disk.

    Returns
    -------
    pandas.DataFrame
        Columns: subject, clip, onset, apex, offset, duration, latency (frames), AUs,
        emotion, objective class, frames on disk, status (ready / missing frames / no folder /
        invalid annotation), note (the causes).
    """
    import pandas as pd

    rows = []
    issues: dict[str, list[Any]] = {}
    for issue in dataset.issues:
        issues.setdefault(issue.clip, []).append(issue)
    for ann in dataset.annotations.clips:
        frames = dataset.clips_on_disk.get(ann.clip)
        found = issues.get(ann.clip, [])
        missing = any(i.kind == "missing_frame" for i in found)
        status = "no folder" if frames is None else ("missing frames" if missing else "ready")
        rows.append({
            "subject": ann.subject, "clip": ann.clip, "onset": ann.onset, "apex": ann.apex, "offset": ann.offset,
            "duration": ann.offset - ann.onset + 1, "latency": ann.apex - ann.onset, "AUs": ann.action_units,
            "emotion": ann.emotion or "—", "objective class": ann.objective_class or "—",
            "frames on disk": len(frames.frames) if frames else 0, "status": status,
            "note": "; ".join(i.message.split(": ", 1)[-1] for i in found),
        })
    for rejected in dataset.annotations.rejected:
        values = rejected.values
        frames = dataset.clips_on_disk.get(rejected.clip)
        rows.append({
            "subject": rejected.subject, "clip": rejected.clip, "onset": None, "apex": None, "offset": None,
            "duration": None, "latency": None, "AUs": values.get("action_units", ""), "emotion": values.get("emotion") or "—",
            "objective class": values.get("objective_class") or "—", "frames on disk": len(frames.frames) if frames else 0,
            "status": "invalid annotation", "note": rejected.cause,
        })
    return pd.DataFrame(rows)


def filter_table(table: Any, filters: dict[str, Sequence[Any]]) -> Any:
    """Rows of a table whose value in each filtered column is one of the chosen values.

    Parameters
    ----------
    table : pandas.DataFrame
    filters : dict of column → chosen values
        An empty choice keeps every row.

    Returns
    -------
    pandas.DataFrame
    """
    mask = np.ones(len(table), dtype=bool)
    for column, chosen in filters.items():
        if chosen:
            mask &= table[column].isin(list(chosen)).to_numpy()
    return table[mask]


def problem_table(dataset: Dataset) -> Any:
    """Annotation problems and dataset issues, one row each, naming the clip.

    Returns
    -------
    pandas.DataFrame
        Columns: clip, where, severity, problem.
    """
    import pandas as pd

    rows = [{"clip": p.clip or "?", "where": f"annotation row {p.row}", "severity": p.severity, "problem": p.message}
            for p in dataset.annotations.problems]
    rows += [{"clip": i.clip, "where": i.kind.replace("_", " "), "severity": "warning" if i.kind == "no_annotation" else "error",
              "problem": i.message} for i in dataset.issues]
    return pd.DataFrame(rows, columns=["clip", "where", "severity", "problem"])


def summary(dataset: Dataset) -> dict[str, int]:
    """Counts for the overview's metrics.

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    dict of str → int
        subjects, clips (valid rows), ready, folders, frames, missing_frames, problems, rejected.
    """
    return {
        "subjects": len({c.subject for c in dataset.annotations.clips}),
        "clips": len(dataset.annotations.clips),
        "ready": len(dataset.ready()),
        "folders": len(dataset.clips_on_disk),
        "frames": dataset.frame_count,
        "missing_frames": sum(i.kind == "missing_frame" for i in dataset.issues),
        "problems": len(dataset.annotations.problems) + len(dataset.issues),
        "rejected": len(dataset.annotations.rejected),
    }


def filter_clips(ctx: Context, subjects: Sequence[str] = (), emotions: Sequence[str] = (), aus: Sequence[int] = ()) -> list[str]:
    """Ready clips matching every non-empty filter.

    Parameters
    ----------
    ctx : Context
    subjects, emotions : sequence of str
    aus : sequence of int
        A clip matches if it has any of these action units.

    Returns
    -------
    list of str
        Clip ids, in annotation order.
    """
    out = []
    for ann, _ in ctx.dataset.ready():
        if subjects and ann.subject not in subjects:
            continue
        if emotions and (ann.emotion or "—") not in emotions:
            continue
        if aus and not set(aus) & set(aus_of(ann.action_units)):
            continue
        out.append(ann.clip)
    return out


def sample(clips: Sequence[str], seed: int, n: int = 9) -> list[str]:
    """Clips drawn at random, reproducibly.

    Parameters
    ----------
    clips : sequence of str
    seed : int
    n : int
        How many; all of them, shuffled, if there are fewer.

    Returns
    -------
    list of str
    """
    return random.Random(seed).sample(list(clips), min(n, len(clips)))


def caption(ctx: Context, clip_id: str) -> str:
    """Short caption of a clip.

    Parameters
    ----------
    ctx : Context
    clip_id : str

    Returns
    -------
    str
        ``"006_1_1 · Anger · AU 4"``.
    """
    ann = ctx.dataset.annotations.by_clip.get(clip_id)
    if ann is None:
        return clip_id
    parts = [clip_id, ann.emotion or None, f"AU {ann.action_units}" if ann.action_units else None]
    return " · ".join(p for p in parts if p)


def grid_clips(ctx: Context, per: str) -> list[str]:
    """Clips of the normalized grid.

    Parameters
    ----------
    ctx : Context
    per : {"clip", "subject"}
        Every ready clip, or the first ready clip of each subject.

    Returns
    -------
    list of str
    """
    ready = ctx.ready_ids()
    if per == "clip":
        return ready
    first: dict[str, str] = {}
    for clip in ready:
        first.setdefault(ctx.dataset.annotations.by_clip[clip].subject, clip)
    return list(first.values())


def frame_number(ctx: Context, clip_id: str, which: str) -> int:
    """A clip's frame of a given role.

    Parameters
    ----------
    ctx : Context
    clip_id : str
    which : {"first", "onset", "apex"}
        ``first`` is the first frame of the clip folder.

    Returns
    -------
    int
        Absolute frame number.

    Raises
    ------
    ClipError
        ``clip_id`` is not a clip of the dataset with a folder.
    """
    ann, frames = disk.clip_of(ctx.dataset, clip_id)
    return frames.numbers[0] if which == "first" else getattr(ann, which)



# ============================================================== batch export


@dataclass
class ExportResult:
    """What a dashboard export wrote: one manifest row per annotation row."""

    out_dir: Path
    rows: list[dict[str, Any]]

    @property
    def ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.rows)

    @property
    def failed(self) -> int:
        return len(self.rows) - self.ok

    def zip_bytes(self) -> bytes:
        """The maps, ``manifest.csv`` and ``params.json`` as a zip archive."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in ("manifest.csv", "params.json"):
                archive.write(self.out_dir / name, name)
            for row in self.rows:
                if row["status"] == "ok" and row.get("output"):
                    archive.write(self.out_dir / row["output"], row["output"])
        return buffer.getvalue()


def export_folder(ctx: Context, out_dir: str | Path) -> Path:
    """The batch export's output folder, checked: the rules of the module docstring.

    Parameters
    ----------
    ctx : Context
    out_dir : str or Path
        As typed in the page.

    Returns
    -------
    Path
        Resolved; it may not exist yet.

    Raises
    ------
    InputError
        Outside the allowed roots; inside or containing a dataset folder (the open one,
        ``$SAMMFLOW_DATA``, the demo); a file; a non-empty folder that sammflow did not make.
    """
    typed = str(out_dir).strip()
    if not typed:
        raise InputError("No output folder given: type the folder the flow maps should be written to.")
    out = allowed_path(typed, "Output folder")
    datasets = [ctx.dataset.root, os.environ.get(ENV_DATA, "").strip()]
    try:
        datasets.append(demo_root(demo_config()))
    except ValueError:
        pass
    for root in filter(None, datasets):
        check_output_dir(Path(typed).expanduser(), Path(root))
    existing_output(out, "flows", label=typed)
    return out


def export_flows(ctx: Context, out_dir: str | Path, on_row: Callable[[int, int, dict[str, Any]], None] | None = None) -> ExportResult:
    """Write every clip's flow map, ``manifest.csv`` and ``params.json`` to ``out_dir``.

    Runs ``sammflow.export.export_flows`` itself — the command line's export — so the
    dashboard gets the same files and the same guarantees: resume of an earlier export with
    the same parameters, refusal of a folder holding other parameters' outputs, one writer
    per folder, atomic files. Apex boxes the pages already found are reused (the detector
    is the shared one). A failing clip becomes a row with its cause; the batch goes on.

    Parameters
    ----------
    ctx : Context
    out_dir : str or Path
        Checked by ``export_folder`` first (allowed roots, outside the datasets).
    on_row : callable(done, total, row), optional
        Called after each clip, for a live progress bar and status table.

    Returns
    -------
    ExportResult

    Raises
    ------
    InputError
        A ``ValueError`` naming the folder and the rule it breaks, outputs of other parameters
        there, or another run writing to it.
    """
    from sammflow import export

    out = export_folder(ctx, out_dir)
    report = export.export_flows(ctx.dataset, out, params=ctx.params, detector=detector(ctx.params.detect.device, ctx.params.detect.min_face),
                                 on_row=on_row)
    return ExportResult(report.out_dir, report.rows)


def default_out_dir() -> str:
    """The batch export's default output folder.

    Returns
    -------
    str
        ``$SAMMFLOW_OUT``, else ``./out/flows``.
    """
    return os.environ.get(ENV_OUT) or str(Path.cwd() / "out" / "flows")


def flow_stats(result: FlowResult) -> dict[str, float]:
    """Summary numbers of a flow, shown beside the large map.

    Parameters
    ----------
    result : FlowResult

    Returns
    -------
    dict of str → float
        ``mean`` and ``p99`` magnitude (crop px), ``direction`` (degrees, 0° = right,
        90° = down; nan without motion).
    """
    magnitude = result.magnitude
    try:
        direction = dominant_direction(result.flow_map)
    except ValueError:
        direction = float("nan")
    return {"mean": float(magnitude.mean()), "p99": float(np.percentile(magnitude, 99)), "direction": direction}


@dataclass(frozen=True)
class PairFigure:
    """The before/after figure of the alignment diagnostics for frames ``a`` and ``b``."""

    before: tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]  # MTCNN crop a, b, difference
    after: tuple[np.ndarray, np.ndarray, np.ndarray]  # aligned crop a, b, difference
    before_fraction: float  # share of pixels differing by >= threshold (nan without MTCNN boxes)
    after_fraction: float

    def png(self, a: int, b: int, threshold: int, clip: str) -> bytes:
        """The figure as one captioned panel (before row, after row), PNG bytes for download."""
        size = self.after[0].shape[0]
        blank = np.full((size, size), 255, np.uint8)
        tiles = [
            (self.before[0] if self.before[0] is not None else blank, f"MTCNN crop, frame {a}"),
            (self.before[1] if self.before[1] is not None else blank, f"MTCNN crop, frame {b}"),
            (self.before[2] if self.before[2] is not None else blank, f"|difference| ≥ {threshold}: {self.before_fraction:.1%}"),
            (self.after[0], f"aligned, frame {a}"), (self.after[1], f"aligned, frame {b}"),
            (self.after[2], f"|difference| ≥ {threshold}: {self.after_fraction:.1%}"),
        ]
        return png(panel(tiles, columns=3, tile=size, title=f"{clip}: per-frame MTCNN crops (top) vs template-aligned crops (bottom)"))


def pair_figure(ctx: Context, clip_id: str, a: int, b: int, threshold: int, track: dict[int, FaceBox | None]) -> PairFigure:
    """The before/after figure of the alignment diagnostics.

    Frames ``a`` and ``b``, each cropped by its own MTCNN box (before) and template-aligned
    (after), with their thresholded pixel-wise differences.

    Parameters
    ----------
    ctx : Context
    clip_id : str
    a, b : int
        Absolute frame numbers.
    threshold : int
        Grey levels.
    track : dict of int → FaceBox or None
        From ``mtcnn_boxes``.

    Returns
    -------
    PairFigure

    Raises
    ------
    ClipError
    """
    size = ctx.params.align.crop_size
    before: list[np.ndarray | None] = []
    for number in (a, b):
        box = track.get(number)
        before.append(mtcnn_crop(frame_grey(ctx, clip_id, number), box, size) if box else None)
    if before[0] is not None and before[1] is not None:
        diff_before, fraction_before = difference(before[0], before[1], threshold)
    else:
        diff_before, fraction_before = None, float("nan")
    aligned = crops(ctx, clip_id, (a, b))
    diff_after, fraction_after = difference(aligned.crops[a], aligned.crops[b], threshold)
    return PairFigure((before[0], before[1], diff_before), (aligned.crops[a], aligned.crops[b], diff_after), fraction_before, fraction_after)


def flagged_frames(aligned: disk.AlignedCrops, params: AlignParams) -> list[int]:
    """Frames whose match is not trusted (``sammflow.align.Alignment.flagged``).

    Parameters
    ----------
    aligned : sammflow.cache.AlignedCrops
    params : AlignParams
        ``min_score`` and ``max_residual``.

    Returns
    -------
    list of int
    """
    return [int(n) for n in disk.alignment_of(aligned).flagged(params)]
