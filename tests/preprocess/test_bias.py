"""N4 removes a known multiplicative bias field from real anatomy (Colin27).

Oracle: the white-matter coefficient of variation (WM = eroded band of the clean image's
70-95th brain percentiles) before and after correction; the clean image's own CoV is the floor.
2 mm data with shrink 2 is the same fitting grid as 1 mm with the default shrink 4.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from neurorad.errors import InputError
from neurorad.image.volume import Volume
from neurorad.preprocess.bias import n4_bias_correct, n4_shrink_factors, shrink_factors_for_spacing

from .conftest import smooth_bias_field


@pytest.fixture(scope="module")
def case(colin_head, colin_brain_mask):
    aff = colin_head.affine.copy()
    aff[:3, :3] *= 2
    clean = Volume(colin_head.data[::2, ::2, ::2].copy(), aff)
    brain = colin_brain_mask[::2, ::2, ::2]
    lo, hi = np.percentile(clean.data[brain], [70, 95])
    wm = ndi.binary_erosion(brain & (clean.data > lo) & (clean.data < hi))
    field = smooth_bias_field(clean.spatial_shape, 0.6, seed=0)
    return clean, clean.with_data(clean.data * field), wm, field


def _cov(x: np.ndarray, m: np.ndarray) -> float:
    return float(x[m].std() / x[m].mean())


def test_n4_halves_white_matter_cov(case):
    clean, biased, wm, field = case
    corrected, est = n4_bias_correct(biased, shrink_factor=2, return_field=True)
    before, after = _cov(biased.data, wm), _cov(corrected.data, wm)
    print(f"WM CoV clean {_cov(clean.data, wm):.4f}, biased {before:.4f}, corrected {after:.4f}")
    assert after <= 0.5 * before
    assert corrected.same_grid(biased) and corrected.data.dtype == np.float32
    assert est.same_grid(biased) and np.all(est.data > 0)


def test_bad_input(case):
    clean = case[0]
    with pytest.raises(InputError, match="shrink"):
        n4_bias_correct(clean, shrink_factor=0)
    with pytest.raises(InputError, match="shrink"):
        n4_bias_correct(clean, shrink_factor=(2, 2))
    with pytest.raises(InputError, match="shrink"):
        n4_bias_correct(clean, shrink_factor=(2, 0, 2))
    with pytest.raises(InputError, match="whole number"):
        n4_bias_correct(clean, shrink_factor=2.5)
    with pytest.raises(InputError, match="positive"):
        shrink_factors_for_spacing((1.0, 1.0, 1.0), 0.0)
    with pytest.raises(InputError, match="empty"):
        n4_bias_correct(clean, mask=clean.with_data(np.zeros(clean.spatial_shape, bool)))


def test_n4_keeps_lesion_contrast_of_an_order_one_image_with_a_zero_border():
    """A registered sequence has zeros outside its field of view and, on phantoms or rescaled series,
    intensities of order 1. N4 must stay multiplicative there: the former +1 shift of the whole image
    distorted a 2:1 lesion contrast (2.25:1 here; 1.6 -> 1.25 on the glioma benchmark's 5 mm FLAIR)."""
    n, sp = 40, 2.5
    g = (np.indices((n, n, n)).astype(np.float32) - n / 2 + 0.5) * sp
    r = np.sqrt((g ** 2).sum(0))
    brain = r < 42.0
    lesion = np.sqrt(((g - np.array([12.0, 0, 0])[:, None, None, None]) ** 2).sum(0)) < 12.0
    clean = np.where(brain, 0.5, 0.05).astype(np.float32)
    clean[lesion] = 1.0
    field = smooth_bias_field(clean.shape, 0.3, seed=1)
    noisy = clean * field + np.random.default_rng(0).normal(0, 0.01, clean.shape).astype(np.float32)
    noisy[:, :, :4] = 0.0  # outside the moved sequence's field of view (no brain there)
    aff = np.diag([sp, sp, sp, 1.0])
    out = n4_bias_correct(Volume(noisy, aff), Volume(brain.astype(np.uint8), aff), shrink_factor=2,
                          iterations=(25, 25, 15))
    c = np.asarray(out.data)
    shell = brain & ~lesion & (np.sqrt(((g - np.array([12.0, 0, 0])[:, None, None, None]) ** 2).sum(0)) < 24.0)
    ratio = float(np.median(c[lesion]) / np.median(c[shell]))
    assert ratio == pytest.approx(2.0, rel=0.08)
    assert float((c[:, :, 4:][brain[:, :, 4:]] <= 0).mean()) == 0.0
    assert np.all(c[:, :, :4] == 0.0)  # nothing added where the input was empty
    # the former handling (the MS workflow's until 1.19.0; it now shifts by brain medians, "relative") distorts it
    # (the reason "floor" is the default)
    old = n4_bias_correct(Volume(noisy, aff), Volume(brain.astype(np.uint8), aff), shrink_factor=2,
                          iterations=(25, 25, 15), nonpositive="shift")
    co = np.asarray(old.data)
    assert float(np.median(co[lesion]) / np.median(co[shell])) > 2.1


def test_the_relative_shift_damps_the_field_the_same_in_any_units(case):
    """"relative" shifts an image by a number of its own brain medians, so its result does not depend on the file's
    intensity units: the same image in 0-1 and in 0-4095-like units (x 2000) is corrected to the same image
    (relative to its scale). "shift" adds one intensity unit, so it damps the correction on the 0-1 image and not on
    the other (the MS workflow's units dependence before 1.20.0)."""
    clean, biased, wm, _ = case
    brain = Volume(ndi.binary_dilation(wm, iterations=3).astype(np.uint8), biased.affine)
    unit = biased.with_data((biased.data / np.median(biased.data[wm])).astype(np.float32))  # WM about 1
    unit.data[:, :, :3] = 0.0  # zero padding: a non-positive voxel, as the common grid's
    big = unit.with_data((unit.data * 2000.0).astype(np.float32))
    kw = {"shrink_factor": 2, "iterations": (25, 25, 15)}
    rel_unit = n4_bias_correct(unit, brain, nonpositive="relative", **kw).data
    rel_big = n4_bias_correct(big, brain, nonpositive="relative", **kw).data / 2000.0
    assert np.max(np.abs(rel_unit - rel_big)[wm]) < 1e-3
    # damped: the field it divides by varies about a third as much as the one fitted without a shift (the log of
    # I + 2 medians varies about a third as much as the log of I around the median)
    _, f_full = n4_bias_correct(unit, brain, nonpositive="floor", return_field=True, **kw)
    _, f_rel = n4_bias_correct(unit, brain, nonpositive="relative", return_field=True, **kw)
    spread = {k: float(np.std(np.log(f.data[wm]))) for k, f in (("full", f_full), ("rel", f_rel))}
    assert 0.0 < spread["rel"] < 0.6 * spread["full"], spread
    sh_unit = n4_bias_correct(unit, brain, nonpositive="shift", **kw).data
    sh_big = n4_bias_correct(big, brain, nonpositive="shift", **kw).data / 2000.0
    assert np.max(np.abs(sh_unit - sh_big)[wm]) > 0.01
    with pytest.raises(InputError, match="shift_medians"):
        n4_bias_correct(unit, brain, nonpositive="relative", shift_medians=0.0, **kw)


@pytest.mark.parametrize(("spacing", "target", "expected"), [
    ((1.0, 1.0, 1.0), 6.0, (6, 6, 6)), ((1.0, 1.0, 5.0), 6.0, (6, 6, 1)), ((1.0, 1.0, 3.0), 6.0, (6, 6, 2)),
    ((0.5, 0.5, 5.0), 6.0, (12, 12, 1)), ((0.9, 0.9, 4.0), 6.0, (7, 7, 2)), ((2.0, 2.0, 2.0), 0.5, (1, 1, 1))])
def test_shrink_factors_bring_each_axis_nearest_the_target(spacing, target, expected):
    """Analytic: round(target / spacing) per axis, never below 1."""
    assert shrink_factors_for_spacing(spacing, target) == expected


def test_per_axis_shrink_fits_thick_slices_on_their_own_axes(case, monkeypatch):
    """A thick-slice grid (2 x 2 x 6 mm: Colin27 at 2 mm averaged over 3 slices) shrunk towards 6 mm is
    shrunk 3 x 3 x 1 (the slice axis kept), and the correction removes at least half of the WM CoV the field
    added (the thick slices' partial volume raises the clean image's own CoV, the floor)."""
    import SimpleITK as sitk

    clean, biased, wm, field = case
    n = clean.spatial_shape[2] // 3 * 3

    def thick(a: np.ndarray) -> np.ndarray:
        return a[:, :, :n].reshape(*a.shape[:2], n // 3, 3).mean(axis=3)

    aff = clean.affine.copy()
    aff[:3, 2] *= 3
    vol = Volume(thick(np.asarray(biased.data, np.float32)).astype(np.float32), aff)
    wm3 = thick(wm.astype(np.float32)) == 1.0
    factors = shrink_factors_for_spacing(vol.spacing_mm, 6.0)
    assert factors == (3, 3, 1)
    seen: list = []
    real = sitk.Shrink

    def spy(img, f):
        seen.append((tuple(img.GetSize()), tuple(f)))
        return real(img, f)

    monkeypatch.setattr(sitk, "Shrink", spy)
    out = n4_bias_correct(vol, shrink_factor=factors, iterations=(25, 25, 15))
    assert seen and all(f == (3, 3, 1) for _, f in seen)
    assert seen[0][0] == vol.spatial_shape  # ITK's (x, y, z) size is the array's axis order
    floor = _cov(thick(np.asarray(clean.data, np.float32)), wm3)
    before, after = _cov(np.asarray(vol.data), wm3), _cov(np.asarray(out.data), wm3)
    print(f"thick slices: WM CoV clean {floor:.4f}, biased {before:.4f}, corrected {after:.4f}")
    assert after - floor <= 0.5 * (before - floor)
    assert out.metadata["bias_correction"]["shrink_factor"] == [3, 3, 1]


@pytest.mark.parametrize(("spacing", "shrink_mm", "fine_mm", "expected"), [
    ((1.0, 1.0, 1.0), None, 6.0, (6, 6, 6)),     # a 1 mm grid: 6 mm samples
    ((0.99, 0.99, 1.0), None, 6.0, (6, 6, 6)),
    ((1.2, 1.2, 1.2), None, 6.0, (5, 5, 5)),
    ((1.5, 1.5, 1.5), None, 6.0, 4),             # 4 voxels already sample 6 mm
    ((1.0, 1.0, 3.0), None, 6.0, 4),             # a coarse axis: n4_shrink voxels everywhere
    ((1.0, 1.0, 5.0), None, 6.0, 4),
    ((1.0, 1.0, 1.0), None, None, 4),            # workflow 1.20.0
    ((1.0, 1.0, 5.0), 6.0, 6.0, (6, 6, 1)),      # n4_shrink_mm: towards it on every grid, first
])
def test_n4_shrink_factors_coarsen_only_a_grid_fine_on_every_axis(spacing, shrink_mm, fine_mm, expected):
    """Analytic: n4_shrink voxels unless every axis is finer than fine_mm / n4_shrink; then round(fine_mm / spacing)
    per axis (never fewer than n4_shrink)."""
    assert n4_shrink_factors(spacing, 4, shrink_mm, fine_mm) == expected
    with pytest.raises(InputError, match="positive"):
        n4_shrink_factors(spacing, 4, None, 0.0)


def test_six_mm_samples_on_a_1mm_grid_remove_a_known_field_as_four_voxels_do(colin_head, colin_brain_mask):
    """Colin27 at its own 1 mm with a known smooth field (strength 0.6), corrected inside the brain as the MS
    workflow corrects (3 levels 25/25/15, the relative shift): with 6 x 6 x 6 samples (workflow 1.21.0, 0.3x the fit
    samples) N4 removes the field as well as with 4-voxel samples (1.20.0). Oracles: the WM coefficient of
    variation against the clean image's, and the estimated log field against the true one (each centred on its
    brain median, the part N4 cannot know)."""
    brain = colin_brain_mask
    clean = colin_head
    lo, hi = np.percentile(clean.data[brain], [70, 95])
    wm = ndi.binary_erosion(brain & (clean.data > lo) & (clean.data < hi))
    field = smooth_bias_field(clean.spatial_shape, 0.6, seed=1)
    biased = clean.with_data((clean.data * field).astype(np.float32))
    mask = clean.with_data(brain)
    factors = n4_shrink_factors(clean.spacing_mm, 4, None, 6.0)
    assert factors == (6, 6, 6)
    floor, before = _cov(clean.data, wm), _cov(biased.data, wm)
    truth = np.log(field[brain]) - np.median(np.log(field[brain]))
    out = {}
    for name, f in (("4 voxels", 4), ("6 mm", factors)):
        corrected, est = n4_bias_correct(biased, mask, shrink_factor=f, iterations=(25, 25, 15),
                                         nonpositive="relative", return_field=True)
        log_est = np.log(est.data[brain]) - np.median(np.log(est.data[brain]))
        out[name] = (_cov(corrected.data, wm), float(np.median(np.abs(log_est - truth))))
        print(f"{name}: WM CoV clean {floor:.4f}, biased {before:.4f}, corrected {out[name][0]:.4f}; "
              f"log-field error median {out[name][1]:.4f}")
    (cov4, err4), (cov6, err6) = out["4 voxels"], out["6 mm"]
    assert cov6 - floor <= 0.5 * (before - floor)
    assert abs(cov6 - cov4) <= 0.1 * (before - floor)
    assert err6 <= err4 + 0.01
