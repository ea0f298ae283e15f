"""A job queue in the database: leases, heartbeats, retries with back-off, time-outs, cancellation.

Semantics (at-least-once):

* :meth:`JobQueue.claim` atomically takes one runnable job (pending and due, or running with an
  expired lease) with a conditional ``UPDATE ... WHERE`` that only one claimer can win, on
  SQLite and PostgreSQL alike, and hands out a fresh ``lease_token``.
* The holder extends the lease with :meth:`heartbeat`; if it dies (``kill -9``) the lease
  expires and the job is claimed again, so every job runs at least once. Steps must therefore
  be idempotent (deterministic output UIDs, atomic writes, unique constraints).
* :meth:`complete` / :meth:`fail` only succeed for the current token (fencing): a worker that
  lost its lease cannot finish a job a second time, so each job finishes exactly once.
* :meth:`fail` retries with exponential back-off (``base * 2**(attempt-1)``, capped) until
  ``max_attempts``; a job whose lease expired ``max_attempts`` times is failed for good.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neurorad.store.db import Database
from neurorad.store.models import Job, utcnow

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "pending", "running", "succeeded", "failed", "cancelled"


@dataclass(frozen=True)
class Lease:
    """What a worker holds while it runs a job."""

    job_id: int
    token: str
    kind: str
    study_id: int | None
    payload: dict[str, Any]
    attempt: int
    timeout_s: float


class LeaseLost(Exception):
    """The worker's lease was taken over (expired) or the job was cancelled."""


