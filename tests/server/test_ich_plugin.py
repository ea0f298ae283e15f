"""The ``ich`` plug-in through the generic server path: two head-CT studies of one patient arrive, the
later one is run as a pair (the earlier study's CT chosen as ``prior_ct`` by the platform), the
result carries the measurements and the expansion decision, the per-scan review is accepted, and
the report, SEG and SR are delivered to the PACS.

Tiny 3 mm CT heads and ``space = "native"`` (a site option; no template registration, which the
workflow tests and ``bench/ich.py`` cover) keep it within a few seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from neurorad.image.dicom_series import write_dicom_series
from neurorad.store.models import Job, Series, Study
from tests.server.test_flow import Sink, _app, _run_jobs, _web_session
from tests.workflows.test_ich import synthetic_head

PATIENT = {"PatientID": "ICH-SRV-1", "PatientName": "Bleed^Test", "PatientBirthDate": "19510203"}


def _ct_study(folder: Path, haematoma_mm: tuple[float, float, float], date: str, time: str, seed: int) -> list[Path]:
    vol = synthetic_head(haematoma_mm, voxel=3.0, seed=seed)
    out = write_dicom_series(
        vol.with_data(np.round(vol.data).astype(np.int16)), folder, modality="CT", identity=PATIENT,
        series_description="CT HEAD NON-CONTRAST",
        attributes={"StudyDate": date, "StudyTime": time, "SeriesDate": date, "SeriesTime": time,
                    "AcquisitionDate": date, "AcquisitionTime": time, "BodyPartExamined": "HEAD"})
    return sorted(out.glob("*.dcm"))


@pytest.mark.slow  # ~15 CPU s: two workflow runs, report and DICOM objects
def test_ich_pair_routed_run_reviewed_and_delivered(settings, tmp_path):
    settings.workflows = ["ich"]
    settings.workflow_options = {"ich": {"space": "native"}}
    sink = Sink()
    try:
        app = _app(settings, sink)
        plane = app.state.plane
        first = _ct_study(tmp_path / "ct0", (44, 22, 29), "20240115", "080000", seed=1)
        second = _ct_study(tmp_path / "ct1", (50, 32, 32), "20240116", "020000", seed=2)  # 18 h later
        for f in first:
            assert plane.ingest_bytes(f.read_bytes(), "MOD").stored
        plane.complete_quiet_studies()
        _run_jobs(app)  # the first CT alone: a single-scan run
        for f in second:
            assert plane.ingest_bytes(f.read_bytes(), "MOD").stored
        plane.complete_quiet_studies()
        with plane.db.session() as s:
            s0, s1 = s.scalars(select(Study).order_by(Study.id)).all()
            job = s.scalars(select(Job).where(Job.state == "pending")).one()
            chosen = {role: s.get(Series, sid).study_id for role, sid in job.payload["series"].items()}
            assert chosen == {"ct": s1.id, "prior_ct": s0.id}  # the platform found the same patient's earlier CT
            sid = s1.id
        _run_jobs(app)
        tok = app.state.tok
        with TestClient(app) as client:
            d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
            (run,) = d["runs"]
            assert run["workflow"] == "ich" and run["state"] == "needs_review", run
            c, csrf = _web_session(app)
            page = c.get(f"/web/api/studies/{sid}/review").json()
            assert [p["title"] for p in page["panels"]] == ["Current CT (haematoma outlined)", "Prior CT"]
            assert {f["kind"] for f in page["findings"]} == {"haematoma", "prior_haematoma"}
            assert "HAEMATOMA EXPANSION" in page["finding"]
            # the interval comes from the de-identified copies: both dates shifted by the patient's offset
            assert {q["name"]: q["value"] for q in page["quantities"]}["interval_hours"] == 18.0
            assert not [m for m in page["alarm_messages"] if "interval" in m], page["alarm_messages"]
            labels = {f["name"]: f["label"] for f in page["form"]["fields"]}
            assert "Haematoma segmentation on the prior CT" in labels.values()
            body = {"result_version": run["result_version"], "decision": "ACCEPTABLE",
                    "values": {"score": "2", "current_segmentation": "accept", "prior_segmentation": "accept"}}
            r = client.post(f"/api/studies/{sid}/review", json=dict(body, values={"score": "2",
                                                                                    "current_segmentation": "maybe"}),
                            headers=tok["radiologist"])
            assert r.status_code == 422  # the plug-in's form, enforced by the platform
            r = c.post(f"/web/api/studies/{sid}/decision", json=body, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200, r.text
            html = c.get(r.json()["report_url"]).text
            assert "Haematoma expansion (increase &gt;= 6 mL or &gt;= 33 %): YES" in html or \
                "Haematoma expansion (increase >= 6 mL or >= 33 %): YES" in html
            assert "Prior CT" in html and "Centre movement" in html
            _run_jobs(app)
            d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
            assert d["state"] == "delivered" and d["runs"][0]["state"] == "delivered"
        got = {str(ds.Modality): ds for ds in sink.received}
        assert {"DOC", "SEG", "SR"} <= set(got)
        for ds in sink.received:  # re-identified for the PACS
            assert ds.PatientID == PATIENT["PatientID"]
        # the SR carries the current haematoma's volume: the ellipsoid 50 x 32 x 32 mm is 26.8 mL
        sr_ml = [float(v) for v in re.findall(r"Numeric Value\s+DS: '([0-9.]+)'", str(got["SR"]))]
        assert any(abs(v - 4 / 3 * np.pi * 25 * 16 * 16 / 1000) < 0.15 * 26.8 for v in sr_ml), sr_ml
        assert len(got["SEG"].SegmentSequence) >= 1
        assert isinstance(got["SEG"], pydicom.Dataset)
    finally:
        sink.stop()
