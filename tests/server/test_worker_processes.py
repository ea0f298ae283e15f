"""The local executor's job processes: each runs up to ``Settings.jobs_per_process`` jobs one after the
other, and only a job that succeeded hands its process on: a failed, timed-out or killed job ends it
(neurorad.server.worker)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import select

from neurorad.server.settings import Settings
from neurorad.server.worker import Worker
from neurorad.store.models import Job

from .dicomdata import write_series


def _run(app, monkeypatch, timeouts: list[float], succeed: list[bool] | None = None,
         tmp_path=None) -> tuple[list[int], list, list[Job]]:  # noqa: ANN001
    """Queue one job per entry and run them on one slot; return each job's process id, the processes and the
    jobs. A job that is to succeed is a real workflow job (a small FLAIR study received and queued for the
    conftest's ``summary`` workflow); the others are of an unknown kind (they fail at once, permanently,
    inside their job process), with the entry's time-out."""
    plane = app.state.plane
    if succeed:  # real workflow jobs: a lease long enough that a loaded machine never loses one mid-job
        app.state.settings.lease_s = plane.queue.lease_s = 60.0
    for n, t in enumerate(timeouts):
        if succeed and succeed[n]:
            for f in write_series(tmp_path / f"study{n}", "FLAIR", n_slices=2, size=32):
                plane.ingest_bytes(f.read_bytes(), "MOD")
            assert len(plane.complete_quiet_studies()) == 1
        else:
            plane.queue.enqueue("probe-kind", {}, max_attempts=1, timeout_s=t)
    pids: list[int] = []
    procs: list = []
    start = Worker._start

    def spy(self, lease):  # noqa: ANN001, ANN202 - records which process each job went to
        handle = start(self, lease)
        pids.append(handle.host.proc.pid)
        procs.append(handle.host.proc)
        return handle

    monkeypatch.setattr(Worker, "_start", spy)
    Worker(app.state.settings, concurrency=1).run(poll_s=0.05, max_jobs=len(timeouts))
    with plane.db.session() as s:
        jobs = list(s.scalars(select(Job).order_by(Job.id)))
        s.expunge_all()
    return pids, procs, jobs


def test_a_job_process_runs_up_to_jobs_per_process_jobs_and_only_a_succeeded_job_hands_it_on(
        app, monkeypatch, tmp_path):
    app.state.settings.jobs_per_process = 2
    ok = [True, True, True, False, False, True]
    pids, procs, jobs = _run(app, monkeypatch, [3600.0, 3600.0, 3600.0, 0.0, 3600.0, 3600.0], ok, tmp_path)
    s1, s2, s3, timed_out, failed, s4 = pids
    assert s1 == s2                # the second job ran in the first job's process
    assert s3 != s2                # the first process had run its 2 jobs: replaced
    assert timed_out == s3         # s3 succeeded: its process took the next job, which timed out ...
    assert failed != timed_out     # ... so it was killed, not reused
    assert s4 != failed            # a job that failed inside its process ended it after 1 of its 2 jobs
    assert [j.state for j in jobs] == ["succeeded", "succeeded", "succeeded", "failed", "failed", "succeeded"]
    assert jobs[3].error.startswith("timed out") and jobs[4].error.startswith("unknown job kind")
    assert not any(p.is_alive() for p in procs)   # the worker ends its idle processes when it stops


def test_a_failed_job_ends_its_process(app, monkeypatch):
    app.state.settings.jobs_per_process = 20
    pids, procs, jobs = _run(app, monkeypatch, [3600.0] * 3)
    assert len(set(pids)) == 3     # each failed job ended its process: none is reused
    assert all(j.state == "failed" and j.error.startswith("unknown job kind") for j in jobs)
    assert not any(p.is_alive() for p in procs)


def test_jobs_per_process_1_gives_every_job_a_process_of_its_own(app, monkeypatch, tmp_path):
    # jobs that succeed: a failed one would end its process whatever the setting
    app.state.settings.jobs_per_process = 1
    pids, procs, jobs = _run(app, monkeypatch, [3600.0] * 3, [True] * 3, tmp_path)
    assert len(set(pids)) == 3
    assert all(j.state == "succeeded" for j in jobs)
    assert not any(p.is_alive() for p in procs)


