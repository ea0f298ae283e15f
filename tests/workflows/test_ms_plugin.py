"""The ms-lesions plug-in's side of the contract: MSResult -> WorkflowResult (mL, measurements),
MS clinical rules after review, the contract keys added to the CLI's result.json."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from neurorad.clinical.ms import ms_decision
from neurorad.quantify.lesions import LesionRow
from neurorad.workflows import registry
from neurorad.workflows.contract import Review
from neurorad.workflows.ms_lesions import MSLesionsWorkflow, from_ms_result, generic_result_keys


def _res(tmp_path: Path) -> SimpleNamespace:
    rows = [LesionRow(1, "new", 250.0, 7.8, 10.0, 20.0, 30.0, aal_region="Frontal_Sup_L", max_score=0.9),
            LesionRow(2, "enlarging", 900.0, 12.0, -5.0, 1.0, 2.0, jhu_tract="Corpus callosum",
                      baseline_volume_mm3=400.0, volume_change_mm3=500.0),
            LesionRow(3, "new", 40.0, 4.2, 0.0, 0.0, 0.0)]
    (tmp_path / "result.json").write_text(json.dumps({"workflow": "ms-lesions", "version": "0.9.1",
                                                      "counts": {"new": 2}, "provenance": {"steps": []}}))
    return SimpleNamespace(out_dir=tmp_path, lesions=rows, warnings=["low contrast"],
                           decision=ms_decision([r.kind for r in rows]))


def test_ms_result_becomes_a_generic_result_in_ml(tmp_path: Path) -> None:
    r = from_ms_result(_res(tmp_path))
    assert [(f.id, f.kind, f.volume_ml) for f in r.findings] == [(1, "new", 0.25), (2, "enlarging", 0.9),
                                                                 (3, "new", 0.04)]
    enl = r.finding(2)
    assert enl.measurement("baseline_volume_ml").value == pytest.approx(0.4)
    assert enl.measurement("volume_change_ml").value == pytest.approx(0.5)
    assert r.finding(1).measurement("baseline_volume_ml") is None  # new lesions have no baseline volume
    assert r.quantity("new_lesions").value == 2 and r.quantity("enlarging_lesions").value == 1
    assert r.quantity("new_lesion_volume_ml").value == pytest.approx(0.29)
    assert r.quantity("new_lesion_volume_ml").unit == "mL" and r.quantity("gadolinium_recommended").value is True
    assert [a.message for a in r.alarms] == ["low contrast"] and r.extra["counts"] == {"new": 2}
    assert r.summary.startswith("Active: 2 new and 1 enlarging T2-FLAIR lesions")


def test_review_recomputes_ms_rules(tmp_path: Path) -> None:
    wf = registry.load("ms-lesions")
    assert isinstance(wf, MSLesionsWorkflow)
    assert wf.requirements.priors_needed == 1 and wf.requirements.role("baseline_flair").classes == ("FLAIR",)
    r = from_ms_result(_res(tmp_path))
    kept = wf.reviewed(r, Review("ACCEPTABLE", {"score": "2"}, {1: "discard", 2: "discard", 3: "keep"}))
    assert [f.id for f in kept.findings] == [3]
    assert kept.quantity("enlarging_lesions").value == 0 and kept.quantity("new_lesions").value == 1
    assert kept.summary.startswith("Active: 1 new T2-FLAIR lesion since the baseline scan.")
    none = wf.reviewed(r, Review("ACCEPTABLE", {"score": "2"}, {1: "discard", 2: "discard", 3: "discard"}))
    assert none.quantity("active").value is False and "not needed" in none.summary
    sections = {s.heading: s for s in wf.report_sections(r, None)}
    assert sections["Lesions"].table.rows[1][:5] == ("2", "Enlarging T2-FLAIR lesion", "0.900", "0.400", "+0.500")


def test_cli_result_json_gets_the_contract_keys(tmp_path: Path) -> None:
    from neurorad.cli.ms import write_contract_keys

    res = _res(tmp_path)
    write_contract_keys(res)
    d = json.loads((tmp_path / "result.json").read_text())
    assert d["workflow"] == "ms-lesions" and d["version"] == MSLesionsWorkflow.version
    assert d["software_version"] == "0.9.1" and d["counts"] == {"new": 2}  # the pipeline's keys stay
    assert [f["volume_ml"] for f in d["findings"]] == [0.25, 0.9, 0.04]
    assert {"name": "new_lesions", "value": 2, "unit": "1", "description": "New T2-FLAIR lesions"} in d["quantities"]
    assert d["alarms"] == [{"code": "quality", "message": "low contrast", "severity": "warning"}]
    assert generic_result_keys(res)["findings"][1]["measurements"][1]["name"] == "baseline_volume_ml"


def test_an_uncounted_region_of_tumefactive_size_stays_in_every_conclusion(tmp_path: Path) -> None:
    """A run whose size bound left a changed region of tumefactive size uncounted (result.json decision,
    workflow 1.5.2) never concludes "no new lesion, gadolinium not needed", even after the reader discards every
    counted lesion: the region is the reader's to judge."""
    res = _res(tmp_path)
    d = json.loads((tmp_path / "result.json").read_text())
    d["decision"] = {"unresolved_regions": 1}
    (tmp_path / "result.json").write_text(json.dumps(d))
    wf = registry.load("ms-lesions")
    r = from_ms_result(res)
    assert "1 region larger than a 20 mm lesion" in r.summary and r.summary.startswith("Active: 2 new")
    none = wf.reviewed(r, Review("ACCEPTABLE", {"score": "2"}, {1: "discard", 2: "discard", 3: "discard"}))
    assert none.quantity("active").value is False and none.quantity("gadolinium_recommended").value is False
    assert "not needed" not in none.summary and "the reader decides whether it is a lesion" in none.summary
    # the values say it too (SR, API): three-valued gadolinium and the count of uncounted regions
    assert r.quantity("gadolinium").value == "RECOMMENDED" and r.quantity("unresolved_regions").value == 1
    assert none.quantity("gadolinium").value == "READER TO DECIDE" and none.quantity("unresolved_regions").value == 1
    sections = {s.heading: s for s in wf.report_sections(none, None)}
    assert "not counted" in sections["Conclusion"].paragraphs[0]
    assert "tumefactive" in sections["Gadolinium"].paragraphs[0]
    # a run without the key (before 1.5.2) reads as none left
    d["decision"] = {}
    (tmp_path / "result.json").write_text(json.dumps(d))
    plain = wf.reviewed(from_ms_result(res), Review("ACCEPTABLE", {"score": "2"},
                                                    {1: "discard", 2: "discard", 3: "discard"}))
    assert "not needed" in plain.summary
    assert plain.quantity("gadolinium").value == "NOT NEEDED" and plain.quantity("unresolved_regions").value == 0


