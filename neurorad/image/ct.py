"""Non-contrast head CT in Hounsfield units: load, check, describe.

Hounsfield units come from the DICOM Modality LUT (PS3.3 C.11.1: stored value x RescaleSlope +
RescaleIntercept), applied by both readers of :mod:`neurorad.image.dicom_series`. The CT Image
module (PS3.3 C.8.2.1) makes RescaleIntercept and RescaleSlope mandatory (Type 1): a CT series
without them is refused, because its pixel values are not known to be HU. A gantry-tilted
acquisition (GantryDetectorTilt != 0) has a sheared slice stack; the pydicom reader keeps the
shear in the affine (slice step = difference of ImagePositionPatient) and :func:`load_ct`
resamples it onto an orthogonal grid. Thick (e.g. 5 mm) and thin slices are kept as acquired;
the spacing is recorded.

NIfTI input carries no modality: it is accepted as CT when it looks like HU (air well below
-500 HU). An MR image sent as CT fails that check, or the DICOM Modality check, with a message
naming the file.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurorad.errors import InputError
from neurorad.image.volume import Volume

__all__ = ["CTInfo", "load_ct", "ct_info", "hours_between"]


@dataclass(frozen=True)
class CTInfo:
    """What the CT workflow needs from the header (no identifiers leave this object except
    through :attr:`patient_key`, a hash)."""

    modality: str
    slice_thickness_mm: float | None
    spacing_mm: tuple[float, float, float]
    gantry_tilt_deg: float
    acquired: _dt.datetime | None
    patient_key: str | None  # sha256 of PatientID (+ birth date): compares two scans without showing either


def _first_dicom(path: Path) -> Path | None:
    from neurorad.image.dicom_series import list_dicom_series

    try:
        series = list_dicom_series(path)
    except InputError:
        return None
    return series[0].files[0] if series else None


def _datetime(date: str | None, time: str | None) -> _dt.datetime | None:
    if not date:
        return None
    try:
        d = _dt.datetime.strptime(str(date)[:8], "%Y%m%d")
    except ValueError:
        return None
    t = str(time or "").split(".")[0]
    if len(t) >= 4 and t[:4].isdigit():
        sec = int(t[4:6]) if len(t) >= 6 and t[4:6].isdigit() else 0
        d = d.replace(hour=int(t[:2]), minute=int(t[2:4]), second=sec)
    return d


def _patient_key(ds) -> str | None:  # noqa: ANN001 - pydicom Dataset
    import hashlib

    pid = str(ds.get("PatientID", "") or "")
    if not pid:
        return None
    return hashlib.sha256(f"{pid}|{ds.get('PatientBirthDate', '')}".encode()).hexdigest()


def _orthogonalise(vol: Volume) -> Volume:
    """Resample a sheared (gantry-tilted) grid onto an orthogonal one with the same in-plane axes."""
    from neurorad.image.geometry import resample_to_reference

    a = vol.affine[:3, :3]
    c0, c1, c2 = a[:, 0], a[:, 1], a[:, 2]
    normal = np.cross(c0, c1)
    normal /= np.linalg.norm(normal)
    step = abs(float(c2 @ normal))
    new = np.eye(4)
    new[:3, 0], new[:3, 1] = c0, c1
    new[:3, 2] = normal * step * np.sign(c2 @ normal)
    # cover the sheared stack: shift in-plane so the box contains every original voxel
    shape = np.array(vol.spatial_shape)
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)], float)
    world = corners @ a.T + vol.affine[:3, 3]
    inv = np.linalg.inv(new[:3, :3])
    idx = (world - vol.affine[:3, 3]) @ inv.T
    lo, hi = np.floor(idx.min(0)), np.ceil(idx.max(0))
    new[:3, 3] = vol.affine[:3, 3] + new[:3, :3] @ lo
    out_shape = tuple(int(v) for v in (hi - lo + 1))
    return resample_to_reference(vol, (out_shape, new), "linear", default_value=-1024.0)


def ct_info(path: str | Path, vol: Volume | None = None) -> CTInfo:
    """Header facts of a CT (DICOM folder/file, or NIfTI with what its volume tells)."""
    p = Path(path)
    first = _first_dicom(p) if (p.is_dir() or p.suffix.lower() in (".dcm", "")) else None
    spacing = tuple(float(s) for s in vol.spacing_mm) if vol is not None else (0.0, 0.0, 0.0)
    if first is None:
        thick = vol.metadata.get("slice_thickness_mm") if vol is not None else None
        return CTInfo("CT", None if thick is None else float(thick), spacing, 0.0, None, None)  # type: ignore[arg-type]
    import pydicom

    ds = pydicom.dcmread(str(first), stop_before_pixels=True)
    acquired = (_datetime(ds.get("AcquisitionDate") or ds.get("SeriesDate") or ds.get("StudyDate"),
                          ds.get("AcquisitionTime") or ds.get("SeriesTime") or ds.get("StudyTime")))
    thick = ds.get("SliceThickness")
    return CTInfo(str(ds.get("Modality", "")), float(thick) if thick not in (None, "") else None, spacing,  # type: ignore[arg-type]
                  float(ds.get("GantryDetectorTilt", 0.0) or 0.0), acquired, _patient_key(ds))


def load_ct(path: str | Path) -> tuple[Volume, CTInfo]:
    """A head CT in HU on an orthogonal RAS grid, with its :class:`CTInfo`.

    Raises :class:`InputError` (naming the file) for a non-CT modality, a CT without
    RescaleIntercept/RescaleSlope, or values that are not Hounsfield units.
    """
    from neurorad.image.geometry import reorient
    from neurorad.image.io import load_image

    p = Path(path)
    first = _first_dicom(p) if p.is_dir() or p.suffix.lower() in (".dcm", "") else None
    if first is not None:
        import pydicom

        ds = pydicom.dcmread(str(first), stop_before_pixels=True)
        modality = str(ds.get("Modality", "") or "")
        if modality != "CT":
            raise InputError(f"modality {modality or 'unknown'}, not CT: the haemorrhage workflow reads non-contrast "
                             "head CT (was an MR series sent as CT?)", p)
        missing = [k for k in ("RescaleIntercept", "RescaleSlope") if ds.get(k) in (None, "")]
        if missing:
            raise InputError(f"CT without {' and '.join(missing)}: pixel values cannot be converted to Hounsfield "
                             "units (the CT Image module requires both)", p)
    vol = load_image(p)
    if vol.data.ndim != 3:
        raise InputError(f"expected one 3D CT volume, got shape {vol.shape}", p)
    info = ct_info(p, vol)
    a = vol.affine[:3, :3]
    cols = a / np.linalg.norm(a, axis=0)
    if abs(float(cols[:, 2] @ np.cross(cols[:, 0], cols[:, 1]))) < 0.9999:  # sheared: gantry tilt
        vol = _orthogonalise(vol)
        vol.metadata["gantry_tilt_corrected"] = True
    vol = reorient(vol, "RAS")
    data = np.asarray(vol.data, np.float32)
    lo = float(np.percentile(data, 1))
    if lo > -500.0:
        raise InputError(f"values are not Hounsfield units (1st percentile {lo:.0f}, air should be about -1000 HU): "
                         "an MR image or a CT without its rescale values?", p)
    vol = vol.with_data(data, modality="CT", units="HU")
    return vol, CTInfo(info.modality, info.slice_thickness_mm, tuple(float(s) for s in vol.spacing_mm),  # type: ignore[arg-type]
                       info.gantry_tilt_deg, info.acquired, info.patient_key)


def hours_between(a: CTInfo, b: CTInfo) -> float | None:
    """Hours from ``a`` to ``b`` (None when either time is unknown)."""
    if a.acquired is None or b.acquired is None:
        return None
    return (b.acquired - a.acquired).total_seconds() / 3600.0
