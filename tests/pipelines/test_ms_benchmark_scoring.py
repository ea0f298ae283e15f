"""How ``bench/ms_benchmark.py`` scores a detection of a lesion the independent simulator drew into the image but
dropped from its truth (no follow-up voxel is half lesion): it found something that is there, so it is neither a
true nor a false positive, and a pair whose only new lesions were dropped is neither active nor stable."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from neurorad.image.volume import Volume
from tests._bench import load_bench


def _result(labels: np.ndarray, affine: np.ndarray, peaks: dict[int, float]) -> SimpleNamespace:
    voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
    lesions = [SimpleNamespace(id=k, max_score=p, kind="new", volume_mm3=float((labels == k).sum()) * voxel_mm3)
               for k, p in peaks.items()]
    return SimpleNamespace(labels=Volume(labels.astype(np.int16), affine), lesions=lesions, timings_s={}, cpu_s={},
                           warnings=[])


def _case(truth: np.ndarray, affine: np.ndarray, lesion_ids: list[int]) -> SimpleNamespace:
    zeros = np.zeros_like(truth)
    return SimpleNamespace(truth={"truth_new": Volume(truth, affine), "truth_enlarging": Volume(zeros, affine)},
                           case={"lesions": [{"id": i, "kind": "new", "location": "deep"} for i in lesion_ids]})


def test_a_detection_of_a_dropped_lesion_is_not_a_false_positive() -> None:
    mb = load_bench("ms_benchmark")
    # an oblique grid with 1 x 1 x 5 mm voxels: the distance is taken in world mm, not in voxels
    rot = np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.0, 1.0, 5.0])
    affine[:3, 3] = [-20.0, 15.0, -30.0]
    labels = np.zeros((40, 40, 10), np.int16)
    truth = np.zeros_like(labels)
    truth[5:8, 5:8, 2] = 1
    labels[5:8, 5:8, 2] = 1  # on the truth lesion
    labels[20:22, 20:22, 5] = 2  # on the dropped lesion
    labels[30:32, 5:7, 8] = 3  # elsewhere: a false positive
    centre = affine @ np.array([20.5, 20.5, 5.0, 1.0])
    dropped = [{"kind": "new", "diameter_mm": 3.0, "center_world_followup_mm": centre[:3].tolist()}]
    res = _result(labels, affine, {1: 0.9, 2: 0.8, 3: 0.5})
    spec = {"slice_thickness_mm": [5.0, 5.0], "params": {"dropped_truth_lesions": dropped}}
    rec = mb.score_result(0, spec, _case(truth, affine, [1]), res, 0.0, 0.0)
    by_id = {d["det"]: d for d in rec["detections"]}
    assert not by_id[1]["fp"] and not by_id[1]["dropped_truth_lesion"]
    assert not by_id[2]["fp"] and by_id[2]["dropped_truth_lesion"]
    assert by_id[3]["fp"] and not by_id[3]["dropped_truth_lesion"]
    assert rec["truth_active"] is True
    # the same detections without the dropped list: detection 2 is a false positive again
    rec_plain = mb.score_result(0, {"slice_thickness_mm": [5.0, 5.0]}, _case(truth, affine, [1]), res, 0.0, 0.0)
    assert [d["fp"] for d in rec_plain["detections"]] == [False, True, True]
    # a lesion centre 3 voxels (3 mm) beyond the diameter + half a 5 mm voxel does not excuse detection 3
    far = affine @ np.array([30.5, 5.5 + 3.0 + 3.0 + 2.5 + 3.0, 8.0, 1.0])
    assert not mb._on_dropped_lesion(labels == 3, affine, [{"diameter_mm": 3.0,
                                                            "center_world_followup_mm": far[:3].tolist()}])


def test_a_pair_whose_only_new_lesions_were_dropped_counts_for_neither_patient_rate() -> None:
    mb = load_bench("ms_benchmark")
    affine = np.eye(4)
    labels = np.zeros((20, 20, 20), np.int16)
    labels[10:12, 10:12, 10:12] = 1
    dropped = [{"kind": "new", "diameter_mm": 3.0, "center_world_followup_mm": [10.5, 10.5, 10.5]}]
    rec = mb.score_result(0, {"slice_thickness_mm": [1.0, 1.0], "params": {"dropped_truth_lesions": dropped}},
                          _case(np.zeros_like(labels), affine, []), _result(labels, affine, {1: 0.9}), 0.0, 0.0)
    assert rec["truth_active"] is None and not rec["detections"][0]["fp"]
    stable = mb.score_result(1, {"slice_thickness_mm": [1.0, 1.0]}, _case(np.zeros_like(labels), affine, []),
                             _result(np.zeros_like(labels), affine, {}), 0.0, 0.0)
    assert stable["truth_active"] is False
    op = mb.operating_point([rec, stable], 0.1)
    # the stable pair is the only negative; the ambiguous one is neither positive nor negative
    assert op["patient_specificity"] == 1.0 and np.isnan(op["patient_sensitivity"])
    assert op["fp_per_patient"] == 0.0


def _lesion(voxels: int, volume_mm3: float, hits: list[tuple[int, int, float]], found_peak: float = 0.9) -> dict:
    """A lesion record as ``score_result`` writes it; ``hits``: (detection, covered voxels, detection volume mm3)."""
    return {"id": 0, "kind": "new", "diameter_mm": 6.0, "location": "deep", "shape": "blob", "contrast_to_wm": 1.8,
            "slice_mm": 1.0, "voxels": voxels, "volume_mm3": volume_mm3,
            "hits": [{"det": d, "peak": found_peak, "covered": c, "volume_mm3": v} for d, c, v in hits]}


def test_a_detection_over_two_lesions_is_measured_once_against_both() -> None:
    mb = load_bench("ms_benchmark")
    case = {"case": 0, "lesions": [
        _lesion(100, 100.0, [(1, 80, 130.0)]),             # a new lesion ...
        _lesion(20, 20.0, [(1, 15, 130.0)]),               # ... and a small one beside it, in the same detection
        _lesion(50, 50.0, [(2, 40, 40.0), (3, 5, 6.0)]),   # a lesion covered by two detections of its own
        _lesion(30, 30.0, [(4, 3, 25.0)]),                 # covered 10 %: not found
        _lesion(10, 10.0, []),                             # missed
    ]}
    ratios = mb.lesion_volume_ratios(case, 0.1)
    # 130 mm3 detected over 100 + 20 mm3 of truth, for both; before, the small one read 130 / 20 = 6.5
    assert ratios[0] == ratios[1] == 130.0 / 120.0
    assert ratios[2] == (40.0 + 6.0) / 50.0
    assert ratios[3] is None and ratios[4] is None
    # a detection under the operating point neither finds nor joins lesions
    low = {"case": 0, "lesions": [_lesion(100, 100.0, [(1, 80, 130.0)]),
                                  _lesion(20, 20.0, [(1, 15, 130.0)], found_peak=0.05)]}
    assert mb.lesion_volume_ratios(low, 0.1) == [1.3, None]


def _cases_one_lesion_each(n: int, found: int) -> list[dict]:
    return [{"case": i, "truth_active": True, "slice_mm": 1.0, "detections": [], "seconds_pipeline": 1.0,
             "lesions": [_lesion(10, 10.0, [(1, 10, 10.0)] if i < found else [])]} for i in range(n)]


def test_the_cluster_bootstrap_agrees_with_the_binomial_interval_for_one_lesion_per_patient() -> None:
    """With one lesion per patient the lesions are independent: the bootstrap's interval must approach the binomial
    one (Wilson's score interval, computed independently here from its formula)."""
    mb = load_bench("ms_benchmark")
    ci = mb.confidence_intervals(_cases_one_lesion_each(60, 45), 0.1)
    p, n, z = 45 / 60, 60, 1.959964
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = ci["lesion_sensitivity"]
    assert abs(lo - (centre - half)) < 0.03 and abs(hi - (centre + half)) < 0.03
    assert lo < 0.75 < hi
    # the same seed gives the same interval
    assert mb.confidence_intervals(_cases_one_lesion_each(60, 45), 0.1) == ci


def test_lesions_of_one_patient_found_together_widen_the_interval() -> None:
    """Ten patients of five lesions, each patient's found all or none: 40 of 50 lesions, but the information is that
    of 10 patients, so the interval must be wider than a binomial one over 50 independent lesions."""
    mb = load_bench("ms_benchmark")
    cases = [{"case": i, "truth_active": True, "slice_mm": 1.0, "detections": [],
              "lesions": [_lesion(10, 10.0, [(k + 1, 10, 10.0)] if i < 8 else []) for k in range(5)]}
             for i in range(10)]
    lo, hi = mb.confidence_intervals(cases, 0.1)["lesion_sensitivity"]
    from neurorad.evaluate.readers import wilson_ci

    wlo, whi = wilson_ci(40, 50)
    assert hi - lo > 1.5 * (whi - wlo)
    assert lo <= 0.8 <= hi


def test_pooled_runs_must_hold_disjoint_cases(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    import json

    import pytest

    mb = load_bench("ms_benchmark")
    a = _cases_one_lesion_each(3, 2)
    b = [{**c, "case": c["case"] + 40} for c in _cases_one_lesion_each(2, 1)]
    (tmp_path / "a.json").write_text(json.dumps({"summary": {}, "cases": a}))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(c) for c in b) + "\n")
    pooled = mb.load_results([tmp_path / "b.jsonl", tmp_path / "a.json"])
    assert [r["case"] for r in pooled] == [0, 1, 2, 40, 41]
    assert mb.summarise(pooled)["lesion_sensitivity_all"] == "0.600 (3/5)"
    with pytest.raises(ValueError, match="case 0 is in both"):
        mb.load_results([tmp_path / "a.json", tmp_path / "a.json"])
    (tmp_path / "bad.txt").write_text("not json\n")
    with pytest.raises(ValueError, match="bad.txt"):
        mb.load_results([tmp_path / "bad.txt"])
    # the command line refuses it with the same message
    with pytest.raises(SystemExit):
        mb.main(["--summarise", str(tmp_path / "a.json"), "--summarise", str(tmp_path / "a.json")])


