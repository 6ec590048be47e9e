"""Many clips at once, for the dashboard's pages that show one result per clip: the normalized
grid's aligned frames (``aligned_frames``) and the flow page's sample flows (``compute_flows``).

Clip after clip, a cold grid of SAMM's 159 clips took 16 s in the dashboard's process: MTCNN on
each apex (then after torch's import), two frame decodes, the alignment, the cache writes. Here:

* what the disk store (``sammflow.cache.ClipStore``) holds is read back, and nothing more is
  done for it;
* apex boxes missing from it are found in this process (the detector stays out of the
  workers, as in the batch jobs), several clips at once (``sammflow.pipeline.find_apex_faces``),
  by two threads, so that one decodes apex frames while the other detects; the detector is
  built in a third thread meanwhile and detects on one thread
  (``sammflow.detect.LoadingDetector``): a thread per core would wait for the cores the
  workers hold (torch's MTCNN was 5-10× slower per frame on 2 shared cores);
* each clip's alignment goes to the worker pool of ``sammflow.workers`` as soon as its box is
  known; its crop is written to the store there, where every page and the export find it.

The flow page's pairs are computed in threads of this process (``compute_flows``).

Plain functions, no Streamlit: ``sammflow.ui`` caches their results, and calls them from the
page's thread (the progress callback is called there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from sammflow.annotations import ClipAnnotation
from sammflow.cache import ClipStore, crops_with_box
from sammflow.dataset import ClipFrames, FrameError
from sammflow.detect import LoadingDetector
from sammflow.flow import FlowField, compute_flow
from sammflow.params import FlowParams, PipelineParams
from sammflow.pipeline import ClipError, NormalizedClip, find_apex_faces
from sammflow.workers import _pool, default_workers

#: ``progress(done, total, text)``: called as results arrive.
Progress = Callable[[int, int, str], None]
#: Clips whose apex boxes are looked for at once (``detect.BATCH`` frames go through MTCNN together).
DETECT_CHUNK = 16
#: Seconds between two progress reports while clips finish (each redraws the page's bar).
REPORT_EVERY_S = 0.1
#: Threads looking for apex boxes: while one detects (OpenCV and torch release the GIL), the other decodes.
DETECT_THREADS = 2


@dataclass(frozen=True)
class FrameRequest:
    """One aligned frame of a clip.

    Attributes
    ----------
    clip : ClipAnnotation
        The clip as processed (its apex spotted where it was to be): the frame is aligned to
        its apex's crop.
    annotated : ClipAnnotation
        The dataset's own annotation, whose apex frame gives the face box
        (``sammflow.cache.apex_box``).
    frames : ClipFrames
    number : int
        Absolute frame number.
    """

    clip: ClipAnnotation
    annotated: ClipAnnotation
    frames: ClipFrames
    number: int


@dataclass(frozen=True)
class Grid:
    """The normalized grid as the page draws it.

    Attributes
    ----------
    tiles : tuple of (ndarray uint8 (crop_size, crop_size), str)
        Each clip's aligned frame and its caption, in clip order.
    failed : tuple of str
        A message per clip without a tile, starting with the clip id.
    """

    tiles: tuple[tuple[np.ndarray, str], ...]
    failed: tuple[str, ...]


def aligned_frames(requests: Sequence[FrameRequest], params: PipelineParams, *, store: ClipStore, workers: int | None = None,
                   progress: Progress | None = None) -> list[NormalizedClip | ClipError]:
    """One aligned frame of each request's clip, read through ``store`` as
    ``sammflow.cache.aligned_crops`` reads, with the same results, computed in parallel.

    Parameters
    ----------
    requests : sequence of FrameRequest
    params : PipelineParams
        ``detect`` and ``align`` matter.
    store : ClipStore
        Boxes and crops found there are used; those made here are put there.
    workers : int, optional
        Worker processes for the alignment (default: one per core, the pool that
        ``sammflow.workers`` keeps for the process's life; 1 aligns in this process).
    progress : callable(done, total, text), optional
        Called as frames are ready (read back, or aligned), and as the work changes stage.

    Returns
    -------
    list of NormalizedClip or ClipError
        In the order of ``requests``: the clip's crop of ``number`` with its match record and
        the detection's warnings, or why the clip has none (no face, a frame missing or
        unreadable ...).
    """
    run = _Run(requests, params, store, progress)
    boxed, to_detect = run.read_store()
    if not boxed and not to_detect:
        return run.results
    workers = default_workers() if workers is None else max(1, workers)
    loader = LoadingDetector(params.detect) if to_detect else None  # built while the first apexes decode
    try:
        run.workers = workers if workers > 1 and len(boxed) + len(to_detect) > 1 else 1
        for index, box, warnings in boxed:
            run.align(index, box, warnings)
        if loader is not None:
            run.detect(to_detect, loader)
        run.stage = "Aligning"
        run.collect(block=True)
    finally:
        if loader is not None:
            loader.close()
    return run.results


class _Run:
    """The state of one ``aligned_frames`` call."""

    def __init__(self, requests: Sequence[FrameRequest], params: PipelineParams, store: ClipStore, progress: Progress | None) -> None:
        self.requests, self.params, self.store, self.progress = requests, params, store, progress
        self.results: list[Any] = [None] * len(requests)
        self.done = 0
        self.workers = 1  # worker processes for the alignment; 1: here
        self.pending: dict[Future[Any], int] = {}  # alignments in the workers
        self.stage = "Reading the cache"
        self.reported = -float("inf")  # when progress was last called (time.monotonic)

    def finish(self, index: int, result: NormalizedClip | ClipError) -> None:
        self.results[index] = result
        self.done += 1
        self.report(every=REPORT_EVERY_S)

    def report(self, every: float = 0.0) -> None:
        """Call ``progress`` (at most once per ``every`` s, and always for the last clip)."""
        now = time.monotonic()
        if self.progress and (now - self.reported >= every or self.done == len(self.requests)):
            self.reported = now
            self.progress(self.done, len(self.requests), self.stage)

    def read_store(self) -> tuple[list[tuple[int, Any, tuple[str, ...]]], list[int]]:
        """Finish what the store has; return the clips with a box but no crop, and those without a box."""
        boxed, to_detect = [], []
        for index, req in enumerate(self.requests):
            try:
                cached = self.store.get_box(req.annotated, req.frames, self.params.detect)
                if cached is None:
                    req.frames.path(req.annotated.apex)  # a missing apex frame fails here, named
                    to_detect.append(index)
                    continue
                hit = crops_with_box(req.clip, req.frames, *cached, self.params, (req.number,), store=self.store, cached_only=True)
            except FrameError as exc:
                self.finish(index, ClipError(f"{req.clip.clip}: {exc}"))
            except ClipError as exc:
                self.finish(index, exc)
            else:
                if hit is None:
                    boxed.append((index, *cached))
                else:
                    self.finish(index, hit)
        return boxed, to_detect

    def align(self, index: int, box: Any, warnings: Sequence[str]) -> None:
        """Align the clip's frame to its apex box: in a worker (or here, without a pool)."""
        req = self.requests[index]
        args = (req.clip, req.frames, box, tuple(warnings), self.params, (req.number,))
        if self.workers > 1:
            # the pool at the first clip to align (or once the detector is built): started beside
            # torch's import, the workers' start slowed it down (2.4 → 5.5 s on 2 cores)
            self.pending[_pool(self.workers).submit(crops_with_box, *args, store=self.store)] = index
            return
        try:
            self.finish(index, crops_with_box(*args, store=self.store))
        except ClipError as exc:
            self.finish(index, exc)

    def collected(self, finished: set[Future[Any]]) -> None:
        for future in finished & self.pending.keys():
            index = self.pending.pop(future)
            try:
                self.finish(index, future.result())
            except ClipError as exc:
                self.finish(index, exc)
            except Exception as exc:  # noqa: BLE001 - one clip's failure (a dead worker too) never stops the grid
                self.finish(index, ClipError(f"{self.requests[index].clip.clip}: unexpected {type(exc).__name__}: {exc}"))

    def collect(self, block: bool) -> None:
        """Record the alignments finished by now (all of them: ``block``)."""
        while self.pending:
            finished = wait(self.pending, return_when=FIRST_COMPLETED)[0] if block else {f for f in self.pending if f.done()}
            if not finished:
                return
            self.collected(finished)

    def detect(self, indices: list[int], loader: LoadingDetector) -> None:
        """Find the apex boxes of ``indices`` (``find_apex_faces``: put in the store there) in
        ``DETECT_CHUNK`` clips per call by ``DETECT_THREADS`` threads, and align each chunk's
        clips as soon as it is done."""
        self.stage = "Detecting faces" if loader.ready.done() else "Loading the face detector"
        self.report()
        chunks = [indices[start:start + DETECT_CHUNK] for start in range(0, len(indices), DETECT_CHUNK)]
        threads = ThreadPoolExecutor(DETECT_THREADS, thread_name_prefix="sammflow-faces")
        try:
            detecting = {threads.submit(find_apex_faces, [(self.requests[i].annotated, self.requests[i].frames) for i in chunk],
                                        params=self.params.detect, detector=loader, boxes=self.store): chunk for chunk in chunks}
            while detecting:
                loading = set() if loader.ready.done() else {loader.ready}
                finished = wait([*detecting, *self.pending, *loading], return_when=FIRST_COMPLETED)[0]
                if loader.ready in finished:
                    self.stage = "Detecting faces"
                    self.report()
                    if self.workers > 1:
                        _pool(self.workers)  # the workers start now: their first clips are being detected
                for future in finished & detecting.keys():
                    for index, found in zip(detecting.pop(future), future.result()):
                        if isinstance(found, ClipError):
                            self.finish(index, found)
                        else:
                            self.align(index, *found)
                self.collected(finished)
        finally:
            threads.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- flows


