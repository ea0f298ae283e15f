"""Routes of the review web app (pages + the few JSON endpoints the pages call).

Objects are addressed by internal integer ids only: no patient identifier appears in a URL,
a page title or a log line. Pages redirect to the sign-in form when there is no session; the
JSON/file endpoints answer 401. Only radiologists record decisions (admins manage users and
settings, technologists see status); every decision is a state-changing request protected by
the session's CSRF token.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neurorad.errors import InputError
from neurorad.server.auth import (
    Principal,
    csrf_protect,
    current_user,
    current_user_optional,
    get_db_session,
    require_decider,
    safe_redirect_target,
)
from neurorad.server.decisions import DECIDABLE_STATES, DecisionIn, can_decide
from neurorad.server.params import DbId
from neurorad.server.web import pagedata
from neurorad.server.web import review as rv
from neurorad.store.audit import audit
from neurorad.store.models import Patient, QADecision, Result, Study, StudyTransition, User, WorkflowRun, utcnow
from neurorad.workflows import registry

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
DIST_DIR = HERE.parent / "static" / "dist"
STATIC_URL = "/web/static"
templates = Jinja2Templates(directory=str(HERE / "templates"))

router = APIRouter(include_in_schema=False)

#: Study states shown on the worklist, by filter.
STATUS_FILTERS: dict[str, tuple[str, ...]] = {
    "awaiting": ("needs_review", "second_reading"),
    "decided": ("accepted", "rejected", "reported", "delivered"),
    "processing": ("received", "selected", "queued", "running"),
    "failed": ("failed", "no_workflow"),
    "baseline": ("no_workflow",),
    "all": (),
}
STATUS_LABELS = [("awaiting", "awaiting review"), ("decided", "decided"), ("processing", "processing"),
                 ("baseline", "baseline, waiting for follow-up"), ("failed", "failed"), ("all", "all")]
#: Roles allowed to see real patient identifiers (each view is audited).
IDENTIFIER_ROLES = ("radiologist", "admin")
REVIEWABLE_STATES = DECIDABLE_STATES
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.nii\.gz$")
_STATIC_NAME = re.compile(r"^(dist/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.(js|css|map|txt)$")


# -- helpers -----------------------------------------------------------------------------------
def _page(request: Request, name: str, principal: Principal | None, **ctx: Any) -> HTMLResponse:
    ctx.update(
        user=principal,
        csrf_token=principal.csrf_token if principal else None,
        base="",
        static_url=STATIC_URL,
        logout_url="/api/auth/logout",
    )
    resp = templates.TemplateResponse(request, name, ctx)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'"
    )
    return resp


def _to_login(request: Request) -> RedirectResponse:
    nxt = request.url.path if request.url.path.startswith("/") else "/worklist"
    return RedirectResponse(f"/login?next={nxt}", status_code=303)


def _storage_root(request: Request) -> Path:
    storage = getattr(request.app.state, "storage", None)
    if storage is not None:
        return Path(storage.root)
    return Path(request.app.state.settings.data_dir)


def _abspath(root: Path, rel: str) -> Path:
    p = (root / rel).resolve()
    if root.resolve() not in p.parents:
        raise HTTPException(500, "result path escapes the data dir")
    return p


def current_run(s: Session, study: Study, root: Path, run_id: int | None = None
                ) -> tuple[WorkflowRun | None, Path | None]:
    """The run shown on the study page and the folder of its current result: ``run_id`` when given,
    else the first run awaiting review, else the latest run with a result."""
    from neurorad.server.decisions import result_folder

    runs = s.scalars(select(WorkflowRun).where(WorkflowRun.study_id == study.id).order_by(WorkflowRun.id)).all()
    run = _shown_run(runs, run_id)
    if run is None or run.result_id is None:
        return run, None
    return run, result_folder(_RootStorage(root), run, s)


def _shown_run(runs: list[WorkflowRun], run_id: int | None = None) -> WorkflowRun | None:
    """:func:`current_run`'s choice among a study's runs (ordered by id)."""
    if run_id is not None:
        runs = [r for r in runs if r.id == run_id]
    with_result = [r for r in runs if r.result_id is not None]
    if not with_result:
        return runs[0] if runs else None
    return next((r for r in with_result if r.state in ("needs_review", "second_reading")), with_result[-1])


class _RootStorage:
    """What the decision helpers need of the storage: absolute paths under the data dir."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def abspath(self, rel: str) -> Path:
        return _abspath(self.root, rel)


