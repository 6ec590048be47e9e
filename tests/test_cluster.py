"""The batch jobs on a Dask cluster (``--scheduler``, ``sammflow.cluster``): the same files as
local processes, byte for byte; a failing clip is its row and the others finish; a worker that
dies mid-run loses no clip; a frame folder a worker cannot see is a clear per-clip error; an
unusable ``--scheduler`` is one line and exit 2; Ctrl-C leaves a folder that resumes.

The jobs run on one real ``LocalCluster`` of 2 worker processes, started once for the module
and reached by its address, as a remote cluster would be; one test starts ``local:2`` itself.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest

import sammflow.cluster
from helpers import dataset, manifest, outputs, params_json, run_cli
from sammflow.annotations import ClipAnnotation
from sammflow.cluster import Scheduler, connect, prepare_workers
from sammflow.dataset import InputError, load_dataset
from sammflow.export import _flow_work, export_flows, export_gifs, flows_from_normalized, normalize_dataset, sources_of
from sammflow.manifest import annotated_in_order
from sammflow.outfolder import OutputFolder
from sammflow.params import PipelineParams
from sammflow.pipeline import ClipError
from sammflow.workers import run_clips

#: What every worker of a test cluster must have finished starting before a test uses it (s).
WORKERS_TIMEOUT = 60


# ---------------------------------------------------------------- the option


@pytest.mark.parametrize("text, expected", [
    ("local:2", Scheduler(local_workers=2)),
    (" local:1 ", Scheduler(local_workers=1)),
    ("tcp://10.0.0.5:8786", Scheduler(address="tcp://10.0.0.5:8786")),
    ("tls://head.cluster.example:8786", Scheduler(address="tls://head.cluster.example:8786")),
    ("node-7:8786", Scheduler(address="node-7:8786")),
    ("tcp://[::1]:8786", Scheduler(address="tcp://[::1]:8786")),
])
def test_scheduler_values_are_read_and_given_back(text, expected):
    assert Scheduler.parse(text) == expected
    assert str(Scheduler.parse(text)) == text.strip()


@pytest.mark.parametrize("text, rule", [
    ("local:0", "local:N needs a whole number N >= 1"),
    ("local:x", "local:N needs a whole number N >= 1"),
    ("local:", "local:N needs a whole number N >= 1"),
    ("local:²", "local:N needs a whole number N >= 1"),
    ("nonsense", "not a Dask scheduler address"),
    ("tcp://host", "not a Dask scheduler address"),
    ("tcp://host:99999", "not a Dask scheduler address"),
    ("http://host:8786", "not a Dask scheduler address"),
    ("", "not a Dask scheduler address"),
])
def test_bad_scheduler_values_are_refused_naming_the_option(text, rule):
    with pytest.raises(InputError, match=rf"^--scheduler '{re.escape(text.strip())}': {rule}") as caught:
        Scheduler.parse(text)
    assert "\n" not in str(caught.value)


def test_a_local_cluster_larger_than_allowed_is_refused():
    assert Scheduler.parse("local:4", max_local=4).local_workers == 4
    with pytest.raises(InputError, match=r"^Dask scheduler local:5: more worker processes than the 4 allowed on this machine; "
                                         r"use at most local:4$"):
        Scheduler.parse("local:5", name="Dask scheduler", max_local=4)


@pytest.mark.parametrize("value", ["local:0", "local:x", "nonsense", "local:100000"])
def test_cli_refuses_a_bad_scheduler_in_one_line(demo_root, tmp_path, value):
    code, stdout, err = run_cli("export", demo_root, tmp_path / "out", "-q", "--scheduler", value)
    assert code == 2 and stdout == ""
    assert len(err.splitlines()) == 1 and err.startswith((f"error: --scheduler {value}: ", f"error: --scheduler '{value}': ")), err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_workers_with_a_scheduler(demo_root, tmp_path):
    code, _, err = run_cli("normalize", demo_root, tmp_path / "out", "-q", "-j", "2", "--scheduler", "local:2")
    assert code == 2
    assert err.splitlines() == ["error: --workers/-j: not with --scheduler, whose workers run the clips (--scheduler local:N starts N of "
                                "them; on a cluster, `dask worker --nworkers N` on each machine)"]


def test_an_unreachable_scheduler_is_one_line_and_exit_2(demo_root, tmp_path, monkeypatch):
    monkeypatch.setattr(sammflow.cluster, "CONNECT_TIMEOUT", 0.5)  # nothing listens on port 1: wait half a second, not ten
    code, stdout, err = run_cli("export", demo_root, tmp_path / "out", "-q", "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and stdout == ""
    assert err.splitlines() == ["error: cannot reach the Dask scheduler at tcp://127.0.0.1:1: Timed out trying to connect to "
                                "tcp://127.0.0.1:1 after 0.5 s"]
    assert not (tmp_path / "out").exists()  # connected before the output folder is made: nothing written


# ---------------------------------------------------------------- jobs on a real cluster


@pytest.fixture(scope="module")
def cluster():
    """A client of one ``LocalCluster`` of 2 worker processes, shared by the module's jobs."""
    with connect(Scheduler(local_workers=2)) as client:
        yield client


