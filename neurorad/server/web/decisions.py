"""Recording a QA decision: store it, audit it, regenerate the report, queue delivery to the PACS.

A decision applies to one result version (the anchor :class:`~neurorad.store.models.Result`
row of the workflow run the reader saw); a decision on a result that changed meanwhile is
refused (409), so nobody accepts numbers they did not see. The audit event holds user, time,
software version, result version, every candidate verdict, missed-lesion markers and the
report version written. Only ACCEPTABLE results put numbers in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from neurorad import __version__
from neurorad.provenance import sha256_file
from neurorad.server.auth import Principal
from neurorad.server.web import reporting
from neurorad.server.web import review as rv
from neurorad.store.audit import audit
from neurorad.store.models import Delivery, Instance, QADecision, Result, Series, Study

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
DECIDABLE_STATES = ("needs_review", "accepted", "rejected", "reported", "delivered")


class DecisionConflict(Exception):
    """The decision does not apply to the current state (stale result, wrong study state)."""


class DecisionInvalid(Exception):
    """The decision is incomplete (e.g. not all time points accepted)."""


def _root(request: Request) -> Path:
    storage = getattr(request.app.state, "storage", None)
    return Path(storage.root) if storage is not None else Path(request.app.state.settings.data_dir)


def _predecessor(s: Session, study: Study, root: Path) -> tuple[int, pydicom.Dataset | None]:
    """Number of report versions so far and the DICOM object of the latest one (if any)."""
    reviewed = s.scalars(select(Result).where(Result.study_id == study.id, Result.kind == "review_dcm")
                         .order_by(Result.id)).all()
    drafts = s.scalars(select(Result).where(Result.study_id == study.id, Result.sop_class_uid == ENCAPSULATED_PDF,
                                            Result.kind != "review_dcm").order_by(Result.id)).all()
    n_reviewed_pdf = len(s.scalars(select(Result.id).where(Result.study_id == study.id,
                                                           Result.kind == "review_pdf")).all())
    n_versions = n_reviewed_pdf + (1 if drafts else 0)
    # A version references what it replaces only if that was issued: reviewed versions are
    # delivered, the workflow's draft only where no review was required (then it was sent).
    latest = reviewed[-1] if reviewed else (drafts[-1] if drafts and _was_sent(s, drafts[-1]) else None)
    ds = None
    if latest is not None:
        p = (root / latest.path).resolve()
        if p.is_file():
            ds = pydicom.dcmread(p, stop_before_pixels=True)
    return n_versions, ds


def _was_sent(s: Session, row: Result) -> bool:
    return s.scalar(select(Delivery.id).where(Delivery.result_id == row.id, Delivery.state == "sent").limit(1)) \
        is not None


def _instance_paths(s: Session, study: Study, root: Path) -> list[Path]:
    rows = s.scalars(select(Instance).join(Series, Series.id == Instance.series_id)
                     .where(Series.study_id == study.id, Instance.path.is_not(None)).order_by(Instance.id).limit(5))
    return [(root / r.path).resolve() for r in rows]


def _add_result(s: Session, study: Study, root: Path, path: Path, kind: str, job_id: int | None,
                sop_uid: str | None = None, sop_class: str | None = None, qa_decision_id: int | None = None) -> Result:
    # Registered under the workflow run it reviews and the decision that wrote it: the data plane
    # delivers the latest decision's objects of the latest run (neurorad.server.orchestration.delivery_set).
    row = Result(study_id=study.id, job_id=job_id, kind=kind, path=str(path.resolve().relative_to(root.resolve())),
                 sop_uid=sop_uid, sop_class_uid=sop_class, sha256=sha256_file(path),
                 workflow=study.workflow or "unknown", software_version=__version__, qa_decision_id=qa_decision_id)
    s.add(row)
    s.flush()
    return row


def _source_series(s: Session, study: Study, res: Result, root: Path) -> list[pydicom.Dataset]:
    """The examined series the workflow's draft SEG references (full datasets, stored and
    pseudonymised), else the series selected as ``flair``; [] when gone (retention purged it)."""
    series_uid = None
    for r in s.scalars(select(Result).where(Result.study_id == study.id, Result.job_id == res.job_id,
                                            Result.kind == "seg").order_by(Result.id)):
        p = (root / r.path).resolve()
        if p.is_file():
            seq = pydicom.dcmread(p, stop_before_pixels=True).get("ReferencedSeriesSequence")
            if seq:
                series_uid = str(seq[0].SeriesInstanceUID)
                break
    q = select(Series).where(Series.study_id == study.id)
    series = s.scalar(q.where(Series.series_uid == series_uid)) if series_uid else None
    if series is None:
        series = s.scalar(q.where(Series.selected_as == "flair").limit(1))
    if series is None:
        return []
    paths = [(root / i.path).resolve() for i in series.instances if i.path]
    if not paths or not all(p.is_file() for p in paths):
        return []
    out = [pydicom.dcmread(p) for p in paths]
    out.sort(key=lambda ds: int(getattr(ds, "InstanceNumber", 0) or 0))
    return out


def _write_reviewed_objects(s: Session, study: Study, res: Result, root: Path, folder: Path, out_dir: Path,
                            decision: str, kept: list[int], report: Any, version: int,
                            ref: pydicom.Dataset | None, add: Any) -> dict[str, Any]:
    """SEG + secondary captures of the kept lesions (ACCEPTABLE only); what was written or why not."""
    if decision != "ACCEPTABLE":
        return {"seg": "none (UNACCEPTABLE: no automatic result is sent)", "sc": 0}
    if not kept:
        return {"seg": "none (no lesion kept)", "sc": 0}
    out: dict[str, Any] = {}
    source = _source_series(s, study, res, root)
    seg_path = None
    if not source:
        out["seg"] = "not regenerated: examined series not stored (purged?); no SEG is sent"
    else:
        try:
            seg_path = reporting.write_reviewed_seg(folder, kept, reporting.read_lesion_rows(folder / "lesions.csv"),
                                                    source, out_dir / f"seg_v{version}.dcm", version)
        except ValueError as err:  # label grid does not match the series: send no SEG rather than a wrong one
            out["seg"] = f"not regenerated: {err}; no SEG is sent"
    if seg_path is not None:
        seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
        out["seg"] = add(seg_path, "review_seg", str(seg.SOPInstanceUID), str(seg.SOPClassUID)).id
    else:
        out.setdefault("seg", "none (no label map of the kept lesions)")
    sc_ref = source[len(source) // 2] if source else ref
    sc_paths = []
    if sc_ref is not None and report.images:
        sc_paths = reporting.write_reviewed_secondary_captures(report.images, sc_ref, out_dir / f"sc_v{version}",
                                                               version)
    for pth in sc_paths:
        sc = pydicom.dcmread(pth, stop_before_pixels=True)
        add(pth, "review_sc", str(sc.SOPInstanceUID), str(sc.SOPClassUID))
    out["sc"] = len(sc_paths)
    return out


def decide(request: Request, s: Session, study: Study, p: Principal, body: Any) -> dict[str, Any]:
    """Apply one decision (see module docstring); returns what the page shows."""
    from neurorad.server.web.router import current_result

    root = _root(request)
    if study.state not in DECIDABLE_STATES:
        raise DecisionConflict(f"study is {study.state}; nothing to review")
    res, folder = current_result(s, study, root)
    if res is None or folder is None:
        raise DecisionConflict("this study has no reviewable result")
    if body.result_version != res.id:
        raise DecisionConflict(f"the result changed (now version {res.id}); reload the page before deciding")
    data = rv.build_review(folder, res.id, lambda n: n, study.workflow)
    known = {c.lesion_id for c in data.lesions}
    verdicts = {c.lesion_id: c.verdict for c in body.candidates}
    unknown = set(verdicts) - known
    if unknown:
        raise DecisionInvalid(f"unknown candidate ids {sorted(unknown)}")
    if body.decision == "ACCEPTABLE" and set(data.timepoints_required) - set(body.timepoints_accepted):
        missing = sorted(set(data.timepoints_required) - set(body.timepoints_accepted))
        raise DecisionInvalid(f"all time points must be accepted; not accepted: {', '.join(missing)}")
    kept = sorted(i for i in known if verdicts.get(i, "keep") == "keep")
    discarded = sorted(known - set(kept))
    missed = [m.model_dump() for m in body.missed_lesions]

    n_versions, predecessor = _predecessor(s, study, root)
    version = n_versions + 1
    supersedes = f"report version {n_versions}" if n_versions else None
    # The decision itself holds what was decided (not only the audit event).
    decision = QADecision(study_id=study.id, result_id=res.id, user_id=p.user_id, decision=body.decision,
                          score=body.score, comment=body.comment or None, software_version=__version__,
                          candidates=[{"lesion_id": i, "verdict": "keep" if i in kept else "discard"}
                                      for i in sorted(known)],
                          missed_lesions=missed, timepoints_accepted=list(body.timepoints_accepted),
                          report_version=version)
    s.add(decision)
    s.flush()
    report = reporting.build_reviewed_report(folder, body.decision, kept, body.comment, p.username, version,
                                             res.id, supersedes, missed)
    ref = reporting.reference_dataset(folder, _instance_paths(s, study, root))
    out_dir = root / "results" / str(int(study.id)) / "review"
    written = reporting.write_reviewed_report(folder, out_dir, report, version, ref, predecessor)

    def add(path: Path, kind: str, sop_uid: str | None = None, sop_class: str | None = None) -> Result:
        return _add_result(s, study, root, path, kind, res.job_id, sop_uid, sop_class, decision.id)

    add(written.html_path, "review_html")
    add(written.pdf_path, "review_pdf")
    dcm_row = None
    if written.dicom_path is not None:
        dcm_row = add(written.dicom_path, "review_dcm", written.sop_instance_uid, ENCAPSULATED_PDF)
    # The SEG and key images go to the PACS only as regenerated from the kept lesions: the
    # workflow's drafts may show discarded candidates and are never delivered after a review.
    objects = _write_reviewed_objects(s, study, res, root, folder, out_dir, body.decision, kept, report, version,
                                      ref, add)
    audit(s, p.actor, "qa.decision", "study", study.id, decision_id=decision.id, decision=body.decision,
          score=body.score, comment=body.comment, result_version=res.id, kept_candidates=kept,
          discarded_candidates=discarded, missed_lesions=missed, timepoints_accepted=body.timepoints_accepted,
          report_version=version, report_result_id=dcm_row.id if dcm_row else None,
          supersedes=supersedes, software_version=__version__, user_id=p.user_id, reviewed_objects=objects)
    delivery = _advance_and_deliver(request, s, study, p, body.decision, dcm_row)
    return {
        "decision": body.decision,
        "score": body.score,
        "result_version": res.id,
        "report_version": version,
        "kept": kept,
        "discarded": discarded,
        "state": study.state,
        "delivery": delivery,
        "report_url": f"/web/api/studies/{study.id}/reports/{version}?fmt=html",
    }


def _advance_and_deliver(request: Request, s: Session, study: Study, p: Principal, decision: str,
                         report_row: Result | None) -> str:
    """Walk the state machine and queue delivery of the new report version (data plane).

    ACCEPTABLE: ``needs_review -> accepted -> reported``; UNACCEPTABLE: ``needs_review ->
    rejected -> reported`` (the "not usable" report is delivered too, so the PACS learns that
    the automatic result must not be used); a later decision on a delivered study goes
    ``delivered -> reported`` and sends its superseding version. Each step is a recorded
    transition; ``delivered`` follows when the delivery job has sent everything.
    """
    from neurorad.server.orchestration import queue_delivery
    from neurorad.store.state import StudyState, transition

    target = StudyState.ACCEPTED if decision == "ACCEPTABLE" else StudyState.REJECTED
    if study.state == StudyState.NEEDS_REVIEW:
        transition(s, study, target, p.actor, f"review: {decision}")
    elif decision == "ACCEPTABLE" and study.state == StudyState.REJECTED:
        raise DecisionConflict("a rejected result is re-run before it can be accepted (retry the workflow)")
    if report_row is None:
        return "not delivered (no DICOM reference for the report)"
    settings = request.app.state.settings
    if not settings.destinations:
        return "stored (no PACS destination configured)"
    if study.state not in (StudyState.ACCEPTED, StudyState.REJECTED, StudyState.REPORTED, StudyState.DELIVERED,
                           StudyState.FAILED):
        return f"stored, not delivered (study is {study.state})"
    # A later decision on a delivered study (also UNACCEPTABLE) sends its superseding version.
    job = queue_delivery(s, settings, study, p.actor,
                         force=study.state not in (StudyState.ACCEPTED, StudyState.REJECTED))
    return f"queued for delivery (job {job.id})"
