"""The widened MS phantom (issue 17): contrasts, locations, per-time-point protocol.

Oracles: with noise, bias and scanner scaling off, a lesion's centre voxel over pure white
matter (0.48, the FLAIR table) is the requested lesion/WM contrast; lesions placed at the
ventricle wall lie within their own size of the ventricles; infratentorial ones below the
tentorium (MNI z < -14 mm); each time point is sampled on its own slice thickness.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurorad.phantom.cases import MS_LOCATION_BINS, _ventricle_points, ms_pair, widened_ms_options


@pytest.fixture(scope="module")
def wide():
    return ms_pair(seed=5, n_stable=3, n_new=4, n_enlarging=0, in_plane_mm=2.0, slice_thickness_mm=(2.0, 4.0),
                   misalign_deg=0.0, misalign_mm=0.0, snr=None, bias_strength=0.0, scanner_scaling=False,
                   diameter_range_mm=(8.0, 12.0), lesion_contrast_range=(1.15, 2.5),
                   location_weights={"ventricle_wall": 0.5, "infratentorial": 0.5},
                   flair_gm_wm=(1.15, 1.25), flair_csf_wm=(0.2, 0.2), stable_drift=0.1)


@pytest.mark.slow
def test_widened_lesions_have_the_requested_contrast_and_place(wide):
    recs = wide.case["lesions"]
    assert {r["location"] for r in recs} <= {"ventricle_wall", "infratentorial"}
    assert all(r["location_bin"] == MS_LOCATION_BINS[r["location"]] for r in recs)
    vent = _ventricle_points()
    img = np.asarray(wide.baseline_flair.data)
    inv = np.linalg.inv(wide.baseline_flair.affine)
    checked = 0
    for r in recs:
        assert 1.15 <= r["contrast_to_wm"] <= 2.5
        c = np.asarray(r["center_ras_mm"])
        if r["location"] == "infratentorial":
            assert c[2] < -14
        else:
            assert np.min(np.linalg.norm(vent - c, axis=1)) <= max(r["semi_axes_mm"]) + 1.0
        if r["type"] == "stable" and r["shape"] == "blob" and r["location"] == "infratentorial":
            ijk = np.round(inv[:3, :3] @ c + inv[:3, 3]).astype(int)
            assert img[tuple(ijk)] / 0.48 == pytest.approx(r["contrast_to_wm"], rel=0.12)
            checked += 1
        if r["type"] == "stable":
            assert 0.9 <= r["followup_contrast_factor"] <= 1.1
    assert wide.baseline_flair.spacing_mm == pytest.approx((2.0, 2.0, 2.0))
    assert wide.followup_flair.spacing_mm == pytest.approx((2.0, 2.0, 4.0))
    assert wide.truth["truth_new"].same_grid(wide.followup_flair)
    assert wide.case["counts"]["new_visible"] >= 3


def test_widened_options_cover_the_issue_ranges():
    opts = [widened_ms_options(s) for s in range(30)]
    assert sum(o["n_new"] == 0 for o in opts) == 10  # a third stable
    thick = {t for o in opts for t in o["slice_thickness_mm"]}
    assert thick == {1.0, 3.0, 5.0}
    assert any(o["slice_thickness_mm"][0] != o["slice_thickness_mm"][1] for o in opts)
    assert max(o["misalign_deg"] for o in opts) > 10 and max(o["misalign_mm"] for o in opts) > 10
    for o in opts:
        assert o["lesion_contrast_range"] == (1.15, 2.5)
        assert 1.08 <= min(o["flair_gm_wm"]) <= max(o["flair_gm_wm"]) <= 1.3
    assert widened_ms_options(4) == widened_ms_options(4)  # deterministic


def test_unknown_location_is_refused():
    with pytest.raises(ValueError, match="unknown MS location"):
        ms_pair(seed=1, location_weights={"cerebellum": 1.0})


def test_widened_enlarging_lesions_grow_from_the_clinical_enlargement_bound_and_the_old_range_stays_reachable():
    """Enlarging lesions of the widened phantom grow by volume x 1.8-4.1 (WIDENED_GROWTH_RANGE: a linear factor
    whose cube is 1.8, the area change of 45 % that repeated measurement can produce, Molyneux et al. 1992, to
    1.6). Changing only the lower bound draws the same random numbers, so a pair with the old range (kept
    reachable) differs only in its enlarging lesion's size: every other lesion, the protocol and the motion
    are the same."""
    from neurorad.phantom.cases import WIDENED_GROWTH_RANGE

    lo, hi = WIDENED_GROWTH_RANGE
    assert lo**3 == pytest.approx(1.8, abs=1e-3) and hi == 1.6
    opts = [widened_ms_options(s) for s in range(30)]
    assert all(o["growth_range"] == WIDENED_GROWTH_RANGE for o in opts)
    common = dict(seed=11, n_stable=2, n_new=1, n_enlarging=1, in_plane_mm=4.0, slice_thickness_mm=(4.0, 4.0),
                  snr=None, bias_strength=0.0, diameter_range_mm=(4.0, 12.0))
    now = ms_pair(**common, growth_range=WIDENED_GROWTH_RANGE).case["lesions"]
    old = ms_pair(**common, growth_range=(1.35, 1.6)).case["lesions"]
    assert len(now) == len(old) == 4
    for a, b in zip(now, old, strict=True):
        assert a["type"] == b["type"] and a["center_ras_mm"] == pytest.approx(b["center_ras_mm"])
        if a["type"] == "enlarging":
            assert lo <= a["growth_factor_linear"] <= hi and 1.35 <= b["growth_factor_linear"] <= 1.6
            # the same uniform draw u mapped onto each range
            u = (b["growth_factor_linear"] - 1.35) / 0.25
            assert a["growth_factor_linear"] == pytest.approx(lo + u * (hi - lo), abs=1e-3)
            assert max(a["semi_axes_mm"]) < max(b["semi_axes_mm"]) or u == pytest.approx(1.0)
        else:
            assert a["semi_axes_mm"] == pytest.approx(b["semi_axes_mm"])
            assert a["contrast_to_wm"] == pytest.approx(b["contrast_to_wm"])
