"""Registration recovers known rigid moves of real anatomy (Colin27), also across contrasts.

Oracle: the true transform used to create the moving image. Target error = mean distance of
brain-voxel world points (1 mm Colin27 grid, every 5th voxel of ch2bet > 0) mapped by the
estimated vs the true transform.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurorad.errors import InputError, ProcessingError
from neurorad.image.volume import Volume
from neurorad.preprocess.registration import (
    RegistrationLimits,
    _uniform_joint_histogram,
    normalized_mutual_information,
    register,
)
from neurorad.preprocess.transforms import AffineTransform, resample

from .conftest import smooth_bias_field

MAX_TARGET_ERROR_MM = 0.5


def flair_like(head: Volume, brain: np.ndarray) -> Volume:
    """Remap T1 tissue intensities to a FLAIR-like contrast: CSF dark, grey matter brighter
    than white matter, scalp fat moderately bright (a non-monotonic intensity map)."""
    x = head.data.astype(np.float32)
    csf, gm, wm = np.percentile(x[brain], [3, 35, 85])
    top = float(x.max())
    knots_x = [0, csf, gm, wm, (wm + top) / 2, top]
    knots_y = [0, 10, 90, 60, 75, 70]
    return head.with_data(np.interp(x, knots_x, knots_y).astype(np.float32))


def degrade(vol: Volume, seed: int) -> Volume:
    """Add a smooth multiplicative bias field and Rician-like noise (2 % of the max)."""
    rng = np.random.default_rng(seed)
    x = vol.data * smooth_bias_field(vol.spatial_shape, 0.3, seed)
    sd = 0.02 * float(x.max())
    noisy = np.sqrt((x + rng.normal(scale=sd, size=x.shape)) ** 2 + rng.normal(scale=sd, size=x.shape) ** 2)
    return vol.with_data(noisy.astype(np.float32))


def make_moving(fixed: Volume, true: AffineTransform, seed: int) -> Volume:
    # moving(true(x)) = fixed(x): pull the fixed image through the inverse map
    return degrade(resample(fixed, fixed, true.inverse(), "linear"), seed)


@pytest.fixture(scope="module")
def brain_points(colin_head, colin_brain_mask) -> np.ndarray:
    return colin_head.voxel_to_world(np.argwhere(colin_brain_mask)[::5])


def target_error_mm(est: AffineTransform, true: AffineTransform, pts: np.ndarray) -> float:
    return float(np.linalg.norm(est.apply(pts) - true.apply(pts), axis=1).mean())


CASES = [
    ((15.0, 0.0, 0.0), (0.0, 0.0, 20.0)),
    ((-8.0, 10.0, -12.0), (12.0, -14.0, 9.0)),
]


@pytest.mark.parametrize("angles,shift", CASES)
def test_elastix_rigid_recovers_known_move(colin_head, brain_points, angles, shift):
    true = AffineTransform.from_euler(angles, shift, center_mm=tuple(colin_head.center_mm))
    moving = make_moving(colin_head, true, seed=1)
    res = register(colin_head, moving, "rigid", "elastix")
    assert target_error_mm(res.transform, true, brain_points) < MAX_TARGET_ERROR_MM
    assert res.transform.rotation_deg == pytest.approx(true.rotation_deg, abs=0.5)
    assert res.nmi_after > res.nmi_before
    assert res.registered.same_grid(colin_head)


def test_elastix_t1_onto_flair_cross_contrast(colin_head, colin_brain_mask, brain_points):
    flair = flair_like(colin_head, colin_brain_mask)
    true = AffineTransform.from_euler((6.0, -12.0, 9.0), (-10.0, 15.0, -8.0), center_mm=tuple(colin_head.center_mm))
    moving_t1 = make_moving(colin_head, true, seed=2)
    res = register(flair, moving_t1, "rigid", "elastix")
    assert target_error_mm(res.transform, true, brain_points) < MAX_TARGET_ERROR_MM
    # a monotonic intensity relation would make this trivially easy: check it is not monotonic
    csf, gm, wm = np.percentile(colin_head.data[colin_brain_mask], [3, 35, 85])
    assert flair.data[(colin_head.data > gm - 2) & (colin_head.data < gm + 2)].mean() > \
        flair.data[(colin_head.data > wm - 2) & (colin_head.data < wm + 2)].mean()


@pytest.mark.slow
def test_sitk_regular_step_rigid_cross_contrast(colin_head, colin_brain_mask, brain_points):
    flair = flair_like(colin_head, colin_brain_mask)
    true = AffineTransform.from_euler((-12.0, 5.0, 10.0), (18.0, 6.0, -12.0), center_mm=tuple(colin_head.center_mm))
    res = register(flair, make_moving(colin_head, true, seed=3), "rigid", "sitk")
    assert target_error_mm(res.transform, true, brain_points) < MAX_TARGET_ERROR_MM


def _downsampled(vol: Volume, factor: int = 2) -> Volume:
    aff = vol.affine.copy()
    aff[:3, :3] *= factor
    return Volume(vol.data[::factor, ::factor, ::factor].copy(), aff)


def test_affine_and_initial_transform_on_2mm(colin_head, brain_points):
    # 2 mm data keeps this quick; it tests the affine path and the composition with `initial`
    fixed = _downsampled(colin_head)
    true = AffineTransform.from_euler((5.0, 0.0, -7.0), (8.0, 4.0, -6.0), center_mm=tuple(fixed.center_mm))
    moving = degrade(resample(fixed, fixed, true.inverse(), "linear"), 4)
    initial = AffineTransform.from_euler((0, 0, -5.0), (5.0, 0, 0), center_mm=tuple(fixed.center_mm))
    for backend in ("elastix", "sitk"):
        res = register(fixed, moving, "affine", backend, initial=initial)
        assert target_error_mm(res.transform, true, brain_points) < 1.0, backend  # 2 mm voxels
        np.testing.assert_allclose(res.transform.scales, 1, atol=0.02)


def test_failure_is_detected(colin_head):
    fixed = _downsampled(colin_head)
    noise = fixed.with_data(np.random.default_rng(0).uniform(0, 100, fixed.spatial_shape).astype(np.float32))
    with pytest.raises(ProcessingError, match="registration failed"):
        register(fixed, noise, "rigid", "elastix")
    # a plausible registration judged against too strict limits is also reported
    true = AffineTransform.from_euler((0, 0, 10.0), (0, 0, 0), center_mm=tuple(fixed.center_mm))
    with pytest.raises(ProcessingError, match="rotation"):
        register(fixed, resample(fixed, fixed, true.inverse()), "rigid", "elastix",
                 limits=RegistrationLimits(max_rotation_deg=5))


def test_bad_input():
    v = Volume(np.zeros((20, 20, 20), np.float32), np.eye(4))
    with pytest.raises(InputError, match="constant"):
        register(v, v)
    with pytest.raises(InputError, match="syn"):
        register(v, v, "syn", "elastix")


def test_nmi_oracle():
    rng = np.random.default_rng(0)
    a = rng.normal(size=100_000)
    assert normalized_mutual_information(a, a) > 1.9  # identical: NMI -> 2 (binning)
    assert normalized_mutual_information(a, rng.normal(size=a.size)) < 1.01  # independent: NMI -> 1


@pytest.mark.parametrize("bins", [7, 64])
def test_joint_histogram_of_the_nmi_is_numpys_histogram2d(bins):
    """The NMI's bincount histogram (registration._uniform_joint_histogram) against np.histogram2d, the oracle:
    the same counts, also for values on and next to every bin edge and at both range ends."""
    rng = np.random.default_rng(bins)
    a = rng.gamma(2.0, 1.3, 200_000)
    b = np.round(0.7 * a + rng.normal(0, 0.5, a.size), 2)  # ties
    lo_a, hi_a = np.percentile(a, [0.5, 99.5])
    lo_b, hi_b = np.percentile(b, [0.5, 99.5])
    edges = np.linspace(lo_a, hi_a, bins + 1)
    on_edges = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    a = np.clip(np.concatenate([a, on_edges]), lo_a, hi_a)
    b = np.clip(np.concatenate([b, np.full(on_edges.size, lo_b)]), lo_b, hi_b)
    expected = np.histogram2d(a, b, bins=bins, range=[[lo_a, hi_a], [lo_b, hi_b]])[0]
    np.testing.assert_array_equal(_uniform_joint_histogram(a, b, bins, (lo_a, hi_a), (lo_b, hi_b)), expected)
