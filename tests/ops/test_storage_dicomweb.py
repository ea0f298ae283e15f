"""``storage = "dicomweb"``: a complete study goes to the image store by STOW-RS before it is
queued, and the job reads its series back by WADO-RS, so a worker needs no ``images/`` folder.

The image store here is an in-memory stand-in with the two calls of
:class:`neurorad.dicom.dicomweb.DicomWebClient` the data plane uses (``store``,
``retrieve_series``); the client itself is tested against a real Orthanc in
tests/dicom/test_dicomweb.py."""

from __future__ import annotations

import io
import shutil

import pydicom
import pytest
from sqlalchemy import select

from neurorad.dicom.dicomweb import DicomWebError, StowOutcome
from neurorad.server.orchestration import DataPlane
from neurorad.server.settings import Settings
from neurorad.store.models import Instance, Study
from tests.server.dicomdata import IDENTITY, write_series


class FakeImageStore:
    def __init__(self) -> None:
        self.instances: dict[tuple[str, str, str], bytes] = {}
        self.retrieved: list[tuple[str, str]] = []
        self.down = False

    def store(self, datasets):
        if self.down:
            raise DicomWebError("STOW-RS at http://store: ConnectionError")
        out = []
        for ds in datasets:
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            self.instances[(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))] = \
                buf.getvalue()
            out.append(StowOutcome(str(ds.SOPInstanceUID), True))
        return out

    def retrieve_series(self, study_uid, series_uid):
        self.retrieved.append((study_uid, series_uid))
        return [pydicom.dcmread(io.BytesIO(b)) for (st, se, _), b in self.instances.items()
                if (st, se) == (study_uid, series_uid)]


def test_settings_refuse_an_unknown_storage_or_a_store_without_url(tmp_path):
    with pytest.raises(ValueError, match="storage must be one of shared, dicomweb"):
        Settings(data_dir=tmp_path, storage="nfs")
    with pytest.raises(ValueError, match="storage_dicomweb_url"):
        Settings(data_dir=tmp_path, storage="dicomweb")
    assert Settings(data_dir=tmp_path).storage == "shared"


def test_dicomweb_storage_publishes_then_jobs_retrieve(tmp_path, monkeypatch):
    store = FakeImageStore()
    monkeypatch.setattr(DataPlane, "image_store", lambda self: store)
    settings = Settings(data_dir=tmp_path / "data", dicom_port=0, quiet_period_s=0.0, workflows=["summary"],
                        storage="dicomweb", storage_dicomweb_url="http://127.0.0.1:9/dicom-web")
    plane = DataPlane(settings)
    plane.db.migrate()
    for f in write_series(tmp_path / "in", "FLAIR", n_slices=3, size=32):
        assert plane.ingest_bytes(f.read_bytes(), "MOD").stored

    store.down = True  # the store is unreachable: the study waits, not lost, not routed
    assert plane.complete_quiet_studies() == []
    with plane.db.read_session() as s:
        assert s.scalars(select(Study.state)).one() == "received"
    store.down = False
    assert len(plane.complete_quiet_studies()) == 1
    with plane.db.read_session() as s:
        study = s.scalars(select(Study)).one()
        sops = set(s.scalars(select(Instance.sop_uid)))
        assert study.state == "queued"
    assert {k[2] for k in store.instances} == sops and len(sops) == 3  # the de-identified copies
    assert all(IDENTITY["PatientID"].encode() not in b for b in store.instances.values())

    shutil.rmtree(settings.data_dir / "images")  # a worker host without the shared images/ folder
    lease = plane.queue.claim("remote-worker")
    assert plane.run_job(lease) == "succeeded"
    assert store.retrieved == [(study.study_uid, next(iter({k[1] for k in store.instances})))]
    with plane.db.read_session() as s:
        assert s.scalars(select(Study.state)).one() == "needs_review"
