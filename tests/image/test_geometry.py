"""Reorient, resample and crop against analytic answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from neurorad.errors import InputError
from neurorad.image import (
    Volume,
    crop_to_mask,
    reorient,
    resample_to_reference,
    resample_to_spacing,
    rigid_matrix,
)


def _world_of_values(vol: Volume) -> dict[float, np.ndarray]:
    ijk = np.argwhere(np.ones(vol.spatial_shape, bool))
    return dict(zip(vol.data[tuple(ijk.T)].tolist(), vol.voxel_to_world(ijk), strict=True))


@pytest.mark.parametrize("codes", ["LPS", "LAI", "PSR"])
def test_reorient_to_ras_keeps_world_position_of_every_value(codes):
    import nibabel as nib

    ornt = nib.orientations.axcodes2ornt(tuple(codes))
    aff = np.eye(4)
    for ax, (perm, flip) in enumerate(ornt):
        aff[int(perm), ax] = flip * (1.0 + ax * 0.5)
    aff[:3, 3] = [5.0, -3.0, 7.0]
    vol = Volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), aff)
    assert vol.orientation == codes
    ras = reorient(vol)
    assert ras.orientation == "RAS"
    before, after = _world_of_values(vol), _world_of_values(ras)
    for value, xyz in before.items():
        np.testing.assert_allclose(after[value], xyz, atol=1e-9)


def test_reorient_oblique_uses_closest_axes():
    aff = np.eye(4)
    aff[:3, :3] = Rotation.from_euler("z", 10, degrees=True).as_matrix() @ np.diag([-1.0, -1.0, 2.0])
    vol = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), aff)
    ras = reorient(vol)
    assert ras.orientation == "RAS"
    before, after = _world_of_values(vol), _world_of_values(ras)
    for value, xyz in before.items():
        np.testing.assert_allclose(after[value], xyz, atol=1e-9)


def _ramp(vol_shape, affine, coef=(0.3, -0.7, 1.1), const=5.0) -> Volume:
    vol = Volume(np.zeros(vol_shape, np.float32), affine)
    ijk = np.argwhere(np.ones(vol_shape, bool))
    w = vol.voxel_to_world(ijk)
    data = (w @ np.asarray(coef) + const).reshape(vol_shape).astype(np.float32)
    return vol.with_data(data)


@pytest.mark.parametrize("interp", ["linear", "bspline"])
def test_resample_to_spacing_reproduces_a_linear_ramp(interp):
    src = _ramp((30, 32, 20), np.diag([1.0, 1.0, 3.0, 1.0]))
    out = resample_to_spacing(src, (2.0, 0.5, 1.5), interp)
    assert out.spacing_mm == pytest.approx((2.0, 0.5, 1.5))
    np.testing.assert_allclose(out.center_mm, src.center_mm, atol=1e-9)
    ijk = np.argwhere(np.ones(out.spatial_shape, bool))
    w = out.voxel_to_world(ijk)
    # B-spline prefiltering (mirror boundary) disturbs a ramp near the edges, decaying as 0.27^n
    m = 2 if interp == "linear" else 7
    v = src.world_to_voxel(w)
    inside = np.all((v > m) & (v < np.array(src.spatial_shape) - 1 - m), axis=1)
    assert inside.sum() > 50
    expected = w @ np.array([0.3, -0.7, 1.1]) + 5.0
    got = out.data[tuple(ijk.T)]
    np.testing.assert_allclose(got[inside], expected[inside], atol=2e-3 if interp == "linear" else 2e-2)


def test_resample_nearest_keeps_labels_and_world_transform_moves_content():
    data = np.zeros((20, 20, 20), np.uint8)
    data[5, 6, 7] = 3
    vol = Volume(data, np.eye(4))
    moved = resample_to_reference(vol, vol, "nearest", world_transform=rigid_matrix(translation_mm=(2, -1, 3)))
    assert moved.data.dtype == np.uint8
    assert set(np.unique(moved.data)) == {0, 3}
    assert tuple(np.argwhere(moved.data == 3)[0]) == (7, 5, 10)
    # rotation by 90 degrees about z around the point (5, 5, 0): (x, y) -> (5 - (y - 5), 5 + (x - 5))
    rot = rigid_matrix((0, 0, 90), (0, 0, 0), (5, 5, 0))
    moved = resample_to_reference(vol, vol, "nearest", world_transform=rot)
    assert tuple(np.argwhere(moved.data == 3)[0]) == (4, 5, 7)


def test_resample_onto_a_shifted_reference_grid():
    src = _ramp((20, 20, 20), np.eye(4))
    ref_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    ref_aff[:3, 3] = [1.5, 2.5, 3.5]
    out = resample_to_reference(src, ((5, 5, 5), ref_aff), "linear")
    ijk = np.argwhere(np.ones((5, 5, 5), bool))
    w = out.voxel_to_world(ijk)
    np.testing.assert_allclose(out.data[tuple(ijk.T)], w @ np.array([0.3, -0.7, 1.1]) + 5.0, atol=1e-4)


def test_crop_to_mask_keeps_world_coordinates():
    aff = np.array([[-1.0, 0, 0, 50], [0, 2.0, 0, -20], [0, 0, 1.5, 3], [0, 0, 0, 1]])
    vol = Volume(np.arange(20 * 20 * 20, dtype=np.float32).reshape(20, 20, 20), aff)
    mask = np.zeros((20, 20, 20), bool)
    mask[5:8, 10:12, 3:4] = True
    crop = crop_to_mask(vol, mask, margin_mm=2.0)
    # margin in voxels per side: ceil(2/1)=2, ceil(2/2)=1, ceil(2/1.5)=2
    assert crop.spatial_shape == (3 + 4, 2 + 2, 1 + 4)
    before = _world_of_values(vol)
    for value, xyz in _world_of_values(crop).items():
        np.testing.assert_allclose(xyz, before[value])
    with pytest.raises(InputError, match="empty"):
        crop_to_mask(vol, np.zeros((20, 20, 20), bool))
    with pytest.raises(InputError, match="shape"):
        crop_to_mask(vol, np.ones((5, 5, 5), bool))
