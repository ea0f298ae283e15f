"""``neurorad phantom`` and ``neurorad convert`` from the command line (exit codes, outputs)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from neurorad.image import load_nifti


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from neurorad.cli import main; main()", "--quiet", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_phantom_cli_writes_case_and_convert_round_trips(tmp_path):
    out = tmp_path / "ms"
    res = _run("phantom", "--kind", "ms-pair", "--seed", "3", "--out", str(out), "--format", "both",
               "--new-lesions", "2", "--slice-thickness-mm", "3", "--in-plane-mm", "2", "--snr", "25",
               "--misalign-deg", "2", "--misalign-mm", "1.5")
    assert res.returncode == 0, res.stderr
    doc = json.loads((out / "case.json").read_text())
    assert doc["parameters"]["n_new"] == 2 and doc["parameters"]["slice_thickness_mm"] == 3.0
    assert doc["transform"]["followup"]["rotation_deg"] == pytest.approx(2.0)
    assert sum(les["type"] == "new" for les in doc["lesions"]) == 2
    nifti = out / "followup_flair.nii.gz"
    # DICOM -> NIfTI with the convert command equals the phantom's own NIfTI
    conv = tmp_path / "ff.nii.gz"
    res = _run("convert", str(out / "dicom" / "followup_flair"), "--out", str(conv))
    assert res.returncode == 0, res.stderr
    a, b = load_nifti(nifti), load_nifti(conv)
    assert a.same_grid(b)
    np.testing.assert_allclose(a.data, b.data, atol=float(a.data.max()) / 65535)
    sidecar = json.loads((tmp_path / "ff.json").read_text())
    assert "PatientID" not in sidecar["dicom"] and sidecar["dicom"]["Modality"] == "MR"
    # NIfTI -> DICOM CT series
    res = _run("convert", str(out / "truth_followup_brain.nii.gz"), "--out", str(tmp_path / "ct"), "--modality", "CT")
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "ct").glob("*.dcm"))) == a.spatial_shape[2]


def test_phantom_cli_bad_input_exits_non_zero_and_writes_nothing(tmp_path):
    res = _run("phantom", "--kind", "nonsense", "--out", str(tmp_path / "x"))
    assert res.returncode != 0 and "--kind" in res.stderr
    res = _run("phantom", "--kind", "ich-pair", "--out", str(tmp_path / "y"), "--new-lesions", "2")
    assert res.returncode != 0 and "n_new" in res.stderr
    res = _run("convert", str(tmp_path / "missing"), "--out", str(tmp_path / "z.nii.gz"))
    assert res.returncode != 0 and "not found" in res.stderr
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"nope")
    res = _run("convert", str(junk), "--out", str(tmp_path / "dcm"))
    assert res.returncode != 0 and "junk.nii.gz" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.nii.gz"]
