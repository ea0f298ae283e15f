"""Segmentation metrics against MONAI, DeepMind surface-distance, scikit-learn and analytic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import surface_distance as sd
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from neurorad.errors import InputError
from neurorad.evaluate.segmentation import auroc, segmentation_metrics, surface_voxels

SPACING = (0.9, 1.3, 2.0)


def _ellipsoid(shape, center, radii_mm, spacing):
    axes = [(np.arange(n) - c) * s for n, c, s in zip(shape, center, spacing, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij")
    return sum((g / r) ** 2 for g, r in zip(grids, radii_mm, strict=False)) <= 1.0


@pytest.fixture(scope="module")
def pair():
    shape = (48, 40, 30)
    a = _ellipsoid(shape, (24, 20, 15), (14.0, 16.0, 18.0), SPACING)
    b = _ellipsoid(shape, (26, 19, 14), (12.0, 15.0, 20.0), SPACING)
    return a, b


def _monai(a, b, **kw):
    t = lambda m: torch.from_numpy(m[None, None].astype(np.float32))  # noqa: E731
    return t(a), t(b)


def test_surface_is_erosion_xor():
    rng = np.random.default_rng(0)
    m = ndimage.binary_opening(rng.random((20, 22, 18)) > 0.4)
    m[0, 5:10, 5:10] = True  # touching the border: outside counts as background
    ref = m ^ ndimage.binary_erosion(m, border_value=0)
    assert np.array_equal(surface_voxels(m), ref)


def test_against_monai(pair):
    a, b = pair
    ours = segmentation_metrics(a, b, SPACING)
    pa, tb = _monai(a, b)
    hd = compute_hausdorff_distance(pa, tb, include_background=True, spacing=list(SPACING)).item()
    hd95 = compute_hausdorff_distance(pa, tb, include_background=True, percentile=95, spacing=list(SPACING)).item()
    assd = compute_average_surface_distance(pa, tb, include_background=True, symmetric=True, spacing=list(SPACING))
    dice = compute_dice(pa, tb, include_background=True).item()
    assert ours["dice"] == pytest.approx(dice, rel=1e-6)
    assert ours["hd_mm"] == pytest.approx(hd, rel=1e-5)
    assert ours["hd95_mm"] == pytest.approx(hd95, rel=1e-5)
    # MONAI's symmetric ASD pools both directions' distances, as our ASSD does
    assert ours["assd_mm"] == pytest.approx(assd.item(), rel=1e-5)


def test_against_deepmind_and_analytic():
    # two concentric spheres of radius 20 and 15 mm: analytic HD = ASSD ~ 5 mm (voxelised, within a voxel)
    spacing = (1.0, 1.0, 1.5)
    shape = (60, 60, 40)
    a = _ellipsoid(shape, (30, 30, 20), (20.0, 20.0, 20.0), spacing)
    b = _ellipsoid(shape, (30, 30, 20), (15.0, 15.0, 15.0), spacing)
    ours = segmentation_metrics(b, a, spacing)
    dists = sd.compute_surface_distances(a, b, spacing)
    hd_dm = sd.compute_robust_hausdorff(dists, 100)
    hd95_dm = sd.compute_robust_hausdorff(dists, 95)
    # DeepMind places surfels on voxel corners and weights by area: same quantity, other discretisation
    assert ours["hd_mm"] == pytest.approx(hd_dm, abs=1.5)
    assert ours["hd95_mm"] == pytest.approx(hd95_dm, abs=1.5)
    assert ours["hd_mm"] == pytest.approx(5.0, abs=1.5)
    assert ours["assd_mm"] == pytest.approx(5.0, abs=1.0)
    assert ours["dice"] == pytest.approx(sd.compute_dice_coefficient(a, b), rel=1e-9)
    # analytic Dice of nested spheres 2 r^3 / (R^3 + r^3), volume-limited by voxelisation
    assert ours["dice"] == pytest.approx(2 * 15**3 / (20**3 + 15**3), abs=0.02)


def test_confusion_definitions(pair):
    a, b = pair
    brain = np.zeros_like(a)
    brain[2:-2, 2:-2, 2:-2] = True
    m = segmentation_metrics(a, b, SPACING, brain_mask=brain)
    tp, fp, fn = (a & b).sum(), (a & ~b).sum(), (~a & b).sum()
    tn = (brain & ~a & ~b).sum()
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (tp, fp, fn, tn)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["npv"] == pytest.approx(tn / (tn + fn))
    assert m["jaccard"] == pytest.approx(tp / (tp + fp + fn))
    assert m["volume_similarity"] == pytest.approx(1 - abs(int(fn) - int(fp)) / (2 * tp + fp + fn))
    assert m["tp_pct"] + m["fp_pct"] + m["fn_pct"] + m["tn_pct"] == pytest.approx(100.0)
    assert m["pred_volume_mm3"] == pytest.approx(a.sum() * np.prod(SPACING))


def test_pooled_hd95_differs_and_matches_definition(pair):
    a, b = pair
    from neurorad.evaluate.segmentation import directed_surface_distances
    d1, d2 = directed_surface_distances(a, b, SPACING)
    m = segmentation_metrics(a, b, SPACING, hd95_method="pooled")
    assert m["hd95_mm"] == pytest.approx(np.percentile(np.r_[d1, d2], 95))


def test_auroc_exact_and_binned_against_sklearn(pair):
    a, b = pair
    rng = np.random.default_rng(1)
    prob = np.zeros(a.shape, np.float32)
    region = ndimage.binary_dilation(b, iterations=3)
    prob[region] = np.clip(rng.normal(0.3 + 0.4 * b[region], 0.2), 0, 1)
    prob[b] = np.round(prob[b], 2)  # ties
    brain = np.ones_like(a)
    brain[:3] = False
    ref = roc_auc_score(b[brain], prob[brain])
    assert auroc(prob, b, brain, method="exact") == pytest.approx(ref, abs=1e-12)
    assert auroc(prob, b, None, method="exact") == pytest.approx(roc_auc_score(b.ravel(), prob.ravel()), abs=1e-12)
    assert auroc(prob, b, brain, method="binned") == pytest.approx(ref, abs=1e-3)
    assert np.isnan(auroc(prob, np.zeros_like(b)))


def test_empty_masks():
    z = np.zeros((8, 8, 8), bool)
    one = z.copy()
    one[3:5, 3:5, 3:5] = True
    m = segmentation_metrics(z, z)
    assert (m["dice"], m["hd_mm"], m["hd95_mm"], m["assd_mm"]) == (1.0, 0.0, 0.0, 0.0)
    assert np.isnan(m["sensitivity"]) and m["specificity"] == 1.0
    m = segmentation_metrics(z, one)
    assert m["dice"] == 0.0 and np.isinf(m["hd_mm"]) and m["sensitivity"] == 0.0 and np.isnan(m["ppv"])


def test_bad_input():
    a = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(InputError, match="shape mismatch"):
        segmentation_metrics(a, np.zeros((8, 8, 9)))
    with pytest.raises(InputError, match="binary"):
        segmentation_metrics(a + 2, a)
    with pytest.raises(InputError, match="fractional"):
        segmentation_metrics(np.full((8, 8, 8), 0.5), a)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        segmentation_metrics(a, a, prob=np.full((8, 8, 8), 1.5))
    with pytest.raises(InputError, match="NaN"):
        segmentation_metrics(a, a, prob=np.full((8, 8, 8), np.nan))
