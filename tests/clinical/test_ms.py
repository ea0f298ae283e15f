"""Gadolinium decision and activity rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurorad.clinical.ms import ms_decision


def test_active_with_new_lesion_recommends_gadolinium() -> None:
    d = ms_decision(["new", "enlarging", "new"])
    assert d.active and d.gadolinium and (d.n_new, d.n_enlarging) == (2, 1)
    assert "recommended" in d.gadolinium_reason and d.gadolinium_reason.count(".") == 1


def test_enlarging_only_is_active() -> None:
    d = ms_decision(["enlarging"])
    assert d.active and d.gadolinium and "1 enlarging" in d.activity_text


def test_no_lesion_no_gadolinium() -> None:
    d = ms_decision([])
    assert not d.active and not d.gadolinium and "not needed" in d.gadolinium_reason


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError):
        ms_decision(["stable"])


def test_uncounted_region_of_tumefactive_size_leaves_gadolinium_to_the_reader() -> None:
    """A changed region larger than a 20 mm lesion that the workflow did not count: not active, but never "no
    new lesion, gadolinium not needed"; with counted lesions the rule is unchanged and the region is named."""
    d = ms_decision([], unresolved_regions=1)
    assert not d.active and not d.gadolinium and d.gadolinium_label == "READER TO DECIDE"
    assert "not counted" in d.activity_text and "20 mm" in d.activity_text and "it is a lesion" in d.activity_text
    assert "not needed" not in d.conclusion and "tumefactive" in d.gadolinium_reason
    two = ms_decision(["new"], unresolved_regions=2)
    assert two.active and two.gadolinium and two.gadolinium_label == "RECOMMENDED"
    assert two.activity_text.startswith("Active: 1 new") and "2 regions" in two.activity_text
    assert ms_decision([]).gadolinium_label == "NOT NEEDED" and ms_decision([]).unresolved_regions == 0
    with pytest.raises(ValueError):
        ms_decision([], unresolved_regions=-1)


def test_draft_report_prints_the_reader_to_decide_heading() -> None:
    from neurorad.pipelines.ms_report import MSReport, render_html

    d = ms_decision([], unresolved_regions=1)
    html = render_html(MSReport(d.activity_text, d.gadolinium, d.gadolinium_reason, [], {}, {},
                                gadolinium_label=d.gadolinium_label))
    assert "Gadolinium: READER TO DECIDE." in html and "NOT NEEDED" not in html
    plain = ms_decision([])
    assert "Gadolinium: NOT NEEDED." in render_html(MSReport(plain.activity_text, plain.gadolinium,
                                                            plain.gadolinium_reason, [], {}, {}))


def test_a_lesion_the_reader_marked_makes_the_scan_active() -> None:
    """A new or enlarging lesion the software missed and the reader marked counts for activity and gadolinium
    (not measured, and the sentences say who found it); nothing changes without one."""
    d = ms_decision([], reader_marked=1)
    assert d.active and d.gadolinium and d.gadolinium_label == "RECOMMENDED" and d.reader_marked == 1
    assert (d.n_new, d.n_enlarging) == (0, 0)  # the software's counts stay the measured ones
    assert "marked by the reader" in d.activity_text and "not measured" in d.activity_text
    assert "not needed" not in d.conclusion and d.gadolinium_reason.endswith("whether it is acutely active.")
    both = ms_decision(["new"], reader_marked=2)
    assert both.activity_text.startswith("Active: 1 new T2-FLAIR lesion and 2 new or enlarging T2-FLAIR lesions "
                                         "marked by the reader")
    assert "were found" in both.gadolinium_reason and "they are acutely active" in both.gadolinium_reason
    # with an uncounted region of tumefactive size: the marked lesion decides gadolinium, the region stays named
    region = ms_decision([], unresolved_regions=1, reader_marked=1)
    assert region.gadolinium_label == "RECOMMENDED" and "not counted" in region.activity_text
    assert ms_decision(["new"], reader_marked=0) == ms_decision(["new"])
    with pytest.raises(ValueError):
        ms_decision([], reader_marked=-1)


