"""Database models of the clinical data plane (SQLAlchemy 2, typed declarative mapping).

Everything here is pseudonymised: patient and study identifiers are the pseudonyms the
de-identifier produced (DICOM PS3.15 Annex E), never the originals. The originals live
only in the encrypted pseudonym vault (``neurorad.dicom.vault``).

Times are naive UTC (``utcnow()``), so SQLite and PostgreSQL behave the same.
The schema is created and upgraded by the Alembic migrations shipped in
``neurorad/store/migrations`` (see :func:`neurorad.store.db.migrate`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Current time, naive UTC (the one clock convention of the store)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Patient(Base):
    """A pseudonymised patient: only the pseudonym, never a name or original ID."""

    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudo_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    """One imaging study (pseudonymised Study Instance UID) walking the state machine."""

    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(32), default="received", index=True)
    state_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    workflow: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source_aet: Mapped[str | None] = mapped_column(String(16), nullable=True)
    modalities: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_instance_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    images_purged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")
    transitions: Mapped[list[StudyTransition]] = relationship(
        back_populates="study", order_by="StudyTransition.id"
    )
    results: Mapped[list[Result]] = relationship(back_populates="study", order_by="Result.id")
    runs: Mapped[list[WorkflowRun]] = relationship(back_populates="study", order_by="WorkflowRun.id")


class WorkflowRun(Base):
    """One workflow's run on one study: its state (the study state machine's run part: queued ->
    running -> needs_review -> accepted/rejected -> reported -> delivered, or failed), its latest
    job, its result version (the anchor :class:`Result` row a review applies to) and its latest
    QA decision. One row per (study, workflow): a re-run moves the same row on (new job, new
    result version). The study's own state is the aggregate of its runs (``neurorad.server``).
    """

    __tablename__ = "workflow_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    workflow: Mapped[str] = mapped_column(String(64))
    workflow_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(32), default="queued", index=True)
    state_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # role -> series id chosen for this run (this study's series and, for priors, earlier studies')
    series: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decision_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=0)
    study: Mapped[Study] = relationship(back_populates="runs")

    __table_args__ = (UniqueConstraint("study_id", "workflow", name="uq_run_study_workflow"),)


class Series(Base):
    """One series of a study, with the classifier's verdict and whether it was selected."""

    __tablename__ = "series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    description: Mapped[str | None] = mapped_column(String(128), nullable=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    classification: Mapped[str | None] = mapped_column(String(64), nullable=True)
    selected_as: Mapped[str | None] = mapped_column(String(64), nullable=True)
    n_instances: Mapped[int] = mapped_column(Integer, default=0)
    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", order_by="Instance.id")


class Instance(Base):
    """One stored (de-identified) DICOM instance; ``path`` is relative to the data dir."""

    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(String(512), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    times_received: Mapped[int] = mapped_column(Integer, default=1)
    purged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    series: Mapped[Series] = relationship(back_populates="instances")


class QuarantineItem(Base):
    """Input refused at the door (bad file, failed de-identification, wrong modality).

    Only the reason and metadata are kept, never the bytes: they may carry identifiers.
    """

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), nullable=True)


class StudyTransition(Base):
    """One state-machine step of a study: from, to, when, who, why and software version."""

    __tablename__ = "study_transitions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_state: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    software_version: Mapped[str] = mapped_column(String(32))
    # set when the step is a workflow run's (NULL: the study's own state)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    study: Mapped[Study] = relationship(back_populates="transitions")


class Job(Base):
    """A unit of work in the database queue (lease + heartbeat, at-least-once).

    ``lease_token`` fences a worker: only the holder of the current token may report
    progress or finish the job, so a worker that lost its lease cannot finish twice.
    """

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), nullable=True, index=True)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    timeout_s: Mapped[float] = mapped_column(Float, default=3600.0)
    run_after: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str | None] = mapped_column(String(256), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (Index("ix_jobs_state_run_after", "state", "run_after"),)


class Result(Base):
    """A result object of a workflow (DICOM SEG / PDF / SC / SR or a table), pseudonymised."""

    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(512))
    # not unique: a re-run (new job) of a deterministic workflow writes the same SOP Instance UIDs;
    # delivery sends only the results of the study's latest succeeded workflow job
    sop_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    sop_class_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    workflow: Mapped[str] = mapped_column(String(64))
    software_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # the QA decision whose reviewed version this object is (report version, SEG and secondary
    # captures regenerated with the kept lesions); None for the workflow's own (draft) objects.
    # Delivery sends only the latest decision's objects once one exists. A plain indexed id,
    # not a foreign key: qa_decisions already references results (no circular constraint).
    qa_decision_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    study: Mapped[Study] = relationship(back_populates="results")


class Delivery(Base):
    """Delivery of one result object to one destination; unique, so a retry never duplicates."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"))
    destination: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    __table_args__ = (UniqueConstraint("result_id", "destination", name="uq_delivery_result_destination"),)


class QADecision(Base):
    """A radiologist's verdict on a study's results (ACCEPTABLE / UNACCEPTABLE, 1-5, comment)."""

    __tablename__ = "qa_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    result_id: Mapped[int | None] = mapped_column(ForeignKey("results.id"), nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    decision: Mapped[str] = mapped_column(String(16))
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # what exactly was decided, on the row itself (also in the qa.decision audit event); NULL on
    # rows written before migration 0002 and for decisions without a candidate list (API review)
    software_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # [{"lesion_id": 2, "verdict": "keep" | "discard"}, ...] for every candidate of the result
    candidates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # [{"x_mm": .., "y_mm": .., "z_mm": ..}, ...] world RAS+ mm of lesions the software missed
    missed_lesions: Mapped[list[dict[str, float]] | None] = mapped_column(JSON, nullable=True)
    timepoints_accepted: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    report_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # migration 0004: the workflow run decided on, the form's values, and the amendment reason when
    # this decision supersedes an earlier one on the same result version
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    form_values: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    amends_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    amendment_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditEvent(Base):
    """Append-only audit log: who did what to which object, when, with which software."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    object_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    software_version: Mapped[str] = mapped_column(String(32))


class User(Base):
    """A person who signs in; password stored as an Argon2id hash (RFC 9106)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token for machines; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(64))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # None only for tokens made before migration 0003
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # the web session that minted it (revoked at that session's sign-out); None: made by the CLI
    session_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class WebSession(Base):
    """A browser session; the cookie holds a random secret, the table only its SHA-256."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
