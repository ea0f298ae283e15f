"""JSON logs: one object per line, with the request id (echoed in X-Request-ID) and the job id;
a study with realistic identifiers goes through the API and a job and none reaches the log."""

from __future__ import annotations

import io
import json
import logging

import pydicom
import pytest
from fastapi.testclient import TestClient

from neurorad.server import logs
from neurorad.server.app import create_app
from neurorad.server.auth import create_api_token, create_user
from neurorad.server.settings import Settings
from tests.server.dicomdata import IDENTITY, SECRETS, write_series


@pytest.fixture
def json_log(monkeypatch):
    monkeypatch.delenv(logs.ENV, raising=False)
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buf
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_formatter_carries_context_ids(json_log):
    tok_r, tok_j = logs.request_id.set("abc-123"), logs.job_id.set(42)
    try:
        logging.getLogger("neurorad.test").warning("hello %s", "world")
    finally:
        logs.request_id.reset(tok_r)
        logs.job_id.reset(tok_j)
    logging.getLogger("neurorad.test").info("outside")
    first, second = (json.loads(line) for line in json_log.getvalue().splitlines())
    assert first["message"] == "hello world" and first["level"] == "WARNING"
    assert first["request_id"] == "abc-123" and first["job_id"] == 42 and first["time"].endswith("+00:00")
    assert second["request_id"] is None and second["job_id"] is None


def test_study_with_identifiers_leaves_none_in_json_log(json_log, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURORAD_KEY_DIR", str(tmp_path / "keys"))
    settings = Settings(data_dir=tmp_path / "data", quiet_period_s=0.0, dicom_port=0, lease_s=5.0,
                        workflows=["summary"])
    app = create_app(settings)
    with app.state.db.session() as s:
        u = create_user(s, "tech", "tech-password-1", "technologist")
        auth = {"Authorization": f"Bearer {create_api_token(s, u, 't')}"}
    files = write_series(tmp_path / "in", "FLAIR", n_slices=2, size=32)
    orig = pydicom.dcmread(files[0])
    with TestClient(app) as client:
        r = client.post("/api/instances", content=files[0].read_bytes(),
                        headers={**auth, "Content-Type": "application/dicom", "X-Request-ID": "proxy-7f3a"})
        assert r.status_code < 300 and r.headers["x-request-id"] == "proxy-7f3a"
        r = client.post("/api/instances", content=b"garbage" * 50,   # refused: logs a warning
                        headers={**auth, "Content-Type": "application/dicom", "X-Request-ID": "bad id;/x"})
        assert r.status_code == 422
        made_up = r.headers["x-request-id"]
        assert made_up != "bad id;/x" and len(made_up) == 32  # a malformed id is replaced
        client.post("/api/instances", content=files[1].read_bytes(),
                    headers={**auth, "Content-Type": "application/dicom"})
        plane = app.state.plane
        plane.complete_quiet_studies()
        lease = plane.queue.claim("test")
        assert plane.run_job(lease) == "succeeded"
    text = json_log.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    refused = [d for d in lines if "refused instance" in d["message"]]
    assert refused and refused[0]["request_id"] == made_up
    job_lines = [d for d in lines if d["job_id"] == lease.job_id]
    assert job_lines, "the job logged nothing with its id"
    needles = [*SECRETS, IDENTITY["PatientID"], orig.StudyInstanceUID, orig.SeriesInstanceUID, orig.SOPInstanceUID]
    assert not [n for n in needles if n in text]
