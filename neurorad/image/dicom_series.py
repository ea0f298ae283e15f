"""DICOM series <-> :class:`Volume`.

Reading
    :func:`read_dicom_series` groups the files of a folder by SeriesInstanceUID (pydicom,
    headers only), refuses a folder with several series unless the caller names one, converts
    the chosen series with **dcm2niix** (Li et al., J Neurosci Methods 2016; the binary ships
    inside the PyPI wheel ``dcm2niix``; run in a temporary folder through ``subprocess``) and
    falls back to a pydicom reader for single-frame and enhanced multi-frame files that
    dcm2niix does not convert (for example a single slice, or frames without per-frame
    functional groups). The series' key non-pixel attributes are kept in
    ``volume.metadata["dicom"]`` (see :data:`METADATA_KEYWORDS`).

Writing
    :func:`write_dicom_series` writes one single-frame MR or CT Image Storage object per slice
    (DICOM PS3.3 C.7.6.2 Image Plane module: ImagePositionPatient / ImageOrientationPatient in
    LPS mm, PixelSpacing = [row spacing, column spacing]), with UIDs from
    :func:`pydicom.uid.generate_uid`. CT is stored in Hounsfield units (RescaleType ``HU``); MR
    has no Modality LUT, so float MR data are stored as 16-bit integers with one Real World Value
    Mapping for the series (LUT Label ``NEURORAD``, applied by the reader). Every object passes
    dciodvfy (dicom3tools; tests/workflows/test_outputs.py). The series is written to a temporary
    folder and renamed into place, so a failure never leaves a half-written series.

Array/world conventions: ``Volume.data[i, j, k]``; voxel index ``i`` runs along a DICOM row
(column index ``c``), ``j`` along a column (row index ``r``) and ``k`` across slices, so the
pixel array of slice ``k`` is ``data[:, :, k].T`` with shape (Rows, Columns).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from neurorad.atomic import atomic_dir
from neurorad.errors import InputError
from neurorad.image.volume import Volume

_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: Non-pixel attributes kept in ``metadata["dicom"]`` when present in the series.
METADATA_KEYWORDS: tuple[str, ...] = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "StudyID", "AccessionNumber",
    "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "StudyDescription", "SeriesDescription",
    "SeriesNumber", "Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName",
    "InstitutionName", "MagneticFieldStrength", "BodyPartExamined", "ProtocolName",
    "SliceThickness", "SpacingBetweenSlices", "PixelSpacing", "MRAcquisitionType", "ScanningSequence",
    "SequenceVariant", "SequenceName", "PulseSequenceName", "RepetitionTime", "EchoTime", "InversionTime",
    "FlipAngle", "EchoTrainLength", "ImageType", "ContrastBolusAgent", "KVP", "ConvolutionKernel",
    "PatientPosition", "Rows", "Columns", "NumberOfFrames",
)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """DICOM element value -> plain Python (str, int, float, list)."""
    if value is None:
        return None
    if isinstance(value, (pydicom.multival.MultiValue, list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, pydicom.valuerep.DSfloat):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, bytes):
        return None
    return str(value)


def dicom_metadata(ds: Dataset) -> dict[str, Any]:
    """The series-level attributes of :data:`METADATA_KEYWORDS` present (and non-empty) in ``ds``."""
    out: dict[str, Any] = {}
    for kw in METADATA_KEYWORDS:
        if kw in ds:
            v = _jsonable(ds.get(kw))
            if v not in (None, "", []):
                out[kw] = v
    return out


def _fmt(x: float) -> str:
    """A DS string of at most 16 characters (DICOM PS3.5 6.2)."""
    s = f"{x:.10g}"
    if len(s) > 16:
        s = f"{x:.6e}"
    return s


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                return True
        pydicom.dcmread(str(path), stop_before_pixels=True, force=False)
        return True
    except Exception:
        return False


# --------------------------------------------------------------------------------------------
# series discovery
# --------------------------------------------------------------------------------------------
@dataclass
class SeriesInfo:
    """One series found in a folder."""

    series_instance_uid: str
    files: list[Path]
    modality: str
    series_description: str
    series_number: int | None

    def summary(self) -> str:
        return (f"{self.series_instance_uid} (#{self.series_number}, {self.modality}, "
                f"'{self.series_description}', {len(self.files)} files)")


def list_dicom_series(path: str | Path) -> list[SeriesInfo]:
    """Group the DICOM files under ``path`` (a folder, searched recursively, or one file) by series.

    Non-DICOM files (DICOMDIR, readme, NIfTI) are ignored. Raises :class:`InputError` when the path
    is missing or holds no DICOM image.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("file or folder not found", p)
    candidates = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    groups: dict[str, SeriesInfo] = {}
    for f in candidates:
        if f.name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:
            continue
        if "SOPClassUID" not in ds and "Rows" not in ds:
            continue
        if "Rows" not in ds:  # not an image (SR, presentation state, ...)
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or "unknown"
        info = groups.get(uid)
        if info is None:
            sn = ds.get("SeriesNumber")
            info = groups[uid] = SeriesInfo(uid, [], str(ds.get("Modality", "")),
                                            str(ds.get("SeriesDescription", "")),
                                            int(sn) if sn not in (None, "") else None)
        info.files.append(f)
    if not groups:
        raise InputError("no DICOM image found", p)
    return sorted(groups.values(), key=lambda s: (s.series_number or 0, s.series_instance_uid))


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def read_dicom_series(path: str | Path, series_uid: str | None = None, engine: str = "auto",
                      orientation: str | None = "RAS") -> Volume:
    """Read one DICOM series into a RAS+ :class:`Volume` with ``metadata["dicom"]``.

    Parameters
    ----------
    path:
        a folder (searched recursively) or a single DICOM file.
    series_uid:
        the SeriesInstanceUID to read when the folder holds several series. Without it a folder
        with mixed series is an :class:`InputError` listing the series found.
    engine:
        ``"auto"`` (dcm2niix, pydicom when dcm2niix gives no single volume), ``"dcm2niix"`` or
        ``"pydicom"``.
    orientation:
        axis codes the array is permuted/flipped to (exactly, no interpolation; oblique series go
        to the closest axes), so both readers and every acquisition give the same array order;
        ``None`` keeps the reader's own order (dcm2niix's differs between 2D and 3D acquisitions).
    """
    p = Path(path)
    series = list_dicom_series(p)
    if series_uid is not None:
        chosen = [s for s in series if s.series_instance_uid == series_uid]
        if not chosen:
            raise InputError(f"no series with SeriesInstanceUID {series_uid}; found: "
                             + "; ".join(s.summary() for s in series), p)
        info = chosen[0]
    elif len(series) > 1:
        raise InputError(f"folder holds {len(series)} DICOM series; choose one by SeriesInstanceUID: "
                         + "; ".join(s.summary() for s in series), p)
    else:
        info = series[0]
    if engine not in ("auto", "dcm2niix", "pydicom"):
        raise ValueError(f"unknown engine {engine!r}")

    first = pydicom.dcmread(str(info.files[0]), stop_before_pixels=True)
    if int(first.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(f"colour image ({first.get('PhotometricInterpretation', 'RGB')}); a greyscale MR/CT series "
                         "is needed", info.files[0])
    meta = dicom_metadata(first)
    vol: Volume | None = None
    reason = ""
    if engine in ("auto", "dcm2niix"):
        vol, reason = _read_with_dcm2niix(info.files, p)
        if vol is None and engine == "dcm2niix":
            raise InputError(f"dcm2niix could not convert the series: {reason}", p)
    if vol is None:
        vol = _read_with_pydicom(info.files, p)
        vol.metadata["reader"] = "pydicom"
        if reason:
            vol.metadata["dcm2niix_note"] = reason
    else:
        vol.metadata["reader"] = "dcm2niix"
    rwv = neurorad_real_world_mapping(first)
    if rwv is not None and not ("RescaleSlope" in first or "RescaleIntercept" in first):
        vol.data = np.asarray(vol.data, np.float32) * np.float32(rwv[0]) + np.float32(rwv[1])
    if orientation is not None:
        from neurorad.image.geometry import reorient

        vol = reorient(vol, orientation)
    vol.metadata["dicom"] = meta
    vol.metadata["source"] = str(p)
    if "Modality" in meta:
        vol.metadata["modality"] = meta["Modality"]
    return vol.check_finite()


def _dcm2niix_binary() -> str:
    import dcm2niix

    return str(dcm2niix.bin)


def _read_with_dcm2niix(files: list[Path], source: Path) -> tuple[Volume | None, str]:
    """Convert ``files`` with dcm2niix in a temporary folder; (None, why) when no single 3D volume."""
    from neurorad.image.nifti import load_nifti

    with tempfile.TemporaryDirectory(prefix="neurorad-dcm2niix-") as tmp:
        src, dst = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        dst.mkdir()
        for n, f in enumerate(files):
            target = src / f"{n:06d}.dcm"
            try:
                os.symlink(f.resolve(), target)
            except OSError:
                shutil.copy2(f, target)
        cmd = [_dcm2niix_binary(), "-z", "n", "-b", "n", "-f", "vol", "-o", str(dst), str(src)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"dcm2niix did not run ({exc})"
        niftis = sorted(dst.glob("*.nii"))
        if res.returncode != 0 or not niftis:
            tail = (res.stdout + res.stderr).strip().splitlines()[-3:]
            return None, f"dcm2niix exit {res.returncode}, no NIfTI ({' | '.join(tail)})"
        if len(niftis) > 1:
            return None, f"dcm2niix split the series into {len(niftis)} volumes"
        try:
            vol = load_nifti(niftis[0], dtype=np.float32)
        except InputError as exc:
            return None, exc.problem
        except (TypeError, ValueError) as exc:  # e.g. an RGB NIfTI
            return None, f"dcm2niix output not a scalar image ({exc})"
        vol.data = np.array(vol.data)  # detach from the temp file
        return vol, ""


def _rescale(ds: Dataset, frame: np.ndarray, frame_ds: Dataset | None = None,
             shared: Dataset | None = None) -> np.ndarray:
    """Modality LUT: stored x RescaleSlope + RescaleIntercept, from the per-frame, then the shared
    Pixel Value Transformation functional group (enhanced objects), then the top level."""
    slope, intercept = 1.0, 0.0
    src = ds
    for group in (frame_ds, shared):
        if group is not None and "PixelValueTransformationSequence" in group:
            src = group.PixelValueTransformationSequence[0]
            break
    if "RescaleSlope" in src:
        slope = float(src.RescaleSlope)
    if "RescaleIntercept" in src:
        intercept = float(src.RescaleIntercept)
    return frame.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _affine_from_planes(iop: np.ndarray, positions: np.ndarray, pixel_spacing: np.ndarray,
                        slice_step_mm: float) -> np.ndarray:
    """RAS affine from ImageOrientationPatient, sorted ImagePositionPatient (n,3) and PixelSpacing."""
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pixel_spacing[1]
    lps[:3, 1] = col_dir * pixel_spacing[0]
    if len(positions) > 1:
        lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        lps[:3, 2] = normal * slice_step_mm
    lps[:3, 3] = positions[0]
    return _FLIP @ lps


def _read_with_pydicom(files: list[Path], source: Path) -> Volume:
    """Single-frame slices (sorted along the slice normal) or one enhanced multi-frame object."""
    datasets = []
    for f in files:
        try:
            datasets.append(pydicom.dcmread(str(f)))
        except Exception as exc:
            raise InputError(f"unreadable DICOM file ({type(exc).__name__})", f) from exc
    multi = [d for d in datasets if int(d.get("NumberOfFrames", 1) or 1) > 1]
    if multi:
        if len(datasets) > 1:
            raise InputError("series mixes multi-frame objects with other files; read one file at a time", source)
        return _read_multiframe(datasets[0], files[0])
    return _read_single_frames(datasets, source)


def _pixel_array(ds: Dataset, path: Path | str) -> np.ndarray:
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        raise InputError(f"cannot decode pixel data ({type(exc).__name__}: {exc})", path) from exc


def _read_single_frames(datasets: list[Dataset], source: Path) -> Volume:
    ds0 = datasets[0]
    missing = [k for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing") if k not in ds0]
    if missing:
        raise InputError(f"DICOM image lacks {', '.join(missing)}: geometry unknown", source)
    iop = np.asarray(ds0.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([np.asarray(d.ImagePositionPatient, dtype=float) for d in datasets])
    order = np.argsort(pos @ normal, kind="stable")
    proj = (pos @ normal)[order]
    if len(proj) > 1 and np.any(np.diff(proj) < 1e-4):
        raise InputError("several images share one slice position (multiple echoes or time points?)", source)
    datasets = [datasets[i] for i in order]
    pos = pos[order]
    step = float(ds0.get("SpacingBetweenSlices", ds0.get("SliceThickness", 1.0)) or 1.0)
    affine = _affine_from_planes(iop, pos, np.asarray(ds0.PixelSpacing, dtype=float), step)
    slices = [_rescale(d, _pixel_array(d, source)).T for d in datasets]
    if any(s.shape != slices[0].shape for s in slices):
        raise InputError("images of the series differ in size", source)
    data = np.stack(slices, axis=-1)
    return Volume(data, affine, {"source": str(source)})


def _read_multiframe(ds: Dataset, path: Path) -> Volume:
    frames = _pixel_array(ds, path)
    if frames.ndim == 2:
        frames = frames[None]
    n = frames.shape[0]
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else Dataset()
    per = list(ds.PerFrameFunctionalGroupsSequence) if "PerFrameFunctionalGroupsSequence" in ds else [None] * n

    def group(frame: Dataset | None, name: str) -> Dataset | None:
        for g in (frame, shared):
            if g is not None and name in g:
                return g[name][0]
        return None

    iop_ds = group(per[0], "PlaneOrientationSequence")
    meas = group(per[0], "PixelMeasuresSequence")
    positions = [group(f, "PlanePositionSequence") for f in per]
    meta: dict[str, Any] = {"source": str(path)}
    pixel_spacing = np.asarray(meas.PixelSpacing if meas is not None and "PixelSpacing" in meas
                               else ds.get("PixelSpacing", [1.0, 1.0]), dtype=float)
    step = float((meas.get("SpacingBetweenSlices") if meas is not None else None)
                 or ds.get("SpacingBetweenSlices") or (meas.get("SliceThickness") if meas is not None else None)
                 or ds.get("SliceThickness") or 1.0)
    if iop_ds is not None and all(p is not None for p in positions):
        iop = np.asarray(iop_ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        pos = np.array([np.asarray(p.ImagePositionPatient, dtype=float) for p in positions])
        order = np.argsort(pos @ normal, kind="stable")
        if n > 1 and np.any(np.diff((pos @ normal)[order]) < 1e-4):
            raise InputError("several frames share one slice position (multiple stacks or time points)", path)
        pos = pos[order]
    else:
        # Functional groups stripped (e.g. pydicom's emri_small.dcm): keep the voxels, state the
        # geometry is nominal (axial, origin 0) so nobody mistakes it for the scanner's.
        iop = np.array([1.0, 0, 0, 0, 1.0, 0])
        order = np.arange(n)
        pos = np.array([[0.0, 0.0, k * step] for k in range(n)])
        meta["geometry"] = "nominal: no plane position/orientation in the file"
    affine = _affine_from_planes(iop, pos, pixel_spacing, step)
    data = np.stack([_rescale(ds, frames[i], per[i], shared).T for i in order], axis=-1)
    return Volume(data, affine, meta)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
#: Patient/study attributes a caller may set (all optional; the defaults are obviously synthetic).
DEFAULT_IDENTITY: dict[str, str] = {
    "PatientName": "PHANTOM^SYNTHETIC",
    "PatientID": "PHANTOM0001",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "AccessionNumber": "",
    "StudyID": "1",
    "StudyDescription": "neurorad synthetic study",
    "InstitutionName": "neurorad",
}


#: LUT Label of the Real World Value Mapping neurorad writes for float MR data (its reader applies
#: only this one, never a vendor's own mapping).
RWV_LUT_LABEL = "NEURORAD"


def _storage_plan(data: np.ndarray, modality: str) -> tuple[np.ndarray, float, float, int]:
    """Integer pixels, slope, intercept, PixelRepresentation for one series (a single scaling).

    CT: Hounsfield units through the Modality LUT (RescaleSlope 1, RescaleIntercept 0, RescaleType HU).
    MR: the MR Image IOD has no Modality LUT (PS3.3 A.4; dciodvfy warns on non-identity rescale),
    so integer data are stored as they are and float data are mapped onto 0..65535 with the
    mapping recorded as a Real World Value Mapping (PS3.3 C.7.6.16.2.11), which
    :func:`read_dicom_series` applies when reading neurorad's own series back.
    """
    if modality == "CT":
        # Hounsfield units, 1 HU resolution, stored as signed 16-bit with intercept 0.
        hu = np.rint(data).astype(np.float64)
        if hu.min() < -32768 or hu.max() > 32767:
            raise InputError("CT values outside the 16-bit HU range")
        return hu.astype(np.int16), 1.0, 0.0, 1
    lo, hi = float(np.min(data)), float(np.max(data))
    # whole numbers? (finite data: volume.check_finite). A strided sample first: float images are rarely
    # integral and the full test then costs nothing; trunc, not np.mod, which is ~10x slower on floats
    integral = np.issubdtype(data.dtype, np.integer) or (
        bool(np.array_equal(sample := data.reshape(-1)[::97], np.trunc(sample)))
        and bool(np.array_equal(data, np.trunc(data))))
    if integral and lo >= 0 and hi <= 65535:
        return data.astype(np.uint16), 1.0, 0.0, 0
    if integral and lo >= -32768 and hi <= 32767:
        return data.astype(np.int16), 1.0, 0.0, 1
    # float data: map [lo, hi] onto 0..65535 (uint16), one slope/intercept for the series (in place on
    # one float64 copy: the same values as the expression (data - lo) / slope, rounded and clipped)
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    x = data.astype(np.float64)
    x -= lo
    x /= slope
    np.rint(x, out=x)
    np.clip(x, 0, 65535, out=x)
    return x.astype(np.uint16), slope, lo, 0


def _real_world_value_mapping(slope: float, intercept: float, pixel_rep: int) -> Dataset:
    """One Real World Value Mapping item (PS3.3 C.7.6.16.2.11): value = stored x slope + intercept."""
    item = Dataset()
    lo, hi = (-32768, 32767) if pixel_rep else (0, 65535)
    item.RealWorldValueFirstValueMapped = lo
    item.RealWorldValueLastValueMapped = hi
    item.RealWorldValueSlope = float(_fmt(slope))
    item.RealWorldValueIntercept = float(_fmt(intercept))
    item.LUTExplanation = "intensity of the source volume"
    item.LUTLabel = RWV_LUT_LABEL
    unit = Dataset()
    unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "1", "UCUM", "no units"
    item.MeasurementUnitsCodeSequence = [unit]
    return item


def neurorad_real_world_mapping(ds: Dataset) -> tuple[float, float] | None:
    """(slope, intercept) of the Real World Value Mapping neurorad wrote (LUT Label ``NEURORAD``)."""
    for item in ds.get("RealWorldValueMappingSequence", []) or []:
        if str(item.get("LUTLabel", "")).strip() == RWV_LUT_LABEL and "RealWorldValueSlope" in item:
            return float(item.RealWorldValueSlope), float(item.get("RealWorldValueIntercept", 0.0))
    return None


def write_dicom_series(
    volume: Volume,
    out_dir: str | Path,
    modality: str = "MR",
    identity: Mapping[str, str] | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "",
    series_number: int = 1,
    attributes: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    uid_seed: str | None = None,
    tmp_prefix: str = ".tmp-dicom-",
) -> Path:
    """Write ``volume`` (3D) as a full-size single-frame MR or CT Image Storage series.

    ``identity`` overrides :data:`DEFAULT_IDENTITY` (PatientName, PatientID, ...; also StudyDate,
    StudyTime); ``attributes`` adds or overrides any other attribute by keyword (e.g.
    RepetitionTime, EchoTime, InversionTime, MRAcquisitionType). Attributes found in
    ``volume.metadata["dicom"]`` are used as defaults. Returns the folder (files ``IM0001.dcm``...).
    ``uid_seed`` makes the generated UIDs reproducible (``generate_uid(entropy_srcs=...)``):
    the same seed gives the same UIDs, as phantoms and re-runs need; leave it out for real data.
    The folder is built beside ``out_dir`` (named ``tmp_prefix`` + a random part) and renamed into place: all or
    nothing.
    The datasets are those of :func:`series_datasets` (every object passes dciodvfy).
    """
    out = Path(out_dir)
    datasets = series_datasets(volume, modality, identity, study_instance_uid, series_instance_uid,
                               frame_of_reference_uid, series_description, series_number, attributes, uid_seed)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError("output folder exists and is not empty", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, prefix=tmp_prefix) as tmp:
        for ds in datasets:
            ds.save_as(str(tmp / f"IM{int(ds.InstanceNumber):04d}.dcm"), enforce_file_format=True)
    return out


def series_datasets(
    volume: Volume,
    modality: str = "MR",
    identity: Mapping[str, str] | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "",
    series_number: int = 1,
    attributes: Mapping[str, Any] | None = None,
    uid_seed: str | None = None,
) -> list[FileDataset]:
    """The datasets :func:`write_dicom_series` writes, in memory (one per k slice, in k order).

    MR objects carry the MR Image module's type 2 attributes (RepetitionTime, EchoTime,
    EchoTrainLength: empty when unknown) and no Modality LUT (see :func:`_storage_plan`);
    BodyPartExamined defaults to ``HEAD`` (an unpaired structure, so Laterality is absent:
    PS3.3 C.7.3.1, type 2C).
    """
    modality = modality.upper()
    if modality not in ("MR", "CT"):
        raise ValueError("modality must be 'MR' or 'CT'")
    if volume.data.ndim != 3:
        raise InputError(f"a DICOM series needs a 3D volume, got shape {volume.shape}", volume.metadata.get("source"))
    if volume.data.size == 0:
        raise InputError(f"empty volume (shape {volume.shape})", volume.metadata.get("source"))
    volume.check_finite()

    src_meta = dict(volume.metadata.get("dicom", {}) or {})
    ident = dict(DEFAULT_IDENTITY)
    ident.update({k: v for k, v in src_meta.items() if k in DEFAULT_IDENTITY})
    ident.update(identity or {})
    study_uid = study_instance_uid or src_meta.get("StudyInstanceUID") or generate_uid()

    def _uid(part: str) -> str:
        return generate_uid(entropy_srcs=[uid_seed, part]) if uid_seed is not None else generate_uid()

    series_uid = series_instance_uid or _uid("series")
    for_uid = frame_of_reference_uid or _uid("frame-of-reference")
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")

    lps = _FLIP @ volume.affine
    spacing = np.asarray(volume.spacing_mm)
    row_dir = lps[:3, 0] / spacing[0]
    col_dir = lps[:3, 1] / spacing[1]
    slice_vec = lps[:3, 2]
    normal = np.cross(row_dir, col_dir)
    step_along_normal = float(slice_vec @ normal)
    stored, slope, intercept, pixel_rep = _storage_plan(volume.data, modality)
    nk = volume.spatial_shape[2]

    extra: dict[str, Any] = {"BodyPartExamined": "HEAD"}
    if modality == "MR":
        extra.update({"RepetitionTime": "", "EchoTime": "", "EchoTrainLength": ""})
    extra.update({k: v for k, v in src_meta.items()
                  if k in ("MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength", "InversionTime",
                           "FlipAngle", "ScanningSequence", "SequenceVariant", "MagneticFieldStrength", "KVP",
                           "BodyPartExamined", "ContrastBolusAgent", "ProtocolName")})
    extra.update(attributes or {})
    rwv = _real_world_value_mapping(slope, intercept, pixel_rep) if modality == "MR" and (
        slope != 1.0 or intercept != 0.0) else None

    out = []
    for k in range(nk):
        pos = lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3]
        ds = _slice_dataset(modality, ident, study_uid, series_uid, for_uid, date, time, _uid(f"sop/{k}"))
        ds.SeriesDescription = series_description or str(src_meta.get("SeriesDescription", ""))
        ds.SeriesNumber = int(series_number)
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ImagePositionPatient = [_fmt(v) for v in pos]
        ds.ImageOrientationPatient = [_fmt(v) for v in np.concatenate([row_dir, col_dir])]
        ds.PixelSpacing = [_fmt(spacing[1]), _fmt(spacing[0])]
        thickness = float(volume.metadata.get("slice_thickness_mm", abs(step_along_normal)))
        ds.SliceThickness = _fmt(thickness)
        ds.SpacingBetweenSlices = _fmt(abs(step_along_normal))
        ds.SliceLocation = _fmt(float(pos @ normal))
        ds.Rows, ds.Columns = volume.spatial_shape[1], volume.spatial_shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = pixel_rep
        if modality == "CT":
            ds.RescaleSlope = _fmt(slope)
            ds.RescaleIntercept = _fmt(intercept)
            ds.RescaleType = "HU"
            ds.WindowCenter, ds.WindowWidth = "40", "80"
        elif rwv is not None:
            ds.RealWorldValueMappingSequence = [rwv]
        for kw, v in extra.items():
            setattr(ds, kw, v)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        out.append(ds)
    return out


def _slice_dataset(modality: str, ident: Mapping[str, str], study_uid: str, series_uid: str, for_uid: str,
                   date: str, time: str, sop_uid: str) -> FileDataset:
    sop_class = MR_IMAGE_STORAGE if modality == "MR" else CT_IMAGE_STORAGE
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.Modality = modality
    ds.Manufacturer = "neurorad"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ident.get("StudyDate", date)
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ident.get("StudyTime", time)
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
               "StudyDescription", "InstitutionName"):
        setattr(ds, kw, ident.get(kw, ""))
    for kw, v in ident.items():
        if kw not in ds:
            setattr(ds, kw, v)
    ds.ReferringPhysicianName = ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    if modality == "MR":
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""
        ds.MRAcquisitionType = "3D"
    else:
        ds.KVP = "120"
    return ds
