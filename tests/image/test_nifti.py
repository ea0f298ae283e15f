"""NIfTI writing: ``.nii.gz`` compressed by ISA-L (neurorad.image.nifti.gzip_bytes) must be a standard gzip file
holding exactly what nibabel writes as ``.nii``, read back unchanged, and equal bytes for equal data."""

from __future__ import annotations

import gzip
import zlib

import nibabel as nib
import numpy as np
import pytest

from neurorad.image.nifti import gzip_bytes, load_nifti, save_nifti
from neurorad.image.volume import Volume


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8, np.bool_])
def test_gz_holds_nibabels_own_nii_and_reads_back(tmp_path, dtype) -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(0, 50, (23, 31, 17))
    data = (values > 20) if dtype is np.bool_ else values.astype(dtype)
    affine = np.array([[0.0, 0.0, 1.2, -40.0], [-1.1, 0.0, 0.0, 60.0], [0.0, 0.9, 0.0, -30.0], [0, 0, 0, 1]])
    vol = Volume(data, affine)
    gz, raw = save_nifti(vol, tmp_path / "v.nii.gz"), save_nifti(vol, tmp_path / "v.nii")
    payload = gz.read_bytes()
    assert payload[:2] == b"\x1f\x8b" and int.from_bytes(payload[4:8], "little") == 0  # gzip, mtime 0
    assert gzip.decompress(payload) == raw.read_bytes()  # the standard library's reader: the same .nii inside
    assert zlib.decompress(payload, wbits=31) == raw.read_bytes()
    back = load_nifti(gz)
    np.testing.assert_array_equal(back.data, data.astype(np.uint8) if dtype is np.bool_ else data)
    np.testing.assert_allclose(back.affine, affine)
    assert nib.load(str(gz)).header.get_data_dtype() == nib.load(str(raw)).header.get_data_dtype()
    save_nifti(vol, tmp_path / "again.nii.gz")
    assert (tmp_path / "again.nii.gz").read_bytes() == payload  # equal data, equal file


def test_gzip_bytes_round_trip_and_compresses() -> None:
    data = np.tile(np.arange(1000, dtype=np.float32), 200).tobytes()
    out = gzip_bytes(data)
    assert gzip.decompress(out) == data and len(out) < 0.5 * len(data)
    assert gzip.decompress(gzip_bytes(b"")) == b""
