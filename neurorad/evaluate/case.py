"""One row of ``metrics.csv``: every per-patient metric of one case."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from neurorad.evaluate.calibration import calibration_metrics
from neurorad.evaluate.lesions import (
    LESION_COLUMNS,
    LesionResult,
    brats_lesionwise,
    lesion_detection,
    lesion_roc,
    lesion_scores,
    patient_level_rates,
)
from neurorad.evaluate.segmentation import SEGMENTATION_COLUMNS, segmentation_metrics

#: first columns of metrics.csv after ``case``, in this order
METRIC_COLUMNS = SEGMENTATION_COLUMNS + tuple(c for c in LESION_COLUMNS if c != "patient_outcome") + (
    "patient_outcome", "auroc",
)


def evaluate_case(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float] | None = None,
    prob: np.ndarray | None = None,
    brain_mask: np.ndarray | None = None,
    coverage: float = 0.40,
    brats: bool = False,
    n_bins: int = 15,
    connectivity: int = 26,
    pred_truth_coverage: float | None = None,
) -> tuple[dict[str, float | str], LesionResult]:
    """All metrics of one case: segmentation, lesion-wise, calibration (with ``prob``, on the brain
    mask voxels or the whole image) and, with ``brats``, BraTS-style lesion-wise columns ``brats_*``.

    Returns (row dict in :data:`METRIC_COLUMNS` order then the rest, lesion result for pooling).
    """
    seg = segmentation_metrics(pred, truth, spacing_mm, prob=prob, brain_mask=brain_mask)
    les = lesion_detection(pred, truth, spacing_mm, prob=prob, coverage=coverage, connectivity=connectivity,
                           pred_truth_coverage=pred_truth_coverage)
    row: dict[str, float | str] = {k: seg[k] for k in SEGMENTATION_COLUMNS}
    row.update({k: les.metrics[k] for k in LESION_COLUMNS if k != "patient_outcome"})
    row["patient_outcome"] = les.patient_outcome
    row["auroc"] = seg["auroc"]
    row.update({k: v for k, v in seg.items() if k not in row})
    row.update({k: v for k, v in les.metrics.items() if k not in row})
    if prob is not None:
        row.update(calibration_metrics(prob, truth, brain_mask, n_bins))
    if brats:
        row.update({f"brats_{k}": v for k, v in brats_lesionwise(pred, truth, spacing_mm, connectivity).items()})
    return row, les


def protocol_summary(rows: Sequence[Mapping[str, object]], results: Sequence[LesionResult]) -> dict[str, float]:
    """The papers' headline figures over a data set (PAPERS.md B4, C4, C5) from per-case rows of
    :func:`evaluate_case` and their lesion results:

    * ``pixel_precision``, ``pixel_recall``, ``pixel_dice``: per patient, then the arithmetic mean
      (cases with NaN, e.g. nothing predicted, are left out of that mean);
    * ``lesion_precision_data`` / ``lesion_recall_data``: correct predicted / predicted and detected true /
      true lesions pooled over the data set; ``lesion_precision_patient`` / ``..._recall_patient``: per
      patient then averaged;
    * ``detection_<stratum>`` (pooled detected / true lesions) and ``dice_<stratum>`` (mean over patients
      with lesions of that stratum) for every stratum in the rows;
    * patient-level TP/TN/FP/FN with TPR/FPR/FNR (:func:`patient_level_rates`);
    * ``lesion_auc``: lesion-level ROC AUC by each lesion's mean probability (NaN without probabilities).
    """
    import pandas as pd

    df = pd.DataFrame(list(rows))
    out: dict[str, float] = {"n_cases": float(len(df))}
    for name, col in (("pixel_precision", "ppv"), ("pixel_recall", "sensitivity"), ("pixel_dice", "dice")):
        out[name] = float(pd.to_numeric(df[col], errors="coerce").mean())
    tot = {k: float(df[k].sum()) for k in ("n_true_lesions", "n_pred_lesions", "n_detected_lesions", "n_fp_lesions")}
    n_corr = tot["n_pred_lesions"] - tot["n_fp_lesions"]
    out["lesion_precision_data"] = n_corr / tot["n_pred_lesions"] if tot["n_pred_lesions"] else float("nan")
    out["lesion_recall_data"] = tot["n_detected_lesions"] / tot["n_true_lesions"] if tot["n_true_lesions"] else float(
        "nan")
    out["lesion_precision_patient"] = float(pd.to_numeric(df["lesion_precision"], errors="coerce").mean())
    out["lesion_recall_patient"] = float(pd.to_numeric(df["lesion_recall"], errors="coerce").mean())
    for col in df.columns:
        if col.startswith("n_true_") and col != "n_true_lesions":
            s = col[len("n_true_"):]
            nt = float(df[col].sum())
            out[f"detection_{s}"] = float(df[f"n_detected_{s}"].sum()) / nt if nt else float("nan")
            if f"dice_{s}" in df:
                out[f"dice_{s}"] = float(pd.to_numeric(df.loc[df[col] > 0, f"dice_{s}"], errors="coerce").mean())
    out.update({k: float(v) for k, v in patient_level_rates(df["patient_outcome"].tolist()).items()})
    out["lesion_auc"] = float("nan")
    if results and all(r.pred_mean_prob is not None for r in results):
        sc, lab = lesion_scores(results)
        out["lesion_auc"] = float(lesion_roc(sc, lab)["auc"])
    return out