@dataclass
class _RowFacts:
    """What the worklist shows of one study, loaded for all its rows at once (:func:`_worklist_facts`)."""

    run: WorkflowRun | None = None  # the run the study page shows (:func:`current_run`)
    folder: Path | None = None  # its current result folder
    run_decision: QADecision | None = None  # that run's latest decision
    reviewed: Path | None = None  # the result folder that decision left
    latest_decision: QADecision | None = None  # the study's latest decision (any run)
    waiting_at: datetime | None = None  # when it last entered needs_review
    instance_path: str | None = None  # its first stored instance (exam date)


def _worklist_facts(s: Session, studies: list[Study], root: Path) -> dict[int, _RowFacts]:
    """:class:`_RowFacts` of every study of a worklist in six queries, however many studies there are
    (one query per study and per fact made the page cost grow with the list: ~4 statements and
    1.3 ms per study, most of a 50-user load test's server time; bench/results/load_locust.md)."""
    from neurorad.server.decisions import result_folder, reviewed_folder

    facts = {st.id: _RowFacts() for st in studies}
    if not facts:
        return facts
    ids, storage = list(facts), _RootStorage(root)
    runs: dict[int, list[WorkflowRun]] = {}
    for r in s.scalars(select(WorkflowRun).where(WorkflowRun.study_id.in_(ids)).order_by(WorkflowRun.id)):
        runs.setdefault(r.study_id, []).append(r)
    for sid, f in facts.items():
        f.run = _shown_run(runs.get(sid, []))
    shown = [f.run for f in facts.values() if f.run is not None]
    anchors = {r.id: r for r in s.scalars(select(Result).where(
        Result.id.in_([r.result_id for r in shown if r.result_id is not None])))}
    decisions = s.scalars(select(QADecision).where(QADecision.study_id.in_(ids)).order_by(QADecision.id)).all()
    by_run = {d.run_id: d for d in decisions if d.run_id is not None}  # ascending ids: the latest wins
    review_rows: dict[int, list[Result]] = {}
    for row in s.scalars(select(Result).where(Result.qa_decision_id.in_([d.id for d in by_run.values()]),
                                              Result.kind == "review_json").order_by(Result.id)):
        review_rows.setdefault(row.qa_decision_id, []).append(row)
    waiting = dict(s.execute(select(StudyTransition.study_id, func.max(StudyTransition.at))
                             .where(StudyTransition.study_id.in_(ids), StudyTransition.to_state == "needs_review")
                             .group_by(StudyTransition.study_id)).all())
    paths = _first_instance_paths(s, ids)
    for d in decisions:
        facts[d.study_id].latest_decision = d
    for sid, f in facts.items():
        f.waiting_at, f.instance_path = waiting.get(sid), paths.get(sid)
        if f.run is None or f.run.result_id is None:
            continue
        f.folder = result_folder(storage, f.run, s, anchors.get(f.run.result_id))
        f.run_decision = by_run.get(f.run.id)
        if f.run_decision is not None:
            f.reviewed = reviewed_folder(storage, review_rows.get(f.run_decision.id, []))
    return facts


def _first_instance_paths(s: Session, study_ids: list[int]) -> dict[int, str]:
    """study id -> stored path of its first instance (lowest id) that has a file."""
    from neurorad.store.models import Instance, Series

    first = (select(Series.study_id.label("study_id"), func.min(Instance.id).label("instance_id"))
             .join(Instance, Instance.series_id == Series.id)
             .where(Series.study_id.in_(study_ids), Instance.path.is_not(None))
             .group_by(Series.study_id).subquery())
    return dict(s.execute(select(first.c.study_id, Instance.path).join(Instance, Instance.id == first.c.instance_id)
                          ).all())


@dataclass(frozen=True)
class _ResultSummary:
    alarms: int
    conclusion: str
    kinds: tuple[dict[str, Any], ...]


