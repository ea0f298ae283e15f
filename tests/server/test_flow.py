"""The data plane in one process: storescu -> receiver -> de-identify -> store -> complete ->
select -> job -> review -> re-identified delivery; bad input; incomplete studies; rejections."""

from __future__ import annotations

import copy
import io
import subprocess
import time

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from neurorad.dicom.transport import StoreSCP
from neurorad.server.app import create_app
from neurorad.server.auth import create_api_token, create_user
from neurorad.server.settings import Destination
from neurorad.server.worker import Worker
from neurorad.store.models import AuditEvent, Delivery, Job, Series, Study
from neurorad.workflows import registry
from neurorad.workflows.contract import Requirements, SeriesRole
from neurorad.workflows.summary import SummaryWorkflow
from tests.server.dicomdata import IDENTITY, SECRETS, grep_tree, write_series


class Sink:
    """A C-STORE peer standing in for the PACS; ``status`` is what it answers."""

    def __init__(self, status: int = 0x0000) -> None:
        self.status = status
        self.received: list[pydicom.Dataset] = []
        self.scp = StoreSCP("PACS", 0, "127.0.0.1", on_instance=self._on).start()

    def _on(self, ds, calling):
        self.received.append(ds)
        return self.status

    def stop(self):
        self.scp.stop()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.stop()


def _app(settings, sink=None, receiver=False):
    if sink is not None:
        settings.destinations = [Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=sink.scp.port)]
    settings.run_receiver = receiver
    app = create_app(settings)
    with app.state.db.session() as s:
        for role in ("radiologist", "technologist", "admin"):
            u = create_user(s, role, f"{role}-password", role)
            app.state.__dict__.setdefault("tok", {})[role] = {
                "Authorization": f"Bearer {create_api_token(s, u, 't')}"}
    return app


def _web_session(app, username="radiologist"):
    """A browser-like client signed in with the user's password (cookie session); returns it and its CSRF token."""
    c = TestClient(app)
    r = c.post("/api/auth/login", json={"username": username, "password": f"{username}-password"})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf_token"]


def _only_run(client, app):
    """(study id, study detail, its one workflow run) of the only study on the server, as the technologist
    sees them through the API (the plug-in end-to-end tests start from there)."""
    tok = app.state.tok
    sid = client.get("/api/studies", headers=tok["technologist"]).json()[0]["id"]
    d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
    (run,) = d["runs"]
    return sid, d, run


def _run_jobs(app, n_max=10):
    """Run every runnable job in this process (the worker's child does the same)."""
    plane = app.state.plane
    for _ in range(n_max):
        lease = plane.queue.claim("test-worker")
        if lease is None:
            return
        plane.run_job(lease)


