"""Phantoms: truth agrees with the JSON, determinism, realistic contrast, recorded motion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from neurorad.image import load_nifti, read_dicom_series
from neurorad.phantom import load_anatomy, ms_pair, write_case
from neurorad.phantom.cases import cmb, glioma, ich_pair, wmh


@pytest.fixture(scope="module")
def ms_case():
    return ms_pair(seed=7, n_stable=5, n_new=3, n_enlarging=1, contrasts=("flair", "t1"), misalign_deg=4.0,
                   misalign_mm=3.0)


@pytest.fixture(scope="module")
def clean_ms():
    """Noise-free, bias-free, unmoved MS pair on the 1 mm base grid (for intensity checks)."""
    return ms_pair(seed=3, n_stable=4, n_new=2, n_enlarging=0, contrasts=("flair", "t1", "t2"), misalign_deg=0.0,
                   misalign_mm=0.0, snr=None, bias_strength=0.0, scanner_scaling=False)


def _centroid_mm(label, lesion_id):
    ijk = np.argwhere(label.data == lesion_id).mean(axis=0)
    return label.voxel_to_world(ijk[None])[0]


def test_ms_pair_json_volumes_equal_written_label_maps(ms_case, tmp_path):
    out = write_case(ms_case, tmp_path / "case", "nifti")
    doc = json.loads((out / "case.json").read_text())
    base = load_nifti(out / "truth_baseline_lesions.nii.gz")
    follow = load_nifti(out / "truth_followup_lesions.nii.gz")
    new = load_nifti(out / "truth_new.nii.gz")
    assert doc["kind"] == "ms-pair" and doc["seed"] == 7
    vox_b, vox_f = base.voxel_volume_mm3, follow.voxel_volume_mm3
    types = {}
    for les in doc["lesions"]:
        i = les["id"]
        types[i] = les["type"]
        assert les["volume_mm3_baseline"] == pytest.approx(np.sum(base.data == i) * vox_b)
        assert les["volume_mm3_followup"] == pytest.approx(np.sum(follow.data == i) * vox_f)
        assert les["volume_mm3"] == les["volume_mm3_followup"]
        assert 3.0 <= les["diameter_mm"] <= 15.0 + 1e-6
        if les["type"] == "new":
            assert les["volume_mm3_baseline"] == 0 and les["volume_mm3_followup"] > 0
        if les["type"] == "enlarging":
            assert les["volume_mm3_followup"] > 1.8 * les["volume_mm3_baseline"] > 0
        if les["type"] == "stable":
            assert les["volume_mm3_followup"] == pytest.approx(les["volume_mm3_baseline"], rel=0.25, abs=15)
    assert sorted(types.values()).count("new") == 3
    new_ids = {i for i, t in types.items() if t == "new"}
    assert set(np.unique(new.data)) - {0} == new_ids
    assert new.same_grid(load_nifti(out / "followup_flair.nii.gz"))
    # lesions lie in the brain
    brain = load_nifti(out / "truth_followup_brain.nii.gz").data > 0
    assert np.all(brain[follow.data > 0])


def test_recorded_misalignment_is_the_transform_applied(ms_case):
    m = np.asarray(ms_case.case["transform"]["followup"]["matrix_ras"])
    assert ms_case.case["transform"]["followup"]["rotation_deg"] == pytest.approx(4.0, abs=1e-6)
    assert np.linalg.norm(ms_case.case["transform"]["followup"]["translation_mm"]) == pytest.approx(3.0)
    b, f = ms_case.truth["truth_baseline_lesions"], ms_case.truth["truth_followup_lesions"]
    checked = 0
    for les in ms_case.case["lesions"]:
        if les["type"] != "stable" or les["volume_mm3_baseline"] < 100:
            continue
        cb, cf = _centroid_mm(b, les["id"]), _centroid_mm(f, les["id"])
        # an independent estimate: centroid moved by the recorded matrix lands on the follow-up centroid
        assert np.linalg.norm(m[:3, :3] @ cb + m[:3, 3] - cf) < 0.5
        assert np.linalg.norm(cb - cf) > 1.0  # and the motion is real
        np.testing.assert_allclose(les["center_followup_ras_mm"], cf, atol=1.5)
        checked += 1
    assert checked >= 2
    # whole brain mask: baseline brain moved by m overlaps the follow-up brain mask
    bb = ms_case.truth["truth_baseline_brain"]
    fb = ms_case.truth["truth_followup_brain"]
    ijk = np.argwhere(fb.data > 0)[::50]
    src = np.rint(bb.world_to_voxel((np.linalg.inv(m) @ np.c_[fb.voxel_to_world(ijk), np.ones(len(ijk))].T).T[:, :3]))
    inside = bb.data[tuple(np.clip(src.astype(int), 0, np.array(bb.spatial_shape) - 1).T)]
    assert inside.mean() > 0.98


def test_same_seed_same_case_other_seed_other_case(ms_case):
    again = ms_pair(seed=7, n_stable=5, n_new=3, n_enlarging=1, contrasts=("flair", "t1"), misalign_deg=4.0,
                    misalign_mm=3.0)
    for name in ms_case.images:
        np.testing.assert_array_equal(again.images[name].data, ms_case.images[name].data)
    for name in ms_case.truth:
        np.testing.assert_array_equal(again.truth[name].data, ms_case.truth[name].data)
    assert json.dumps(again.case, sort_keys=True) == json.dumps(ms_case.case, sort_keys=True)
    other = ms_pair(seed=8, n_stable=5, n_new=3, n_enlarging=1, contrasts=("flair",), in_plane_mm=2.0,
                    slice_thickness_mm=2.0)
    assert other.case["lesions"][0]["center_ras_mm"] != ms_case.case["lesions"][0]["center_ras_mm"]


def test_no_activity_case_has_empty_truth_new():
    case = ms_pair(seed=11, n_new=0, n_enlarging=0, contrasts=("flair",), in_plane_mm=2.0, slice_thickness_mm=2.0)
    assert case.truth["truth_new"].data.max() == 0
    assert case.case["counts"]["new"] == 0 and all(les["type"] == "stable" for les in case.case["lesions"])


def test_tissue_contrast_order(clean_ms):
    anat = load_anatomy()
    assert clean_ms.images["baseline_flair"].same_grid(
        type(clean_ms.images["baseline_flair"])(np.zeros(anat.shape), anat.affine))
    fr = anat.fractions
    lesion = clean_ms.truth["truth_baseline_lesions"].data > 0
    eroded = ndimage.binary_erosion(lesion)
    wm, gm, csf = (fr["wm"] > 0.95) & ~lesion, (fr["gm"] > 0.95) & ~lesion, (fr["csf"] > 0.95) & ~lesion

    def mean(name, m):
        return float(clean_ms.images[name].data[m].mean())

    assert mean("baseline_t1", wm) > mean("baseline_t1", gm) > mean("baseline_t1", csf)
    assert mean("baseline_t2", csf) > mean("baseline_t2", gm) > mean("baseline_t2", wm)
    assert mean("baseline_flair", eroded) > mean("baseline_flair", gm) > mean("baseline_flair", wm)
    assert mean("baseline_flair", wm) > mean("baseline_flair", csf)
    assert mean("baseline_t1", eroded) < mean("baseline_t1", wm)  # MS lesions are T1-hypointense


def test_rician_noise_level_matches_snr():
    case = ms_pair(seed=5, n_stable=1, n_new=0, n_enlarging=0, contrasts=("t1",), in_plane_mm=2.0,
                   slice_thickness_mm=2.0, snr=20.0, bias_strength=0.0, scanner_scaling=False, misalign_deg=0,
                   misalign_mm=0)
    img = case.images["baseline_t1"]
    head = ndimage.binary_dilation(img.data > 0.15, iterations=4)  # signal is well above 0.15 in the head
    background = img.data[~head]
    # zero signal + complex Gaussian noise -> Rayleigh, mean sigma*sqrt(pi/2)
    sigma = background.mean() / np.sqrt(np.pi / 2)
    assert sigma == pytest.approx(1.0 / 20.0, rel=0.05)


def test_thick_slices_average_along_the_slice_axis():
    thin = ms_pair(seed=2, n_new=1, contrasts=("flair",), snr=None, bias_strength=0, scanner_scaling=False,
                   misalign_deg=0, misalign_mm=0, in_plane_mm=1.0, slice_thickness_mm=1.0)
    thick = ms_pair(seed=2, n_new=1, contrasts=("flair",), snr=None, bias_strength=0, scanner_scaling=False,
                    misalign_deg=0, misalign_mm=0, in_plane_mm=1.0, slice_thickness_mm=5.0)
    a, b = thin.images["baseline_flair"], thick.images["baseline_flair"]
    assert b.spacing_mm == pytest.approx((1.0, 1.0, 5.0))
    # slice k of the thick image covers z in [z_k - 2.5, z_k + 2.5]: the mean of the five 1 mm
    # sub-slices, sampled (linearly) from the thin image
    for k in (10, 18, 25):
        z = b.voxel_to_world([[0, 0, k]])[0][2]
        subs = [z + dz for dz in (-2, -1, 0, 1, 2)]
        planes = []
        for zz in subs:
            kk = a.world_to_voxel([[0, 0, zz]])[0][2]
            k0 = int(np.floor(kk))
            t = kk - k0
            planes.append((1 - t) * a.data[:, :, k0] + t * a.data[:, :, k0 + 1])
        np.testing.assert_allclose(b.data[:, :, k], np.mean(planes, axis=0), atol=2e-4)


def test_wmh_types_and_volumes():
    case = wmh(seed=4, in_plane_mm=2.0, slice_thickness_mm=2.0, contrasts=("flair",))
    lab, cls = case.truth["truth_wmh"], case.truth["truth_wmh_class"]
    types = [les["type"] for les in case.case["lesions"]]
    assert types.count("periventricular_cap") == 2 and types.count("confluent") == 1 and types.count("punctate") == 8
    for les in case.case["lesions"]:
        assert les["volume_mm3"] == pytest.approx(np.sum(lab.data == les["id"]) * lab.voxel_volume_mm3)
        if les["volume_mm3"] > 0:
            assert np.all(cls.data[lab.data == les["id"]] == les["label"])
    assert case.case["total_volume_mm3"] == pytest.approx(np.sum(lab.data > 0) * lab.voxel_volume_mm3)


def test_glioma_regions_enhance_and_grow():
    case = glioma(seed=2, contrasts=("t1", "t1c", "flair"), in_plane_mm=2.0, slice_thickness_mm=2.0, snr=None,
                  bias_strength=0.0)
    cls = case.truth["truth_baseline_tumour_class"].data
    t1, t1c = case.images["baseline_t1"].data, case.images["baseline_t1c"].data
    anat_wm_like = (cls == 0) & (case.truth["truth_baseline_brain"].data > 0)
    assert t1c[cls == 3].mean() > 1.2 * np.percentile(t1c[anat_wm_like], 99)  # enhancing rim is the brightest
    assert t1[cls == 1].mean() < t1[cls == 3].mean()  # necrosis dark on T1
    flair = case.images["baseline_flair"].data
    assert flair[cls == 2].mean() > np.median(flair[anat_wm_like])  # oedema bright on FLAIR
    v = case.case["volumes_mm3"]
    for region in ("necrosis", "oedema", "enhancing", "non_enhancing"):
        assert v["followup"][region] > v["baseline"][region] > 0
        assert v["baseline"][region] == pytest.approx(
            np.sum(cls == {"necrosis": 1, "oedema": 2, "enhancing": 3, "non_enhancing": 4}[region]) * 8.0)


def test_microbleeds_dark_on_swi_invisible_on_t1():
    case = cmb(seed=1, snr=None, bias_strength=0.0)
    lab = case.truth["truth_cmb"].data
    swi, t1 = case.images["swi"].data, case.images["t1"].data
    anat = load_anatomy()
    for les in case.case["lesions"]:
        m = lab == les["id"]
        if m.sum() < 10:
            continue
        ring = ndimage.binary_dilation(m, iterations=8) & ~ndimage.binary_dilation(m, iterations=5)
        assert swi[m].mean() < 0.4 * swi[ring].mean()
        # T1 is the tissue image: no trace of the bleed
        tissue_t1 = sum(anat.fractions[t][m] * v for t, v in (("gm", 0.62), ("wm", 1.0), ("csf", 0.18)))
        np.testing.assert_allclose(t1[m], tissue_t1, atol=1e-4)
        assert 2.0 <= les["diameter_mm"] <= 10.0


def test_ich_pair_hounsfield_units_and_expansion():
    case = ich_pair(seed=6, volume_ml=15.0, expansion_factor=1.6, in_plane_mm=1.0, slice_thickness_mm=2.0)
    for tp in ("baseline", "followup"):
        ct = case.images[f"{tp}_ct"].data
        cls = case.truth[f"truth_{tp}_ich_class"].data
        core = ndimage.binary_erosion(cls == 1, iterations=2)
        assert 60 <= ct[core].mean() <= 80
        anat_brain = (case.truth[f"truth_{tp}_brain"].data > 0) & (cls == 0)
        assert 25 <= np.median(ct[anat_brain]) <= 40
        assert ct[ndimage.binary_erosion(cls == 2)].mean() < np.median(ct[anat_brain])  # oedema hypodense
    hv = case.case["haematoma_volume_ml"]
    assert hv["baseline"] == pytest.approx(15.0, rel=0.2)
    assert hv["followup"] / hv["baseline"] == pytest.approx(1.6, rel=0.1)
    assert case.case["expansion_ml"] == pytest.approx(hv["followup"] - hv["baseline"])


def test_dicom_output_reads_back_like_the_nifti(tmp_path):
    case = ms_pair(seed=9, n_stable=2, n_new=1, n_enlarging=0, contrasts=("flair",), in_plane_mm=2.0,
                   slice_thickness_mm=3.0)
    out = write_case(case, tmp_path / "c", "both")
    doc = json.loads((out / "case.json").read_text())
    b = read_dicom_series(out / doc["files"]["baseline_flair_dicom"])
    f = read_dicom_series(out / doc["files"]["followup_flair_dicom"])
    nb = load_nifti(out / "baseline_flair.nii.gz")
    assert b.same_grid(nb)
    np.testing.assert_allclose(b.data, nb.data, atol=float(nb.data.max()) / 65535)
    assert b.metadata["dicom"]["PatientID"] == f.metadata["dicom"]["PatientID"] == doc["dicom"]["patient"]["PatientID"]
    assert b.metadata["dicom"]["StudyInstanceUID"] != f.metadata["dicom"]["StudyInstanceUID"]
    assert b.metadata["dicom"]["StudyDate"] < f.metadata["dicom"]["StudyDate"]
    assert b.metadata["dicom"]["SliceThickness"] == pytest.approx(3.0)
    assert b.metadata["dicom"]["InversionTime"] == 1800
    assert b.metadata["dicom"]["MRAcquisitionType"] == "2D"  # 3 mm slices
    # same case written twice: byte-identical DICOM (reproducible UIDs), valid UIDs
    again = write_case(case, tmp_path / "c2", "dicom")
    first = sorted((out / "dicom" / "followup_flair").glob("*.dcm"))
    second = sorted((again / "dicom" / "followup_flair").glob("*.dcm"))
    assert len(first) == len(second) == f.spatial_shape[2]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(first, second, strict=True))
