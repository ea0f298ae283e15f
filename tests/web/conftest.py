"""Fixtures of the review web app: a data dir with users and one MS study under review, a live
server on 127.0.0.1, and headless Chromium (Debian's, software WebGL) for the browser tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

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


#: Identifiers of the test patient: the PACS must get them back, neurorad's pages must never show them
#: unless a permitted role asks (audited).
IDENTITY = {"PatientID": "MRN-30571946", "PatientName": "Webtest^Agatha"}
ORIGINAL_STUDY_UID = "1.2.826.0.1.3680043.8.498.1002"


#: Original study dates (in the vault only; the identified report at delivery shows them).
STUDY_DATES = {"prior": "20250302", "current": "20260120"}


def _ingest_series(plane, followup_path: Path, study_uid: str, n_slices: int, study_date: str = "") -> int:
    """Send a few real slices through the data plane's ingest (de-identification + vault)."""
    from neurorad.dicom.results import source_series_from_volume
    from neurorad.image.nifti import load_nifti
    from neurorad.image.volume import Volume

    vol = load_nifti(followup_path)
    k0 = vol.spatial_shape[2] // 2
    affine = vol.affine.copy()
    affine[:3, 3] = vol.voxel_to_world(np.array([0, 0, k0]))[0]
    crop = Volume(np.ascontiguousarray(vol.data[:, :, k0 : k0 + n_slices]), affine)
    series = source_series_from_volume(crop, patient_id=IDENTITY["PatientID"], patient_name=IDENTITY["PatientName"],
                                       study_instance_uid=study_uid, series_description="AX FLAIR")
    study_id = None
    for ds in series:
        if study_date:
            ds.StudyDate = study_date
        out = plane.ingest_dataset(ds, source="TESTMODALITY")
        assert out.stored, out
        study_id = out.study_id
    return int(study_id)


_TEMPLATE: dict[str, Path] = {}


def _ms_result_copy(dest: Path) -> dict:
    """The hand-made MS result, built once per session and copied (keeps each test's setup short)."""
    import json
    import pickle
    import shutil
    import tempfile

    if "dir" not in _TEMPLATE:
        tmpl = Path(tempfile.mkdtemp(prefix="neurorad-webtest-"))
        truth = make_ms_result(tmpl / "result")
        (tmpl / "truth.pkl").write_bytes(pickle.dumps(truth))
        _TEMPLATE["dir"] = tmpl
    shutil.copytree(_TEMPLATE["dir"] / "result", dest)
    json.loads((dest / "result.json").read_text())  # fail early on a damaged copy
    return pickle.loads((_TEMPLATE["dir"] / "truth.pkl").read_bytes())


