"""Worklist: order (alarms, then waiting time), filters, pseudonyms, audited identifier view."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.web.conftest import IDENTITY, PASSWORD, WebEnv


def _login(env: WebEnv, user: str) -> TestClient:
    c = TestClient(env.app, base_url="http://127.0.0.1")
    assert c.post("/api/auth/login", json={"username": user, "password": PASSWORD}).status_code == 200
    return c


def _add_studies(env: WebEnv, specs: list[tuple[str, int, int, str]], first: int = 0) -> dict[str, int]:
    """specs: (name, alarms, hours waiting, workflow) -> study ids; each with a run and a result.json
    (``first``: number of the first, so that a test can add studies twice)."""
    from neurorad.provenance import sha256_file
    from neurorad.store.models import Patient, Result, Study, StudyTransition, WorkflowRun, utcnow
    from neurorad.workflows import registry
    from neurorad.workflows.contract import Alarm, WorkflowResult

    ids = {}
    with env.app.state.db.session() as s:
        for i, (name, alarms, hours, workflow) in enumerate(specs, start=first):
            pat = Patient(pseudo_id=f"NR-TESTX{i:04d}")
            s.add(pat)
            s.flush()
            st = Study(patient_id=pat.id, study_uid=f"2.25.9{i:04d}", state="needs_review", workflow=workflow)
            s.add(st)
            s.flush()
            s.add(StudyTransition(study_id=st.id, from_state="running", to_state="needs_review",
                                  at=utcnow() - timedelta(hours=hours), actor="test", software_version="test"))
            folder = env.data_dir / "results" / str(st.id) / "1"
            folder.mkdir(parents=True)
            wf = registry.load(workflow)
            WorkflowResult(wf.name, wf.version, alarms=[Alarm("q", f"alarm {k}") for k in range(alarms)],
                           summary="stable").write_json(folder)
            run = WorkflowRun(study_id=st.id, workflow=workflow, state="needs_review", series={}, version=1)
            s.add(run)
            s.flush()
            row = Result(study_id=st.id, run_id=run.id, kind="json",
                         path=str((folder / "result.json").relative_to(env.data_dir)),
                         sha256=sha256_file(folder / "result.json"), workflow=workflow, software_version="t")
            s.add(row)
            s.flush()
            run.result_id = row.id
            ids[name] = st.id
    return ids


def _order(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<tr data-study="(\d+)"', html)]


def test_order_alarms_then_age_and_filters(web_env: WebEnv) -> None:
    ids = _add_studies(web_env, [("calm-old", 0, 30, "ms-lesions"), ("calm-new", 0, 1, "ms-lesions"),
                                 ("alarm2", 2, 2, "summary"), ("alarm5", 5, 1, "ms-lesions"),
                                 ("alarm2-older", 2, 10, "ms-lesions")])
    c = _login(web_env, "rad")
    order = _order(c.get("/worklist").text)
    # the fixture's MS study has 1 alarm (one workflow warning) and waits ~0 h
    expected = [ids["alarm5"], ids["alarm2-older"], ids["alarm2"], web_env.study_id, ids["calm-old"],
                ids["calm-new"]]
    assert order == expected
    assert _order(c.get("/worklist?workflow=summary").text) == [ids["alarm2"]]
    assert _order(c.get("/worklist?alarms=1").text) == expected[:4]
    assert _order(c.get("/worklist?status=decided").text) == []
    assert web_env.prior_study_id in _order(c.get("/worklist?status=all").text)
    html = c.get("/worklist").text
    assert "30 h 0 min" in html or "29 h 59 min" in html


def test_identifiers_only_for_permitted_roles_and_audited(web_env: WebEnv) -> None:
    from neurorad.store.models import AuditEvent

    tech = _login(web_env, "tech")
    html = tech.get("/worklist?identifiers=1").text
    assert IDENTITY["PatientID"] not in html and "Webtest" not in html
    rad = _login(web_env, "rad")
    assert IDENTITY["PatientID"] not in rad.get("/worklist").text
    plain = rad.get("/worklist").text
    html = rad.get("/worklist?identifiers=1").text
    assert IDENTITY["PatientID"] in html and "Webtest Agatha" in html
    # exam dates: the original study date only in the audited identifiers view, else the stored
    # (shifted) one, marked as such
    assert "2026-01-20" in html and "2026-01-20" not in plain and "(shifted)" in plain
    # never in the title or the URL, and the view is in the audit log (without the identifiers)
    assert IDENTITY["PatientID"] not in html.split("</title>")[0]
    with web_env.app.state.db.session() as s:
        (ev,) = s.scalars(select(AuditEvent).where(AuditEvent.action == "web.view_identifiers")).all()
        assert ev.actor == "user:rad" and web_env.study_id in ev.details["study_ids"]
        assert IDENTITY["PatientID"] not in json.dumps(ev.details)


def test_admin_page(web_env: WebEnv) -> None:
    assert _login(web_env, "rad").get("/admin").status_code == 403
    html = _login(web_env, "admin").get("/admin").text
    assert "<td>rad</td>" in html and "<td>tech</td>" in html and PASSWORD not in html


def test_worklist_queries_do_not_grow_with_its_studies(web_env: WebEnv) -> None:
    """The worklist loads what it shows of all its rows at once: the number of SQL statements per
    page view is the same for 2 and 8 studies (one query per row and fact made the page's cost grow
    with the list and gave the 50-user load test a 1 s p95; bench/results/load_locust.md). A result
    rewritten in place is shown anew (the per-file summary cache is keyed on the file's mtime/size)."""
    from sqlalchemy import event

    from neurorad.workflows.contract import Alarm, WorkflowResult

    c = _login(web_env, "rad")
    statements: list[str] = []
    engine = web_env.app.state.db.engine
    listener = lambda _c, _cur, sql, *_a: statements.append(sql)  # noqa: E731

    def count(url: str) -> tuple[int, str]:
        statements.clear()
        event.listen(engine, "before_cursor_execute", listener)
        try:
            html = c.get(url).text
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(statements), html

    ids = _add_studies(web_env, [("a", 1, 3, "summary")])
    n_few, html = count("/worklist?status=all")
    assert len(_order(html)) == 3
    more = _add_studies(web_env, [(f"m{k}", k % 3, k, "summary") for k in range(6)], first=1)
    n_many, html = count("/worklist?status=all")
    assert len(_order(html)) == 9 and set(more.values()) <= set(_order(html))
    assert n_many == n_few, f"{n_few} statements for 3 studies, {n_many} for 9"
    assert n_few <= 15
    # the study with 1 alarm now has 4: the list shows the rewritten result, not a cached one
    folder = web_env.data_dir / "results" / str(ids["a"]) / "1"
    WorkflowResult("summary", "1", alarms=[Alarm("q", f"alarm {k}") for k in range(4)],
                   summary="rewritten").write_json(folder)
    html = c.get("/worklist?workflow=summary").text
    assert "rewritten" in html and _order(html)[0] == ids["a"]
