"""The review loop through the real server and a real browser (Chromium, software WebGL): decide,
reopen and find everything as decided with links to every report version, amend with a reason.

Decision rules are the server's (neurorad.server.decisions: stale version 409, amendment without a
reason 409); the reports are the generic renderer's, read back with poppler's pdftotext.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from sqlalchemy import select

from tests.web.conftest import PASSWORD, LiveServer, WebEnv

pytestmark = [pytest.mark.slow]
TIMEOUT_MS = 120_000


def _pdftext(data: bytes, tmp_path) -> str:
    p = tmp_path / "r.pdf"
    p.write_bytes(data)
    return " ".join(subprocess.run(["pdftotext", str(p), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())


def _checked(page, ids) -> dict[int, str]:
    return {i: page.locator(f'input[name="cand-{i}"]:checked').get_attribute("value") for i in ids}


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_decide_reopen_amend(web_env: WebEnv, browser_context, tmp_path) -> None:
    from neurorad.store.models import AuditEvent, QADecision

    ids = [le.label for le in web_env.truth["lesions"]]
    with LiveServer(web_env.app) as srv:
        page = browser_context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(srv.url + "/login")
        page.fill("#username", "rad")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#worklist")

        # decide: discard 2 at once (before the images are shown), accept, score 4, comment
        page.goto(f"{srv.url}/studies/{web_env.study_id}", wait_until="commit")
        page.locator('input[name="cand-2"][value="discard"]').click(timeout=TIMEOUT_MS)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=TIMEOUT_MS)
        page.keyboard.press("a")
        page.keyboard.press("4")
        page.fill("#comment", "2 is a flow artefact")
        page.click("#submit")
        page.wait_for_selector("body[data-decision-saved='1']", state="attached", timeout=TIMEOUT_MS)
        assert "ACCEPTABLE" in page.locator("#status").inner_text(), page.locator("#status").inner_text()
        with web_env.app.state.db.session() as s:
            dec = s.scalars(select(QADecision)).one()
            verdicts = {int(v.get("finding_id", v.get("lesion_id"))): v["verdict"] for v in dec.candidates}
        assert verdicts[2] == "discard" and all(verdicts[i] == "keep" for i in ids if i != 2)

        # reopen: as decided, read-only, links to v1 (draft) and v2
        page.goto(f"{srv.url}/studies/{web_env.study_id}")
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=TIMEOUT_MS)
        assert _checked(page, ids) == {i: ("discard" if i == 2 else "keep") for i in ids}
        assert page.locator('input[name="decision"]:checked').get_attribute("value") == "ACCEPTABLE"
        assert page.locator('input[name="field-score"]:checked').get_attribute("value") == "4"
        assert page.locator("#comment").input_value() == "2 is a flow artefact"
        assert page.locator("#submit").is_disabled()
        assert f"{len(ids) - 1} of {len(ids)} findings kept" in page.locator("#summary").inner_text()
        links = page.locator("#reports a[data-version]").evaluate_all(
            "as => as.map(a => [a.dataset.version, a.getAttribute('href')])")
        assert [v for v, _ in links] == ["1", "2"], links
        for v, href in links:
            # the fixture's draft (v1) is the hand-made report.pdf only (a workflow run writes both)
            url = href.replace("fmt=html", "fmt=pdf") if v == "1" else href
            assert page.request.get(srv.url + url).status == 200, url
        pdf = page.request.get(srv.url + links[1][1].replace("fmt=html", "fmt=pdf"))
        text = _pdftext(pdf.body(), tmp_path)
        assert "Reviewed by rad" in text and "Quality score: 4" in text and "2 is a flow artefact" in text
        assert "DRAFT" not in text

        # the server refuses a changed decision without a reason (one decision path) ...
        csrf = page.evaluate("document.querySelector('meta[name=csrf-token]').content")
        body = {"result_version": int(page.evaluate("JSON.parse(document.getElementById('review-data')"
                                                    ".textContent).result_version")),
                "decision": "ACCEPTABLE", "values": {"score": "4"}, "comment": "",
                "verdicts": [{"finding_id": i, "verdict": "keep"} for i in ids]}
        r = page.request.post(f"{srv.url}/web/api/studies/{web_env.study_id}/decision", data=body,
                              headers={"X-CSRF-Token": csrf, "Origin": srv.url})
        assert r.status == 409, r.text()
        # ... the page asks for one, and an amendment with a reason writes a superseding version
        page.click("#amend")
        page.locator('input[name="cand-2"][value="keep"]').check()
        page.click("#submit")
        assert "needs a reason" in page.locator("#status").inner_text()
        page.fill("#amendment-reason", "2 is a small lesion after all")
        page.click("#submit")
        page.wait_for_selector("body[data-decision-saved='1']", state="attached", timeout=TIMEOUT_MS)
        assert page.locator('#reports a[data-version="3"]').count() == 1
        with web_env.app.state.db.session() as s:
            decs = s.scalars(select(QADecision).order_by(QADecision.id)).all()
            assert len(decs) == 2 and decs[1].amendment_reason == "2 is a small lesion after all"
            assert s.scalars(select(AuditEvent).where(AuditEvent.action == "qa.amendment")).one()
        v3 = page.request.get(f"{srv.url}/web/api/studies/{web_env.study_id}/reports/3?fmt=pdf")
        text = _pdftext(v3.body(), tmp_path)
        assert "2 is a small lesion after all" in text and "supersedes version 2" in text
        assert not errors, errors
