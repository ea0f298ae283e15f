from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from neurorad.errors import InputError
from neurorad.image import Volume, load_nifti, save_nifti


def test_colin27_geometry_matches_nibabel(colin27_head_path):
    vol = load_nifti(colin27_head_path)
    img = nib.load(str(colin27_head_path))
    assert vol.shape == (181, 217, 181)
    np.testing.assert_allclose(vol.spacing_mm, img.header.get_zooms()[:3])
    assert vol.orientation == "".join(nib.aff2axcodes(img.affine))
    # voxel_to_world is the affine applied to indices
    ijk = np.array([[0, 0, 0], [180, 216, 180], [90, 108, 90]])
    np.testing.assert_allclose(vol.voxel_to_world(ijk), nib.affines.apply_affine(img.affine, ijk))
    np.testing.assert_allclose(vol.world_to_voxel(vol.voxel_to_world(ijk)), ijk, atol=1e-9)


def test_round_trip_and_no_hidden_copy(tmp_path):
    data = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    aff = np.diag([2.0, 1.5, 3.0, 1.0])
    vol = Volume(data, aff)
    assert vol.data is data  # no copy of the array
    assert vol.voxel_volume_mm3 == pytest.approx(9.0)
    out = save_nifti(vol, tmp_path / "x.nii.gz")
    back = load_nifti(out)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, aff)
    assert back.same_grid(vol)
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_nifti(tmp_path / "missing.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="junk.nii.gz"):
        load_nifti(junk)
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), str(flat))
    with pytest.raises(InputError, match="2D"):
        load_nifti(flat)
    nan = tmp_path / "nan.nii.gz"
    d = np.zeros((3, 3, 3), np.float32)
    d[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(d, np.eye(4)), str(nan))
    with pytest.raises(InputError, match="NaN"):
        load_nifti(nan)
    with pytest.raises(InputError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.zeros((4, 4)))


def test_sitk_bridge_keeps_world_coordinates(colin27_head_path):
    import SimpleITK as sitk

    from neurorad.image.sitk_bridge import from_sitk, to_sitk

    vol = load_nifti(colin27_head_path)
    # an oblique, anisotropic affine to exercise the direction matrix
    rot = np.array([[0.96592583, -0.25881905, 0], [0.25881905, 0.96592583, 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.9, 1.1, 1.3])
    aff[:3, 3] = [-80.0, -100.0, -60.0]
    v = Volume(vol.data, aff)
    img = to_sitk(v)
    # SimpleITK's own index->point (LPS) equals our RAS position with x, y negated
    for idx in [(0, 0, 0), (10, 20, 30), (180, 216, 180)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(idx))
        ras = v.voxel_to_world(np.array(idx))[0]
        np.testing.assert_allclose(lps, ras * [-1, -1, 1], atol=1e-6)
        assert img[idx] == v.data[idx]
    back = from_sitk(img)
    np.testing.assert_allclose(back.affine, aff, atol=1e-9)
    np.testing.assert_array_equal(back.data, v.data)
    assert isinstance(img, sitk.Image)
