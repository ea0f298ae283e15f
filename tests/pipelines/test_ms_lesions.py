"""End to end: the MS workflow on coarse (2 mm) phantom pairs built on real anatomy, and bad input.

The truth (new lesion instance maps on the follow-up grid) comes from the phantom generator,
independently of the workflow; a lesion is found when the detection covers >= 40% of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from neurorad.errors import InputError, ProcessingError
from neurorad.image.nifti import load_nifti, save_nifti
from neurorad.image.volume import Volume
from neurorad.pipelines.ms_lesions import run_ms_lesions
from tests._bench import load_bench

VOXEL_MM = 2.0


@pytest.fixture(scope="module")
def positive_case():
    from neurorad.phantom.cases import ms_pair

    return ms_pair(seed=11, n_stable=4, n_new=2, n_enlarging=1, in_plane_mm=VOXEL_MM, slice_thickness_mm=VOXEL_MM,
                   misalign_deg=6.0, misalign_mm=6.0, diameter_range_mm=(7.0, 12.0))


@pytest.fixture(scope="module")
def positive_run(positive_case, tmp_path_factory):
    out = tmp_path_factory.mktemp("pos") / "out"
    return run_ms_lesions(positive_case.baseline_flair, positive_case.followup_flair, out), out


@pytest.mark.slow
def test_positive_pair_counts_the_enlarging_lesion(positive_run) -> None:
    # was a strict xfail (the old engine reported the enlarging lesion as a third new one); the
    # issue-17 engine counts it (no stable-lesion signal change reaches the enlarging check)
    res, _ = positive_run
    assert (res.decision.n_new, res.decision.n_enlarging) == (2, 1), res.decision


@pytest.mark.slow
def test_positive_pair_is_active_with_located_lesions(positive_case, positive_run) -> None:
    res, out = positive_run
    assert res.active and res.decision.gadolinium
    truth = np.asarray(positive_case.truth["truth_new"].data)
    det = np.asarray(res.labels.data)
    assert res.labels.same_grid(positive_case.followup_flair)
    for lid in np.unique(truth[truth > 0]):
        m = truth == lid
        assert np.count_nonzero(det[m]) / m.sum() >= 0.4, f"new lesion {lid} not found"
    # the phantom has 2 new and 1 enlarging lesion: no false candidate on top of them
    assert res.decision.n_new >= 2 and res.decision.n_new + res.decision.n_enlarging <= 3, res.decision
    # partial-volume rule: a detected new lesion measures its truth volume (the candidate extent
    # measured 1.4-2.1x before the half-maximum delineation of issue 17)
    for lid in np.unique(truth[truth > 0]):
        hits = [h for h in np.unique(det[truth == lid]) if h > 0]
        vol = sum(np.count_nonzero(det == h) for h in hits)
        assert 0.75 <= vol / np.count_nonzero(truth == lid) <= 1.33, f"new lesion {lid}: volume {vol} voxels"
    # the enlarging lesion is reported as its whole follow-up extent (rim grown into the old lesion)
    enl = np.asarray(positive_case.truth["truth_enlarging"].data)
    for lid in np.unique(enl[enl > 0]):
        m = enl == lid
        assert np.count_nonzero(det[m]) / m.sum() >= 0.4, f"enlarging lesion {lid}: whole extent not covered"
    for r in res.lesions:
        if r.kind == "enlarging":
            assert r.baseline_volume_mm3 > 0
            assert r.volume_change_mm3 == pytest.approx(r.volume_mm3 - r.baseline_volume_mm3, abs=0.02)
        else:
            assert r.baseline_volume_mm3 == 0 and r.volume_change_mm3 == r.volume_mm3
    assert any(r.aal_region or r.jhu_tract for r in res.lesions)
    # the reported centroid of each truth new lesion is within 5 mm of the phantom's centre
    centres = [np.array(rec["center_followup_ras_mm"]) for rec in positive_case.case["lesions"] if rec["type"] == "new"]
    xyz = np.array([[r.centroid_x_mm, r.centroid_y_mm, r.centroid_z_mm] for r in res.lesions])
    for c in centres:
        assert np.min(np.linalg.norm(xyz - c, axis=1)) < 5.0
    # outputs
    for name in ("new_lesions.nii.gz", "score.nii.gz", "difference.nii.gz", "baseline.nii.gz", "followup.nii.gz",
                 "lesions.csv", "result.json", "report.html", "report.pdf", "dicom/seg.dcm", "dicom/report_pdf.dcm"):
        assert (out / name).exists(), name
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    r = json.loads((out / "result.json").read_text())
    assert r["decision"]["active"] and r["counts"]["total"] == len(res.lesions)
    assert r["parameters"]["post"]["binarise_threshold"] == 0.01 and r["parameters"]["post"]["min_volume_mm3"] == 20.0
    # volume-measurability flag per lesion (7-12 mm lesions on 2 mm voxels: all measurable) and the rule
    from neurorad.segment.ms_difference import volume_measurable

    assert r["volume_rule"]["slice_thickness_mm"] == pytest.approx(VOXEL_MM)
    assert "slice thickness" in r["volume_rule"]["rule"]
    assert [le["volume_measurable"] for le in r["lesions"]] == [volume_measurable(le["volume_mm3"], VOXEL_MM)
                                                               for le in r["lesions"]]
    assert r["volumes_mm3"]["n_not_measurable"] == sum(not le["volume_measurable"] for le in r["lesions"])
    assert "volume_measurable" in (out / "lesions.csv").read_text().splitlines()[0]
    steps = {s["name"]: s for s in r["provenance"]["steps"]}
    assert steps["brain"]["weights_sha256"] and len(r["provenance"]["inputs"]["baseline"]) == 64
    assert all(s["seconds"] >= 0 for s in steps.values())
    # SEG readable by highdicom, on the follow-up geometry, one segment per lesion
    seg = hd.seg.segread(out / "dicom" / "seg.dcm")
    assert seg.number_of_segments == len(res.lesions)
    vol = seg.get_volume(combine_segments=True, relabel=True)
    ras = np.diag([-1.0, -1.0, 1.0])
    theirs = (np.argwhere(vol.array > 0) @ vol.affine[:3, :3].T + vol.affine[:3, 3]) @ ras.T
    ours = res.labels.voxel_to_world(np.argwhere(det > 0))
    assert len(theirs) == len(ours)
    assert np.allclose(np.sort(theirs, axis=0), np.sort(ours, axis=0), atol=1e-2)
    assert list((out / "dicom" / "sc").glob("*.dcm"))
    # the NIfTI follow-up's DICOM reference series: whole, nothing else left
    ref = list((out / "dicom" / "followup_reference").glob("*.dcm"))
    assert len(ref) == positive_case.followup_flair.spatial_shape[2]
    assert not [p.name for p in (out / "dicom").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_storage_order_of_the_inputs_changes_nothing(positive_case, positive_run, tmp_path) -> None:
    """The same pair stored in other voxel orders (baseline as DICOM's LPS, follow-up as a sagittal stack, axes
    A-S-L) gives the same lesions at the same world positions: the result is on the follow-up's own grid, its SEG
    frames sit where the follow-up's slices are, and no axis is flipped on the way back (left/right)."""
    from neurorad.image.geometry import reorient

    res_ras, _ = positive_run
    b = reorient(positive_case.baseline_flair, "LPS")
    f = reorient(positive_case.followup_flair, "ASL")
    assert (f.orientation, b.orientation) == ("ASL", "LPS")
    out = tmp_path / "out"
    res = run_ms_lesions(b, f, out)
    assert res.labels.same_grid(f)
    assert (res.decision.n_new, res.decision.n_enlarging) == (res_ras.decision.n_new, res_ras.decision.n_enlarging)
    # every detected voxel at the same world position (ids may differ)
    back = np.asarray(reorient(res.labels, "RAS").data) > 0
    assert reorient(res.labels, "RAS").same_grid(positive_case.followup_flair)
    ras = np.asarray(res_ras.labels.data) > 0
    assert np.count_nonzero(back ^ ras) <= 0.01 * np.count_nonzero(ras), (np.count_nonzero(back ^ ras), ras.sum())
    assert sorted(round(le.volume_mm3) for le in res.lesions) == pytest.approx(
        sorted(round(le.volume_mm3) for le in res_ras.lesions), rel=0.05, abs=8)
    # the SEG (highdicom's reading) puts the lesion voxels at the world positions of the label map
    seg = hd.seg.segread(out / "dicom" / "seg.dcm")
    vol = seg.get_volume(combine_segments=True, relabel=True)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    theirs = (np.argwhere(vol.array > 0) @ vol.affine[:3, :3].T + vol.affine[:3, 3]) @ lps_to_ras.T
    ours = res.labels.voxel_to_world(np.argwhere(np.asarray(res.labels.data) > 0))
    assert len(theirs) == len(ours)
    assert np.allclose(np.sort(theirs, axis=0), np.sort(ours, axis=0), atol=1e-2)
    # lesion centroids in the right hemisphere of the world, not mirrored
    xyz = sorted((round(le.centroid_x_mm), round(le.centroid_y_mm), round(le.centroid_z_mm)) for le in res.lesions)
    xyz_ras = sorted((round(le.centroid_x_mm), round(le.centroid_y_mm), round(le.centroid_z_mm))
                     for le in res_ras.lesions)
    assert np.allclose(np.array(xyz, float), np.array(xyz_ras, float), atol=2.0)


