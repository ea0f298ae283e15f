"""The data plane uses the dicom layer's public hooks: StoreSCP(on_instance_bytes=...) for the
receiver, and StowOutcome.http_status (not the reason text) to tell rejections from retries."""

from __future__ import annotations

import pydicom
import pytest
from sqlalchemy import select

from neurorad.dicom import dicomweb
from neurorad.dicom.dicomweb import StowOutcome, parse_stow_response
from neurorad.dicom.transport import StoreSCP, send_cstore
from neurorad.server import orchestration
from neurorad.server.app import create_app
from neurorad.server.services import make_receiver
from neurorad.server.settings import Destination
from neurorad.store.models import Instance, QuarantineItem
from tests.server.dicomdata import write_series


def test_receiver_is_the_public_store_scp_and_quarantines_undecodable_instances(settings, tmp_path):
    app = create_app(settings)
    plane = app.state.plane
    receiver = make_receiver(settings, plane)
    assert type(receiver) is StoreSCP and receiver.on_instance_bytes is not None  # no private override
    files = write_series(tmp_path / "s", "FLAIR", n_slices=2, size=32)
    bad = pydicom.dcmread(files[0])
    bad.PixelData = bad.PixelData[: len(bad.PixelData) // 3]  # truncated pixel data
    bad.SOPInstanceUID = bad.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    bad_path = tmp_path / "truncated.dcm"
    bad.save_as(bad_path)
    receiver.start()
    try:
        out = send_cstore([bad_path, *files], "127.0.0.1", receiver.port, settings.ae_title, calling_aet="MOD1")
    finally:
        receiver.stop()
    assert [o.ok for o in out] == [False, True, True]
    assert out[0].status == 0xA900  # refused as invalid (PS3.4 GG.4-1), with a quarantine record
    with plane.db.session() as s:
        q = s.scalars(select(QuarantineItem)).all()
        assert [(x.category, x.source) for x in q] == [("truncated", "MOD1")]
        assert len(s.scalars(select(Instance)).all()) == 2


def test_stow_outcome_carries_the_http_status():
    ds = pydicom.Dataset()
    item = pydicom.Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    item.FailureReason = 0xA700
    ds.FailedSOPSequence = [item]
    out = parse_stow_response(ds, ["1.2.3", "1.2.4"], 409)
    assert [(o.ok, o.http_status) for o in out] == [(False, 409), (False, 409)]
    assert parse_stow_response(None, ["1.2.5"], None)[0].http_status is None


@pytest.mark.parametrize(("http_status", "reason", "expected"), [
    (400, "answered HTTP 503 earlier", "rejected"),   # the status field decides, not text in the reason
    (503, "server busy (HTTP 400 in the body)", "retry"),
    (429, "slow down", "retry"),
    (408, "timeout", "retry"),
    (None, "no status known", "retry"),
    (404, "no such endpoint", "rejected"),
])
def test_stow_delivery_decision_uses_http_status(monkeypatch, http_status, reason, expected):
    def fake_store(self, datasets, study_uid=None):
        return [StowOutcome(str(ds.SOPInstanceUID), False, False, None, reason, http_status) for ds in datasets]

    monkeypatch.setattr(dicomweb.DicomWebClient, "store", fake_store)
    ds = pydicom.Dataset()
    ds.SOPInstanceUID = "1.2.840.99.1"
    status, why = orchestration.send_to(Destination(name="pacs", dicomweb_url="http://127.0.0.1:9/dicom-web"), ds)
    assert status == expected and reason in why
