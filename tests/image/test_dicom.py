"""DICOM series writer/reader: geometry and voxels survive Volume -> series -> dcm2niix -> Volume."""

from __future__ import annotations

import os
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from scipy.spatial.transform import Rotation

from neurorad.errors import InputError
from neurorad.image import Volume, read_dicom_series, reorient, write_dicom_series
from neurorad.image.dicom_series import list_dicom_series

PYDICOM_SERIES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "dicomdirtests", "98892001")


def _oblique_affine() -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = Rotation.from_euler("xyz", [12, -7, 20], degrees=True).as_matrix() @ np.diag([0.9, 1.1, 2.5])
    aff[:3, 3] = [-20.0, 30.0, -40.0]
    return aff


AFFINES = {
    "ras": np.diag([0.9, 1.1, 2.5, 1.0]),
    "lps_stored": np.array([[-1.0, 0, 0, 10], [0, -1.2, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]]),
    "oblique": _oblique_affine(),
    "slices_against_normal": np.diag([1.0, 1.0, -2.0, 1.0]),
}


def _same_world_values(a: Volume, b: Volume, tol_value: float) -> None:
    """Every voxel of ``b`` sits (within 1e-3 mm) on a voxel centre of ``a`` with the same value."""
    ijk = np.argwhere(np.ones(b.spatial_shape, bool))
    world = b.voxel_to_world(ijk)
    cont = a.world_to_voxel(world)
    near = np.rint(cont)
    # distance in mm between b's voxel centre and a's nearest voxel centre
    err_mm = np.linalg.norm((cont - near) @ a.affine[:3, :3].T, axis=1)
    assert err_mm.max() < 1e-3
    src = near.astype(int)
    assert np.all((src >= 0) & (src < np.array(a.spatial_shape)))
    np.testing.assert_allclose(b.data[tuple(ijk.T)], a.data[tuple(src.T)], atol=tol_value)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_through_dcm2niix_keeps_geometry_and_voxels(tmp_path, name):
    rng = np.random.default_rng(1)
    data = rng.normal(100, 20, (24, 30, 12)).astype(np.float32)
    vol = Volume(data, AFFINES[name])
    write_dicom_series(vol, tmp_path / "s")
    back = read_dicom_series(tmp_path / "s")
    assert back.metadata["reader"] == "dcm2niix"
    assert sorted(back.spatial_shape) == sorted(vol.spatial_shape)
    slope = (data.max() - data.min()) / 65535
    _same_world_values(vol, back, tol_value=slope / 2 + 1e-4)
    np.testing.assert_allclose(sorted(back.spacing_mm), sorted(vol.spacing_mm), atol=1e-4)
    # default orientation="RAS": the same grid as the original reoriented, whatever dcm2niix chose
    assert back.same_grid(reorient(vol))


def test_pydicom_path_agrees_with_dcm2niix_on_oblique_series(tmp_path):
    data = np.arange(24 * 30 * 12, dtype=np.int16).reshape(24, 30, 12)
    write_dicom_series(Volume(data, AFFINES["oblique"]), tmp_path / "s")
    a = read_dicom_series(tmp_path / "s", engine="dcm2niix")
    b = read_dicom_series(tmp_path / "s", engine="pydicom")
    assert b.metadata["reader"] == "pydicom"
    _same_world_values(a, b, tol_value=0)
    # integer data are stored exactly: compare with the original too
    _same_world_values(Volume(data.astype(np.float32), AFFINES["oblique"]), b, tol_value=0)


