"""The MS lesion operating point: the rule that chooses it on tuning pairs (``ms_benchmark.choose_operating_point``),
the shipped value (``PostParams.min_peak_score``) against the recorded tuning sweep it was chosen on, and the
benchmark reading every figure there by default (docs/ms-lesions-log.md "Workflow 1.34.0")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neurorad.segment.ms_difference import SCORE_AT_CORE, SCORE_AT_EXTENT, PostParams
from neurorad.segment.ms_learned import LearnedParams, probability_to_score
from tests._bench import load_bench

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
#: the sweeps of every widened tuning pair (0-191 and 192-383) at the FROC floor: the shipped operating point was
#: chosen on workflow 1.33.0's (``..._1_33_0.json``, whose detections 1.34.0 keeps) and must stay on the rule's
#: plateau of the current workflow's (1.35.0: one lesion more, found at every threshold)
TUNING_SWEEPS = (RESULTS / "ms_sweep_tuning192_1_35_0.json", RESULTS / "ms_sweep_tuning192to383_1_35_0.json")


def _pair(i: int, lesion_peaks: list[float], fp_peaks: list[float]) -> dict:
    """A benchmark record: each lesion (10 voxels) covered whole by one detection of the given peak, and false
    positives of the given peaks."""
    lesions = [{"id": k + 1, "kind": "new", "voxels": 10, "volume_mm3": 10.0,
                "hits": [{"det": k + 1, "peak": p, "covered": 10, "volume_mm3": 10.0}]}
               for k, p in enumerate(lesion_peaks)]
    dets = [{"det": k + 1, "peak": p, "fp": False, "volume_mm3": 10.0} for k, p in enumerate(lesion_peaks)]
    dets += [{"det": 100 + k, "peak": p, "fp": True, "volume_mm3": 30.0} for k, p in enumerate(fp_peaks)]
    return {"case": i, "truth_active": bool(lesion_peaks), "lesions": lesions, "detections": dets}


def test_the_rule_takes_the_geometric_middle_of_the_most_sensitive_then_most_specific_plateau() -> None:
    """Worked by hand: FP per patient is 0.5 at thresholds <= 0.05 (over the rule's 0.3 budget), 0.25 up to 0.3,
    0 above; all three lesions are found up to 0.08, two up to 0.5; stable patients called clean: 0/2 up to 0.05,
    1/2 up to 0.3. Within the budget the best is (3/3 lesions, specificity 1/2) on (0.05, 0.08], whose geometric
    middle is about 0.063; a threshold there finds the 0.08 lesion that 0.1 loses."""
    mb = load_bench("ms_benchmark")
    recs = [_pair(0, [0.9, 0.08], []), _pair(1, [0.5], []), _pair(2, [], [0.05]), _pair(3, [], [0.3])]
    best = mb.choose_operating_point(recs)
    assert best["threshold"] == pytest.approx(np.sqrt(0.05 * 0.08))  # the staircase's exact edges
    assert best["found"] == 3 and best["fp_per_patient"] == 0.25 and best["patient_specificity"] == 0.5
    assert mb.operating_point(recs, 0.1)["found"] == 2


def test_the_benchmark_reads_its_figures_at_the_workflows_operating_point(tmp_path, capsys) -> None:  # noqa: ANN001
    """A lesion whose only detection peaks exactly at the shipped threshold is found by default and missed one
    hundredth above it; ``--operating-point`` reads a record at another point (an older workflow's)."""
    mb = load_bench("ms_benchmark")
    op = PostParams().min_peak_score
    assert mb.workflow_operating_point() == op
    rec = {**_pair(0, [op], []), "slice_mm": 1.0, "seconds_pipeline": 1.0}
    rec["lesions"][0].update(diameter_mm=5.0, location="deep", shape="blob", contrast_to_wm=1.5, slice_mm=1.0)
    assert mb.summarise([rec])["lesion_sensitivity_all"] == "1.000 (1/1)"
    assert mb.summarise([rec])["operating_point_min_peak_score"] == op
    assert mb.summarise([rec], op + 0.01)["lesion_sensitivity_all"] == "0.000 (0/1)"
    f = tmp_path / "run.json"
    f.write_text(json.dumps({"summary": {}, "cases": [rec]}))
    for point, found in ((None, "1.000 (1/1)"), (op + 0.01, "0.000 (0/1)")):
        extra = [] if point is None else ["--operating-point", str(point)]
        assert mb.main(["--summarise", str(f), *extra]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["lesion_sensitivity_all"] == found
        assert out["operating_point_min_peak_score"] == (op if point is None else point)


def test_the_learned_mapping_goes_to_the_scales_fixed_anchors() -> None:
    """The operating point is a threshold on the score scale, not one of its anchors: by default the learned
    engine's probability maps to the scale's anchors, the regional workflow's published binarisation and core
    thresholds (0.01 at its extent probability, 0.1 at its core probability), not to ``PostParams`` (until
    workflow 1.34.0 ``apply_lesion_engine`` passed the post-processing's defaults, so moving the operating point
    would have moved every learned score with it)."""
    params = LearnedParams(extent_probability=0.2, core_probability=0.6)
    s = probability_to_score(np.array([0.0, 0.2, 0.6, 1.0]), params)
    np.testing.assert_allclose(s, [0.0, SCORE_AT_EXTENT, SCORE_AT_CORE, 1.0], rtol=1e-6)
    assert (SCORE_AT_EXTENT, SCORE_AT_CORE) == (0.01, 0.1)


@pytest.mark.skipif(not all(f.exists() for f in TUNING_SWEEPS), reason="the recorded tuning sweeps are not here")
def test_the_shipped_operating_point_is_the_rule_applied_to_the_recorded_tuning_sweep() -> None:
    """``PostParams.min_peak_score`` lies on the plateau the rule chooses on every widened tuning pair: the same
    lesions found and the same patient specificity as the rule's own point, within its false-positive budget. Fails
    when the constant or the record changes without the other."""
    mb = load_bench("ms_benchmark")
    recs = [r for f in TUNING_SWEEPS for r in json.loads(f.read_text())]
    assert len(recs) == 384 and len({r["case"] for r in recs}) == 384
    best = mb.choose_operating_point(recs)
    shipped = mb.operating_point(recs, PostParams().min_peak_score)
    assert shipped["found"] == best["found"]
    assert shipped["patient_specificity"] == best["patient_specificity"]
    assert shipped["fp_per_patient"] <= 0.3
    assert PostParams().min_peak_score == pytest.approx(best["threshold"], rel=0.01)