def test_lesions_the_reader_marked_as_missed_count_after_review(tmp_path: Path) -> None:
    """An accepted review whose reader discarded every detection but marked a lesion the software missed: the
    conclusion, the values (SR, API) and the report's sections say active, gadolinium recommended, and that the
    reader marked it; a rejected review or one without markers changes nothing (before this a signed report said
    "no new lesion, gadolinium not needed" beside the reader's own marker)."""
    wf = registry.load("ms-lesions")
    r = from_ms_result(_res(tmp_path))
    verdicts = {1: "discard", 2: "discard", 3: "discard"}
    marked = Review("ACCEPTABLE", {"score": "2"}, verdicts, missed=((10.0, -20.0, 30.0),))
    out = wf.reviewed(r, marked)
    assert out.findings == [] and out.quantity("new_lesions").value == 0
    assert out.quantity("active").value is True and out.quantity("gadolinium").value == "RECOMMENDED"
    assert out.quantity("gadolinium_recommended").value is True and out.quantity("reader_marked_lesions").value == 1
    assert "marked by the reader" in out.summary and "not needed" not in out.summary
    sections = {s.heading: s for s in wf.report_sections(out, marked)}
    assert "marked by the reader" in sections["Conclusion"].paragraphs[0]
    assert sections["Gadolinium"].paragraphs[0].startswith("Gadolinium is recommended")
    # without markers, or rejected: as before
    plain = wf.reviewed(r, Review("ACCEPTABLE", {"score": "2"}, verdicts))
    assert plain.quantity("gadolinium").value == "NOT NEEDED" and plain.quantity("reader_marked_lesions").value == 0
    rejected = Review("UNACCEPTABLE", {"score": "1"}, {}, missed=((10.0, -20.0, 30.0),))
    assert wf.reviewed(r, rejected).quantity("reader_marked_lesions").value == 0
    assert wf.conclusion(r, rejected) == r.summary