def test_a_low_confidence_lesion_alone_leaves_activity_and_gadolinium_to_the_reader() -> None:
    """Workflow 1.18.0: lesions under the activity threshold are reported, never make the scan active by
    themselves, and the sentences leave the decision to the reader instead of "no new lesion"."""
    from neurorad.clinical.ms import split_by_confidence

    counted, low = split_by_confidence(["new", "enlarging", "new"], [0.9, 0.15, 0.229], 0.23)
    assert counted == ["new"] and low == 2
    assert split_by_confidence(["new"], [0.23], 0.23) == (["new"], 0)  # at the threshold it counts
    assert split_by_confidence(["new", "new"], [0.05, None], 0.23) == (["new"], 1)  # an unknown score counts
    assert split_by_confidence(["new"], [0.05], None) == (["new"], 0)  # no threshold: every lesion counts
    with pytest.raises(ValueError, match="2 lesion kinds but 1 scores"):
        split_by_confidence(["new", "new"], [0.5], 0.23)

    d = ms_decision([], low_confidence=1)
    assert not d.active and not d.gadolinium and d.gadolinium_label == "READER TO DECIDE"
    assert "1 low-confidence candidate lesion is listed" in d.activity_text
    assert "not needed" not in d.conclusion.lower() and "reader to decide" in d.gadolinium_reason.lower()
    both = ms_decision(["enlarging"], low_confidence=2)
    assert both.active and both.gadolinium_label == "RECOMMENDED" and (both.n_new, both.n_enlarging) == (0, 1)
    assert both.activity_text.startswith("Active: 1 enlarging") and "2 further low-confidence" in both.activity_text
    with pytest.raises(ValueError):
        ms_decision([], low_confidence=-1)


def test_the_draft_report_marks_low_confidence_lesions() -> None:
    from neurorad.pipelines.ms_report import MSReport, render_html
    from neurorad.quantify.lesions import LesionRow

    rows = [LesionRow(1, "new", 250.0, 7.8, 10.0, 20.0, 30.0, max_score=0.9),
            LesionRow(2, "new", 30.0, 3.9, 0.0, 0.0, 0.0, max_score=0.14)]
    d = ms_decision(["new"], low_confidence=1)
    report = MSReport(d.activity_text, d.gadolinium, d.gadolinium_reason, rows, {"activity_min_peak_score": 0.23},
                      {}, gadolinium_label=d.gadolinium_label)
    assert "Lesion 1 (new):" in report.findings_text and "Lesion 2 (new, low confidence):" in report.findings_text
    assert "1 of 2 lesions have a peak score under 0.23" in report.findings_text
    assert "<td>new, low confidence</td>" in render_html(report)
    # a run without the threshold (before 1.18.0) marks nothing
    old = MSReport(d.activity_text, d.gadolinium, d.gadolinium_reason, rows, {}, {})
    assert "low confidence" not in old.findings_text


def test_the_terminal_never_says_no_new_lesion_when_the_reader_decides(capsys) -> None:  # noqa: ANN001
    from types import SimpleNamespace

    from neurorad.cli.ms import print_result

    for d, status in ((ms_decision([], low_confidence=1), "READER TO DECIDE"),
                      (ms_decision([], unresolved_regions=1), "READER TO DECIDE"),
                      (ms_decision([]), "NO NEW LESION"), (ms_decision(["new"]), "ACTIVE")):
        print_result(SimpleNamespace(decision=d, lesions=[], warnings=[], files={}, out_dir=Path("out")))
        first = capsys.readouterr().out.splitlines()[0]
        assert first.startswith(f"decision: {status} - ")


def test_the_command_line_sets_the_activity_threshold(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """``neurorad ms-lesions --activity-min-peak-score`` reaches MSConfig (0.23 by default; 0 restores 1.17.0's
    rule), and a value outside [0, 1] is refused before anything runs."""
    from typer.testing import CliRunner

    from neurorad.cli import app
    from neurorad.cli import ms as ms_cli
    from neurorad.pipelines import ms_lesions

    seen = []

    def fake_run(baseline, followup, out, cfg, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append(cfg.activity_min_peak_score)
        raise SystemExit(0)

    monkeypatch.setattr(ms_lesions, "run_ms_lesions", fake_run)
    monkeypatch.setattr(ms_cli, "print_result", lambda res: None)
    args = ["ms-lesions", "--baseline", "b.nii.gz", "--followup", "f.nii.gz", "--out", str(tmp_path / "o")]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, [*args, "--activity-min-peak-score", "0"]).exit_code == 0
    assert seen == [0.23, 0.0]
    bad = runner.invoke(app, [*args, "--activity-min-peak-score", "1.5"])
    assert bad.exit_code == 2 and seen == [0.23, 0.0]
