"""DICOM result objects that reference the examined series: SEG, SR, Encapsulated PDF, secondary capture.

One implementation of each object, generic over the workflow contract (no workflow's name here;
:mod:`neurorad.workflows.outputs` calls these with the workflow's vocabulary):

* Segmentation (PS3.3 A.51) built with highdicom, which validates what the standard requires;
  one segment per finding, frames on the source series' own geometry; the Segment Algorithm
  Type is AUTOMATIC and the algorithm family comes from CID 7162 (a learned engine is
  "Artificial Intelligence", a classical one an image-processing family, "Histogram Analysis"
  by default).
* Comprehensive 3D SR measurement report (TID 1500, highdicom.sr): every quantity in one
  Measurements group (TID 1501) and each finding's volume in a Volumetric ROI group (TID 1411)
  referencing its SEG segment and the source series. Built only with highdicom's constructors.
* Encapsulated PDF (PS3.3 A.45.1), built with pydicom (highdicom has no encapsulated document IOD).
* Secondary Capture (PS3.3 A.8) RGB images via highdicom ``SCImage.from_ref_dataset``, for PACS
  viewers that cannot show SEG; ``PatientOrientation`` from the letters at the image's edges.

All objects copy patient and study attributes from a reference (source) dataset so that they
land in the examined study. UIDs are passed in by the caller (derived with
:func:`deterministic_uid` so that a re-run writes the same objects). Every object passes
``dciodvfy`` (dicom3tools) without errors: tests/dicom/test_results_validate.py.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from neurorad import __version__
from neurorad.dicom.orientation import patient_orientation
from neurorad.image.dicom_series import series_datasets
from neurorad.image.volume import Volume
from neurorad.workflows.contract import Finding, Quantity

MANUFACTURER = "neurorad"
logging.getLogger("highdicom").setLevel(logging.WARNING)  # its INFO lines name dataset UIDs, one per module
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
#: Coding scheme of neurorad's own concepts (quantity names, finding kinds): a local scheme
#: ("99" prefix, PS3.16 8.2) since a workflow's vocabulary has no standard code.
LOCAL_SCHEME = "99NEURORAD"

SERIES_NUMBERS = {"seg": 901, "pdf": 902, "sc": 903, "sr": 904}

__all__ = [
    "MANUFACTURER", "LOCAL_SCHEME", "SERIES_NUMBERS", "deterministic_uid", "device_serial_number",
    "algorithm_family", "read_source_series", "source_series_from_volume", "labels_to_source_frames",
    "SegmentSpec", "write_seg", "write_measurement_sr", "write_encapsulated_pdf", "write_secondary_captures",
    "write_series", "ucum_unit",
]


# ------------------------------------------------------------------------------------- identities
def deterministic_uid(*parts: str) -> str:
    """A UID (``2.25.<int>``, PS3.5 B.2) derived from ``parts``: the same parts give the same UID, so a
    re-run writes the same objects (the PACS keeps one copy) and two runs on the same files agree."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big") >> 1)


def device_serial_number() -> str:
    """The installation's DeviceSerialNumber: ``NEURORAD_DEVICE_SERIAL`` when set (a site's asset
    number), else derived from the host name (stable per machine, not a constant)."""
    serial = os.environ.get("NEURORAD_DEVICE_SERIAL", "").strip()
    if serial:
        return serial[:64]
    return "host-" + hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


def algorithm_family(learned: bool, classical_family: str = "HistogramAnalysis") -> hd.sr.CodedConcept:
    """CID 7162 Segmentation Algorithm Family: Artificial Intelligence for a learned engine, else
    ``classical_family`` (a CID 7162 keyword, e.g. ``MorphologicalOperations``)."""
    name = "ArtificialIntelligence" if learned else classical_family
    try:
        code = getattr(codes.cid7162, name)
    except AttributeError:
        raise ValueError(f"{name!r} is not a CID 7162 algorithm family; one of {codes.cid7162.dir()}") from None
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)


