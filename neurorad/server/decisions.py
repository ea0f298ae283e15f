"""The one QA-decision path: the REST API (``POST /api/studies/{id}/review``) and the review web app
(``POST /web/api/studies/{id}/decision``) both call :func:`decide`.

A decision applies to one result version of one workflow run (``result_version``: the id of the
run's anchor :class:`~neurorad.store.models.Result`, as the review data and the study API show
it). The rules, in order:

* only radiologists decide (:data:`DECIDING_ROLES`; admins and technologists get 403);
* a decision on a result version that is not the run's current one is refused (409): nobody
  accepts numbers they did not see;
* the form is the workflow's :class:`~neurorad.workflows.contract.ReviewForm`: its fields
  (e.g. the 1-5 score), one verdict per finding from its vocabulary (unlisted findings get the
  first verdict, e.g. "keep"; an ACCEPTABLE decision must give its own verdict on each finding
  the workflow leaves to the reader, ``Workflow.finding_needs_verdict``), missed-finding markers
  when allowed, and every time point the form names for an ACCEPTABLE decision (422 otherwise);
* a result version that already has a decision is changed only by an explicit amendment with a
  reason (409 without one); the amendment is audited (``qa.amendment``) and writes a
  superseding report version;
* second reader: when the workflow says an ACCEPTABLE decision needs a second radiologist's
  independent reading (``Workflow.second_reader_reason``), the run goes to ``second_reading`` and
  nothing is delivered; the next decision on that result version must come from a different
  radiologist (409 for the first reader, unless amending with a reason), needs no amendment reason,
  is given the first decision as ``Review.prior_readings`` and is the one reported and delivered;
* the report and the reviewed DICOM objects are regenerated through
  :func:`neurorad.workflows.outputs.write_outputs` from :meth:`Workflow.reviewed` (discarded
  findings removed, quantities recomputed) or, for UNACCEPTABLE, the workflow's "not usable"
  report; the objects of the latest decision are delivered (the drafts never are once a
  decision exists).

The JSON of the request and the answer is documented in docs/review.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neurorad import __version__
from neurorad.provenance import sha256_file
from neurorad.server.auth import DECIDING_ROLES
from neurorad.store.audit import audit
from neurorad.store.models import QADecision, Result, Series, Study, WorkflowRun, utcnow
from neurorad.store.state import StudyState, TransitionError, sync_study_state, transition
from neurorad.workflows import registry
from neurorad.workflows.contract import Review, Workflow, WorkflowInputs, WorkflowResult

#: ``DECIDING_ROLES`` (neurorad.server.auth) is the one role rule of QA decisions: both endpoints
#: and the page's ``can_decide`` use it.
#: Run states in which a result can be decided (a later decision amends an earlier one).
DECIDABLE_STATES = ("needs_review", "second_reading", "accepted", "rejected", "reported", "delivered", "failed")


def can_decide(role: str) -> bool:
    return role in DECIDING_ROLES


class DecisionForbidden(Exception):
    """The user's role may not record QA decisions (403)."""


class DecisionConflict(Exception):
    """The decision does not apply to the current state: stale result, decided without amendment (409)."""


class DecisionInvalid(Exception):
    """The decision does not fit the workflow's review form (422)."""


# -- request --------------------------------------------------------------------------------------
class VerdictIn(BaseModel):
    finding_id: int | None = None
    lesion_id: int | None = None  # the review page's former name of finding_id
    verdict: str = Field(max_length=64)

    @property
    def id(self) -> int:
        if self.finding_id is None and self.lesion_id is None:
            raise DecisionInvalid("a verdict needs finding_id")
        return int(self.finding_id if self.finding_id is not None else self.lesion_id)  # type: ignore[arg-type]


class MissedIn(BaseModel):
    x_mm: float
    y_mm: float
    z_mm: float


class DecisionIn(BaseModel):
    """A QA decision (docs/review.md). ``score`` is shorthand for ``values["score"]``;
    ``candidates`` / ``missed_lesions`` are accepted as the former names of ``verdicts`` / ``missed``."""

    result_version: int
    decision: Literal["ACCEPTABLE", "UNACCEPTABLE"]
    values: dict[str, Any] = Field(default_factory=dict)
    score: int | None = Field(default=None, ge=1, le=5)
    comment: str = Field(default="", max_length=2000)
    verdicts: list[VerdictIn] = Field(default_factory=list, max_length=1000)
    candidates: list[VerdictIn] = Field(default_factory=list, max_length=1000)
    missed: list[MissedIn] = Field(default_factory=list, max_length=100)
    missed_lesions: list[MissedIn] = Field(default_factory=list, max_length=100)
    timepoints_accepted: list[str] = Field(default_factory=list, max_length=10)
    amendment_reason: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _merge_aliases(self) -> DecisionIn:
        if self.score is not None and "score" not in self.values:
            self.values = {**self.values, "score": str(self.score)}
        self.verdicts = [*self.verdicts, *self.candidates]
        self.candidates = []
        self.missed = [*self.missed, *self.missed_lesions]
        self.missed_lesions = []
        if self.comment is None:
            self.comment = ""
        return self