def test_a_low_confidence_lesion_counts_only_when_an_accepted_review_keeps_it(tmp_path: Path) -> None:
    """Workflow 1.18.0: a run records its activity threshold (MSConfig.activity_min_peak_score); a lesion under it
    is listed but not counted, so a run whose only lesion is one concludes READER TO DECIDE; an accepted review that
    keeps it counts it (the reader judged it), one that discards it says gadolinium is not needed. A run without
    the threshold (before 1.18.0) is judged as it was: every lesion counts."""
    rows = [LesionRow(1, "new", 30.0, 3.9, 0.0, 0.0, 0.0, max_score=0.14)]
    (tmp_path / "result.json").write_text(json.dumps({
        "workflow": "ms-lesions", "version": "1.18.0", "parameters": {"activity_min_peak_score": 0.23},
        "provenance": {"steps": []}}))
    res = SimpleNamespace(out_dir=tmp_path, lesions=rows, warnings=[], decision=ms_decision([], low_confidence=1))
    r = from_ms_result(res)
    assert r.quantity("new_lesions").value == 0 and r.quantity("low_confidence_lesions").value == 1
    assert r.quantity("active").value is False and r.quantity("gadolinium").value == "READER TO DECIDE"
    assert r.quantity("new_lesion_volume_ml").value == 0.0
    assert "low-confidence" in r.summary and "not needed" not in r.summary.lower()
    wf = registry.load("ms-lesions")
    assert "low-confidence" in wf.conclusion(r, None)
    assert wf.recompute(r).quantity("gadolinium").value == "READER TO DECIDE"
    table = {s.heading: s for s in wf.report_sections(r, None)}["Lesions"].table
    assert table.rows[0][1] == "New T2-FLAIR lesion (low confidence)"
    kept = wf.reviewed(r, Review("ACCEPTABLE", {"score": "3"}, {1: "keep"}))
    assert kept.quantity("new_lesions").value == 1 and kept.quantity("gadolinium").value == "RECOMMENDED"
    assert kept.summary.startswith("Active: 1 new T2-FLAIR lesion")
    review = Review("ACCEPTABLE", {"score": "3"}, {1: "keep"})
    assert {s.heading: s for s in wf.report_sections(kept, review)}["Lesions"].table.rows[0][1] == \
        "New T2-FLAIR lesion"
    gone = wf.reviewed(r, Review("ACCEPTABLE", {"score": "3"}, {1: "discard"}))
    assert gone.quantity("gadolinium").value == "NOT NEEDED" and "not needed" in gone.summary
    # the same lesion in a run that recorded no threshold counts, as before 1.18.0
    (tmp_path / "result.json").write_text(json.dumps({"workflow": "ms-lesions", "version": "1.17.0",
                                                      "provenance": {"steps": []}}))
    old = from_ms_result(res)
    assert old.quantity("active").value is True and old.quantity("low_confidence_lesions").value == 0


def test_the_review_caption_names_a_low_confidence_lesion(tmp_path: Path) -> None:
    rows = [LesionRow(1, "new", 30.0, 3.9, 0.0, 0.0, 0.0, max_score=0.14),
            LesionRow(2, "new", 300.0, 8.3, 5.0, 0.0, 0.0, max_score=0.95)]
    (tmp_path / "result.json").write_text(json.dumps({
        "workflow": "ms-lesions", "version": "1.18.0", "parameters": {"activity_min_peak_score": 0.23},
        "provenance": {"steps": []}}))
    r = from_ms_result(SimpleNamespace(out_dir=tmp_path, lesions=rows, warnings=[], decision=None))
    wf = registry.load("ms-lesions")
    assert [wf.finding_caption(r, f) for f in r.findings] == ["low confidence", ""]
    assert r.quantity("active").value is True and r.quantity("low_confidence_lesions").value == 1
    assert "1 further low-confidence candidate lesion is listed" in r.summary
