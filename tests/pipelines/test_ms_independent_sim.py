"""The independently written MS pair simulator (bench/ms_sim_independent.py) and the benchmark's use of it
(``bench/ms_benchmark.py --phantom independent``): the truth it hands the benchmark must sit on the lesions it
drew, on the follow-up's grid, with the metadata the benchmark bins by, or every figure measured on it is void."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tests._bench import load_bench

pytestmark = pytest.mark.slow  # one pair: ~10 s of anatomy, ~8 s of simulation


def test_independent_pair_truth_lies_on_its_lesions_and_the_benchmark_reads_it() -> None:
    bench = load_bench("ms_benchmark")
    case, spec = bench.independent_case(1)  # seed 1: four new/enlarging lesions on 5 mm slices with a gap
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
    again, _ = bench.independent_case(1)
    np.testing.assert_array_equal(np.asarray(again.followup_flair.data), img.astype(np.float32))
