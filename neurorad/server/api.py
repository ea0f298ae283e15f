"""REST API: studies, series, jobs, results, quarantine, audit, users and tokens.

Every endpoint but ``/api/health`` needs authentication. Objects are addressed by internal
integer ids; the only DICOM identifiers exposed are pseudonymised UIDs, so no patient
identifier ever appears in a URL or a log line.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, joinedload

from neurorad import __version__
from neurorad.server import auth
from neurorad.server.auth import (
    Principal,
    csrf_protect,
    current_user,
    get_db_session,
    require_decider,
    require_role,
)
from neurorad.server.decisions import DecisionIn
from neurorad.server.params import DbId, Offset, limit_query
from neurorad.store.audit import audit
from neurorad.store.models import (
    ApiToken,
    AuditEvent,
    Delivery,
    Instance,
    Job,
    QADecision,
    QuarantineItem,
    Result,
    Series,
    Study,
    StudyTransition,
    User,
    WorkflowRun,
)
from neurorad.store.state import StudyState, TransitionError, transition

router = APIRouter(prefix="/api")


# -- models -------------------------------------------------------------------------------------
class LoginIn(BaseModel):
    # bounded: a failed username is kept by the sign-in throttle for its window
    username: str = Field(max_length=128)
    password: str = Field(max_length=1024)


class MeOut(BaseModel):
    username: str
    role: str
    csrf_token: str | None = None


class TransitionOut(BaseModel):
    from_state: str | None
    to_state: str
    at: datetime
    actor: str
    reason: str | None
    software_version: str


class SeriesOut(BaseModel):
    id: int
    series_uid: str
    modality: str | None
    description: str | None
    series_number: int | None
    classification: str | None
    selected_as: str | None
    n_instances: int


class JobOut(BaseModel):
    id: int
    kind: str
    study_id: int | None
    state: str
    attempts: int
    max_attempts: int
    progress: float
    progress_message: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool


class DeliveryOut(BaseModel):
    destination: str
    state: str
    attempts: int
    last_error: str | None
    delivered_at: datetime | None


class ResultOut(BaseModel):
    id: int
    study_id: int
    job_id: int | None
    kind: str
    sop_uid: str | None
    workflow: str
    software_version: str
    created_at: datetime
    deliveries: list[DeliveryOut] = []


class QAOut(BaseModel):
    decision: str
    score: int | None
    comment: str | None
    created_at: datetime
    username: str | None = None
    result_id: int | None = None
    software_version: str | None = None
    candidates: list[dict[str, Any]] | None = None
    missed_lesions: list[dict[str, float]] | None = None
    timepoints_accepted: list[str] | None = None
    report_version: int | None = None
    id: int | None = None
    run_id: int | None = None
    values: dict[str, Any] | None = None
    amends_id: int | None = None
    amendment_reason: str | None = None


class StudyOut(BaseModel):
    id: int
    study_uid: str
    patient_pseudo_id: str
    state: str
    state_reason: str | None
    workflow: str | None
    modalities: str | None
    received_at: datetime
    last_instance_at: datetime
    updated_at: datetime
    images_purged_at: datetime | None
    n_series: int = 0
    n_instances: int = 0


class RunOut(BaseModel):
    """One workflow's run on the study: its state, result version (what a decision names) and decision."""

    id: int
    workflow: str
    workflow_version: str | None
    state: str
    state_reason: str | None
    result_version: int | None
    decision_id: int | None
    series: dict[str, Any]
    transitions: list[TransitionOut] = []


class StudyDetail(StudyOut):
    series: list[SeriesOut]
    transitions: list[TransitionOut]
    runs: list[RunOut] = []
    jobs: list[JobOut]
    results: list[ResultOut]
    qa: list[QAOut]


class ReasonIn(BaseModel):
    reason: str | None = Field(default=None, max_length=1000)


class UserIn(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=8)
    role: Literal["admin", "radiologist", "technologist"]


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    days: float | None = Field(default=None, gt=0, le=365)


