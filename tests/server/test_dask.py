"""The Dask distributed executor: a job submitted to a LocalCluster runs and finishes once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from neurorad.server.app import create_app
from neurorad.server.worker import Worker
from neurorad.store.models import Job, Study
from tests.server.dicomdata import write_series


@pytest.mark.slow
@pytest.mark.services
def test_workflow_job_runs_on_dask_local_cluster(settings, tmp_path):
    from dask.distributed import LocalCluster

    app = create_app(settings)
    plane = app.state.plane
    for f in write_series(tmp_path / "s", "FLAIR", n_slices=3, size=32):
        assert plane.ingest_bytes(f.read_bytes(), "MOD").stored
    plane.complete_quiet_studies()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        addr = cluster.scheduler_address.replace("tcp://", "dask://")
        Worker(settings, executor=addr).run(poll_s=0.2, max_jobs=1)
    with plane.db.session() as s:
        job = s.scalars(select(Job)).one()
        st = s.scalars(select(Study)).one()
        assert job.state == "succeeded" and job.attempts == 1
        assert st.state == "needs_review" and sorted(r.kind for r in st.results if r.sop_uid) == ["pdf", "sc", "sr"]