def test_jobs_per_process_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="jobs_per_process"):
        Settings(data_dir=tmp_path, jobs_per_process=0)


def _wait(handle) -> None:  # noqa: ANN001 - a worker._LocalJob
    deadline = time.monotonic() + 60
    while not handle.finished():
        assert time.monotonic() < deadline, "job process did not answer"
        time.sleep(0.02)


def test_an_idle_job_process_that_died_is_replaced(app):
    """A job process that ends while idle (OOM killer, an operator's kill) is not handed the next job."""
    app.state.settings.jobs_per_process = 5
    plane = app.state.plane
    worker = Worker(app.state.settings, concurrency=1)
    for _ in range(2):
        plane.queue.enqueue("probe-kind", {}, max_attempts=1)
    first = worker._start(plane.queue.claim("test"))
    _wait(first)
    assert first.error() is None and first.state == "failed"
    first.state = "succeeded"  # as if it had succeeded: the process waits for the next job
    worker._release(first, ok=True)
    assert worker._idle == [first.host]
    os.kill(first.host.proc.pid, signal.SIGKILL)
    first.host.proc.join(5)
    second = worker._start(plane.queue.claim("test"))
    assert second.host is not first.host and worker._idle == []
    _wait(second)
    assert second.error() is None
    second.host.stop()
    assert not second.host.proc.is_alive()


def test_a_job_process_hands_memory_back_only_when_it_waits(monkeypatch):
    """Back-to-back jobs keep the freed heap (neurorad.runtime: speed); a job process with no next lease within
    ``JOB_PROCESS_TRIM_AFTER_S`` hands it back (``release_free_memory``), once per wait."""
    import multiprocessing as mp
    import threading

    from neurorad.server import worker

    trims: list[float] = []
    monkeypatch.setattr(worker, "execute_job", lambda settings_d, lease_d: "succeeded")
    monkeypatch.setattr(worker, "release_free_memory", lambda: trims.append(time.monotonic()) is None)
    monkeypatch.setattr(worker, "JOB_PROCESS_TRIM_AFTER_S", 0.2)
    ours, theirs = mp.Pipe(duplex=True)
    ours.send({"job": 1})
    ours.send({"job": 2})  # already waiting when job 1 ends: no trim between the two
    loop = threading.Thread(target=worker._serve_jobs, args=(theirs, {}), daemon=True)
    loop.start()

    def trimmed(n: int) -> None:  # wait (up to 10 s on a loaded machine) for the n-th trim
        deadline = time.monotonic() + 10.0
        while len(trims) < n and time.monotonic() < deadline:
            time.sleep(0.05)

    assert ours.recv() == ("done", "succeeded") and ours.recv() == ("done", "succeeded")
    trimmed(1)
    assert len(trims) == 1  # after job 2 only: job 1 found job 2 waiting
    ours.send({"job": 3})
    assert ours.recv() == ("done", "succeeded")
    trimmed(2)
    ours.send(None)
    loop.join(5.0)
    assert not loop.is_alive() and len(trims) == 2


def test_a_dask_task_hands_memory_back_after_its_job_even_when_it_fails(monkeypatch):
    """A Dask worker is long-lived: each task (``execute_dask_job``) trims after its job, whatever the job did."""
    from neurorad.server import worker

    trims: list[int] = []
    monkeypatch.setattr(worker, "release_free_memory", lambda: trims.append(1) is None)
    monkeypatch.setattr(worker, "execute_job", lambda settings_d, lease_d: "succeeded")
    assert worker.execute_dask_job({}, {}) == "succeeded" and trims == [1]

    def boom(settings_d, lease_d):  # noqa: ANN001, ANN202
        raise RuntimeError("job failed")

    monkeypatch.setattr(worker, "execute_job", boom)
    with pytest.raises(RuntimeError, match="job failed"):
        worker.execute_dask_job({}, {})
    assert trims == [1, 1]