def _result_summary(folder: Path) -> _ResultSummary | None:
    """Alarm count, conclusion and findings per kind of a result folder's ``result.json`` (None when
    unreadable), as the worklist shows them. Read once per result file (:func:`pagedata.cached_per_file`:
    a result file is written once per version, and parsing every row's result on every view was most of
    the page's time with real results)."""
    return _result_summary_of(folder / "result.json")


@pagedata.cached_per_file(maxsize=4096)
def _result_summary_of(result_json: Path) -> _ResultSummary | None:
    wf, result = _load_result(result_json.parent)
    if result is None:
        return None
    return _ResultSummary(rv.count_alarms(result), wf.conclusion(result), tuple(
        pagedata.kind_counts(result.findings, wf.finding_kinds, wf.viewer.kind_colours)))


def _load_result(folder: Path):  # noqa: ANN202
    """(workflow, result) of a result folder, or (None, None) when unreadable."""
    try:
        result = rv.read_result(folder)
        return registry.load(result.workflow), result
    except (InputError, registry.WorkflowLoadError):
        return None, None


def _exam_date(request: Request, s: Session, study: Study, original: bool, prefer_original: bool = False
               ) -> str | None:
    """The study date of ``study`` (:func:`neurorad.server.web.pagedata.exam_date`); the vault's
    original only when ``original`` (roles allowed to see identifiers), first with
    ``prefer_original`` (the audited identifiers view)."""
    return _exam_date_at(request, study, _first_instance_paths(s, [study.id]).get(study.id), original,
                         prefer_original)


def _exam_date_at(request: Request, study: Study, instance_path: str | None, original: bool,
                  prefer_original: bool = False) -> str | None:
    """:func:`_exam_date` with the study's first stored instance already known (the worklist's rows)."""
    path = _abspath(_storage_root(request), instance_path) if instance_path is not None else None

    def vault_record() -> dict[str, Any] | None:
        if not original:
            return None
        try:
            plane = getattr(request.app.state, "plane", None)
            vault = plane.vault if plane is not None else request.app.state.vault
            return vault.study(study.study_uid)
        except Exception:  # noqa: BLE001 - no vault record: no original date
            return None

    return pagedata.exam_date(path, vault_record, prefer_original=prefer_original and original)


def _identifiers(request: Request, pseudo: str) -> str:
    """Real name and ID from the data plane's pseudonym vault (only called for permitted roles)."""
    plane = getattr(request.app.state, "plane", None)
    try:
        vault = plane.vault if plane is not None else request.app.state.vault
        orig = vault.reidentify_patient(pseudo)
    except Exception:  # noqa: BLE001 - unknown pseudonym: show nothing rather than fail the page
        return "(unknown)"
    name = str(orig.get("PatientName", "")).replace("^", " ").strip()
    pid = str(orig.get("PatientID", ""))
    return f"{name} ({pid})" if name else pid


# -- static files --------------------------------------------------------------------------------
@router.get(STATIC_URL + "/{name:path}")
def static_file(name: str) -> Response:
    """Page JS/CSS and the NiiVue bundle (built by ``make web``)."""
    if not _STATIC_NAME.match(name):
        raise HTTPException(404)
    path = DIST_DIR / name[len("dist/"):] if name.startswith("dist/") else STATIC_DIR / name
    if not path.is_file():
        if name.startswith("dist/"):
            raise HTTPException(404, "viewer bundle not built: run `make web` (npm ci && npm run build in web/)")
        raise HTTPException(404)
    media = "text/javascript" if name.endswith(".js") else "text/css" if name.endswith(".css") else "text/plain"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=300"})


# -- pages ---------------------------------------------------------------------------------------
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/worklist", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str = "/worklist",
               p: Principal | None = Depends(current_user_optional)) -> Response:
    # Only same-site paths as the target: no open redirect.
    target = safe_redirect_target(next)
    if p is not None:
        return RedirectResponse(target, status_code=303)
    return _page(request, "login.html", None, login_url="/api/auth/login", next_url=target)


