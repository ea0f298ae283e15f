"""Unsupervised quality alarms for segmentation ensembles (Kofler et al. 2021).

Kofler F. et al., "Robust, primitive, and unsupervised quality estimation for segmentation
ensembles", Front. Neurosci. 15:752780 (2021). For every case:

1. fuse the k candidate segmentations (:mod:`neurorad.quality.fusion`, majority vote or SIMPLE);
2. measure each candidate's similarity to the fusion with every metric: Dice (higher = more
   similar) and distance metrics (HD, HD95, ASSD in mm) turned into similarities by their
   additive inverse (-distance);
3. per candidate and metric, over all cases: threshold = median - alpha x MAD, with MAD the raw
   median absolute deviation (``mad_scale=1``; pass 1.4826 for the normal-consistent MAD);
4. an alarm is raised when a similarity is below its threshold or is NaN/inf (e.g. an empty
   candidate gives HD = inf: always an alarm);
5. the alarm count per case (over candidates x metrics) is the risk score; the review worklist
   is ordered by alarm count (descending), ties broken by the lower mean candidate Dice first.

:func:`alpha_calibration` tabulates, for a grid of alpha, the Shannon entropy (bits) of the
alarm-count distribution over cases (how well the counts spread the cases) and, when ground
truth is available, the Pearson correlation between alarm count and the fusion's Dice to truth
(expected negative).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from neurorad.image.masks import dice
from neurorad.quality.fusion import fuse
from neurorad.quality.surface import surface_metrics

#: similarity name -> (metrics key, sign): similarity = sign * metric
SIMILARITIES: dict[str, tuple[str, float]] = {
    "dice": ("dice", 1.0), "neg_hd_mm": ("hd_mm", -1.0), "neg_hd95_mm": ("hd95_mm", -1.0),
    "neg_assd_mm": ("assd_mm", -1.0),
}


def candidate_similarities(
    candidates: Sequence[np.ndarray],
    spacing_mm: Sequence[float] | None = None,
    method: str = "mav",
    similarities: Sequence[str] = ("dice", "neg_hd95_mm"),
) -> tuple[np.ndarray, np.ndarray]:
    """Fusion of one case and a (k candidates x m similarities) array of candidate-to-fusion similarity."""
    fused = fuse(candidates, method)
    need_surface = any(SIMILARITIES[n][0] != "dice" for n in similarities)
    out = np.empty((len(candidates), len(similarities)))
    for i, c in enumerate(candidates):
        cb = np.asarray(c) != 0
        m = {"dice": dice(cb, fused)}
        if need_surface:
            sd = surface_metrics(cb, fused, spacing_mm)
            m.update(hd_mm=sd.hd_mm, hd95_mm=sd.hd95_mm, assd_mm=sd.assd_mm)
        for j, name in enumerate(similarities):
            key, sign = SIMILARITIES[name]
            out[i, j] = sign * m[key]
    return fused, out


def thresholds(sims: np.ndarray, alpha: float = 1.0, mad_scale: float = 1.0) -> np.ndarray:
    """Per candidate x similarity: median - alpha * mad_scale * MAD over cases (NaN/inf ignored).

    ``sims`` has shape (cases, candidates, similarities).
    """
    s = np.where(np.isfinite(sims), sims, np.nan)
    med = np.nanmedian(s, axis=0)
    mad = np.nanmedian(np.abs(s - med), axis=0)
    return med - alpha * mad_scale * mad


def alarms(sims: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Boolean alarms (cases x candidates x similarities): below threshold or not finite."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(sims) | (sims < thr[None])


def alarm_counts(sims: np.ndarray, alpha: float = 1.0, mad_scale: float = 1.0) -> np.ndarray:
    """Alarm count per case (the risk score)."""
    return alarms(sims, thresholds(sims, alpha, mad_scale)).reshape(sims.shape[0], -1).sum(1)


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of the distribution of the integer values in ``counts``."""
    _, n = np.unique(np.asarray(counts), return_counts=True)
    p = n / n.sum()
    return float(-np.sum(p * np.log2(p)))


def alpha_calibration(
    sims: np.ndarray, alphas: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
    truth_dice: np.ndarray | None = None, mad_scale: float = 1.0,
) -> pd.DataFrame:
    """Per alpha: mean alarms, share of cases with >= 1 alarm, entropy, Pearson r with truth Dice."""
    rows = []
    for a in alphas:
        c = alarm_counts(sims, a, mad_scale)
        r = p = np.nan
        if truth_dice is not None and np.std(c) > 0 and np.std(truth_dice) > 0:
            r, p = stats.pearsonr(c, truth_dice)
        rows.append({"alpha": a, "mean_alarms": float(c.mean()), "cases_with_alarm": float(np.mean(c > 0)),
                     "entropy_bits": entropy_bits(c), "pearson_r_dice": float(r), "pearson_p": float(p)})
    return pd.DataFrame(rows)


def triage_order(counts: np.ndarray, mean_dice: np.ndarray | None = None) -> np.ndarray:
    """Case indices for the review worklist: most alarms first, then lowest mean candidate Dice."""
    counts = np.asarray(counts)
    tie = np.zeros(counts.size) if mean_dice is None else np.nan_to_num(np.asarray(mean_dice, float), nan=-1.0)
    return np.lexsort((tie, -counts))


def ensemble_quality(
    cases: Sequence[Sequence[np.ndarray]],
    spacing_mm: Sequence[float] | Sequence[Sequence[float]] | None = None,
    method: str = "mav",
    similarities: Sequence[str] = ("dice", "neg_hd95_mm"),
    alpha: float = 1.0,
    mad_scale: float = 1.0,
    truths: Sequence[np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, np.ndarray, list[np.ndarray]]:
    """Run the whole method over cases; returns (per-case table, similarity array, fusions).

    The table has ``case`` (index), ``alarms``, ``triage_rank`` (1 = review first), ``mean_dice``
    (candidates to fusion) and, with ``truths``, ``fusion_truth_dice``.
    """
    sims, fused_all = [], []
    k = {len(c) for c in cases}
    if len(k) != 1:
        raise ValueError("every case needs the same number of candidates")
    per_case_spacing = spacing_mm is not None and np.ndim(spacing_mm) == 2
    for i, cand in enumerate(cases):
        sp = spacing_mm[i] if per_case_spacing else spacing_mm
        f, s = candidate_similarities(cand, sp, method, similarities)
        sims.append(s)
        fused_all.append(f)
        if progress:
            progress(1)
    sim = np.stack(sims)
    counts = alarm_counts(sim, alpha, mad_scale)
    di = list(similarities).index("dice") if "dice" in similarities else None
    mean_dice = sim[:, :, di].mean(1) if di is not None else None
    order = triage_order(counts, mean_dice)
    rank = np.empty(len(cases), int)
    rank[order] = np.arange(1, len(cases) + 1)
    table = pd.DataFrame({"case": np.arange(len(cases)), "alarms": counts, "triage_rank": rank})
    if mean_dice is not None:
        table["mean_dice"] = mean_dice
    if truths is not None:
        table["fusion_truth_dice"] = [
            dice(f, np.asarray(t) != 0) for f, t in zip(fused_all, truths, strict=True)
        ]
    return table, sim, fused_all
