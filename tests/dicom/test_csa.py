"""Cleaning of Siemens CSA headers on real scanner blobs (nibabel's test data), read back with
nibabel's own CSA reader as the independent oracle."""

from __future__ import annotations

from pathlib import Path

import nibabel
import pytest
from nibabel.nicom import csareader

from neurorad.dicom.csa import NUMERIC_VRS, TECHNICAL_TEXT, clean_csa

DATA = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"


@pytest.mark.parametrize("name", ["csa2_b0.bin", "csa2_b1000.bin"])
def test_real_csa_headers_keep_layout_and_numbers(name: str) -> None:
    raw = (DATA / name).read_bytes()
    before = csareader.read(raw)
    cleaned = clean_csa(raw)
    assert len(cleaned) == len(raw)
    after = csareader.read(cleaned)
    assert list(after["tags"]) == list(before["tags"])
    n_numeric = 0
    for tag, b in before["tags"].items():
        a = after["tags"][tag]["items"]
        if "patient" in tag.lower():
            continue
        if b["vr"] in NUMERIC_VRS or tag in TECHNICAL_TEXT:
            assert a == b["items"], tag
            n_numeric += bool(b["items"])
        elif any(str(x).strip() for x in b["items"]):
            assert all(not str(x).strip() for x in a), (tag, a)  # free text gone
    assert n_numeric > 10
    # the slice times and b-value dcm2niix reads survive
    assert after["tags"]["MosaicRefAcqTimes"]["items"] == before["tags"]["MosaicRefAcqTimes"]["items"]
    assert after["tags"]["B_value"]["items"] == before["tags"]["B_value"]["items"]


def test_not_csa_is_refused() -> None:
    with pytest.raises(ValueError):
        clean_csa(b"KEEPCSAIMAGE")
    with pytest.raises(ValueError):
        clean_csa(b"SV10\x04\x03\x02\x01")