@router.get("/worklist")
def worklist_page(
    request: Request,
    workflow: str = "",
    status: str = "awaiting",
    alarms: bool = False,
    identifiers: bool = False,
    p: Principal | None = Depends(current_user_optional),
    s: Session = Depends(get_db_session),
) -> Response:
    if p is None:
        return _to_login(request)
    root = _storage_root(request)
    states = STATUS_FILTERS.get(status, STATUS_FILTERS["awaiting"])
    q = select(Study, Patient).join(Patient, Patient.id == Study.patient_id)
    if states:
        q = q.where(Study.state.in_(states))
    if workflow:
        q = q.where(Study.id.in_(select(WorkflowRun.study_id).where(WorkflowRun.workflow == workflow)))
    show_ids = identifiers and p.role in IDENTIFIER_ROLES
    now = utcnow()
    rows = []
    found = s.execute(q.limit(500)).all()
    facts = _worklist_facts(s, [study for study, _ in found], root)
    for study, patient in found:
        f = facts[study.id]
        n_alarms = 0
        state_key, state_text = pagedata.worklist_state(study.state, study.state_reason)
        finding = state_text
        kinds: list[dict[str, Any]] = []
        if f.folder is not None:
            auto = _result_summary(f.folder)
            # after a decision the list shows what the reader left (the reviewed result), not the
            # automatic one; a result judged not usable shows no numbers
            if auto is not None and f.run_decision is not None and f.run_decision.decision != "ACCEPTABLE":
                n_alarms = auto.alarms
                finding = "result not usable (reviewed)"
            elif auto is not None and f.reviewed is not None:
                n_alarms = auto.alarms
                reviewed = _result_summary(f.reviewed)
                if reviewed is None:
                    finding = "reviewed result unreadable"
                else:
                    finding, kinds = reviewed.conclusion, list(reviewed.kinds)
            elif auto is None:
                finding = "result unreadable"
            else:
                n_alarms, finding, kinds = auto.alarms, auto.conclusion, list(auto.kinds)
        if (status == "baseline") != (state_key == pagedata.BASELINE_STATE) and status in ("baseline", "failed"):
            continue
        if alarms and not n_alarms:
            continue
        since = f.waiting_at or study.updated_at or study.received_at
        dec = f.latest_decision
        rows.append({
            "study_id": study.id,
            "patient_label": _identifiers(request, patient.pseudo_id) if show_ids else patient.pseudo_id,
            "study_label": "",
            "workflow": study.workflow,
            "waiting": rv.humanize_wait(since, now),
            "waiting_since": since.isoformat(timespec="minutes"),
            "finding": finding,
            "alarms": n_alarms,
            "decision": dec.decision if dec else None,
            "state_key": state_key,
            "kinds": kinds,
            "exam_date": _exam_date_at(request, study, f.instance_path, p.role in IDENTIFIER_ROLES,
                                       prefer_original=show_ids),
            "_since": since,
        })
    rows.sort(key=lambda r: rv.worklist_order_key(r["alarms"], r["_since"]))
    if show_ids:
        # Who saw real identifiers of which studies (ids only; the identifiers never enter the log).
        # (a write of its own: a page's session is a read-only snapshot)
        with request.app.state.db.session() as w:
            audit(w, p.actor, "web.view_identifiers", "worklist", None, study_ids=[r["study_id"] for r in rows])
    workflows = sorted({w for (w,) in s.execute(select(WorkflowRun.workflow).distinct()) if w})
    return _page(request, "worklist.html", p, rows=rows, workflows=workflows, statuses=STATUS_LABELS,
                 filters={"workflow": workflow, "status": status, "alarms": alarms, "identifiers": show_ids},
                 can_see_identifiers=p.role in IDENTIFIER_ROLES)


@router.get("/admin")
def admin_page(request: Request, p: Principal | None = Depends(current_user_optional),
               s: Session = Depends(get_db_session)) -> Response:
    """Users and (read-only) settings; admins only."""
    if p is None:
        return _to_login(request)
    if p.role != "admin":
        raise HTTPException(403, "admins only")
    st = request.app.state.settings
    shown = [
        ("review required", st.review_required),
        ("session hours", st.session_hours),
        ("secure cookies", st.secure_cookies),
        ("enabled workflows", ", ".join(st.workflows) or "none"),
        ("retention days", st.retention_days),
        # destinations without credentials
        ("destinations", ", ".join(f"{d.name} ({d.kind})" for d in st.destinations) or "none"),
    ]
    users = s.scalars(select(User).order_by(User.username)).all()
    return _page(request, "admin.html", p, users=users, settings=shown)