def test_the_patient_decision_reads_the_activity_threshold() -> None:
    """ACTIVE from a lesion at the activity threshold, READER TO DECIDE for lower lesions only (counted apart),
    NOT NEEDED without a lesion over the operating point; None: any reported lesion makes the patient active."""
    mb = load_bench("ms_benchmark")

    def case(i: int, active: bool, peaks: list[float]) -> dict:
        return {"case": i, "truth_active": active, "slice_mm": 1.0, "seconds_pipeline": 1.0, "lesions": [],
                "detections": [{"det": k + 1, "peak": p, "fp": not active} for k, p in enumerate(peaks)]}

    cases = [case(0, True, [0.9]), case(1, True, [0.15]), case(2, True, [0.05]),
             case(3, False, []), case(4, False, [0.12, 0.2]), case(5, False, [0.3])]
    d = mb.patient_decision(cases, 0.1, 0.23)
    assert d["sensitivity_called_active"] == "0.333 (1/3)" and d["reader_to_decide_active_patients"] == 1
    assert d["specificity_not_called_active"] == "0.667 (2/3)" and d["reader_to_decide_stable_patients"] == 1
    old = mb.patient_decision(cases, 0.1, None)
    assert old["sensitivity_called_active"] == "0.667 (2/3)" and old["specificity_not_called_active"] == "0.333 (1/3)"
    assert old["reader_to_decide_active_patients"] == old["reader_to_decide_stable_patients"] == 0