def test_storescu_to_delivery_reidentified(settings, sink, tmp_path):
    files = write_series(tmp_path / "in", "FLAIR", n_slices=6, size=64)
    orig = pydicom.dcmread(files[0])
    app = _app(settings, sink, receiver=True)
    with TestClient(app) as client:
        port = app.state.services.receiver.port
        r = subprocess.run(["storescu", "-aec", "NEURORAD", "-aet", "MODALITY1", "127.0.0.1", str(port),
                            *map(str, files)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        tok = app.state.tok
        studies = client.get("/api/studies", headers=tok["technologist"]).json()
        assert len(studies) == 1 and studies[0]["n_instances"] == 6 and studies[0]["state"] == "received"
        sid = studies[0]["id"]
        assert studies[0]["study_uid"] != orig.StudyInstanceUID  # pseudonymised
        assert app.state.plane.complete_quiet_studies() == [sid]
        d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
        assert d["state"] == "queued"
        assert d["series"][0]["classification"] == "FLAIR" and d["series"][0]["selected_as"] == "image"
        # a worker (child process, the real executor) runs the job
        Worker(settings, concurrency=1).run(poll_s=0.2, max_jobs=1)
        d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
        assert d["state"] == "needs_review", d
        assert sorted(r["kind"] for r in d["results"] if r["sop_uid"]) == ["pdf", "sc", "sr"]
        res = next(r for r in d["results"] if r["kind"] == "sc")
        stored = pydicom.dcmread(io.BytesIO(client.get(f"/api/results/{res['id']}/file",
                                                       headers=tok["technologist"]).content))
        assert stored.PatientID == d["patient_pseudo_id"] != IDENTITY["PatientID"]  # pseudonymised at rest
        (run,) = d["runs"]
        assert run["workflow"] == "summary" and run["result_version"] == d["results"][0]["id"]
        r = client.post(f"/api/studies/{sid}/review", json={"result_version": run["result_version"],
                                                             "decision": "ACCEPTABLE", "score": 5},
                        headers=tok["radiologist"])
        assert r.status_code == 200 and r.json()["state"] == "reported", r.text
        _run_jobs(app)
        d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
        assert d["state"] == "delivered", d["transitions"]
        states = [t["to_state"] for t in d["transitions"]]
        assert states == ["received", "selected", "queued", "running", "needs_review", "accepted", "reported",
                          "delivered"]
        assert all(t["software_version"] and t["actor"] for t in d["transitions"])
        # the PACS got the reviewed objects (report, key image, SR), re-identified into the original
        # patient and study
        assert sorted(str(ds.Modality) for ds in sink.received) == ["DOC", "OT", "SR"]
        for ds in sink.received:
            assert ds.PatientID == IDENTITY["PatientID"] and str(ds.PatientName) == IDENTITY["PatientName"]
            assert ds.StudyInstanceUID == orig.StudyInstanceUID
            assert ds.AccessionNumber == IDENTITY["AccessionNumber"]
        # a repeated delivery request sends nothing new (idempotent)
        client.post(f"/api/studies/{sid}/deliver", headers=tok["technologist"])
        _run_jobs(app)
        assert len(sink.received) == 3
        # no original identifier anywhere in neurorad's data folder (DB, images, results, vault)
        assert grep_tree(settings.data_dir, SECRETS + [orig.StudyInstanceUID, orig.SOPInstanceUID]) == []


def _bad_inputs(tmp_path):
    files = write_series(tmp_path / "bad", "FLAIR", n_slices=1, size=32)
    good = files[0].read_bytes()
    ds = pydicom.dcmread(files[0])
    out = {"not_dicom": b"%PDF-1.4 this is not DICOM at all" * 10, "truncated": good[: len(good) - 700]}
    nopix = copy.deepcopy(ds)
    del nopix.PixelData
    wrong_mod = copy.deepcopy(ds)
    wrong_mod.Modality = "US"
    bad_ts = copy.deepcopy(ds)
    bad_ts.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    from pydicom.encaps import encapsulate

    bad_ts.PixelData = encapsulate([bytes(ds.PixelData)])
    for name, d in (("no_pixels", nopix), ("modality", wrong_mod), ("transfer_syntax", bad_ts)):
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, d, enforce_file_format=False)
        out[name] = buf.getvalue()
    return out


def test_bad_input_is_refused_with_reason_and_service_keeps_running(settings, tmp_path):
    app = _app(settings, receiver=True)
    with TestClient(app) as client:
        tok = app.state.tok["technologist"]
        headers = dict(tok, **{"Content-Type": "application/dicom"})
        for name, data in _bad_inputs(tmp_path).items():
            r = client.post("/api/instances", content=data, headers=headers)
            assert r.status_code == 422, (name, r.text)
            assert r.json()["detail"]["category"] == name, (name, r.json())
        q = client.get("/api/quarantine", headers=tok).json()
        assert sorted(x["category"] for x in q) == sorted(_bad_inputs(tmp_path))
        assert all(x["reason"] for x in q)
        # and over C-STORE: a refused instance gets a failure status, the next good one is stored
        files = write_series(tmp_path / "good", "FLAIR", n_slices=2, size=32)
        bad = pydicom.dcmread(files[0])
        bad.Modality = "US"
        bad.SOPClassUID = bad.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
        bad_path = tmp_path / "us.dcm"
        bad.save_as(bad_path)
        from neurorad.dicom.transport import send_cstore

        outcomes = send_cstore([bad_path, *files], "127.0.0.1", app.state.services.receiver.port, "NEURORAD",
                               calling_aet="MODALITY1")
        assert [o.ok for o in outcomes] == [False, True, True]
        assert client.get("/api/health").json()["status"] == "ok"
        assert len(client.get("/api/quarantine", headers=tok).json()) == 6
        assert client.get("/api/studies", headers=tok).json()[0]["n_instances"] == 2


class _NeedsFlairAndT1(SummaryWorkflow):
    name = "needs-flair-and-t1"
    requirements = Requirements((SeriesRole("image", ("FLAIR",)), SeriesRole("t1", ("T1",))))


def test_study_meeting_no_workflow_is_marked_with_the_reason(settings, tmp_path):
    registry.register(_NeedsFlairAndT1)
    try:
        settings.workflows = ["needs-flair-and-t1"]
        app = _app(settings)
        plane = app.state.plane
        for f in write_series(tmp_path / "t1", "T1", n_slices=2, size=32):
            assert plane.ingest_bytes(f.read_bytes(), "MOD").stored
        plane.complete_quiet_studies()
        with TestClient(app) as client:
            st = client.get("/api/studies", headers=app.state.tok["technologist"]).json()[0]
        assert st["state"] == "no_workflow"
        assert st["state_reason"] == "no workflow applies: needs-flair-and-t1: missing image (FLAIR)"
        with plane.db.session() as s:
            assert s.scalars(select(Job)).all() == []
            (ev,) = s.scalars(select(AuditEvent).where(AuditEvent.action == "study.no_workflow")).all()
            assert ev.details["reasons"] == {"needs-flair-and-t1": "missing image (FLAIR)"}
    finally:
        registry.unregister("needs-flair-and-t1")


def test_duplicate_instances_are_stored_once(settings, tmp_path):
    app = _app(settings)
    plane = app.state.plane
    files = write_series(tmp_path / "s", "FLAIR", n_slices=3, size=32)
    for _ in range(2):
        for f in files:
            assert plane.ingest_bytes(f.read_bytes(), "MOD").stored
    with plane.db.session() as s:
        st = s.scalars(select(Study)).one()
        assert st.series[0].n_instances == 3 and len(st.series[0].instances) == 3
        assert all(i.times_received == 2 for i in st.series[0].instances)


def test_delivery_rejection_is_shown_and_not_retried_forever(settings, tmp_path):
    sink = Sink(status=0xA900)
    try:
        settings.review_required = False
        app = _app(settings, sink)
        plane = app.state.plane
        for f in write_series(tmp_path / "s", "FLAIR", n_slices=3, size=32):
            plane.ingest_bytes(f.read_bytes(), "MOD")
        plane.complete_quiet_studies()
        _run_jobs(app)
        with plane.db.session() as s:
            st = s.scalars(select(Study)).one()
            assert st.state == "failed" and st.state_reason.startswith("delivery rejected: pacs: C-STORE status 0xA900")
            dels = s.scalars(select(Delivery)).all()
            assert {d.state for d in dels} == {"rejected"} and all(d.attempts == 1 for d in dels)
            assert all(j.state == "succeeded" for j in s.scalars(select(Job)).all())
        # the PACS is fixed: a technologist asks again and it goes through, once
        sink.status = 0x0000
        n_before = len(sink.received)
        with TestClient(app) as client:
            r = client.post(f"/api/studies/{st.id}/deliver", headers=app.state.tok["technologist"])
            assert r.status_code == 200
        _run_jobs(app)
        with plane.db.session() as s:
            assert s.get(Study, st.id).state == "delivered"
        assert len(sink.received) - n_before == 3  # report, key image, SR
    finally:
        sink.stop()


def test_unreachable_pacs_is_retried_with_backoff_then_fails(settings, tmp_path):
    settings.review_required = False
    settings.max_attempts = 2
    settings.destinations = [Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=1)]
    app = create_app(settings)
    plane = app.state.plane
    for f in write_series(tmp_path / "s", "FLAIR", n_slices=2, size=32):
        plane.ingest_bytes(f.read_bytes(), "MOD")
    plane.complete_quiet_studies()
    _run_jobs(app)  # workflow + first delivery attempt
    with plane.db.session() as s:
        job = s.scalars(select(Job).where(Job.kind == "deliver")).one()
        assert job.state == "pending" and job.attempts == 1 and "unreachable" in job.error
    time.sleep(0.3)
    _run_jobs(app)
    with plane.db.session() as s:
        job = s.scalars(select(Job).where(Job.kind == "deliver")).one()
        st = s.scalars(select(Study)).one()
        assert job.state == "failed" and job.attempts == 2
        assert st.state == "failed" and "deliver job" in st.state_reason