class JobQueue:
    """Operations on the ``jobs`` table; every method is its own short transaction."""

    def __init__(self, db: Database, lease_s: float = 30.0, backoff_base_s: float = 5.0,
                 backoff_max_s: float = 600.0) -> None:
        self.db = db
        self.lease_s = lease_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        #: called (session, job) in the same transaction when a job ends failed/cancelled for good
        self.final_hooks: list[Callable[[Session, Job], None]] = []

    # -- producers -------------------------------------------------------------------------
    @staticmethod
    def enqueue_in(session: Session, kind: str, payload: dict[str, Any] | None = None, *,
                   study_id: int | None = None, idempotency_key: str | None = None,
                   max_attempts: int = 3, timeout_s: float = 3600.0) -> Job:
        """Add a job inside the caller's transaction; an existing job with the same key is returned."""
        if idempotency_key is not None:
            existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
            if existing is not None:
                return existing
        job = Job(kind=kind, payload=payload or {}, study_id=study_id, idempotency_key=idempotency_key,
                  max_attempts=max_attempts, timeout_s=timeout_s, run_after=utcnow(), state=PENDING)
        session.add(job)
        session.flush()
        return job

    def enqueue(self, kind: str, payload: dict[str, Any] | None = None, **kw: Any) -> int:
        try:
            with self.db.session() as s:
                return self.enqueue_in(s, kind, payload, **kw).id
        except IntegrityError:  # lost a race on the idempotency key: the other job stands
            with self.db.session() as s:
                return s.scalar(select(Job.id).where(Job.idempotency_key == kw["idempotency_key"]))

    # -- consumers -------------------------------------------------------------------------
    def claim(self, worker_id: str, kinds: list[str] | None = None) -> Lease | None:
        """Take one runnable job, or None. Expired leases of dead workers are taken over."""
        now = utcnow()
        runnable = or_(and_(Job.state == PENDING, Job.run_after <= now),
                       and_(Job.state == RUNNING, Job.lease_expires_at < now))
        with self.db.session() as s:
            q = select(Job.id, Job.state, Job.attempts, Job.max_attempts, Job.cancel_requested).where(runnable)
            if kinds:
                q = q.where(Job.kind.in_(kinds))
            candidates = s.execute(q.order_by(Job.run_after, Job.id).limit(20)).all()
        for job_id, state, attempts, max_attempts, cancel in candidates:
            token = secrets.token_hex(16)
            with self.db.session() as s:
                cond = and_(Job.id == job_id, runnable)
                if cancel or (state == RUNNING and attempts >= max_attempts):
                    # a dead worker's job that is out of attempts (or was cancelled): finish it
                    final = CANCELLED if cancel else FAILED
                    err = None if cancel else f"worker lost {attempts} time(s) (lease expired); giving up"
                    res = s.execute(update(Job).where(cond).values(
                        state=final, error=err, finished_at=now, lease_token=None, lease_owner=None))
                    if res.rowcount == 1:
                        self._on_final(s, job_id, final, err)
                    continue
                res = s.execute(update(Job).where(cond).values(
                    state=RUNNING, lease_owner=worker_id, lease_token=token,
                    lease_expires_at=now + timedelta(seconds=self.lease_s), heartbeat_at=now,
                    attempts=Job.attempts + 1, started_at=now, error=None))
                if res.rowcount != 1:
                    continue
                job = s.get(Job, job_id)
                return Lease(job.id, token, job.kind, job.study_id, dict(job.payload), job.attempts, job.timeout_s)
        return None

    def heartbeat(self, lease: Lease, progress: float | None = None, message: str | None = None) -> None:
        """Extend the lease (and record progress); raises LeaseLost if the lease is gone or cancelled."""
        now = utcnow()
        values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=self.lease_s), "heartbeat_at": now}
        if progress is not None:
            values["progress"] = float(progress)
        if message is not None:
            values["progress_message"] = message[:256]
        with self.db.session() as s:
            res = s.execute(update(Job).where(Job.id == lease.job_id, Job.lease_token == lease.token,
                                              Job.state == RUNNING).values(**values))
            cancel = s.scalar(select(Job.cancel_requested).where(Job.id == lease.job_id))
        if res.rowcount != 1:
            raise LeaseLost(f"job {lease.job_id}: lease lost")
        if cancel:
            raise LeaseLost(f"job {lease.job_id}: cancelled")

    def complete(self, lease: Lease, on_success: Callable[[Session], None] | None = None) -> bool:
        """Mark the job succeeded; ``on_success(session)`` runs in the same transaction.

        Returns False (and changes nothing) when the lease was lost: someone else owns the job.
        """
        with self.db.session() as s:
            res = s.execute(update(Job).where(Job.id == lease.job_id, Job.lease_token == lease.token,
                                              Job.state == RUNNING).values(
                state=SUCCEEDED, finished_at=utcnow(), progress=1.0, lease_token=None, lease_expires_at=None))
            if res.rowcount != 1:
                s.rollback()
                return False
            if on_success is not None:
                on_success(s)
        return True

    def fail(self, lease: Lease, error: str, retry: bool = True,
             on_final_failure: Callable[[Session, str], None] | None = None) -> str | None:
        """Record a failure: back to pending with back-off, or failed for good.

        Returns the new state, or None when the lease was lost.
        """
        now = utcnow()
        with self.db.session() as s:
            job = s.get(Job, lease.job_id)
            if job is None or job.lease_token != lease.token or job.state != RUNNING:
                return None
            if job.cancel_requested:
                job.state, job.finished_at, job.error = CANCELLED, now, error[:4000]
            elif retry and job.attempts < job.max_attempts:
                delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, job.attempts - 1))
                job.state, job.run_after, job.error = PENDING, now + timedelta(seconds=delay), error[:4000]
            else:
                job.state, job.finished_at, job.error = FAILED, now, error[:4000]
            job.lease_token = job.lease_owner = job.lease_expires_at = None
            if job.state in (FAILED, CANCELLED):
                self._on_final(s, job.id, job.state, job.error)
                if on_final_failure is not None and job.state == FAILED:
                    on_final_failure(s, error)
            return job.state

    def cancel(self, job_id: int) -> str:
        """Cancel: a pending job at once, a running one at its next heartbeat."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise KeyError(job_id)
            if job.state == PENDING:
                job.state, job.finished_at, job.cancel_requested = CANCELLED, utcnow(), True
                self._on_final(s, job.id, CANCELLED, None)
            elif job.state == RUNNING:
                job.cancel_requested = True
            return job.state

    def _on_final(self, s: Session, job_id: int, state: str, error: str | None) -> None:
        job = s.get(Job, job_id)
        for hook in self.final_hooks:
            hook(s, job)