def test_the_patient_decision_is_checked_against_the_workflows_own_call() -> None:
    mb = load_bench("ms_benchmark")
    same = {"case": 0, "truth_active": False, "lesions": [], "gadolinium": "READER TO DECIDE",
            "detections": [{"det": 1, "peak": 0.15, "fp": True}]}
    other = {"case": 1, "truth_active": False, "lesions": [], "gadolinium": "RECOMMENDED",
             "detections": [{"det": 1, "peak": 0.15, "fp": True}]}
    unrecorded = {"case": 2, "truth_active": False, "lesions": [], "detections": []}
    # run at the FROC floor, the workflow counted a detection under the operating point as low-confidence: not
    # comparable with the reading at the operating point, so left out of the check
    floor = {"case": 3, "truth_active": False, "lesions": [], "gadolinium": "READER TO DECIDE",
             "detections": [{"det": 1, "peak": 0.05, "fp": True}]}
    d = mb.patient_decision([same, other, unrecorded, floor], 0.1, 0.23)
    assert d["cases_with_the_workflows_call"] == 2 and d["cases_where_it_differs"] == 1


def _numbered(*lesions: dict) -> list[dict]:
    return [{**le, "id": i} for i, le in enumerate(lesions, start=1)]


def _fp(peak: float) -> dict:
    return {"det": 9, "peak": peak, "kind": "new", "volume_mm3": 12.0, "fp": True, "dropped_truth_lesion": False}


