"""Running a job's clips: a step in this process, the rest in worker processes, or all on a Dask cluster.

``run_clips`` goes through the clips an ``OutputFolder`` has to do. For each, ``prepare``
runs here (face detection: the detector stays out of the workers) and ``work`` runs in one of
``workers`` spawned processes (or here, with one worker). A clip's failure becomes its
manifest row and the batch goes on; Ctrl-C cancels the queued clips and keeps the finished
ones. The pool is kept for the life of the process (the app, a notebook), so only the first
batch pays for starting it.

On a Dask cluster (``cluster=``, a ``distributed.Client``: ``sammflow.cluster``) each clip is
one task, ``sammflow.cluster_worker.run_clip_task``, which finds the apex face box on the
worker and then runs the same ``work``; rows are recorded here as tasks finish, with the same
rules (and the same progress and row callbacks).
"""

from __future__ import annotations

import dataclasses
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, CancelledError, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sammflow.annotations import ClipAnnotation
from sammflow.dataset import ClipFrames, Dataset, InputError
from sammflow.manifest import clip_row
from sammflow.outfolder import FATAL_WRITE_ERRORS, OutputFolder
from sammflow.params import DetectParams
from sammflow.pipeline import ClipError
from sammflow.pool import available_cores, get_pool
from sammflow.text import one_line, show_path

#: ``progress(done, total, label)``: called as clips finish.
Progress = Callable[[int, int, str], None]
#: ``on_row(done, total, row)``: called with each clip's manifest row as it is finished.
RowCallback = Callable[[int, int, dict[str, Any]], None]
#: ``prepare(items) -> results``: the step that runs in this process, for several clips at once:
#: for each ``(clip, frames)`` of ``items``, ``(box, warnings)`` or the exception that clip met.
Prepare = Callable[[list[tuple[ClipAnnotation, ClipFrames]]], list[Any]]
#: Most clips given to ``prepare`` at once. The first batches are smaller (1, 2, 4, ...), so
#: that the workers start early.
PREPARE_BATCH = 8


def default_workers() -> int:
    """Worker processes for batch jobs: one per core."""
    return available_cores()


def _pool(workers: int) -> ProcessPoolExecutor:
    """``sammflow.pool.get_pool``: the pool of ``workers`` processes kept for this process."""
    return get_pool(workers)


def preflight(dataset: Dataset, clip: ClipAnnotation, needed: tuple[str, ...] = ("onset", "apex")) -> ClipFrames:
    """The clip's frames, or ``ClipError`` if its folder or a needed frame is missing."""
    frames = dataset.clips_on_disk.get(clip.clip)
    if frames is None:
        raise ClipError(dataset.folder_problem(clip.clip, clip.subject) or f"{clip.clip}: no usable folder")
    missing = [f"{name} frame {getattr(clip, name)}" for name in needed if getattr(clip, name) not in frames.frames]
    if missing:
        raise ClipError(f"{clip.clip}: {', '.join(missing)} not on disk in {show_path(frames.folder)}")
    return frames


def _batches(todo: list[tuple[int, ClipAnnotation]]) -> Iterator[list[tuple[int, ClipAnnotation]]]:
    """``todo`` in batches of 1, 2, 4, ... up to ``PREPARE_BATCH`` clips."""
    start, size = 0, 1
    while start < len(todo):
        yield todo[start:start + size]
        start, size = start + size, min(2 * size, PREPARE_BATCH)


