"""Fixtures of the review web app: a data dir with users and one MS study under review, a live
server on 127.0.0.1, and headless Chromium (Debian's, software WebGL) for the browser tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.web.msdata import make_ms_result

PASSWORD = "correct-horse-battery"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@dataclass
class WebEnv:
    data_dir: Path
    app: object
    study_id: int
    prior_study_id: int
    result_id: int
    folder: Path
    truth: dict
    pseudo_id: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_app(settings):
    try:
        from neurorad.server.app import create_app
    except ImportError:  # data plane's app not there yet: the same wiring, minimal
        from fastapi import FastAPI

        from neurorad.server.api import router as api_router
        from neurorad.server.web import router as web_router
        from neurorad.store import Database, Storage

        app = FastAPI()
        app.state.settings = settings
        app.state.storage = Storage(settings.data_dir)
        app.state.db = Database(settings.database_url)
        app.state.db.migrate()
        app.include_router(api_router)
        app.include_router(web_router)
        return app
    return create_app(settings)


def build_env(data_dir: Path, destinations: list | None = None) -> WebEnv:
    """Data dir with three users and an MS study (plus a prior study) awaiting review."""
    from neurorad.dicom.results import source_series_from_volume, write_encapsulated_pdf
    from neurorad.image.nifti import load_nifti
    from neurorad.server.auth import create_user
    from neurorad.server.settings import Settings
    from neurorad.store.models import Job, Patient, Result, Study, StudyTransition, utcnow
    from neurorad.store.state import transition

    settings = Settings(data_dir=data_dir, dicom_port=None, destinations=destinations or [])
    app = _make_app(settings)
    db = app.state.db
    pseudo = "PSEUDO-7F3A21C9"
    with db.session() as s:
        for name, role in (("rad", "radiologist"), ("tech", "technologist"), ("admin", "admin")):
            create_user(s, name, PASSWORD, role)
        patient = Patient(pseudo_id=pseudo)
        s.add(patient)
        s.flush()
        prior = Study(patient_id=patient.id, study_uid="2.25.1001", state="delivered", workflow="ms-lesions",
                      received_at=utcnow().replace(year=2025))
        study = Study(patient_id=patient.id, study_uid="2.25.1002", state="running", workflow="ms-lesions")
        s.add_all([prior, study])
        s.flush()
        transition(s, study, "needs_review", "worker:test", "workflow finished")
        job = Job(kind="workflow", study_id=study.id, state="done")
        s.add(job)
        s.flush()
        folder = data_dir / "results" / str(study.id) / str(job.id)
        truth = make_ms_result(folder)
        # The workflow's draft report as DICOM (what ms_lesions writes into dicom/).
        src = source_series_from_volume(load_nifti(folder / "followup.nii.gz"), patient_id=pseudo,
                                        patient_name="PSEUDO^7F3A", study_instance_uid=study.study_uid)
        (folder / "dicom").mkdir()
        from neurorad.report.ms_report import MSReport, render_pdf

        render_pdf(MSReport("draft", True, "draft", [], {}, {}), folder / "report.pdf")
        write_encapsulated_pdf(folder / "report.pdf", src[len(src) // 2], folder / "dicom" / "report_pdf.dcm")
        import pydicom

        from neurorad.provenance import sha256_file

        rows = []
        for name, kind in (("result.json", "json"), ("lesions.csv", "table"), ("report.pdf", "pdf"),
                           ("dicom/report_pdf.dcm", "doc")):
            p = folder / name
            sop = pydicom.dcmread(p, stop_before_pixels=True) if name.endswith(".dcm") else None
            rows.append(Result(study_id=study.id, job_id=job.id, kind=kind, path=str(p.relative_to(data_dir)),
                               sop_uid=str(sop.SOPInstanceUID) if sop else None,
                               sop_class_uid=str(sop.SOPClassUID) if sop else None, sha256=sha256_file(p),
                               workflow="ms-lesions", software_version="test"))
        s.add_all(rows)
        s.flush()
        env = WebEnv(data_dir, app, study.id, prior.id, rows[0].id, folder, truth, pseudo)
        assert s.query(StudyTransition).count() == 1
    return env


@pytest.fixture()
def web_env(tmp_path: Path) -> WebEnv:
    return build_env(tmp_path / "data")


class LiveServer:
    def __init__(self, app) -> None:
        import uvicorn

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("web server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture()
def live_server(web_env: WebEnv) -> Iterator[LiveServer]:
    with LiveServer(web_env.app) as srv:
        yield srv


@pytest.fixture()
def browser_context(tmp_path: Path):
    """Headless Chromium with software WebGL (SwiftShader) and a fresh profile."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: install Debian's chromium (make install)")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            yield ctx
        finally:
            ctx.close()
