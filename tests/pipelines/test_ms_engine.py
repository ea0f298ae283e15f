"""Unit tests of the classical MS difference engine on synthetic arrays (fast).

Post-processing thresholds of the regional workflow (score > 0.01, 26-connectivity, a voxel > 0.1) with
workflow 1.16.0's minimum candidate volume (> 20 mm^3; the regional workflow's 12), 1.34.0's lesion operating point
(a voxel > 0.0787) and the false-positive
rules (CAD centre-of-gravity rule, misregistration at edges, brain border) are each checked on a case built
to hit exactly one rule.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from neurorad.segment.ms_difference import (
    CandidateParams,
    FPParams,
    PostParams,
    binarise_components,
    candidate_score,
    classify_new_enlarging,
    false_positive_reduction,
    score_from_z,
)


def test_score_anchors_match_regional_thresholds() -> None:
    s = score_from_z(np.array([3.0, 5.0, 50.0, -10.0]), 3.0, 5.0)
    assert s[0] == pytest.approx(0.01, rel=1e-4)
    assert s[1] == pytest.approx(0.1, rel=1e-4)
    assert s[2] == pytest.approx(1.0, abs=1e-6) and s[3] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(score_from_z(np.linspace(-5, 20, 50), 3.0, 5.0)) > 0)


def _blob(score: np.ndarray, corner: tuple[int, int, int], n_vox: int, value: float, peak: float | None = None):
    """A line of n_vox voxels along i starting at corner; optional single peak voxel."""
    i, j, k = corner
    score[i:i + n_vox, j, k] = value
    if peak is not None:
        score[i, j, k] = peak


def test_postprocess_volume_peak_and_binarisation_thresholds() -> None:
    s = np.zeros((40, 40, 40), np.float32)
    _blob(s, (1, 2, 2), 21, 0.05, peak=0.2)  # 21 mm^3 > 20, peak 0.2 > 0.1 -> kept
    _blob(s, (1, 10, 10), 20, 0.05, peak=0.2)  # 20 mm^3 is not > 20 -> dropped
    op = PostParams().min_peak_score  # the lesion operating point (0.0787 since workflow 1.34.0)
    _blob(s, (1, 20, 20), 25, 0.05, peak=op - 0.002)  # a peak under the operating point -> dropped
    _blob(s, (1, 30, 30), 25, 0.01, peak=0.5)  # voxels at exactly 0.01 are not > 0.01: 1 voxel -> dropped
    _blob(s, (1, 35, 35), 25, 0.05, peak=0.09)  # 0.0787 < 0.09 < 0.1: kept since 1.34.0
    labels, n = binarise_components(s, 1.0, PostParams())
    assert n == 2
    assert np.count_nonzero(labels) == 21 + 25 and labels[1, 2, 2] > 0 and labels[1, 35, 35] > 0
    # the regional workflow's peak 0.1 (workflow 1.33.0 and earlier) drops the 0.09 blob
    assert binarise_components(s, 1.0, PostParams(min_peak_score=0.1))[1] == 1
    # with voxel volume 0.5 mm^3 the 21- and 25-voxel blobs are only 10.5 and 12.5 mm^3
    assert binarise_components(s, 0.5, PostParams())[1] == 0
    # the regional workflow's 12 mm^3 (workflow 1.15.1 and earlier) keeps the 20 mm^3 blob too
    assert binarise_components(s, 1.0, PostParams(min_volume_mm3=12.0))[1] == 3


def test_postprocess_uses_26_connectivity() -> None:
    s = np.zeros((30, 20, 20), np.float32)
    for t in range(22):  # a purely diagonal chain of 22 mm^3 (> 20): connected only with 26-connectivity
        s[2 + t, 2 + t % 2, 2 + t % 2] = 0.5
    assert binarise_components(s, 1.0, PostParams())[1] == 1
    assert binarise_components(s, 1.0, PostParams(connectivity=6))[1] == 0


def _pair(shape=(48, 48, 48), seed=0):
    rng = np.random.default_rng(seed)
    b = np.ones(shape, np.float32) + rng.normal(0, 0.03, shape).astype(np.float32)
    f = np.ones(shape, np.float32) + rng.normal(0, 0.03, shape).astype(np.float32)
    brain = np.zeros(shape, bool)
    brain[4:-4, 4:-4, 4:-4] = True
    return b, f, brain


def _ball(shape, c, r):
    g = np.indices(shape)
    return ((g[0] - c[0]) ** 2 + (g[1] - c[1]) ** 2 + (g[2] - c[2]) ** 2) <= r * r


def test_new_lesion_is_found_and_covered() -> None:
    b, f, brain = _pair()
    les = _ball(b.shape, (24, 24, 24), 3)
    f[les] = 1.8
    sp = (1.0, 1.0, 1.0)
    cand = candidate_score(b, f, brain, sp, CandidateParams())
    labels, n = binarise_components(cand.score, 1.0, PostParams())
    labels, n, dec = false_positive_reduction(labels, n, b, f, brain, sp, cand.sigma, cand.brain_median,
                                              cand.brain_sigma, FPParams())
    assert n == 1
    assert np.count_nonzero(labels[les]) / les.sum() >= 0.9
    assert classify_new_enlarging(labels, n, np.zeros_like(brain), sp) == ["new"]


def test_cad_rule_drops_candidate_brighter_at_baseline_centre() -> None:
    b, f, brain = _pair()
    sp = (1.0, 1.0, 1.0)
    ring = _ball(b.shape, (24, 24, 24), 4) & ~_ball(b.shape, (24, 24, 24), 2)
    core = _ball(b.shape, (24, 24, 24), 1)
    labels = np.zeros(b.shape, np.int32)
    labels[_ball(b.shape, (24, 24, 24), 4)] = 1  # one solid candidate
    f[ring] = 1.8
    b[core] = 2.5  # its centre of gravity is brighter at baseline
    f[core] = 1.9
    out, n, dec = false_positive_reduction(labels, 1, b, f, brain, sp, 0.03, 1.0, 0.05, FPParams(cog_rule=True))
    assert n == 0 and "baseline" in dec[0].reason
    # the default (off since 1.1.0): this ring around a bright old core is what an enlarging lesion
    # looks like, and the rule dropped such lesions on tuning pairs
    for fp in (FPParams(cog_rule=False), FPParams()):
        out, n, dec = false_positive_reduction(labels, 1, b, f, brain, sp, 0.03, 1.0, 0.05, fp)
        assert n == 1


def test_misregistration_at_csf_edge_is_dropped() -> None:
    b, f, brain = _pair()
    sp = (1.0, 1.0, 1.0)
    # a CSF slab (dark) in the baseline whose edge moved by one voxel at follow-up
    b[:, :, 20:30] = 0.3
    f[:, :, 21:30] = 0.3
    labels = np.zeros(b.shape, np.int32)
    labels[10:38, 10:38, 20] = 1  # brighter at follow-up: f = 1 where b = 0.3
    out, n, dec = false_positive_reduction(labels, 1, b, f, brain, sp, 0.03, 1.0, 0.05,
                                           FPParams(cog_rule=False))
    assert n == 0 and "misregistration" in dec[0].reason


def test_candidate_at_brain_border_is_dropped() -> None:
    b, f, brain = _pair()
    sp = (1.0, 1.0, 1.0)
    labels = np.zeros(b.shape, np.int32)
    labels[4:7, 20:26, 20:26] = 1  # within 3 voxels of the mask edge
    f[4:7, 20:26, 20:26] = 1.8
    out, n, dec = false_positive_reduction(labels, 1, b, f, brain, sp, 0.03, 1.0, 0.05, FPParams())
    assert n == 0 and "border" in dec[0].reason


def test_diffuse_change_is_dropped_but_focal_and_confident_ones_kept() -> None:
    """A region far larger than a lesion at a low peak score is region-wide change, not a lesion;
    the same region with a confident core, or a small faint candidate, is kept (FPParams.diffuse_rule)."""
    b, f, brain = _pair()
    sp = (2.0, 2.0, 2.0)  # 8 mm^3 voxels: the 10^3-voxel block is 8 mL, the 2^3 block 64 mm^3
    labels = np.zeros(b.shape, np.int32)
    labels[15:25, 15:25, 15:25] = 1
    labels[30:32, 30:32, 30:32] = 2
    f[labels > 0] = 1.15
    score = np.zeros(b.shape, np.float32)
    score[labels > 0] = 0.2
    out, n, dec = false_positive_reduction(labels, 2, b, f, brain, sp, 0.03, 1.0, 0.05, FPParams(), score=score)
    assert n == 1 and dec[0].reason.startswith("diffuse change (8.0 mL") and dec[1].kept
    assert np.array_equal(out > 0, labels == 2)
    score[20, 20, 20] = 0.65  # a moderate peak (bias-field residual regions at 1 mm reached 0.57-0.67): dropped
    assert false_positive_reduction(labels, 2, b, f, brain, sp, 0.03, 1.0, 0.05, FPParams(), score=score)[1] == 1
    score[20, 20, 20] = 0.9  # a confident core: a large lesion, kept
    assert false_positive_reduction(labels, 2, b, f, brain, sp, 0.03, 1.0, 0.05, FPParams(), score=score)[1] == 2
    score[20, 20, 20] = 0.2
    # without the score map, or with the rule off, nothing is dropped for size
    assert false_positive_reduction(labels, 2, b, f, brain, sp, 0.03, 1.0, 0.05, FPParams())[1] == 2
    assert false_positive_reduction(labels, 2, b, f, brain, sp, 0.03, 1.0, 0.05, FPParams(diffuse_rule=False),
                                    score=score)[1] == 2


def test_region_larger_than_a_tumefactive_lesion_is_diffuse_whatever_its_peak() -> None:
    """A confident region whose half-maximum extent is over the volume of a 20 mm sphere (4189 mm^3, tumefactive
    size) is region-wide change, not a new lesion; just under the bound it is kept, and so is a large candidate
    whose extent is only a faint halo around a small lesion (FPParams.diffuse_max_focal_volume_mm3, 1.5.0)."""
    b, f, brain = _pair()
    sp = (1.0, 1.0, 1.0)
    bound = FPParams().diffuse_max_focal_volume_mm3
    assert bound is not None and (6 * bound / np.pi) ** (1 / 3) == pytest.approx(20.0, abs=0.01)
    labels = np.zeros(b.shape, np.int32)
    labels[5:35, 5:35, 5:9] = 1  # 30 x 30 x 4 = 3600 voxels of 1 mm^3: under the bound
    labels[5:35, 5:35, 9] = 2  # a 900-voxel slab beside it: joined below
    f[labels > 0] = 1.3
    diff = np.where(labels > 0, 0.3, 0.0).astype(np.float32)  # a flat change: all of it at half maximum
    score = np.where(labels > 0, 0.99, 0.0).astype(np.float32)
    args = (b, f, brain, sp, 0.03, 1.0, 0.05)
    fp = FPParams(border_margin_mm=0.0, dipole_rule=False, drift_rule=False, loss_alone_ratio=None)
    out, n, dec = false_positive_reduction(labels, 2, *args, fp, difference=diff, score=score)
    assert n == 2 and all(d.kept for d in dec)
    joined = (labels > 0).astype(np.int32)  # 4500 mm^3: over the bound
    out, n, dec = false_positive_reduction(joined, 1, *args, fp, difference=diff, score=score)
    assert n == 0 and dec[0].reason.startswith("diffuse change (4.5 mL at half maximum, peak score 0.99)")
    assert "20 mm" in dec[0].reason and "tumefactive" in dec[0].reason
    # the same 4.5 mL candidate extent, but its change is a 300-voxel lesion in a faint halo (0.1 of its peak):
    # the lesion measures 0.3 mL at half maximum and is kept
    halo = np.where(joined > 0, 0.03, 0.0).astype(np.float32)
    halo[10:20, 10:20, 5:8] = 0.3
    assert false_positive_reduction(joined, 1, *args, fp, difference=halo, score=score)[1] == 1
    # the peak is the peak_percentile of the candidate's change (the classify step's): at the median, the halo
    # (93% of the voxels) is the peak and the whole 4.5 mL is at half maximum
    assert false_positive_reduction(joined, 1, *args, fp, difference=halo, score=score, peak_percentile=50.0)[1] == 0
    for off in (replace(fp, diffuse_max_focal_volume_mm3=None), replace(fp, diffuse_rule=False)):
        assert false_positive_reduction(joined, 1, *args, off, difference=diff, score=score)[1] == 1
    # without the difference map the size cannot be measured: nothing is dropped for it
    assert false_positive_reduction(joined, 1, *args, fp, score=score)[1] == 1


def test_fp_step_warns_about_diffuse_change_it_did_not_report(tmp_path) -> None:
    """The workflow step never drops a region-wide change silently: a quality warning names it."""
    from neurorad.image.volume import Volume
    from neurorad.pipelines.ms_lesions import MSConfig, MSContext, step_decide, step_fp_reduction
    from neurorad.segment.ms_difference import Candidates

    b, f, brain = _pair()
    labels = np.zeros(b.shape, np.int32)
    labels[15:25, 15:25, 15:25] = 1
    f[labels > 0] = 1.15
    score = np.where(labels > 0, 0.2, 0.0).astype(np.float32)
    ctx = MSContext(MSConfig(), tmp_path, None, None)
    ctx.ref = Volume(np.zeros(b.shape, np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    ctx.bn, ctx.fn, ctx.brain, ctx.labels0, ctx.n0 = b, f, brain, labels, 1
    ctx.cand = Candidates(f - b, (f - b) / 0.03, score, 0.03, 1.0, 0.05)
    step_fp_reduction(ctx)
    assert ctx.n == 0
    assert len(ctx.warnings) == 1 and "8.0 mL at peak score 0.20" in ctx.warnings[0]
    assert "diffuse" in ctx.warnings[0] and "difference map" in ctx.warnings[0]
    assert "tumefactive" not in ctx.warnings[0]
    step_decide(ctx)  # a low, region-wide change: no lesion, nothing left to the reader
    assert ctx.decision.unresolved_regions == 0 and ctx.decision.gadolinium_label == "NOT NEEDED"
    # a confident region of tumefactive size: dropped, and the warning says it may be a large lesion
    ctx.cand = Candidates(f - b, (f - b) / 0.03, np.where(labels > 0, 0.95, 0.0).astype(np.float32), 0.03, 1.0, 0.05)
    ctx.warnings = []
    step_fp_reduction(ctx)
    assert ctx.n == 0 and "at half maximum, peak score 0.95" in ctx.warnings[0] and "tumefactive" in ctx.warnings[0]
    # ... and the decision does not say "no new lesion, gadolinium not needed" (workflow 1.5.2)
    ctx.kinds = []
    step_decide(ctx)
    assert ctx.decision.unresolved_regions == 1 and ctx.decision.gadolinium_label == "READER TO DECIDE"
    assert "not needed" not in ctx.decision.conclusion
    # the step measures with the run's ClassifyParams.peak_percentile: a 3.6 mL core (45% of the voxels) in a
    # faint 8 mL halo is under the bound at the 95th percentile (kept) and over it at the 50th (dropped)
    halo = np.where(labels > 0, 0.01, 0.0).astype(np.float32)
    halo[16:24, 16:24, 16:23] = 0.3  # 448 voxels of 8 mm^3
    for pct, n in ((95.0, 1), (50.0, 0)):
        ctx.cfg = replace(MSConfig(), classify=replace(MSConfig().classify, peak_percentile=pct))
        ctx.cand = Candidates(halo, halo / 0.03, np.where(labels > 0, 0.95, 0.0).astype(np.float32), 0.03, 1.0, 0.05)
        ctx.warnings = []
        step_fp_reduction(ctx)
        assert ctx.n == n, pct


def test_enlarging_when_touching_a_baseline_lesion() -> None:
    shape = (30, 30, 30)
    labels = np.zeros(shape, np.int32)
    labels[10:14, 10:14, 10:14] = 1
    labels[20:23, 20:23, 20:23] = 2
    base = np.zeros(shape, bool)
    base[14:16, 10:14, 10:14] = True  # adjacent to component 1 only
    assert classify_new_enlarging(labels, 2, base, (1.0, 1.0, 1.0)) == ["enlarging", "new"]


def test_enlarging_test_in_boxes_equals_the_whole_volume_distance_map() -> None:
    """Oracle: the definition (distance to the nearest baseline lesion voxel over the whole volume,
    scipy's exact EDT) on random anisotropic cases; the step computes it only around each candidate."""
    from scipy import ndimage

    from neurorad.segment.ms_difference import ClassifyParams

    rng = np.random.default_rng(17)
    n_enlarging = 0
    for _ in range(60):
        shape = tuple(int(v) for v in rng.integers(12, 36, 3))
        sp = tuple(float(v) for v in rng.choice([0.8, 1.0, 1.5, 3.0, 5.0], 3))
        base = ndimage.binary_dilation(rng.random(shape) < 0.003, iterations=int(rng.integers(0, 3)))
        cand = ndimage.binary_dilation(rng.random(shape) < 0.003, iterations=int(rng.integers(0, 3)))
        labels, n = ndimage.label(cand)
        params = ClassifyParams(touch_radius_mm=float(rng.uniform(0.5, 6.0)))
        near = ndimage.distance_transform_edt(~base, sampling=sp) <= params.touch_radius_mm
        expect = ["enlarging" if near[labels == i].any() else "new" for i in range(1, n + 1)]
        assert classify_new_enlarging(labels, n, base, sp, params) == expect
        n_enlarging += expect.count("enlarging")
    assert n_enlarging > 10  # the cases exercise both answers


def test_touched_baseline_lesions_are_those_within_the_radius() -> None:
    """touched_baseline_ids (which baseline lesions a candidate touches: new vs enlarging, the enlarging growth, the
    grown extent and the per-lesion split all read it) against the definition by brute force: every pair of voxel
    centres in mm (scipy's cdist), on random anisotropic boxes with labelled baseline lesions."""
    from scipy import ndimage
    from scipy.spatial.distance import cdist

    from neurorad.segment.ms_difference import touched_baseline_ids

    rng = np.random.default_rng(23)
    touched = 0
    for _ in range(40):
        shape = tuple(int(v) for v in rng.integers(10, 24, 3))
        sp = tuple(float(v) for v in rng.choice([0.8, 1.0, 1.5, 3.0, 5.0], 3))
        base_lab, k = ndimage.label(ndimage.binary_dilation(rng.random(shape) < 0.004, iterations=1))
        own = ndimage.binary_dilation(rng.random(shape) < 0.002, iterations=1)
        if not own.any():
            continue
        radius = float(rng.uniform(0.5, 6.0))
        xyz = np.argwhere(own) * np.asarray(sp)
        expect = [j for j in range(1, k + 1)
                  if cdist(xyz, np.argwhere(base_lab == j) * np.asarray(sp)).min() <= radius]
        got = touched_baseline_ids(own, base_lab, radius, sp)
        assert got.tolist() == expect
        assert touched_baseline_ids(own, base_lab > 0, radius, sp).size == (1 if expect else 0)
        touched += len(expect)
    assert touched > 10  # the cases exercise touching and not touching
    assert touched_baseline_ids(np.ones((3, 3, 3), bool), np.zeros((3, 3, 3), np.int32), 9.0, (1, 1, 1)).size == 0


def test_empty_brain_mask_is_an_error() -> None:
    b, f, brain = _pair()
    with pytest.raises(ValueError):
        candidate_score(b, f, np.zeros_like(brain), (1.0, 1.0, 1.0))
