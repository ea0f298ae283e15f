"""``neurorad convert`` NIfTI -> DICOM with patient and study identifiers (through the real entry point)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom

from neurorad.image import Volume, save_nifti


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from neurorad.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def test_convert_sets_identifiers_and_dates(tmp_path: Path) -> None:
    save_nifti(Volume(np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3), np.diag([1.0, 1.0, 2.0, 1.0])),
               tmp_path / "in.nii.gz")
    study, series = "1.2.826.0.1.3680043.10.1138.1", "1.2.826.0.1.3680043.10.1138.2"
    r = _run("convert", str(tmp_path / "in.nii.gz"), "--out", str(tmp_path / "s"), "--series-description", "FLAIR 3D",
             "--patient-name", "DOE^JANE", "--patient-id", "MRN0042", "--birth-date", "1980-02-29", "--sex", "f",
             "--study-date", "2026-03-01", "--study-time", "09:30", "--accession", "ACC778", "--study-uid", study,
             "--series-uid", series, "--series-number", "4")
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "s").glob("*.dcm"))
    assert len(files) == 3
    sops = set()
    for f in files:
        ds = pydicom.dcmread(f)
        assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == \
            ("DOE^JANE", "MRN0042", "19800229", "F")
        assert (ds.StudyDate, ds.SeriesDate, ds.StudyTime, ds.AccessionNumber) == ("20260301", "20260301", "093000",
                                                                                    "ACC778")
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber) == (study, series, 4)
        assert ds.SeriesDescription == "FLAIR 3D"
        sops.add(ds.SOPInstanceUID)
    assert len(sops) == 3 and not sops & {study, series}


def test_convert_refuses_bad_values_naming_the_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from neurorad.cli import app
    from neurorad.errors import InputError

    save_nifti(Volume(np.zeros((3, 3, 2), np.float32), np.eye(4)), tmp_path / "in.nii.gz")
    for args, needle in ((("--birth-date", "1980-02-30"), "--birth-date"), (("--sex", "X"), "--sex"),
                         (("--study-uid", "1.2.abc"), "--study-uid"), (("--study-time", "25:00"), "--study-time")):
        r = CliRunner().invoke(app, ["convert", str(tmp_path / "in.nii.gz"), "--out", str(tmp_path / "s"), *args])
        assert isinstance(r.exception, InputError) and needle in str(r.exception), (args, r.exception)
        assert not (tmp_path / "s").exists()