def compute_flows(pairs: Sequence[tuple[np.ndarray, np.ndarray]], params: FlowParams, *, threads: int | None = None) -> list[FlowField]:
    """``sammflow.flow.compute_flow`` of each (onset, apex) crop pair, several at once.

    In threads of this process (OpenCV releases the GIL), not in the worker processes: 9
    pairs of 224 px crops on 2 cores took Farnebäck 140 → 80 ms, TV-L1 4.4 → 3.9 s (it
    already splits each pair between OpenCV's threads), where the workers, once started (1-2 s),
    matched the threads but no more.

    Parameters
    ----------
    threads : int, optional
        Default: one per core.

    Returns
    -------
    list of FlowField
        In the order of ``pairs``; the same fields as one at a time (every method gives the same
        bytes whatever the thread count).

    Raises
    ------
    FlowMethodUnavailable
        As ``compute_flow`` (check ``sammflow.flow.require_method`` first).
    """
    threads = min(default_workers() if threads is None else max(1, threads), len(pairs))
    if threads <= 1:
        return [compute_flow(onset, apex, params=params) for onset, apex in pairs]
    with ThreadPoolExecutor(threads, thread_name_prefix="sammflow-flow") as pool:
        return list(pool.map(lambda pair: compute_flow(pair[0], pair[1], params=params), pairs))
