"""How ``bench/ms_benchmark.py`` scores a detection of a lesion the independent simulator drew into the image but
dropped from its truth (no follow-up voxel is half lesion): it found something that is there, so it is neither a
true nor a false positive, and a pair whose only new lesions were dropped is neither active nor stable."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from neurorad.image.volume import Volume
from tests._bench import load_bench


def _result(labels: np.ndarray, affine: np.ndarray, peaks: dict[int, float]) -> SimpleNamespace:
    lesions = [SimpleNamespace(id=k, max_score=p, kind="new", volume_mm3=float((labels == k).sum()))
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
