"""Integration fixtures: Orthanc (Debian, DICOMweb plugin, authentication on) as the PACS,
``neurorad serve`` / ``neurorad worker`` as real processes, PostgreSQL, DCMTK.

Debian's Orthanc binds every interface, so these tests only run inside a private network
namespace (only loopback exists there). ``test_netns.py`` re-runs this folder under
``unshare -n`` and reports its result; run directly, the tests below skip themselves unless
``NEURORAD_NETNS=1`` (set by that runner).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

IN_NETNS = os.environ.get("NEURORAD_NETNS") == "1"
REPO = Path(__file__).resolve().parents[2]
NEURORAD = [sys.executable, "-c", "from neurorad.cli import main; main()"]
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
PACS_USER, PACS_PASSWORD = "pacs", "pacs-secret-pw"


def pytest_collection_modifyitems(config, items):
    if IN_NETNS:
        return
    skip = pytest.mark.skip(reason="runs in a private network namespace (see test_netns.py)")
    for item in items:
        if "tests/integration" in str(item.fspath).replace(os.sep, "/") and item.name != \
                "test_integration_suite_in_private_network_namespace":
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """A throwaway Orthanc with DICOMweb and HTTP basic authentication."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = self.url + "/dicom-web"
        self.auth = (PACS_USER, PACS_PASSWORD)
        (root / "db").mkdir(parents=True)
        cfg = {"Name": "neurorad-test-pacs", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
               "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
               "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
               "RegisteredUsers": {PACS_USER: PACS_PASSWORD}, "Plugins": [DICOMWEB_PLUGIN],
               "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "DicomModalities": {}, "StableAge": 1,
               "DicomCheckCalledAet": False, "UnknownSopClassAccepted": True, "OverwriteInstances": True}
        (root / "orthanc.json").write_text(json.dumps(cfg))
        self.proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=open(root / "log", "wb"),
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/system", auth=self.auth, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not start: " + (root / "log").read_text()[-2000:])

    def qido(self, path: str, **params) -> list[dict]:
        r = httpx.get(self.dicomweb + path, params=params, auth=self.auth, timeout=30)
        r.raise_for_status()
        return r.json() if r.content else []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def orthanc(tmp_path) -> Iterator[Orthanc]:
    if not Path(ORTHANC).exists():
        pytest.fail("Orthanc not installed (Debian package orthanc + orthanc-dicomweb)")
    o = Orthanc(tmp_path / "orthanc")
    yield o
    o.stop()


class NeuroradServer:
    """``neurorad serve`` (and ``neurorad worker``s) as real processes over one data folder."""

    def __init__(self, data_dir: Path, config: dict, database_url: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = data_dir.parent / "neurorad-config.json"
        config = {"allowed_calling_aets": ["SCANNER01"], **config}  # the receiver accepts named senders only
        self.config_path.write_text(json.dumps(config))
        self.port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, **(env or {}))
        self.db_args = ["--database-url", database_url] if database_url else []
        self.proc: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._cli("user", "add", "admin", "--role", "admin", "--password", "admin-password-1")
        self.token = self._cli("token", "create", "admin").strip().splitlines()[-1]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def _cli(self, *args: str) -> str:
        r = subprocess.run([*NEURORAD, *args, "--data-dir", str(self.data_dir), *self.db_args], env=self.env,
                           capture_output=True, text=True, timeout=120, cwd=REPO)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def start(self, workers: int = 1) -> NeuroradServer:
        log = open(self.data_dir.parent / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [*NEURORAD, "serve", "--data-dir", str(self.data_dir), "--port", str(self.port), "--dicom-port",
             str(self.dicom_port), "--workers", str(workers), "--config", str(self.config_path), *self.db_args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("neurorad serve exited: " + (self.data_dir.parent / "serve.log").read_text()[-3000:])
            try:
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # the receiver starts with the app; wait until it answers C-ECHO
        while time.time() < deadline:
            r = subprocess.run(["echoscu", "-aet", "SCANNER01", "-aec", "NEURORAD", "127.0.0.1", str(self.dicom_port)],
                               capture_output=True, timeout=10)
            if r.returncode == 0:
                return self
            time.sleep(0.2)
        raise RuntimeError("receiver did not answer C-ECHO")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def start_worker(self) -> subprocess.Popen:
        log = open(self.data_dir.parent / "worker.log", "ab")
        w = subprocess.Popen([*NEURORAD, "worker", "--data-dir", str(self.data_dir), "--config",
                              str(self.config_path), *self.db_args], env=self.env, stdout=log,
                             stderr=subprocess.STDOUT, cwd=REPO)
        self.workers.append(w)
        return w

    def api(self, path: str) -> object:
        r = httpx.get(self.url + path, headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict | None = None) -> object:
        r = httpx.post(self.url + path, headers=self.headers, json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                os.kill(w.pid, signal.SIGKILL)
                w.wait(10)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(pred, timeout_s: float, what: str, interval_s: float = 0.5):
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="neurorad-it-"))
    yield d
    # the servers' logs go to the test's captured output, which pytest shows when the test failed
    for log in sorted(d.rglob("*.log")):
        print(f"--- {log.relative_to(d)} (last 6000 characters) ---")
        print(log.read_text(errors="replace")[-6000:])
    shutil.rmtree(d, ignore_errors=True)
