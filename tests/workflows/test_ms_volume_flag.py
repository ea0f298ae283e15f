"""A lesion whose volume is not measurable at the slice thickness (issue 17) is never shown or exported
as a precise number: the contract carries the note (Finding.volume_note, Quantity.note), the MS
plug-in's report table and Method say it, the generic report renders it, and the SR qualifies the
number as indeterminate."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np

from neurorad.clinical.ms import ms_decision
from neurorad.image.volume import Volume
from neurorad.quantify.lesions import LesionRow
from neurorad.report.render import ReportContext, build_report, render_html
from neurorad.workflows.contract import Finding, Quantity, WorkflowResult, format_measurement
from neurorad.workflows.ms_lesions import MSLesionsWorkflow, from_ms_result

NOTE = "approximate: not measurable at 5 mm slices"


def _res(tmp_path: Path) -> SimpleNamespace:
    rows = [LesionRow(1, "new", 900.0, 12.0, 10.0, 20.0, 30.0, max_score=0.9),
            LesionRow(2, "new", 60.0, 4.9, 0.0, 0.0, 0.0, volume_measurable=False, volume_note=NOTE)]
    (tmp_path / "result.json").write_text(json.dumps({
        "workflow": "ms-lesions", "version": "1.1.0", "provenance": {"steps": []},
        "volume_rule": {"rule": "RULE-TEXT", "slice_thickness_mm": 5.0}}))
    return SimpleNamespace(out_dir=tmp_path, lesions=rows, warnings=[], decision=ms_decision(["new", "new"]))


def test_contract_note_round_trips_and_old_results_read() -> None:
    f = Finding(2, "new", 0.06, measurements=(Quantity("diameter_mm", 4.9, "mm", note=NOTE),), volume_note=NOTE)
    d = f.to_dict()
    assert d["volume_note"] == NOTE and d["measurements"][0]["note"] == NOTE
    assert Finding.from_dict(d) == f
    plain = Finding(1, "new", 0.9).to_dict()
    assert "volume_note" not in plain  # additive: results without notes are unchanged
    assert Finding.from_dict(plain).volume_note == ""
    assert format_measurement(0.06, NOTE, 3, "mL") == f"0.060 mL ({NOTE})"
    assert format_measurement(0.9, "", 3) == "0.900"


def test_plugin_flags_the_lesion_and_states_the_rule(tmp_path: Path) -> None:
    wf = MSLesionsWorkflow()
    r = from_ms_result(_res(tmp_path))
    assert r.finding(1).volume_note == "" and r.finding(2).volume_note == NOTE
    assert r.finding(2).measurement("diameter_mm").note == NOTE
    assert r.quantity("lesions_volume_not_measurable").value == 1
    assert "1 lesion volume not measurable" in r.quantity("new_lesion_volume_ml").note
    assert r.quantity("new_lesion_volume_ml").value == 0.96  # totals kept
    again = WorkflowResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.finding(2).volume_note == NOTE
    sections = {s.heading: s for s in wf.report_sections(r, None)}
    table = sections["Lesions"].table
    assert table.rows[0][2] == "0.900" and table.rows[1][2] == f"0.060 ({NOTE})"
    assert "1 of 2 lesion volumes are not measurable" in sections["Lesion volumes"].paragraphs[0]
    assert "RULE-TEXT (slice thickness of this pair: 5 mm)" in sections["Method"].paragraphs[0]
    page = render_html(build_report(wf, r, None, ReportContext()))
    assert f"0.060 ({NOTE})" in page and "RULE-TEXT" in page


def test_sr_qualifies_the_flagged_volume_as_indeterminate(tmp_path: Path) -> None:
    import pydicom

    from neurorad.dicom.results import write_measurement_sr
    from neurorad.image.dicom_series import write_dicom_series

    src = write_dicom_series(Volume(np.zeros((8, 8, 3), np.float32), np.diag([1.0, 1.0, 5.0, 1.0])),
                             tmp_path / "src", attributes={"MRAcquisitionType": "2D"})
    source = [pydicom.dcmread(p) for p in sorted(Path(src).glob("*.dcm"))]
    findings = [Finding(1, "new", 0.9, measurements=(Quantity("diameter_mm", 12.0, "mm"),)),
                Finding(2, "new", 0.06, measurements=(Quantity("diameter_mm", 4.9, "mm", note=NOTE),),
                        volume_note=NOTE)]
    path = write_measurement_sr(tmp_path / "sr.dcm", source, [Quantity("new_lesions", 2, "1")], findings,
                                {"new": "New lesion"})
    sr = hd.sr.srread(path)
    groups = sr.content.get_image_measurement_groups()  # no SEG given: one Measurements group per finding
    by_id = {str(g.tracking_identifier): g for g in groups}
    flagged, clean = by_id["Finding 2"], by_id["Finding 1"]
    qual = {m.name.meaning: m.qualifier for m in flagged.get_measurements()}
    assert qual["Volume"] is not None and qual["Volume"].value == "114011"  # Value indeterminate
    assert qual["diameter_mm"] is not None
    notes = [e.value.meaning for e in flagged.get_qualitative_evaluations() if e.name.value == "measurement-note"]
    assert notes and NOTE[:40] in notes[0]
    assert all(m.qualifier is None for m in clean.get_measurements())


def test_study_page_shows_the_note_next_to_the_volume(tmp_path: Path) -> None:
    from neurorad.server.web.router import templates

    r = from_ms_result(_res(tmp_path))
    findings = [f.to_dict() | {"kind_label": "New T2-FLAIR lesion"} for f in r.findings]  # as build_review
    page = templates.env.get_template("study.html").render(
        review={"findings": findings, "form": None, "overlay": None, "decided": None}, study_id=1, request=None)
    cells = [line.strip() for line in page.splitlines() if 'class="vol"' in line]
    assert len(cells) == 2 and NOTE not in cells[0] and cells[0].startswith('<td class="vol">0.900')
    assert cells[1].startswith('<td class="vol">0.060') and f"({NOTE})" in cells[1]


def test_flagged_enlarging_lesion_change_is_approximate(tmp_path: Path) -> None:
    res = _res(tmp_path)
    res.lesions.append(LesionRow(3, "enlarging", 80.0, 5.3, 0.0, 0.0, 0.0, baseline_volume_mm3=30.0,
                                 volume_change_mm3=50.0, volume_measurable=False, volume_note=NOTE))
    r = from_ms_result(res)
    assert r.finding(3).measurement("volume_change_ml").note == NOTE
    rows = {s.heading: s for s in MSLesionsWorkflow().report_sections(r, None)}["Lesions"].table.rows
    assert rows[2][4] == "+0.050 (approximate)" and rows[2][2] == f"0.080 ({NOTE})"


def test_default_report_sections_show_notes() -> None:
    """A workflow without its own report sections (the contract's default) shows the notes too."""
    from neurorad.workflows.contract import Workflow

    class Plain(Workflow):
        name = "plain-test"

    r = WorkflowResult("plain-test", "0", findings=[Finding(1, "x", 0.06, volume_note=NOTE), Finding(2, "x", 0.5)],
                       quantities=[Quantity("total_ml", 0.56, "mL", note="approximate: includes 1")])
    sec = {s.heading: s for s in Plain().report_sections(r, None)}
    assert sec["Measurements"].table.rows[0][1] == "0.56 (approximate: includes 1)"
    assert [row[2] for row in sec["Findings table"].table.rows] == [f"0.060 ({NOTE})", "0.500"]


def test_method_states_the_runs_delineation_rule(tmp_path: Path) -> None:
    from neurorad.segment.ms_difference import ClassifyParams, delineation_rule_text

    wf = MSLesionsWorkflow()
    # a result written before the delineation was recorded: half maximum, as those versions measured
    old = {s.heading: s for s in wf.report_sections(from_ms_result(_res(tmp_path)), None)}
    assert "voxels at >= half the lesion's peak change" in old["Method"].paragraphs[0]
    text = delineation_rule_text(ClassifyParams(pv_level_min_diameter_mm=5.0))
    assert "half its peak change" in text and ">= 5 mm" in text and "partial-volume sum" in text
    assert "partial-volume sum" not in delineation_rule_text(ClassifyParams(pv_level_min_diameter_mm=None))
    res = _res(tmp_path)
    rec = json.loads((tmp_path / "result.json").read_text())
    rec["volume_rule"]["delineation"] = text
    (tmp_path / "result.json").write_text(json.dumps(rec))
    new = {s.heading: s for s in wf.report_sections(from_ms_result(res), None)}
    assert text in new["Method"].paragraphs[0]