@pytest.mark.slow
def test_the_inputs_intensity_units_and_storage_type_change_nothing(positive_case, positive_run, tmp_path) -> None:
    """Sites send FLAIRs in any intensity units and storage type: the baseline here is scaled by 1/1000 as floats,
    the follow-up rescaled into 0-300 and stored as int16. The lesions must be the same voxel for voxel (at most
    2 % may differ, the int16 rounding). Until workflow 1.20.0 N4 shifted an image with non-positive voxels (the
    common grid's zero padding) by 1 - min, an offset of twice the brain median on a 0-1 image and 2 % of it on a
    0-4095 one: the bias correction, and with it the lesions, depended on the units (9 of 172 voxels differed
    here)."""
    b0, f0 = positive_case.baseline_flair, positive_case.followup_flair
    b = b0.with_data((np.asarray(b0.data, np.float32) * np.float32(1e-3)).astype(np.float32))
    fd = np.asarray(f0.data, np.float64)
    f = f0.with_data(np.round(fd / np.percentile(fd, 99.9) * 300.0).clip(0, 32767).astype(np.int16))
    res_ras, _ = positive_run
    res = run_ms_lesions(b, f, tmp_path / "out")
    assert [le.kind for le in res.lesions] == [le.kind for le in res_ras.lesions]
    got, ref = np.asarray(res.labels.data) > 0, np.asarray(res_ras.labels.data) > 0
    assert np.count_nonzero(got ^ ref) <= 0.02 * np.count_nonzero(ref), (np.count_nonzero(got ^ ref), ref.sum())