@dataclass
class Context:
    """What :func:`decide` needs from the app: settings (destinations, review rules) and storage."""

    settings: Any
    storage: Any


# -- helpers ----------------------------------------------------------------------------------------
def result_folder(storage: Any, run: WorkflowRun, s: Session, anchor: Result | None = None) -> Path | None:
    """The folder holding the run's current ``result.json`` (None when the run has no result);
    ``anchor``: the run's current Result row when the caller has loaded it already."""
    if run.result_id is None:
        return None
    if anchor is None or anchor.id != run.result_id:
        anchor = s.get(Result, run.result_id)
    if anchor is None:
        return None
    p = storage.abspath(anchor.path)
    folder = p.parent if p.name == WorkflowResult.RESULT_JSON else p
    return folder if (folder / WorkflowResult.RESULT_JSON).exists() else None


def reviewed_result_folder(storage: Any, run: WorkflowRun, s: Session) -> tuple[QADecision | None, Path | None]:
    """The run's latest decision and the folder of the result it left (``result.json`` of
    :meth:`Workflow.reviewed`, written by :func:`decide`); (None, None) before any decision,
    (decision, None) when that version's result file is missing."""
    dec = s.scalar(select(QADecision).where(QADecision.run_id == run.id).order_by(QADecision.id.desc()).limit(1))
    if dec is None:
        return None, None
    rows = s.scalars(select(Result).where(Result.qa_decision_id == dec.id, Result.kind == "review_json")
                     .order_by(Result.id)).all()
    return dec, reviewed_folder(storage, rows)


def reviewed_folder(storage: Any, review_json_rows: Iterable[Result]) -> Path | None:
    """The folder of the first existing ``result.json`` among a decision's ``review_json`` result rows
    (:func:`reviewed_result_folder`; the worklist loads the rows of all its studies at once)."""
    for row in review_json_rows:
        p = storage.abspath(row.path)
        if p.name == WorkflowResult.RESULT_JSON and p.is_file():
            return p.parent
    return None


def run_for_result(s: Session, study: Study, result_version: int) -> WorkflowRun:
    """The study's run whose current result version is ``result_version``; DecisionConflict if stale."""
    run = s.scalar(select(WorkflowRun).where(WorkflowRun.study_id == study.id,
                                             WorkflowRun.result_id == result_version))
    if run is not None:
        return run
    row = s.get(Result, result_version)
    if row is not None and row.study_id == study.id and row.run_id is not None:
        cur = s.get(WorkflowRun, row.run_id)
        raise DecisionConflict(f"the {cur.workflow} result changed (now version {cur.result_id}); reload the page "
                               "before deciding")
    current = [r.result_id for r in study.runs if r.result_id]
    raise DecisionConflict(f"result version {result_version} is not a current result of this study "
                           f"(current: {current or 'none'}); reload the page before deciding")


def _inputs(s: Session, storage: Any, run: WorkflowRun, folder: Path) -> WorkflowInputs:
    """The run's series as folders of links to the stored instances (for objects that reference the
    examined series, e.g. a SEG); roles whose images were purged are left out."""
    series: dict[str, Path] = {}
    dates: dict[str, str] = {}
    for role, sid in (run.series or {}).items():
        x = s.get(Series, int(sid))
        paths = sorted(storage.abspath(i.path) for i in x.instances if i.path) if x is not None else []
        paths = [p for p in paths if p.exists()]
        if not paths:
            continue
        d = folder / "inputs" / role
        d.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(paths):
            (d / f"{i:05d}.dcm").symlink_to(p)
        series[role] = d
        try:
            import pydicom

            date = str(getattr(pydicom.dcmread(paths[0], stop_before_pixels=True, specific_tags=["StudyDate"]),
                               "StudyDate", "") or "")
            if date:
                dates[role] = date
        except Exception:  # noqa: BLE001 - an unreadable header: the report says "not known"
            pass
    return WorkflowInputs(series, dates)


