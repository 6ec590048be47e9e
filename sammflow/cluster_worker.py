"""What runs on a Dask worker: the task of one clip, and the worker plugins that set workers up.

``run_clip_task`` is what ``sammflow.workers.run_clips`` submits per clip to a cluster
(``sammflow.cluster``): it checks that this worker sees the clip's frames and the output
folder, finds the clip's apex face box (the detector of this worker process), and runs the
job's work function, the same as in local worker processes, which writes the clip's files
atomically and returns its manifest columns. The client records them.

This module imports ``distributed`` (a plugin must subclass its ``WorkerPlugin``), so only a
job on a cluster imports it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
from distributed import WorkerPlugin, get_worker

from sammflow.annotations import ClipAnnotation
from sammflow.dataset import ClipFrames
from sammflow.detect import load_detector
from sammflow.params import DetectParams
from sammflow.pipeline import ClipError, find_apex_face
from sammflow.text import show_path

#: One detection at a time per worker process: a worker started with several threads shares one
#: detector (``load_detector`` is per process), whose networks are not made for concurrent calls.
_DETECTING = threading.Lock()


def _worker_address() -> str:
    try:
        return str(get_worker().address)
    except ValueError:  # not on a worker (called directly)
        return "(none: not on a Dask worker)"


def run_clip_task(work: Callable[..., dict[str, Any]], clip: ClipAnnotation, frames: ClipFrames, args: tuple[Any, ...], *,
                  out_dir: Path, detect: DetectParams | None = None) -> dict[str, Any]:
    """One clip on a Dask worker: ``work(clip, frames, box, warnings, *args)``, its manifest columns.

    Parameters
    ----------
    work : callable
        A job's per-clip work function (``sammflow.export``), as local worker processes run it.
    frames : ClipFrames
        With absolute paths (the worker's working folder is not the client's).
    out_dir : Path
        The job's output folder, absolute; ``work`` writes there (it is in ``args`` too).
    detect : DetectParams, optional
        Find the apex face box first (``sammflow.pipeline.find_apex_face``, with this worker
        process's detector); without it ``box`` is ``None`` (crops aligned already).

    Raises
    ------
    ClipError
        The clip's frame folder or the output folder is not visible on this worker (not on a
        file system shared at the same paths), no face, or what ``work`` raises.
    """
    for folder in (frames.folder, out_dir):
        if not folder.is_dir():
            raise ClipError(f"{clip.clip}: {show_path(folder)} is not visible on Dask worker {_worker_address()}: workers must see the "
                            f"dataset and the output folder at the same paths (a shared file system)")
    box, warnings = None, []
    if detect is not None:
        try:
            detector = load_detector(detect.device, detect.min_face)
        except RuntimeError as exc:  # CUDA asked for, missing on this worker
            raise ClipError(f"{clip.clip}: no face detector on Dask worker {_worker_address()}: {exc}") from exc
        with _DETECTING:
            box, warnings = find_apex_face(clip, frames, params=detect, detector=detector)
    return work(clip, frames, box, warnings, *args)


class WorkerSetup(WorkerPlugin):
    """Every worker of a job: OpenCV on one thread (a worker runs one clip per thread: its own
    threads would only compete with the other workers' clips), and for a job that detects
    faces, the detector built once, before the first clip."""

    def __init__(self, detect: DetectParams | None = None) -> None:
        self.detect = detect

    def setup(self, worker: Any) -> None:
        cv2.setNumThreads(1)
        if self.detect is not None:
            with contextlib.suppress(Exception):  # a worker that cannot build it: each clip's task says why
                load_detector(self.detect.device, self.detect.min_face)


class IgnoreInterrupts(WorkerPlugin):
    """The worker processes of a local cluster ignore Ctrl-C, which the terminal sends to the
    whole process group: the client cancels the job, and a worker finishes its clip's atomic
    writes instead of printing a traceback. (Set here for a worker the nanny restarts; the
    first ones start ignoring it: ``sammflow.cluster.connect``.)"""

    def setup(self, worker: Any) -> None:
        with contextlib.suppress(ValueError):  # not the worker process's main thread
            signal.signal(signal.SIGINT, signal.SIG_IGN)
