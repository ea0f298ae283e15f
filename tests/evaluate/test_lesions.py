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