def _file_url(study_id: int, run_id: int):
    return lambda name: f"/web/api/studies/{study_id}/files/{name}?run={run_id}"


def _review_for(request: Request, s: Session, study: Study, p: Principal, run_id: int | None = None) -> dict[str, Any]:
    root = _storage_root(request)
    run, folder = current_run(s, study, root, run_id)
    if run is None or folder is None:
        raise HTTPException(404, "this study has no reviewable result yet")
    try:
        wf = registry.load(run.workflow)
        data = rv.build_review(folder, run.result_id, _file_url(study.id, run.id), wf)
    except registry.WorkflowLoadError as err:
        raise HTTPException(422, str(err)) from None
    except InputError as err:
        raise HTTPException(422, str(err)) from None
    out = data
    decisions = s.execute(select(QADecision, User).join(User, User.id == QADecision.user_id, isouter=True)
                          .where(QADecision.run_id == run.id).order_by(QADecision.id)).all()
    out["decisions"] = [{"id": d.id, "decision": d.decision, "score": d.score, "values": d.form_values or {},
                         "verdicts": d.candidates or [], "missed": d.missed_lesions or [], "comment": d.comment or "",
                         "user": u.username if u else "?", "at": d.created_at.isoformat(timespec="minutes"),
                         "result_version": d.result_id, "report_version": d.report_version,
                         "amends": d.amends_id, "amendment_reason": d.amendment_reason,
                         "report_url": f"/web/api/studies/{study.id}/reports/{d.report_version}?fmt=html&run={run.id}"}
                        for d, u in decisions]
    current = [d for d in out["decisions"] if d["result_version"] == run.result_id]
    out["decided"] = current[-1] if current else None
    if run.state == "second_reading":
        # the second radiologist forms an independent opinion before seeing the first (EASE, PAPERS.md A4)
        first = current[-1] if current else None
        blind = first is not None and first["user"] != p.username
        out["second_reading"] = {"reason": run.state_reason or "", "blind": blind}
        if blind:
            out["decisions"] = [d for d in out["decisions"] if d["result_version"] != run.result_id]
            out["decided"] = None
    out["draft_report_url"] = f"/web/api/studies/{study.id}/reports/1?fmt=html&run={run.id}"
    priors = s.execute(select(Study).where(Study.patient_id == study.patient_id, Study.id != study.id)
                       .order_by(Study.received_at.desc())).scalars().all()
    original = p.role in IDENTIFIER_ROLES
    out["priors"] = [{"study_id": o.id, "date": _exam_date(request, s, o, original) or "date not kept",
                      "state": o.state} for o in priors]
    out["exam_dates"] = [{"label": "this exam", "date": _exam_date(request, s, study, original)}] + [
        {"label": f"exam #{o['study_id']}", "date": o["date"]} for o in out["priors"]]
    out["state"] = run.state
    out["study_state"] = study.state
    out["run_id"] = run.id
    out["runs"] = [{"id": r.id, "workflow": r.workflow, "state": r.state, "result_version": r.result_id,
                    "url": f"/studies/{study.id}?run={r.id}"} for r in study.runs]
    out["can_decide"] = can_decide(p.role) and run.state in REVIEWABLE_STATES
    out["decision_url"] = f"/web/api/studies/{study.id}/decision"
    out["preview_level"] = rv.preview_level(folder)
    return out


@router.get("/studies/{study_id}")
def study_page(request: Request, study_id: DbId, run: int | None = None,
               p: Principal | None = Depends(current_user_optional),
               s: Session = Depends(get_db_session)) -> Response:
    if p is None:
        return _to_login(request)
    study = s.get(Study, study_id)
    if study is None:
        raise HTTPException(404, "no such study")
    try:
        review = _review_for(request, s, study, p, run)
    except HTTPException as err:
        # No viewable result (still processing, failed, or an older study): show its status.
        transitions = s.scalars(select(StudyTransition).where(StudyTransition.study_id == study.id)
                                .order_by(StudyTransition.id)).all()
        return _page(request, "status.html", p, study=study, problem=err.detail, transitions=transitions)
    return _page(request, "study.html", p, study_id=study.id, review=review,
                 review_json=rv.json_for_script(review))


