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


def _label_centroid_ras(vol, lesion_id: int) -> np.ndarray:
    ijk = np.argwhere(np.asarray(vol.data) == lesion_id).mean(0)
    return vol.affine[:3, :3] @ ijk + vol.affine[:3, 3]


@pytest.mark.parametrize("axes", [(2, 1), (0, 2)])
def test_slices_of_other_planes_are_stored_as_a_scanner_stores_them_and_image_the_same_anatomy(axes):
    """A pair of two slice planes (``slice_axis``; axial 2, coronal 1, sagittal 0). Oracles: the grid's affine
    has the in-plane spacing on two world axes and the thickness on the plane's normal, stored last (a coronal
    series' third array axis runs along y); each lesion's truth label, taken to world space through that affine,
    is centred where the generator placed the lesion (``center_ras_mm``, no motion) within a slice; the image is
    brighter inside the lesions than in the brain around them; the pair's lesions, protocol and brain are the
    axial twin's. The workflow's step 1 finds the pair crossed (``ms_lesions.crossed_slices``); the twin not."""
    from dataclasses import replace

    from neurorad.pipelines import ms_lesions as ms

    common = dict(seed=3, n_stable=2, n_new=3, n_enlarging=0, in_plane_mm=2.0, slice_thickness_mm=(4.0, 4.0),
                  misalign_deg=0.0, misalign_mm=0.0, snr=None, bias_strength=0.0, scanner_scaling=False,
                  diameter_range_mm=(9.0, 12.0), lesion_contrast_range=(1.8, 2.2))
    twin = ms_pair(**common)
    pair = ms_pair(**common, slice_axis=axes)
    assert pair.case["parameters"]["slice_axis"] == list(axes) and "slice_axis" not in twin.case["parameters"]
    for tp, axis in zip(("baseline", "followup"), axes, strict=True):
        vol = pair.images[f"{tp}_flair"]
        cols = vol.affine[:3, :3]
        assert np.linalg.norm(cols, axis=0) == pytest.approx((2.0, 2.0, 4.0))
        assert int(np.argmax(np.abs(cols[:, 2]))) == axis  # the slice axis is stored last
        assert vol.metadata["slice_thickness_mm"] == 4.0
        world_sp = np.abs(cols).max(1)  # spacing along x, y, z
        assert world_sp[axis] == 4.0 and np.delete(world_sp, axis) == pytest.approx((2.0, 2.0))
        twin_vol = twin.images[f"{tp}_flair"]
        twin_centre = twin_vol.affine[:3, :3] @ ((np.array(twin_vol.shape) - 1) / 2) + twin_vol.affine[:3, 3]
        centre = cols @ ((np.array(vol.shape) - 1) / 2) + vol.affine[:3, 3]
        assert centre == pytest.approx(twin_centre, abs=2.5)
    def placed(recs: list[dict]) -> list[dict]:  # what the generator drew, not what each grid sampled
        return [{k: v for k, v in r.items() if not k.startswith("volume_mm3")} for r in recs]

    assert placed(pair.case["lesions"]) == placed(twin.case["lesions"])
    fl = pair.truth["truth_followup_lesions"]
    img = np.asarray(pair.followup_flair.data)
    brain = np.asarray(pair.truth["truth_followup_brain"].data) > 0
    for rec in pair.case["lesions"]:
        if rec["volume_mm3_followup"] < 200:
            continue
        got = _label_centroid_ras(fl, rec["id"])
        assert got == pytest.approx(rec["center_ras_mm"], abs=2.5), rec["id"]
        inside = np.asarray(fl.data) == rec["id"]
        assert img[inside].mean() > 1.3 * np.median(img[brain & ~inside])
    for p, crossed in ((pair, True), (twin, False)):
        ctx = ms.MSContext(replace(ms.MSConfig(), write_report=False), None, p.baseline_flair, p.followup_flair)
        ms.STEPS[0].run(ctx)
        assert ms.crossed_slices(ctx.b0, ctx.f0) is crossed


def test_widened_pairs_in_other_planes_keep_their_axial_twins_lesions_motion_and_protocol():
    from neurorad.phantom.cases import WIDENED_ORIENTATIONS

    with pytest.raises(ValueError, match="unknown orientation 'oblique'; choose from axial, random, crossed"):
        widened_ms_options(0, orientation="oblique")
    assert {widened_ms_options(0, orientation=o)["seed"] for o in WIDENED_ORIENTATIONS} == {0}
    crossed_axes, random_axes = set(), set()
    for s in range(40):
        axial = widened_ms_options(s)
        assert "slice_axis" not in axial and widened_ms_options(s, orientation="axial") == axial
        cr = widened_ms_options(s, orientation="crossed")
        assert cr == widened_ms_options(s, orientation="crossed")  # deterministic
        a, b = cr["slice_axis"]
        assert a != b and set(cr["slice_thickness_mm"]) <= {3.0, 5.0}
        crossed_axes.add((a, b))
        rest = ("slice_axis", "slice_thickness_mm")
        assert {k: v for k, v in cr.items() if k not in rest} == {k: v for k, v in axial.items() if k not in rest}
        rnd = widened_ms_options(s, orientation="random")
        random_axes.add(tuple(rnd.get("slice_axis", (2, 2))))
        assert {k: v for k, v in rnd.items() if k != "slice_axis"} == axial
    assert {a for ab in crossed_axes for a in ab} == {0, 1, 2}
    assert (2, 2) in random_axes and len(random_axes) >= 4
    with pytest.raises(ValueError, match="unknown orientation"):
        widened_ms_options(1, orientation="oblique")
    with pytest.raises(ValueError, match="slice_axis"):
        ms_pair(seed=1, slice_axis=3)