class _Runner:
    """The state of one ``run_clips`` call: the folder, the clips in flight and how many are done.

    ``pending`` maps each clip in flight, a future (of a worker process or of a Dask task),
    to its index and clip."""

    def __init__(self, folder: OutputFolder, workers: int, progress: Progress | None, on_row: RowCallback | None) -> None:
        self.folder, self.workers, self.progress, self.on_row = folder, workers, progress, on_row
        self.total = len(folder.rows)
        self.done = self.total - len(folder.todo)
        self.pending: dict[Any, tuple[int, ClipAnnotation]] = {}

    def ready(self, index: int, clip: ClipAnnotation, blocked: dict[str, str] | None) -> ClipFrames | None:
        """The clip's frames, or ``None`` once its failure is recorded (``blocked``, or ``preflight``)."""
        try:
            if blocked and clip.clip in blocked:
                raise ClipError(f"{clip.clip}: {blocked[clip.clip]}")
            return preflight(self.folder.dataset, clip)
        except Exception as exc:  # noqa: BLE001 - one clip's failure must not stop the batch
            self.failed(index, clip, exc)
            return None

    def finish(self, index: int, row: dict[str, Any], exc: BaseException | None = None) -> None:
        self.folder.record(index, row, exc)
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total, str(row["clip"]))
        if self.on_row:
            self.on_row(self.done, self.total, self.folder.rows[index])

    def take(self, future: Any) -> None:
        """Record the clip of a finished ``future`` (taken out of ``pending``): its row, or its failure."""
        index, clip = self.pending.pop(future)
        try:
            row = {**clip_row(clip, "ok"), **future.result()}
        except Exception as exc:  # noqa: BLE001
            self.failed(index, clip, exc)
        else:
            self.finish(index, row)

    def failed(self, index: int, clip: ClipAnnotation, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno in FATAL_WRITE_ERRORS:  # a full disk: no later clip can succeed either
            raise InputError(f"{self.folder.out}: cannot write outputs ({exc.strerror}); finished clips are kept, re-run to resume") from exc
        if isinstance(exc, CancelledError):  # only a cluster cancels a task itself: the client lost its scheduler
            why = getattr(exc, "reason", None) or one_line(str(exc)) or "no reason given"
            raise InputError(f"the Dask cluster cancelled the clips' tasks ({why}); finished clips are kept in {self.folder.out}, "
                             f"re-run to resume") from exc
        if _killed_worker(exc):  # not a bug in the clip: no traceback to log
            exc = ClipError(f"{clip.clip}: the Dask worker running it died {exc.allowed_failures + 1} times (out of memory, or "
                            f"killed); re-run to retry")
        self.finish(index, clip_row(clip, "failed", self._cause(clip, exc)), exc)

    def _cause(self, clip: ClipAnnotation, exc: Exception) -> str:
        """A failure's message: ``ClipError`` texts name their clip; anything else is unexpected."""
        if isinstance(exc, ClipError):
            return str(exc)
        if isinstance(exc, BrokenProcessPool):
            return f"{clip.clip}: the worker process died (out of memory or killed); re-run to retry"
        return f"{clip.clip}: unexpected {type(exc).__name__}: {exc}"  # the folder's record() says where its traceback is

    @property
    def queued_at_most(self) -> int:
        """Clips the workers may have queued before this process waits for one to finish: enough
        that they never wait for the next batch of ``prepare`` (detection need not run further ahead)."""
        return 2 * max(self.workers, PREPARE_BATCH)

    def collect(self, block: bool) -> None:
        """Record finished clips: all of them (``block``), or those done by now, waiting only
        while the workers have ``queued_at_most`` clips queued."""
        while self.pending:
            if block or len(self.pending) >= self.queued_at_most:
                done_now, _ = wait(self.pending, return_when=FIRST_COMPLETED)
            else:
                done_now = {f for f in self.pending if f.done()}
                if not done_now:
                    return
            for future in done_now:
                self.take(future)
            if not block and len(self.pending) < self.queued_at_most:
                return

    def salvage(self, cancel: Callable[[list[Any]], Any] | None = None) -> None:
        """Interrupted: keep the rows of the clips that finished meanwhile, cancel the others
        (``cancel(futures)``, or each future's own ``cancel``)."""
        for future, (index, clip) in self.pending.items():
            if future.done() and not future.cancelled() and future.exception() is None and self.folder.rows[index]["status"] == "pending":
                self.folder.rows[index] = {**clip_row(clip, "ok"), **future.result()}
        if cancel is not None:
            cancel(list(self.pending))
        else:
            for future in self.pending:
                future.cancel()


def _killed_worker(exc: BaseException) -> bool:
    """Whether ``exc`` is Dask's ``KilledWorker``: the scheduler gave up on a task whose workers
    kept dying (``distributed.scheduler.allowed-failures`` retries). Without ``distributed``
    imported, no task ran on a cluster."""
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(exc, distributed.KilledWorker)


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
    cluster: Any = None,
    detect: DetectParams | None = None,
) -> None:
    """Run ``work(clip, frames, box, warnings, *args)`` for every clip ``folder`` has to do.

    Parameters
    ----------
    folder : OutputFolder
        Entered; each clip's row is recorded there as it finishes.
    work : callable
        A module-level function (it is sent to worker processes) returning the row's columns.
    prepare : callable(items) -> results, optional
        Runs in this process before ``work`` (face detection), on up to ``PREPARE_BATCH`` clips
        at once: for each ``(clip, frames)``, ``(box, warnings)`` or the exception that clip
        met (its failure row). An exception it raises stops the job. ``(None, [])`` if omitted.
    workers : int
        Worker processes at most; 1 runs everything here. Never more are started than the
        cores (``available_cores``) or the clips to do: each is one more Python interpreter.
    blocked : dict of clip → why, optional
        Clips that fail without running.
    progress, on_row : callable, optional
        Called as clips finish.
    cluster : distributed.Client, optional
        Run every clip as a task on this client's Dask cluster instead (``workers`` and
        ``prepare`` unused): ``sammflow.cluster_worker.run_clip_task``, which finds the apex
        face box there when ``detect`` is given. The workers must see the dataset and
        ``folder`` at the same paths (frame paths are sent absolute; ``args`` must hold the
        output folder as an absolute path). A task whose workers keep dying (Dask retries it on
        others first) fails its clip; Ctrl-C cancels the tasks not finished.
    detect : DetectParams, optional
        With ``cluster``: the face detection each task runs before ``work``.
    """
    workers = 1 if cluster is not None else max(1, min(workers, available_cores(), len(folder.todo)))
    runner = _Runner(folder, workers, progress, on_row)
    if progress:
        progress(runner.done, runner.total, f"{folder.resumed} already done" if folder.resumed else "")
    if cluster is not None:
        _run_on_cluster(runner, work, args, cluster, detect, blocked)
        return
    pool = _pool(workers) if workers > 1 and len(folder.todo) > 1 else None
    try:
        for chunk in _batches(folder.todo):
            ready = [(index, clip, frames) for index, clip in chunk if (frames := runner.ready(index, clip, blocked)) is not None]
            prepared = prepare([(clip, frames) for _, clip, frames in ready]) if prepare and ready else [(None, [])] * len(ready)
            for (index, clip, frames), result in zip(ready, prepared, strict=True):
                try:
                    if isinstance(result, Exception):
                        raise result
                    box, warnings = result
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