# ---------------------------------------------------------------------------------------- sources
def read_source_series(folder: str | Path, labels: Volume | None = None) -> list[Dataset]:
    """The image datasets of the DICOM series in ``folder`` (sorted along the slice normal).

    A folder with several series: the one on whose grid ``labels`` lies (:func:`labels_to_source_frames`);
    without ``labels`` such a folder is an error. Non-DICOM files are skipped.
    """
    from neurorad.errors import InputError

    groups: dict[str, list[Dataset]] = {}
    for p in sorted(Path(folder).rglob("*")):
        if not p.is_file() or p.name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(p)
        except Exception:  # noqa: BLE001 - non-DICOM files in the folder are skipped
            continue
        if "PixelData" in ds and "ImagePositionPatient" in ds:
            groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    if not groups:
        raise InputError("no DICOM image series with geometry found", folder)
    candidates = [_sorted_slices(g) for g in groups.values()]
    if len(candidates) == 1:
        return candidates[0]
    if labels is None:
        raise InputError(f"folder holds {len(candidates)} series; cannot tell which one the result is on", folder)
    for c in candidates:
        try:
            labels_to_source_frames(labels, c)
        except ValueError:
            continue
        return c
    raise InputError("no series in the folder lies on the result's grid", folder)


def _sorted_slices(datasets: list[Dataset]) -> list[Dataset]:
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(datasets, key=lambda d: float(np.asarray(d.ImagePositionPatient, dtype=float) @ normal))


def source_series_from_volume(
    volume: Volume,
    patient_id: str = "ANON",
    patient_name: str = "Anonymous^",
    study_instance_uid: str | None = None,
    series_description: str = "Reference series (from NIfTI)",
    series_number: int = 1,
    uid_seed: str | None = None,
    modality: str = "MR",
) -> list[Dataset]:
    """An MR (or CT: values in HU) Image Storage series carrying ``volume`` (one dataset per slice), in memory.

    Used when the input was NIfTI, so that SEG/SR/PDF/SC have a study and series to reference.
    The datasets are those of the project's one series writer
    (:func:`neurorad.image.dicom_series.series_datasets`); ``uid_seed`` makes its UIDs reproducible.
    """
    return list(series_datasets(
        volume.with_data(np.asarray(volume.data, np.float32)), modality,
        identity={"PatientID": patient_id, "PatientName": patient_name, "PatientBirthDate": "", "PatientSex": ""},
        study_instance_uid=study_instance_uid, series_description=series_description, series_number=series_number,
        attributes={"ImageType": ["DERIVED", "SECONDARY", "OTHER"]}, uid_seed=uid_seed))


def labels_to_source_frames(labels: Volume, source: list[Dataset], tol_vox: float = 0.05) -> np.ndarray:
    """Label array (frames, rows, cols) sampled at every pixel centre of the source slices, in order.

    ``labels`` must lie on the source series' grid (any axis order); each pixel's world position
    (ImagePositionPatient + PixelSpacing along ImageOrientationPatient) must fall on a label voxel
    centre within ``tol_vox``, otherwise the grids differ and ValueError is raised.
    """
    inv = np.linalg.inv(labels.affine)
    shape = np.asarray(labels.spatial_shape)
    data = np.ascontiguousarray(labels.data)
    flat, elem_strides = data.reshape(-1), np.asarray(data.strides) // data.itemsize
    to_ras = np.array([-1.0, -1.0, 1.0])
    frames = []
    for ds in source:
        rows, cols = int(ds.Rows), int(ds.Columns)
        ori = np.asarray(ds.ImageOrientationPatient, dtype=float)
        dr, dc = (float(x) for x in ds.PixelSpacing)  # between rows, between columns
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        # voxel index of pixel (r, c) = origin + r * step_r + c * step_c (the map is affine); the
        # pixels fall on voxel centres exactly when the origin and both steps are (near) integers,
        # and inside the grid when the four corners are: checked on those vectors instead of on
        # every pixel (one 3 x rows x cols float array per slice took ~1 s for a 1 mm brain)
        origin = (ipp * to_ras) @ inv[:3, :3].T + inv[:3, 3]
        step_c = (dc * ori[:3] * to_ras) @ inv[:3, :3].T
        step_r = (dr * ori[3:] * to_ras) @ inv[:3, :3].T
        o_i, c_i, r_i = np.rint(origin), np.rint(step_c), np.rint(step_r)
        worst = (np.abs(origin - o_i) + (rows - 1) * np.abs(step_r - r_i) + (cols - 1) * np.abs(step_c - c_i)).max()
        corners = o_i + np.array([[0, 0], [rows - 1, 0], [0, cols - 1], [rows - 1, cols - 1]]) @ np.stack([r_i, c_i])
        if worst > tol_vox or (corners < 0).any() or (corners >= shape).any():
            raise ValueError("label grid does not match the source series geometry")
        # the frame is a strided view of the label array (voxel origin + r * step_r + c * step_c, all whole
        # voxels) instead of fancy indexing with three per-pixel index arrays (the function: 0.24 -> 0.18 s for
        # 176 slices of 256 x 256). Every element it reads lies inside the array because all four corners do
        # (checked above); the view is copied by np.stack
        o_f = int(o_i.astype(np.int64) @ elem_strides)
        r_f, c_f = int(r_i.astype(np.int64) @ elem_strides), int(c_i.astype(np.int64) @ elem_strides)
        frames.append(np.lib.stride_tricks.as_strided(flat[o_f:], shape=(rows, cols),
                                                      strides=(r_f * data.itemsize, c_f * data.itemsize),
                                                      writeable=False))
    return np.stack(frames)