def build_env(data_dir: Path, destinations: list | None = None) -> WebEnv:
    """Data dir with three users and an MS study (plus a prior study of the same patient) awaiting review.

    The DICOM goes through the data plane's real ingest (so the vault can re-identify the
    delivered report); the workflow's result folder is the hand-made one of :mod:`tests.web.msdata`.
    """
    import pydicom

    from neurorad.dicom.results import write_encapsulated_pdf, write_secondary_captures, write_seg
    from neurorad.image.nifti import load_nifti
    from neurorad.pipelines.ms_report import MSReport, render_pdf
    from neurorad.provenance import sha256_file
    from neurorad.server.app import create_app
    from neurorad.server.auth import create_user
    from neurorad.server.settings import Settings
    from neurorad.store.models import Instance, Job, Patient, Result, Series, Study, WorkflowRun
    from neurorad.store.state import transition

    settings = Settings(data_dir=data_dir, dicom_port=None, quiet_period_s=0.0, workflows=["ms-lesions"],
                        destinations=destinations or [], lease_s=30.0, backoff_base_s=0.1)
    app = create_app(settings)
    plane = app.state.plane
    scratch = data_dir / "work" / "webtest"
    truth = _ms_result_copy(scratch)
    prior_id = _ingest_series(plane, scratch / "baseline.nii.gz", "1.2.826.0.1.3680043.8.498.1001", 2,
                              STUDY_DATES["prior"])
    study_id = _ingest_series(plane, scratch / "followup.nii.gz", ORIGINAL_STUDY_UID, 3, STUDY_DATES["current"])
    db = app.state.db
    with db.session() as s:
        for name, role in (("rad", "radiologist"), ("tech", "technologist"), ("admin", "admin")):
            create_user(s, name, PASSWORD, role)
        study = s.get(Study, study_id)
        study.workflow = "ms-lesions"
        transition(s, study, "selected", "test", "walked by the web test fixture")
        series_ids = {"flair": s.scalars(select(Series.id).where(Series.study_id == study.id)).first(),
                      "baseline_flair": s.scalars(select(Series.id).where(Series.study_id == prior_id)).first()}
        run = WorkflowRun(study_id=study.id, workflow="ms-lesions", workflow_version="1.0.0", state="queued",
                          series=series_ids, version=1)
        s.add(run)
        s.flush()
        for target in ("running", "needs_review"):
            transition(s, run, target, "test", "walked by the web test fixture")
        for target in ("queued", "running", "needs_review"):
            transition(s, study, target, "test", "walked by the web test fixture")
        job = Job(kind="workflow", study_id=study.id, state="succeeded", run_id=run.id)
        s.add(job)
        s.flush()
        folder = data_dir / "results" / str(study.id) / str(job.id)
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch.rename(folder)
        # The workflow's draft report as DICOM, in the (pseudonymised) study, as ms_lesions writes it.
        inst = s.scalars(select(Instance).join(Series).where(Series.study_id == study.id)).first()
        ref = pydicom.dcmread(data_dir / inst.path)
        render_pdf(MSReport("Active: 3 new T2-FLAIR lesions (draft).", True, "draft", [], {}, {}),
                   folder / "report.pdf")
        (folder / "dicom").mkdir()
        write_encapsulated_pdf(folder / "report.pdf", ref, folder / "dicom" / "report_pdf.dcm")
        # The workflow's draft SEG (every candidate, discarded ones included) on the examined
        # series, and a draft secondary capture, as ms_lesions writes them: never delivered
        # after a review (the reviewed versions replace them).
        source = [pydicom.dcmread(data_dir / i.path) for i in
                  s.scalars(select(Instance).join(Series).where(Series.study_id == study.id)
                            .order_by(Instance.id))]
        labels = load_nifti(folder / "new_lesions.nii.gz")
        write_seg(labels.with_data(np.asarray(labels.data).astype(np.int16)),
                  {les.label: f"Lesion {les.label} (new)" for les in truth["lesions"]}, source,
                  folder / "dicom" / "seg.dcm")
        (sc_path,) = write_secondary_captures([np.full((16, 48, 3), 200, np.uint8)], ref, folder / "dicom" / "sc")
        rows = []
        for name, kind in (("result.json", "json"), ("lesions.csv", "csv"), ("report.pdf", "pdf"),
                           ("dicom/report_pdf.dcm", "pdf"), ("dicom/seg.dcm", "seg"),
                           (str(sc_path.relative_to(folder)), "sc")):
            p = folder / name
            sop = pydicom.dcmread(p, stop_before_pixels=True) if name.endswith(".dcm") else None
            rows.append(Result(study_id=study.id, job_id=job.id, run_id=run.id, kind=kind,
                               path=str(p.relative_to(data_dir)),
                               sop_uid=str(sop.SOPInstanceUID) if sop else None,
                               sop_class_uid=str(sop.SOPClassUID) if sop else None, sha256=sha256_file(p),
                               workflow="ms-lesions", software_version="test"))
        s.add_all(rows)
        s.flush()
        run.job_id, run.result_id = job.id, rows[0].id
        pseudo = s.get(Patient, study.patient_id).pseudo_id
        return WebEnv(data_dir, app, study.id, prior_id, rows[0].id, folder, truth, pseudo)


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


class PacsSink:
    """A DIMSE Storage SCP standing in for the PACS (the data plane's C-STORE delivery sends here)."""

    def __init__(self) -> None:
        from neurorad.dicom.transport import StoreSCP

        self.received: list = []
        self.scp = StoreSCP("PACS", 0, "127.0.0.1", on_instance=lambda ds, aet: self.received.append(ds)).start()

    def destination(self):
        from neurorad.server.settings import Destination

        return Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=self.scp.port)


@pytest.fixture()
def pacs() -> Iterator[PacsSink]:
    sink = PacsSink()
    try:
        yield sink
    finally:
        sink.scp.stop()


@pytest.fixture()
def web_env_pacs(tmp_path: Path, pacs: PacsSink) -> WebEnv:
    return build_env(tmp_path / "data", destinations=[pacs.destination()])


def run_jobs(app, n_max: int = 10) -> int:
    """Run the queued jobs (delivery) in this process, as the data plane's worker would."""
    plane = app.state.plane
    n = 0
    for _ in range(n_max):
        lease = plane.queue.claim("web-test")
        if lease is None:
            break
        plane.run_job(lease)
        n += 1
    return n


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
