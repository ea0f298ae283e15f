"""The generic report renderer: what a radiologist must find in the PDF before signing.

Text is read back from the PDF with poppler's ``pdftotext`` (an independent reader, not our own
renderer), the document title with ``pdfinfo``; pages as images with ``pdftoppm``.
Set NEURORAD_DOCS_SCREENSHOTS=1 to refresh docs/report-page1.png.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from neurorad.report.render import (
    DRAFT_TEXT,
    PatientIdentity,
    ReportContext,
    build_report,
    interval_text,
    normalise_units,
    render_identified_report,
    render_report,
)
from neurorad.workflows.contract import (
    Alarm,
    Finding,
    KeyImage,
    ModelRef,
    Provenance,
    Quantity,
    ReportSection,
    ReportTable,
    Requirements,
    Review,
    SeriesRole,
    Workflow,
    WorkflowResult,
    format_value,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
needs_poppler = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                   reason="poppler-utils (pdftotext) not installed: scripts/install_system.sh")


class _Spots(Workflow):
    """A test workflow with two finding kinds and a prior: the renderer must take all wording from it."""

    name = "test-spots"
    version = "2.1.0"
    title = "Spot follow-up (test workflow)"
    requirements = Requirements((SeriesRole("image"), SeriesRole("prior_image", prior=1)))
    finding_kinds = {"fresh": "fresh spot", "grown": "grown spot"}

    def run(self, inputs, out_dir, progress):  # the renderer never runs a workflow
        raise NotImplementedError

    def recompute(self, result):
        total = sum(f.volume_ml or 0.0 for f in result.findings)
        return replace(result, quantities=[Quantity("total_volume", total, "mL", "Total spot volume"),
                                           Quantity("count", len(result.findings), "1", "Spots")])

    def conclusion(self, result, review=None):
        return f"SPOTCHECK: {len(result.findings)} spot(s) since the prior exam."

    def report_sections(self, result, review):
        rows = tuple((str(f.id), self.finding_kinds[f.kind], format_value(f.volume_ml, 3)) for f in result.findings)
        return [ReportSection("Impression", (self.conclusion(result, review),)),
                ReportSection("Spots", table=ReportTable(("#", "Kind", "Volume (mL)"), rows))]


def _key_image(path: Path, value: int) -> None:
    import matplotlib.pyplot as plt

    img = np.zeros((60, 80, 3), np.uint8)
    img[20:40, 10:30] = value
    plt.imsave(path, img)


def _result(folder: Path) -> WorkflowResult:
    for i in (1, 2, 3):
        _key_image(folder / f"key{i}.png", 80 * i)
    findings = [Finding(1, "fresh", 0.25, 1, "left frontal"), Finding(2, "fresh", 0.05, 2, "right parietal"),
                Finding(3, "grown", 0.5, 3, "left occipital",
                        measurements=(Quantity("prior_volume", 200.0, "mm3"),))]
    res = WorkflowResult(
        "test-spots", "2.1.0", findings=findings, alarms=[Alarm("contrast", "Unusual contrast in the prior.")],
        key_images=[KeyImage(f"key{i}.png", f"Spot {i}: axial slice", finding_id=i) for i in (1, 2, 3)],
        provenance=Provenance({"image": "a" * 64, "prior_image": "b" * 64}, "9.9.9",
                              [ModelRef("spotnet", "1.4", "c" * 64, "learned")],
                              [{"name": "registration", "seconds": 3.25}],
                              {"threshold": 0.5, "registration": {"metric": "MI", "levels": [4, 2, 1]}}))
    return _Spots().recompute(res)


PATIENT = PatientIdentity.from_dicom({"PatientName": "Doe^Janet^Q", "PatientID": "MRN-4471",
                                      "PatientBirthDate": "19610412"})
CONTEXT = ReportContext(exam_date="20260914", prior_exam_dates=("20260112",), report_date="2026-11-30T10:15:00Z",
                        report_version=2, supersedes=1, pseudonym="PSEUDO-7F3A")
REVIEW = Review("ACCEPTABLE", {"score": "2"}, {1: "keep", 2: "discard", 3: "keep"}, ((-30.0, 12.0, 40.0),),
                "Spot 2 is a vessel.", "rad1", "2026-11-30T10:12:00+00:00")


def _pdftext(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_interval_and_units() -> None:
    assert interval_text(245) == "245 days (8.0 months)"
    assert interval_text(1) == "1 day" and interval_text(59) == "59 days"
    assert interval_text(800).endswith("(2.2 years)")
    res = normalise_units(WorkflowResult("w", "1", quantities=[Quantity("lesion_volume_mm3", 1500.0, "mm3")],
                                         findings=[Finding(1, "k", measurements=(Quantity("v", 20, "mm3"),))]))
    assert res.quantities[0] == Quantity("lesion_volume_ml", 1.5, "mL")
    assert res.findings[0].measurements[0].value == pytest.approx(0.02) and res.findings[0].measurements[0].unit == "mL"


def test_model_draft_and_reviewed(tmp_path: Path) -> None:
    res = _result(tmp_path)
    draft = build_report(_Spots(), res, None, replace(CONTEXT, result_dir=tmp_path))
    assert draft.status == DRAFT_TEXT and not draft.reviewed and draft.review is None
    assert len(draft.key_images) == 3
    assert ("Interval", "245 days (8.0 months)") in draft.header
    reviewed = build_report(_Spots(), res, REVIEW, replace(CONTEXT, result_dir=tmp_path))
    assert reviewed.status == "Reviewed by rad1 on 2026-11-30 10:12 UTC: ACCEPTABLE."
    # the discarded spot leaves the findings, the totals and the key images
    assert "SPOTCHECK: 2 spot(s) since the prior exam." in reviewed.sections[0].paragraphs
    assert [r[0] for r in reviewed.sections[1].table.rows] == ["1", "3"]
    assert [c for _, c in reviewed.key_images] == ["Spot 1: axial slice", "Spot 3: axial slice"]
    assert "Quality score: 2 Good" in reviewed.review.paragraphs
    assert any("#2 (fresh spot): discard" in p for p in reviewed.review.paragraphs)
    # not usable: no number at all
    bad = build_report(_Spots(), res, replace(REVIEW, decision="UNACCEPTABLE"), CONTEXT)
    assert bad.sections[0].heading == "Result not usable" and not bad.key_images
    assert "SPOTCHECK" not in str(bad.sections)
    # ... and says "not usable" where a PACS lists documents (title, PDF Title = DocumentTitle)
    assert "not usable" in bad.title and "not usable" in bad.document_title and "not usable" in bad.status
    assert "not usable" not in reviewed.document_title and "not usable" not in draft.document_title


@needs_poppler
def test_reviewed_pdf_identified_only_at_delivery(tmp_path: Path) -> None:
    res = _result(tmp_path)
    stored = tmp_path / "stored"
    html, pdf = render_report(_Spots(), res, REVIEW, replace(CONTEXT, result_dir=tmp_path), stored, "report_v2")
    text = _pdftext(pdf)
    flat = " ".join(text.split())
    # the de-identified copy: no name, ID or birth date, and says so
    for ident in ("Doe", "Janet", "MRN-4471", "1961"):
        assert ident not in text and ident not in html.read_text()
    assert "PSEUDO-7F3A" in flat and "added when the report is sent" in flat
    # what a signable report holds
    for needle in ("Exam date 2026-09-14", "Prior exam 2026-01-12", "Interval 245 days (8.0 months)",
                   "Report date 2026-11-30 10:15 UTC", "test-spots 2.1.0", "spotnet 1.4",
                   "Reviewed by rad1 on 2026-11-30 10:12 UTC: ACCEPTABLE.", "Decision: ACCEPTABLE",
                   "Reviewer: rad1", "Quality score: 2 Good", "Comment: Spot 2 is a vessel.",
                   "SPOTCHECK: 2 spot(s)", "Unusual contrast in the prior.", "Volume (mL)",
                   "Report version 2 (supersedes version 1)"):
        assert needle in flat, needle
    assert "Draft" not in text and "DRAFT" not in text and "mm3" not in text
    # provenance is on the last page only (pages are split by form feeds)
    pages = text.split("\f")
    pages = [p for p in pages if p.strip()]
    assert "Provenance" in pages[-1] and all("Provenance" not in p for p in pages[:-1])
    assert len(pages) <= 3, len(pages)
    # the document title is whole
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "Title:           Spot follow-up (test workflow) (reviewed, report version 2)" in info

    # the delivery hook: the identified copy, rendered elsewhere
    out = tmp_path / "outgoing"
    _, ipdf = render_identified_report(_Spots(), res, REVIEW, replace(CONTEXT, result_dir=tmp_path), PATIENT, out)
    iflat = " ".join(_pdftext(ipdf).split())
    for needle in ("Patient Doe, Janet Q", "Patient ID MRN-4471", "Birth date 1961-04-12"):
        assert needle in iflat, needle
    assert ipdf.parent == out and not any("identified" in p.name for p in stored.iterdir())

    if os.environ.get("NEURORAD_DOCS_SCREENSHOTS") and shutil.which("pdftoppm"):
        subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(pdf),
                        str(DOCS / "report-page1")], check=True)


@needs_poppler
def test_draft_pdf_says_draft(tmp_path: Path) -> None:
    _, pdf = render_report(_Spots(), _result(tmp_path), None, replace(CONTEXT, result_dir=tmp_path), tmp_path / "o")
    flat = " ".join(_pdftext(pdf).split())
    assert "DRAFT generated by software" in flat and "Reviewed by" not in flat


@needs_poppler
def test_delivery_hook_renders_the_stored_report_identified(tmp_path: Path) -> None:
    """The delivery path gets the identified PDF of exactly the stored report (from its sidecar), with
    the original exam date from the vault; nothing identified is left on disk."""
    from neurorad.report.render import SIDECAR_SUFFIX, identified_pdf_bytes
    from neurorad.workflows import registry

    registry.register(_Spots)
    try:
        stored = tmp_path / "stored"
        ctx = replace(CONTEXT, result_dir=tmp_path, exam_date="", interval_days=245)
        _, pdf = render_report(_Spots(), _result(tmp_path), REVIEW, ctx, stored, "report_v2")
        side = (stored / f"report_v2{SIDECAR_SUFFIX}").read_text()
        assert "MRN-4471" not in side and "Doe" not in side
        before = sorted(p.name for p in tmp_path.rglob("*"))
        data = identified_pdf_bytes(pdf, PATIENT, exam_date="20260914")
        assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing identified stored
        (tmp_path.parent / "sent.pdf").write_bytes(data)
        flat = " ".join(_pdftext(tmp_path.parent / "sent.pdf").split())
        for needle in ("Patient Doe, Janet Q", "Patient ID MRN-4471", "Birth date 1961-04-12", "Exam date 2026-09-14",
                       "Interval 245 days (8.0 months)", "Reviewed by rad1", "Comment: Spot 2 is a vessel."):
            assert needle in flat, needle
        assert identified_pdf_bytes(tmp_path / "nothing.pdf", PATIENT) is None
    finally:
        registry.unregister(_Spots.name)
