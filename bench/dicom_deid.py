"""Benchmark of neurorad.dicom (prints figures; run: .venv/bin/python bench/dicom_deid.py [N]).

1. De-identification throughput: N MR instances (pydicom's MR_small, 64x64, distinct UIDs) in a
   folder -> ``deidentify_folder`` (PS3.15 walk, vault records in SQLite, atomic writes).
   Compared in the same run with the I/O floor: plain pydicom read + write of the same files.
2. Series classification: 10,000 ``classify_series`` calls on vendor-style attribute sets.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from neurorad.dicom.classify import classify_series
from neurorad.dicom.deid import DeidOptions, deidentify_folder
from neurorad.dicom.vault import PseudonymVault, generate_key

warnings.simplefilter("ignore")


def main(n: int = 300) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        src = tmp_path / "in"
        src.mkdir()
        base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        for i in range(n):
            base.SOPInstanceUID = f"1.2.826.0.1.3680043.99.{i + 1}"
            base.InstanceNumber = i + 1
            base.save_as(src / f"{i:05d}.dcm", enforce_file_format=True)

        floor_dir = tmp_path / "floor"
        floor_dir.mkdir()
        t = time.perf_counter()
        for p in sorted(src.iterdir()):
            pydicom.dcmread(p).save_as(floor_dir / p.name, enforce_file_format=True)
        t_floor = time.perf_counter() - t

        vault = PseudonymVault(generate_key(), tmp_path / "vault.sqlite")
        opts = DeidOptions(retain_longitudinal_modified_dates=True, clean_descriptors=True)
        t = time.perf_counter()
        summary = deidentify_folder(src, tmp_path / "out", vault, opts)
        t_deid = time.perf_counter() - t
        assert summary["written"] == n

    print(f"1. de-identification of {n} MR instances (64x64)")
    print(f"   pydicom read+write (I/O floor): {t_floor:6.2f} s  {1000 * t_floor / n:6.1f} ms/instance")
    print(f"   deidentify_folder:              {t_deid:6.2f} s  {1000 * t_deid / n:6.1f} ms/instance  "
          f"({n / t_deid:.0f} instances/s, {t_deid / t_floor:.1f}x the floor)")

    cases = [
        {"Modality": "MR", "SeriesDescription": "t2_space_dark-fluid_sag_p2_iso", "InversionTime": 1800,
         "EchoTime": 387, "RepetitionTime": 5000},
        {"Modality": "MR", "SeriesDescription": "t1_mprage_sag_p2_iso", "InversionTime": 900, "EchoTime": 3},
        {"Modality": "MR", "SeriesDescription": "", "RepetitionTime": 5000, "EchoTime": 110, "ScanningSequence": "SE"},
        {"Modality": "CT", "BodyPartExamined": "HEAD", "SeriesDescription": "Head 5mm"},
    ]
    reps = 2500
    t = time.perf_counter()
    for _ in range(reps):
        for c in cases:
            classify_series(c)
    t_cls = time.perf_counter() - t
    print(f"2. classify_series: {reps * len(cases)} calls in {t_cls:.2f} s "
          f"({1e6 * t_cls / (reps * len(cases)):.0f} us/call)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