# -- helpers ------------------------------------------------------------------------------------
def _study_counts(s: Session, study_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(series, instances) per study, in one query (not two per study)."""
    if not study_ids:
        return {}
    n_inst = (select(Instance.series_id, func.count(Instance.id).label("n")).group_by(Instance.series_id)
              .subquery())
    rows = s.execute(select(Series.study_id, func.count(Series.id), func.coalesce(func.sum(n_inst.c.n), 0))
                     .outerjoin(n_inst, n_inst.c.series_id == Series.id)
                     .where(Series.study_id.in_(study_ids)).group_by(Series.study_id)).all()
    return {sid: (int(ns), int(ni)) for sid, ns, ni in rows}


def _study_out(s: Session, st: Study, cls=StudyOut, counts: tuple[int, int] | None = None, **extra: Any) -> Any:
    n_series, n_inst = counts if counts is not None else _study_counts(s, [st.id]).get(st.id, (0, 0))
    return cls(id=st.id, study_uid=st.study_uid, patient_pseudo_id=st.patient.pseudo_id, state=st.state,
               state_reason=st.state_reason, workflow=st.workflow, modalities=st.modalities,
               received_at=st.received_at, last_instance_at=st.last_instance_at, updated_at=st.updated_at,
               images_purged_at=st.images_purged_at, n_series=n_series, n_instances=n_inst, **extra)


def _get_study(s: Session, study_id: int) -> Study:
    st = s.get(Study, study_id)
    if st is None:
        raise HTTPException(404, "no such study")
    return st


def _result_out(s: Session, r: Result) -> ResultOut:
    dels = s.scalars(select(Delivery).where(Delivery.result_id == r.id)).all()
    return ResultOut(id=r.id, study_id=r.study_id, job_id=r.job_id, kind=r.kind, sop_uid=r.sop_uid,
                     workflow=r.workflow, software_version=r.software_version, created_at=r.created_at,
                     deliveries=[DeliveryOut.model_validate(d, from_attributes=True) for d in dels])


# -- health and auth ----------------------------------------------------------------------------
_HEALTH_THREADS = anyio.CapacityLimiter(2)


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Liveness and readiness (no authentication, no data).

    Answers within a second under any request load: it runs in the event loop and reports the
    database check of a monitor thread (``neurorad.server.app.DatabaseMonitor``, one ``SELECT``
    a second on a connection of its own; a result older than 5 s counts as a failure), so it
    never waits for the request thread pool, the connection pool or the database.
    """
    monitor = getattr(request.app.state, "db_monitor", None)
    if monitor is not None:
        ok = monitor.ok(max_age_s=5.0)
    else:  # no lifespan (a bare TestClient): check now
        ok = await anyio.to_thread.run_sync(request.app.state.db.ping, limiter=_HEALTH_THREADS)
    return {"status": "ok" if ok else "degraded", "version": __version__, "database": ok}


@router.get("/openapi.json", include_in_schema=False)
def openapi_schema(request: Request, p: Principal = Depends(current_user)) -> dict[str, Any]:
    """The OpenAPI description of this API (signed-in users only)."""
    return request.app.openapi()


@router.get("/docs", include_in_schema=False)
def api_docs(request: Request, p: Principal = Depends(current_user)) -> Response:
    """A plain HTML list of the endpoints (signed-in users only; no script, nothing from a CDN)."""
    import html

    rows = []
    for path, ops in sorted(request.app.openapi().get("paths", {}).items()):
        for method, op in ops.items():
            summary = (op.get("summary") or "") + (": " + op["description"].split("\n\n")[0]
                                                   if op.get("description") else "")
            rows.append(f"<tr><td>{html.escape(method.upper())}</td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(summary)}</td></tr>")
    body = ("<!doctype html><html><head><meta charset='utf-8'><title>neurorad API</title></head><body>"
            f"<h1>neurorad API {html.escape(__version__)}</h1><p>Machine-readable: "
            "<a href='/api/openapi.json'>/api/openapi.json</a></p><table>" + "".join(rows) + "</table></body></html>")
    return Response(body, media_type="text/html", headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"})


@router.post("/auth/login", response_model=MeOut,
             responses={429: {"description": "too many failed sign-ins; see the Retry-After header"}})
def login(body: LoginIn, request: Request, response: Response) -> MeOut:
    """Sign in (session cookie + CSRF token). Rate limited per client IP and per username:
    after too many failures in the window the answer is 429 with ``Retry-After`` (seconds),
    whatever the password (see :class:`neurorad.server.auth.LoginThrottle`).

    The password check (Argon2, tens of milliseconds) reads a snapshot and holds no lock;
    only the session row and the audit entry are written, in a short transaction."""
    settings = request.app.state.settings
    db = request.app.state.db
    throttle: auth.LoginThrottle = request.app.state.login_throttle
    ip = auth.client_ip(request)
    wait_s = throttle.attempt(ip, body.username)  # checks and counts at once (parallel requests)
    if wait_s is not None:
        with db.session() as s:
            audit(s, "anonymous", "auth.login_throttled", "user", None, retry_after_s=wait_s)
        raise HTTPException(429, "too many failed sign-ins; try again later",
                            headers={"Retry-After": str(wait_s)})
    with db.read_session() as r:
        user = auth.authenticate(r, body.username, body.password)
    if user is None:  # already counted by attempt()
        with db.session() as s:
            audit(s, "anonymous", "auth.login_failed", "user", None)
        raise HTTPException(401, "wrong username or password")
    throttle.success(ip, body.username)
    with db.session() as s:
        if auth.needs_rehash(user):
            s.execute(update(User).where(User.id == user.id).values(password_hash=auth.hash_password(body.password)))
        secret, csrf = auth.create_session(s, user, settings.session_hours)
        audit(s, f"user:{user.username}", "auth.login", "user", user.id)
    auth.set_session_cookies(response, secret, csrf, auth.cookies_secure(request),
                             int(settings.session_hours * 3600))
    return MeOut(username=user.username, role=user.role, csrf_token=csrf)


@router.post("/auth/logout", dependencies=[Depends(csrf_protect)])
def logout(request: Request, response: Response, s: Session = Depends(get_db_session),
           p: Principal = Depends(current_user)) -> dict[str, str]:
    from neurorad.store.models import WebSession

    secret = request.cookies.get(auth.SESSION_COOKIE)
    if secret:
        ws = s.scalar(select(WebSession).where(WebSession.secret_sha256 == auth.sha256_hex(secret)))
        if ws is not None:
            # tokens minted in this session end with it
            s.execute(update(ApiToken).where(ApiToken.session_id == ws.id).values(revoked=True))
            s.delete(ws)
    auth.clear_session_cookies(response)
    audit(s, p.actor, "auth.logout", "user", p.user_id)
    return {"status": "signed out"}


@router.get("/auth/me", response_model=MeOut)
def me(p: Principal = Depends(current_user)) -> MeOut:
    return MeOut(username=p.username, role=p.role, csrf_token=p.csrf_token)


@router.post("/users", dependencies=[Depends(csrf_protect)], status_code=201)
def add_user(body: UserIn, s: Session = Depends(get_db_session),
             p: Principal = Depends(require_role("admin"))) -> dict[str, Any]:
    try:
        user = auth.create_user(s, body.username, body.password, body.role)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    audit(s, p.actor, "user.create", "user", user.id, role=user.role)
    return {"id": user.id, "username": user.username, "role": user.role}


@router.post("/tokens", dependencies=[Depends(csrf_protect)], status_code=201)
def add_token(body: TokenIn, s: Session = Depends(get_db_session),
              p: Principal = Depends(current_user)) -> dict[str, Any]:
    """A new API token for the caller (shown once). It expires after ``days`` (default 90), and
    never after the session or token it was made with; one made in a web session is revoked
    when that session signs out."""
    user = s.get(User, p.user_id)
    try:
        token = auth.create_api_token(s, user, body.name, body.days, session_id=p.session_id,
                                      not_after=p.expires_at)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    row = auth.token_rows(s, p.user_id)[0]
    audit(s, p.actor, "token.create", "token", row["id"], name=body.name)
    return {"token": token, "name": body.name, "id": row["id"], "expires_at": row["expires_at"]}


@router.get("/tokens")
def list_tokens(s: Session = Depends(get_db_session), p: Principal = Depends(current_user)) -> list[dict[str, Any]]:
    """The caller's API tokens (an admin: everyone's), without their secrets."""
    return auth.token_rows(s, None if p.role == "admin" else p.user_id)


@router.delete("/tokens/{token_id}", dependencies=[Depends(csrf_protect)])
def delete_token(token_id: DbId, s: Session = Depends(get_db_session),
                 p: Principal = Depends(current_user)) -> dict[str, Any]:
    """Revoke a token: the caller's own (an admin: anyone's); 404 for others."""
    if not auth.revoke_token(s, token_id, None if p.role == "admin" else p.user_id):
        raise HTTPException(404, "no such token")
    audit(s, p.actor, "token.revoke", "token", token_id)
    return {"id": token_id, "state": "revoked"}


# -- studies ------------------------------------------------------------------------------------
@router.get("/studies", response_model=list[StudyOut])
def list_studies(state: str | None = None, limit: int = limit_query(100, 1000), offset: Offset = 0,
                 s: Session = Depends(get_db_session), p: Principal = Depends(current_user)) -> list[StudyOut]:
    q = select(Study).options(joinedload(Study.patient)).order_by(Study.id.desc()).limit(limit).offset(offset)
    if state:
        q = q.where(Study.state == state)
    studies = s.scalars(q).all()
    counts = _study_counts(s, [st.id for st in studies])
    return [_study_out(s, st, counts=counts.get(st.id, (0, 0))) for st in studies]


@router.get("/studies/{study_id}", response_model=StudyDetail)
def get_study(study_id: DbId, s: Session = Depends(get_db_session),
              p: Principal = Depends(current_user)) -> StudyDetail:
    st = _get_study(s, study_id)
    series = [SeriesOut(id=x.id, series_uid=x.series_uid, modality=x.modality, description=x.description,
                        series_number=x.series_number, classification=x.classification,
                        selected_as=x.selected_as, n_instances=x.n_instances) for x in st.series]
    all_trans = s.scalars(select(StudyTransition).where(StudyTransition.study_id == st.id)
                          .order_by(StudyTransition.id)).all()
    trans = [TransitionOut.model_validate(t, from_attributes=True) for t in all_trans if t.run_id is None]
    runs = [RunOut(id=r.id, workflow=r.workflow, workflow_version=r.workflow_version, state=r.state,
                   state_reason=r.state_reason, result_version=r.result_id, decision_id=r.decision_id,
                   series=dict(r.series or {}),
                   transitions=[TransitionOut.model_validate(t, from_attributes=True) for t in all_trans
                                if t.run_id == r.id])
            for r in s.scalars(select(WorkflowRun).where(WorkflowRun.study_id == st.id).order_by(WorkflowRun.id))]
    jobs = [JobOut.model_validate(j, from_attributes=True) for j in
            s.scalars(select(Job).where(Job.study_id == st.id).order_by(Job.id)).all()]
    results = [_result_out(s, r) for r in st.results]
    qa = []
    # a run awaiting its second reading hides the first decision from everyone but its author, so the
    # second radiologist forms an independent opinion first (EASE, PAPERS.md A4)
    blind = {(r.id, r.result_id) for r in st.runs if r.state == "second_reading"}
    for d, uname in s.execute(select(QADecision, User.username).outerjoin(User, User.id == QADecision.user_id)
                              .where(QADecision.study_id == st.id).order_by(QADecision.id)).all():
        if (d.run_id, d.result_id) in blind and uname != p.username:
            continue
        qa.append(QAOut(decision=d.decision, score=d.score, comment=d.comment, created_at=d.created_at,
                        username=uname, result_id=d.result_id, software_version=d.software_version,
                        candidates=d.candidates, missed_lesions=d.missed_lesions,
                        timepoints_accepted=d.timepoints_accepted, report_version=d.report_version, id=d.id,
                        run_id=d.run_id, values=d.form_values, amends_id=d.amends_id,
                        amendment_reason=d.amendment_reason))
    return _study_out(s, st, StudyDetail, series=series, transitions=trans, runs=runs, jobs=jobs, results=results,
                      qa=qa)


@router.post("/studies/{study_id}/review", dependencies=[Depends(csrf_protect)])
def review_study(study_id: DbId, body: DecisionIn, request: Request, s: Session = Depends(get_db_session),
                 p: Principal = Depends(require_decider)) -> dict[str, Any]:
    """Record a radiologist's QA decision on one result version (body and answer: docs/review.md).

    The same decision code as the review web app (:func:`neurorad.server.decisions.decide`):
    403 for other roles (:data:`neurorad.server.auth.DECIDING_ROLES`), 409 for a stale result
    version or a second decision without an amendment reason, 422 when the body does not fit the
    workflow's review form.
    """
    from neurorad.server import decisions

    st = _get_study(s, study_id)
    try:
        return decisions.decide(s, decisions.context_of(request.app.state), st, p.user_id, p.username, p.role, body)
    except decisions.DecisionForbidden as exc:
        raise HTTPException(403, str(exc)) from None
    except decisions.DecisionConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except decisions.DecisionInvalid as exc:
        raise HTTPException(422, str(exc)) from None


@router.post("/studies/{study_id}/retry", dependencies=[Depends(csrf_protect)])
def retry_study(study_id: DbId, body: ReasonIn | None = None, request: Request = None,
                s: Session = Depends(get_db_session),
                p: Principal = Depends(require_role("technologist", "radiologist"))) -> dict[str, Any]:
    """Run the study's workflow again (from failed or rejected), or re-run selection."""
    from neurorad.server.orchestration import retry

    st = _get_study(s, study_id)
    try:
        done = retry(s, request.app.state.settings, st, p.actor, (body.reason if body else None) or "retried")
    except TransitionError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"id": st.id, "state": st.state, "done": done}


@router.post("/studies/{study_id}/deliver", dependencies=[Depends(csrf_protect)])
def redeliver_study(study_id: DbId, request: Request, s: Session = Depends(get_db_session),
                    p: Principal = Depends(require_role("technologist", "radiologist"))) -> dict[str, Any]:
    """Queue delivery again (after a rejection was fixed); already delivered objects are skipped.

    Accepted results, and rejected ones whose review wrote a "not usable" report, are delivered.
    """
    from neurorad.server.orchestration import queue_delivery

    st = _get_study(s, study_id)
    runs = [r for r in st.runs if r.result_id is not None and r.state in (
        StudyState.REPORTED, StudyState.FAILED, StudyState.DELIVERED, StudyState.ACCEPTED, StudyState.REJECTED)]
    if not runs:
        raise HTTPException(409, f"study is {st.state}; only reviewed results with a report are delivered")
    jobs = []
    for run in runs:
        try:
            jobs.append(queue_delivery(s, request.app.state.settings, run, p.actor, force=True).id)
        except TransitionError as exc:
            if len(runs) == 1:
                raise HTTPException(409, str(exc)) from None
    if not jobs:
        raise HTTPException(409, "nothing to deliver")
    return {"id": st.id, "state": st.state, "job_id": jobs[0], "job_ids": jobs}


@router.post("/instances", dependencies=[Depends(csrf_protect)])
async def upload_instance(request: Request, p: Principal = Depends(require_role("technologist"))):
    """Import one DICOM file (body: ``application/dicom``), as if received by C-STORE.

    200 with the study id when stored; 422 with the reason when refused (also in /api/quarantine).
    """
    from starlette.concurrency import run_in_threadpool

    data = await request.body()
    if len(data) > 2 << 30:
        raise HTTPException(413, "instance too large")
    outcome = await run_in_threadpool(request.app.state.plane.ingest_bytes, data, f"upload:{p.username}")
    if not outcome.stored:
        raise HTTPException(422, {"category": outcome.category, "reason": outcome.reason})
    return {"study_id": outcome.study_id, "duplicate": outcome.duplicate}


# -- series, jobs, results, quarantine, audit ---------------------------------------------------
@router.get("/series/{series_id}", response_model=SeriesOut)
def get_series(series_id: DbId, s: Session = Depends(get_db_session), p: Principal = Depends(current_user)):
    x = s.get(Series, series_id)
    if x is None:
        raise HTTPException(404, "no such series")
    return SeriesOut(id=x.id, series_uid=x.series_uid, modality=x.modality, description=x.description,
                     series_number=x.series_number, classification=x.classification, selected_as=x.selected_as,
                     n_instances=x.n_instances)


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(state: str | None = None, limit: int = limit_query(100, 1000), s: Session = Depends(get_db_session),
              p: Principal = Depends(current_user)) -> list[JobOut]:
    q = select(Job).order_by(Job.id.desc()).limit(limit)
    if state:
        q = q.where(Job.state == state)
    return [JobOut.model_validate(j, from_attributes=True) for j in s.scalars(q).all()]


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: DbId, s: Session = Depends(get_db_session), p: Principal = Depends(current_user)) -> JobOut:
    j = s.get(Job, job_id)
    if j is None:
        raise HTTPException(404, "no such job")
    return JobOut.model_validate(j, from_attributes=True)