# -------------------------------------------------------------------------------------------- SEG
@dataclass(frozen=True)
class SegmentSpec:
    """One SEG segment: the label value in the label map, its label text and tracking identity."""

    label_value: int
    segment_label: str
    tracking_id: str
    tracking_uid: str
    category: tuple[str, str, str] = ("49755003", "SCT", "Morphologically abnormal structure")
    property_type: tuple[str, str, str] = ("52988006", "SCT", "Lesion")


def write_seg(
    labels: Volume,
    segments: Sequence[SegmentSpec] | Mapping[int, str],
    source: list[Dataset],
    path: str | Path,
    algorithm_name: str = "neurorad",
    algorithm_version: str = __version__,
    learned: bool = False,
    classical_family: str = "HistogramAnalysis",
    series_description: str = "Segmentation (neurorad, draft)",
    content_label: str = "NEURORAD",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    manufacturer_model_name: str = "neurorad",
    software_versions: str | tuple[str, ...] = __version__,
    one_hot: bool = False,
) -> Path:
    """Write a BINARY DICOM SEG (one segment per :class:`SegmentSpec`, numbered 1..n in order)
    referencing ``source``. ``labels`` holds integer values on the source series' grid.

    ``one_hot``: hand highdicom one binary channel per segment instead of the segment-number map
    (:func:`segment_pixel_array`); the SEG is the same, 3x slower (tests compare the two).

    ``segments`` may also be a mapping label value -> name (tracking UIDs are then derived from
    the SEG's SOP Instance UID). The algorithm identification (PS3.3 C.8.20.2) carries
    ``algorithm_name``/``algorithm_version`` and the family of :func:`algorithm_family`.
    """
    sop_uid = sop_instance_uid or generate_uid()
    if isinstance(segments, Mapping):
        segments = [SegmentSpec(int(v), str(n), str(n), deterministic_uid(sop_uid, "segment", str(v)))
                    for v, n in sorted(segments.items()) if int(v) > 0]
    if not segments:
        raise ValueError("no segment to write")
    frames = labels_to_source_frames(labels, source)
    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm_name[:64], version=str(algorithm_version)[:64],
        family=algorithm_family(learned, classical_family))
    descs = []
    for n, s in enumerate(segments, start=1):
        descs.append(hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=s.segment_label[:64],
            segmented_property_category=hd.sr.CodedConcept(*s.category),
            segmented_property_type=hd.sr.CodedConcept(*s.property_type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            tracking_uid=s.tracking_uid,
            tracking_id=s.tracking_id[:64],
        ))
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=segment_pixel_array(frames, [s.label_value for s in segments], one_hot),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=manufacturer_model_name[:64],
        software_versions=software_versions,
        device_serial_number=device_serial_number(),
        series_description=series_description[:64],
        content_label=_cs(content_label),
        omit_empty_frames=True,  # many findings x many slices: only frames that hold a segment
    )
    path = Path(path)
    seg.save_as(path)
    return path


def segment_pixel_array(frames: np.ndarray, label_values: Sequence[int], one_hot: bool = False) -> np.ndarray:
    """The pixel array highdicom's ``Segmentation`` takes for segments 1..n (``label_values[n - 1]`` in ``frames``).

    Default: a (frames, rows, cols) map of segment numbers (0 = none), which highdicom reads as one segment per
    number (PS3.3 C.8.20; highdicom's "label map" input): a third of the time of the one-hot array for a 176-slice
    series with four lesions (1.1 -> 0.4 s) and the same frames. Label values that repeat cannot share pixels in
    one map, so they, and ``one_hot=True``, get the (frames, rows, cols, n) array of one binary channel per
    segment."""
    values = [int(v) for v in label_values]
    if one_hot or len(set(values)) < len(values):
        arr = np.zeros((*frames.shape, len(values)), dtype=np.uint8)
        for n, v in enumerate(values, start=1):
            arr[..., n - 1] = frames == v
        return arr
    out = np.zeros(frames.shape, dtype=np.uint8 if len(values) < 256 else np.uint16)
    for n, v in enumerate(values, start=1):
        out[frames == v] = n
    return out