def test_written_tags_follow_the_image_plane_module(tmp_path):
    aff = np.array([[0.5, 0, 0, -10.0], [0, 0.8, 0, 20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
    data = np.full((6, 5, 4), 40.0, np.float32)
    data[0, 0, 0] = -1000.0
    ident = {"PatientName": "DOE^JANE", "PatientID": "MRN123456", "AccessionNumber": "A77"}
    out = write_dicom_series(Volume(data, aff), tmp_path / "ct", modality="CT", identity=ident,
                             series_description="head CT", attributes={"KVP": "120"})
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 4
    ds = [pydicom.dcmread(str(f)) for f in files]
    first = ds[0]
    # LPS position of voxel (0,0,0): RAS (-10, 20, 5) -> LPS (10, -20, 5)
    np.testing.assert_allclose([float(v) for v in first.ImagePositionPatient], [10, -20, 5], atol=1e-6)
    np.testing.assert_allclose([float(v) for v in first.ImageOrientationPatient], [-1, 0, 0, 0, -1, 0], atol=1e-9)
    # PixelSpacing = [row spacing (between rows, along j), column spacing (along i)]
    np.testing.assert_allclose([float(v) for v in first.PixelSpacing], [0.8, 0.5])
    assert float(first.SliceThickness) == pytest.approx(3.0)
    assert float(first.SpacingBetweenSlices) == pytest.approx(3.0)
    assert (first.Rows, first.Columns) == (5, 6)
    assert first.RescaleType == "HU" and first.Modality == "CT"
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert str(first.PatientID) == "MRN123456" and str(first.PatientName) == "DOE^JANE"
    for d in ds:
        for uid in (d.SOPInstanceUID, d.SeriesInstanceUID, d.StudyInstanceUID, d.FrameOfReferenceUID):
            assert pydicom.uid.UID(str(uid)).is_valid
    assert len({d.SOPInstanceUID for d in ds}) == 4 and len({d.SeriesInstanceUID for d in ds}) == 1
    hu = first.pixel_array.astype(float) * float(first.RescaleSlope) + float(first.RescaleIntercept)
    assert hu[0, 0] == -1000 and hu[1, 1] == 40
    back = read_dicom_series(out)
    assert back.metadata["dicom"]["Modality"] == "CT"
    assert back.metadata["dicom"]["PatientID"] == "MRN123456"
    assert back.metadata["dicom"]["SeriesDescription"] == "head CT"
    np.testing.assert_allclose(np.sort(back.data.ravel()), np.sort(data.ravel()))


def test_mr_metadata_kept(tmp_path):
    vol = Volume(np.ones((4, 4, 3), np.float32) * 7, np.eye(4))
    out = write_dicom_series(vol, tmp_path / "mr", attributes={"RepetitionTime": "5000", "EchoTime": "390",
                                                               "InversionTime": "1800",
                                                               "MRAcquisitionType": "3D"})
    meta = read_dicom_series(out).metadata["dicom"]
    assert meta["RepetitionTime"] == 5000 and meta["EchoTime"] == 390 and meta["InversionTime"] == 1800
    assert meta["MRAcquisitionType"] == "3D" and meta["Modality"] == "MR"
    assert pydicom.uid.UID(meta["SeriesInstanceUID"]).is_valid


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm"])
def test_pydicom_test_files_single_frame(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    a = read_dicom_series(path)
    b = read_dicom_series(path, engine="pydicom", orientation=None)  # the reader's own array order
    assert read_dicom_series(path, engine="pydicom").orientation == "RAS"
    expected = ds.pixel_array.astype(float) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    np.testing.assert_allclose(b.data[:, :, 0], expected.T)
    # first voxel at ImagePositionPatient (LPS -> RAS)
    ipp = np.asarray(ds.ImagePositionPatient, float)
    np.testing.assert_allclose(b.voxel_to_world([[0, 0, 0]])[0], [-ipp[0], -ipp[1], ipp[2]], atol=1e-4)
    _same_world_values(b, a, tol_value=1e-3)


def test_enhanced_multiframe_emri_small():
    path = get_testdata_file("emri_small.dcm")
    ds = pydicom.dcmread(path)
    vol = read_dicom_series(path, engine="pydicom", orientation=None)
    assert vol.spatial_shape == (64, 64, 10)
    assert vol.spacing_mm[2] == pytest.approx(float(ds.SpacingBetweenSlices))
    for k in range(10):
        np.testing.assert_array_equal(vol.data[:, :, k], ds.pixel_array[k].T.astype(np.float32))
    assert "nominal" in vol.metadata["geometry"]  # the file carries no plane position/orientation
    assert vol.metadata["dicom"]["MRAcquisitionType"] == "3D"


def test_enhanced_ct_with_functional_groups_pydicom_equals_dcm2niix():
    # eCT_Supplemental.dcm: enhanced CT, 2 frames, plane position per frame, orientation, pixel
    # measures and the rescale (intercept -1024) in the shared functional groups
    path = get_testdata_file("eCT_Supplemental.dcm")
    a = read_dicom_series(path, engine="dcm2niix")
    b = read_dicom_series(path, engine="pydicom")
    assert a.metadata["reader"] == "dcm2niix" and b.metadata["reader"] == "pydicom"
    assert "geometry" not in b.metadata
    assert b.same_grid(a)
    np.testing.assert_array_equal(b.data, a.data)
    ds = pydicom.dcmread(path)
    assert float(b.data.min()) == float(ds.pixel_array.min()) - 1024.0


def test_siemens_mosaic_geometry_matches_nibabel():
    path = os.path.join(os.path.dirname(nib.__file__), "nicom", "tests", "data", "0.dcm")
    vol = read_dicom_series(path)
    assert vol.metadata["reader"] == "dcm2niix"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import dicomwrappers

        w = dicomwrappers.wrapper_from_file(path)
    assert vol.spatial_shape == w.image_shape[:3]
    lps = w.affine.copy()
    lps[:, [0, 1]] = lps[:, [1, 0]]  # nibabel indexes (row, column); Volume indexes (column, row)
    ref = reorient(Volume(np.zeros(w.image_shape[:3], np.float32), np.diag([-1.0, -1, 1, 1]) @ lps))
    np.testing.assert_allclose(reorient(vol).affine, ref.affine, atol=1e-3)


def test_real_ct_series_and_mixed_series_folder():
    series = list_dicom_series(PYDICOM_SERIES)
    assert len(series) == 2
    with pytest.raises(InputError, match="2 DICOM series"):
        read_dicom_series(PYDICOM_SERIES)
    big = max(series, key=lambda s: len(s.files))
    vol = read_dicom_series(PYDICOM_SERIES, series_uid=big.series_instance_uid)
    assert vol.spatial_shape == (16, 16, 5)
    alt = read_dicom_series(PYDICOM_SERIES, series_uid=big.series_instance_uid, engine="pydicom")
    _same_world_values(alt, vol, tol_value=1e-3)
    with pytest.raises(InputError, match="no series with SeriesInstanceUID"):
        read_dicom_series(PYDICOM_SERIES, series_uid="1.2.3")


def test_colour_and_geometry_less_images_are_clear_errors():
    with pytest.raises(InputError, match="colour"):
        read_dicom_series(get_testdata_file("SC_rgb.dcm"))
    with pytest.raises(InputError, match="geometry unknown"):
        read_dicom_series(get_testdata_file("JPEG2000.dcm"), engine="pydicom")


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_dicom_series(tmp_path / "missing")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM image"):
        read_dicom_series(junk)
    nan = np.zeros((3, 3, 3), np.float32)
    nan[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_dicom_series(Volume(nan, np.eye(4)), tmp_path / "nan")
    with pytest.raises(InputError, match="3D"):
        write_dicom_series(Volume(np.zeros((3, 3, 3, 2), np.float32), np.eye(4)), tmp_path / "four")
    assert not (tmp_path / "nan").exists() and not list(tmp_path.glob(".tmp-*"))
    write_dicom_series(Volume(np.zeros((3, 3, 3), np.float32), np.eye(4)), tmp_path / "ok")
    with pytest.raises(InputError, match="not empty"):
        write_dicom_series(Volume(np.zeros((3, 3, 3), np.float32), np.eye(4)), tmp_path / "ok")


def test_load_image_dispatches_and_rejects_empty(tmp_path):
    from neurorad.image import load_image, save_nifti

    vol = Volume(np.arange(27, dtype=np.float32).reshape(3, 3, 3), np.diag([2.0, 2.0, 2.0, 1.0]))
    save_nifti(vol, tmp_path / "v.nii.gz")
    write_dicom_series(vol, tmp_path / "v_dcm")
    a, b = load_image(tmp_path / "v.nii.gz"), load_image(tmp_path / "v_dcm")
    _same_world_values(a, b, tol_value=1e-3)
    with pytest.raises(InputError, match="empty"):
        write_dicom_series(Volume(np.zeros((0, 3, 3), np.float32), np.eye(4)), tmp_path / "e")
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nothing.nii.gz")
