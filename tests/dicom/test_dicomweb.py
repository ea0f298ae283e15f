"""DICOMweb client: against a minimal HTTP endpoint on 127.0.0.1 that answers fixed PS3.18
responses (per-instance outcomes from Referenced/Failed SOP Sequences, also in a 409 body;
unacknowledged instances count as failed; basic auth sent; QIDO JSON reaches the caller), and a
STOW/QIDO/WADO round trip against a real Orthanc with authentication on.
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


_ORTHANC_DRIVER = """
import json, socket, subprocess, sys, time
from pathlib import Path
import pydicom
from neurorad.dicom.dicomweb import DicomWebClient, DicomWebError

root, result_file, files = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
http_port = free_port()
(root / "db").mkdir(parents=True)
cfg = {"Name": "test-pacs", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
       "HttpPort": http_port, "DicomPort": free_port(), "RemoteAccessAllowed": False,
       "AuthenticationEnabled": True, "RegisteredUsers": {"pacs": "pacs-pw"},
       "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
       "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
(root / "orthanc.json").write_text(json.dumps(cfg))
proc = subprocess.Popen(["/usr/sbin/Orthanc", str(root / "orthanc.json")], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
res = {}
try:
    url = f"http://127.0.0.1:{http_port}/dicom-web"
    client = DicomWebClient(url, auth=("pacs", "pacs-pw"), timeout_s=10)
    for _ in range(100):
        try:
            client.search_studies(); break
        except DicomWebError:
            time.sleep(0.2)
    dss = [pydicom.dcmread(f) for f in files]
    res["stow"] = [[o.sop_instance_uid, o.ok, o.reason] for o in client.store(dss)]
    res["stow_bad_auth"] = [[o.ok, o.reason] for o in DicomWebClient(url, auth=("pacs", "wrong")).store(dss[:1])]
    mr = dss[0]
    res["qido_studies"] = [s["0020000D"]["Value"][0] for s in client.search_studies(
        filters={"PatientID": str(mr.PatientID)})]
    res["qido_series"] = [s["0020000E"]["Value"][0] for s in client.search_series(mr.StudyInstanceUID)]
    got = client.retrieve_series(mr.StudyInstanceUID, mr.SeriesInstanceUID)
    res["wado"] = [[str(d.SOPInstanceUID), d.PixelData == mr.PixelData] for d in got]
    res["wado_study"] = len(client.retrieve_study(mr.StudyInstanceUID))
finally:
    proc.terminate(); proc.wait(timeout=10)
json.dump(res, open(result_file, "w"))
"""


def test_round_trip_with_orthanc(tmp_path):
    """STOW-RS, QIDO-RS and WADO-RS against a real Orthanc (authentication on), run in a private
    network namespace because Debian's Orthanc cannot choose its listen address."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    assert Path("/usr/sbin/Orthanc").exists(), "install the Debian packages orthanc and orthanc-dicomweb"
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to isolate Orthanc's network"
    script = tmp_path / "driver.py"
    script.write_text(_ORTHANC_DRIVER)
    mr, ct = get_testdata_file("MR_small.dcm"), get_testdata_file("CT_small.dcm")
    result = tmp_path / "result.json"
    run = subprocess.run([unshare, "-rn", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable,
                          str(script), str(tmp_path / "orthanc"), str(result), mr, ct],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(result.read_text())
    m, c = pydicom.dcmread(mr), pydicom.dcmread(ct)
    assert [(u, ok) for u, ok, _ in res["stow"]] == [(m.SOPInstanceUID, True), (c.SOPInstanceUID, True)]
    assert res["stow_bad_auth"][0][0] is False and "401" in res["stow_bad_auth"][0][1]
    assert res["qido_studies"] == [m.StudyInstanceUID]
    assert res["qido_series"] == [m.SeriesInstanceUID]
    assert res["wado"] == [[m.SOPInstanceUID, True]] and res["wado_study"] == 1
