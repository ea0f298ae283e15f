"""The clinical path of the MS workflow through the real server: DCMTK storescu sends a baseline FLAIR
study, later a follow-up of the same patient (realistic identifiers) -> de-identified -> the
baseline study waits (no workflow applies yet: no prior) -> the follow-up is routed to ms-lesions
with the baseline from the prior study -> result -> QA decision through the REST API (one
candidate discarded) -> report, SEG and SR regenerated -> delivered to Orthanc under the
original identifiers. The SR's volumes are the kept lesions' volumes; asking again delivers
nothing new. Synthetic validation: a phantom pair (neurorad.phantom.ms_pair, 2 mm)."""

from __future__ import annotations

import re
import subprocess

import httpx
import pydicom
import pytest

from tests.integration.conftest import PACS_PASSWORD, PACS_USER, NeuroradServer, wait_for
from tests.server.dicomdata import IDENTITY, SECRETS, grep_tree

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
PDF = str(pydicom.uid.EncapsulatedPDFStorage)


def _write_pair(out):
    from neurorad.image.dicom_series import write_dicom_series
    from neurorad.phantom.cases import ms_pair

    case = ms_pair(seed=11, n_stable=4, n_new=2, n_enlarging=1, in_plane_mm=2.0, slice_thickness_mm=2.0,
                   misalign_deg=4.0, misalign_mm=4.0, diameter_range_mm=(7.0, 12.0))
    ident = {k: v for k, v in IDENTITY.items() if k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                                                          "InstitutionName", "ReferringPhysicianName")}
    flair = {"RepetitionTime": 9000.0, "EchoTime": 90.0, "InversionTime": 2500.0, "MRAcquisitionType": "3D",
             "StudyDescription": "MRI BRAIN MS FOLLOW-UP"}
    files = {}
    for name, vol, date, acc in (("baseline", case.baseline_flair, "20240305", "ACC-99817265"),
                                 ("followup", case.followup_flair, "20250311", "ACC-99817266")):
        folder = write_dicom_series(vol, out / name, modality="MR", identity={**ident, "AccessionNumber": acc},
                                    series_description="AX FLAIR 3D", series_number=3,
                                    attributes={**flair, "StudyDate": date, "StudyTime": "101500"})
        files[name] = sorted(folder.glob("*.dcm"))
    return files


def _orthanc_instance(orthanc, sop_uid: str) -> pydicom.Dataset:
    ids = httpx.post(orthanc.url + "/tools/lookup", content=sop_uid, auth=orthanc.auth, timeout=30).json()
    iid = next(x["ID"] for x in ids if x["Type"] == "Instance")
    r = httpx.get(f"{orthanc.url}/instances/{iid}/file", auth=orthanc.auth, timeout=60)
    r.raise_for_status()
    import io

    return pydicom.dcmread(io.BytesIO(r.content))


