"""Realistic test DICOM series written from Colin27 (real anatomy) with identifying-looking tags.

Written with pydicom directly (an independent writer from the project's own), so the server
tests do not depend on the image layer; the identifiers below are what the byte search of the
data folder must never find.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from neurorad import resources

IDENTITY = {
    "PatientName": "Testpatient^Henrietta^Q",
    "PatientID": "MRN-4821390777",
    "PatientBirthDate": "19610412",
    "PatientSex": "F",
    "AccessionNumber": "ACC-99817265",
    "InstitutionName": "Saint Lazarus Teaching Hospital",
    "ReferringPhysicianName": "Referrer^Bartholomew",
    "StudyID": "STUDY-5519",
    "OtherPatientIDs": "SSN-078-05-1120",
}

# the strings a byte search must not find anywhere in neurorad's data folder
SECRETS = ["Testpatient", "Henrietta", "MRN-4821390777", "ACC-99817265", "Saint Lazarus", "Bartholomew",
           "SSN-078-05-1120", "19610412"]

PROTOCOLS = {
    "FLAIR": {"SeriesDescription": "AX FLAIR Testpatient", "RepetitionTime": 9000.0, "EchoTime": 90.0,
              "InversionTime": 2500.0, "MRAcquisitionType": "2D"},
    "T1": {"SeriesDescription": "T1 MPRAGE", "RepetitionTime": 2000.0, "EchoTime": 3.0,
           "InversionTime": 900.0, "MRAcquisitionType": "3D"},
}


def colin27_slices(n_slices: int, size: int) -> np.ndarray:
    """(n_slices, size, size) uint16 axial slices of Colin27 around the brain centre."""
    img = nib.load(str(resources.colin27_head()))
    data = np.asarray(img.dataobj, dtype=np.float32)  # 181 x 217 x 181, RAS
    k0 = data.shape[2] // 2 - n_slices // 2
    out = []
    for k in range(k0, k0 + n_slices):
        sl = np.rot90(data[:, :, k])  # rows = anterior->posterior, cols = right->left-ish
        pad = np.zeros((max(sl.shape), max(sl.shape)), np.float32)
        pad[: sl.shape[0], : sl.shape[1]] = sl
        idx = np.linspace(0, pad.shape[0] - 1, size).round().astype(int)
        out.append(pad[np.ix_(idx, idx)])
    arr = np.stack(out)
    return np.clip(arr / max(arr.max(), 1) * 4000, 0, 4095).astype(np.uint16)


def write_series(out_dir: Path, kind: str = "FLAIR", n_slices: int = 8, size: int = 64, study_uid: str | None = None,
                 identity: dict[str, str] | None = None, series_number: int = 3, modality: str = "MR",
                 pixels: np.ndarray | None = None) -> list[Path]:
    """Write one MR series; returns the file paths. ``pixels``: (n_slices, size, size) uint16 to write
    instead of :func:`colin27_slices` (e.g. Colin27 with lesions painted in)."""
    ident = dict(IDENTITY, **(identity or {}))
    pixels = colin27_slices(n_slices, size) if pixels is None else np.asarray(pixels, np.uint16)
    study_uid = study_uid or generate_uid()
    series_uid, for_uid = generate_uid(), generate_uid()
    out_dir.mkdir(parents=True, exist_ok=True)
    spacing = 256.0 / size
    paths = []
    for i in range(n_slices):
        ds = Dataset()
        sop = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        for k, v in ident.items():
            setattr(ds, k, v)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.StudyDate, ds.StudyTime = "20240305", "101500"
        ds.SeriesDate, ds.AcquisitionDate, ds.ContentDate = "20240305", "20240305", "20240305"
        ds.StudyDescription = "MRI BRAIN MS FOLLOW-UP"
        ds.Modality, ds.Manufacturer, ds.StationName = modality, "SIEMENS", "MRC40512"
        ds.BodyPartExamined = "BRAIN"
        ds.SeriesNumber, ds.InstanceNumber = series_number, i + 1
        for k, v in PROTOCOLS[kind].items():
            setattr(ds, k, v)
        ds.ScanningSequence, ds.SequenceVariant, ds.ImageType = "SE\\IR", "SK", ["ORIGINAL", "PRIMARY", "M"]
        ds.ImagePositionPatient = [-128.0, -128.0, float(i * 3.0 - 12)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [spacing, spacing], 3.0
        ds.Rows, ds.Columns = size, size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels[i].tobytes()
        ds.InstanceCreationDate = dt.date.today().strftime("%Y%m%d")
        p = out_dir / f"IM{i + 1:04d}.dcm"
        pydicom.dcmwrite(p, ds, enforce_file_format=True)
        paths.append(p)
    return paths


def grep_tree(root: Path, needles: list[str]) -> list[tuple[str, str]]:
    """(file, needle) for every needle found in any file under root (raw bytes, also UTF-16-free)."""
    hits = []
    enc = [(n, n.encode()) for n in needles] + [(n, n.upper().encode()) for n in needles]
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            for n, b in enc:
                if b in data:
                    hits.append((str(p.relative_to(root)), n))
    return hits
