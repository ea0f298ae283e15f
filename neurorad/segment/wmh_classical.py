"""Classical white-matter hyperintensity (WMH) segmentation on FLAIR: hyperintensity relative to
normal-appearing white matter (NAWM) with tissue priors.

The method is the usual intensity-outlier definition of WMH (STRIVE, Wardlaw et al., Lancet Neurol
2013: "signal abnormality ... hyperintense on T2-weighted images such as FLAIR"; the outlier
approach of e.g. Jack et al. 2001 and the lesion-growth reference of LST-LGA, Schmidt et al. 2012):

1. NAWM = brain voxels with WM prior >= ``nawm_prior`` (MNI152 prior registered to the subject),
   robustly trimmed (median +- 3 MAD) so lesions do not bias the reference.
2. Local NAWM reference: smoothed mean of NAWM intensity (two passes of a box filter, the same SD as a
   Gaussian of FWHM ``reference_fwhm_mm``: fast for wide kernels), which also absorbs a smooth residual
   bias field, clipped to +-``max_reference_drift`` of the global NAWM median (near the ventricles the
   few NAWM voxels are partial volume); ratio r = FLAIR / reference.
3. z = (r - 1) / sigma, sigma = 1.4826 MAD of r in NAWM.
4. Search region: at least ``surface_margin_mm`` inside the brain surface (cortex and sulci are bright
   on FLAIR and are not WMH) and either WM prior >= ``search_wm_prior`` with GM prior <
   ``max_gm_prior``, or inside the caller's ``periventricular`` zone (the priors are blurred next to the
   ventricles, where periventricular caps lie).
5. Hysteresis: seeds where z >= ``z_seed`` and r >= max(``ratio_seed``, r_GM + max(``z_seed`` sigma,
   2 ``gm_margin``)), grown through z >= ``z_grow`` and r >= max(``ratio_grow``, r_GM + max(``z_grow``
   sigma, ``gm_margin``)) (26-connected; the margin covers deep grey matter brighter than the cortex
   and residual bias), where r_GM
   is the median ratio of grey matter (GM prior >= 0.8; the larger of all GM and the deep nuclei, GM
   more than ``deep_gm_depth_mm`` inside the brain): a lesion must be brighter than grey matter too,
   or it would grow into the cortex and deep nuclei it touches. Components below ``min_volume_mm3``
   are removed.
6. Lesion probability (for ROC analyses only; not calibrated): logistic of z centred between the
   grow and seed thresholds.

Operating points were chosen on WMH phantoms (neurorad.phantom, synthetic), not on patients: the
hysteresis thresholds ``z_seed`` 6 and ``z_grow`` 5 (formerly 5 and 3, which let lesions grow into the
bright surroundings of some cases) come from ``python bench/wmh_sweep.py --cases 6`` on tuning seeds
40000-40005 (mean pixel Dice 0.567 -> 0.653, lesion detection 0.863 -> 0.816, pixel precision 0.546 ->
0.675 there; the benchmark's held-out seeds 50000.. were not used, docs/wmh.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

from neurorad.quantify.components import connected_components, label_voxel_counts

__all__ = ["WMHParams", "WMHSegmentation", "segment_wmh"]


@dataclass(frozen=True)
class WMHParams:
    nawm_prior: float = 0.9
    reference_fwhm_mm: float = 20.0
    max_reference_drift: float = 0.2
    search_wm_prior: float = 0.35
    max_gm_prior: float = 0.3
    surface_margin_mm: float = 3.0
    z_seed: float = 6.0  # bench/wmh_sweep.py (tuning seeds 40000-40005)
    z_grow: float = 5.0
    ratio_seed: float = 1.6
    ratio_grow: float = 1.3
    gm_margin: float = 0.15
    deep_gm_depth_mm: float = 20.0
    min_volume_mm3: float = 3.0
    connectivity: int = 26

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class WMHSegmentation:
    mask: np.ndarray  # bool, on the input grid
    probability: np.ndarray  # float32 in [0, 1]
    ratio: np.ndarray  # FLAIR / local NAWM reference (float32; 0 outside the brain box)
    nawm_sigma: float
    params: WMHParams
    thresholds: dict[str, float]


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def smooth_box(img: np.ndarray, sd_vox: np.ndarray) -> np.ndarray:
    """Two passes of a box filter with the given SD per axis (box width w = SD * sqrt(6)): close to a
    Gaussian and O(1) per voxel whatever the width."""
    size = [max(1, int(round(float(s) * np.sqrt(6.0)))) for s in sd_vox]
    out = ndimage.uniform_filter(img.astype(np.float32), size, mode="constant")
    return ndimage.uniform_filter(out, size, mode="constant")


def erode_mm(mask: np.ndarray, margin_mm: float, spacing_mm: np.ndarray) -> np.ndarray:
    """``mask`` eroded by about ``margin_mm`` (6-connected steps of the finest voxel size)."""
    it = int(round(margin_mm / float(np.min(spacing_mm))))
    return ndimage.binary_erosion(mask, iterations=it) if it > 0 else mask.copy()


def segment_wmh(flair: np.ndarray, brain: np.ndarray, wm_prior: np.ndarray, gm_prior: np.ndarray,
                spacing_mm: tuple[float, float, float], params: WMHParams = WMHParams(),
                periventricular: np.ndarray | None = None) -> WMHSegmentation:
    """WMH mask and lesion probability of one FLAIR (arrays on one grid; see the module docstring)."""
    p = params
    brain = np.asarray(brain, bool)
    if not brain.any():
        raise ValueError("empty brain mask")
    box = _box(brain, 2)
    img = np.asarray(flair, np.float32)[box]
    b = brain[box]
    wm = np.asarray(wm_prior, np.float32)[box]
    gm = np.asarray(gm_prior, np.float32)[box]
    sp = np.asarray(spacing_mm, float)
    nawm = b & (wm >= p.nawm_prior)
    if nawm.sum() < 100:
        nawm = b & (wm >= 0.5)
    if nawm.sum() < 100:
        raise ValueError("too few normal-appearing white-matter voxels for a reference (registration failed?)")
    vals = img[nawm]
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med))) * 1.4826 or 1e-6
    ref_mask = nawm & (np.abs(img - med) <= 3 * mad)
    sig_vox = p.reference_fwhm_mm / 2.3548 / sp
    num = smooth_box(np.where(ref_mask, img, 0), sig_vox)
    den = smooth_box(ref_mask, sig_vox)
    ref = np.where(den > 0.05, num / np.maximum(den, 1e-6), med)
    ref = np.clip(ref, (1 - p.max_reference_drift) * med, (1 + p.max_reference_drift) * med).astype(np.float32)
    ratio = np.where(b, img / np.maximum(ref, 1e-6), 0).astype(np.float32)
    rv = ratio[ref_mask]
    sigma = float(np.median(np.abs(rv - np.median(rv)))) * 1.4826 or 1e-3
    z = (ratio - 1.0) / sigma
    inner = erode_mm(b, p.surface_margin_mm, sp)
    tissue = (wm >= p.search_wm_prior) & (gm < p.max_gm_prior)
    if periventricular is not None:
        tissue |= np.asarray(periventricular, bool)[box]
    search = inner & tissue
    # grey-matter reference: the brighter of cortex and deep nuclei (deep grey matter borders the
    # periventricular zone; thick slices average the cortex with sulcal CSF and make it look darker)
    gm_ref = b & (gm >= 0.8)
    deep_gm = gm_ref & erode_mm(b, p.deep_gm_depth_mm, sp)
    gm_ratio = max([float(np.median(ratio[m])) for m in (gm_ref, deep_gm) if m.sum() > 100] or [1.0])
    r_seed = max(p.ratio_seed, gm_ratio + max(p.z_seed * sigma, 2 * p.gm_margin))
    r_grow = max(p.ratio_grow, gm_ratio + max(p.z_grow * sigma, p.gm_margin))
    seeds = search & (z >= p.z_seed) & (ratio >= r_seed)
    grow = search & (z >= p.z_grow) & (ratio >= r_grow)
    lab, n = connected_components(grow, p.connectivity)
    keep = np.zeros(n + 1, bool)
    if n:
        has_seed = np.bincount(lab[seeds], minlength=n + 1) > 0
        big = np.concatenate([[False], label_voxel_counts(lab, n) * float(np.prod(sp)) >= p.min_volume_mm3])
        keep = has_seed & big
        keep[0] = False
    mask_box = keep[lab]
    mid = 0.5 * (p.z_seed + p.z_grow)
    prob_box = np.where(search, expit((z - mid) / max(0.25 * (p.z_seed - p.z_grow), 1e-3)), 0.0)
    mask = np.zeros(brain.shape, bool)
    mask[box] = mask_box
    prob = np.zeros(brain.shape, np.float32)
    prob[box] = prob_box.astype(np.float32)
    rat = np.zeros(brain.shape, np.float32)
    rat[box] = ratio
    return WMHSegmentation(mask, prob, rat, sigma, p, {"ratio_seed": r_seed, "ratio_grow": r_grow,
                                                        "gm_ratio": gm_ratio})
