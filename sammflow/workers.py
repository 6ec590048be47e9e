"""Running a job's clips: a step in this process, the rest in worker processes.

``run_clips`` goes through the clips an ``OutputFolder`` has to do. For each, ``prepare``
runs here (face detection: torch stays out of the workers) and ``work`` runs in one of
``workers`` spawned processes (or here, with one worker). A clip's failure becomes its
manifest row and the batch goes on; Ctrl-C cancels the queued clips and keeps the finished
ones. The pool is kept for the life of the process (the app, a notebook), so only the first
batch pays for starting it.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import cv2

from sammflow.annotations import ClipAnnotation
from sammflow.dataset import ClipFrames, Dataset, InputError
from sammflow.manifest import clip_row
from sammflow.outfolder import FATAL_WRITE_ERRORS, OutputFolder
from sammflow.pipeline import ClipError
from sammflow.text import show_path

#: ``progress(done, total, label)``: called as clips finish.
Progress = Callable[[int, int, str], None]
#: ``on_row(done, total, row)``: called with each clip's manifest row as it is finished.
RowCallback = Callable[[int, int, dict[str, Any]], None]
#: ``prepare(clip, frames) -> (box, warnings)``: the step that runs in this process.
Prepare = Callable[[ClipAnnotation, ClipFrames], tuple[Any, list[str]]]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells, e.g. in a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Worker processes for batch jobs: one per core."""
    return available_cores()


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe
    # Ctrl-C reaches the whole process group: the main process stops the batch; a worker
    # finishes its clip (atomic writes) instead of dying with a traceback on the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool kept for the life of this process. Spawned, not forked: safe after torch's threads."""
    pool = _POOLS.get(workers)
    if pool is None or getattr(pool, "_broken", False):
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
        # Start every worker now (one per task while none is idle yet), while this process imports
        # torch for detection, and with Ctrl-C ignored: a child started that way ignores it from
        # its first instruction, so a Ctrl-C during its start-up prints no traceback either.
        with _sigint_ignored():
            for _ in range(workers):
                pool.submit(int)
        _POOLS[workers] = pool
    return pool


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to do, the worker initializer still ignores it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def shutdown_pools() -> None:
    """Stop the kept worker processes (also done at exit)."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(cancel_futures=True)


atexit.register(shutdown_pools)


def preflight(dataset: Dataset, clip: ClipAnnotation, needed: tuple[str, ...] = ("onset", "apex")) -> ClipFrames:
    """The clip's frames, or ``ClipError`` if its folder or a needed frame is missing."""
    frames = dataset.clips_on_disk.get(clip.clip)
    if frames is None:
        raise ClipError(dataset.folder_problem(clip.clip, clip.subject) or f"{clip.clip}: no usable folder")
    missing = [f"{name} frame {getattr(clip, name)}" for name in needed if getattr(clip, name) not in frames.frames]
    if missing:
        raise ClipError(f"{clip.clip}: {', '.join(missing)} not on disk in {show_path(frames.folder)}")
    return frames


