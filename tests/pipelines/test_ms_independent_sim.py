"""The independently written MS pair simulator (bench/ms_sim_independent.py) and the benchmark's use of it
(``bench/ms_benchmark.py --phantom independent``): the truth it hands the benchmark must sit on the lesions it
drew, on the follow-up's grid, with the metadata the benchmark bins by, or every figure measured on it is void."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tests._bench import load_bench

pytestmark = pytest.mark.slow  # one pair per anatomy: ~10 s of anatomy, ~8 s of simulation


@pytest.mark.parametrize("template", ["colin27", "mni152"])
def test_independent_pair_truth_lies_on_its_lesions_and_the_benchmark_reads_it(template: str) -> None:
    bench = load_bench("ms_benchmark")
    case, spec = bench.independent_case(1, template)  # seed 1: new/enlarging lesions on 5 mm slices with a gap
    assert spec["template"] == template
    fu = case.followup_flair
    tn, te = np.asarray(case.truth_new.data), np.asarray(case.truth_enlarging.data)
    assert case.truth_new.same_grid(fu) and case.truth_enlarging.same_grid(fu)
    # ids: unique across both maps, exactly the metadata's, each with its kind
    ids_new, ids_enl = set(np.unique(tn[tn > 0]).tolist()), set(np.unique(te[te > 0]).tolist())
    assert not ids_new & ids_enl and ids_new | ids_enl
    kinds = {rec["id"]: rec["kind"] for rec in case.case["lesions"]}
    assert {i for i, k in kinds.items() if k == "new"} == ids_new
    assert {i for i, k in kinds.items() if k == "enlarging"} == ids_enl
    assert {rec["location"] for rec in case.case["lesions"]} <= {"periventricular", "juxtacortical", "deep",
                                                                  "infratentorial"}
    # every truth lesion is brighter than the tissue around it on the follow-up image
    img = np.asarray(fu.data, np.float64)
    for tmap in (tn, te):
        for lid in np.unique(tmap[tmap > 0]):
            m = tmap == lid
            ring = ndimage.binary_dilation(m, iterations=3) & ~ndimage.binary_dilation(m) & (tn == 0) & (te == 0)
            assert img[m].mean() > 1.05 * np.median(img[ring]), f"lesion {lid} not brighter than its surround"
    # the spec the benchmark bins by: simulated thickness (not the spacing with its gap)
    assert all(t in (1.0, 3.0, 5.0) for t in spec["slice_thickness_mm"])
    assert max(spec["slice_spacing_mm"]) == pytest.approx(max(max(fu.spacing_mm),
                                                              max(case.baseline_flair.spacing_mm)), abs=1e-3)
    # the same seed gives the same pair
    again, _ = bench.independent_case(1, template)
    np.testing.assert_array_equal(np.asarray(again.followup_flair.data), img.astype(np.float32))


def test_mni152_anatomy_is_a_whole_brain_in_a_head() -> None:
    """The MNI152 brain (``--phantom independent-mni152``): tissue fractions that sum to one everywhere in the
    head, a brain of adult size, lateral ventricles found, infratentorial and supratentorial lesion sites, and a
    different brain from Colin27's (else the phantom checks nothing new)."""
    sim = load_bench("ms_sim_independent")
    sim.set_template("mni152")
    try:
        mni = sim._anatomy()
        total = sum(mni.frac.values())
        head = total > 0.01
        np.testing.assert_allclose(total[head], 1.0, atol=1e-4)
        assert np.all(total[mni.brain] > 0.999)  # the brain is all CSF, GM or WM
        assert not any(np.any(mni.frac[t][mni.brain]) for t in ("air", "dark", "soft", "fat"))
        brain_ml = float(mni.brain.sum()) / 1000  # 1 mm voxels
        assert 1500 < brain_ml < 2100, brain_ml
        vent_ml = float((mni.sd_vent < 0).sum()) / 1000
        assert 8 < vent_ml < 60, vent_ml
        assert len(mni.cand["supra"]) > 100_000 and len(mni.cand["infra"]) > 2_000
        sim.set_template("colin27")
        colin = sim._anatomy()
        assert colin.shape != mni.shape
        assert abs(float(colin.brain.sum()) / 1000 - brain_ml) > 50
    finally:
        sim.set_template("colin27")
