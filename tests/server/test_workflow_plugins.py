"""The plug-in claim, through the server: a workflow defined only in this test module is routed, run,
reviewed with its own form, reported in its own words and delivered, with no platform edit; a
study meeting two workflows runs both; one meeting none is marked with the reason; an enabled
workflow that cannot be imported stops ``neurorad serve`` and ``neurorad worker``."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from neurorad.store.models import AuditEvent, Study, WorkflowRun
from neurorad.workflows import registry
from neurorad.workflows.contract import (
    Choice,
    Finding,
    FormField,
    Panel,
    Quantity,
    Requirements,
    ReviewForm,
    SeriesRole,
    ViewerLayout,
    Workflow,
    WorkflowResult,
)
from tests.server.dicomdata import IDENTITY, write_series
from tests.server.test_flow import Sink, _app, _only_run, _run_jobs, _web_session

#: words of the MS workflow that must never appear in another workflow's report
MS_WORDS = ("T2-FLAIR", "Gadolinium", "gadolinium", "Active:", "new lesion", "enlarging")


class BrightBlobs(Workflow):
    """Toy volumetry: the 3 largest connected regions above 85 % of the T1's maximum are "blobs"."""

    name = "toy-blobs"
    version = "0.3.1"
    title = "Toy bright-blob volumetry"
    requirements = Requirements((SeriesRole("t1", ("T1",), ("MR",), description="a T1 series"),))
    finding_kinds = {"blob": "Bright blob"}
    review_form = ReviewForm(
        fields=(FormField("grade", "Blob grade", "choice", (Choice("a", "A: crisp"), Choice("b", "B: fuzzy"))),),
        finding_verdicts=(Choice("real", "real blob"), Choice("artefact", "artefact")),
        discard_verdicts=("artefact",), allow_missed=False)
    viewer = ViewerLayout((Panel("T1 with blobs", "t1", overlay=True),), kind_colours={"blob": "#00ff00"})

    def run(self, inputs, out_dir, progress):
        from scipy import ndimage

        from neurorad.image.dicom_series import read_dicom_series
        from neurorad.image.nifti import save_nifti

        vol = read_dicom_series(inputs.path("t1"))
        data = np.asarray(vol.data, np.float32)
        labels, n = ndimage.label(data > 0.85 * data.max())
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, range(1, n + 1))
        keep = [int(i) + 1 for i in np.argsort(sizes)[::-1][:3]]
        mask = np.zeros(labels.shape, np.int16)
        findings = []
        for fid, lab in enumerate(keep, start=1):
            mask[labels == lab] = fid
            findings.append(Finding(fid, "blob", float((labels == lab).sum()) * vol.voxel_volume_mm3 / 1000.0, fid))
        save_nifti(vol, out_dir / "t1.nii.gz")
        save_nifti(vol.with_data(mask), out_dir / "blobs.nii.gz")
        progress(0.9, "blobs")
        return self.recompute(WorkflowResult(self.name, self.version, findings=findings, mask="blobs.nii.gz",
                                             reference_role="t1", volumes={"t1": "t1.nii.gz"}))

    def recompute(self, result):
        total = sum(f.volume_ml or 0.0 for f in result.findings)
        return replace(result, quantities=[Quantity("blob_volume_ml", round(total, 6), "mL", "Total blob volume",
                                                    ("118565006", "SCT", "Volume"))])

    def conclusion(self, result, review=None):
        total = sum(f.volume_ml or 0.0 for f in result.findings)
        return f"TOYWORDS: {len(result.findings)} bright blob(s), {total:.3f} mL in total."


@pytest.fixture
def toy():
    registry.register(BrightBlobs)
    try:
        yield BrightBlobs
    finally:
        registry.unregister(BrightBlobs.name)


def _ingest(app, folder: Path, kind: str, **kw) -> None:
    for f in write_series(folder, kind, n_slices=6, size=48, **kw):
        assert app.state.plane.ingest_bytes(f.read_bytes(), "MOD").stored