class _Runner:
    """The state of one ``run_clips`` call: the folder, the clips in flight and how many are done."""

    def __init__(self, folder: OutputFolder, workers: int, progress: Progress | None, on_row: RowCallback | None) -> None:
        self.folder, self.workers, self.progress, self.on_row = folder, workers, progress, on_row
        self.total = len(folder.rows)
        self.done = self.total - len(folder.todo)
        self.pending: dict[Future[dict[str, Any]], tuple[int, ClipAnnotation]] = {}

    def finish(self, index: int, row: dict[str, Any], exc: BaseException | None = None) -> None:
        self.folder.record(index, row, exc)
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total, str(row["clip"]))
        if self.on_row:
            self.on_row(self.done, self.total, self.folder.rows[index])

    def failed(self, index: int, clip: ClipAnnotation, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno in FATAL_WRITE_ERRORS:  # a full disk: no later clip can succeed either
            raise InputError(f"{self.folder.out}: cannot write outputs ({exc.strerror}); finished clips are kept, re-run to resume") from exc
        self.finish(index, clip_row(clip, "failed", self._cause(clip, exc)), exc)

    def _cause(self, clip: ClipAnnotation, exc: Exception) -> str:
        """A failure's message: ``ClipError`` texts name their clip; anything else is unexpected."""
        if isinstance(exc, ClipError):
            return str(exc)
        if isinstance(exc, BrokenProcessPool):
            return f"{clip.clip}: the worker process died (out of memory or killed); re-run to retry"
        return f"{clip.clip}: unexpected {type(exc).__name__}: {exc}"  # the folder's record() says where its traceback is

    def collect(self, block: bool) -> None:
        """Record finished clips: all of them (``block``), or those done by now, waiting only
        while the workers have ``2 × workers`` clips queued (detection need not run further ahead)."""
        while self.pending:
            if block or len(self.pending) >= 2 * self.workers:
                done_now, _ = wait(self.pending, return_when=FIRST_COMPLETED)
            else:
                done_now = {f for f in self.pending if f.done()}
                if not done_now:
                    return
            for future in done_now:
                index, clip = self.pending.pop(future)
                try:
                    row = {**clip_row(clip, "ok"), **future.result()}
                except Exception as exc:  # noqa: BLE001
                    self.failed(index, clip, exc)
                else:
                    self.finish(index, row)
            if not block and len(self.pending) < 2 * self.workers:
                return

    def salvage(self) -> None:
        """Interrupted: cancel the queued clips, keep the rows of those that finished meanwhile."""
        for future, (index, clip) in self.pending.items():
            future.cancel()
            if future.done() and not future.cancelled() and future.exception() is None and self.folder.rows[index]["status"] == "pending":
                self.folder.rows[index] = {**clip_row(clip, "ok"), **future.result()}


def run_clips(
    folder: OutputFolder,
    work: Callable[..., dict[str, Any]],
    args: tuple[Any, ...],
    *,
    prepare: Prepare | None = None,
    workers: int = 1,
    blocked: dict[str, str] | None = None,
    progress: Progress | None = None,
    on_row: RowCallback | None = None,
) -> None:
    """Run ``work(clip, frames, box, warnings, *args)`` for every clip ``folder`` has to do.

    Parameters
    ----------
    folder : OutputFolder
        Entered; each clip's row is recorded there as it finishes.
    work : callable
        A module-level function (it is sent to worker processes) returning the row's columns.
    prepare : callable(clip, frames) -> (box, warnings), optional
        Runs in this process before ``work`` (face detection); ``(None, [])`` if omitted.
    workers : int
        Worker processes at most; 1 runs everything here. Never more are started than the
        cores (``available_cores``) or the clips to do: each is one more Python interpreter.
    blocked : dict of clip → why, optional
        Clips that fail without running.
    progress, on_row : callable, optional
        Called as clips finish.
    """
    workers = max(1, min(workers, available_cores(), len(folder.todo)))
    runner = _Runner(folder, workers, progress, on_row)
    if progress:
        progress(runner.done, runner.total, f"{folder.resumed} already done" if folder.resumed else "")
    pool = _pool(workers) if workers > 1 and len(folder.todo) > 1 else None
    try:
        for index, clip in folder.todo:
            try:
                if blocked and clip.clip in blocked:
                    raise ClipError(f"{clip.clip}: {blocked[clip.clip]}")
                frames = preflight(folder.dataset, clip)
                box, warnings = prepare(clip, frames) if prepare else (None, [])
                if pool is None:
                    runner.finish(index, {**clip_row(clip, "ok"), **work(clip, frames, box, warnings, *args)})
                else:
                    runner.pending[pool.submit(work, clip, frames, box, warnings, *args)] = (index, clip)
            except Exception as exc:  # noqa: BLE001 - one clip's failure must not stop the batch
                runner.failed(index, clip, exc)
            runner.collect(block=False)
        runner.collect(block=True)
    except BaseException:
        runner.salvage()
        raise