def _link_result_files(src: Path, dst: Path) -> None:
    """The reviewed version's folder sees the result's images, masks and key images (links), so the
    reviewed result's relative paths stay valid; reports and DICOM objects are written anew."""
    for p in src.rglob("*"):
        rel = p.relative_to(src)
        if not p.is_file() or rel.parts[0] in ("dicom", "inputs") or p.name in (WorkflowResult.RESULT_JSON,) \
                or p.name.startswith("report."):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(p)


_REVIEW_KIND = {"seg": "review_seg", "pdf": "review_dcm", "sc": "review_sc", "sr": "review_sr", "dicom": "review_dcm"}


def _register(s: Session, storage: Any, study: Study, run: WorkflowRun, folder: Path, decision_id: int) -> list[Result]:
    """Result rows for every file the reviewed version wrote (not the links to the run's files)."""
    from neurorad.server.orchestration import _result_kind

    rows = []
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not p.is_file() or "inputs" in p.relative_to(folder).parts:
            continue
        kind, sop_uid, sop_class = _result_kind(p)
        if sop_uid is not None:
            kind = _REVIEW_KIND.get(kind, "review_dcm")
        else:
            kind = {"html": "review_html", "report_pdf": "review_pdf", "json": "review_json"}.get(kind, "review_file")
        row = Result(study_id=study.id, job_id=run.job_id, run_id=run.id, kind=kind, path=storage.relpath(p),
                     sop_uid=sop_uid, sop_class_uid=sop_class, sha256=sha256_file(p), workflow=run.workflow,
                     software_version=__version__, qa_decision_id=decision_id)
        s.add(row)
        rows.append(row)
    s.flush()
    return rows


def report_url(study_id: int, run_id: int, version: int, fmt: str = "html") -> str:
    return f"/web/api/studies/{study_id}/reports/{version}?fmt={fmt}&run={run_id}"