@router.post("/jobs/{job_id}/cancel", dependencies=[Depends(csrf_protect)])
def cancel_job(job_id: DbId, request: Request, s: Session = Depends(get_db_session),
               p: Principal = Depends(require_role("technologist", "radiologist"))) -> dict[str, Any]:
    j = s.get(Job, job_id)
    if j is None:
        raise HTTPException(404, "no such job")
    if j.state == "pending":
        j.state, j.cancel_requested = "cancelled", True
    elif j.state == "running":
        j.cancel_requested = True
    else:
        raise HTTPException(409, f"job is {j.state}")
    audit(s, p.actor, "job.cancel", "job", j.id)
    return {"id": j.id, "state": j.state, "cancel_requested": j.cancel_requested}


@router.get("/results/{result_id}", response_model=ResultOut)
def get_result(result_id: DbId, s: Session = Depends(get_db_session),
               p: Principal = Depends(current_user)) -> ResultOut:
    r = s.get(Result, result_id)
    if r is None:
        raise HTTPException(404, "no such result")
    return _result_out(s, r)


@router.get("/results/{result_id}/file")
def get_result_file(result_id: DbId, request: Request, s: Session = Depends(get_db_session),
                    p: Principal = Depends(current_user)) -> FileResponse:
    """The pseudonymised result object as stored (re-identification happens only on delivery)."""
    r = s.get(Result, result_id)
    if r is None:
        raise HTTPException(404, "no such result")
    path = request.app.state.storage.abspath(r.path)
    if not path.exists():
        raise HTTPException(410, "result file no longer stored")
    with request.app.state.db.session() as w:  # the GET's own session is a read-only snapshot
        audit(w, p.actor, "result.download", "result", r.id)
    import mimetypes

    media = "application/dicom" if r.sop_uid else (mimetypes.guess_type(path.name)[0] or "application/octet-stream")
    return FileResponse(path, media_type=media, filename=path.name)


@router.get("/quarantine")
def list_quarantine(limit: int = limit_query(100, 1000), s: Session = Depends(get_db_session),
                    p: Principal = Depends(current_user)) -> list[dict[str, Any]]:
    """Refused input with its reason (no bytes are kept: they may carry identifiers)."""
    rows = s.scalars(select(QuarantineItem).order_by(QuarantineItem.id.desc()).limit(limit)).all()
    return [{"id": q.id, "received_at": q.received_at, "source": q.source, "category": q.category,
             "reason": q.reason, "sha256": q.sha256, "size_bytes": q.size_bytes, "study_id": q.study_id}
            for q in rows]


@router.get("/audit")
def list_audit(limit: int = limit_query(200, 5000), action: str | None = None, s: Session = Depends(get_db_session),
               p: Principal = Depends(require_role("admin"))) -> list[dict[str, Any]]:
    q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        q = q.where(AuditEvent.action == action)
    return [{"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "object_type": e.object_type,
             "object_id": e.object_id, "details": e.details, "software_version": e.software_version}
            for e in s.scalars(q).all()]


__all__ = ["router", "transition"]
