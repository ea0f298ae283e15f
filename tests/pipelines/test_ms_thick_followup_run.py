"""Issue 17, a small new lesion on a thick follow-up, end to end (workflow 1.36.0): a 1 mm baseline against a 3 mm
follow-up moved by exactly one slice thickness along the slice axis, so the common grid (the follow-up's layout moved
by half the motion) has its slices halfway between the follow-up's. Nearest neighbour back to the follow-up then
puts a lesion one slice thick on either neighbour; the workflow delineates it again on the follow-up's own slices
(``ClassifyParams.thick_followup_redelineate``, ``ms_lesions.followup_grid_labels``). The truth is the phantom
generator's (voxels at least half lesion, on the follow-up grid), independent of the workflow; the same pair with
the option off is the comparison."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from neurorad.pipelines.ms_lesions import MSConfig, run_ms_lesions


@pytest.fixture(scope="module")
def half_slice_case():
    from neurorad.phantom.cases import ms_pair

    # 3 mm of motion along z: the halfway space moves the follow-up's 3 mm slices by 1.5 mm, half a slice
    return ms_pair(seed=1, n_stable=2, n_new=4, n_enlarging=0, in_plane_mm=1.0, slice_thickness_mm=(1.0, 3.0),
                   misalign_deg=0.0, misalign_mm=(0.0, 0.0, 3.0), diameter_range_mm=(3.0, 4.5))


def _run(case, out, **classify):  # noqa: ANN001, ANN003, ANN202 - PhantomCase, ClassifyParams fields, MSResult
    """The workflow on ``case`` with the default configuration, ``classify`` overriding ClassifyParams fields."""
    cfg = MSConfig()
    cfg = replace(cfg, write_report=False, write_dicom=False, classify=replace(cfg.classify, **classify))
    return run_ms_lesions(case.baseline_flair, case.followup_flair, out, cfg)


def _provenance_steps(out) -> dict[str, dict]:  # noqa: ANN001 - Path
    """Each provenance step's parameters in ``out``'s result.json, by step name."""
    prov = json.loads((out / "result.json").read_text())
    return {s["name"]: s["parameters"] for s in prov["provenance"]["steps"]}


def _coverage_and_ratio(case, res) -> dict[int, tuple[float, float]]:  # noqa: ANN001 - PhantomCase, MSResult
    """Each truth new lesion: the fraction of its voxels under a reported lesion, and the reported lesions' voxels
    over its own (0, 0 when nothing covers it), on the follow-up grid."""
    truth = np.asarray(case.truth["truth_new"].data)
    lab = np.asarray(res.labels.data)
    out = {}
    for lid in np.unique(truth[truth > 0]):
        m = truth == lid
        hits = [h for h in np.unique(lab[m]) if h > 0]
        covered = float(np.count_nonzero(np.isin(lab[m], hits)) / m.sum()) if hits else 0.0
        ratio = float(np.count_nonzero(np.isin(lab, hits)) / m.sum()) if hits else 0.0
        out[int(lid)] = (covered, ratio)
    return out


@pytest.mark.slow
def test_small_new_lesions_on_a_thick_follow_up_come_back_on_their_own_slices(half_slice_case, tmp_path) -> None:
    case = half_slice_case
    assert MSConfig().classify.thick_followup_redelineate is True  # the default since 1.36.0
    on = _run(case, tmp_path / "on")
    off = _run(case, tmp_path / "off", thick_followup_redelineate=False)
    rec = _provenance_steps(tmp_path / "on")["atlas"]["followup_grid"]
    assert rec["thick_followup"] is True and rec["finer_followup"] is False and rec["delineated_on_followup_grid"]
    off_rec = _provenance_steps(tmp_path / "off")["atlas"]["followup_grid"]
    assert "thick_followup" not in off_rec
    c_on, c_off = _coverage_and_ratio(case, on), _coverage_and_ratio(case, off)
    assert len(c_on) == 4
    # every new lesion is on its own slices with the option; without it one or more lands beside itself (covered
    # under the 40 % the benchmark counts as found)
    assert min(c for c, _ in c_on.values()) >= 0.6, c_on
    assert min(c for c, _ in c_off.values()) < 0.4, c_off
    # and measured closer to its truth (median |detected / truth - 1| over the lesions found either way)
    err_on = np.median([abs(r - 1) for c, r in c_on.values() if c >= 0.4])
    err_off = np.median([abs(r - 1) for c, r in c_off.values() if c >= 0.4])
    assert err_on < err_off, (c_on, c_off)
    # a lesion delineated again is measured on the follow-up grid: its row's volume is its mask there
    lab = np.asarray(on.labels.data)
    rows = {r.id: r for r in on.lesions}
    for i in rec["delineated_on_followup_grid"]:
        assert rows[i].n_voxels == np.count_nonzero(lab == i)
        assert rows[i].volume_mm3 == pytest.approx(np.count_nonzero(lab == i) * on.labels.voxel_volume_mm3, abs=0.01)


@pytest.fixture(scope="module")
def crossed_case():
    from neurorad.phantom.cases import ms_pair

    # 3 mm axial slices against 5 mm coronal ones (slices in two planes), moved 5 mm along the follow-up's slice axis:
    # the common grid (the follow-up's layout, the coarser voxel) has its slices halfway between the follow-up's
    return ms_pair(seed=1, n_stable=2, n_new=4, n_enlarging=0, in_plane_mm=1.0, slice_thickness_mm=(3.0, 5.0),
                   slice_axis=(2, 1), misalign_deg=0.0, misalign_mm=(0.0, 5.0, 0.0), diameter_range_mm=(4.0, 7.0))


@pytest.mark.slow
def test_new_lesions_on_slices_in_two_planes_are_measured_on_the_follow_ups_slices(crossed_case, tmp_path) -> None:
    case = crossed_case
    assert MSConfig().classify.thick_followup_crossed is True  # the default since 1.37.0
    on = _run(case, tmp_path / "on")
    off = _run(case, tmp_path / "off", thick_followup_crossed=False)
    steps = _provenance_steps(tmp_path / "on")
    rec = steps["atlas"]["followup_grid"]
    assert any(p.get("crossed_slices") for p in steps.values())  # the pair is one in two planes
    assert rec["thick_followup"] is True and rec["delineated_on_followup_grid"], rec
    off_rec = _provenance_steps(tmp_path / "off")["atlas"]["followup_grid"]
    assert "thick_followup" not in off_rec
    c_on, c_off = _coverage_and_ratio(case, on), _coverage_and_ratio(case, off)
    assert len(c_on) == 4 and min(c for c, _ in c_on.values()) >= 0.6, c_on
    # the same lesions found, measured closer to their truth on the follow-up's 5 mm slices
    found = [k for k in c_on if c_on[k][0] >= 0.4 and c_off[k][0] >= 0.4]
    assert len(found) >= 3, (c_on, c_off)
    err_on = np.median([abs(c_on[k][1] - 1) for k in found])
    err_off = np.median([abs(c_off[k][1] - 1) for k in found])
    assert err_on < err_off and err_on <= 0.25, (c_on, c_off)
