"""The radiogenomics paper's eight volumetric ratio features (its Table 1) from a tumour label map.

Compartments (BraTS convention): enhancing tumour (ET), peritumoural oedema (ED) and
necrosis / non-enhancing tumour core (NCR); whole tumour WT = ET + ED + NCR. Features:

=========  ==================
name       definition
=========  ==================
ET_NCR     ET / NCR
ET_TC      ET / (ET + NCR)
ET_ED      ET / ED
ET_WT      ET / WT
ED_NCR     ED / NCR
ED_TC      ED / (ET + NCR)
ED_WT      ED / WT
NCR_WT     NCR / WT
=========  ==================

Empty compartments: a ratio whose denominator compartment is empty uses a denominator of one
voxel's volume instead of zero (so ET/NCR with no necrosis is "ET volume in voxels", large but
finite and monotone in the numerator); a label map with no tumour at all is an error.
Volumes come from :mod:`neurorad.quantify.components` so the glioma workflow and this module
count voxels the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from neurorad.errors import InputError
from neurorad.quantify.components import label_voxel_counts

FEATURES: tuple[str, ...] = ("ET_NCR", "ET_TC", "ET_ED", "ET_WT", "ED_NCR", "ED_TC", "ED_WT", "NCR_WT")
#: BraTS 2017-2021 labels (BraTS 2023 uses 3 for ET: pass ``labels={"NCR": 1, "ED": 2, "ET": 3}``).
BRATS_LABELS: Mapping[str, int] = {"NCR": 1, "ED": 2, "ET": 4}


def compartment_volumes_ml(
    labels: np.ndarray, voxel_volume_mm3: float, label_values: Mapping[str, int] = BRATS_LABELS
) -> dict[str, float]:
    """ET, ED and NCR volumes in ml from an integer label map (voxel counts by ``neurorad.quantify``)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        if not np.all(labels == np.round(labels)):
            raise InputError("tumour label map must hold integer labels")
        labels = labels.astype(np.int64)
    if labels.min(initial=0) < 0:
        raise InputError("tumour label map holds negative labels")
    n = max(int(labels.max(initial=0)), max(label_values.values()))
    counts = label_voxel_counts(labels, n)
    return {name: float(counts[value - 1]) * float(voxel_volume_mm3) / 1000.0 for name, value in label_values.items()}


def ratio_features(et_ml: float, ed_ml: float, ncr_ml: float, voxel_volume_ml: float = 0.001) -> dict[str, float]:
    """The eight ratios from compartment volumes (ml); empty denominators become one voxel's volume."""
    vals = np.array([et_ml, ed_ml, ncr_ml], dtype=np.float64)
    if np.any(~np.isfinite(vals)) or np.any(vals < 0):
        raise InputError("compartment volumes must be finite and non-negative")
    wt = float(vals.sum())
    if wt <= 0:
        raise InputError("tumour label map has no tumour voxels (ET, ED and NCR all empty)")
    floor = float(voxel_volume_ml)

    def r(num: float, den: float) -> float:
        return float(num / (den if den > 0 else floor))

    tc = et_ml + ncr_ml
    return {
        "ET_NCR": r(et_ml, ncr_ml), "ET_TC": r(et_ml, tc), "ET_ED": r(et_ml, ed_ml), "ET_WT": r(et_ml, wt),
        "ED_NCR": r(ed_ml, ncr_ml), "ED_TC": r(ed_ml, tc), "ED_WT": r(ed_ml, wt), "NCR_WT": r(ncr_ml, wt),
    }


def features_from_labels(
    labels: np.ndarray, voxel_volume_mm3: float, label_values: Mapping[str, int] = BRATS_LABELS
) -> dict[str, float]:
    """The eight ratio features of one label map."""
    v = compartment_volumes_ml(labels, voxel_volume_mm3, label_values)
    return ratio_features(v["ET"], v["ED"], v["NCR"], voxel_volume_ml=voxel_volume_mm3 / 1000.0)


def features_table(volumes: pd.DataFrame, voxel_volume_ml: float = 0.001) -> pd.DataFrame:
    """Ratio features for a table of volumes with columns ``ET_ml``, ``ED_ml``, ``NCR_ml`` (one row per patient)."""
    need = ["ET_ml", "ED_ml", "NCR_ml"]
    missing = [c for c in need if c not in volumes.columns]
    if missing:
        raise InputError(f"volume table lacks columns {missing}")
    rows = [ratio_features(r.ET_ml, r.ED_ml, r.NCR_ml, voxel_volume_ml) for r in volumes[need].itertuples()]
    return pd.DataFrame(rows, index=volumes.index, columns=list(FEATURES))


def thresholds(train: pd.DataFrame | np.ndarray, at: str = "median") -> np.ndarray:
    """Per-feature cut points (mean or median) computed on training rows only."""
    x = np.asarray(train, dtype=np.float64)
    if at == "median":
        return np.median(x, axis=0)
    if at == "mean":
        return x.mean(axis=0)
    raise ValueError(f"threshold must be 'mean' or 'median', got {at!r}")


def ordinal(features: pd.DataFrame | np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Ordinal (0 = at or below the cut, 1 = above) version of the features."""
    return (np.asarray(features, dtype=np.float64) > np.asarray(cut)[None, :]).astype(np.float64)


def anova_pvalues(features: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """One-way ANOVA p-value of each feature (rows) against each target (columns), missing targets skipped."""
    out = pd.DataFrame(index=features.columns, columns=targets.columns, dtype=float)
    for t in targets.columns:
        lab = targets[t]
        ok = lab.notna().to_numpy()
        groups = [g for g in np.unique(lab[ok].astype(str))]
        for f in features.columns:
            x = features[f].to_numpy(dtype=np.float64)[ok]
            parts = [x[lab[ok].astype(str).to_numpy() == g] for g in groups]
            out.loc[f, t] = float(stats.f_oneway(*parts).pvalue) if len(parts) > 1 else np.nan
    return out
