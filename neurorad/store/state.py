"""The study state machine; every transition is stored with time, actor and software version.

::

    received -> selected -> queued -> running -> needs_review -> accepted -> reported -> delivered
                                                              \\-> rejected ----^ (with a review report)
                                               needs_review -> second_reading -> accepted / rejected
    any non-final state -> failed (with a reason);  failed / rejected / delivered -> queued (re-run)
    failed / delivered -> received (new instances of the study arrived)

``rejected -> reported`` is taken only when the review wrote a report (the "automatic result
not usable" version): that report is delivered like an accepted one, so the PACS learns that
the software result must not be used. ``delivered -> reported`` is a later decision's new
report version being delivered; ``delivered -> queued`` re-runs the workflow (e.g. after a
delivered rejection).

``second_reading``: the workflow said the first decision needs a second, different radiologist's
independent reading (``Workflow.second_reader_reason``); nothing is delivered until that
decision is recorded.

``received`` covers the time while instances still arrive; the scheduler declares a study
complete after a quiet period and routes it to every enabled workflow whose requirements its
series meet (``selected``), or marks it ``no_workflow`` with the reason of each workflow
(e.g. "<workflow>: missing <role> (<series class>) in a previous study (prior 1)").

Several workflows may run on one study: each :class:`~neurorad.store.models.WorkflowRun` walks
the part of the machine from ``queued`` on by itself (its steps are recorded with its
``run_id``), and the study's state after selection is the aggregate of its runs
(:func:`aggregate_state`: the run that needs attention first), recorded as the study's own step
whenever it changes (:func:`sync_study_state`).
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.orm import Session

from neurorad import __version__
from neurorad.store.models import Study, StudyTransition, WorkflowRun, utcnow


class StudyState(StrEnum):
    RECEIVED = "received"
    SELECTED = "selected"
    QUEUED = "queued"
    RUNNING = "running"
    NEEDS_REVIEW = "needs_review"
    SECOND_READING = "second_reading"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REPORTED = "reported"
    DELIVERED = "delivered"
    FAILED = "failed"
    NO_WORKFLOW = "no_workflow"


S = StudyState
ALLOWED: dict[StudyState, frozenset[StudyState]] = {
    S.RECEIVED: frozenset({S.RECEIVED, S.SELECTED, S.FAILED, S.NO_WORKFLOW}),
    S.SELECTED: frozenset({S.QUEUED, S.FAILED, S.RECEIVED}),
    S.QUEUED: frozenset({S.RUNNING, S.FAILED, S.RECEIVED}),
    S.RUNNING: frozenset({S.NEEDS_REVIEW, S.FAILED, S.QUEUED}),
    S.NEEDS_REVIEW: frozenset({S.ACCEPTED, S.REJECTED, S.FAILED, S.QUEUED, S.SECOND_READING}),
    S.SECOND_READING: frozenset({S.ACCEPTED, S.REJECTED, S.FAILED, S.QUEUED}),
    S.ACCEPTED: frozenset({S.REPORTED, S.FAILED}),
    S.REJECTED: frozenset({S.QUEUED, S.REPORTED}),
    S.REPORTED: frozenset({S.DELIVERED, S.FAILED}),
    S.DELIVERED: frozenset({S.RECEIVED, S.REPORTED, S.QUEUED}),
    S.FAILED: frozenset({S.QUEUED, S.RECEIVED, S.SELECTED, S.REPORTED}),
    S.NO_WORKFLOW: frozenset({S.RECEIVED, S.SELECTED, S.NO_WORKFLOW}),
}

#: the order in which a study shows its runs' states: the first that any run is in wins (work in
#: progress, then what awaits a reader, then failures, then the finished states)
AGGREGATE_ORDER = (S.QUEUED, S.RUNNING, S.NEEDS_REVIEW, S.SECOND_READING, S.FAILED, S.ACCEPTED, S.REJECTED,
                   S.REPORTED, S.DELIVERED)


class TransitionError(Exception):
    """A transition the state machine does not allow."""


def can_transition(current: str, target: str) -> bool:
    return StudyState(target) in ALLOWED[StudyState(current)]


def transition(session: Session, study: Study | WorkflowRun, target: StudyState | str, actor: str,
               reason: str | None = None) -> StudyTransition:
    """Move ``study`` (or one workflow run of a study) to ``target`` and record it (caller commits,
    in the same transaction). A run's step is recorded with its ``run_id``; the study's aggregate
    follows through :func:`sync_study_state`."""
    target = StudyState(target)
    current = StudyState(study.state)
    is_run = isinstance(study, WorkflowRun)
    what = f"study {study.study_id} run {study.id} ({study.workflow})" if is_run else f"study {study.id}"
    if target not in ALLOWED[current]:
        raise TransitionError(f"{what}: {current.value} -> {target.value} is not allowed")
    rec = StudyTransition(study_id=study.study_id if is_run else study.id, from_state=current.value,
                          to_state=target.value, at=utcnow(), actor=actor, reason=reason,
                          software_version=__version__, run_id=study.id if is_run else None)
    session.add(rec)
    study.state = target.value
    study.state_reason = reason
    study.version = (study.version or 0) + 1
    study.updated_at = utcnow()
    return rec


def aggregate_state(states: list[str]) -> StudyState | None:
    """The study state its runs' states add up to (see :data:`AGGREGATE_ORDER`); None without runs."""
    present = {StudyState(x) for x in states}
    return next((x for x in AGGREGATE_ORDER if x in present), None)


def sync_study_state(session: Session, study: Study, actor: str, reason: str | None = None) -> None:
    """Record the study's aggregate state when its runs moved it (a derived step: not checked
    against :data:`ALLOWED`, which governs each run). Caller commits."""
    runs = session.query(WorkflowRun).filter(WorkflowRun.study_id == study.id).all()
    target = aggregate_state([r.state for r in runs])
    if target is None or study.state == target.value:
        return
    if reason is None and len(runs) == 1:
        reason = runs[0].state_reason
    elif reason is None:
        reason = "; ".join(f"{r.workflow}: {r.state}" + (f" ({r.state_reason})" if r.state_reason else "")
                           for r in runs)[:2000]
    session.add(StudyTransition(study_id=study.id, from_state=study.state, to_state=target.value, at=utcnow(),
                                actor=actor, reason=reason, software_version=__version__))
    study.state = target.value
    study.state_reason = reason
    study.version = (study.version or 0) + 1
    study.updated_at = utcnow()