@pytest.mark.slow
def test_a_z_scored_baseline_and_an_offset_follow_up_find_the_same_lesions(positive_case, positive_run,
                                                                           tmp_path) -> None:
    """Research pipelines also write FLAIRs z-scored (mean 0, SD 1: most of the head negative) or with an offset.
    The engine's ratios need a magnitude image's zero, which workflow 1.22.2 puts back (each series shifted so that
    its darkest 1 % sits at 0, with a warning): the same lesions as the pair as acquired, voxel for voxel within
    2 % (1 of 172 voxels differs; without the shift the same three lesions, but 19 voxels differ)."""
    from neurorad.preprocess.normalize import zscore

    b0, f0 = positive_case.baseline_flair, positive_case.followup_flair
    fd = np.asarray(f0.data, np.float32)
    f = f0.with_data((fd - np.float32(2.0 * np.median(fd[fd > np.percentile(fd, 60)]))).astype(np.float32))
    assert np.mean(np.asarray(f.data) < 0) > 0.5
    res_ras, _ = positive_run
    res = run_ms_lesions(zscore(b0), f, tmp_path / "out")
    shifted = [w for w in res.warnings if "not a magnitude image" in w]
    assert [w.split(":")[0] for w in shifted] == ["baseline", "follow-up"], res.warnings
    assert [le.kind for le in res.lesions] == [le.kind for le in res_ras.lesions]
    got, ref = np.asarray(res.labels.data) > 0, np.asarray(res_ras.labels.data) > 0
    assert np.count_nonzero(got ^ ref) <= 0.02 * np.count_nonzero(ref), (np.count_nonzero(got ^ ref), ref.sum())