def _run_on_cluster(runner: _Runner, work: Callable[..., dict[str, Any]], args: tuple[Any, ...], client: Any,
                    detect: DetectParams | None, blocked: dict[str, str] | None) -> None:
    """``run_clips`` on a Dask cluster: every clip that passes ``preflight`` here is submitted
    at once (the scheduler queues them), and recorded as its task finishes."""
    from distributed import as_completed

    from sammflow.cluster_worker import run_clip_task

    run = uuid.uuid4().hex[:8]  # task keys unique to this run: a cluster may hold another run's tasks
    out = runner.folder.out.absolute()
    try:
        for index, clip in runner.folder.todo:
            frames = runner.ready(index, clip, blocked)
            if frames is not None:
                future = client.submit(run_clip_task, work, clip, _absolute(frames), args, out_dir=out, detect=detect,
                                       key=f"sammflow-{clip.clip}-{run}", pure=False)
                runner.pending[future] = (index, clip)
        for future in as_completed(list(runner.pending), loop=client.loop):
            runner.take(future)
    except BaseException:
        runner.salvage(cancel=client.cancel)
        raise


def _absolute(frames: ClipFrames) -> ClipFrames:
    """``frames`` with absolute paths: a Dask worker's working folder is not this process's."""
    return dataclasses.replace(frames, folder=frames.folder.absolute(), frames={n: p.absolute() for n, p in frames.frames.items()})
