"""The batch jobs on a Dask cluster (``distributed``): ``--scheduler ADDRESS`` or ``local:N``.

``Scheduler.parse`` reads the option (checked before any work, like every other option);
``connect`` opens a ``distributed.Client`` on it: a running scheduler's address, or a
``LocalCluster`` of N worker processes started here (listening on 127.0.0.1 only, no web
dashboard). ``prepare_workers`` sets up every worker of a job (``sammflow.cluster_worker``:
OpenCV on one thread, the face detector built once). The clips themselves go to the cluster
through ``sammflow.workers.run_clips(cluster=client)``, one task per clip; the output folder
(manifest, lock, ``params.json``, ``features.npz``) stays with this process, the client.

``distributed`` is imported only when a cluster is used: importing this module is cheap (the
command line parses ``--scheduler`` with it). Dask's own log lines are kept off the terminal
while a cluster is in use (critical ones only: even its errors, such as a local worker's
heartbeat failing as the cluster closes, come with tracebacks): what matters comes back as the
clips' rows, or as one ``InputError`` line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sammflow.dataset import InputError
from sammflow.params import DetectParams
from sammflow.text import one_line, printable

#: Seconds ``connect`` waits for a scheduler (and for its first worker) before giving up.
CONNECT_TIMEOUT = 10.0

#: ``tcp://host:port``, ``tls://host:port`` or ``host:port`` (tcp); an IPv6 host in brackets.
_ADDRESS = re.compile(r"(?:(?:tcp|tls)://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?):(?P<port>[0-9]{1,5})")
_LOCAL = re.compile(r"local:(?P<n>.*)")
#: The plugin names ``prepare_workers`` and ``connect`` register (a later job replaces its own).
_SETUP_PLUGIN, _LOCAL_PLUGIN = "sammflow-setup", "sammflow-local"


@dataclass(frozen=True)
class Scheduler:
    """Where a job's clips run: the Dask scheduler at ``address``, or a local cluster of
    ``local_workers`` worker processes. ``str()`` gives the option's text back.

    Use ``Scheduler.parse`` to read the option.
    """

    address: str | None = None
    local_workers: int | None = None

    def __post_init__(self) -> None:
        if (self.address is None) == (self.local_workers is None):
            raise ValueError("a Scheduler has either an address or local_workers")
        if self.local_workers is not None and self.local_workers < 1:
            raise ValueError(f"local_workers must be >= 1, got {self.local_workers}")

    def __str__(self) -> str:
        return f"local:{self.local_workers}" if self.local_workers is not None else str(self.address)

    @classmethod
    def parse(cls, text: str, *, name: str = "--scheduler", max_local: int | None = None) -> Scheduler:
        """``local:N`` (N ≥ 1 worker processes here), or a scheduler's address: ``tcp://host:8786``,
        ``tls://host:8786`` or ``host:8786``.

        Parameters
        ----------
        text : str
            The value as given.
        name : str
            How messages name the option (``--scheduler``; the dashboard's field label).
        max_local : int, optional
            Most worker processes ``local:N`` may start (a larger N is refused as a mistake).

        Raises
        ------
        InputError
            One line naming the option, the value and the rule.
        """
        value = text.strip()
        local = _LOCAL.fullmatch(value)
        if local:
            n = local["n"]
            if not (n.isascii() and n.isdigit()) or int(n) < 1:
                raise InputError(f"{name} {printable(value)!r}: local:N needs a whole number N >= 1 of worker processes (local:2)")
            if max_local is not None and int(n) > max_local:
                raise InputError(f"{name} {value}: more worker processes than the {max_local} allowed on this machine; "
                                 f"use at most local:{max_local}")
            return cls(local_workers=int(n))
        address = _ADDRESS.fullmatch(value)
        if address is None or not 1 <= int(address["port"]) <= 65535:
            raise InputError(f"{name} {printable(value)!r}: not a Dask scheduler address (tcp://HOST:PORT, tls://HOST:PORT or "
                             f"HOST:PORT, e.g. tcp://10.0.0.5:8786) nor local:N (a local cluster of N worker processes)")
        return cls(address=value)


#: What Dask may log while a job runs (here, and in a local cluster's worker processes).
_DASK_LOG_LEVEL = logging.CRITICAL


@contextlib.contextmanager
def _dask_quiet() -> Iterator[None]:
    """Dask's loggers at ``_DASK_LOG_LEVEL`` while inside (its lines — a worker restarted, a
    connection retried — would interleave with the progress bar); their levels restored after."""
    names = [name for name in logging.root.manager.loggerDict if name.split(".")[0] in ("distributed", "dask")]
    loggers = [logging.getLogger(name) for name in ("distributed", "dask", *names)]  # some have levels of their own (Dask's config)
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(_DASK_LOG_LEVEL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, before):
            logger.setLevel(level)


@contextlib.contextmanager
def _environment_kept() -> Iterator[None]:
    """This process's environment variables as they were, on leaving: a local cluster's nannies
    set their workers' (``OMP_NUM_THREADS=1``, ``PYTHONHASHSEED``, ...) in the process that
    spawns them, where they would stay for every process started later (the dashboard's)."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        for name, value in before.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


@contextlib.contextmanager
def connect(scheduler: Scheduler, *, timeout: float | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` on ``scheduler``, closed on leaving (with the local cluster it started).

    ``local:N`` starts a ``LocalCluster`` of N worker processes with one thread each, on
    127.0.0.1, without a web dashboard, their scratch folder a temporary one removed after
    (``$TMPDIR/sammflow-dask-*``), this process's environment restored after; its workers ignore Ctrl-C (the terminal sends it to
    the whole process group: this process cancels the job, a worker finishes its clip's atomic
    writes). An address must answer within ``timeout`` seconds (``CONNECT_TIMEOUT`` if not
    given) and have a worker by then.

    Raises
    ------
    InputError
        The scheduler cannot be reached, or has no worker: one line naming the address and the cause.
    """
    import dask
    from distributed import Client, LocalCluster

    from sammflow.cluster_worker import IgnoreInterrupts
    from sammflow.pool import sigint_ignored

    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    with _dask_quiet(), contextlib.ExitStack() as stack:
        if scheduler.local_workers is not None:
            stack.enter_context(_environment_kept())
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="sammflow-dask-"))  # the cluster's own, removed after
            stack.enter_context(dask.config.set({"temporary-directory": scratch}))
            with sigint_ignored():  # the worker processes start ignoring it (a restarted one: IgnoreInterrupts)
                cluster = stack.enter_context(LocalCluster(n_workers=scheduler.local_workers, threads_per_worker=1, processes=True,
                                                           host="127.0.0.1", dashboard_address=None, silence_logs=_DASK_LOG_LEVEL))
            client = stack.enter_context(Client(cluster, set_as_default=False))
            client.register_plugin(IgnoreInterrupts(), name=_LOCAL_PLUGIN)
        else:
            try:
                client = stack.enter_context(Client(scheduler.address, timeout=timeout, set_as_default=False))
            except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, a TLS address without certificates ...: all "cannot reach"
                cause = one_line(str(exc)) or type(exc).__name__
                raise InputError(f"cannot reach the Dask scheduler at {scheduler.address}: {cause}") from None
            if not client.scheduler_info().get("workers"):
                try:
                    client.wait_for_workers(1, timeout=timeout)
                except TimeoutError:
                    raise InputError(f"the Dask scheduler at {scheduler.address} has no workers (waited {timeout:g} s): start them "
                                     f"with `dask worker {scheduler.address}` on machines that see the dataset and the output "
                                     f"folder") from None
        yield client


def prepare_workers(client: Any, detect: DetectParams | None) -> None:
    """Set up every worker of ``client``'s cluster for a job, now and as workers join
    (``sammflow.cluster_worker.WorkerSetup``): OpenCV on one thread and, for a job that detects
    faces (``detect``), the detector built once per worker process.

    Raises
    ------
    InputError
        A worker cannot load sammflow (another environment): one line naming the cause.
    """
    from sammflow.cluster_worker import WorkerSetup

    try:
        client.register_plugin(WorkerSetup(detect), name=_SETUP_PLUGIN)
    except Exception as exc:  # noqa: BLE001 - raised on a worker: ModuleNotFoundError (no sammflow there), ...
        raise InputError(f"the Dask workers of {client.scheduler.address} cannot run sammflow ({type(exc).__name__}: "
                         f"{one_line(str(exc))}); every worker needs the same sammflow environment as this machine") from None
