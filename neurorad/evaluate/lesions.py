"""Lesion-wise detection metrics: components, 40 % coverage rule, size strata, patient level, lesion ROC.

Lesions are 26-connected components (:func:`neurorad.quantify.components.connected_components`).

Detection rule (WMH and microbleed validation studies): a true lesion is *detected* when at least
``coverage`` (default 0.40) of its voxels are covered by the prediction. A predicted lesion is
*correct* when it overlaps the truth and at least ``pred_coverage`` of its voxels lie inside the
truth (default 0: any overlap); otherwise it is a false-positive lesion. The microbleed study
(PAPERS.md C4) instead calls a predicted lesion a true positive when it overlaps *more than*
``pred_truth_coverage`` (0.40 there) of one true lesion's voxels: set ``pred_truth_coverage`` (default
None: not applied) and a predicted lesion is correct only when it also meets that rule.

Presets of the papers' protocols (:data:`PROTOCOLS`): ``wmh`` (Shan et al., PAPERS.md B4: a true lesion
is found when >= 40 % of its voxels are predicted; strata by volume) and ``cmb`` (PAPERS.md C4: a
prediction is a true positive when it overlaps > 40 % of a true lesion; strata by diameter 2-5 and
5-10 mm). Connectivity (26 by default; neither paper states one) is a parameter of every function.

Dice by size stratum (``dice_<stratum>`` in the metrics): the truth voxels of the true lesions in the
stratum against the predicted lesions that touch one of them plus the unmatched predicted lesions of
that stratum's size, 2 |P_s & T_s| / (|P_s| + |T_s|) (NaN when both are empty).

* lesion recall = detected true lesions / true lesions (NaN when the case has no true lesion)
* lesion precision = correct predicted lesions / predicted lesions (NaN when nothing is predicted)
* lesion F1 = 2 P R / (P + R) (NaN when P or R is NaN; 0 when both are 0)

Size strata are computed from each lesion's volume in mm^3 (voxel count x voxel volume):
``volume`` strata small < 20, medium 20-150, large >= 150 mm^3 (WMH study; every stratum is the
half-open interval lo <= value < hi); ``diameter`` strata
from the equivalent-sphere diameter d = (6 V / pi)^(1/3): 2-5 mm and 5-10 mm (microbleed study);
lesions outside every diameter stratum are counted only in the totals.

Patient level (per case): TP when the truth has lesions and at least one is detected (with
``pred_truth_coverage``: at least one predicted lesion is correct, the microbleed study's rule), FN when
the truth has lesions and none is detected, FP when the truth has none and the prediction has at
least one lesion, TN when neither has any. :func:`patient_level_rates` turns a list of those
into TPR, FPR, FNR.

BraTS-style lesion-wise metrics (:func:`brats_lesionwise`) follow panoptica / brats-evaluation
(BraTS 2023+): 26-connected instances, one-to-one maximum bipartite matching on instance Dice
(any overlap, Hungarian algorithm), per-match Dice and pooled HD95; ``lesionwise_dice`` is the
sum of matched Dice over TP + FP + FN (the BraTS 2023 lesion-wise score, without the
ground-truth dilation step of the legacy BraTS 2023 script), ``lesionwise_hd95_mm`` the same with
``hd95_penalty_mm`` (374 mm) for every unmatched lesion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix

from neurorad.evaluate._checks import as_binary, check_probability, check_same_shape, check_spacing
from neurorad.evaluate.segmentation import bounding_box, surface_metrics
from neurorad.quantify.components import connected_components, label_voxel_counts

VOLUME_STRATA_MM3: dict[str, tuple[float, float]] = {
    "small": (0.0, 20.0), "medium": (20.0, 150.0), "large": (150.0, np.inf),
}
DIAMETER_STRATA_MM: dict[str, tuple[float, float]] = {"d2_5mm": (2.0, 5.0), "d5_10mm": (5.0, 10.0)}

#: The papers' lesion-wise protocols (PAPERS.md B4 and C4): keyword arguments of :func:`lesion_detection`.
PROTOCOLS: dict[str, dict[str, object]] = {
    "wmh": {"coverage": 0.40, "pred_truth_coverage": None},
    "cmb": {"coverage": 0.40, "pred_truth_coverage": 0.40},
}

LESION_COLUMNS = (
    "n_true_lesions", "n_pred_lesions", "n_detected_lesions", "n_fp_lesions",
    "lesion_precision", "lesion_recall", "lesion_f1", "patient_outcome",
)


def equivalent_diameter_mm(volume_mm3: np.ndarray) -> np.ndarray:
    """Diameter of the sphere with the given volume: (6 V / pi)^(1/3)."""
    return np.cbrt(6.0 * np.asarray(volume_mm3, dtype=float) / np.pi)


@dataclass
class LesionResult:
    """Per-case lesion-wise result; ``metrics`` is the flat dict written to metrics.csv."""

    metrics: dict[str, float]
    true_volumes_mm3: np.ndarray
    true_detected: np.ndarray
    pred_volumes_mm3: np.ndarray
    pred_correct: np.ndarray
    true_mean_prob: np.ndarray | None = None
    pred_mean_prob: np.ndarray | None = None
    patient_outcome: str = "TN"
    extras: dict[str, object] = field(default_factory=dict)


def _overlap_matrix(lab_t: np.ndarray, n_t: int, lab_p: np.ndarray, n_p: int) -> np.ndarray:
    """Dense (n_t+1) x (n_p+1) voxel counts of label pairs (row/col 0 = background)."""
    both = (lab_t > 0) | (lab_p > 0)
    m = coo_matrix(
        (np.ones(int(np.count_nonzero(both)), dtype=np.int64), (lab_t[both], lab_p[both])),
        shape=(n_t + 1, n_p + 1),
    )
    return m.toarray()


def _strata(volumes: np.ndarray, flags: np.ndarray, edges: dict[str, tuple[float, float]], diameter: bool):
    """Per stratum (count, count with flag); a stratum is the half-open interval lo <= value < hi."""
    vals = equivalent_diameter_mm(volumes) if diameter else volumes
    out = {}
    for name, (lo, hi) in edges.items():
        inside = (vals >= lo) & (vals < hi)
        out[name] = (int(np.count_nonzero(inside)), int(np.count_nonzero(flags & inside)))
    return out


def lesion_detection(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float] | None = None,
    prob: np.ndarray | None = None,
    coverage: float = 0.40,
    pred_coverage: float = 0.0,
    connectivity: int = 26,
    volume_strata_mm3: dict[str, tuple[float, float]] | None = None,
    diameter_strata_mm: dict[str, tuple[float, float]] | None = None,
    pred_truth_coverage: float | None = None,
) -> LesionResult:
    """Lesion-wise detection of one case (rules in the module docstring).

    ``metrics`` holds :data:`LESION_COLUMNS` (``patient_outcome`` coded TP=1, FN=2, FP=3, TN=4 is
    kept as a string in ``patient_outcome``) plus per-stratum counts
    ``n_true_<s>``, ``n_detected_<s>``, ``recall_<s>``, ``n_pred_<s>``, ``n_fp_<s>``.
    Empty truth and prediction give zero counts, NaN precision/recall/F1 and outcome TN.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError("coverage must be in (0, 1]")
    pred = as_binary(pred, "prediction")
    truth = as_binary(truth, "truth")
    if prob is not None:
        prob = check_probability(prob)
    check_same_shape(("prediction", pred), ("truth", truth), ("probability", prob))
    sp = check_spacing(spacing_mm, pred.ndim)
    vox_mm3 = float(np.prod(sp))
    box = bounding_box(pred, truth, margin=1)
    if box is None:
        lab_t = lab_p = np.zeros((1, 1, 1), np.int32)
        n_t = n_p = 0
    else:
        lab_t, n_t = connected_components(truth[box], connectivity)
        lab_p, n_p = connected_components(pred[box], connectivity)
    size_t = label_voxel_counts(lab_t, n_t)
    size_p = label_voxel_counts(lab_p, n_p)
    ov = _overlap_matrix(lab_t, n_t, lab_p, n_p)
    covered_t = ov[1:, 1:].sum(axis=1)  # voxels of each true lesion covered by any prediction
    inside_p = ov[1:, 1:].sum(axis=0)  # voxels of each predicted lesion inside the truth
    detected = covered_t >= coverage * size_t - 1e-9 if n_t else np.zeros(0, bool)
    correct = (inside_p > 0) & (inside_p >= pred_coverage * size_p - 1e-9) if n_p else np.zeros(0, bool)
    if pred_truth_coverage is not None and n_p:
        # PAPERS.md C4: the prediction overlaps more than this share of one true lesion
        share = ov[1:, 1:] / np.maximum(size_t[:, None], 1) if n_t else np.zeros((0, n_p))
        correct &= (share > pred_truth_coverage + 1e-12).any(axis=0) if n_t else False
    n_det, n_corr = int(detected.sum()), int(correct.sum())
    recall = n_det / n_t if n_t else float("nan")
    precision = n_corr / n_p if n_p else float("nan")
    if np.isnan(recall) or np.isnan(precision):
        f1 = float("nan")
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    if n_t:
        # microbleed protocol: the patient is a TP when at least one predicted lesion is correct (C4)
        found = n_corr if pred_truth_coverage is not None else n_det
        outcome = "TP" if found else "FN"
    else:
        outcome = "FP" if n_p else "TN"
    vol_t, vol_p = size_t * vox_mm3, size_p * vox_mm3
    metrics: dict[str, float] = {
        "n_true_lesions": float(n_t), "n_pred_lesions": float(n_p),
        "n_detected_lesions": float(n_det), "n_fp_lesions": float(n_p - n_corr),
        "lesion_precision": precision, "lesion_recall": recall, "lesion_f1": f1,
    }
    strata = ((volume_strata_mm3 or VOLUME_STRATA_MM3, False), (diameter_strata_mm or DIAMETER_STRATA_MM, True))
    for edges, diam in strata:
        st_t = _strata(vol_t, detected, edges, diam)
        st_p = _strata(vol_p, ~correct, edges, diam)
        for name in edges:
            nt, nd = st_t[name]
            npred, nfp = st_p[name]
            metrics[f"n_true_{name}"] = float(nt)
            metrics[f"n_detected_{name}"] = float(nd)
            metrics[f"recall_{name}"] = nd / nt if nt else float("nan")
            metrics[f"n_pred_{name}"] = float(npred)
            metrics[f"n_fp_{name}"] = float(nfp)
    for edges, diam in strata:
        metrics.update(_stratum_dice(ov, vol_t, vol_p, edges, diam))
    mean_t = mean_p = None
    if prob is not None:
        pbox = prob[box] if box is not None else np.zeros((1, 1, 1), np.float32)
        mean_t = _mean_by_label(pbox, lab_t, n_t, size_t)
        mean_p = _mean_by_label(pbox, lab_p, n_p, size_p)
    return LesionResult(metrics, vol_t, detected, vol_p, correct, mean_t, mean_p, outcome)


