"""``GET /metrics``: Prometheus exposition read from the database; signed-in only; no identifiers."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from neurorad.server.app import create_app
from neurorad.server.auth import create_api_token, create_user
from neurorad.server.settings import Settings
from neurorad.store.models import Job
from tests.server.dicomdata import SECRETS, write_series


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURORAD_KEY_DIR", str(tmp_path / "keys"))
    settings = Settings(data_dir=tmp_path / "data", quiet_period_s=0.0, dicom_port=0, lease_s=5.0,
                        workflows=["summary"])
    app = create_app(settings)
    with app.state.db.session() as s:
        u = create_user(s, "tech", "tech-password-1", "technologist")
        app.state.test_auth = {"Authorization": f"Bearer {create_api_token(s, u, 'prometheus')}"}
    return app


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def test_metrics_follow_a_study(app, tmp_path):
    files = write_series(tmp_path / "in", "FLAIR", n_slices=3, size=32)
    auth = app.state.test_auth
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401  # like every endpoint but /api/health
        for f in files:
            r = client.post("/api/instances", content=f.read_bytes(),
                            headers={**auth, "Content-Type": "application/dicom"})
            assert r.status_code < 300, r.text
        r = client.post("/api/instances", content=b"not dicom at all" * 20,
                        headers={**auth, "Content-Type": "application/dicom"})
        assert r.status_code == 422
        plane = app.state.plane
        assert len(plane.complete_quiet_studies()) == 1
        m = _samples(client.get("/metrics", headers=auth).text)
        assert m[("neurorad_instances_stored_total", ())] == 3
        assert m[("neurorad_instances_received_total", ())] == 3
        assert m[("neurorad_instances_refused_total", ())] == 1
        assert m[("neurorad_queue_depth", (("kind", "workflow"),))] == 1
        assert m[("neurorad_queue_oldest_pending_seconds", (("kind", "workflow"),))] >= 0
        # run the job as a worker's child would
        lease = plane.queue.claim("test")
        plane.run_job(lease)
        r = client.get("/metrics", headers=auth)
        assert r.headers["content-type"].startswith("text/plain")
        assert not any(secret in r.text for secret in SECRETS)
        m = _samples(r.text)
        assert m[("neurorad_queue_depth", (("kind", "workflow"),))] == 0
        wf = (("kind", "workflow"), ("workflow", "summary"))
        assert m[("neurorad_jobs", tuple(sorted((*wf, ("state", "succeeded")))))] == 1
        with app.state.db.read_session() as s:
            job = s.scalars(select(Job)).one()
            seconds = (job.finished_at - job.started_at).total_seconds()
        assert m[("neurorad_job_duration_seconds_count", wf)] == 1
        assert m[("neurorad_job_duration_seconds_sum", wf)] == pytest.approx(seconds)
        assert m[("neurorad_job_duration_seconds_bucket", tuple(sorted((*wf, ("le", "+Inf")))))] == 1
        step = (("step", "total"), ("workflow", "summary"))
        assert m[("neurorad_workflow_step_duration_seconds_count", step)] == 1
        assert m[("neurorad_runs", (("state", "needs_review"), ("workflow", "summary")))] == 1
        assert m[("neurorad_studies", (("state", "needs_review"),))] == 1
        # a second scrape does not count the same result's steps twice
        m = _samples(client.get("/metrics", headers=auth).text)
        assert m[("neurorad_workflow_step_duration_seconds_count", step)] == 1


def test_histogram_buckets_are_cumulative():
    from neurorad.server.metrics import _Histogram

    h = _Histogram((1, 10))
    for v in (0.5, 1.0, 3.0, 50.0):
        h.observe(v)
    assert h.buckets() == [("1.0", 2), ("10.0", 3), ("+Inf", 4)]
    assert h.total == pytest.approx(54.5)
