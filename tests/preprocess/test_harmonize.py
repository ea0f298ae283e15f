from __future__ import annotations

import numpy as np
import pytest

from neurorad.errors import InputError
from neurorad.image.volume import Volume
from neurorad.preprocess.harmonize import check_acquisition, harmonize_pair
from neurorad.preprocess.transforms import AffineTransform


def _vol(shape, spacing, dicom=None, value=1.0):
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = -np.asarray(shape) * np.asarray(spacing) / 2
    rng = np.random.default_rng(0)
    return Volume((rng.random(shape) * value).astype(np.float32), aff, {"dicom": dicom} if dicom else {})


def test_thick_2d_is_refused_with_clear_message():
    v = _vol((40, 40, 10), (1.0, 1.0, 5.0), {"MRAcquisitionType": "2D", "SliceThickness": "5.0"})
    with pytest.raises(InputError, match=r"2D acquisition with 5.0 mm slices \(DICOM SliceThickness\)"):
        check_acquisition(v, "follow-up")
    # without DICOM metadata the voxel size decides
    with pytest.raises(InputError, match="voxel spacing"):
        check_acquisition(_vol((40, 40, 10), (1.0, 1.0, 6.0)))
    # 3D acquisitions and thin 2D are accepted
    check_acquisition(_vol((40, 40, 10), (1.0, 1.0, 5.0), {"MRAcquisitionType": "3D", "SliceThickness": 5}))
    check_acquisition(_vol((40, 40, 20), (1.0, 1.0, 3.0), {"MRAcquisitionType": "2D", "SliceThickness": 3}))
    # DICOM SliceThickness wins over spacing (gap between slices)
    with pytest.raises(InputError):
        check_acquisition(_vol((40, 40, 20), (1.0, 1.0, 4.0), {"MRAcquisitionType": "2D", "SliceThickness": 5.5}))


def test_slice_spacing_with_a_gap_is_compared_with_a_warning_and_a_wide_one_refused():
    """A NIfTI file keeps the slices' spacing, not their thickness: 5 mm slices 1.3 mm apart (6.3 mm) may be
    compared (with a warning); slices 7 mm or more apart are refused, and a known thickness still decides."""
    nifti_gap = _vol((40, 40, 10), (1.0, 1.0, 6.3))
    warning = check_acquisition(nifti_gap, "follow-up", 5.5, max_spacing_mm=7.0)
    assert warning and "6.3 mm apart" in warning and "between two slices" in warning
    assert check_acquisition(_vol((40, 40, 20), (1.0, 1.0, 3.0)), "baseline", 5.5, max_spacing_mm=7.0) is None
    with pytest.raises(InputError, match="7.5 mm apart"):
        check_acquisition(_vol((40, 40, 10), (1.0, 1.0, 7.5)), "follow-up", 5.5, max_spacing_mm=7.0)
    # the DICOM thickness still decides, and a gap beyond the spacing limit is refused even for thin slices
    with pytest.raises(InputError, match="6.0 mm slices"):
        check_acquisition(_vol((40, 40, 10), (1.0, 1.0, 6.3), {"MRAcquisitionType": "2D", "SliceThickness": 6}),
                          "follow-up", 5.5, max_spacing_mm=7.0)
    assert check_acquisition(_vol((40, 40, 10), (1.0, 1.0, 6.3), {"MRAcquisitionType": "2D", "SliceThickness": 5}),
                             "follow-up", 5.5, max_spacing_mm=7.0) is None
    with pytest.raises(InputError, match="apart"):
        check_acquisition(_vol((40, 40, 10), (1.0, 1.0, 8.0), {"MRAcquisitionType": "2D", "SliceThickness": 3}),
                          "follow-up", 5.5, max_spacing_mm=7.0)
    # without a spacing limit (the default) the voxel size is the thickness, as before
    with pytest.raises(InputError, match="voxel spacing"):
        check_acquisition(nifti_gap, "follow-up", 5.5)


def test_finer_scan_goes_to_the_coarser_grid():
    fine = _vol((60, 60, 60), (1.0, 1.0, 1.0))
    coarse = _vol((40, 40, 20), (1.5, 1.5, 3.0))
    p = harmonize_pair(fine, coarse)
    assert p.reference == "followup" and p.followup is coarse
    assert p.baseline.same_grid(coarse)
    p = harmonize_pair(coarse, fine)
    assert p.reference == "baseline" and p.baseline is coarse and p.followup.same_grid(coarse)
    # a mask is resampled with nearest neighbour (stays boolean)
    m = fine.with_data(fine.data > 0.5)
    assert harmonize_pair(coarse, m).followup.data.dtype == np.bool_


def test_transform_direction_is_used():
    # follow-up is the baseline shifted by +6 mm in x: baseline world x -> follow-up world x+6
    base = _vol((30, 30, 30), (2.0, 2.0, 2.0))
    data = np.zeros((30, 30, 30), np.float32)
    data[10:14, 10:14, 10:14] = 1
    base = base.with_data(data)
    fu_aff = base.affine.copy()
    fu_aff[0, 3] += 6.0
    fu = Volume(data, fu_aff)
    p = harmonize_pair(base, fu, AffineTransform.from_euler((0, 0, 0), (6.0, 0, 0)))
    np.testing.assert_allclose(p.followup.data, data, atol=1e-6)