def test_two_runs_are_compared_pair_by_pair() -> None:
    import copy

    import pytest

    mb = load_bench("ms_benchmark")
    before = [
        {"case": 0, "gadolinium": "RECOMMENDED", "detections": [_fp(0.5)],
         "lesions": _numbered(_lesion(100, 100.0, [(1, 80, 110.0)]), _lesion(20, 20.0, [(2, 15, 22.0)]))},
        {"case": 1, "gadolinium": "RECOMMENDED", "detections": [],
         "lesions": _numbered(_lesion(50, 50.0, [(1, 40, 45.0)]), _lesion(30, 30.0, [(2, 20, 30.0)]))},
        {"case": 2, "gadolinium": "NOT NEEDED", "detections": [], "lesions": _numbered(_lesion(40, 40.0, []))},
    ]
    same = mb.compare_runs(before, copy.deepcopy(before))
    assert same["same_detections"] and same["differences"] == [] and same["lesions_lost"] == 0
    assert (same["pairs"], same["lesions"], same["found_before"], same["fp_after"]) == (3, 5, 4, 1)
    after = copy.deepcopy(before)
    after[0]["detections"] = [_fp(0.55)]  # the same false positive, another peak: still the same detections
    after[0]["lesions"][0]["hits"][0]["volume_mm3"] = 120.0  # measured 1.2 x instead of 1.1 x
    # lesion 2 of pair 1 now covered only by a detection under the operating point: lost
    after[1]["lesions"][1]["hits"] = [{"det": 2, "peak": 0.05, "covered": 20, "volume_mm3": 30.0}]
    after[1]["detections"] = [_fp(0.3)]
    after[2]["gadolinium"] = "RECOMMENDED"
    after.append({"case": 7, "gadolinium": None, "detections": [], "lesions": []})
    got = mb.compare_runs(before, after)
    assert not got["same_detections"]
    assert (got["lesions_lost"], got["lesions_gained"], got["fp_before"], got["fp_after"]) == (1, 0, 1, 2)
    assert (got["volume_changed"], got["gadolinium_changed"], got["only_after"]) == (1, 1, [7])
    by_case = {r["case"]: r for r in got["differences"]}
    assert by_case[0]["volume_ratio_before_after"] == {1: [1.1, 1.2]} and by_case[0]["fp_peaks_after"] == [0.55]
    assert by_case[1]["found_only_before"] == [2] and by_case[1]["fp_peaks_after"] == [0.3]
    assert by_case[2]["gadolinium_before_after"] == ["NOT NEEDED", "RECOMMENDED"]
    with pytest.raises(ValueError, match="not the same pair"):
        mb.compare_runs(before, [{**before[0], "lesions": before[0]["lesions"][:1]}])


def test_a_case_list_names_the_pairs_to_rerun() -> None:
    """``--case-list``: indices and ranges, sorted and each once; without it ``--cases`` pairs from ``--first``; a
    malformed list is refused on the command line before any pair runs."""
    import pytest

    mb = load_bench("ms_benchmark")
    assert mb.case_indices("7,1-3, 2,10-10") == [1, 2, 3, 7, 10]
    assert mb.case_indices(None, 40, 3) == [40, 41, 42]
    for bad in ("", "a", "5-3", "-2", "1,,x"):
        with pytest.raises(ValueError, match="case-list"):
            mb.case_indices(bad)
    with pytest.raises(SystemExit):
        mb.main(["--phantom", "widened", "--case-list", "3-1"])


