"""DICOM result objects that reference the examined series: SEG, Encapsulated PDF, secondary capture.

* Segmentation (PS3.3 A.51) built with highdicom, which validates what the standard requires;
  one segment per lesion class, frames on the source series' own geometry.
* Encapsulated PDF (PS3.3 A.45.1), built with pydicom (highdicom has no encapsulated document IOD).
* Secondary Capture (PS3.3 A.8) RGB images via highdicom ``SCImage.from_ref_dataset``, for PACS
  viewers that cannot show SEG.

All objects copy patient and study attributes from a reference (source) dataset so that they
land in the follow-up study. When the input was NIfTI there is no source series:
:func:`source_series_from_volume` synthesises a minimal MR image series (documented in
docs/ms-lesions.md) whose geometry is exactly that of the volume.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from neurorad import __version__
from neurorad.image.volume import Volume

MANUFACTURER = "neurorad"
logging.getLogger("highdicom").setLevel(logging.WARNING)  # its INFO lines name dataset UIDs, one per module
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_lps_slices(volume: Volume) -> Volume:
    """Reorder axes so that i runs to patient Left, j to Posterior, k to Superior (the usual axial
    DICOM display: rows top = anterior, columns left of the image = patient right)."""
    ornt = nib.orientations.io_orientation(volume.affine)
    target = nib.orientations.axcodes2ornt(("L", "P", "S"))
    tr = nib.orientations.ornt_transform(ornt, target)
    data = nib.orientations.apply_orientation(volume.data, tr)
    aff = volume.affine @ nib.orientations.inv_ornt_aff(tr, volume.spatial_shape)
    return Volume(np.ascontiguousarray(data), aff, dict(volume.metadata))


def _slice_geometry(volume: Volume, k: int) -> tuple[list[float], list[float], list[float]]:
    """ImagePositionPatient, ImageOrientationPatient, PixelSpacing of slice k (columns = i, rows = j)."""
    lps = _RAS_TO_LPS @ volume.affine
    sp = volume.spacing_mm
    pos = lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3]
    row_dir = lps[:3, 0] / sp[0]
    col_dir = lps[:3, 1] / sp[1]
    return (
        [round(float(x), 4) for x in pos],
        [round(float(x), 6) for x in (*row_dir, *col_dir)],
        [round(float(sp[1]), 6), round(float(sp[0]), 6)],
    )


def slice_pixels(data: np.ndarray, k: int) -> np.ndarray:
    """Pixel array (rows, columns) of slice k of a volume array: rows = j, columns = i."""
    return np.ascontiguousarray(np.asarray(data)[:, :, k].T)


def source_series_from_volume(
    volume: Volume,
    patient_id: str = "ANON",
    patient_name: str = "Anonymous^",
    study_instance_uid: str | None = None,
    series_description: str = "FLAIR (from NIfTI)",
    series_number: int = 1,
) -> list[Dataset]:
    """A minimal, valid MR Image Storage series carrying ``volume`` (one dataset per k slice).

    Used when the input was NIfTI, so that SEG/PDF/SC have a study and series to reference.
    Intensities are rescaled to uint16 with RescaleSlope/Intercept recorded.
    """
    vol = to_lps_slices(volume)
    data = np.asarray(vol.data, dtype=np.float64)
    lo, hi = float(np.min(data)), float(np.max(data))
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    pix = np.clip(np.rint((data - lo) / slope), 0, 65535).astype(np.uint16)
    study_uid = study_instance_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    now = _dt.datetime.now()
    out = []
    for k in range(vol.spatial_shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        sop_uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.PatientID = patient_id
        ds.PatientName = patient_name
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = now.strftime("%Y%m%d")
        ds.StudyTime = now.strftime("%H%M%S")
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.InstanceNumber = k + 1
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = MANUFACTURER
        ds.ScanningSequence = "RM"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        pos, ori, spacing = _slice_geometry(vol, k)
        ds.ImagePositionPatient = pos
        ds.ImageOrientationPatient = ori
        ds.PixelSpacing = spacing
        ds.SliceThickness = round(float(vol.spacing_mm[2]), 6)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        sl = slice_pixels(pix, k)
        ds.Rows, ds.Columns = sl.shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = round(lo, 6)
        ds.RescaleSlope = float(f"{slope:.10g}")
        ds.PixelData = sl.tobytes()
        out.append(ds)
    return out


def labels_to_source_frames(labels: Volume, source: list[Dataset], tol_vox: float = 0.05) -> np.ndarray:
    """Label array (frames, rows, cols) sampled at every pixel centre of the source slices, in order.

    ``labels`` must lie on the source series' grid (any axis order); each pixel's world position
    (ImagePositionPatient + PixelSpacing along ImageOrientationPatient) must fall on a label voxel
    centre within ``tol_vox``, otherwise the grids differ and ValueError is raised.
    """
    inv = np.linalg.inv(labels.affine)
    shape = np.asarray(labels.spatial_shape)
    frames = []
    for ds in source:
        rows, cols = int(ds.Rows), int(ds.Columns)
        ori = np.asarray(ds.ImageOrientationPatient, dtype=float)
        dr, dc = (float(x) for x in ds.PixelSpacing)  # between rows, between columns
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        r, c = np.mgrid[0:rows, 0:cols]
        lps = ipp[None, None, :] + c[..., None] * dc * ori[:3] + r[..., None] * dr * ori[3:]
        ras = lps * np.array([-1.0, -1.0, 1.0])
        ijk = ras @ inv[:3, :3].T + inv[:3, 3]
        near = np.rint(ijk)
        if np.abs(ijk - near).max() > tol_vox or (near < 0).any() or (near >= shape).any():
            raise ValueError("label grid does not match the source series geometry")
        n = near.astype(np.int64)
        frames.append(np.asarray(labels.data)[n[..., 0], n[..., 1], n[..., 2]])
    return np.stack(frames)


def write_seg(
    labels: Volume,
    segment_names: dict[int, str],
    source: list[Dataset],
    path: str | Path,
    algorithm_name: str = "neurorad ms-lesions",
    series_description: str = "New MS lesions (neurorad, draft)",
) -> Path:
    """Write a labelmap-style BINARY DICOM SEG (one segment per label value) referencing ``source``.

    ``labels`` holds integer values 1..K on the source series' grid; ``segment_names`` names each.
    """
    frames = labels_to_source_frames(labels, source)
    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    present = [v for v in sorted(segment_names) if v > 0]
    descs = []
    arr = np.zeros((*frames.shape, max(len(present), 1)), dtype=np.uint8)
    for n, v in enumerate(present, start=1):
        descs.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=segment_names[v][:64],
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Lesion,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algo,
                tracking_uid=generate_uid(),
                tracking_id=segment_names[v][:64],
            )
        )
        arr[..., n - 1] = frames == v
    if not descs:
        raise ValueError("no segment to write")
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=arr,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs,
        series_instance_uid=generate_uid(),
        series_number=901,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="neurorad ms-lesions",
        software_versions=__version__,
        device_serial_number="0",
        series_description=series_description,
        omit_empty_frames=False,
    )
    path = Path(path)
    seg.save_as(path)
    return path


def _copy_patient_study(ref: Dataset, ds: Dataset) -> None:
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, kw, getattr(ref, kw, ""))


def write_encapsulated_pdf(
    pdf_path: str | Path, ref: Dataset, path: str | Path, title: str = "Draft MS follow-up report (neurorad)"
) -> Path:
    """Encapsulated PDF (PS3.3 A.45.1) of ``pdf_path`` in the reference dataset's study."""
    pdf = Path(pdf_path).read_bytes()
    if not pdf.startswith(b"%PDF"):
        raise ValueError(f"{pdf_path} is not a PDF")
    ds = Dataset()
    sop_uid = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_uid
    _copy_patient_study(ref, ds)
    now = _dt.datetime.now()
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 902
    ds.SeriesDescription = title[:64]
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = __version__
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    if len(pdf) % 2:
        pdf += b"\x00"
    ds.EncapsulatedDocument = pdf
    ds.EncapsulatedDocumentLength = len(Path(pdf_path).read_bytes())
    src = Dataset()
    src.ReferencedSOPClassUID = ref.SOPClassUID
    src.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    ds.SourceInstanceSequence = [src]
    path = Path(path)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_secondary_captures(
    images: list[np.ndarray], ref: Dataset, out_dir: str | Path, series_description: str = "MS lesions overlay (draft)"
) -> list[Path]:
    """RGB secondary-capture images (uint8, rows x cols x 3) in the reference dataset's study."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    paths = []
    for n, img in enumerate(images, start=1):
        img = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError("secondary capture images must be rows x columns x 3 (RGB)")
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ref,
            pixel_array=img,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=903,
            sop_instance_uid=generate_uid(),
            instance_number=n,
            manufacturer=MANUFACTURER,
            patient_orientation=("L", "P"),
            series_description=series_description,
        )
        p = out_dir / f"sc_{n:03d}.dcm"
        sc.save_as(p)
        paths.append(p)
    return paths


def write_series(datasets: list[Dataset], out_dir: str | Path) -> list[Path]:
    """Write datasets as ``IM_0001.dcm``... (used for the synthesised follow-up reference series)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets, start=1):
        p = out_dir / f"IM_{n:04d}.dcm"
        pydicom.dcmwrite(p, ds, enforce_file_format=True)
        paths.append(p)
    return paths