@pytest.mark.slow
def test_a_skull_stripped_baseline_finds_the_same_lesions(positive_case, positive_run, tmp_path) -> None:
    """Research pipelines often send FLAIRs already skull-stripped (zero outside the brain, as HD-BET writes them).
    A stripped baseline against an unstripped follow-up: the same lesions, each within a few voxels (brain
    extraction of a stripped image draws its own edge, so up to 15 % of the voxels may differ)."""
    from neurorad.pipelines import _engines

    b0 = positive_case.baseline_flair
    mask, _, _ = _engines.brain_mask(b0)
    b = b0.with_data(np.where(np.asarray(mask.data, bool), np.asarray(b0.data, np.float32), 0.0).astype(np.float32))
    res_ras, _ = positive_run
    res = run_ms_lesions(b, positive_case.followup_flair, tmp_path / "out")
    assert (res.decision.n_new, res.decision.n_enlarging) == (res_ras.decision.n_new, res_ras.decision.n_enlarging)
    assert len(res.lesions) == len(res_ras.lesions)
    got, ref = np.asarray(res.labels.data) > 0, np.asarray(res_ras.labels.data) > 0
    assert np.count_nonzero(got ^ ref) <= 0.15 * np.count_nonzero(ref), (np.count_nonzero(got ^ ref), ref.sum())