def _cs(text: str) -> str:
    """A Code String (PS3.5 6.2: upper case, digits, space, underscore; at most 16 characters)."""
    out = "".join(ch if ch.isalnum() or ch in " _" else "_" for ch in text.upper())
    return out[:16] or "NEURORAD"


# --------------------------------------------------------------------------------------------- SR
_UCUM = {
    "ml": ("ml", "milliliter"), "mL": ("ml", "milliliter"), "l": ("l", "liter"),
    "mm": ("mm", "millimeter"), "cm": ("cm", "centimeter"), "mm2": ("mm2", "square millimeter"),
    "mm3": ("mm3", "cubic millimeter"), "cm3": ("cm3", "cubic centimeter"), "%": ("%", "percent"),
    "1": ("1", "no units"), "": ("1", "no units"), "count": ("{count}", "count"), "HU": ("[hnsf'U]", "Hounsfield unit"),
    "s": ("s", "second"), "d": ("d", "day"), "mo": ("mo", "month"), "a": ("a", "year"), "ratio": ("1", "no units"),
}


def ucum_unit(unit: str) -> hd.sr.CodedConcept:
    """The UCUM coded unit of a quantity's unit string (``mL`` -> ``ml``; ``""`` -> ``1`` no units)."""
    value, meaning = _UCUM.get(unit, (unit, unit))
    return hd.sr.CodedConcept(value, "UCUM", meaning)


def _concept(name: str, meaning: str, code: tuple[str, str, str] | None = None) -> hd.sr.CodedConcept:
    if code:
        return hd.sr.CodedConcept(*code)
    return hd.sr.CodedConcept(name, LOCAL_SCHEME, (meaning or name)[:64])


_YES = hd.sr.CodedConcept("373066001", "SCT", "Yes")
_NO = hd.sr.CodedConcept("373067005", "SCT", "No")
_VOLUME = hd.sr.CodedConcept("118565006", "SCT", "Volume")
# a value that is not a precise measurement (Quantity.note / Finding.volume_note): the number is
# qualified "Value indeterminate" (DCM 114011, CID 42 Numeric Value Qualifier) and the note is
# added as a text evaluation, so an SR reader does not take it for a precise number
_INDETERMINATE = hd.sr.CodedConcept("114011", "DCM", "Value indeterminate")
_NOTE = hd.sr.CodedConcept("measurement-note", LOCAL_SCHEME, "Measurement note")


def _note_evaluation(name: str, note: str) -> hd.sr.QualitativeEvaluation:
    text = f"{name}: {note}"[:64]
    return hd.sr.QualitativeEvaluation(_NOTE, hd.sr.CodedConcept(text, LOCAL_SCHEME, text))


def _quantity_items(quantities: Sequence[Quantity]
                    ) -> tuple[list[hd.sr.Measurement], list[hd.sr.QualitativeEvaluation]]:
    """Numbers -> Measurement (TID 300), booleans -> Yes/No, text -> a local coded value; no value -> left out."""
    measurements, evaluations = [], []
    for q in quantities:
        name = _concept(q.name, q.description or q.name, q.code)
        v = q.value
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            continue
        if isinstance(v, bool):
            evaluations.append(hd.sr.QualitativeEvaluation(name, _YES if v else _NO))
        elif isinstance(v, (int, float, np.integer, np.floating)):
            measurements.append(hd.sr.Measurement(name=name, value=float(v), unit=ucum_unit(q.unit),
                                                  qualifier=_INDETERMINATE if q.note else None))
            if q.note:
                evaluations.append(_note_evaluation(q.name, q.note))
        else:
            evaluations.append(hd.sr.QualitativeEvaluation(name, hd.sr.CodedConcept(
                str(v)[:64], LOCAL_SCHEME, str(v)[:64])))
    return measurements, evaluations


