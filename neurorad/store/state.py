"""The study state machine; every transition is stored with time, actor and software version.

::

    received -> selected -> queued -> running -> needs_review -> accepted -> reported -> delivered
                                                              \\-> rejected ----^ (with a review report)
    any non-final state -> failed (with a reason);  failed / rejected / delivered -> queued (re-run)
    failed / delivered -> received (new instances of the study arrived)

``rejected -> reported`` is taken only when the review wrote a report (the "automatic result
not usable" version): that report is delivered like an accepted one, so the PACS learns that
the software result must not be used. ``delivered -> reported`` is a later decision's new
report version being delivered; ``delivered -> queued`` re-runs the workflow (e.g. after a
delivered rejection).

``received`` covers the time while instances still arrive; the scheduler declares a study
complete after a quiet period and moves it on (``selected``), or to ``failed`` with a
reason such as "missing required series: FLAIR".
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.orm import Session

from neurorad import __version__
from neurorad.store.models import Study, StudyTransition, utcnow


class StudyState(StrEnum):
    RECEIVED = "received"
    SELECTED = "selected"
    QUEUED = "queued"
    RUNNING = "running"
    NEEDS_REVIEW = "needs_review"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REPORTED = "reported"
    DELIVERED = "delivered"
    FAILED = "failed"


S = StudyState
ALLOWED: dict[StudyState, frozenset[StudyState]] = {
    S.RECEIVED: frozenset({S.RECEIVED, S.SELECTED, S.FAILED}),
    S.SELECTED: frozenset({S.QUEUED, S.FAILED, S.RECEIVED}),
    S.QUEUED: frozenset({S.RUNNING, S.FAILED, S.RECEIVED}),
    S.RUNNING: frozenset({S.NEEDS_REVIEW, S.FAILED, S.QUEUED}),
    S.NEEDS_REVIEW: frozenset({S.ACCEPTED, S.REJECTED, S.FAILED, S.QUEUED}),
    S.ACCEPTED: frozenset({S.REPORTED, S.FAILED}),
    S.REJECTED: frozenset({S.QUEUED, S.REPORTED}),
    S.REPORTED: frozenset({S.DELIVERED, S.FAILED}),
    S.DELIVERED: frozenset({S.RECEIVED, S.REPORTED, S.QUEUED}),
    S.FAILED: frozenset({S.QUEUED, S.RECEIVED, S.SELECTED, S.REPORTED}),
}


class TransitionError(Exception):
    """A transition the state machine does not allow."""


def can_transition(current: str, target: str) -> bool:
    return StudyState(target) in ALLOWED[StudyState(current)]


def transition(session: Session, study: Study, target: StudyState | str, actor: str,
               reason: str | None = None) -> StudyTransition:
    """Move ``study`` to ``target`` and record it (caller commits, in the same transaction)."""
    target = StudyState(target)
    current = StudyState(study.state)
    if target not in ALLOWED[current]:
        raise TransitionError(f"study {study.id}: {current.value} -> {target.value} is not allowed")
    rec = StudyTransition(study_id=study.id, from_state=current.value, to_state=target.value, at=utcnow(),
                          actor=actor, reason=reason, software_version=__version__)
    session.add(rec)
    study.state = target.value
    study.state_reason = reason
    study.version = (study.version or 0) + 1
    study.updated_at = utcnow()
    return rec