@pytest.mark.slow
def test_an_oblique_follow_up_finds_the_same_lesions_and_its_seg_follows_the_tilt(positive_case, positive_run,
                                                                                  tmp_path) -> None:
    """A follow-up acquired tilted (an oblique affine: 14 degrees about the left-right axis, as slices angled to the
    AC-PC line): the same lesions are found on its own grid as in the untilted run (the tilt is one rigid motion
    more for registration), and the SEG's frames carry the tilt (highdicom's reading puts each lesion voxel at the
    label map's world position).

    The voxels: the tilt makes registration resample the follow-up at other positions, which moves a lesion's
    border by a fraction of a 2 mm voxel; on these lesions of 20-90 voxels that is 15-25 % of each. Each lesion of
    one run overlaps exactly one of the other's, and the Dice coefficient over all lesion voxels is >= 0.75 (the
    classical engine 0.83, fusion, the default since workflow 1.22.0, 0.82; an earlier form of this check, overlap
    >= 0.8 x the larger run, held the classical engine at exactly 148 of 185 voxels)."""
    f0 = positive_case.followup_flair
    a = np.deg2rad(14.0)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    centre = f0.voxel_to_world((np.asarray(f0.spatial_shape) - 1) / 2.0)[0]
    shift, back = np.eye(4), np.eye(4)
    shift[:3, 3], back[:3, 3] = -centre, centre
    f = Volume(np.asarray(f0.data), back @ rot @ shift @ f0.affine, dict(f0.metadata))
    assert f.is_oblique
    res_ras, _ = positive_run
    out = tmp_path / "out"
    res = run_ms_lesions(positive_case.baseline_flair, f, out)
    assert res.labels.same_grid(f)
    assert (res.decision.n_new, res.decision.n_enlarging) == (res_ras.decision.n_new, res_ras.decision.n_enlarging)
    lab, lab_ras = np.asarray(res.labels.data), np.asarray(res_ras.labels.data)
    det, det_ras = lab > 0, lab_ras > 0
    for one, other in ((lab, lab_ras), (lab_ras, lab)):
        for i in np.unique(one[one > 0]):
            assert len(np.unique(other[(one == i) & (other > 0)])) == 1, i
    dice = 2.0 * np.count_nonzero(det & det_ras) / (det.sum() + det_ras.sum())
    assert dice >= 0.75, (dice, det.sum(), det_ras.sum())
    seg = hd.seg.segread(out / "dicom" / "seg.dcm")
    vol = seg.get_volume(combine_segments=True, relabel=True)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    theirs = (np.argwhere(vol.array > 0) @ vol.affine[:3, :3].T + vol.affine[:3, 3]) @ lps_to_ras.T
    ours = res.labels.voxel_to_world(np.argwhere(det))
    assert len(theirs) == len(ours)
    assert np.allclose(np.sort(theirs, axis=0), np.sort(ours, axis=0), atol=1e-2)


@pytest.mark.slow
def test_negative_pair_no_new_lesion_no_gadolinium(tmp_path) -> None:
    from neurorad.phantom.cases import ms_pair

    case = ms_pair(seed=12, n_stable=5, n_new=0, n_enlarging=0, in_plane_mm=VOXEL_MM, slice_thickness_mm=VOXEL_MM,
                   misalign_deg=6.0, misalign_mm=6.0)
    b, f = tmp_path / "b.nii.gz", tmp_path / "f.nii.gz"
    save_nifti(case.baseline_flair, b)
    save_nifti(case.followup_flair, f)
    from neurorad.pipelines.ms_lesions import PROGRESS_STAGES

    stages: list[str] = []
    res = run_ms_lesions(b, f, tmp_path / "out", progress=stages.append)
    assert stages == list(PROGRESS_STAGES)  # the CLI's bar is sized by PROGRESS_STAGES: it ends at n/n
    assert not res.active and not res.decision.gadolinium
    assert res.lesions == []
    assert "No new or enlarging" in (tmp_path / "out" / "report.html").read_text()
    assert (tmp_path / "out" / "report.pdf").exists() and (tmp_path / "out" / "dicom" / "report_pdf.dcm").exists()
    assert not (tmp_path / "out" / "dicom" / "seg.dcm").exists()
    assert int(load_nifti(tmp_path / "out" / "new_lesions.nii.gz").data.max()) == 0