def write_measurement_sr(
    path: str | Path,
    source: list[Dataset],
    quantities: Sequence[Quantity],
    findings: Sequence[Finding],
    finding_kinds: Mapping[str, str],
    *,
    seg: Dataset | None = None,
    segment_numbers: Mapping[int, int] | None = None,
    tracking_uids: Mapping[int, str] | None = None,
    algorithm_name: str = "neurorad",
    algorithm_version: str = __version__,
    device_name: str = "neurorad",
    device_uid: str | None = None,
    reviewer: str = "",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_description: str = "Measurements (neurorad, draft)",
    quantities_label: str = "Measurements",
    software_versions: str | tuple[str, ...] = __version__,
) -> Path:
    """Write a Comprehensive 3D SR measurement report (TID 1500) of ``quantities`` and ``findings``.

    Each finding becomes a Volumetric ROI group (TID 1411) with its volume (SCT 118565006, mL)
    and its numeric measurements, tracked by ``tracking_uids[finding.id]`` (the SEG segment's
    Tracking UID) and referencing segment ``segment_numbers[finding.id]`` of ``seg`` and the
    source series; a finding without a segment becomes a Measurements group (TID 1501). A value
    that is not a precise measurement (``Finding.volume_note``, ``Quantity.note``) is qualified
    "Value indeterminate" (DCM 114011) and its note added as a text evaluation. Every
    quantity goes into one Measurements group. The observer is the device (and the reviewer as a
    person when given). The SR's evidence lists the source images and the SEG.
    """
    segment_numbers = dict(segment_numbers or {})
    tracking_uids = dict(tracking_uids or {})
    sop_uid = sop_instance_uid or generate_uid()
    algo = hd.sr.AlgorithmIdentification(name=algorithm_name[:64], version=str(algorithm_version)[:64])
    groups: list = []
    q_meas, q_eval = _quantity_items(quantities)
    if q_meas or q_eval:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=deterministic_uid(sop_uid, "quantities"),
                                                         identifier=quantities_label[:64]),
            algorithm_id=algo, measurements=q_meas or None, qualitative_evaluations=q_eval or None))
    src_series = hd.sr.SourceSeriesForSegmentation(str(source[0].SeriesInstanceUID))
    for f in findings:
        meas = []
        if f.volume_ml is not None and math.isfinite(float(f.volume_ml)):
            meas.append(hd.sr.Measurement(name=_VOLUME, value=float(f.volume_ml), unit=ucum_unit("mL"),
                                          qualifier=_INDETERMINATE if f.volume_note else None))
        m2, e2 = _quantity_items(f.measurements)
        if f.volume_note:
            e2.insert(0, _note_evaluation("volume", f.volume_note))
        meas += m2
        kind = hd.sr.QualitativeEvaluation(
            hd.sr.CodedConcept("finding-kind", LOCAL_SCHEME, "Finding kind"),
            hd.sr.CodedConcept(f.kind[:64], LOCAL_SCHEME, finding_kinds.get(f.kind, f.kind)[:64]))
        tracking = hd.sr.TrackingIdentifier(
            uid=tracking_uids.get(f.id) or deterministic_uid(sop_uid, "finding", str(f.id)),
            identifier=f"Finding {f.id}")
        common = dict(tracking_identifier=tracking, algorithm_id=algo, measurements=meas or None,
                      qualitative_evaluations=[kind, *e2],
                      finding_type=hd.sr.CodedConcept("52988006", "SCT", "Lesion"),
                      finding_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure"))
        if seg is not None and f.id in segment_numbers:
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
                    segment_number=int(segment_numbers[f.id]), source_series=src_series),
                **common))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid or deterministic_uid("device", device_name), name=device_name[:64],
            manufacturer_name=MANUFACTURER, model_name=device_name[:64], serial_number=device_serial_number()))
    person = None
    if reviewer:
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=reviewer[:63] if "^" in reviewer else reviewer[:63] + "^"))  # PN: family name only
    context = hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device)
    modality = str(source[0].get("Modality", "MR"))
    procedure = (hd.sr.CodedConcept("24725-4", "LN", "CT Head") if modality == "CT"
                 else hd.sr.CodedConcept("24590-2", "LN", "MR Brain"))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=procedure,
                                     imaging_measurements=groups or None)
    evidence = list(source) + ([seg] if seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=series_instance_uid or generate_uid(),
        series_number=SERIES_NUMBERS["sr"], sop_instance_uid=sop_uid, instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=bool(reviewer),
        series_description=series_description[:64], software_versions=software_versions,
        device_serial_number=device_serial_number(), manufacturer_model_name=device_name[:64],
        coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=LOCAL_SCHEME, name="neurorad local concepts (quantity names, finding kinds)",
            responsible_organization="neurorad")])
    path = Path(path)
    sr.save_as(path)
    return path


