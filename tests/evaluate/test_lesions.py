"""Lesion-wise detection: the 40 % coverage rule, strata, patient level and lesion ROC, on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from neurorad.evaluate.lesions import (
    equivalent_diameter_mm,
    lesion_detection,
    lesion_roc,
    lesion_scores,
    patient_level_rates,
)


def _case():
    truth = np.zeros((40, 40, 40), bool)
    pred = np.zeros_like(truth)
    truth[2:7, 2:7, 2:6] = True  # A: 100 voxels, 40 covered -> detected (exactly 40 %)
    pred[2:7, 2:7, 2:4] = True  # 50 voxels: 40 inside?  rows 2:4 of 2:6 -> 5*5*2 = 50 covered
    truth[20:25, 20:25, 20:24] = True  # B: 100 voxels, 35 covered -> missed
    pred[20:25, 20:25, 20:21] = True  # 25 voxels
    pred[20:22, 20:25, 21:22] = True  # +10 -> 35, connected to the slab above
    truth[30:33, 30:33, 30:33] = True  # C: 27 voxels, untouched -> missed
    pred[10:12, 30:32, 30:32] = True  # false positive, 8 voxels
    truth[12, 12, 12] = True  # D: one voxel, diagonal neighbour predicted -> 26-connected but no overlap
    pred[13, 13, 13] = True  # FP (touches D only diagonally; no shared voxel)
    return pred, truth


def test_coverage_rule_and_counts():
    pred, truth = _case()
    r = lesion_detection(pred, truth, (1, 1, 1))
    m = r.metrics
    assert m["n_true_lesions"] == 4 and m["n_pred_lesions"] == 4
    # A is covered 50/100 >= 40 %, B 35/100 < 40 %, C and D 0
    assert m["n_detected_lesions"] == 1
    assert m["n_fp_lesions"] == 2
    assert m["lesion_recall"] == pytest.approx(1 / 4)
    assert m["lesion_precision"] == pytest.approx(2 / 4)
    assert m["lesion_f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert r.patient_outcome == "TP"
    # raising the coverage to 60 % loses A
    assert lesion_detection(pred, truth, coverage=0.6).metrics["n_detected_lesions"] == 0
    # exactly 40 % counts (>=)
    t2 = np.zeros((10, 10, 10), bool)
    t2[0:5, 0:2, 0:1] = True
    p2 = np.zeros_like(t2)
    p2[0:2, 0:2, 0:1] = True
    assert lesion_detection(p2, t2).metrics["n_detected_lesions"] == 1


def test_strata_with_spacing():
    truth = np.zeros((30, 30, 30), bool)
    truth[1:3, 1:3, 1:3] = True  # 8 voxels x 2 mm^3 = 16 mm^3 -> small
    truth[10:15, 10:15, 10:13] = True  # 75 voxels x 2 = 150 mm^3 -> large (half-open)
    truth[20:24, 20:24, 20:24] = True  # 64 x 2 = 128 -> medium
    r = lesion_detection(truth, truth, (1.0, 1.0, 2.0))
    m = r.metrics
    assert (m["n_true_small"], m["n_true_medium"], m["n_true_large"]) == (1, 1, 1)
    d = equivalent_diameter_mm(np.array([16.0, 150.0, 128.0]))
    assert m["n_true_d2_5mm"] == np.sum((d >= 2) & (d < 5))
    assert m["n_true_d5_10mm"] == np.sum((d >= 5) & (d < 10))
    assert equivalent_diameter_mm(4 / 3 * np.pi * 8) == pytest.approx(4.0)
    assert m["recall_small"] == 1.0


def test_empty_and_patient_level():
    z = np.zeros((8, 8, 8), bool)
    one = z.copy()
    one[2:4, 2:4, 2:4] = True
    r = lesion_detection(z, z)
    assert r.patient_outcome == "TN" and np.isnan(r.metrics["lesion_recall"]) and np.isnan(r.metrics["lesion_f1"])
    assert lesion_detection(one, z).patient_outcome == "FP"
    assert lesion_detection(z, one).patient_outcome == "FN"
    rates = patient_level_rates(["TP", "TP", "FN", "FP", "TN", "TN", "TN"])
    assert rates["patient_tpr"] == pytest.approx(2 / 3)
    assert rates["patient_fnr"] == pytest.approx(1 / 3)
    assert rates["patient_fpr"] == pytest.approx(1 / 4)


def test_lesion_roc():
    pred, truth = _case()
    prob = np.where(pred, 0.7, 0.05).astype(np.float32)
    prob[10:12, 30:32, 30:32] = 0.55  # the FP lesion gets a lower mean probability
    r = lesion_detection(pred, truth, prob=prob)
    s, y = lesion_scores([r])
    # 4 predicted lesions (2 correct) + 3 missed true lesions (B, C, D)
    assert len(s) == 7 and y.sum() == 5
    roc = lesion_roc(s, y)
    assert roc["auc"] == pytest.approx(roc_auc_score(y, s))
    with pytest.raises(ValueError):
        lesion_scores([lesion_detection(pred, truth)])


# ---------------------------------------------------------------- the papers' protocols (PAPERS.md B4, C4)
def test_cmb_rule_prediction_must_cover_more_than_40_percent_of_a_true_lesion():
    truth = np.zeros((30, 30, 30), bool)
    truth[0:10, 0:1, 0:1] = True  # 10 voxels
    truth[20:30, 0:1, 0:1] = True  # 10 voxels
    pred = np.zeros_like(truth)
    pred[0:4, 0:1, 0:1] = True  # exactly 40 % of the first: not > 40 %
    pred[20:25, 0:1, 0:1] = True  # 50 % of the second
    pred[10:12, 10:12, 10:12] = True  # unrelated
    wmh = lesion_detection(pred, truth)
    cmb = lesion_detection(pred, truth, pred_truth_coverage=0.40)
    assert wmh.metrics["n_detected_lesions"] == 2 and wmh.metrics["n_fp_lesions"] == 1  # >= 40 % rule
    assert cmb.metrics["n_fp_lesions"] == 2 and cmb.pred_correct.tolist() == [False, False, True]  # raster order
    assert cmb.metrics["lesion_precision"] == pytest.approx(1 / 3)
    # patient level under the microbleed rule: TP only with a correct prediction
    only_40 = np.zeros_like(truth)
    only_40[0:4, 0:1, 0:1] = True
    assert lesion_detection(only_40, truth).patient_outcome == "TP"
    assert lesion_detection(only_40, truth, pred_truth_coverage=0.40).patient_outcome == "FN"


def test_dice_by_size_stratum():
    truth = np.zeros((40, 40, 40), bool)
    truth[0:2, 0:2, 0:2] = True  # 8 mm3: small
    truth[10:14, 10:14, 10:14] = True  # 64: medium
    pred = np.zeros_like(truth)
    pred[0:2, 0:2, 0:1] = True  # 4 of the small one
    pred[10:14, 10:14, 10:16] = True  # 96 voxels touching the medium one (64 inside)
    pred[30:32, 30:32, 30:32] = True  # unmatched 8 mm3: counted in "small"
    m = lesion_detection(pred, truth).metrics
    assert m["dice_small"] == pytest.approx(2 * 4 / (8 + 4 + 8))
    assert m["dice_medium"] == pytest.approx(2 * 64 / (64 + 96))
    assert np.isnan(m["dice_large"])


def _independent_counts(pred, truth, connectivity, cmb):
    """An independent implementation with scikit-image labelling and explicit loops (test oracle)."""
    from skimage.measure import label

    conn = {6: 1, 18: 2, 26: 3}[connectivity]
    lt, lp = label(truth, connectivity=conn), label(pred, connectivity=conn)
    detected = sum((pred[lt == i].mean() >= 0.4) for i in range(1, lt.max() + 1))
    correct = 0
    for j in range(1, lp.max() + 1):
        pj = lp == j
        shares = [np.logical_and(pj, lt == i).sum() / (lt == i).sum() for i in range(1, lt.max() + 1)]
        correct += (max(shares, default=0) > 0.4) if cmb else (max(shares, default=0) > 0)
    return lt.max(), lp.max(), detected, correct


@pytest.mark.parametrize(("seed", "connectivity"), [(0, 6), (1, 26)])
def test_detection_counts_match_an_independent_implementation(seed, connectivity):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    truth = ndimage.gaussian_filter(rng.random((32, 32, 32)), 1.5) > 0.56
    pred = ndimage.gaussian_filter(rng.random((32, 32, 32)), 1.5) * 0.5 + truth * 0.1 > 0.32
    for cmb in (False, True):
        r = lesion_detection(pred, truth, connectivity=connectivity, pred_truth_coverage=0.4 if cmb else None)
        n_t, n_p, det, corr = _independent_counts(pred, truth, connectivity, cmb)
        assert n_t > 5 and n_p > 5
        assert (r.metrics["n_true_lesions"], r.metrics["n_pred_lesions"]) == (n_t, n_p)
        assert r.metrics["n_detected_lesions"] == det
        assert r.metrics["n_pred_lesions"] - r.metrics["n_fp_lesions"] == corr


def test_protocol_summary_pools_as_the_papers():
    from neurorad.evaluate.case import evaluate_case, protocol_summary

    truth = np.zeros((20, 20, 20), bool)
    truth[2:5, 2:5, 2:5] = True
    pred = truth.copy()
    pred[10:12, 10:12, 10:12] = True  # one FP lesion
    empty = np.zeros_like(truth)
    rows, res = [], []
    for p, t in ((pred, truth), (empty, truth), (pred & ~truth, empty), (empty, empty)):
        row, r = evaluate_case(p, t, prob=(p * 0.9).astype(np.float32), pred_truth_coverage=0.4)
        rows.append(row)
        res.append(r)
    s = protocol_summary(rows, res)
    assert (s["patient_tp"], s["patient_fn"], s["patient_fp"], s["patient_tn"]) == (1, 1, 1, 1)
    assert s["patient_fpr"] == 0.5 and s["patient_fnr"] == 0.5
    assert s["lesion_recall_data"] == pytest.approx(1 / 2)  # 1 of 2 true lesions
    assert s["lesion_precision_data"] == pytest.approx(1 / 3)  # 1 correct of 3 predicted
    assert s["detection_medium"] == pytest.approx(1 / 2)  # 27 mm3 lesions: one of two found
    assert s["pixel_dice"] == pytest.approx(np.nanmean([2 * 27 / (27 + 35), 0.0, 0.0, 1.0]))
    assert 0.0 <= s["lesion_auc"] <= 1.0
