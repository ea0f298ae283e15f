"""Worklist and study-page data: baseline studies are not failures, exam dates are study dates,
findings counted per kind of the workflow's vocabulary."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset

from neurorad.server.web import pagedata
from neurorad.workflows.contract import Finding
from tests.web.conftest import WebEnv
from tests.web.test_worklist import _login

PRIOR_ONLY = "no workflow applies: follow-x: missing prior_image (FLAIR) in a previous study (prior 1)"
MIXED = ("no workflow applies: follow-x: missing prior_image (FLAIR) in a previous study (prior 1); "
         "tumour-y: missing t1c (T1C), t2 (T2)")
NOTHING = "no workflow applies: tumour-y: missing t1c (T1C)"


def test_baseline_waiting_is_its_own_state() -> None:
    assert pagedata.worklist_state("no_workflow", PRIOR_ONLY) == ("baseline", "baseline: waiting for a follow-up study")
    assert pagedata.worklist_state("no_workflow", MIXED)[0] == "baseline"  # one workflow only lacks the prior
    assert pagedata.worklist_state("no_workflow", NOTHING) == ("no_workflow", "no workflow")
    assert pagedata.worklist_state("failed", PRIOR_ONLY) == ("failed", "failed")
    assert not pagedata.waiting_for_followup("no_workflow", None)


def _dcm(path: Path, study_date: str | None, modified: str | None = None) -> Path:
    ds = pydicom.Dataset()
    if modified:
        ds.LongitudinalTemporalInformationModified = modified
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    if study_date is not None:
        ds.StudyDate = study_date
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_exam_date_is_the_study_date(tmp_path: Path) -> None:
    shifted = _dcm(tmp_path / "a.dcm", "20250117")
    removed = _dcm(tmp_path / "b.dcm", None)
    assert pagedata.exam_date(shifted) == "2025-01-17"
    assert pagedata.exam_date(removed) is None
    assert pagedata.exam_date(removed, {"StudyDate": "20240302"}) == "2024-03-02"
    assert pagedata.exam_date(None, None) is None
    # a date the de-identification shifted is never shown as if it were the PACS's
    moved = _dcm(tmp_path / "c.dcm", "20250117", "MODIFIED")
    assert pagedata.exam_date(moved) == "2025-01-17 (shifted)"
    assert pagedata.exam_date(moved, {"StudyDate": "20260120"}) == "2025-01-17 (shifted)"
    assert pagedata.exam_date(moved, {"StudyDate": "20260120"}, prefer_original=True) == "2026-01-20"
    assert pagedata.interval_days("2025-01-17", "2024-03-02") == 321


def test_kind_counts_in_vocabulary_order() -> None:
    fs = [Finding(1, "enlarging"), Finding(2, "new"), Finding(3, "new")]
    out = pagedata.kind_counts(fs, {"new": "new", "enlarging": "enlarging"}, {"new": "#f00"})
    assert out == [{"kind": "new", "label": "new", "count": 2, "colour": "#f00"},
                   {"kind": "enlarging", "label": "enlarging", "count": 1, "colour": ""}]


def test_worklist_shows_baseline_not_failed(web_env: WebEnv) -> None:
    from neurorad.store.models import Study

    with web_env.app.state.db.session() as s:
        st = s.get(Study, web_env.prior_study_id)
        st.state, st.state_reason = "no_workflow", PRIOR_ONLY
    c = _login(web_env, "rad")
    html = c.get("/worklist?status=baseline").text
    assert f'data-study="{web_env.prior_study_id}"' in html and 'data-state="baseline"' in html
    assert "baseline: waiting for a follow-up study" in html and "badge alarm\">failed" not in html
    assert f'data-study="{web_env.prior_study_id}"' not in c.get("/worklist?status=failed").text


def test_worklist_counts_findings_per_kind(web_env: WebEnv) -> None:
    """The list tells finding kinds apart with the workflow's labels and colours and numbers."""
    import re

    c = _login(web_env, "rad")
    html = c.get("/worklist").text
    row = re.search(rf'<tr data-study="{web_env.study_id}".*?</tr>', html, re.S).group(0)
    kinds: dict[str, int] = {}
    for le in web_env.truth["lesions"]:
        kinds[getattr(le, "kind", "new")] = kinds.get(getattr(le, "kind", "new"), 0) + 1
    for kind, n in kinds.items():
        assert re.search(rf'data-kind="{kind}"><i class="swatch" style="background: #[0-9a-f]{{6}}"></i>{n} ', row), row