def _stratum_dice(ov: np.ndarray, vol_t: np.ndarray, vol_p: np.ndarray, edges: dict[str, tuple[float, float]],
                  diameter: bool) -> dict[str, float]:
    """``dice_<stratum>`` from the label-pair overlap matrix (rule in the module docstring)."""
    vt = equivalent_diameter_mm(vol_t) if diameter else vol_t
    vp = equivalent_diameter_mm(vol_p) if diameter else vol_p
    pair = ov[1:, 1:]
    size_t, size_p = ov[1:, :].sum(axis=1), ov[:, 1:].sum(axis=0)
    touches = pair > 0
    matched_p = touches.any(axis=0) if pair.size else np.zeros(len(vol_p), bool)
    out = {}
    for name, (lo, hi) in edges.items():
        in_t = (vt >= lo) & (vt < hi)
        in_p = (touches[in_t].any(axis=0) if pair.size else np.zeros(len(vol_p), bool)) | (
            ~matched_p & (vp >= lo) & (vp < hi))
        inter = float(pair[np.ix_(in_t, in_p)].sum()) if pair.size else 0.0
        den = float(size_t[in_t].sum() + size_p[in_p].sum())
        out[f"dice_{name}"] = 2 * inter / den if den else float("nan")
    return out


def _mean_by_label(values: np.ndarray, labels: np.ndarray, n: int, sizes: np.ndarray) -> np.ndarray:
    if n == 0:
        return np.zeros(0)
    sums = np.bincount(labels.ravel(), weights=values.ravel().astype(np.float64), minlength=n + 1)[1:]
    return sums / sizes


