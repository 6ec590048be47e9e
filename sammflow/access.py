"""What a dashboard user may reach: dataset, annotation and output paths, confined to allowed roots.

No Streamlit here: ``sammflow.ui`` calls these for every path that comes from a widget or a
URL query parameter, and tests call them directly.

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
  folder), the export base folder (``$SAMMFLOW_OUT``, else ``./out``: see below), and the
  generated demo dataset's folder in the cache.

Not the home folder by default: on a lab server it holds the server account's credentials
(``~/.ssh``, ``~/.netrc``, cloud tokens), and an annotation-file error quotes the file's first
line. Datasets elsewhere need ``SAMMFLOW_ROOTS``. Only the paths a page user gives are
confined: symbolic links *inside* a dataset folder were put there by the dataset's owner and
are followed. The export folder must further resolve outside every dataset folder (the open
one, ``$SAMMFLOW_DATA``, the demo), and be new, empty, or an earlier sammflow output; one
export at a time writes to a folder (the same ``flock`` as the command line's jobs).

The export's default folder is one per dataset and parameter set,
``<base>/<dataset name>-<parameter hash>`` (``default_out_dir``; the demo's name is ``demo``),
so a second dataset or another parameter set never lands in the folder of the first. The
base is ``$SAMMFLOW_OUT`` when it is set, else ``./out`` (gitignored in the checkout): the
variable names the base, not the folder itself, and the base is an allowed root, so every
default folder is inside one. Before an export, ``export_plan`` says what the chosen folder
holds (nothing, an earlier export of the same parameters to resume, or one of other
parameters that the export would replace, with the files that replacing deletes), so the
page can offer those choices instead of the command line's ``--force``.

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
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sammflow.annotations import AnnotationError, read_annotations
from sammflow.cache import cache_dir, file_signature
from sammflow.dataset import Dataset, InputError, load_dataset, safe_path
from sammflow.demo import DemoConfig, generate_demo, read_ground_truth
from sammflow.outfolder import check_output_dir, existing_output

#: Environment variables read by the dashboard.
ENV_DATA = "SAMMFLOW_DATA"  # dataset folder (default: the generated demo)
ENV_ANNOTATIONS = "SAMMFLOW_ANNOTATIONS"  # annotation file (default: DATA/samm.csv)
ENV_DEMO_CONFIG = "SAMMFLOW_DEMO_CONFIG"  # JSON of DemoConfig fields, e.g. a small demo for tests
ENV_OUT = "SAMMFLOW_OUT"  # base folder of the batch export's default folders (one per dataset and parameter hash)
ENV_DEVICE = "SAMMFLOW_DEVICE"  # torch device of MTCNN (default cpu)
ENV_ROOTS = "SAMMFLOW_ROOTS"  # folders a page user may open or export to (see the module docstring)

#: Annotation tables are tens of KB (SAMM's xlsx ≈ 100 KB): a bigger file is the wrong file.
MAX_ANNOTATION_BYTES = 20 * 1024 * 1024

Loader = Callable[[str, str, tuple[Any, ...]], Dataset]


@dataclass(frozen=True)
class DatasetRef:
    """Which dataset the session looks at: the in-memory cache key of everything per clip."""

    root: str
    annotations: str
    demo: bool = False

    @property
    def label(self) -> str:
        return "demo dataset" if self.demo else Path(self.root).name


def allowed_roots() -> list[Path]:
    """The folders (and files) a page user may open or export to; read on every run.

    Returns
    -------
    list of Path
        Resolved, without duplicates: the ``$SAMMFLOW_ROOTS`` folders (``:``-separated; the
        working folder if unset or empty), then ``$SAMMFLOW_DATA``, ``$SAMMFLOW_ANNOTATIONS``
        (the file itself), the export base folder (``out_base``: ``$SAMMFLOW_OUT``, else
        ``./out``) and the demo dataset's folder. See the module docstring for why.
    """
    listed = [e.strip() for e in os.environ.get(ENV_ROOTS, "").split(os.pathsep) if e.strip()]
    entries = listed or [str(Path.cwd())]
    entries += [os.environ.get(name, "").strip() for name in (ENV_DATA, ENV_ANNOTATIONS)]
    entries.append(str(out_base()))
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


def demo_root(config: DemoConfig) -> Path:
    """The demo dataset's folder in the cache (``cache_dir()/demo-<config hash>``)."""
    return cache_dir() / f"demo-{config.hash}"


def demo_ready(root: Path, config: DemoConfig) -> bool:
    """Whether ``root`` holds the demo dataset of ``config``, complete."""
    try:
        return read_ground_truth(root)["config_hash"] == config.hash
    except (OSError, ValueError, KeyError, TypeError):
        return False


def signature(root: str, annotations: str) -> tuple[Any, ...]:
    """Changes when the annotation file or the dataset's top folder changes (a cache key)."""
    return (*file_signature(annotations), *file_signature(root))


def load(root: str, annotations: str, signature: tuple[Any, ...]) -> Dataset:
    """Read the annotations and discover the frames (``signature`` only keys a cache around it)."""
    return load_dataset(root, read_annotations(annotations))