def test_failed_registration_is_detected_and_leaves_no_output(positive_case, tmp_path, monkeypatch) -> None:
    """A registration that converged to a wrong pose (12 mm off) must be caught by the similarity check."""
    from types import SimpleNamespace

    from neurorad.pipelines import _engines, ms_lesions
    from neurorad.preprocess.transforms import AffineTransform

    truth_mask = positive_case.truth["truth_baseline_brain"]

    def stub_mask(volume, engine="deepbet"):  # the phantom's true brain mask: fast, and not what is tested
        assert volume.spatial_shape == truth_mask.spatial_shape
        return volume.with_data(np.asarray(truth_mask.data) > 0), "truth", None

    wrong = np.eye(4)
    wrong[:3, 3] = [12.0, 0.0, 0.0]

    def stub_register(fixed, moving, **kw):
        return SimpleNamespace(transform=AffineTransform(wrong, "rigid"), nmi_before=1.0, nmi_after=1.0,
                               backend="stub")

    monkeypatch.setattr(_engines, "brain_mask", stub_mask)
    monkeypatch.setattr(ms_lesions, "register", stub_register)
    with pytest.raises(ProcessingError, match="registration failed"):
        run_ms_lesions(positive_case.baseline_flair, positive_case.followup_flair, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []



def test_output_writes_in_the_background_fail_the_run_and_leave_nothing(positive_case, tmp_path, monkeypatch) -> None:
    """Step 12's NIfTI maps are compressed in threads while the report and DICOM are made (workflow 1.15.1). A map
    whose write fails must fail the run with its own error; a report that fails while maps are still being written
    must wait for them before the output folder is removed (no write may end after the run has raised), and in
    both cases nothing is left behind."""
    import time

    from neurorad.pipelines import ms_lesions

    real_save = ms_lesions.save_nifti
    ended: list[float] = []

    def save(volume, path):  # noqa: ANN001, ANN202
        if Path(path).name == "difference.nii.gz" and fail_map:
            raise OSError("disk full (test)")
        time.sleep(0.3)  # slower than the failing report below
        real_save(volume, path)
        ended.append(time.perf_counter())

    monkeypatch.setattr(ms_lesions, "save_nifti", save)
    fail_map = True
    with pytest.raises(OSError, match="disk full"):
        run_ms_lesions(positive_case.baseline_flair, positive_case.followup_flair, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []

    fail_map = False
    ended.clear()

    def failing_report(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("report failed (test)")

    monkeypatch.setattr(ms_lesions, "_write_report_and_dicom", failing_report)
    with pytest.raises(RuntimeError, match="report failed"):
        run_ms_lesions(positive_case.baseline_flair, positive_case.followup_flair, tmp_path / "out")
    raised = time.perf_counter()
    time.sleep(1.0)
    assert ended and max(ended) < raised  # every started write ended before the run raised
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_registered_pair_under_the_old_nmi_floor_is_accepted_and_a_3mm_error_still_refused(tmp_path) -> None:
    """Original-style tuning pair 115 (seed 1115, 3 mm slices; bench/ms_benchmark.case_spec(115)) is registered
    right (median error 0.68 mm against the phantom's motion) but its skull-stripped NMI is 1.009: the absolute
    floor of workflows <= 1.5.0 (1.01) refused it. Since 1.5.1 there is no absolute floor and the smoothed
    correlation of step 5 is the guard: it accepts this pair and refuses the same pair moved 3 mm
    (bench/ms_registration_check.py measures both checks on more pairs)."""
    from scipy import ndimage

    from neurorad.phantom.cases import ms_pair
    from neurorad.pipelines import ms_lesions as ms

    bench = load_bench("ms_benchmark")
    opts = bench.case_spec(115, 1.0)
    assert opts["seed"] == 1115 and opts["slice_thickness_mm"] == 3.0
    case = ms_pair(**opts)
    cfg = ms.MSConfig()
    ctx = ms.MSContext(cfg, tmp_path, case.baseline_flair, case.followup_flair)
    for step in ms.STEPS[:5]:  # load .. normalise: raises ProcessingError when a check refuses the pair
        step.run(ctx)
    params = {s.name: s.parameters for s in ctx.prov.steps}
    assert params["register"]["nmi_after"] < 1.01  # the case the old floor refused
    r = params["normalise"]["registration_check_correlation"]
    assert r >= 0.9
    sp = ctx.ref.spacing_mm
    off = ndimage.shift(ctx.fn, (3.0 / sp[0], 0.0, 0.0), order=1)
    assert ms.smoothed_correlation(ctx.bn, off, ctx.brain, sp) < cfg.min_registration_correlation

def _vol(spacing=(2.0, 2.0, 2.0), meta=None) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.random((40, 40, 30)).astype(np.float32), np.diag([*spacing, 1.0]), dict(meta or {}))


def test_missing_and_unreadable_inputs(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        run_ms_lesions(tmp_path / "nope.nii.gz", tmp_path / "nope2.nii.gz", tmp_path / "out")
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not an image")
    with pytest.raises(InputError):
        run_ms_lesions(bad, bad, tmp_path / "out")
    other = tmp_path / "x.txt"
    other.write_text("x")
    with pytest.raises(InputError, match="neither"):
        run_ms_lesions(other, other, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_different_patients_refused(tmp_path) -> None:
    b = _vol(meta={"dicom": {"PatientID": "P1", "SeriesDescription": "FLAIR"}})
    f = _vol(meta={"dicom": {"PatientID": "P2", "SeriesDescription": "FLAIR"}})
    with pytest.raises(InputError, match="different patients") as ei:
        run_ms_lesions(b, f, tmp_path / "out")
    assert "P1" not in str(ei.value) and "P2" not in str(ei.value)  # no identifiers in messages


def test_thick_2d_slices_refused(tmp_path) -> None:
    with pytest.raises(InputError, match="7.5 mm apart"):
        run_ms_lesions(_vol(), _vol((1.0, 1.0, 7.5)), tmp_path / "out")
    with pytest.raises(InputError, match="6.0 mm slices"):
        run_ms_lesions(_vol(), _vol((1.0, 1.0, 6.0), meta={"dicom": {"MRAcquisitionType": "2D", "SliceThickness": 6,
                                                                     "SeriesDescription": "FLAIR"}}),
                       tmp_path / "out")


def test_slices_with_a_gap_are_compared_with_a_warning() -> None:
    """NIfTI 6.3 mm spacing (5 mm slices with a gap): the pair check accepts it and says what it costs."""
    from neurorad.pipelines.ms_lesions import MSConfig, check_pair

    warnings = check_pair(_vol(), _vol((1.0, 1.0, 6.3)), MSConfig())
    assert any(w.startswith("followup: slices 6.3 mm apart") for w in warnings)


def test_empty_brain_mask_fails_cleanly(tmp_path, monkeypatch) -> None:
    # an extractor that finds no brain (as on a non-head image) -> ProcessingError, nothing written
    from neurorad.pipelines import _engines

    def empty(volume, engine="deepbet"):
        return volume.with_data(np.zeros(volume.spatial_shape, bool)), "stub", None

    monkeypatch.setattr(_engines, "brain_mask", empty)
    with pytest.raises(ProcessingError, match="brain mask is empty"):
        run_ms_lesions(_vol(), _vol(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_input_exit_code(tmp_path) -> None:
    import subprocess
    import sys

    code = "import sys; from neurorad.cli import main; sys.argv[0] = 'neurorad'; main()"
    p = subprocess.run([sys.executable, "-c", code, "--quiet", "ms-lesions", "--baseline", str(tmp_path / "a.nii.gz"),
                        "--followup", str(tmp_path / "b.nii.gz"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "does not exist" in p.stderr
    assert not Path(tmp_path / "o").exists()


def test_dicom_series_of_different_patients_refused(tmp_path) -> None:
    from neurorad.image.dicom_series import write_dicom_series

    vol = Volume(np.random.default_rng(1).random((24, 24, 12)).astype(np.float32) * 100, np.diag([2.0, 2.0, 2.0, 1]))
    write_dicom_series(vol, tmp_path / "b", identity={"PatientID": "PSEUDO-A"}, series_description="FLAIR")
    write_dicom_series(vol, tmp_path / "f", identity={"PatientID": "PSEUDO-B"}, series_description="FLAIR")
    with pytest.raises(InputError, match="different patients") as ei:
        run_ms_lesions(tmp_path / "b", tmp_path / "f", tmp_path / "out")
    assert "PSEUDO" not in str(ei.value)
    assert not (tmp_path / "out").exists()
