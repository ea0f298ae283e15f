"""DIMSE against a real DCMTK peer (storescu, echoscu, storescp).

Our StoreSCP binds 127.0.0.1. DCMTK 3.6.7's storescp cannot choose its listen address, so it runs
inside a private network namespace (``unshare -rn``: only a loopback no other process can reach),
together with a small Python driver that calls our ``send_cstore``/``echo``; files and results come
back through the shared file system.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from neurorad.dicom.transport import StoreSCP, TransportError, echo, send_cstore

pytestmark = pytest.mark.services

MR = get_testdata_file("MR_small.dcm")
CT = get_testdata_file("CT_small.dcm")
J2K = get_testdata_file("emri_small_jpeg_2k_lossless.dcm")


def _need(tool: str) -> str:
    """The DCMTK program ``tool`` on PATH. pynetdicom installs Python apps of the same names (``storescp``,
    ``echoscu``, ...) into the virtual environment's bin, which comes first on PATH once it is activated; those
    are not the independent peer this module tests against, so a program must say it is DCMTK's."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which(tool, path=folder) if folder else None
        if path is None:
            continue
        run = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        if "dcmtk" in (run.stdout + run.stderr).lower():
            return path
    raise AssertionError(f"{tool} (DCMTK) is not installed: install the Debian package dcmtk")


@pytest.fixture()
def scp():
    received: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def on_instance(ds, calling_aet):
        if str(ds.get("PatientID", "")) == "FAIL-ME":
            raise ValueError("handler failure")
        with lock:
            received.append((str(ds.SOPInstanceUID), calling_aet, str(ds.file_meta.TransferSyntaxUID)))
        return None

    server = StoreSCP("NEURORAD", 0, allowed_calling_aets=["MODALITY1", "NEURORAD"], on_instance=on_instance)
    server.start()
    server.received_list = received
    yield server
    server.stop()


def test_storescu_and_echoscu_to_our_scp(scp):
    port = str(scp.port)
    echo_run = subprocess.run([_need("echoscu"), "-aet", "MODALITY1", "-aec", "NEURORAD", "127.0.0.1", port],
                              capture_output=True, text=True, timeout=30)
    assert echo_run.returncode == 0, echo_run.stderr
    run = subprocess.run([_need("storescu"), "-aet", "MODALITY1", "-aec", "NEURORAD", "127.0.0.1", port, MR, CT],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    expected = {str(pydicom.dcmread(p).SOPInstanceUID) for p in (MR, CT)}
    assert {uid for uid, _, _ in scp.received_list} == expected
    assert {aet for _, aet, _ in scp.received_list} == {"MODALITY1"}
    # our echo() against our own SCP
    assert echo("127.0.0.1", scp.port, "NEURORAD")


def test_unknown_calling_or_called_aet_is_rejected(scp):
    port = str(scp.port)
    bad_calling = subprocess.run([_need("storescu"), "-aet", "INTRUDER", "-aec", "NEURORAD", "127.0.0.1", port, MR],
                                 capture_output=True, text=True, timeout=60)
    assert bad_calling.returncode != 0
    assert "reject" in (bad_calling.stderr + bad_calling.stdout).lower()
    bad_called = subprocess.run([_need("echoscu"), "-aet", "MODALITY1", "-aec", "SOMEONE", "127.0.0.1", port],
                                capture_output=True, text=True, timeout=30)
    assert bad_called.returncode != 0
    assert scp.received_list == []
    assert not echo("127.0.0.1", scp.port, "NEURORAD", calling_aet="INTRUDER")
    with pytest.raises(TransportError, match="rejected"):
        send_cstore([MR], "127.0.0.1", scp.port, "NEURORAD", calling_aet="INTRUDER")


def test_handler_failure_becomes_failure_status(scp):
    ok = pydicom.dcmread(MR)
    bad = pydicom.dcmread(MR)
    bad.PatientID = "FAIL-ME"
    bad.SOPInstanceUID = "1.2.826.0.1.3680043.99.4242"
    out = send_cstore([ok, bad], "127.0.0.1", scp.port, "NEURORAD", calling_aet="NEURORAD")
    assert [o.ok for o in out] == [True, False]
    assert out[1].status == 0xC000 and out[1].sop_instance_uid == "1.2.826.0.1.3680043.99.4242"


def test_bytes_callback_gets_part10_bytes():
    got: list[tuple[bytes, str]] = []
    with StoreSCP("RAWSCP", 0, on_instance_bytes=lambda data, aet: got.append((data, aet))) as server:
        out = send_cstore([MR], "127.0.0.1", server.port, "RAWSCP", calling_aet="SENDER")
    assert out[0].ok
    data, aet = got[0]
    assert aet == "SENDER" and data[128:132] == b"DICM"
    ds = pydicom.dcmread(io.BytesIO(data))
    src = pydicom.dcmread(MR)
    assert ds.SOPInstanceUID == src.SOPInstanceUID and ds.PixelData == src.PixelData


def test_no_peer_is_a_transport_error():
    assert not echo("127.0.0.1", 9, "NOBODY", timeout_s=3)
    with pytest.raises(TransportError):
        send_cstore([MR], "127.0.0.1", 9, "NOBODY", timeout_s=3)


_DRIVER = textwrap.dedent(
    """
    import json, socket, subprocess, sys, time
    from neurorad.dicom.transport import echo, send_cstore
    storescp, out_dir, result_file, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    peer = subprocess.Popen([storescp, "-aet", "DCMTKPEER", "-od", out_dir, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); break
            except OSError:
                time.sleep(0.1)
        res = {"echo": echo("127.0.0.1", port, "DCMTKPEER")}
        outcomes = send_cstore(files, "127.0.0.1", port, "DCMTKPEER", calling_aet="NEURORAD")
        res["outcomes"] = [[o.sop_instance_uid, o.ok, o.status, o.error] for o in outcomes]
    finally:
        peer.terminate(); peer.wait(timeout=10)
    json.dump(res, open(result_file, "w"))
    """
)


def test_send_cstore_to_dcmtk_storescp(tmp_path):
    storescp = _need("storescp")
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is not installed"
    received = tmp_path / "received"
    received.mkdir()
    result = tmp_path / "result.json"
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    cmd = [unshare, "-rn", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, str(script),
           storescp, str(received), str(result), MR, CT, J2K]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(result.read_text())
    assert res["echo"] is True
    by_uid = {uid: (ok, status, err) for uid, ok, status, err in res["outcomes"]}
    mr_uid, ct_uid, j2k_uid = (str(pydicom.dcmread(p).SOPInstanceUID) for p in (MR, CT, J2K))
    assert by_uid[mr_uid][:2] == (True, 0) and by_uid[ct_uid][:2] == (True, 0)
    # storescp (no --accept-all) takes uncompressed only: the JPEG 2000 instance fails, alone
    assert by_uid[j2k_uid][0] is False and by_uid[j2k_uid][2]
    stored = {str(pydicom.dcmread(p).SOPInstanceUID) for p in received.iterdir()}
    assert stored == {mr_uid, ct_uid}
    # the peer got the same pixels we sent
    for p in received.iterdir():
        got = pydicom.dcmread(p)
        src = pydicom.dcmread(MR if got.SOPInstanceUID == mr_uid else CT)
        assert got.PixelData == src.PixelData
