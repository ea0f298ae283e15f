"""Scale-out failures with real processes (issue 15): a ``dask scheduler`` and ``dask worker``
processes on 127.0.0.1, ``neurorad worker`` processes, SQLite (WAL) as the shared queue.

* a ``neurorad worker`` killed (SIGKILL) while Dask runs its jobs;
* the Dask scheduler killed (SIGKILL) while it runs jobs, then started again on the same port
  with a fresh Dask worker, as systemd would (``Restart=always``).

Either way every study ends exactly once: one ``needs_review`` per run, one succeeded job, the
results of one job, nothing pending or running (``tests/ops/dask_procs.exactly_once_report``).
The neurorad killed-worker case of the ``local`` executor is in tests/integration/test_crash_safety.py,
the killed Dask worker in test_dask_kill.py. Tiny studies and 2 s jobs keep this small.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from neurorad.server.orchestration import DataPlane
from neurorad.server.settings import Settings
from neurorad.server.worker import Worker
from neurorad.store.models import Job
from tests.ops.dask_procs import DaskProcesses, exactly_once_report, kill, start_neurorad_worker
from tests.server.dicomdata import write_series

N_STUDIES = 2
# generous limits and leases: neither lengthens a passing run (jobs end through their task or are
# given back, never by lease expiry), but a run at load average 21-27 under nice 19 went past the
# former 90-120 s limits (3 s leases could also expire there while heartbeats waited for a CPU)
JOB_S = "2"  # NEURORAD_SUMMARY_DELAY_S: each job lasts that long (progress every 0.5 s)
CONFIG = {"workflows": ["summary"], "lease_s": 10.0, "backoff_base_s": 0.5, "quiet_period_s": 0.0,
          "max_attempts": 5}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dask_procs(tmp_path_factory) -> Iterator[DaskProcesses]:
    procs = DaskProcesses(tmp_path_factory.mktemp("dask"), env={"NEURORAD_SUMMARY_DELAY_S": JOB_S}, nthreads=2)
    procs.start_scheduler()
    procs.start_worker()
    yield procs
    procs.stop()


def _installation(root: Path) -> tuple[Settings, DataPlane, Path]:
    """A data folder with N_STUDIES complete studies queued for the workflow."""
    settings = Settings(data_dir=root / "data", dicom_port=0, **CONFIG)
    plane = DataPlane(settings)
    plane.db.migrate()
    for i in range(N_STUDIES):
        for f in write_series(root / f"in{i}", "FLAIR", n_slices=2, size=32):
            assert plane.ingest_bytes(f.read_bytes(), "MOD").stored
    assert len(plane.complete_quiet_studies()) == N_STUDIES
    config = root / "site.json"
    config.write_text(json.dumps(CONFIG))
    return settings, plane, config


def _wait(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out ({timeout_s:.0f} s) waiting for {what}")


def _running_on_dask(plane: DataPlane) -> list[int]:
    """Jobs whose workflow already reported progress: their task runs on a Dask worker."""
    with plane.db.read_session() as s:
        return list(s.scalars(select(Job.id).where(Job.state == "running", Job.progress > 0)))


def _open_jobs(plane: DataPlane) -> int:
    with plane.db.read_session() as s:
        return len(s.scalars(select(Job.id).where(Job.state.in_(("pending", "running")))).all())


def _drain(settings: Settings, plane: DataPlane, executor: str, timeout_s: float) -> None:
    """A surviving neurorad worker (in this process) runs until no job is pending or running."""
    w = Worker(settings, executor=executor, concurrency=2, worker_id="survivor")
    t = threading.Thread(target=w.run, kwargs={"poll_s": 0.2}, daemon=True)
    t.start()
    try:
        _wait(lambda: _open_jobs(plane) == 0, timeout_s, "every job to end")
    finally:
        w.stop()
        t.join(30)


def _assert_ended_once(plane: DataPlane) -> None:
    rep = exactly_once_report(plane.db)
    assert rep["problems"] == [], rep["problems"]
    assert (rep["studies"], rep["ended_once"], rep["lost"], rep["duplicated"], rep["stuck"]) == (
        N_STUDIES, N_STUDIES, 0, 0, 0), rep


def test_killed_neurorad_worker_mid_run_every_study_ends_once(dask_procs, tmp_path):
    settings, plane, config = _installation(tmp_path)
    victim = start_neurorad_worker(settings.data_dir, config, dask_procs.address, tmp_path / "victim.log",
                                   concurrency=2)
    try:
        _wait(lambda: _running_on_dask(plane), 300, "a job of the victim to run on Dask")
        with plane.db.read_session() as s:
            owners = {j.lease_owner for j in s.scalars(select(Job).where(Job.state == "running"))}
        kill(victim)
        assert owners and "survivor" not in owners  # the killed worker held the running jobs
        _drain(settings, plane, dask_procs.address, 300)
    finally:
        kill(victim)
    _assert_ended_once(plane)


def test_killed_dask_scheduler_mid_run_every_study_ends_once(dask_procs, tmp_path):
    settings, plane, _ = _installation(tmp_path)
    w = Worker(settings, executor=dask_procs.address, concurrency=2, worker_id="w1")
    t = threading.Thread(target=w.run, kwargs={"poll_s": 0.2}, daemon=True)
    t.start()
    try:
        _wait(lambda: _running_on_dask(plane), 300, "a job to run on Dask")
        kill(dask_procs.scheduler)
        for old in dask_procs.workers:  # a Dask worker ends without its scheduler; systemd would restart it
            kill(old)
        # while the scheduler is gone, no job is held: each is given back to the queue
        _wait(lambda: not _jobs_held(plane), 120, "the running jobs to be given back")
        # ... and none is claimed again until the scheduler is back (it would wait, leased, on a
        # client that has no scheduler: stuck until the job's time-out if the scheduler stayed away)
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            assert not _jobs_held(plane), "a job was claimed while the Dask scheduler was down"
            time.sleep(0.1)
        dask_procs.start_scheduler()
        dask_procs.start_worker()
        _wait(lambda: _open_jobs(plane) == 0, 300, "every job to end after the scheduler restart")
    finally:
        w.stop()
        t.join(30)
    _assert_ended_once(plane)
    with plane.db.read_session() as s:
        retried = s.scalars(select(Job).where(Job.attempts > 1)).all()
    assert retried, "no job was running when the scheduler died"


def _jobs_held(plane: DataPlane) -> list[int]:
    with plane.db.read_session() as s:
        return list(s.scalars(select(Job.id).where(Job.state == "running")))