def patient_level_rates(outcomes: Sequence[str]) -> dict[str, float]:
    """Patient-level TPR = TP/(TP+FN), FNR = FN/(TP+FN), FPR = FP/(FP+TN) over cases' outcomes."""
    o = list(outcomes)
    tp, fn, fp, tn = (o.count(k) for k in ("TP", "FN", "FP", "TN"))
    return {
        "patient_tp": tp, "patient_fn": fn, "patient_fp": fp, "patient_tn": tn,
        "patient_tpr": tp / (tp + fn) if tp + fn else float("nan"),
        "patient_fnr": fn / (tp + fn) if tp + fn else float("nan"),
        "patient_fpr": fp / (fp + tn) if fp + tn else float("nan"),
    }


def lesion_scores(results: Sequence[LesionResult]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled lesion candidates for a lesion-level ROC: (mean probability, is-true-lesion).

    Candidates are every predicted lesion (label 1 when correct, 0 when a false positive; score =
    its mean probability) plus every missed true lesion (label 1; score = the mean probability
    inside it), so missed lesions lower the curve. Needs results computed with ``prob``.
    """
    scores, labels = [], []
    for r in results:
        if r.pred_mean_prob is None or r.true_mean_prob is None:
            raise ValueError("lesion_scores needs lesion_detection(..., prob=...) results")
        scores += [r.pred_mean_prob, r.true_mean_prob[~r.true_detected]]
        labels += [r.pred_correct.astype(int), np.ones(int((~r.true_detected).sum()), int)]
    return np.concatenate(scores) if scores else np.zeros(0), np.concatenate(labels) if labels else np.zeros(0, int)


def lesion_roc(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray | float]:
    """Lesion-level ROC (sklearn ``roc_curve``) and its AUC; NaN AUC with one class only."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return {"fpr": np.zeros(0), "tpr": np.zeros(0), "thresholds": np.zeros(0), "auc": float("nan")}
    fpr, tpr, thr = roc_curve(labels, scores)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thr, "auc": float(roc_auc_score(labels, scores))}