@pytest.mark.slow
def test_a_test_module_workflow_is_routed_run_reviewed_reported_and_delivered(settings, tmp_path, toy):
    sink = Sink()
    try:
        settings.workflows = [toy.name]
        app = _app(settings, sink)
        _ingest(app, tmp_path / "t1", "T1")
        assert len(app.state.plane.complete_quiet_studies()) == 1
        _run_jobs(app)
        tok = app.state.tok
        with TestClient(app) as client:
            sid, d, run = _only_run(client, app)
            assert run["workflow"] == toy.name and run["state"] == "needs_review" and d["state"] == "needs_review"
            # the review page is built from the plug-in's layout, vocabulary and form
            c, csrf = _web_session(app)
            page = c.get(f"/web/api/studies/{sid}/review").json()
            assert [p["title"] for p in page["panels"]] == ["T1 with blobs"]
            assert page["form"]["fields"][0]["label"] == "Blob grade"
            assert [v["value"] for v in page["form"]["finding_verdicts"]] == ["real", "artefact"]
            assert {f["kind_label"] for f in page["findings"]} == {"Bright blob"}
            assert page["finding"].startswith("TOYWORDS: 3 bright blob(s)")
            vols = {f["id"]: f["volume_ml"] for f in page["findings"]}
            # the form is the plug-in's: an MS-style verdict or a missing grade is refused
            body = {"result_version": run["result_version"], "decision": "ACCEPTABLE", "values": {"grade": "a"},
                    "verdicts": [{"finding_id": 2, "verdict": "discard"}]}
            r = client.post(f"/api/studies/{sid}/review", json=body, headers=tok["radiologist"])
            assert r.status_code == 422 and "discard" in r.text
            body["verdicts"] = [{"finding_id": 2, "verdict": "artefact"}]
            r = client.post(f"/api/studies/{sid}/review", json=dict(body, values={}), headers=tok["radiologist"])
            assert r.status_code == 422 and "Blob grade" in r.text
            r = c.post(f"/web/api/studies/{sid}/decision", json=body, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["kept"] == [1, 3] and out["discarded"] == [2] and out["values"] == {"grade": "a"}
            html = c.get(out["report_url"]).text
            assert f"TOYWORDS: 2 bright blob(s), {vols[1] + vols[3]:.3f} mL in total." in html
            assert "Bright blob" in html
            assert not [w for w in MS_WORDS if w in html]  # never MS wording (the former report's bug)
            _run_jobs(app)
            d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
            assert d["state"] == "delivered" and d["runs"][0]["state"] == "delivered"
        got = {str(ds.Modality): ds for ds in sink.received}
        assert sorted(got) == ["DOC", "SEG", "SR"]
        for ds in sink.received:  # re-identified for the PACS
            assert ds.PatientID == IDENTITY["PatientID"]
        seg = got["SEG"]
        assert len(seg.SegmentSequence) == 2  # the discarded blob is not in the reviewed SEG
        # the SR's volumes are the kept findings' volumes
        sr_text = str(got["SR"])
        sr_ml = sorted(float(v) for v in re.findall(r"Numeric Value\s+DS: '([0-9.]+)'", sr_text))
        for v in (vols[1], vols[3]):
            assert any(abs(x - v) < 1e-3 or abs(x - v * 1000) < 1e-1 for x in sr_ml), (v, sr_ml)
        assert not any(abs(x - vols[2]) < 1e-6 for x in sr_ml)
        pdf = bytes(got["DOC"].EncapsulatedDocument)
        assert pdf.startswith(b"%PDF")
        # a second delivery request sends nothing new
        n = len(sink.received)
        with TestClient(app) as client:
            assert client.post(f"/api/studies/{sid}/deliver", headers=tok["technologist"]).status_code == 200
        _run_jobs(app)
        assert len(sink.received) == n
    finally:
        sink.stop()


@pytest.mark.slow
def test_a_study_meeting_two_workflows_runs_both_and_one_meeting_none_says_why(settings, tmp_path, toy):
    settings.workflows = ["summary", toy.name]
    app = _app(settings)
    _ingest(app, tmp_path / "t1", "T1")
    _ingest(app, tmp_path / "fl", "FLAIR", identity={"PatientID": "OTHER-7"})
    app.state.plane.complete_quiet_studies()
    _run_jobs(app)
    with app.state.db.session() as s:
        t1_study, flair_study = s.scalars(select(Study).order_by(Study.id)).all()
        runs = {r.workflow: r.state for r in s.scalars(select(WorkflowRun).where(WorkflowRun.study_id == t1_study.id))}
        assert runs == {"summary": "needs_review", toy.name: "needs_review"}
        assert t1_study.state == "needs_review"
        # the FLAIR study meets the summary's requirements only
        assert [r.workflow for r in flair_study.runs] == ["summary"]
        routed = s.scalars(select(AuditEvent).where(AuditEvent.action == "study.routed",
                                                    AuditEvent.object_id == str(flair_study.id))).one()
        assert routed.details["skipped"] == {toy.name: "missing t1 (T1)"}
    # and with only the toy enabled the FLAIR study meets none: marked with the reason, audited
    settings.workflows = [toy.name]
    app2 = _app(settings.__class__(**{**settings.__dict__, "data_dir": tmp_path / "d2",
                                      "database_url": None}))
    _ingest(app2, tmp_path / "fl2", "FLAIR")
    app2.state.plane.complete_quiet_studies()
    with app2.state.db.session() as s:
        st = s.scalars(select(Study)).one()
        assert st.state == "no_workflow" and st.state_reason == f"no workflow applies: {toy.name}: missing t1 (T1)"
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "study.no_workflow")).one()
        assert ev.details["reasons"] == {toy.name: "missing t1 (T1)"}