@pytest.mark.slow
@pytest.mark.services
def test_ms_follow_up_through_the_server_to_orthanc(orthanc, workdir):
    files = _write_pair(workdir / "in")
    base_uid = str(pydicom.dcmread(files["baseline"][0], stop_before_pixels=True).StudyInstanceUID)
    fu_uid = str(pydicom.dcmread(files["followup"][0], stop_before_pixels=True).StudyInstanceUID)
    config = {"quiet_period_s": 2.0, "scheduler_interval_s": 0.5, "workflows": ["ms-lesions"],
              "job_timeout_s": 1200.0,
              "destinations": [{"name": "orthanc", "dicomweb_url": orthanc.dicomweb, "username": PACS_USER,
                                "password": PACS_PASSWORD}]}
    srv = NeuroradServer(workdir / "data", config).start(workers=1)
    srv._cli("user", "add", "rad", "--role", "radiologist", "--password", "rad-password-123")
    rad = {"Authorization": "Bearer " + srv._cli("token", "create", "rad").strip().splitlines()[-1]}
    try:
        def send(name):
            r = subprocess.run(["storescu", "-aec", "NEURORAD", "-aet", "SCANNER01", "127.0.0.1",
                                str(srv.dicom_port), *map(str, files[name])], capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, r.stderr

        send("baseline")
        (base,) = wait_for(lambda: [s for s in srv.api("/api/studies") if s["state"] == "no_workflow"], 120,
                           "baseline to wait for a follow-up")
        assert "baseline_flair (FLAIR) in a previous study" in base["state_reason"]
        send("followup")
        fu = wait_for(lambda: [s for s in srv.api("/api/studies") if s["id"] != base["id"]
                               and s["state"] in ("needs_review", "failed")], 900, "the MS result")[0]
        d = srv.api(f"/api/studies/{fu['id']}")
        assert d["state"] == "needs_review", d["state_reason"]
        (run,) = d["runs"]
        assert run["workflow"] == "ms-lesions"
        base_series = {x["id"] for x in srv.api(f"/api/studies/{base['id']}")["series"]}
        assert run["series"]["flair"] in {x["id"] for x in d["series"]}  # this study's FLAIR ...
        assert run["series"]["baseline_flair"] in base_series  # ... against the prior study's FLAIR
        page = httpx.get(f"{srv.url}/web/api/studies/{fu['id']}/review", headers=rad, timeout=60).json()
        findings = {f["id"]: f for f in page["findings"]}
        assert len(findings) >= 2 and {f["kind"] for f in findings.values()} <= {"new", "enlarging"}
        drop = min(findings)
        body = {"result_version": run["result_version"], "decision": "ACCEPTABLE", "values": {"score": "2"},
                "verdicts": [{"finding_id": drop, "verdict": "discard"}], "comment": "one is a flow artefact"}
        r = httpx.post(f"{srv.url}/api/studies/{fu['id']}/review", json=body, headers=rad, timeout=300)
        assert r.status_code == 200, r.text
        assert r.json()["discarded"] == [drop]
        wait_for(lambda: srv.api(f"/api/studies/{fu['id']}")["state"] == "delivered", 300, "delivery")
        # the PACS holds the reviewed objects in the original follow-up study, under the original patient
        inst = orthanc.qido(f"/studies/{fu_uid}/instances")
        assert all(i["00100020"]["Value"][0] == IDENTITY["PatientID"] for i in inst)
        classes = [i["00080016"]["Value"][0] for i in inst]
        assert classes.count(SEG) == 1 and classes.count(PDF) == 1
        assert sum(c.startswith("1.2.840.10008.5.1.4.1.1.88.") for c in classes) == 1
        assert orthanc.qido(f"/studies/{base_uid}/instances") == []  # nothing for the baseline study
        sops = {i["00080016"]["Value"][0]: i["00080018"]["Value"][0] for i in inst}
        seg = _orthanc_instance(orthanc, sops[SEG])
        kept = {i: f for i, f in findings.items() if i != drop}
        assert len(seg.SegmentSequence) == len(kept)
        sr = _orthanc_instance(orthanc, next(v for k, v in sops.items() if k.startswith("1.2.840.10008.5.1.4.1.1.88.")))
        assert sr.PatientID == IDENTITY["PatientID"] and sr.StudyInstanceUID == fu_uid
        values = [float(v) for v in re.findall(r"Numeric Value\s+DS: '([-0-9.eE+]+)'", str(sr))]
        for f in kept.values():  # each kept lesion's volume is in the SR (mL or mm3)
            assert any(abs(v - f["volume_ml"]) < 1e-3 or abs(v - f["volume_ml"] * 1000) < 0.5 for v in values), (
                f, values)
        n = len(inst)
        # asking again delivers nothing new
        srv.post(f"/api/studies/{fu['id']}/deliver")
        wait_for(lambda: srv.api(f"/api/studies/{fu['id']}")["state"] == "delivered", 120, "second delivery")
        assert len(orthanc.qido(f"/studies/{fu_uid}/instances")) == n
        srv.stop()
        assert grep_tree(srv.data_dir, SECRETS + [base_uid, fu_uid]) == []
    finally:
        srv.stop()