def brats_lesionwise(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float] | None = None,
    connectivity: int = 26,
    hd95_penalty_mm: float = 374.0,
) -> dict[str, float]:
    """BraTS-style (panoptica) lesion-wise metrics of one binary region; see the module docstring.

    Returns ``tp, fp, fn, precision, recall, f1`` (recognition quality), ``sq_dsc`` and
    ``sq_hd95_mm`` (mean over matched pairs; NaN without matches), ``lesionwise_dice``,
    ``lesionwise_hd95_mm``. Both empty: counts 0, lesionwise_dice 1, lesionwise_hd95 0.
    """
    pred = as_binary(pred, "prediction")
    truth = as_binary(truth, "truth")
    check_same_shape(("prediction", pred), ("truth", truth))
    sp = check_spacing(spacing_mm, pred.ndim)
    box = bounding_box(pred, truth, margin=1)
    if box is None:
        return {"tp": 0.0, "fp": 0.0, "fn": 0.0, "precision": float("nan"), "recall": float("nan"),
                "f1": float("nan"), "sq_dsc": float("nan"), "sq_hd95_mm": float("nan"),
                "lesionwise_dice": 1.0, "lesionwise_hd95_mm": 0.0}
    lab_t, n_t = connected_components(truth[box], connectivity)
    lab_p, n_p = connected_components(pred[box], connectivity)
    size_t, size_p = label_voxel_counts(lab_t, n_t), label_voxel_counts(lab_p, n_p)
    ov = _overlap_matrix(lab_t, n_t, lab_p, n_p)[1:, 1:].astype(float)
    dsc = 2 * ov / (size_t[:, None] + size_p[None, :]) if n_t and n_p else np.zeros((n_t, n_p))
    pairs: list[tuple[int, int]] = []
    if n_t and n_p:
        rows, cols = linear_sum_assignment(dsc, maximize=True)
        pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if dsc[r, c] > 0]
    tp = len(pairs)
    fp, fn = n_p - tp, n_t - tp
    dices, hds = [], []
    obj_t, obj_p = ndimage.find_objects(lab_t), ndimage.find_objects(lab_p)
    for r, c in pairs:
        st, sp_ = obj_t[r], obj_p[c]
        sub = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(st, sp_, strict=True))
        a, b = (lab_p[sub] == c + 1), (lab_t[sub] == r + 1)
        dices.append(dsc[r, c])
        hds.append(surface_metrics(a, b, sp, hd95_method="pooled").hd95_mm)
    prec = tp / n_p if n_p else float("nan")
    rec = tp / n_t if n_t else float("nan")
    f1 = tp / (tp + 0.5 * fp + 0.5 * fn) if tp + fp + fn else float("nan")
    denom = tp + fp + fn
    return {
        "tp": float(tp), "fp": float(fp), "fn": float(fn), "precision": prec, "recall": rec, "f1": f1,
        "sq_dsc": float(np.mean(dices)) if dices else float("nan"),
        "sq_hd95_mm": float(np.mean(hds)) if hds else float("nan"),
        "lesionwise_dice": float(np.sum(dices)) / denom,
        "lesionwise_hd95_mm": (float(np.sum(hds)) + hd95_penalty_mm * (fp + fn)) / denom,
    }
