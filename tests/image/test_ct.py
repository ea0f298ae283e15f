"""CT loading in Hounsfield units: a gantry-tilted (sheared) series comes back on an orthogonal grid
with its HU values and geometry kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurorad.image.ct import load_ct
from neurorad.image.dicom_series import write_dicom_series
from neurorad.image.volume import Volume


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(tmp_path: Path) -> None:
    n, vox = 40, 4.0
    ax = (np.arange(n) - (n - 1) / 2) * vox
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    img = np.where(x**2 + y**2 + z**2 < 60**2, 35.0, -1000.0).astype(np.float32)
    img[(np.abs(x - 20) < 10) & (np.abs(y) < 10) & (np.abs(z) < 10)] = 70.0  # a blob at x = +20 mm
    tilt = np.deg2rad(15.0)
    aff = np.diag([vox, vox, vox, 1.0])
    aff[1, 2] = vox * np.tan(tilt)  # each slice shifted along y: a tilted gantry's sheared stack
    aff[:3, 3] = -(n - 1) / 2 * vox
    sheared = Volume(img, aff)
    folder = write_dicom_series(sheared, tmp_path / "tilt", modality="CT", attributes={"GantryDetectorTilt": 15})
    ct, info = load_ct(folder)
    a = ct.affine[:3, :3] / np.asarray(ct.spacing_mm)
    assert np.allclose(np.abs(a), np.eye(3), atol=1e-6)  # orthogonal, axis-aligned RAS
    assert info.gantry_tilt_deg == 15.0
    # the blob stays where the sheared geometry puts it in the world
    src = np.argwhere(img > 60).mean(0)
    want = aff[:3, :3] @ src + aff[:3, 3]
    blob = np.argwhere(ct.data > 60)
    centre = ct.affine[:3, :3] @ blob.mean(0) + ct.affine[:3, 3]
    assert abs(want[1]) > 15  # the shear moved it by ~21 mm along y
    assert np.allclose(centre, want, atol=1.0), (centre, want)
    assert ct.data.min() <= -990