# -- the decision -----------------------------------------------------------------------------------
def decide(s: Session, ctx: Context, study: Study, user_id: int | None, username: str, role: str,
           body: DecisionIn) -> dict[str, Any]:
    """Apply one QA decision (see the module docstring); returns the answer both endpoints send."""
    if not can_decide(role):
        raise DecisionForbidden("only radiologists record QA decisions")
    actor = f"user:{username}"
    run = run_for_result(s, study, body.result_version)
    if run.state not in DECIDABLE_STATES:
        raise DecisionConflict(f"the {run.workflow} run is {run.state}; nothing to review")
    previous = s.scalar(select(QADecision).where(QADecision.run_id == run.id, QADecision.result_id == run.result_id)
                        .order_by(QADecision.id.desc()).limit(1))
    reason = (body.amendment_reason or "").strip()
    second_reading = run.state == StudyState.SECOND_READING and previous is not None and not reason
    if second_reading and previous is not None and _same_reader(s, previous, user_id, username):
        raise DecisionConflict(f"result version {run.result_id} awaits a second, different radiologist's independent "
                               f"reading ({run.state_reason or 'second reader required'}); the first reader may only "
                               "amend with amendment_reason")
    if previous is not None and not reason and not second_reading:
        raise DecisionConflict(f"result version {run.result_id} was already decided ({previous.decision}, decision "
                               f"{previous.id}); changing it is an amendment and needs amendment_reason")
    if previous is None and reason:
        raise DecisionInvalid("amendment_reason is only for changing an earlier decision; this result has none")
    try:
        wf: Workflow = registry.load(run.workflow)
    except registry.WorkflowLoadError as exc:
        raise DecisionConflict(str(exc)) from None
    folder = result_folder(ctx.storage, run, s)
    if folder is None:
        raise DecisionConflict(f"the {run.workflow} run has no stored result")
    result = WorkflowResult.read_json(folder)
    form = wf.review_form

    # -- validate against the workflow's form
    verdicts: dict[int, str] = {}
    for v in body.verdicts:
        verdicts[v.id] = v.verdict
    known = {f.id for f in result.findings}
    unknown = sorted(set(verdicts) - known)
    if unknown:
        raise DecisionInvalid(f"unknown finding id(s) {unknown}; this result has {sorted(known)}")
    try:
        values = form.validate(body.values, verdicts)
    except ValueError as err:
        raise DecisionInvalid(str(err)) from None
    if body.decision == "ACCEPTABLE":
        undecided = [f for f in result.findings if f.id not in verdicts and wf.finding_needs_verdict(result, f)]
        if undecided:
            what = "; ".join(f"{f.id} ({wf.finding_caption(result, f) or 'needs the reader'})" for f in undecided)
            raise DecisionInvalid(f"finding(s) {what} need the reader's own verdict before the result can be "
                                  "ACCEPTABLE; give a verdict for each")
    default = form.finding_verdicts[0].value if form.finding_verdicts else "keep"
    verdicts = {fid: verdicts.get(fid, default) for fid in sorted(known)}
    if body.missed and not form.allow_missed:
        raise DecisionInvalid("this workflow's form has no missed-finding markers")
    required = set(wf.required_timepoints(result))
    if body.decision == "ACCEPTABLE" and required - set(body.timepoints_accepted):
        missing = sorted(required - set(body.timepoints_accepted))
        raise DecisionInvalid(f"all time points must be accepted; not accepted: {', '.join(missing)}")
    if body.comment and not form.comment:
        raise DecisionInvalid("this workflow's form has no comment")
    missed = [m.model_dump() for m in body.missed]
    discard = set(form.discard_verdicts)
    kept = [fid for fid, v in verdicts.items() if v not in discard]
    discarded = [fid for fid, v in verdicts.items() if v in discard]

    # -- record
    n_before = s.scalar(select(func.count(QADecision.id)).where(QADecision.run_id == run.id)) or 0
    version = n_before + 2  # the workflow's own draft report is version 1
    score = values.get("score")
    dec = QADecision(study_id=study.id, result_id=run.result_id, run_id=run.id, user_id=user_id,
                     decision=body.decision, score=int(score) if isinstance(score, str) and score.isdigit() else None,
                     comment=body.comment or None, software_version=__version__,
                     candidates=[{"finding_id": fid, "verdict": v} for fid, v in verdicts.items()],
                     missed_lesions=missed, timepoints_accepted=list(body.timepoints_accepted),
                     report_version=version, form_values=values, amends_id=previous.id if previous else None,
                     amendment_reason=reason or None)
    s.add(dec)
    s.flush()
    run.decision_id = dec.id
    review = Review(body.decision, values, verdicts,
                    tuple((m["x_mm"], m["y_mm"], m["z_mm"]) for m in missed), body.comment, username,
                    utcnow().isoformat(timespec="seconds") + "Z", tuple(body.timepoints_accepted), version, reason,
                    prior_readings=(_as_review(s, previous),) if second_reading and previous is not None else ())

    # -- regenerate the report and the reviewed objects (one implementation: workflows.outputs)
    from neurorad.workflows import outputs

    out = ctx.storage.root / "results" / str(int(study.id)) / "review" / f"run{run.id}" / f"v{version}"
    if out.exists():  # a version folder left by a decision whose transaction failed: replace it
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    _link_result_files(folder, out)
    inputs = _inputs(s, ctx.storage, run, out)
    # write_outputs applies the review (Workflow.reviewed: kept findings, recomputed quantities) and
    # returns the result the new version shows; its UIDs are numbered by the report version, and the
    # report names the version it supersedes
    superseded = s.scalar(select(func.max(QADecision.report_version)).where(QADecision.run_id == run.id,
                                                                            QADecision.id != dec.id))
    report_ctx = replace(outputs.report_context(wf, result, inputs, out, version), supersedes=superseded,
                         pseudonym=study.patient.pseudo_id)
    reviewed = outputs.write_outputs(wf, result, out, inputs, review, version=version, context=report_ctx)
    reviewed.files.update(result.files)
    reviewed.write_json(out)
    rows = _register(s, ctx.storage, study, run, out, dec.id)
    dicom_rows = [r for r in rows if r.sop_uid]

    audit(s, actor, "qa.decision", "study", study.id, decision_id=dec.id, run_id=run.id, workflow=run.workflow,
          workflow_version=run.workflow_version, decision=body.decision, values=values, score=dec.score,
          comment=body.comment, result_version=run.result_id, verdicts={str(k): v for k, v in verdicts.items()},
          kept=kept, discarded=discarded, missed=missed, timepoints_accepted=body.timepoints_accepted,
          report_version=version, objects=[r.kind for r in rows], software_version=__version__, user_id=user_id,
          amends=previous.id if previous else None)
    if second_reading and previous is not None:
        audit(s, actor, "qa.second_reading", "study", study.id, decision_id=dec.id, first_decision=previous.id,
              run_id=run.id, first=previous.decision, second=body.decision,
              agree=previous.decision == body.decision and (previous.form_values or {}) == values)
    elif previous is not None:
        audit(s, actor, "qa.amendment", "study", study.id, decision_id=dec.id, amends=previous.id,
              from_decision=previous.decision, to_decision=body.decision, reason=reason, run_id=run.id)
    need = "" if second_reading or body.decision != "ACCEPTABLE" else wf.second_reader_reason(reviewed, review)
    if need and run.state in (StudyState.NEEDS_REVIEW, StudyState.SECOND_READING):
        if run.state == StudyState.NEEDS_REVIEW:
            transition(s, run, StudyState.SECOND_READING, actor, f"second reader required: {need}"[:2000])
        sync_study_state(s, study, actor)
        audit(s, actor, "qa.second_reader_required", "study", study.id, decision_id=dec.id, run_id=run.id,
              reason=need)
        delivery = f"held: a second radiologist's independent reading is required ({need})"
    else:
        delivery = _advance_and_deliver(s, ctx, study, run, actor, body.decision, dicom_rows)
    return {
        "decision_id": dec.id,
        "decision": body.decision,
        "values": values,
        "score": dec.score,
        "workflow": run.workflow,
        "run_id": run.id,
        "result_version": run.result_id,
        "report_version": version,
        "amends": previous.id if previous else None,
        "kept": kept,
        "discarded": discarded,
        "state": run.state,
        "study_state": study.state,
        "delivery": delivery,
        "objects": [{"kind": r.kind, "sop_uid": r.sop_uid} for r in rows],
        "report_url": report_url(study.id, run.id, version),
    }


