"""The local executor's job processes: each runs up to ``Settings.jobs_per_process`` jobs one after the
other, and a job that fails its process (time-out, kill) ends it (neurorad.server.worker)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import select

from neurorad.server.settings import Settings
from neurorad.server.worker import Worker
from neurorad.store.models import Job


def _run(app, monkeypatch, timeouts: list[float]) -> tuple[list[int], list, list[Job]]:
    """Enqueue one job of an unknown kind per entry (it fails at once, permanently, inside its job
    process) with that time-out, run them on one slot, and return each job's process id, the processes
    and the jobs."""
    plane = app.state.plane
    for t in timeouts:
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


def test_a_job_process_runs_up_to_jobs_per_process_jobs_and_a_timed_out_one_ends(app, monkeypatch):
    app.state.settings.jobs_per_process = 2
    pids, procs, jobs = _run(app, monkeypatch, [3600.0, 3600.0, 0.0, 3600.0, 3600.0])
    a, b, c, d, e = pids
    assert a == b                 # the second job ran in the first job's process
    assert c != b                 # the first process had run its 2 jobs: replaced
    assert d not in (a, c)        # the third job timed out: its process was killed, not reused
    assert e == d
    assert [j.state for j in jobs] == ["failed"] * 5
    assert [j.error.startswith("unknown job kind") for j in jobs] == [True, True, False, True, True]
    assert jobs[2].error.startswith("timed out")
    assert not any(p.is_alive() for p in procs)   # the worker ends its idle processes when it stops


def test_jobs_per_process_1_gives_every_job_a_process_of_its_own(app, monkeypatch):
    app.state.settings.jobs_per_process = 1
    pids, procs, jobs = _run(app, monkeypatch, [3600.0] * 3)
    assert len(set(pids)) == 3
    assert all(j.error.startswith("unknown job kind") for j in jobs)
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
    assert first.error() is None
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