@pytest.mark.slow
def test_summary_report_has_no_ms_wording(settings, tmp_path):
    """The regression of the first platform: an accepted non-MS result was reported in MS words."""
    app = _app(settings)
    _ingest(app, tmp_path / "fl", "FLAIR")
    app.state.plane.complete_quiet_studies()
    _run_jobs(app)
    tok = app.state.tok
    with TestClient(app) as client:
        sid = client.get("/api/studies", headers=tok["technologist"]).json()[0]["id"]
        rv = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()["runs"][0]["result_version"]
        r = client.post(f"/api/studies/{sid}/review", json={"result_version": rv, "decision": "ACCEPTABLE",
                                                             "score": 2}, headers=tok["radiologist"])
        assert r.status_code == 200, r.text
        html = client.get(r.json()["report_url"], headers=tok["radiologist"]).text
    assert "not a clinical result" in html
    assert not [w for w in MS_WORDS if w in html]


def _broken_entry_point(tmp_path: Path) -> Path:
    """A distribution on sys.path declaring a workflow whose module does not exist."""
    site = tmp_path / "site"
    dist = site / "brokenwf-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenwf\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[neurorad.workflows]\nbroken-wf = brokenwf_missing_module:Broken\n")
    return site


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_enabled_workflow_that_cannot_be_imported_stops_the_server(tmp_path, command):
    import os

    site = _broken_entry_point(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    data = tmp_path / "data"
    data.mkdir()
    if command == "worker":
        (tmp_path / "cfg.json").write_text('{"workflows": ["summary", "broken-wf"]}')
        subprocess.run([sys.executable, "-c", "from neurorad.cli import main; main()", "db", "upgrade",
                        "--data-dir", str(data)], env=env, check=True, capture_output=True, timeout=120)
        args = ["worker", "--data-dir", str(data), "--config", str(tmp_path / "cfg.json")]
    else:
        args = ["serve", "--data-dir", str(data), "--port", "0", "--dicom-port", "0", "--workflows",
                "summary,broken-wf"]
    r = subprocess.run([sys.executable, "-c", "from neurorad.cli import main; main()", *args], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "broken-wf" in r.stderr and "ModuleNotFoundError" in r.stderr and "brokenwf_missing_module" in r.stderr

