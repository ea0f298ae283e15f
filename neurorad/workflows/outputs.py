"""The platform's outputs of a workflow result: report (HTML + PDF) and DICOM objects.

Generic over the contract (:mod:`neurorad.workflows.contract`): the wording comes from the
workflow (:meth:`Workflow.report_sections`, :meth:`Workflow.conclusion`), the objects from the
result (mask + findings -> SEG, quantities + findings -> SR TID 1500, key images -> secondary
captures, report PDF -> Encapsulated PDF; one implementation each in :mod:`neurorad.dicom.results`).
The CLI (:func:`neurorad.workflows.runner.execute`) and the server's review path call the same
:func:`write_outputs`, so a file run and a PACS run write the same objects; with a ``review``
the objects hold only the kept findings (:meth:`Workflow.reviewed`) and an UNACCEPTABLE result
gets only its "not usable" report.

Files written into ``folder`` (and listed in ``result.files``)::

    report.html, report.pdf
    dicom/seg.dcm            one segment per finding with a mask label (none when no finding)
    dicom/sr.dcm             TID 1500 measurement report: every quantity, every finding's volume
    dicom/report_pdf.dcm     Encapsulated PDF of report.pdf
    dicom/sc/sc_NNN.dcm      one secondary capture per key image
    dicom/reference/         only for NIfTI input: the reference series synthesised from it

Source series: the DICOM series of ``result.reference_role`` when its input is a DICOM folder,
else one synthesised from the NIfTI with the project's series writer
(:func:`neurorad.image.dicom_series.series_datasets`) under a study UID derived from the input's
hash. UIDs come from :func:`neurorad.dicom.results.deterministic_uid` of (study UID, workflow
name and version, output version; for file inputs also the input hashes): a re-run writes the
same objects, so the PACS never receives duplicates, and two CLI runs on the same files agree.

Report: :func:`neurorad.report.render.render_report` (one renderer for every workflow); the
Encapsulated PDF wraps that PDF. The identified copy for delivery is the platform's
(:func:`neurorad.report.render.render_identified_report` + :func:`neurorad.dicom.results.write_encapsulated_pdf`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neurorad import __version__
from neurorad.errors import InputError
from neurorad.workflows.contract import Finding, Review, Workflow, WorkflowInputs, WorkflowResult

if TYPE_CHECKING:
    from neurorad.report.render import ReportContext

log = logging.getLogger(__name__)

__all__ = ["write_outputs", "report_context", "reference_datasets", "OutputIds", "output_ids"]


# ------------------------------------------------------------------------------------------ report
def report_context(workflow: Workflow, result: WorkflowResult, inputs: WorkflowInputs | None, folder: Path,
                   version: int | None = None) -> ReportContext:
    """The report's context from the inputs: exam date of the reference role, prior exam dates
    (newest first) of the prior roles, the report version."""
    from neurorad.report.render import ReportContext

    dates = dict(inputs.study_dates) if inputs is not None else {}
    role = _reference_role(workflow, result)
    priors = sorted((r for r in workflow.requirements.series if r.prior > 0 and r.role in dates), key=lambda r: r.prior)
    return ReportContext(exam_date=dates.get(role or "", ""), prior_exam_dates=tuple(dates[r.role] for r in priors),
                         report_version=int(version or 1), result_dir=folder)


# ------------------------------------------------------------------------------------ identities
@dataclass(frozen=True)
class OutputIds:
    """The seed of every UID one output version writes (see the module docstring)."""

    study_uid: str
    stable: tuple[str, ...]  # identifies the study + workflow (+ input files): tracking UIDs
    tag: str  # the output version

    def uid(self, *parts: str) -> str:
        from neurorad.dicom.results import deterministic_uid

        return deterministic_uid(*self.stable, self.tag, *parts)

    def tracking_uid(self, finding_id: int) -> str:
        from neurorad.dicom.results import deterministic_uid

        return deterministic_uid(*self.stable, "finding", str(finding_id))


def _review_digest(review: Review) -> str:
    blob = json.dumps({"d": review.decision, "v": review.values, "f": {str(k): v for k, v in review.verdicts.items()},
                       "c": review.comment, "r": review.reviewer, "t": review.reviewed_at}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def output_ids(workflow: Workflow, result: WorkflowResult, study_uid: str, file_inputs: bool,
               review: Review | None = None, version: int | None = None) -> OutputIds:
    """UID seed: (study UID, workflow name, workflow version[, input hashes for file inputs]) and the
    output version (``version`` when the caller numbers versions, as the server does; else
    ``auto`` for the automatic result and a digest of the review for a reviewed one)."""
    stable: tuple[str, ...] = (study_uid, workflow.name, workflow.version)
    if file_inputs:
        stable += tuple(f"{k}={v}" for k, v in sorted(result.provenance.inputs.items()))
    if version is not None:
        tag = f"v{int(version)}"
    else:
        tag = "auto" if review is None else "review-" + _review_digest(review)
    return OutputIds(study_uid, stable, tag)


# -------------------------------------------------------------------------------------- sources
def _reference_role(workflow: Workflow, result: WorkflowResult) -> str | None:
    if result.reference_role:
        return result.reference_role
    current = [r.role for r in workflow.requirements.series if r.prior == 0]
    return current[0] if current else None


def reference_datasets(workflow: Workflow, result: WorkflowResult, folder: Path, inputs: WorkflowInputs | None,
                       mask: object | None = None) -> tuple[list, bool]:
    """(source datasets, synthesised?) for the result's DICOM objects.

    The DICOM series of the reference role's input when it is a folder; else a series synthesised
    from its NIfTI (or, without inputs, from the result's own volume of that role, or the mask)
    and written to ``dicom/reference/``.
    """
    from neurorad.dicom.results import deterministic_uid, read_source_series, source_series_from_volume, write_series
    from neurorad.image.io import load_image

    role = _reference_role(workflow, result)
    path = Path(inputs.series[role]) if inputs is not None and role in inputs.series else None
    if path is not None and path.is_dir():
        return read_source_series(path, mask), False  # type: ignore[arg-type]
    if path is not None:
        vol = load_image(path)
    elif role and role in result.volumes and (folder / result.volumes[role]).exists():
        vol = load_image(folder / result.volumes[role])
    elif mask is not None:
        vol = mask  # type: ignore[assignment]
    else:
        raise ValueError("no reference series: give the inputs or a mask")
    key = result.provenance.inputs.get(role or "", "") or hashlib.sha256(
        np.ascontiguousarray(vol.data).tobytes()).hexdigest()  # type: ignore[attr-defined]
    meta = (vol.metadata.get("dicom") or {})  # type: ignore[attr-defined]
    study_uid = str(meta.get("StudyInstanceUID") or deterministic_uid("study", key))
    modalities = workflow.requirements.role(role).modalities if role in {r.role for r in workflow.requirements.series} \
        else ("MR",)
    modality = str(meta.get("Modality") or (modalities[0] if modalities else "MR")).upper()
    source = source_series_from_volume(
        vol, patient_id=str(meta.get("PatientID", "ANON")), patient_name=str(meta.get("PatientName", "Anonymous^")),
        study_instance_uid=study_uid, series_description=f"{role or 'reference'} (synthesised from NIfTI)"[:64],
        uid_seed=f"reference/{key}", modality=modality if modality in ("MR", "CT") else "MR")
    write_series(source, folder / "dicom" / "reference")
    return source, True


# ----------------------------------------------------------------------------------------- write
def _segment_findings(findings: list[Finding], mask_values: set[int]) -> list[Finding]:
    return [f for f in findings if f.label is not None and int(f.label) in mask_values]


def write_outputs(workflow: Workflow, result: WorkflowResult, folder: Path, inputs: WorkflowInputs | None = None,
                  review: Review | None = None, *, version: int | None = None, dicom: bool = True,
                  context: ReportContext | None = None) -> WorkflowResult:
    """Write the report and DICOM objects of ``result`` into ``folder``; list them in ``result.files``.

    With ``review`` the outputs are those of the reviewed result (:meth:`Workflow.reviewed`: only
    kept findings, quantities recomputed); UNACCEPTABLE gives the "not usable" report and its
    Encapsulated PDF only. ``version`` numbers the output version for UIDs (the server's result
    version); ``context`` overrides the report context (:func:`report_context`: exam dates from
    ``inputs.study_dates``). Returns the result the outputs show.
    """
    from neurorad.dicom import results as dres
    from neurorad.image.nifti import load_nifti
    from neurorad.report.key_images import load_png

    folder = Path(folder)
    usable = review is None or review.accepted
    shown = workflow.reviewed(result, review) if review is not None and usable else result
    if review is not None and usable:
        shown.key_images = [k for k in result.key_images
                            if k.finding_id is None or k.finding_id in {f.id for f in shown.findings}]
    from neurorad.report.render import build_report, render_report

    ctx = context or report_context(workflow, result, inputs, folder, version)
    if ctx.result_dir is None:
        ctx = replace(ctx, result_dir=folder)
    render_report(workflow, result, review, ctx, folder)
    files = {"report_html": "report.html", "report_pdf": "report.pdf"}
    result.files.update(files)
    if not dicom:
        return shown
    ddir = folder / "dicom"
    ddir.mkdir(exist_ok=True)
    # objects of an earlier version in the same folder must not survive (a stale SC would be sent)
    import shutil

    for stale in ("seg.dcm", "sr.dcm", "report_pdf.dcm"):
        (ddir / stale).unlink(missing_ok=True)
    shutil.rmtree(ddir / "sc", ignore_errors=True)
    for key in ("dicom_seg", "dicom_sr", "dicom_pdf", "dicom_sc"):
        result.files.pop(key, None)
    mask = load_nifti(folder / result.mask) if result.mask and (folder / result.mask).exists() else None
    if mask is not None:
        mask = mask.with_data(np.rint(np.asarray(mask.data)).astype(np.int32))
    try:
        source, synthesised = reference_datasets(workflow, result, folder, inputs, mask)
    except (InputError, ValueError) as err:
        if mask is not None:
            raise
        # a workflow without a mask whose reference input is not an image has nothing to refer to
        log.warning("no DICOM objects for %s: %s", workflow.name, err)
        result.files["dicom_skipped"] = f"no reference image series ({err})"
        return shown
    if synthesised:
        files["dicom_reference"] = "dicom/reference/"
    ids = output_ids(workflow, result, str(source[0].StudyInstanceUID), synthesised, review, version)
    status = "draft" if review is None else "reviewed"
    name_v = f"{workflow.name} {workflow.version}"
    soft = [f"neurorad {__version__}", name_v[:64]]
    ref = source[len(source) // 2]

    seg_ds, seg_numbers, tracking = None, {}, {}
    if usable and mask is not None:
        values = {int(v) for v in np.unique(mask.data) if v > 0}
        seg_findings = _segment_findings(shown.findings, values)
        if seg_findings:
            algo_name, algo_version, learned = workflow.segment_algorithm(result)
            specs = []
            for n, f in enumerate(seg_findings, start=1):
                kind = workflow.finding_kinds.get(f.kind, f.kind)
                specs.append(dres.SegmentSpec(int(f.label), f"{f.id} {kind}", f"Finding {f.id}",
                                              ids.tracking_uid(f.id)))
                seg_numbers[f.id], tracking[f.id] = n, ids.tracking_uid(f.id)
            seg_path = dres.write_seg(
                mask, specs, source, ddir / "seg.dcm", algorithm_name=algo_name, algorithm_version=algo_version,
                learned=learned, classical_family=workflow.segment_algorithm_family or "HistogramAnalysis",
                series_description=f"{name_v} segmentation ({status})", content_label=workflow.name,
                series_instance_uid=ids.uid("seg-series"), sop_instance_uid=ids.uid("seg"),
                manufacturer_model_name=f"neurorad {workflow.name}", software_versions=soft)
            files["dicom_seg"] = "dicom/seg.dcm"
            import pydicom

            seg_ds = pydicom.dcmread(seg_path)
    if usable and (shown.quantities or shown.findings):
        algo_name, algo_version, _ = workflow.segment_algorithm(result)
        dres.write_measurement_sr(
            ddir / "sr.dcm", source, shown.quantities, shown.findings, workflow.finding_kinds, seg=seg_ds,
            segment_numbers=seg_numbers,
            tracking_uids=tracking or {f.id: ids.tracking_uid(f.id) for f in shown.findings},
            algorithm_name=algo_name, algorithm_version=algo_version, device_name=f"neurorad {workflow.name}",
            reviewer=(review.reviewer or "reviewer") if review is not None else "",
            series_instance_uid=ids.uid("sr-series"), sop_instance_uid=ids.uid("sr"),
            series_description=f"{name_v} measurements ({status})", quantities_label=workflow.report_title(),
            software_versions=soft)
        files["dicom_sr"] = "dicom/sr.dcm"
    doc_title = build_report(workflow, result, review, ctx).document_title
    dres.write_encapsulated_pdf(
        folder / "report.pdf", ref, ddir / "report_pdf.dcm", title=doc_title,
        sop_instance_uid=ids.uid("pdf"), series_instance_uid=ids.uid("pdf-series"))
    files["dicom_pdf"] = "dicom/report_pdf.dcm"
    keys = [k for k in shown.key_images if (folder / k.path).is_file()] if usable else []
    if keys:
        dres.write_secondary_captures(
            [(load_png(folder / k.path), k.orientation) for k in keys], ref, ddir / "sc",
            series_description=f"{name_v} key images ({status})", series_instance_uid=ids.uid("sc-series"),
            sop_instance_uids=[ids.uid("sc", str(n)) for n in range(len(keys))])
        files["dicom_sc"] = "dicom/sc/"
    result.files.update(files)
    return shown

