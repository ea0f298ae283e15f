"""The second-reader protocol through the server (EASE, PAPERS.md A4), generic: a test-module workflow
says a decision needs a second radiologist (``Workflow.second_reader_reason``); the run waits in
``second_reading`` with nothing delivered, the first decision is hidden from the second reader, the
first reader cannot be the second, and the second, different radiologist's decision is the one
reported (with the first reading passed to the workflow) and delivered."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from neurorad.server.auth import create_api_token, create_user
from neurorad.store.models import AuditEvent
from neurorad.workflows import registry
from neurorad.workflows.contract import Choice, FormField, ReviewForm
from tests.server.test_flow import Sink, _app, _run_jobs
from tests.server.test_workflow_plugins import BrightBlobs, _ingest


class SecondRead(BrightBlobs):
    name = "toy-second-read"
    version = "0.1.0"
    review_form = ReviewForm(fields=(FormField("opinion", "Opinion", "choice", (Choice("same", "same"),
                                                                                Choice("differs", "differs"))),),
                             allow_missed=False)

    def second_reader_reason(self, result, review):
        return "opinion differs from the software" if review.values.get("opinion") == "differs" else ""

    def conclusion(self, result, review=None):
        text = f"TOYWORDS: {len(result.findings)} blob(s)."
        if review is not None and review.prior_readings:
            first = review.prior_readings[0]
            agree = first.values.get("opinion") == review.values.get("opinion")
            text += (f" First reader {first.reviewer}: {first.values.get('opinion')}; second reader "
                     f"{review.reviewer}: {review.values.get('opinion')}; " + ("consensus." if agree else "uncertain."))
        return text


@pytest.mark.slow
def test_second_reader_holds_delivery_until_a_different_radiologist_decides(settings, tmp_path):
    registry.register(SecondRead)
    sink = Sink()
    try:
        settings.workflows = [SecondRead.name]
        app = _app(settings, sink)
        with app.state.db.session() as s:
            u = create_user(s, "radiologist2", "radiologist2-password", "radiologist")
            app.state.tok["radiologist2"] = {"Authorization": f"Bearer {create_api_token(s, u, 't')}"}
        _ingest(app, tmp_path / "t1", "T1")
        app.state.plane.complete_quiet_studies()
        _run_jobs(app)
        tok = app.state.tok
        with TestClient(app) as client:
            sid = client.get("/api/studies", headers=tok["technologist"]).json()[0]["id"]
            rv = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()["runs"][0]["result_version"]
            body = {"result_version": rv, "decision": "ACCEPTABLE", "values": {"opinion": "differs"}}
            r = client.post(f"/api/studies/{sid}/review", json=body, headers=tok["radiologist"])
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "second_reading" and r.json()["delivery"].startswith("held")
            _run_jobs(app)
            assert sink.received == []  # nothing leaves before the second reading
            d = client.get(f"/api/studies/{sid}", headers=tok["radiologist2"]).json()
            assert d["state"] == "second_reading" and d["runs"][0]["state"] == "second_reading"
            assert d["qa"] == []  # blind: the second reader does not see the first decision
            assert len(client.get(f"/api/studies/{sid}", headers=tok["radiologist"]).json()["qa"]) == 1
            # the first reader cannot be the second
            again = client.post(f"/api/studies/{sid}/review", json=dict(body, values={"opinion": "same"}),
                                headers=tok["radiologist"])
            assert again.status_code == 409 and "second, different radiologist" in again.text
            r2 = client.post(f"/api/studies/{sid}/review", json=dict(body, values={"opinion": "same"}),
                             headers=tok["radiologist2"])
            assert r2.status_code == 200, r2.text
            assert r2.json()["state"] in ("accepted", "reported") and r2.json()["delivery"].startswith("queued")
            html = client.get(r2.json()["report_url"], headers=tok["radiologist"]).text
            assert ("First reader radiologist: differs; second reader radiologist2: same; uncertain." in html), html
            _run_jobs(app)
            assert client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()["state"] == "delivered"
        assert sorted(str(ds.Modality) for ds in sink.received) == ["DOC", "SEG", "SR"]
        with app.state.db.session() as s:
            ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "qa.second_reading")).one()
            assert ev.details["agree"] is False
            assert s.scalars(select(AuditEvent).where(AuditEvent.action == "qa.second_reader_required")).one()
    finally:
        sink.stop()
        registry.unregister(SecondRead.name)
