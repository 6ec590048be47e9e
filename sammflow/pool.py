"""The worker processes of batch jobs: one pool per worker count, kept for the life of the process.

Light on purpose (no numpy, OpenCV or sammflow stage imports): ``python -m sammflow export``
starts its workers here (``prestart``) before importing the rest of sammflow, so their
start-up (an interpreter each, importing the pipeline) runs on the cores the main process's
own imports leave idle. ``sammflow.workers`` runs the clips on these pools.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

#: What a worker imports as it starts, while the main process loads the detector: the jobs' work
#: functions and all they use (otherwise the first task pays for it).
WARM_MODULES = ("sammflow.export",)

#: Commands whose clips run on worker processes (``--workers``/``-j``; not with ``--scheduler``).
BATCH_COMMANDS = ("normalize", "flows", "gif", "export")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells, e.g. in a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe
    # Ctrl-C reaches the whole process group: the main process stops the batch; a worker
    # finishes its clip (atomic writes) instead of dying with a traceback on the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in WARM_MODULES:
        importlib.import_module(module)


_POOLS: dict[int, ProcessPoolExecutor] = {}


def get_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` processes, kept for the life of this process. Spawned, not
    forked: safe after torch's threads."""
    pool = _POOLS.get(workers)
    if pool is None:  # a larger one started already (``prestart``: a job with fewer clips than cores) serves as well
        larger = sorted((n, p) for n, p in _POOLS.items() if n > workers and not getattr(p, "_broken", False))
        pool = larger[0][1] if larger else None
    if pool is None or getattr(pool, "_broken", False):
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
        # Start every worker now (one per task while none is idle yet), while this process loads
        # the detector, and with Ctrl-C ignored: a child started that way ignores it from
        # its first instruction, so a Ctrl-C during its start-up prints no traceback either.
        with sigint_ignored():
            for _ in range(workers):
                pool.submit(int)
        _POOLS[workers] = pool
    return pool


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ctrl-C ignored in this process while inside (from the main thread; elsewhere nothing
    changes): what a child process started meanwhile inherits."""
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


def prestart(argv: Sequence[str]) -> int:
    """Start the worker pool a batch command line will ask for, before the command's imports;
    returns its size (0: none started).

    Only an unambiguous command line starts one: a batch command, no help, no
    ``--scheduler``, and ``--workers``/``-j`` absent (one per core) or a plain number. The
    command then finds the pool started (``sammflow.workers.run_clips`` asks for the same
    size: at most the cores); if it needs none after all (one clip to do, an error), the
    workers are stopped at exit.
    """
    if not argv or argv[0] not in BATCH_COMMANDS:
        return 0
    requested: str | None = None
    rest = list(argv[1:])
    for i, arg in enumerate(rest):
        name, equals, value = arg.partition("=")
        long = name.startswith("--") and len(name) > 3  # argparse takes unambiguous abbreviations
        if arg in ("--", "-h") or (long and ("--help".startswith(name) or "--scheduler".startswith(name))):
            return 0
        if long and "--workers".startswith(name):
            requested = value if equals else (rest[i + 1] if i + 1 < len(rest) else "")
        elif arg == "-j":
            requested = rest[i + 1] if i + 1 < len(rest) else ""
        elif arg.startswith("-j"):
            requested = arg[2:]
    cores = available_cores()
    if requested is not None and not (requested.isascii() and requested.isdigit()):
        return 0
    workers = cores if requested is None else min(int(requested), cores)
    if workers < 2:
        return 0
    get_pool(workers)
    return workers
