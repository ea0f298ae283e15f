"""The ``glioma`` plug-in end to end through the generic server path (EASE, issue 12): three studies of one
patient arrive as C-STORE bytes, each is segmented and accepted through the API; the third report holds
the comparison with t-1 and t-2, the time-point table and the volume-trend figure. A rejected study then
blocks the next comparison, and after the software-update protocol (``reference-set``) found a
deliberately changed model INCOMPATIBLE and the site deployed it with ``volumes_incompatible_before``, the
next report carries EASE's warning and compares nothing across the version boundary.

Small on purpose: one 5 mm glioma phantom (baseline and follow-up), the phantom's brain mask (a site
option; brain extraction is covered by the workflow tests and bench/glioma.py), SimpleITK registration,
no N4; the platform code never names the workflow.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from neurorad.image.dicom_series import write_dicom_series
from neurorad.image.nifti import save_nifti
from neurorad.phantom.cases import make_case
from neurorad.phantom.io import _DICOM_ATTRS
from neurorad.store.models import Study, WorkflowRun
from neurorad.workflows import registry
from neurorad.workflows.glioma import GliomaWorkflow
from tests.server.test_flow import _app, _run_jobs, _web_session

PATIENT = {"PatientID": "GLIOMA-SRV-1", "PatientName": "Glioma^Test", "PatientBirthDate": "19700101"}
SEQUENCES = ("t1", "t1c", "t2", "flair")


class ChangedGlioma(GliomaWorkflow):
    """A deliberately changed model: a stricter FLAIR threshold shrinks every segmentation."""

    version = "0.3.0"

    def run(self, inputs, out_dir, progress):  # noqa: ANN001, ANN201
        from neurorad.segment.glioma_classical import GliomaParams

        inputs.options = {**inputs.options, "classical_params": GliomaParams(flair_ratio=2.2)}
        return super().run(inputs, out_dir, progress)


def _study(case, tp: str, folder: Path, date: str) -> list[Path]:
    from pydicom.uid import generate_uid

    files = []
    study_uid, frame = (generate_uid(entropy_srcs=[f"glioma-srv/{date}", k]) for k in ("study", "frame"))
    for n, s in enumerate(SEQUENCES, 1):
        vol = case.images[f"{tp}_{s}"]
        data = np.round(np.clip(vol.data, 0, None) / max(float(np.max(vol.data)), 1e-6) * 3000).astype(np.int16)
        out = write_dicom_series(vol.with_data(data), folder / s, identity=PATIENT, series_number=n,
                                 series_description=f"{s.upper()} axial", attributes={
                                     **_DICOM_ATTRS[s], "StudyDate": date, "SeriesDate": date, "StudyTime": "090000",
                                     "AcquisitionDate": date, "BodyPartExamined": "HEAD"},
                                 study_instance_uid=study_uid, frame_of_reference_uid=frame,
                                 uid_seed=f"glioma-srv/{date}/{s}")
        files += sorted(out.glob("*.dcm"))
    return files


@pytest.mark.slow  # 5 studies + 2 reference-set runs: ~60 CPU s on the loaded machine (over the 45 s budget)
def test_three_time_points_rejection_and_incompatible_update_through_the_server(settings, tmp_path):
    from neurorad.workflows.reference_set import ReferenceSet, compare_runs, record_review, run_set

    case = make_case("glioma", 11, diameter_mm=30.0, growth=1.35, in_plane_mm=5.0, slice_thickness_mm=5.0,
                     snr=40.0, bias_strength=0.0)
    brain = save_nifti(case.truth["truth_baseline_brain"], tmp_path / "brain.nii.gz")
    opts = {"brain_mask": str(brain), "registration_backend": "sitk", "skip_bias": True}
    settings.workflows = ["glioma"]
    settings.workflow_options = {"glioma": dict(opts)}
    app = _app(settings)
    plane, tok = app.state.plane, app.state.tok
    # t-2 and t-1: the baseline tumour twice (stable); t: the follow-up, grown 1.35x linearly
    visits = [("baseline", "20240105"), ("baseline", "20240405"), ("followup", "20240705"),
              ("followup", "20241005"), ("followup", "20250105")]

    def arrive(i: int) -> int:
        tp, date = visits[i]
        for f in _study(case, tp, tmp_path / f"s{i}", date):
            assert plane.ingest_bytes(f.read_bytes(), "MOD").stored
        plane.complete_quiet_studies()
        _run_jobs(app)
        with plane.db.session() as s:
            return s.scalars(select(Study).order_by(Study.id.desc())).first().id

    def result(client, sid: int) -> dict:
        """The newest run's result.json of the study, through the API."""
        with plane.db.session() as s:
            rid = s.scalars(select(WorkflowRun.result_id).where(WorkflowRun.study_id == sid)
                            .order_by(WorkflowRun.id.desc())).first()
        r = client.get(f"/api/results/{rid}/file", headers=tok["radiologist"])
        assert r.status_code == 200, r.text
        return r.json()

    def decide(client, web, sid: int, decision: str) -> tuple[dict, str]:
        d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
        (run,) = [r for r in d["runs"] if r["state"] == "needs_review"]
        c, csrf = web
        r = c.post(f"/web/api/studies/{sid}/decision", headers={"X-CSRF-Token": csrf}, json={
            "result_version": run["result_version"], "decision": decision,
            "values": {"score": "2" if decision == "ACCEPTABLE" else "5"},
            "timepoints_accepted": ["t-2", "t-1", "t"] if decision == "ACCEPTABLE" else []})
        assert r.status_code == 200, r.text
        return d, c.get(r.json()["report_url"]).text

    with TestClient(app) as client:
        web = _web_session(app)
        volumes = []
        for i in range(3):
            sid = arrive(i)
            d, html = decide(client, web, sid, "ACCEPTABLE")
            q = {x["name"]: x["value"] for x in result(client, sid)["quantities"]}
            volumes.append(q["whole_tumour_volume"])
        truth = np.asarray(case.truth["truth_followup_tumour_class"].data) > 0
        true_ml = float(truth.sum()) * case.images["followup_t1c"].voxel_volume_mm3 / 1000.0
        assert volumes[2] == pytest.approx(true_ml, rel=0.3), (volumes, true_ml)
        # the third report: both comparisons, flagged growth, the time points and the trend figure
        pct = 100.0 * (volumes[2] / volumes[1] - 1.0)
        assert pct >= 40.0
        assert f"Versus t-1: {volumes[2] - volumes[1]:+.1f} mL ({pct:+.1f}%), flagged." in html
        assert "Versus t-2:" in html and "Time points" in html
        trend = html[html.index("Volume trend"):]
        m = re.search(r'data:image/png;base64,([A-Za-z0-9+/=]+)', trend)
        assert m and base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"

        # the fourth study is rejected
        decide(client, web, arrive(3), "UNACCEPTABLE")

    # the software-update protocol with a deliberately changed model: INCOMPATIBLE
    ref = ReferenceSet.open_or_create(tmp_path / "refset", "glioma")
    ref.add_case("case01", {s: str(tmp_path / "s2" / s) for s in SEQUENCES}, opts)
    ref.save()
    run_set(ref, GliomaWorkflow())
    record_review(ref, GliomaWorkflow(), GliomaWorkflow.version, "case01", "ACCEPTABLE", "2")
    run_set(ref, ChangedGlioma())
    cmp = compare_runs(ref, ChangedGlioma(), GliomaWorkflow.version, ChangedGlioma.version)
    assert cmp.verdict == "INCOMPATIBLE", cmp.table()
    # the site deploys the new version with the boundary the protocol printed: the fifth study's report
    # warns, and nothing is compared (its t-1 was rejected; its t-2 is of the old version)
    registry.register(ChangedGlioma)
    try:
        settings.workflow_options["glioma"]["volumes_incompatible_before"] = ChangedGlioma.version
        with TestClient(app) as client:
            web = _web_session(app)
            sid = arrive(4)
            res = result(client, sid)
            assert res["version"] == ChangedGlioma.version
            assert not any(x["name"].startswith("volume_change_") for x in res["quantities"])
            assert "No volume comparison" in res["summary"]
            _, html = decide(client, web, sid, "ACCEPTABLE")
            assert "not comparable with results of versions before 0.3.0" in html
            assert "not compared: not accepted" in html and "not compared: incompatible version" in html
    finally:
        registry.unregister("glioma")
