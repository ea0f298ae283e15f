"""Scale-out failure: the Dask worker running a job is killed (SIGKILL) mid-job; Dask reruns the
task on another worker, the neurorad worker keeps the lease alive meanwhile, and the study ends
exactly once (one succeeded job, one needs_review transition, one set of results)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from sqlalchemy import select

from neurorad.server.app import create_app
from neurorad.server.settings import Settings
from neurorad.server.worker import Worker
from neurorad.store.models import Job, Result, StudyTransition
from tests.server.dicomdata import write_series


@pytest.mark.slow
def test_killed_dask_worker_mid_job_study_ends_once(tmp_path, monkeypatch):
    from dask.distributed import Client, LocalCluster

    monkeypatch.setenv("NEURORAD_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("NEURORAD_SUMMARY_DELAY_S", "8")  # inherited by the Dask worker processes
    settings = Settings(data_dir=tmp_path / "data", quiet_period_s=0.0, dicom_port=0, lease_s=6.0,
                        workflows=["summary"])
    plane = create_app(settings).state.plane
    for f in write_series(tmp_path / "s", "FLAIR", n_slices=3, size=32):
        assert plane.ingest_bytes(f.read_bytes(), "MOD").stored
    plane.complete_quiet_studies()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        addr = cluster.scheduler_address.replace("tcp://", "dask://")
        w = Worker(settings, executor=addr)
        t = threading.Thread(target=w.run, kwargs={"poll_s": 0.2, "max_jobs": 1}, daemon=True)
        t.start()
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            for worker_addr, keys in client.processing().items():
                if any(str(k).startswith("neurorad-job-") for k in keys):
                    victim = worker_addr
            time.sleep(0.2)
        assert victim is not None, "the job never started on a Dask worker"
        time.sleep(2.0)  # well inside the job (it lasts 8 s)
        nanny = next(n for n in cluster.workers.values() if n.worker_address == victim)
        os.kill(nanny.process.process.pid, signal.SIGKILL)
        t.join(120)
        assert not t.is_alive(), "the neurorad worker did not see the job end"
    with plane.db.read_session() as s:
        job = s.scalars(select(Job)).one()
        assert job.state == "succeeded", (job.state, job.error)
        run_steps = [x.to_state for x in s.scalars(select(StudyTransition).where(StudyTransition.run_id.is_not(None)))]
        assert run_steps.count("needs_review") == 1 and run_steps.count("running") == 1, run_steps
        results = s.scalars(select(Result)).all()
        assert len({r.job_id for r in results}) == 1 and len(results) == len({r.path for r in results})
