"""Issue 17, lesion volumes across a protocol change, end to end: a 5 mm baseline against a 1.5 mm follow-up. The
workflow delineates each new lesion again on the follow-up's grid (``ms_lesions.followup_grid_labels``) and
measures it there; the truth is the phantom generator's (voxels at least half lesion, on the follow-up grid),
independent of the workflow. The same pair with the finer delineation off is the comparison."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from neurorad.pipelines.ms_lesions import MSConfig, run_ms_lesions

IN_PLANE_MM = 1.5


@pytest.fixture(scope="module")
def thick_baseline_case():
    from neurorad.phantom.cases import ms_pair

    return ms_pair(seed=21, n_stable=3, n_new=3, n_enlarging=1, in_plane_mm=IN_PLANE_MM,
                   slice_thickness_mm=(5.0, IN_PLANE_MM), misalign_deg=4.0, misalign_mm=4.0,
                   diameter_range_mm=(5.0, 9.0))


def _run(case, out, cfg: MSConfig):  # noqa: ANN001, ANN202 - PhantomCase, MSResult
    return run_ms_lesions(case.baseline_flair, case.followup_flair, out,
                          replace(cfg, write_report=False, write_dicom=False))


def _ratios(case, res) -> list[float]:  # noqa: ANN001 - PhantomCase, MSResult
    """Detected / truth volume of each found new lesion (its detections' voxels on the follow-up grid)."""
    truth = np.asarray(case.truth["truth_new"].data)
    lab = np.asarray(res.labels.data)
    out = []
    for lid in np.unique(truth[truth > 0]):
        m = truth == lid
        hits = [h for h in np.unique(lab[m]) if h > 0]
        if hits and np.count_nonzero(np.isin(lab[m], hits)) >= 0.4 * m.sum():
            out.append(float(np.count_nonzero(np.isin(lab, hits)) / m.sum()))
    return out


@pytest.mark.slow
def test_new_lesions_on_a_thick_baseline_are_measured_on_the_follow_ups_grid(thick_baseline_case, tmp_path) -> None:
    case = thick_baseline_case
    res = _run(case, tmp_path / "on", MSConfig())
    off = _run(case, tmp_path / "off", replace(MSConfig(), classify=replace(MSConfig().classify,
                                                                               finer_followup_ratio=None)))
    prov = json.loads((tmp_path / "on" / "result.json").read_text())
    atlas = next(s for s in prov["provenance"]["steps"] if s["name"] == "atlas")
    rec = atlas["parameters"]["followup_grid"]
    assert rec["finer_followup"] is True and rec["delineated_on_followup_grid"], rec
    off_prov = json.loads((tmp_path / "off" / "result.json").read_text())
    off_atlas = next(s for s in off_prov["provenance"]["steps"] if s["name"] == "atlas")
    assert off_atlas["parameters"]["followup_grid"] == {"finer_followup": False}
    # the same lesions are found either way: only their masks and volumes change
    assert len(res.lesions) == len(off.lesions) and len(_ratios(case, res)) == len(_ratios(case, off)) >= 2
    on_err = np.median(np.abs(np.array(_ratios(case, res)) - 1))
    off_err = np.median(np.abs(np.array(_ratios(case, off)) - 1))
    assert on_err <= 0.2 and on_err < off_err, (_ratios(case, res), _ratios(case, off))
    # each lesion delineated again: its row's volume is its mask on the follow-up grid, judged measurable at the
    # follow-up's slice thickness (1.5 mm), where the coarser input's 5 mm flags lesions under 8.5 mm
    lab = np.asarray(res.labels.data)
    vox = res.labels.voxel_volume_mm3
    rows = {r.id: r for r in res.lesions}
    for i in rec["delineated_on_followup_grid"]:
        r = rows[i]
        assert r.volume_mm3 == pytest.approx(np.count_nonzero(lab == i) * vox, abs=0.01)
        assert r.volume_change_mm3 == pytest.approx(r.volume_mm3 - r.baseline_volume_mm3, abs=0.02)
        assert r.n_voxels == np.count_nonzero(lab == i)
        assert r.volume_measurable is (r.diameter_mm >= 1.7 * IN_PLANE_MM)
    # the enlarging lesion is measured on the follow-up's grid too, over the baseline volume of the common grid
    enl = [r for r in res.lesions if r.kind == "enlarging"]
    assert enl and all(r.id in rec["delineated_on_followup_grid"] and r.baseline_volume_mm3 > 0 for r in enl)
    # an untrusted lesion keeps the common grid's mask: labels that were not delineated again agree
    kept = [r.id for r in res.lesions if r.id not in rec["delineated_on_followup_grid"]]
    lab_off = np.asarray(off.labels.data)
    for i in kept:
        assert np.array_equal(lab == i, lab_off == i)
