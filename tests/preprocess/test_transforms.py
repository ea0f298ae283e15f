from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from neurorad.errors import InputError
from neurorad.image.sitk_bridge import to_sitk
from neurorad.image.volume import Volume
from neurorad.preprocess.transforms import AffineTransform, from_sitk_transform, resample, to_sitk_transform


def _rand_affine(seed: int) -> AffineTransform:
    rng = np.random.default_rng(seed)
    m = np.eye(4)
    m[:3, :3] += rng.normal(scale=0.1, size=(3, 3))
    m[:3, 3] = rng.normal(scale=10, size=3)
    return AffineTransform(m)


def test_euler_is_a_rotation_about_the_centre():
    c = (10.0, -20.0, 30.0)
    t = AffineTransform.from_euler((0, 0, 90), (0, 0, 0), center_mm=c)
    np.testing.assert_allclose(t.apply(np.array(c)), [c], atol=1e-9)  # centre fixed
    # +90 deg about z (RAS): x axis goes to y axis
    np.testing.assert_allclose(t.apply(np.array(c) + [1, 0, 0]), [np.array(c) + [0, 1, 0]], atol=1e-9)
    assert t.rotation_deg == pytest.approx(90)
    np.testing.assert_allclose(t.scales, 1)


def test_inverse_and_composition():
    a, b = _rand_affine(1), _rand_affine(2)
    pts = np.random.default_rng(3).normal(scale=50, size=(20, 3))
    np.testing.assert_allclose(a.inverse().apply(a.apply(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(a.then(b).apply(pts), b.apply(a.apply(pts)), atol=1e-9)
    assert AffineTransform.from_euler((1, 2, 3), (4, 5, 6)).then(AffineTransform.identity()).kind == "rigid"


def test_save_load_round_trip(tmp_path):
    a = _rand_affine(4)
    p = a.save(tmp_path / "t.json")
    d = json.loads(p.read_text())
    assert d["direction"].startswith("fixed")
    np.testing.assert_array_equal(AffineTransform.load(p).matrix, a.matrix)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="bad.json"):
        AffineTransform.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="not found"):
        AffineTransform.load(tmp_path / "missing.json")


def test_itk_conversion_flips_ras_lps():
    # Oracle: an ITK Euler transform applied to LPS points equals our matrix applied to RAS points.
    e = sitk.Euler3DTransform((5.0, -3.0, 2.0), 0.1, -0.2, 0.3, (4.0, 5.0, -6.0))
    t = from_sitk_transform(e)
    pts_ras = np.random.default_rng(5).normal(scale=40, size=(10, 3))
    flip = np.array([-1, -1, 1])
    expect = np.array([np.asarray(e.TransformPoint(tuple(p * flip))) * flip for p in pts_ras])
    np.testing.assert_allclose(t.apply(pts_ras), expect, atol=1e-9)
    back = to_sitk_transform(t)
    for p in pts_ras:
        np.testing.assert_allclose(back.TransformPoint(tuple(p)), e.TransformPoint(tuple(p)), atol=1e-9)


def test_resample_translation_and_mask_nearest():
    data = np.zeros((30, 30, 30), np.float32)
    data[10:15, 12:16, 8:20] = 1
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-30, -30, -30]
    vol = Volume(data, aff)
    # fixed->moving map shifting by +4 mm in x: the output at x reads the input at x+4, i.e. moved by -2 voxels
    t = AffineTransform.from_euler((0, 0, 0), (4.0, 0, 0))
    out = resample(vol, vol, t, "linear")
    np.testing.assert_allclose(out.data[8:13, 12:16, 8:20], 1, atol=1e-5)
    assert out.data[13:15].max() < 1e-5
    m = resample(vol.with_data(data > 0), vol, AffineTransform.from_euler((0, 0, 7), (1.3, 0.7, 0)))
    assert m.data.dtype == np.bool_
    # nearest neighbour: no intermediate values possible; volume approximately preserved
    assert abs(int(m.data.sum()) - int((data > 0).sum())) < 0.15 * (data > 0).sum()
    # same as SimpleITK directly (oracle: ITK resampler with the LPS transform)
    ref = sitk.Resample(to_sitk(vol), to_sitk(vol), to_sitk_transform(t), sitk.sitkLinear, 0.0)
    np.testing.assert_allclose(out.data, sitk.GetArrayFromImage(ref).transpose(2, 1, 0), atol=1e-6)