def test_ms_lesions_selection_takes_the_baseline_from_the_previous_study(settings, tmp_path):
    """ms-lesions needs this study's FLAIR and the same patient's previous FLAIR."""
    settings.workflows = ["ms-lesions"]
    app = _app(settings)
    plane = app.state.plane
    base = write_series(tmp_path / "b", "FLAIR", n_slices=2, size=32)
    other = write_series(tmp_path / "o", "FLAIR", n_slices=2, size=32, identity={"PatientID": "OTHER-1"})
    fu = write_series(tmp_path / "f", "FLAIR", n_slices=2, size=32)
    # date the follow-up a year after the baseline
    for f in fu:
        ds = pydicom.dcmread(f)
        ds.StudyDate = "20250305"
        ds.save_as(f)
    for f in base + other:
        plane.ingest_bytes(f.read_bytes(), "MOD")
    plane.complete_quiet_studies()
    with plane.db.session() as s:  # first studies: no baseline yet
        assert {st.state_reason for st in s.scalars(select(Study)).all()} == {
            "no workflow applies: ms-lesions: missing baseline_flair (FLAIR) in a previous study (prior 1)"}
    for f in fu:
        plane.ingest_bytes(f.read_bytes(), "MOD")
    plane.complete_quiet_studies()
    with plane.db.session() as s:
        studies = s.scalars(select(Study).order_by(Study.id)).all()
        b, o, f = studies
        assert f.state == "queued"
        job = s.scalars(select(Job)).one()
        chosen = {role: s.get(Series, sid).study_id for role, sid in job.payload["series"].items()}
        assert chosen == {"flair": f.id, "baseline_flair": b.id}


