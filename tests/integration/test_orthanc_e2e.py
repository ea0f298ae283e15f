"""End to end with real parts: DCMTK storescu -> neurorad serve -> workflow -> review ->
STOW-RS to Orthanc (authentication on) re-identified; found by QIDO-RS under the original
patient and study; no original identifier anywhere in neurorad's data folder."""

from __future__ import annotations

import subprocess

import httpx
import pydicom
import pytest

from tests.integration.conftest import PACS_PASSWORD, PACS_USER, NeuroradServer, wait_for
from tests.server.dicomdata import IDENTITY, SECRETS, grep_tree


def write_full_series(out):
    from neurorad import resources
    from neurorad.image.dicom_series import write_dicom_series
    from neurorad.image.nifti import load_nifti

    ident = {k: v for k, v in IDENTITY.items() if k in ("PatientName", "PatientID", "PatientBirthDate",
                                                          "PatientSex", "AccessionNumber", "StudyID",
                                                          "InstitutionName")}
    other = {k: v for k, v in IDENTITY.items() if k not in ident}
    folder = write_dicom_series(
        load_nifti(resources.colin27_head()), out, modality="MR", identity=ident,
        series_description="AX FLAIR Testpatient", series_number=3,
        attributes={**other, "RepetitionTime": 9000.0, "EchoTime": 90.0, "InversionTime": 2500.0,
                    "MRAcquisitionType": "3D", "StudyDate": "20240305", "StudyDescription": "MRI BRAIN MS"})
    return sorted(folder.glob("*.dcm"))


@pytest.mark.slow
@pytest.mark.services
def test_storescu_to_orthanc_reidentified(orthanc, workdir):
    # a full-size MR series (Colin27, 181 x 217 x 181 at 1 mm) written by the project's DICOM writer,
    # carrying realistic identifiers
    files = write_full_series(workdir / "in")
    orig = pydicom.dcmread(files[0], stop_before_pixels=True)
    config = {"quiet_period_s": 2.0, "scheduler_interval_s": 0.5, "workflows": ["summary"],
              "destinations": [{"name": "orthanc", "dicomweb_url": orthanc.dicomweb, "username": PACS_USER,
                                "password": PACS_PASSWORD}]}
    srv = NeuroradServer(workdir / "data", config).start(workers=1)
    try:
        r = subprocess.run(["storescu", "-aec", "NEURORAD", "-aet", "SCANNER01", "127.0.0.1", str(srv.dicom_port),
                            *map(str, files)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        st = wait_for(lambda: [s for s in srv.api("/api/studies") if s["state"] == "needs_review"], 120,
                      "study to need review")[0]
        assert st["n_instances"] == len(files)
        rv = srv.api(f"/api/studies/{st['id']}")["runs"][0]["result_version"]
        srv._cli("user", "add", "rad", "--role", "radiologist", "--password", "rad-password-123")
        rad = {"Authorization": "Bearer " + srv._cli("token", "create", "rad").strip().splitlines()[-1]}
        r = httpx.post(f"{srv.url}/api/studies/{st['id']}/review", headers=rad, timeout=120,
                       json={"result_version": rv, "decision": "ACCEPTABLE", "score": 4, "comment": "ok"})
        assert r.status_code == 200, r.text  # only radiologists decide (the admin token gets 403)
        wait_for(lambda: srv.api(f"/api/studies/{st['id']}")["state"] == "delivered", 120, "delivery")
        # QIDO-RS at the PACS: the original patient and study hold the results
        studies = orthanc.qido("/studies", PatientID=IDENTITY["PatientID"])
        assert [s["0020000D"]["Value"][0] for s in studies] == [orig.StudyInstanceUID]
        inst = orthanc.qido(f"/studies/{orig.StudyInstanceUID}/instances")
        # neurorad sent only its results (key-image Secondary Capture, Encapsulated PDF report, SR),
        # not the images back
        classes = sorted(i["00080016"]["Value"][0] for i in inst)
        assert len(classes) == 3 and str(pydicom.uid.SecondaryCaptureImageStorage) in classes
        assert str(pydicom.uid.EncapsulatedPDFStorage) in classes
        assert any(c.startswith("1.2.840.10008.5.1.4.1.1.88.") for c in classes)  # structured report
        assert all(i["00100020"]["Value"][0] == IDENTITY["PatientID"] for i in inst)
        # no original identifier anywhere in neurorad's stored copies
        srv.stop()
        hits = grep_tree(srv.data_dir, SECRETS + [orig.StudyInstanceUID, orig.SeriesInstanceUID])
        assert hits == []
        # nor in its logs
        logs = (workdir / "serve.log").read_text(errors="replace")
        assert logs and not [s for s in SECRETS + [orig.StudyInstanceUID] if s in logs]
    finally:
        srv.stop()