# ------------------------------------------------------------------------------ Encapsulated PDF
def _copy_patient_study(ref: Dataset, ds: Dataset) -> None:
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, kw, getattr(ref, kw, ""))


def write_encapsulated_pdf(
    pdf_path: str | Path | bytes,
    ref: Dataset,
    path: str | Path,
    title: str = "Report (neurorad)",
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    series_number: int = SERIES_NUMBERS["pdf"],
    instance_number: int = 1,
    source_instances: Sequence[Dataset] | None = None,
) -> Path:
    """Encapsulated PDF (PS3.3 A.45.1) of ``pdf_path`` (a file or the PDF bytes) in ``ref``'s study.

    ``title`` is the DocumentTitle (ST; kept whole up to 1024 characters) and, cut at 64, the
    SeriesDescription. ``source_instances`` (default ``[ref]``) are listed in SourceInstanceSequence.
    """
    pdf = pdf_path if isinstance(pdf_path, bytes) else Path(pdf_path).read_bytes()
    if not pdf.startswith(b"%PDF"):
        raise ValueError(f"{pdf_path if not isinstance(pdf_path, bytes) else 'the document'} is not a PDF")
    length = len(pdf)
    ds = Dataset()
    sop_uid = sop_instance_uid or generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_uid
    _copy_patient_study(ref, ds)
    now = _dt.datetime.now()
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = title[:64]
    ds.InstanceNumber = instance_number
    ds.ConversionType = "WSD"
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = __version__
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title[:1024]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    if len(pdf) % 2:
        pdf += b"\x00"
    ds.EncapsulatedDocument = pdf
    ds.EncapsulatedDocumentLength = length
    refs = []
    for s in source_instances if source_instances is not None else [ref]:
        item = Dataset()
        item.ReferencedSOPClassUID = s.SOPClassUID
        item.ReferencedSOPInstanceUID = s.SOPInstanceUID
        refs.append(item)
    ds.SourceInstanceSequence = refs
    path = Path(path)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------- secondary capture
def write_secondary_captures(
    images: Sequence[np.ndarray | tuple[np.ndarray, tuple[str, ...]]],
    ref: Dataset,
    out_dir: str | Path,
    series_description: str = "Key images (neurorad, draft)",
    series_instance_uid: str | None = None,
    sop_instance_uids: Sequence[str] | None = None,
) -> list[Path]:
    """RGB secondary-capture images (uint8, rows x cols x 3) in the reference dataset's study.

    Each image may come with the letters of its (left, top) edges, default ``("R", "A")`` (axial,
    radiological convention); ``PatientOrientation`` is derived from them (PS3.3 C.7.6.1.1.1:
    the direction of the rows then of the columns, so ``("R", "A")`` -> ``L\\P``). Empty letters
    (``()``: panels of different planes side by side, or no patient plane) give an empty
    ``PatientOrientation`` (Type 2C, zero length allowed) rather than a wrong one; such images
    carry their orientation as burned-in letters only. BodyPartExamined is copied from ``ref``
    (``HEAD`` when absent): an unpaired structure, so Laterality is absent.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = series_instance_uid or generate_uid()
    paths = []
    for n, item in enumerate(images, start=1):
        img, letters = item if isinstance(item, tuple) else (item, ("R", "A"))
        img = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError("secondary capture images must be rows x columns x 3 (RGB)")
        mixed = len(letters) == 0
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ref,
            pixel_array=img,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=SERIES_NUMBERS["sc"],
            sop_instance_uid=sop_instance_uids[n - 1] if sop_instance_uids else generate_uid(),
            instance_number=n,
            manufacturer=MANUFACTURER,
            patient_orientation=patient_orientation(("R", "A") if mixed else letters),
            series_description=series_description[:64],
        )
        if mixed:
            sc.PatientOrientation = None  # present, zero length (Type 2C): no single one fits
        sc.BodyPartExamined = str(ref.get("BodyPartExamined", "") or "HEAD")
        p = out_dir / f"sc_{n:03d}.dcm"
        sc.save_as(p)
        paths.append(p)
    return paths


def write_series(datasets: list[Dataset], out_dir: str | Path) -> list[Path]:
    """Write datasets as ``IM_0001.dcm``... (e.g. a reference series synthesised from NIfTI)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets, start=1):
        p = out_dir / f"IM_{n:04d}.dcm"
        pydicom.dcmwrite(p, ds, enforce_file_format=True)
        paths.append(p)
    return paths
