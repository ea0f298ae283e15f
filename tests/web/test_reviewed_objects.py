"""Reviewed DICOM objects: the SEG regenerated after review holds the kept lesions only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from neurorad.dicom.results import source_series_from_volume
from neurorad.image.nifti import load_nifti
from neurorad.image.volume import Volume
from neurorad.server.web import reporting
from tests.web.msdata import LESIONS, _ball, make_ms_result


def test_reviewed_seg_holds_only_the_kept_lesions(tmp_path: Path) -> None:
    folder = tmp_path / "result"
    truth = make_ms_result(folder)
    vol = load_nifti(folder / "followup.nii.gz")
    k0, n = 46, 10  # slices 46..55 cut lesion 1 (46..54), lesion 2 (49..55) and lesion 3 (54..58)
    affine = vol.affine.copy()
    affine[:3, 3] = vol.voxel_to_world(np.array([0, 0, k0]))[0]
    source = source_series_from_volume(Volume(np.ascontiguousarray(vol.data[:, :, k0:k0 + n]), affine))
    rows = reporting.read_lesion_rows(folder / "lesions.csv")
    out = reporting.write_reviewed_seg(folder, [1, 3], rows, source, tmp_path / "seg_v2.dcm", 2)
    ds = pydicom.dcmread(out)
    assert [str(x.SegmentLabel) for x in ds.SegmentSequence] == ["Lesion 1 (new)", "Lesion 3 (new)"]
    assert int(ds.InstanceNumber) == 2

    def voxels(lesion) -> int:
        return int(_ball(truth["shape"], lesion.center_vox, lesion.radius_vox)[:, :, k0:k0 + n].sum())

    assert voxels(LESIONS[1]) > 0  # the discarded candidate is on these slices ...
    assert int(ds.pixel_array.sum()) == voxels(LESIONS[0]) + voxels(LESIONS[2])  # ... but not in the SEG
    # nothing kept: no SEG at all
    assert reporting.write_reviewed_seg(folder, [], rows, source, tmp_path / "none.dcm", 3) is None
