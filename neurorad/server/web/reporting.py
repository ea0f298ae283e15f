"""Regenerate the report of a reviewed result as a new version (numbers only when accepted).

After a radiologist's decision the report is rendered again with
:mod:`neurorad.report.ms_report` (HTML, PDF) and wrapped as a DICOM Encapsulated PDF
(:func:`neurorad.dicom.results.write_encapsulated_pdf`, PS3.3 A.45.1):

* ACCEPTABLE: the lesions the reader kept, the reader's comment, and the activity decision
  recomputed from the kept lesions (:func:`neurorad.clinical.ms.ms_decision`).
* UNACCEPTABLE: no numbers at all; the report says the automatic result was not usable.

Each version names the version it supersedes. In DICOM the predecessor is referenced with the
Predecessor Documents Sequence (0040,A360), a standard attribute added to the Encapsulated PDF
(a Standard Extended SOP Class, PS3.4 B.3.1.3), and the new instance carries InstanceNumber =
version in the same series, so a PACS shows the versions side by side.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from neurorad import __version__
from neurorad.clinical.ms import ms_decision
from neurorad.errors import InputError
from neurorad.quantify.lesions import LesionRow
from neurorad.report.ms_report import MSReport, render_html, render_pdf

NOT_USABLE_TEXT = (
    "The automatic result was reviewed and judged not usable (UNACCEPTABLE); "
    "no automatic measurements are reported. Read the images without the software result."
)


@dataclass(frozen=True)
class ReviewedReport:
    """Files of one regenerated report version."""

    version: int
    html_path: Path
    pdf_path: Path
    dicom_path: Path | None
    sop_instance_uid: str | None
    kept_ids: list[int]


def read_lesion_rows(csv_path: Path) -> list[LesionRow]:
    """Lesion rows as written by :func:`neurorad.quantify.lesions.write_lesion_csv`."""
    if not csv_path.exists():
        return []
    names = {f.name: f.type for f in fields(LesionRow)}
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for i, raw in enumerate(csv.DictReader(fh), start=1):
            try:
                kw: dict[str, Any] = {}
                for k, t in names.items():
                    v = raw.get(k)
                    if v is None:
                        continue
                    kw[k] = int(float(v)) if t in ("int", int) else float(v) if t in ("float", float) else v
                if "id" not in kw:
                    kw["id"] = int(float(raw.get("lesion_id") or i))
                if "volume_mm3" not in kw and raw.get("volume_ml"):
                    kw["volume_mm3"] = float(raw["volume_ml"]) * 1000.0
                kw.setdefault("kind", "new")
                kw.setdefault("volume_mm3", 0.0)
                kw.setdefault("diameter_mm", 0.0)
                for axis in "xyz":
                    kw.setdefault(f"centroid_{axis}_mm", float(raw.get(f"{axis}_mm", 0.0) or 0.0))
                rows.append(LesionRow(**kw))
            except (TypeError, ValueError) as err:
                raise InputError(f"lesion table row {i} cannot be read ({err})", csv_path) from err
    return rows


def key_images(folder: Path, rows: list[LesionRow], keep: set[int]) -> list:
    """Key images of the kept lesions (:func:`neurorad.report.ms_report.lesion_panels`), common grid."""
    import nibabel as nib
    import numpy as np

    from neurorad.report.ms_report import lesion_panels

    names = ("baseline.nii.gz", "followup.nii.gz")
    label_name = next((n for n in ("new_lesions_common.nii.gz", "new_lesions.nii.gz") if (folder / n).exists()), None)
    if label_name is None or not all((folder / n).exists() for n in names) or not keep:
        return []
    imgs = [nib.as_closest_canonical(nib.load(folder / n)) for n in (*names, label_name)]
    if len({im.shape[:3] for im in imgs}) != 1:
        return []
    base, fu = (np.asarray(im.dataobj, dtype=np.float32) for im in imgs[:2])
    labels = np.asarray(imgs[2].dataobj).astype(np.int32)
    n = int(labels.max())
    labels[~np.isin(labels, sorted(keep))] = 0
    kinds = ["new"] * n
    by_id = {r.id: r for r in rows}
    for i in range(1, n + 1):
        if i in by_id and by_id[i].kind in ("new", "enlarging"):
            kinds[i - 1] = by_id[i].kind
    ids = [i for i in sorted(keep) if (labels == i).any()]
    cents = [tuple(np.argwhere(labels == i).mean(0)) for i in ids]
    return lesion_panels(base, fu, labels, kinds, cents, None, ids=ids)  # captions: the table's lesion ids


def build_reviewed_report(
    folder: Path,
    decision: str,
    kept_ids: list[int],
    comment: str,
    reviewer: str,
    version: int,
    result_version: int,
    supersedes: str | None,
    missed_lesions: list[dict[str, float]] | None = None,
) -> MSReport:
    """The report model after review (pure apart from reading the result folder)."""
    result = json.loads((folder / "result.json").read_text()) if (folder / "result.json").exists() else {}
    review = {
        "decision": decision,
        "reviewer": reviewer,
        "report_version": version,
        "result_version": result_version,
        "supersedes": supersedes or "none",
        "software_version": __version__,
    }
    provenance = dict(result.get("provenance", {})) if isinstance(result.get("provenance"), dict) else {}
    provenance["review"] = review
    parameters = dict(result.get("parameters", {})) if isinstance(result.get("parameters"), dict) else {}
    notes = [f"Report version {version}" + (f", supersedes {supersedes}." if supersedes else ".")]
    if comment.strip():
        notes.insert(0, f"Radiologist comment: {comment.strip()}")
    if decision != "ACCEPTABLE":
        return MSReport(
            activity_text=NOT_USABLE_TEXT,
            gadolinium=False,
            gadolinium_reason="No recommendation: the automatic result was not usable.",
            lesions=[],
            parameters=parameters,
            provenance=provenance,
            warnings=[f"Reviewed by {reviewer}: UNACCEPTABLE.", *notes],
            title="MRI brain follow-up: automatic result not usable (reviewed)",
        )
    all_rows = read_lesion_rows(folder / "lesions.csv")
    keep = set(kept_ids)
    rows = [r for r in all_rows if r.id in keep]
    discarded = [r.id for r in all_rows if r.id not in keep]
    kinds = [r.kind if r.kind in ("new", "enlarging") else "new" for r in rows]
    dec = ms_decision(kinds)
    images = key_images(folder, all_rows, keep)
    warnings = [f"Reviewed and accepted by {reviewer}."]
    if discarded:
        warnings.append("Candidates discarded by the reader: " + ", ".join(str(i) for i in discarded) + ".")
    for m in missed_lesions or []:
        warnings.append(
            f"Reader marked a lesion the software missed at RAS ({m['x_mm']:.0f}, {m['y_mm']:.0f}, "
            f"{m['z_mm']:.0f}) mm; it is not measured."
        )
    return MSReport(
        activity_text=dec.activity_text,
        gadolinium=dec.gadolinium,
        gadolinium_reason=dec.gadolinium_reason,
        lesions=rows,
        parameters=parameters,
        provenance=provenance,
        warnings=warnings + notes,
        images=images,
        title="MRI brain follow-up: new T2-FLAIR lesions (reviewed)",
    )


def reference_dataset(folder: Path, instance_paths: list[Path]) -> Dataset | None:
    """Patient/study attributes and a source SOP for the DICOM report.

    The study's own stored (pseudonymised) instance if any, else a DICOM object the workflow
    wrote into the result folder (its first source instance is the reference).
    """
    for p in instance_paths:
        if p.exists():
            return pydicom.dcmread(p, stop_before_pixels=True)
    for p in sorted(folder.rglob("*.dcm")):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - any unreadable file is simply not a reference
            continue
        if "StudyInstanceUID" not in ds:
            continue
        ref = Dataset()
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                   "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
            if kw in ds:
                setattr(ref, kw, getattr(ds, kw))
        src = ds.get("SourceInstanceSequence") or ds.get("ReferencedSeriesSequence")
        if "SourceInstanceSequence" in ds and ds.SourceInstanceSequence:
            ref.SOPClassUID = ds.SourceInstanceSequence[0].ReferencedSOPClassUID
            ref.SOPInstanceUID = ds.SourceInstanceSequence[0].ReferencedSOPInstanceUID
        elif src is None:
            ref.SOPClassUID = ds.SOPClassUID
            ref.SOPInstanceUID = ds.SOPInstanceUID
        else:
            continue
        return ref
    return None


def write_reviewed_report(
    folder: Path,
    out_dir: Path,
    report: MSReport,
    version: int,
    ref: Dataset | None,
    predecessor: Dataset | None,
) -> ReviewedReport:
    """Render HTML + PDF (+ DICOM Encapsulated PDF when a reference dataset exists)."""
    from neurorad.dicom.results import write_encapsulated_pdf

    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"report_v{version}.html"
    tmp = html_path.with_suffix(".html.tmp")
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(html_path)
    pdf_path = render_pdf(report, out_dir / f"report_v{version}.pdf")
    dicom_path, sop_uid = None, None
    if ref is not None:
        dicom_path = out_dir / f"report_v{version}.dcm"
        write_encapsulated_pdf(pdf_path, ref, dicom_path, title=f"{report.title[:50]} v{version}")
        ds = pydicom.dcmread(dicom_path)
        ds.InstanceNumber = version
        if predecessor is not None:
            item = Dataset()
            item.StudyInstanceUID = predecessor.StudyInstanceUID
            ser = Dataset()
            ser.SeriesInstanceUID = predecessor.SeriesInstanceUID
            sop = Dataset()
            sop.ReferencedSOPClassUID = predecessor.SOPClassUID
            sop.ReferencedSOPInstanceUID = predecessor.SOPInstanceUID
            ser.ReferencedSOPSequence = [sop]
            item.ReferencedSeriesSequence = [ser]
            ds.PredecessorDocumentsSequence = [item]
            # Same series as the version it supersedes, so the versions sit together in the PACS.
            ds.SeriesInstanceUID = predecessor.SeriesInstanceUID
        tmp_dcm = dicom_path.with_suffix(".dcm.tmp")
        pydicom.dcmwrite(tmp_dcm, ds, enforce_file_format=True)
        tmp_dcm.replace(dicom_path)
        sop_uid = str(ds.SOPInstanceUID)
    kept = [r.id for r in report.lesions]
    return ReviewedReport(version, html_path, pdf_path, dicom_path, sop_uid, kept)


def write_reviewed_seg(
    folder: Path,
    kept_ids: list[int],
    rows: list[LesionRow],
    source: list[Dataset],
    out_path: Path,
    version: int,
) -> Path | None:
    """DICOM SEG (PS3.3 A.51) of the kept lesions only, regenerated from the workflow's label map.

    ``new_lesions.nii.gz`` (labels 1..n on the follow-up's own grid, as the workflow wrote the
    draft SEG from) is masked to ``kept_ids`` and written with the MS workflow's own writer
    (:func:`neurorad.dicom.results.write_seg`) against ``source`` (the examined series). The
    segments are marked SEMIAUTOMATIC (PS3.3 C.8.20.4: "calculated segmentation with user
    assistance": a reader kept them). None when there is no label map or no kept lesion.
    Raises ValueError when the label map does not lie on the source series' grid.
    """
    import numpy as np

    from neurorad.dicom.results import write_seg
    from neurorad.image.nifti import load_nifti

    labels_path = folder / "new_lesions.nii.gz"
    if not kept_ids or not source or not labels_path.exists():
        return None
    vol = load_nifti(labels_path)
    data = np.rint(np.asarray(vol.data)).astype(np.int32)
    data[~np.isin(data, sorted(kept_ids))] = 0
    kinds = {r.id: r.kind for r in rows}
    names = {i: f"Lesion {i} ({kinds.get(i, 'new')})" for i in sorted(kept_ids) if (data == i).any()}
    if not names:
        return None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".dcm.tmp")
    write_seg(vol.with_data(data), names, source, tmp,
              series_description=f"New MS lesions (neurorad, reviewed v{version})"[:64])
    ds = pydicom.dcmread(tmp)
    for item in ds.SegmentSequence:
        item.SegmentAlgorithmType = "SEMIAUTOMATIC"
    ds.InstanceNumber = version
    pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    tmp.replace(out_path)
    return out_path


def write_reviewed_secondary_captures(images: list, ref: Dataset, out_dir: Path, version: int) -> list[Path]:
    """Key images of the kept lesions as RGB Secondary Capture (PS3.3 A.8), with the MS
    workflow's writer (:func:`neurorad.dicom.results.write_secondary_captures`)."""
    from neurorad.dicom.results import write_secondary_captures

    if not images:
        return []
    return write_secondary_captures([k.pixels for k in images], ref, out_dir,
                                    series_description=f"MS lesions overlay (reviewed v{version})"[:64])