@pytest.fixture()
def scheduler(cluster) -> Scheduler:
    """The module's cluster by its address; both workers up (a test may have killed one: its nanny restarts it)."""
    cluster.wait_for_workers(2, timeout=WORKERS_TIMEOUT)
    return Scheduler.parse(cluster.scheduler.address)


def _same_outputs(local: Path, on_cluster: Path) -> None:
    """Every file byte-identical; params.json too, but for its times."""
    mine, theirs = outputs(local), outputs(on_cluster)
    assert sorted(mine) == sorted(theirs)
    assert [name for name in mine if mine[name] != theirs[name]] == []
    assert params_json(local) == params_json(on_cluster)


@pytest.mark.slow
def test_export_on_local_n_writes_the_files_of_local_processes(demo_root, tmp_path):
    assert run_cli("export", demo_root, tmp_path / "local", "-q", "--arrays")[0] == 0
    environment = dict(os.environ)
    code, stdout, err = run_cli("export", demo_root, tmp_path / "cluster", "-q", "--arrays", "--scheduler", "local:2")
    assert (code, err) == (0, "")
    assert dict(os.environ) == environment  # not the workers' OMP_NUM_THREADS=1, PYTHONHASHSEED ... for later processes
    assert stdout.startswith("4 of 4 clips ok, 0 failed")
    assert (tmp_path / "cluster" / "features.npz").is_file() and len(list((tmp_path / "cluster" / "flows").glob("*.png"))) == 4
    _same_outputs(tmp_path / "local", tmp_path / "cluster")


@pytest.mark.slow
def test_normalize_flows_and_gifs_on_a_cluster_write_the_files_of_local_processes(demo_root, tmp_path, scheduler):
    data = dataset(demo_root)
    for name, where in (("local", {"workers": 2}), ("cluster", {"scheduler": scheduler})):
        assert normalize_dataset(data, tmp_path / name / "aligned", **where).ok == 4
        aligned = load_dataset(tmp_path / "local" / "aligned", data.annotations)  # the same input (params.json names it)
        assert flows_from_normalized(aligned, tmp_path / name / "flows", arrays=True, **where).ok == 4
        assert export_gifs(data, tmp_path / name / "gifs", **where).ok == 4
    for job in ("aligned", "flows", "gifs"):
        _same_outputs(tmp_path / "local" / job, tmp_path / "cluster" / job)
    assert len(outputs(tmp_path / "cluster" / "aligned")) > 40


@pytest.mark.slow
def test_a_failing_clip_is_its_row_and_the_others_finish(demo_copy, tmp_path, scheduler):
    victim = manifest_clip(demo_copy, 2)
    apex = next((demo_copy / victim.subject / victim.clip).glob(f"*{victim.apex}.jpg"))
    apex.write_bytes(apex.read_bytes()[:2000])  # a JPEG cut short: decoding it on the worker fails
    local = export_flows(dataset(demo_copy), tmp_path / "local", workers=2)
    report = export_flows(dataset(demo_copy), tmp_path / "cluster", scheduler=scheduler)
    rows = {row["clip"]: row for row in manifest(tmp_path / "cluster")}
    assert [clip for clip, row in rows.items() if row["status"] == "ok"] == [c for c in rows if c != victim.clip]
    assert rows[victim.clip]["status"] == "failed" and rows[victim.clip]["error"].startswith(f"{victim.clip}: ")
    assert apex.name in rows[victim.clip]["error"]
    assert report.unexpected == 0 and local.ok == report.ok == 3
    _same_outputs(tmp_path / "local", tmp_path / "cluster")  # the same row, cause and all


def manifest_clip(root: Path, n: int) -> ClipAnnotation:
    """The ``n``-th annotated clip of a dataset."""
    return dataset(root).annotations.clips[n]