def test_rerun_pairs_replace_their_records_in_a_pooled_summary(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    """``--rerun``: the records of pairs run again replace those pairs' records of the pooled files (the others
    stay), are marked as reruns, and a rerun of a pair the pool does not hold is refused by name."""
    import json

    import pytest

    mb = load_bench("ms_benchmark")
    old = _cases_one_lesion_each(4, 2)  # cases 0-3, lesions of 0 and 1 found
    (tmp_path / "old.json").write_text(json.dumps({"summary": {}, "cases": old}))
    again = [{**c, "lesions": [{**le, "hits": []} for le in c["lesions"]]} for c in old if c["case"] == 1]
    (tmp_path / "rerun.jsonl").write_text("".join(json.dumps(c) + "\n" for c in again))
    pooled = mb.with_reruns(mb.load_results([tmp_path / "old.json"]), [tmp_path / "rerun.jsonl"])
    assert [r["case"] for r in pooled] == [0, 1, 2, 3]
    assert [r.get("rerun_of") for r in pooled] == [None, "--summarise", None, None]
    assert mb.summarise(mb.load_results([tmp_path / "old.json"]))["lesion_sensitivity_all"] == "0.500 (2/4)"
    assert mb.summarise(pooled)["lesion_sensitivity_all"] == "0.250 (1/4)"
    stray = [{**old[0], "case": 9}]
    (tmp_path / "stray.jsonl").write_text(json.dumps(stray[0]) + "\n")
    with pytest.raises(ValueError, match=r"case\(s\) \[9\]"):
        mb.with_reruns(pooled, [tmp_path / "stray.jsonl"])
    with pytest.raises(SystemExit):  # --rerun runs nothing
        mb.main(["--phantom", "widened", "--rerun", str(tmp_path / "rerun.jsonl")])


def test_an_engine_name_reads_the_records_of_the_default_engine_that_ran_it(tmp_path) -> None:  # noqa: ANN001
    """Workflow 1.22.0 made fusion the default engine: a record names the benchmark engine (``engine``) and the
    workflow's engine that ran (``lesion_engine``). ``classical`` reads the classical rows of a multi-engine run,
    the default engine's rows from before 1.22.0 (no ``lesion_engine``: the default was classical) and none of a
    later default run (fusion); ``fusion`` reads the later default run's rows; an old one-engine run (records that
    name no engine) gives all its rows, as before."""
    import json

    mb = load_bench("ms_benchmark")
    assert mb.engine_config("classical", None).lesion_engine == "classical"
    assert mb.engine_config("default", None).lesion_engine == "fusion"  # MSConfig()'s engine since 1.22.0
    one = _cases_one_lesion_each(2, 1)  # case 0 found, case 1 not
    multi = [{**c, "engine": e} for c in one for e in ("default", "fusion")]
    multi = [{**r, "lesions": [{**le, "hits": []} for le in r["lesions"]]} if r["engine"] == "fusion" else r
             for r in multi]  # the fusion rows find nothing, the default (classical) rows find case 0's lesion
    (tmp_path / "multi_1_21.json").write_text(json.dumps({"summary": {}, "cases": multi}))
    later = [{**c, "case": c["case"] + 10, "engine": "default", "lesion_engine": "fusion"} for c in one]
    (tmp_path / "default_1_22.jsonl").write_text("".join(json.dumps(c) + "\n" for c in later))
    (tmp_path / "old_one.json").write_text(json.dumps({"summary": {}, "cases": one}))

    def found(f: str, engine: str) -> str:
        return mb.summarise(mb.load_results([tmp_path / f], engine))["lesion_sensitivity_all"]

    assert found("multi_1_21.json", "classical") == found("multi_1_21.json", "default") == "0.500 (1/2)"
    assert found("multi_1_21.json", "fusion") == "0.000 (0/2)"
    assert mb.load_results([tmp_path / "default_1_22.jsonl"], "classical") == []
    assert [r["case"] for r in mb.load_results([tmp_path / "default_1_22.jsonl"], "fusion")] == [10, 11]
    assert [r["case"] for r in mb.load_results([tmp_path / "default_1_22.jsonl"])] == [10, 11]
    assert [r["case"] for r in mb.load_results([tmp_path / "old_one.json"], "learned")] == [0, 1]


def _input_case(monkeypatch):  # noqa: ANN001, ANN202
    """A 12 x 12 x 8 head of uniform noise (1 x 1 x 2 mm), whose brain mask (deepbet replaced) and truth are a
    known box; returns the benchmark module, the images, the box, the truth and a maker of fresh cases."""
    from neurorad.phantom.cases import PhantomCase
    from neurorad.preprocess import brain_extraction

    mb = load_bench("ms_benchmark")
    rng = np.random.default_rng(0)
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    head = {r: Volume(rng.uniform(1.0, 2.0, (12, 12, 8)).astype(np.float32), aff)
            for r in ("baseline_flair", "followup_flair")}
    box = np.zeros((12, 12, 8), bool)
    box[3:9, 3:9, 2:6] = True
    monkeypatch.setattr(brain_extraction, "extract_brain", lambda v, engine="deepbet": v.with_data(box))
    truth = {"truth_new": Volume(box.astype(np.int16), aff)}

    def case() -> PhantomCase:
        return PhantomCase("ms", 0, dict(head), dict(truth), {"lesions": []})

    return mb, head, box, truth, case


def test_input_skull_stripped_zeroes_what_lies_outside_the_brain_and_a_voxel_around_it(monkeypatch) -> None:
    """``--input``: the follow-up (or both images) skull-stripped before the workflow. Oracle by construction: a
    brain mask that is a known box; every voxel more than one voxel outside it becomes 0, the box and its one-voxel
    rim keep their values, the other image and the truth are untouched, and an unknown input is refused."""
    import pytest

    mb, head, box, truth, case = _input_case(monkeypatch)
    out = mb.with_input(case(), "followup-skull-stripped")
    fu = np.asarray(out.followup_flair.data)
    grown = np.zeros_like(box)  # the box grown by one voxel, 6-connected (scipy's default structure)
    for ax in range(3):
        for step in (-1, 1):
            grown |= np.roll(box, step, axis=ax)
    grown |= box
    assert np.array_equal(fu != 0, grown)
    assert np.array_equal(fu[grown], np.asarray(head["followup_flair"].data)[grown])
    assert out.baseline_flair is head["baseline_flair"] and out.truth_new is truth["truth_new"]
    both = mb.with_input(case(), "skull-stripped")
    assert np.array_equal(np.asarray(both.baseline_flair.data) != 0, grown)
    assert mb.with_input(case(), "as-simulated").followup_flair is head["followup_flair"]
    with pytest.raises(ValueError, match="unknown input"):
        mb.with_input(case(), "stripped")


def test_input_z_scored_and_in_plane_x2(monkeypatch) -> None:
    """``--input z-scored`` (or ``followup-z-scored``): mean 0, SD 1, the image's linear map (correlation 1), the
    other image untouched. ``in-plane-x2`` (a 512-matrix reconstruction): twice the pixels in-plane, the slices kept,
    and the truth on the finer follow-up grid with its volume and world centroid."""
    import pytest

    mb, head, _, truth, case = _input_case(monkeypatch)
    z = mb.with_input(case(), "followup-z-scored")
    assert z.baseline_flair is head["baseline_flair"]
    assert float(np.mean(z.followup_flair.data)) == pytest.approx(0, abs=1e-5)
    assert float(np.std(z.followup_flair.data)) == pytest.approx(1, abs=1e-4)
    zb = mb.with_input(case(), "z-scored")
    assert float(np.std(zb.baseline_flair.data)) == pytest.approx(1, abs=1e-4)
    assert np.corrcoef(np.ravel(zb.baseline_flair.data), np.ravel(head["baseline_flair"].data))[0, 1] > 0.9999
    up = mb.with_input(case(), "in-plane-x2")
    assert up.followup_flair.spatial_shape == (24, 24, 8)
    assert np.allclose(up.followup_flair.spacing_mm, (0.5, 0.5, 2.0))
    t0, t1 = truth["truth_new"], up.truth_new
    assert t1.same_grid(up.followup_flair)
    volume_mm3 = np.count_nonzero(t0.data) * t0.voxel_volume_mm3
    assert np.count_nonzero(t1.data) * t1.voxel_volume_mm3 == pytest.approx(volume_mm3)
    assert np.allclose(t0.voxel_to_world(np.argwhere(np.asarray(t0.data) > 0)).mean(0),
                       t1.voxel_to_world(np.argwhere(np.asarray(t1.data) > 0)).mean(0), atol=1e-6)


def _det(det: int, volume_mm3: float, peak: float = 0.9, fp: bool = False) -> dict:
    return {"det": det, "peak": peak, "kind": "new", "volume_mm3": volume_mm3, "fp": fp,
            "dropped_truth_lesion": False, "volume_measurable": True}


def test_the_msseg_criterion_follows_animas_definition() -> None:
    """Each lesion below is decided by one clause of the MSSEG challenges' criterion (Commowick et al., Sci Rep 2018;
    animaSegPerfAnalyzer's defaults alpha 0.1, beta 0.7, gamma 0.65, objects over 3 mm^3), worked out by hand."""
    mb = load_bench("ms_benchmark")
    case = {"case": 0, "slice_mm": 1.0, "truth_active": True, "lesions": [
        _lesion(100, 100.0, [(1, 15, 20.0)]),                 # 15 % covered by a detection 25 % outside: found
        _lesion(100, 100.0, [(2, 50, 1000.0)]),               # half covered by a detection 95 % outside: not found
        _lesion(100, 100.0, [(3, 60, 60.0), (4, 30, 300.0)]),  # the larger overlap (inside) already holds 60/90 >= 0.65
        _lesion(100, 100.0, [(5, 30, 30.0), (6, 60, 600.0)]),  # the larger overlap is 90 % outside: not found
        _lesion(100, 100.0, [(7, 10, 10.0)]),                 # exactly alpha: not found (more than alpha is needed)
        _lesion(100, 100.0, [(8, 11, 11.0)]),                 # just over alpha: found
        _lesion(3, 3.0, [(9, 3, 30.0)]),                      # 3 mm^3: not scored
        _lesion(100, 100.0, [(10, 90, 90.0)], found_peak=0.05),  # its only detection is under the operating point
        # two lesions in one detection of 200 voxels: 80 of them on truth, so it lies 60 % outside the truth (not
        # 80 % outside either lesion alone): both found
        _lesion(100, 100.0, [(13, 40, 200.0)]),
        _lesion(100, 100.0, [(13, 40, 200.0)]),
    ], "detections": [_det(d, v) for d, v in ((1, 20.0), (2, 1000.0), (3, 60.0), (4, 300.0), (5, 30.0), (6, 600.0),
                                              (7, 10.0), (8, 11.0), (9, 30.0))]
        + [_det(10, 90.0, peak=0.05), _det(11, 40.0, fp=True), _det(12, 3.0, fp=True), _det(13, 200.0)]}
    marks = mb.msseg_marks(case, 0.1)
    assert marks["lesions"] == [True, False, True, False, False, True, None, False, True, True]
    # the benchmark's own criterion (40 % covered) disagrees on the first four and the sixth
    assert ([mb._found(le, 0.1) for le in case["lesions"]]
            == [False, True, True, True, False, False, True, False, True, True])
    # detections, the test swapped: 1 covers 75 % of itself with lesion 1, but lesion 1 lies 85 % outside every
    # detection (> beta): not a true detection; 2 is 5 % on truth (not over alpha); 3: its lesion is 10 % outside;
    # 4 is 10 % on truth (not over alpha); 5: lesion 4 is 10 % outside; 6: 10 % on truth; 7 and 8: their lesions are
    # 90 % and 89 % outside; 9: on a lesion too small to score, so all outside; 10 is not reported (peak 0.05);
    # 11: on no lesion; 12: 3 mm^3, not scored; 13: 40 % on truth, each of its lesions 60 % outside every detection
    assert marks["detections"] == ["fp", "fp", "tp", "fp", "tp", "fp", "fp", "fp", "fp", "fp", "small", "tp"]
    s = mb.msseg_summary([case], 0.1)
    assert s["lesion_sensitivity"] == "0.556 (5/9)" and s["lesions_not_scored_small"] == 1
    assert s["lesion_ppv"] == "0.273 (3/11)" and s["false_positives_per_patient"] == 8.0
    # on 1 x 1 x 5 mm voxels the 3-voxel lesion holds 15 mm^3 and is scored
    thick = {**case, "lesions": [{**le, "volume_mm3": 5.0 * le["voxels"],
                                  "hits": [{**h, "volume_mm3": 5.0 * h["volume_mm3"]} for h in le["hits"]]}
                                 for le in case["lesions"]]}
    assert mb.msseg_marks(thick, 0.1)["lesions"][6] is False  # its detection lies 90 % outside it
    # a stable pair (no truth lesion, so no voxel size in its record): its detections are still scored
    stable = {"case": 1, "slice_mm": 1.0, "truth_active": False, "lesions": [],
              "detections": [_det(1, 40.0, fp=True), _det(2, 3.0, fp=True), _det(3, 50.0, peak=0.05, fp=True)]}
    assert mb.msseg_marks(stable, 0.1)["detections"] == ["fp", "small"]
    assert mb.msseg_summary([case, stable], 0.1)["false_positives_per_patient"] == 4.5


def test_the_msseg_criterion_read_off_a_record_equals_it_on_the_label_images() -> None:
    """``msseg_marks`` reads the overlap table off a benchmark record (covered voxels, detection volumes); here the
    table is also counted on the label images themselves, for random lesions and detections on a 1 x 1 x 2 mm grid,
    and both must give the same marks."""
    mb = load_bench("ms_benchmark")
    rng = np.random.default_rng(7)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    shape = (40, 40, 20)
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    outcomes: set[str] = set()
    for trial in range(8):
        truth = np.zeros(shape, np.int16)
        labels = np.zeros(shape, np.int16)
        for k in range(1, 5):
            c = rng.uniform(5, 35, 3) * [1, 1, 0.5]
            r = rng.uniform(1.0, 4.0)
            truth[((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 * 4) <= r * r] = k
        centres = [np.argwhere(truth == k).mean(axis=0) for k in range(1, 5) if (truth == k).any()]
        for k in range(1, 6):
            # most detections near a lesion, off its centre by up to 2 voxels, some anywhere
            c = (centres[k % len(centres)] + rng.uniform(-2, 2, 3) if k <= 4 and centres
                 else rng.uniform(5, 35, 3) * [1, 1, 0.5])
            r = rng.uniform(1.5, 5.0)
            labels[(((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 * 4) <= r * r) & (labels == 0)] = k
        present = [k for k in range(1, 5) if (truth == k).any()]
        peaks = {k: float(rng.choice([0.05, 0.5, 0.9])) for k in range(1, 6) if (labels == k).any()}
        rec = mb.score_result(trial, {"slice_thickness_mm": [2.0, 2.0]}, _case(truth, affine, present),
                              _result(labels, affine, peaks), 0.0, 0.0)
        got = mb.msseg_marks(rec, 0.1)
        # the same criterion on the images: reported detections only, objects over 3 mm^3 (2 voxels of 2 mm^3)
        reported = labels * np.isin(labels, [k for k, p in peaks.items() if p >= 0.1])
        t_ids = [k for k in present if (truth == k).sum() * 2.0 > 3.0]
        d_ids = [k for k in peaks if peaks[k] >= 0.1 and (labels == k).sum() * 2.0 > 3.0]
        t_in = np.isin(truth, t_ids)
        d_in = np.isin(reported, d_ids)
        table = {i: {j: float(((truth == i) & (reported == j)).sum()) for j in d_ids} for i in t_ids}
        d_out = {j: float(((reported == j) & ~t_in).sum()) / (reported == j).sum() for j in d_ids}
        t_out = {i: float(((truth == i) & ~d_in).sum()) / (truth == i).sum() for i in t_ids}
        expect_l = [mb._msseg_tester({j: n for j, n in table[i].items() if n}, d_out, float((truth == i).sum()),
                                     0.1, 0.7, 0.65) if i in t_ids else None for i in present]
        expect_d = ["small" if j not in d_ids else
                    ("tp" if mb._msseg_tester({i: table[i][j] for i in t_ids if table[i][j]}, t_out,
                                              float((reported == j).sum()), 0.1, 0.7, 0.65) else "fp")
                    for j in sorted(peaks) if peaks[j] >= 0.1]
        assert got["lesions"] == expect_l
        assert got["detections"] == expect_d
        outcomes.update(map(str, got["lesions"] + got["detections"]))
    # the draws reach every outcome of both tests
    assert outcomes >= {"True", "False", "tp", "fp"}
