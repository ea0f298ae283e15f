"""The ``cmb`` plug-in end to end through the generic server path: an SWI study in (C-STORE bytes of a
microbleed phantom on real anatomy), routed by series class to ``cmb``, run with the classical engine
and the default brain extraction, reviewed with the workflow's own form (one microbleed marked
incorrect), reported, and SEG/SR delivered re-identified to the PACS.

Small on purpose: the phantom at 2 mm isotropic (microbleeds 2-10 mm, bloomed 1.4x). The platform code
never names the workflow; the SWI series is written by the project's series writer with the
attributes a scanner's SWI magnitude carries (ImageType ...\\M\\SWI, gradient echo)."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from neurorad.image.dicom_series import series_datasets
from neurorad.phantom.cases import make_case
from tests.server.dicomdata import IDENTITY
from tests.server.test_flow import Sink, _app, _only_run, _run_jobs, _web_session


def _swi_study_bytes() -> tuple[list[bytes], int]:
    """C-STORE payloads of one SWI series of a 2 mm microbleed phantom, and its true microbleed count."""
    import io

    import pydicom

    case = make_case("cmb", seed=3, contrasts=("swi",), in_plane_mm=2.0, slice_thickness_mm=2.0, n_microbleeds=6)
    swi = case.images["swi"]
    scaled = swi.with_data(np.asarray(swi.data, np.float32) / max(float(np.max(swi.data)), 1e-6) * 3000.0)
    attrs = {"ImageType": ["ORIGINAL", "PRIMARY", "M", "SWI"], "ScanningSequence": "GR", "SequenceVariant": "SP",
             "RepetitionTime": 28.0, "EchoTime": 20.0, "MRAcquisitionType": "3D", "StudyDescription": "MRI BRAIN"}
    out = []
    for ds in series_datasets(scaled, "MR", identity=IDENTITY, series_description="SWI_Images",
                              series_number=7, attributes=attrs):
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        out.append(buf.getvalue())
    return out, len(case.case["lesions"])


@pytest.mark.slow
def test_cmb_study_is_routed_run_reviewed_with_its_form_and_delivered(settings):
    sink = Sink()
    try:
        settings.workflows = ["cmb"]
        settings.workflow_options = {"cmb": {"engine": "classical"}}
        app = _app(settings, sink)
        payloads, n_true = _swi_study_bytes()
        for b in payloads:
            assert app.state.plane.ingest_bytes(b, "MOD").stored
        assert len(app.state.plane.complete_quiet_studies()) == 1
        _run_jobs(app)
        tok = app.state.tok
        with TestClient(app) as client:
            sid, d, run = _only_run(client, app)
            assert run["workflow"] == "cmb" and run["state"] == "needs_review", run
            c, csrf = _web_session(app)
            page = c.get(f"/web/api/studies/{sid}/review").json()
            assert [p["title"] for p in page["panels"]] == ["SWI with microbleeds"]
            findings = page["findings"]
            assert 1 <= len(findings) <= n_true + 1, (len(findings), n_true)
            assert all("icrobleed" in f["kind_label"] for f in findings), findings
            drop = findings[0]["id"]
            body = {"result_version": run["result_version"], "decision": "ACCEPTABLE", "values": {},
                    "verdicts": [{"finding_id": drop, "verdict": "incorrect"}]}
            r = c.post(f"/web/api/studies/{sid}/decision", json=body, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["discarded"] == [drop]
            assert sorted(out["kept"]) == sorted(f["id"] for f in findings if f["id"] != drop)
            html = c.get(out["report_url"]).text
            assert "icrobleed" in html
            _run_jobs(app)
            d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
            assert d["state"] == "delivered" and d["runs"][0]["state"] == "delivered", d
        got = {str(ds.Modality): ds for ds in sink.received}
        assert {"SEG", "SR"} <= set(got), sorted(got)
        for ds in sink.received:  # re-identified for the PACS
            assert ds.PatientID == IDENTITY["PatientID"]
        assert len(got["SEG"].SegmentSequence) == len(findings) - 1  # the rejected microbleed is not delivered
    finally:
        sink.stop()