def dies_once(clip, frames, box, warnings, marker, *args):
    """``_flow_work``, but the first call anywhere kills its own worker process (SIGKILL, as
    the kernel's out-of-memory killer would) before writing anything."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return _flow_work(clip, frames, box, warnings, *args)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_no_clip(demo_root, tmp_path, cluster, scheduler):
    reference = export_flows(dataset(demo_root), tmp_path / "reference", workers=2)
    params, data = PipelineParams(), dataset(demo_root).resolved(PipelineParams().annotations)
    marker, out = tmp_path / "killed", tmp_path / "out"
    pids = set(cluster.run(os.getpid).values())
    with OutputFolder(out, data, kind="flows", params=params, sources=sources_of(data),
                      items=annotated_in_order(data.annotations)) as folder:
        prepare_workers(cluster, params.detect)
        run_clips(folder, dies_once, (marker, params, folder.out, False), cluster=cluster, detect=params.detect)
    assert marker.is_file()  # a worker did die, running a clip
    cluster.wait_for_workers(2, timeout=WORKERS_TIMEOUT)
    assert len(set(cluster.run(os.getpid).values()) - pids) == 1  # and was replaced
    assert [row["status"] for row in folder.report.rows] == ["ok"] * 4 and folder.report.unexpected == 0
    assert outputs(out) == outputs(tmp_path / "reference") and reference.ok == 4


@pytest.mark.slow
def test_a_folder_a_worker_cannot_see_is_a_clear_clip_error(demo_copy, tmp_path, cluster, scheduler):
    data = dataset(demo_copy)  # the frames are listed here, then the folder goes: as on a worker that does not share it
    victim = data.annotations.clips[1]
    shutil.move(demo_copy / victim.subject / victim.clip, tmp_path / "elsewhere")
    report = export_flows(data, tmp_path / "out", scheduler=scheduler)
    rows = {row["clip"]: row for row in report.rows}
    worker_addresses = set(cluster.scheduler_info()["workers"])
    error = rows[victim.clip]["error"]
    where, _, worker = error.partition(" is not visible on Dask worker ")
    assert where == f"{victim.clip}: {demo_copy / victim.subject / victim.clip}" and worker.split(":")[:2] == ["tcp", "//127.0.0.1"]
    assert worker.endswith(": workers must see the dataset and the output folder at the same paths (a shared file system)")
    assert worker.split(": ")[0] in worker_addresses
    assert report.ok == 3 and report.unexpected == 0
    # the output folder, likewise
    from sammflow.cluster_worker import run_clip_task

    clip, frames = data.ready()[0]
    future = cluster.submit(run_clip_task, _flow_work, clip, frames, (PipelineParams(), tmp_path / "nowhere", False),
                            out_dir=tmp_path / "nowhere", pure=False)
    with pytest.raises(ClipError, match=rf"^{clip.clip}: {tmp_path / 'nowhere'} is not visible on Dask worker tcp://127\.0\.0\.1:\d+: "):
        future.result(timeout=WORKERS_TIMEOUT)


@pytest.mark.slow
def test_ctrl_c_cancels_the_tasks_and_leaves_a_folder_that_resumes(demo_root, tmp_path, scheduler):
    calls = []

    def progress(done, total, label):
        calls.append(done)
        if len(calls) == 2:  # the first call comes before any clip; the second, right after the first clip's row
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export_flows(dataset(demo_root), out, scheduler=scheduler, progress=progress)
    statuses = [row["status"] for row in manifest(out)]
    assert statuses.count("ok") >= 1 and "pending" in statuses and set(statuses) == {"ok", "pending"}
    kept = {row["clip"]: (out / row["output"]).stat().st_mtime_ns for row in manifest(out) if row["status"] == "ok"}
    assert "stopped by SIGINT (Ctrl-C)" in (out / "sammflow.log").read_text()
    report = export_flows(dataset(demo_root), out, scheduler=scheduler)
    assert report.ok == 4 and report.resumed == len(kept)
    assert {row["clip"]: (out / row["output"]).stat().st_mtime_ns for row in report.rows if row["clip"] in kept} == kept
    export_flows(dataset(demo_root), tmp_path / "reference", workers=2)
    assert outputs(out) == outputs(tmp_path / "reference")


def test_a_task_whose_workers_kept_dying_fails_its_clip_without_a_traceback(demo_root, tmp_path):
    from distributed import KilledWorker

    from sammflow.workers import _Runner

    data = dataset(demo_root)
    with OutputFolder(tmp_path / "out", data, kind="flows", params=PipelineParams(), sources=sources_of(data),
                      items=annotated_in_order(data.annotations)) as folder:
        index, clip = folder.todo[0]
        _Runner(folder, 1, None, None).failed(index, clip, KilledWorker(f"sammflow-{clip.clip}-run", None, 3))
    row = manifest(tmp_path / "out")[index]
    assert (row["status"], row["error"]) == ("failed", f"{clip.clip}: the Dask worker running it died 4 times (out of memory, or killed); "
                                                       "re-run to retry")
    assert folder.report.unexpected == 0 and "Traceback" not in (tmp_path / "out" / "sammflow.log").read_text()
