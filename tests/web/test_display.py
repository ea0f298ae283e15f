"""Compact display copies for the viewer: int16 scaled images and uint8 labels, values kept."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from neurorad.server.web.display import compact_image, display_copy
from tests.web.conftest import WebEnv
from tests.web.test_api import _client


def _float_image(path: Path, rng: np.random.Generator) -> np.ndarray:
    data = (rng.normal(0.0, 1.0, (20, 22, 18)) * 3.5 + 1.25).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0])), path)
    return data


def test_float_image_becomes_scaled_int16_within_half_a_step(tmp_path: Path) -> None:
    data = _float_image(tmp_path / "img.nii.gz", np.random.default_rng(1))
    out = display_copy(tmp_path / "img.nii.gz", tmp_path / "cache", is_label=False)
    assert out != tmp_path / "img.nii.gz"
    img = nib.load(out)
    assert img.get_data_dtype() == np.int16
    slope = float(img.dataobj.slope)
    step = (float(data.max()) - float(data.min())) / 65535
    assert 0 < slope <= 1.01 * 2 * step  # nibabel spreads the range over int16 (or half of it, no offset)
    assert np.abs(np.asarray(img.get_fdata()) - data).max() <= slope / 2 + 1e-6
    np.testing.assert_allclose(img.affine, np.diag([1.5, 1.5, 2.0, 1.0]))
    assert out.stat().st_size < (tmp_path / "img.nii.gz").stat().st_size
    # cached per file version: same copy again, a new one after the file changed
    assert display_copy(tmp_path / "img.nii.gz", tmp_path / "cache", is_label=False) == out
    _float_image(tmp_path / "img.nii.gz", np.random.default_rng(2))
    os.utime(tmp_path / "img.nii.gz", ns=(1, 1))
    assert display_copy(tmp_path / "img.nii.gz", tmp_path / "cache", is_label=False) != out


def test_labels_become_uint8_exactly_or_stay_as_stored(tmp_path: Path) -> None:
    labels = np.zeros((10, 10, 10), np.int16)
    labels[2:4, 2:4, 2:4] = 1
    labels[6:8, 6:9, 5] = 17
    img = compact_image(nib.Nifti1Image(labels, np.eye(4)), is_label=True)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    labels[0, 0, 0] = 300  # would not fit: served as stored
    assert compact_image(nib.Nifti1Image(labels, np.eye(4)), is_label=True) is None
    assert compact_image(nib.Nifti1Image(labels.astype(np.uint8), np.eye(4)), is_label=True) is None


def test_viewer_endpoint_sends_the_compact_copy(web_env: WebEnv) -> None:
    rng = np.random.default_rng(3)
    src = nib.load(web_env.folder / "followup.nii.gz")
    data = np.asarray(src.dataobj, dtype=np.float32) / 100.0 + rng.normal(0, 0.01, src.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, src.affine), web_env.folder / "followup.nii.gz")
    c, _ = _client(web_env, "rad")
    r = c.get(f"/web/api/studies/{web_env.study_id}/files/followup.nii.gz")
    assert r.status_code == 200
    (web_env.data_dir / "got.nii.gz").write_bytes(r.content)
    got = nib.load(web_env.data_dir / "got.nii.gz")
    assert got.get_data_dtype() == np.int16
    assert np.abs(got.get_fdata() - data).max() <= float(got.dataobj.slope) / 2 + 1e-6
    r = c.get(f"/web/api/studies/{web_env.study_id}/files/new_lesions.nii.gz")
    (web_env.data_dir / "lab.nii.gz").write_bytes(r.content)
    assert nib.load(web_env.data_dir / "lab.nii.gz").get_data_dtype() == np.uint8


def test_preview_copy_keeps_world_positions_and_small_labels(tmp_path: Path) -> None:
    """The preview (block mean / block max) puts every structure at the same world position (centre of
    mass within half a preview voxel) and keeps a one-voxel label (a finding never vanishes)."""
    from neurorad.server.web.display import PREVIEW_MAX_VOXELS, downsample, preview_factor

    assert preview_factor((256, 256, 180)) == 2 and preview_factor((91, 109, 91)) == 1
    assert preview_factor((300, 10, 10), 128) == 3
    aff = np.diag([-1.0, 1.0, 1.2, 1.0])
    aff[:3, 3] = [100.0, -120.0, -80.0]
    img = np.zeros((200, 240, 150), np.float32)
    img[40:60, 100:130, 70:80] = 1.0
    lab = np.zeros(img.shape, np.int16)
    lab[151, 37, 101] = 2
    src_img, src_lab = tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(img, aff), src_img)
    nib.save(nib.Nifti1Image(lab, aff), src_lab)
    out = nib.load(display_copy(src_img, tmp_path / "cache", is_label=False, preview=True))
    assert max(out.shape) <= PREVIEW_MAX_VOXELS

    def com_mm(im: nib.Nifti1Image) -> np.ndarray:
        d = np.asarray(im.get_fdata())
        ijk = np.array(np.nonzero(d > 0.25)).mean(axis=1) if d.max() > 0.25 else np.array(np.nonzero(d)).mean(axis=1)
        return im.affine[:3, :3] @ ijk + im.affine[:3, 3]

    f = preview_factor(img.shape)
    assert np.abs(com_mm(out) - com_mm(nib.load(src_img))).max() <= 0.5 * f * 1.2 + 1e-6
    small = downsample(nib.load(src_lab), f, is_label=True)
    assert small.get_data_dtype() == np.uint8 and int(np.asarray(small.dataobj).max()) == 2
    (i, j, k), = np.argwhere(np.asarray(small.dataobj) == 2)
    world = small.affine @ [i, j, k, 1]
    orig = aff @ [151, 37, 101, 1]
    assert np.abs(world[:3] - orig[:3]).max() <= 0.5 * f * 1.2 + 1e-6


def test_crop_to_content_keeps_world_positions(tmp_path: Path) -> None:
    """A mostly empty (skull-stripped) image is sent cropped to its content; every voxel keeps its
    world position (checked voxel by voxel through both affines)."""
    aff = np.diag([-1.0, 1.1, 1.2, 1.0])
    aff[:3, 3] = [90.0, -100.0, -70.0]
    img = np.zeros((160, 180, 140), np.float32)
    rng = np.random.default_rng(3)
    img[50:110, 40:150, 30:100] = rng.uniform(0.2, 1.0, (60, 110, 70)).astype(np.float32)
    nib.save(nib.Nifti1Image(img, aff), tmp_path / "img.nii.gz")
    out = nib.load(display_copy(tmp_path / "img.nii.gz", tmp_path / "cache", is_label=False))
    assert out.shape == (64, 114, 74)  # content + 2 voxels each side
    got = np.asarray(out.get_fdata())
    for ijk in ([2, 2, 2], [30, 60, 40], [61, 111, 71]):
        world = out.affine @ [*ijk, 1]
        src = np.rint(np.linalg.inv(aff) @ world).astype(int)[:3]
        assert abs(got[tuple(ijk)] - img[tuple(src)]) < 1e-3