# -- JSON / files used by the study page ---------------------------------------------------------------
@router.get("/web/api/studies/{study_id}/review")
def review_json(request: Request, study_id: DbId, run: int | None = None, p: Principal = Depends(current_user),
                s: Session = Depends(get_db_session)) -> dict[str, Any]:
    study = s.get(Study, study_id)
    if study is None:
        raise HTTPException(404, "no such study")
    return _review_for(request, s, study, p, run)


@router.get("/web/api/studies/{study_id}/files/{name}")
def study_file(request: Request, study_id: DbId, name: str, run: int | None = None,
               level: Literal["", "preview"] = "", p: Principal = Depends(current_user),
               s: Session = Depends(get_db_session)) -> Response:
    """A NIfTI image of the run's result folder (names only, never a path from the URL); ``level=preview``:
    the downsampled display copy the viewer shows first (:func:`neurorad.server.web.display.display_copy`)."""
    if not _FILE_NAME.match(name):
        raise HTTPException(404)
    study = s.get(Study, study_id)
    if study is None:
        raise HTTPException(404)
    root = _storage_root(request)
    run_row, folder = current_run(s, study, root, run)
    if folder is None or not (folder / name).is_file():
        raise HTTPException(404)
    wf, result = _load_result(folder)
    is_label = result is not None and name == (rv.overlay_file(wf, result) or result.mask)
    # a compact display copy (int16 scaled images, uint8 labels; see neurorad.server.web.display)
    from neurorad.server.web.display import display_copy

    path = folder / name
    try:
        if getattr(request.app.state.settings, "viewer_display_copies", True):
            path = display_copy(folder / name, root / "cache" / "viewer", is_label=is_label,
                                preview=level == "preview")
    except Exception:  # noqa: BLE001 - an unreadable image is sent as stored; the viewer reports it
        log.warning("study %s: no display copy of %s", study.id, name, exc_info=True)
        path = folder / name
    return FileResponse(path, media_type="application/octet-stream",
                        headers={"Cache-Control": "private, no-store"})


@router.get("/web/api/studies/{study_id}/reports/{version}")
def report_file(request: Request, study_id: DbId, version: DbId, fmt: Literal["html", "pdf"] = "html",
                run: int | None = None, p: Principal = Depends(current_user),
                s: Session = Depends(get_db_session)) -> Response:
    """Report version ``version`` of a run (1: the workflow's own draft; 2...: one per decision)."""
    study = s.get(Study, study_id)
    if study is None:
        raise HTTPException(404)
    root = _storage_root(request)
    run_row, folder = current_run(s, study, root, run)
    if run_row is None:
        raise HTTPException(404)
    media = "text/html" if fmt == "html" else "application/pdf"
    if version == 1:
        path = folder / f"report.{fmt}" if folder is not None else None
    else:
        row = s.scalar(select(Result).where(Result.run_id == run_row.id, Result.kind == f"review_{fmt}",
                                            Result.path.like(f"%/run{run_row.id}/v{int(version)}/report.{fmt}")))
        path = _abspath(root, row.path) if row is not None else None
    if path is None or not path.is_file():
        raise HTTPException(404, f"no report version {version} ({fmt})")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, no-store"})


@router.post("/web/api/studies/{study_id}/decision", dependencies=[Depends(csrf_protect)])
def record_decision(request: Request, study_id: DbId, body: DecisionIn, p: Principal = Depends(require_decider),
                    s: Session = Depends(get_db_session)) -> dict[str, Any]:
    """The review page's decision: the one decision path (:func:`neurorad.server.decisions.decide`)."""
    from neurorad.server import decisions

    study = s.get(Study, study_id)
    if study is None:
        raise HTTPException(404, "no such study")
    try:
        out = decisions.decide(s, decisions.context_of(request.app.state), study, p.user_id, p.username, p.role, body)
    except decisions.DecisionForbidden as err:
        raise HTTPException(403, str(err)) from None
    except decisions.DecisionConflict as err:
        raise HTTPException(409, str(err)) from None
    except decisions.DecisionInvalid as err:
        raise HTTPException(422, str(err)) from None
    log.info("QA decision on study %s by %s: %s", study.id, p.actor, body.decision)
    return out
