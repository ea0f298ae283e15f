"""DICOMweb client against a minimal STOW-RS/QIDO-RS HTTP endpoint on 127.0.0.1.

The endpoint answers with fixed PS3.18 responses; the test checks that per-instance outcomes are
read from Referenced/Failed SOP Sequences (also from a 409 body), that unacknowledged instances
count as failed, that basic auth is sent, and that QIDO JSON reaches the caller. The full
round trip against Orthanc lives in the server/store end-to-end tests.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom
import pytest
from pydicom.data import get_testdata_file

from neurorad.dicom.dicomweb import DicomWebClient, DicomWebError, parse_stow_response

pytestmark = pytest.mark.services


def _ref(uid: str, warning: int | None = None) -> dict:
    item = {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.4"]},
            "00081155": {"vr": "UI", "Value": [uid]}}
    if warning is not None:
        item["00081196"] = {"vr": "US", "Value": [warning]}
    return item


def _fail(uid: str, reason: int) -> dict:
    return {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.4"]},
            "00081155": {"vr": "UI", "Value": [uid]}, "00081197": {"vr": "US", "Value": [reason]}}


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-dicomweb"
    reply: tuple[int, object] = (200, {})
    seen: list[dict] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0) or 0)
        body = self.rfile.read(n) if n else b""
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                "ctype": self.headers.get("Content-Type"), "size": len(body)})
        self._send(*type(self).reply)

    def do_GET(self):
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
        self._send(200, [{"0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},
                          "00080061": {"vr": "CS", "Value": ["MR"]}}])


@pytest.fixture()
def endpoint():
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
    httpd.shutdown()
    httpd.server_close()


def _two():
    a = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    b = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    b.SOPInstanceUID = "1.2.826.0.1.3680043.99.31"
    return a, b


def test_stow_outcomes_success_warning_and_auth(endpoint):
    a, b = _two()
    refs = [_ref(a.SOPInstanceUID), _ref(b.SOPInstanceUID, 0xB000)]
    _Handler.reply = (200, {"00081199": {"vr": "SQ", "Value": refs}})
    client = DicomWebClient(endpoint, auth=("neurorad", "s3cret"))
    out = client.store([a, b])
    assert [(o.ok, o.warning) for o in out] == [(True, False), (True, True)]
    assert out[1].reason_code == 0xB000
    seen = _Handler.seen[-1]
    assert seen["path"].endswith("/studies") and "multipart/related" in seen["ctype"]
    assert seen["auth"] == "Basic " + base64.b64encode(b"neurorad:s3cret").decode()
    assert "s3cret" not in repr(client)


def test_stow_partial_failure_in_409_body_and_unacknowledged(endpoint):
    a, b = _two()
    _Handler.reply = (409, {"00081198": {"vr": "SQ", "Value": [_fail(b.SOPInstanceUID, 0xA900)]}})
    out = DicomWebClient(endpoint).store([a, b])
    assert out[1].ok is False and out[1].reason_code == 0xA900 and "does not match" in out[1].reason
    assert out[0].ok is False and "not acknowledged" in out[0].reason and "409" in out[0].reason


def test_qido_search_and_unreachable_server(endpoint):
    client = DicomWebClient(endpoint)
    studies = client.search_studies(filters={"PatientID": "NR-ABC"})
    assert studies[0]["0020000D"]["Value"] == ["1.2.3.4"]
    assert "PatientID=NR-ABC" in _Handler.seen[-1]["path"]
    with pytest.raises(DicomWebError):
        DicomWebClient("http://127.0.0.1:9/dicom-web", timeout_s=2).search_studies()


def test_parse_stow_response_without_body_fails_all():
    out = parse_stow_response(None, ["1.2.3", "1.2.4"], 500)
    assert [o.ok for o in out] == [False, False] and "HTTP 500" in out[0].reason