def open_dataset(ref: DatasetRef, loader: Loader = load) -> Dataset:
    """Check a dataset's paths and read it: the sidebar's dataset, with messages for ``st.error``.

    Parameters
    ----------
    ref : DatasetRef
        Its paths are confined to the allowed roots first (``checked_ref``).
    loader : callable(root, annotations, signature) -> Dataset
        ``load``, or a cached wrapper of it (the dashboard's).

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
    size = file_signature(ann)[0]
    if size > MAX_ANNOTATION_BYTES:
        raise ValueError(f"Annotation file {ann} is {size / 2**20:.0f} MB; an annotation table is at most "
                         f"{MAX_ANNOTATION_BYTES // 2**20} MB (SAMM's is about 0.1 MB): wrong file?")
    try:
        dataset = loader(str(root), str(ann), signature(str(root), str(ann)))
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


def export_folder(dataset_root: str | Path, out_dir: str | Path) -> Path:
    """The batch export's output folder, checked: the rules of the module docstring.

    Parameters
    ----------
    dataset_root : str or Path
        The open dataset's folder.
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
    datasets = [str(dataset_root), os.environ.get(ENV_DATA, "").strip()]
    try:
        datasets.append(demo_root(demo_config()))
    except ValueError:
        pass
    for root in filter(None, datasets):
        check_output_dir(Path(typed).expanduser(), Path(root))
    existing_output(out, "flows", label=typed)
    return out


def out_base() -> Path:
    """The folder under which the batch export's default folders go (an allowed root).

    Returns
    -------
    Path
        ``$SAMMFLOW_OUT`` (``~`` expanded), else ``./out`` in the working folder.
    """
    return Path(os.environ.get(ENV_OUT, "").strip() or Path.cwd() / "out").expanduser()


def dataset_name(ref: DatasetRef) -> str:
    """The dataset's part of its default export folder name: ``demo``, or the dataset folder's
    name reduced to one safe path component (letters, digits, ``.``, ``_``, ``-``)."""
    if ref.demo:
        return "demo"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(ref.root).name).strip("._-")[:60]
    return name or "dataset"


def default_out_dir(ref: DatasetRef, params_hash: str) -> Path:
    """The batch export's default folder: one per dataset and parameter set.

    Parameters
    ----------
    ref : DatasetRef
        The open dataset.
    params_hash : str
        ``PipelineParams.hash`` (the parameters that change output bytes).

    Returns
    -------
    Path
        ``out_base() / "<dataset name>-<params hash>"``, e.g. ``out/SAMM-3f2a9c1b7d4e``.
    """
    return out_base() / f"{dataset_name(ref)}-{params_hash}"


# ---------------------------------------------------------------- the demo, built in the background


class DemoBuild:
    """One generation of the demo dataset, in a thread of its own.

    The dashboard's sessions only watch it (``fraction``, ``text``, ``wait``): closing the tab
    that started it, or every tab, does not stop it, and a tab opened meanwhile shows its
    progress instead of starting over. ``sammflow.demo.generate_demo`` builds the dataset aside
    and renames it into place, so the folder is the complete demo or absent.
    """

    def __init__(self, root: Path, config: DemoConfig) -> None:
        self.root, self.config = root, config
        self.done, self.total, self.clip = 0, config.subjects * config.clips_per_subject * config.frames, ""
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.seconds: float | None = None
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sammflow-demo-{config.hash}", daemon=True)

    def _progress(self, done: int, total: int, clip: str) -> None:
        self.done, self.total, self.clip = done, total, clip

    def _run(self) -> None:
        try:
            generate_demo(self.root, self.config, progress=self._progress)
        except BaseException as exc:  # noqa: BLE001 - reported to whoever watches (ensure_demo): OSError, ValueError ...
            self.error = exc
        finally:
            self.seconds = time.monotonic() - self.started
            with _BUILDS_LOCK:
                if _BUILDS.get(self.root) is self:
                    del _BUILDS[self.root]  # a finished build is not reused: the folder is ready, or a retry starts anew
            self._finished.set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s; whether the build has finished (successfully or not)."""
        return self._finished.wait(timeout)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def text(self) -> str:
        """Progress in words: ``"Creating the demo dataset: clip 011_2_2, frame 100 of 216 (12 s)"``."""
        elapsed = time.monotonic() - self.started
        if not self.done:
            return f"Creating the demo dataset… ({elapsed:.0f} s)"
        return f"Creating the demo dataset: clip {self.clip}, frame {self.done} of {self.total} ({elapsed:.0f} s)"


_BUILDS: dict[Path, DemoBuild] = {}
_BUILDS_LOCK = threading.Lock()


def demo_build(config: DemoConfig) -> DemoBuild | None:
    """The process's generation of the demo of ``config``: the one running, or a new one started.

    Returns
    -------
    DemoBuild or None
        ``None`` when the demo is ready (nothing to build).
    """
    root = demo_root(config)
    with _BUILDS_LOCK:
        build = _BUILDS.get(root)
        if build is not None:
            return build
        if demo_ready(root, config):
            return None
        build = _BUILDS[root] = DemoBuild(root, config)
        build._thread.start()
    return build
