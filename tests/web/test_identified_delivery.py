"""The report the PACS receives is the identified copy (name, ID and birth date added at
re-identification, just before sending); the stored report stays de-identified."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.web.conftest import IDENTITY, WebEnv, run_jobs
from tests.web.test_api import _body, _client

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")


def _text(pdf: bytes, tmp: Path) -> str:
    p = tmp / "x.pdf"
    p.write_bytes(pdf)
    return " ".join(subprocess.run(["pdftotext", "-layout", str(p), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())


def test_pacs_gets_identified_report_store_keeps_deidentified(web_env_pacs: WebEnv, pacs, tmp_path: Path) -> None:
    from neurorad.store.models import Result

    env = web_env_pacs
    c, csrf = _client(env, "rad")
    r = c.post(f"/web/api/studies/{env.study_id}/decision", json=_body(env), headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    # the worklist counts what the reader kept (2 of the 3 new lesions), not the automatic result
    row = c.get("/worklist?status=all").text.split(f'data-study="{env.study_id}"')[1].split("</tr>")[0]
    assert re.search(r'data-kind="new">.*?</i>2 New', row), row
    run_jobs(env.app)
    (doc,) = [ds for ds in pacs.received if str(ds.Modality) == "DOC"]
    sent = _text(bytes(doc.EncapsulatedDocument), tmp_path)
    family, given = IDENTITY["PatientName"].split("^")
    assert f"Patient {family}, {given}" in sent and f"Patient ID {IDENTITY['PatientID']}" in sent, sent[:600]
    assert "Reviewed by rad" in sent and "Quality score: 4" in sent
    # both exam dates are the originals from the vault (never stored in the de-identified copy)
    assert "Exam date 2026-01-20" in sent and "Prior exam 2025-03-02" in sent, sent[:900]
    assert "Interval 324 days (10.6 months)" in sent, sent[:900]
    # what neurorad stores (and lists as the delivered object) is the de-identified copy
    with env.app.state.db.session() as s:
        rows = s.scalars(select(Result).where(Result.study_id == env.study_id,
                                              Result.sop_uid == str(doc.SOPInstanceUID))).all()
    assert rows
    import pydicom

    stored = pydicom.dcmread(env.data_dir / rows[0].path)
    kept = _text(bytes(stored.EncapsulatedDocument), tmp_path)
    assert IDENTITY["PatientID"] not in kept and family not in kept and "added when the report is sent" in kept
    assert "2026-01-20" not in kept and "2025-03-02" not in kept
    assert not list(env.data_dir.rglob("*identified*"))