def test_rejected_results_are_not_delivered_and_can_be_retried(settings, sink, tmp_path):
    app = _app(settings, sink)
    plane = app.state.plane
    for f in write_series(tmp_path / "s", "FLAIR", n_slices=2, size=32):
        plane.ingest_bytes(f.read_bytes(), "MOD")
    plane.complete_quiet_studies()
    _run_jobs(app)
    with TestClient(app) as client:
        tok = app.state.tok
        sid = client.get("/api/studies", headers=tok["technologist"]).json()[0]["id"]
        rv = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()["runs"][0]["result_version"]
        r = client.post(f"/api/studies/{sid}/review", json={"result_version": rv, "decision": "UNACCEPTABLE",
                                                             "score": 1, "comment": "motion"},
                        headers=tok["radiologist"])
        # rejected -> reported: only the "not usable" report leaves (no automatic result, no key image)
        assert r.json()["state"] == "reported", r.text
        _run_jobs(app)
        assert [str(ds.Modality) for ds in sink.received] == ["DOC"]
        html = client.get(r.json()["report_url"], headers=tok["radiologist"]).text
        assert "not usable" in html
        # a second decision on the same result version needs an explicit amendment with a reason
        again = {"result_version": rv, "decision": "UNACCEPTABLE", "score": 2}
        r = client.post(f"/api/studies/{sid}/review", json=again, headers=tok["radiologist"])
        assert r.status_code == 409 and "amendment" in r.json()["detail"]
        r = client.post(f"/api/studies/{sid}/retry", json={"reason": "re-run after motion check"},
                        headers=tok["technologist"])
        assert r.status_code == 200 and r.json()["state"] == "queued", r.text
        _run_jobs(app)
        d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
        assert d["state"] == "needs_review"
        assert d["runs"][0]["result_version"] != rv  # a new result version awaits review
        assert [q["decision"] for q in d["qa"]] == ["UNACCEPTABLE"] and d["qa"][0]["username"] == "radiologist"
        assert len([j for j in d["jobs"] if j["kind"] == "workflow" and j["state"] == "succeeded"]) == 2
        audit = client.get("/api/audit", headers=tok["admin"]).json()
        assert {"qa.decision", "study.retry", "workflow.done"} <= {e["action"] for e in audit}


def test_worker_kills_a_job_past_its_timeout_and_retries_it(settings, tmp_path):
    settings.job_timeout_s = 0.05  # far less than one summary job needs
    settings.max_attempts = 2
    settings.backoff_base_s = 0.01
    app = _app(settings)
    plane = app.state.plane
    for f in write_series(tmp_path / "s", "FLAIR", n_slices=2, size=32):
        plane.ingest_bytes(f.read_bytes(), "MOD")
    plane.complete_quiet_studies()
    Worker(settings).run(poll_s=0.1, max_jobs=2)
    with plane.db.session() as s:
        job = s.scalars(select(Job)).one()
        st = s.scalars(select(Study)).one()
        assert job.state == "failed" and job.attempts == 2 and job.error.startswith("timed out")
        assert st.state == "failed" and "timed out" in st.state_reason
