"""One row of ``metrics.csv``: every per-patient metric of one case."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurorad.evaluate.calibration import calibration_metrics
from neurorad.evaluate.lesions import LESION_COLUMNS, LesionResult, brats_lesionwise, lesion_detection
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
) -> tuple[dict[str, float | str], LesionResult]:
    """All metrics of one case: segmentation, lesion-wise, calibration (with ``prob``, on the brain
    mask voxels or the whole image) and, with ``brats``, BraTS-style lesion-wise columns ``brats_*``.

    Returns (row dict in :data:`METRIC_COLUMNS` order then the rest, lesion result for pooling).
    """
    seg = segmentation_metrics(pred, truth, spacing_mm, prob=prob, brain_mask=brain_mask)
    les = lesion_detection(pred, truth, spacing_mm, prob=prob, coverage=coverage)
    row: dict[str, float | str] = {k: seg[k] for k in SEGMENTATION_COLUMNS}
    row.update({k: les.metrics[k] for k in LESION_COLUMNS if k != "patient_outcome"})
    row["patient_outcome"] = les.patient_outcome
    row["auroc"] = seg["auroc"]
    row.update({k: v for k, v in seg.items() if k not in row})
    row.update({k: v for k, v in les.metrics.items() if k not in row})
    if prob is not None:
        row.update(calibration_metrics(prob, truth, brain_mask, n_bins))
    if brats:
        row.update({f"brats_{k}": v for k, v in brats_lesionwise(pred, truth, spacing_mm).items()})
    return row, les