def _advance_and_deliver(s: Session, ctx: Context, study: Study, run: WorkflowRun, actor: str, decision: str,
                         dicom_rows: list[Result]) -> str:
    """Walk the run's state machine and queue delivery of the new version's DICOM objects.

    ACCEPTABLE: ``needs_review -> accepted -> reported``; UNACCEPTABLE: ``needs_review -> rejected
    -> reported`` (the "not usable" report is delivered too, so the PACS learns the automatic
    result must not be used); an amendment on a reported/delivered run sends its superseding
    version. ``delivered`` follows when the delivery job has sent everything.
    """
    from neurorad.server.orchestration import DataPlane

    target = StudyState.ACCEPTED if decision == "ACCEPTABLE" else StudyState.REJECTED
    if run.state in (StudyState.NEEDS_REVIEW, StudyState.SECOND_READING):
        transition(s, run, target, actor, f"review: {decision}")
    elif decision == "ACCEPTABLE" and run.state == StudyState.REJECTED:
        raise DecisionConflict("a rejected result is re-run before it can be accepted (retry the workflow)")
    sync_study_state(s, study, actor)
    if not dicom_rows:
        return "stored, not delivered (the report wrote no DICOM object)"
    if not ctx.settings.destinations:
        return "stored (no PACS destination configured)"
    if run.state not in (StudyState.ACCEPTED, StudyState.REJECTED, StudyState.REPORTED, StudyState.DELIVERED,
                         StudyState.FAILED):
        return f"stored, not delivered (run is {run.state})"
    try:
        job = DataPlane.queue_delivery(s, ctx.settings, run, actor,
                                       force=run.state not in (StudyState.ACCEPTED, StudyState.REJECTED))
    except TransitionError as exc:
        return f"stored, not delivered ({exc})"
    return f"queued for delivery (job {job.id})"


def _same_reader(s: Session, previous: QADecision, user_id: int | None, username: str) -> bool:
    if previous.user_id is not None and user_id is not None:
        return previous.user_id == user_id
    from neurorad.store.models import User

    first = s.get(User, previous.user_id) if previous.user_id is not None else None
    return first is None or first.username == username


def _as_review(s: Session, d: QADecision) -> Review:
    """A stored decision as the contract's :class:`Review` (for ``Review.prior_readings``)."""
    from neurorad.store.models import User

    u = s.get(User, d.user_id) if d.user_id is not None else None
    verdicts = {int(v.get("finding_id", v.get("lesion_id", 0))): str(v["verdict"]) for v in d.candidates or []}
    return Review(d.decision, dict(d.form_values or {}), verdicts,  # type: ignore[arg-type]
                  tuple((m["x_mm"], m["y_mm"], m["z_mm"]) for m in d.missed_lesions or []), d.comment or "",
                  u.username if u else "", d.created_at.isoformat(timespec="seconds") + "Z" if d.created_at else "",
                  tuple(d.timepoints_accepted or ()), d.report_version or 0, d.amendment_reason or "")


def context_of(app_state: Any) -> Context:
    """The :class:`Context` of a FastAPI app (``request.app.state``)."""
    return Context(app_state.settings, app_state.storage)


__all__ = ["DECIDING_ROLES", "DECIDABLE_STATES", "DecisionIn", "DecisionForbidden", "DecisionConflict",
           "DecisionInvalid", "decide", "can_decide", "result_folder", "reviewed_result_folder", "reviewed_folder",
           "run_for_result",
           "report_url", "context_of"]
