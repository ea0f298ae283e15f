"""Review web app over HTTP (no browser): access control, CSRF, decisions gate reports."""

from __future__ import annotations

import json
import re

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.web.conftest import PASSWORD, WebEnv


def _client(env: WebEnv, user: str | None = None) -> tuple[TestClient, str | None]:
    c = TestClient(env.app, base_url="http://127.0.0.1")
    csrf = None
    if user:
        r = c.post("/api/auth/login", json={"username": user, "password": PASSWORD})
        assert r.status_code == 200, r.text
        csrf = r.json()["csrf_token"]
    return c, csrf


def _body(env: WebEnv, **kw) -> dict:
    b = {"result_version": env.result_id, "decision": "ACCEPTABLE", "score": 4, "comment": "ok",
         "candidates": [{"lesion_id": 2, "verdict": "discard"}]}
    b.update(kw)
    return b


def test_unauthenticated_is_refused(web_env: WebEnv) -> None:
    c, _ = _client(web_env)
    sid = web_env.study_id
    assert c.get(f"/web/api/studies/{sid}/review").status_code == 401
    assert c.get(f"/web/api/studies/{sid}/files/followup.nii.gz").status_code == 401
    assert c.post(f"/web/api/studies/{sid}/decision", json=_body(web_env)).status_code == 401
    # pages send the browser to the sign-in form instead
    r = c.get("/worklist", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    r = c.get(f"/studies/{sid}", follow_redirects=False)
    assert r.status_code == 303


def test_technologist_and_admin_cannot_decide(web_env: WebEnv) -> None:
    for user in ("tech", "admin"):
        c, csrf = _client(web_env, user)
        r = c.post(f"/web/api/studies/{web_env.study_id}/decision", json=_body(web_env),
                   headers={"X-CSRF-Token": csrf})
        assert r.status_code == 403, (user, r.text)
        # ... but they see the study's status
        page = c.get(f"/studies/{web_env.study_id}")
        assert page.status_code == 200 and 'id="qa-readonly"' in page.text


def test_csrf_is_required(web_env: WebEnv) -> None:
    c, csrf = _client(web_env, "rad")
    url = f"/web/api/studies/{web_env.study_id}/decision"
    assert c.post(url, json=_body(web_env)).status_code == 403
    assert c.post(url, json=_body(web_env), headers={"X-CSRF-Token": "wrong"}).status_code == 403
    r = c.post(url, json=_body(web_env), headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert r.status_code == 403


def test_no_path_from_url(web_env: WebEnv) -> None:
    c, _ = _client(web_env, "rad")
    sid = web_env.study_id
    for name in ("..%2Fresult.json", "result.json", "..%2F..%2Fneurorad.db", ".hidden.nii.gz"):
        assert c.get(f"/web/api/studies/{sid}/files/{name}").status_code == 404, name
    r = c.get(f"/web/api/studies/{sid}/files/followup.nii.gz")
    assert r.status_code == 200 and r.content[:2] == b"\x1f\x8b"
    assert "no-store" in r.headers["cache-control"]


def test_worklist_is_pseudonymised_and_ordered(web_env: WebEnv) -> None:
    c, _ = _client(web_env, "tech")
    r = c.get("/worklist")
    assert r.status_code == 200
    assert web_env.pseudo_id in r.text
    assert f'data-study="{web_env.study_id}"' in r.text
    assert "<title>Worklist · neurorad</title>" in r.text
    # technologists are not offered real identifiers, even when asking
    assert "show real identifiers" not in r.text
    r = c.get(f"/studies/{web_env.study_id}")
    assert "<title>Study #" in r.text and web_env.pseudo_id not in r.text.split("</title>")[0]


def test_review_data_matches_result(web_env: WebEnv) -> None:
    """The page data comes from the workflow contract: panels and their titles, overlay, finding
    kinds and their labels, the review form."""
    c, _ = _client(web_env, "rad")
    d = c.get(f"/web/api/studies/{web_env.study_id}/review").json()
    assert d["result_version"] == web_env.result_id and d["workflow"] == "ms-lesions"
    assert [p["title"] for p in d["panels"]] == ["Baseline FLAIR (skull-stripped, registered)",
                                                 "Follow-up FLAIR (skull-stripped, registered)",
                                                 "Follow-up FLAIR + new (red) and enlarging (yellow) lesions"]
    assert [p["overlay"] for p in d["panels"]] == [False, False, True]
    assert d["overlay"]["url"].startswith(f"/web/api/studies/{web_env.study_id}/files/new_lesions.nii.gz")
    assert d["overlay"]["kind_colours"] == {"new": "#ff2020", "enlarging": "#ffd000"}
    truth = web_env.truth["expected_ml"]  # voxel counts of the painted balls x voxel volume
    assert {f["id"] for f in d["findings"]} == set(truth)
    for f in d["findings"]:
        assert f["volume_ml"] == pytest.approx(truth[f["id"]], abs=1e-3)
        assert f["kind"] == "new" and f["kind_label"] == "New T2-FLAIR lesion"
    assert d["form"]["fields"][0]["name"] == "score" and len(d["form"]["fields"][0]["choices"]) == 5
    assert [v["value"] for v in d["form"]["finding_verdicts"]] == ["keep", "discard"]
    assert d["finding"].startswith("Active: 3 new T2-FLAIR lesions")
    assert d["alarms"] == 1 and d["decided"] is None
    assert d["can_decide"] is True
    assert d["priors"][0]["study_id"] == web_env.prior_study_id
    # the prior has no result here: its page shows the study's status instead of failing
    prior = c.get(f"/studies/{web_env.prior_study_id}")
    assert prior.status_code == 200 and 'id="transitions"' in prior.text and "received" in prior.text


def _audit_events(env: WebEnv, action: str) -> list:
    from neurorad.store.models import AuditEvent

    with env.app.state.db.session() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_accept_regenerates_report_with_kept_lesions(web_env: WebEnv) -> None:
    c, csrf = _client(web_env, "rad")
    sid = web_env.study_id
    r = c.post(f"/web/api/studies/{sid}/decision", json=_body(web_env, comment="Lesion 2 is a vessel."),
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["kept"] == [1, 3] and out["discarded"] == [2]
    assert out["report_version"] == 2  # the workflow's draft is version 1
    html = c.get(out["report_url"]).text
    rows = re.findall(r"<tr><td>(\d+)</td><td>New T2-FLAIR lesion</td><td>([0-9.]+)</td>", html)
    truth = web_env.truth["expected_ml"]
    assert [int(i) for i, _ in rows] == [1, 3]  # the kept lesions only, with their volumes (mL)
    assert [float(v) for _, v in rows] == pytest.approx([truth[1], truth[3]], abs=1e-3)
    assert "Active: 2 new T2-FLAIR lesions" in html
    (ev,) = _audit_events(web_env, "qa.decision")
    assert ev.actor == "user:rad" and ev.details["decision"] == "ACCEPTABLE"
    assert ev.details["result_version"] == web_env.result_id and ev.details["discarded"] == [2]
    assert ev.software_version and ev.at is not None
    # the decision row itself holds verdicts, missed markers and the software version
    with web_env.app.state.db.session() as s:
        from neurorad.store.models import QADecision

        dec = s.scalars(select(QADecision)).one()
        assert dec.candidates == [{"finding_id": 1, "verdict": "keep"}, {"finding_id": 2, "verdict": "discard"},
                                  {"finding_id": 3, "verdict": "keep"}]
        assert dec.missed_lesions == [] and dec.report_version == 2 and dec.software_version == ev.software_version
        assert dec.form_values == {"score": "4"}
    # the reviewed report as a DICOM Encapsulated PDF in the (pseudonymised) study, report version 2
    dcm = pydicom.dcmread(web_env.data_dir / "results" / str(sid) / "review" / "run1" / "v2" / "dicom" /
                          "report_pdf.dcm")
    draft = pydicom.dcmread(web_env.folder / "dicom" / "report_pdf.dcm")
    assert dcm.StudyInstanceUID == draft.StudyInstanceUID and dcm.SOPInstanceUID != draft.SOPInstanceUID
    # deciding again on the same result version needs an explicit amendment with a reason
    again = _body(web_env, candidates=[], missed_lesions=[{"x_mm": -20.5, "y_mm": 4.0, "z_mm": 31.0}])
    r2 = c.post(f"/web/api/studies/{sid}/decision", json=again, headers={"X-CSRF-Token": csrf})
    assert r2.status_code == 409 and "amendment" in r2.json()["detail"]
    again["amendment_reason"] = "lesion 2 is real after all"
    r2 = c.post(f"/web/api/studies/{sid}/decision", json=again, headers={"X-CSRF-Token": csrf})
    assert r2.status_code == 200 and r2.json()["report_version"] == 3 and r2.json()["amends"] == out["decision_id"]
    with web_env.app.state.db.session() as s:
        d2, d3 = s.scalars(select(QADecision).order_by(QADecision.id)).all()
        assert [c["verdict"] for c in d3.candidates] == ["keep"] * 3 and d3.report_version == 3
        assert d3.missed_lesions == [{"x_mm": -20.5, "y_mm": 4.0, "z_mm": 31.0}]
        assert d3.amends_id == d2.id and d3.amendment_reason == "lesion 2 is real after all"
    (amend,) = _audit_events(web_env, "qa.amendment")
    assert amend.details["reason"] == "lesion 2 is real after all" and amend.details["amends"] == out["decision_id"]
    api = c.get(f"/api/studies/{sid}").json()["qa"]
    assert [q["report_version"] for q in api] == [2, 3] and api[1]["missed_lesions"][0]["x_mm"] == -20.5
    # the page shows the decision as decided, with the link to its report version
    page = c.get(f"/web/api/studies/{sid}/review").json()
    assert page["decided"]["report_version"] == 3 and page["decided"]["amends"] == out["decision_id"]


def test_a_lesion_the_reader_marked_as_missed_makes_the_signed_report_active(web_env: WebEnv) -> None:
    """The reader discards every detection and marks one lesion the software missed: the signed report's
    conclusion and gadolinium line count it (before, they said "no new lesion, gadolinium not needed" next to the
    reader's own marker), and so does the reviewed result's SR."""
    c, csrf = _client(web_env, "rad")
    body = _body(web_env, candidates=[{"lesion_id": i, "verdict": "discard"} for i in (1, 2, 3)],
                 missed_lesions=[{"x_mm": -20.5, "y_mm": 4.0, "z_mm": 31.0}])
    r = c.post(f"/web/api/studies/{web_env.study_id}/decision", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert r.json()["kept"] == [] and r.json()["discarded"] == [1, 2, 3]
    html = c.get(r.json()["report_url"]).text
    assert "Active: 1 new or enlarging T2-FLAIR lesion marked by the reader" in html
    assert "Gadolinium is recommended" in html and "not needed" not in html
    assert "Finding missed by the software, marked by the reviewer" in html  # the marker itself, as before
    # the reviewed values in the SR: gadolinium recommended, and the reader's count
    sr = web_env.data_dir / "results" / str(web_env.study_id) / "review" / "run1" / "v2" / "dicom" / "sr.dcm"
    text = str(pydicom.dcmread(sr))
    assert "RECOMMENDED" in text and "NOT NEEDED" not in text and "READER TO DECIDE" not in text
    ds = pydicom.dcmread(sr)

    def items(seq):  # noqa: ANN001, ANN202 - every content item of the SR tree
        for it in seq:
            yield it
            yield from items(getattr(it, "ContentSequence", []))

    (marked,) = [it for it in items(ds.ContentSequence) if "ConceptNameCodeSequence" in it and
                 it.ConceptNameCodeSequence[0].CodeMeaning == "Lesions marked by the reader, missed by the software"]
    assert float(marked.MeasuredValueSequence[0].NumericValue) == 1.0


def test_rejected_result_puts_no_numbers_in_report(web_env: WebEnv) -> None:
    c, csrf = _client(web_env, "rad")
    r = c.post(f"/web/api/studies/{web_env.study_id}/decision",
               json=_body(web_env, decision="UNACCEPTABLE", score=1, candidates=[]),
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    html = c.get(r.json()["report_url"]).text
    assert "not usable" in html
    assert "not usable" in html.split("</title>")[0] and "not usable" in html.split("</h1>")[0]
    # the worklist tells it too, without the automatic result's counts
    row = c.get("/worklist?status=all").text.split(f'data-study="{web_env.study_id}"')[1].split("</tr>")[0]
    assert "result not usable" in row and "kindcount" not in row, row
    body = html.split("</h1>")[1]
    assert "Active" not in body and "Gadolinium" not in body and "New T2-FLAIR lesion" not in body
    for row in web_env.truth["rows"]:
        assert f"{row['volume_ml']:.3f}" not in html


def test_stale_result_version_is_refused(web_env: WebEnv) -> None:
    c, csrf = _client(web_env, "rad")
    r = c.post(f"/web/api/studies/{web_env.study_id}/decision", json=_body(web_env, result_version=999999),
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 409


def test_page_embeds_no_script_breakout(web_env: WebEnv) -> None:
    # the result's free text ends up in the page's JSON: it must not close the script element
    res = json.loads((web_env.folder / "result.json").read_text())
    res["findings"][0]["location"] = "</script><script>alert(1)</script>"
    (web_env.folder / "result.json").write_text(json.dumps(res))
    c, _ = _client(web_env, "rad")
    page = c.get(f"/studies/{web_env.study_id}").text
    data = page.split('<script id="review-data" type="application/json">')[1].split("</script>")[0]
    assert json.loads(data)["findings"][0]["location"] == "</script><script>alert(1)</script>"


def test_form_time_points_must_all_be_accepted(web_env: WebEnv) -> None:
    """A workflow whose form names time points (e.g. a 3-time-point comparison) needs every one
    accepted for ACCEPTABLE; the rule comes from the workflow's ReviewForm, not the platform."""
    from dataclasses import replace

    from neurorad.workflows import registry
    from neurorad.workflows.ms_lesions import MSLesionsWorkflow

    class ThreePoint(MSLesionsWorkflow):
        review_form = replace(MSLesionsWorkflow.review_form, timepoints=("prior 2", "prior 1", "current"))

    registry.register(ThreePoint)  # replaces ms-lesions in this process
    try:
        c, csrf = _client(web_env, "rad")
        page = c.get(f"/web/api/studies/{web_env.study_id}/review").json()
        assert page["form"]["timepoints"] == ["prior 2", "prior 1", "current"]
        url = f"/web/api/studies/{web_env.study_id}/decision"
        body = _body(web_env, candidates=[], timepoints_accepted=["prior 1", "current"])
        r = c.post(url, json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 422 and "prior 2" in r.text
        body["timepoints_accepted"].append("prior 2")
        r = c.post(url, json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["decision"] == "ACCEPTABLE" and out["kept"] == [1, 2, 3] and out["values"] == {"score": "4"}
        with web_env.app.state.db.session() as s:
            from neurorad.store.models import QADecision

            dec = s.scalars(select(QADecision)).one()
            assert dec.timepoints_accepted == ["prior 1", "current", "prior 2"] and dec.report_version == 2
        html = c.get(out["report_url"]).text
        assert "Active: 3 new T2-FLAIR lesions" in html
    finally:
        registry.unregister("ms-lesions")


def test_verdicts_are_validated_by_the_workflow_form(web_env: WebEnv) -> None:
    c, csrf = _client(web_env, "rad")
    url = f"/web/api/studies/{web_env.study_id}/decision"
    r = c.post(url, json=_body(web_env, candidates=[{"lesion_id": 2, "verdict": "maybe"}]),
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "maybe" in r.text
    r = c.post(url, json=_body(web_env, candidates=[{"finding_id": 9, "verdict": "keep"}]),
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "9" in r.text
    r = c.post(url, json=_body(web_env, score=None, values={"score": "7"}), headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "Quality score" in r.text


def test_accepting_needs_the_readers_verdict_on_a_low_confidence_lesion(web_env: WebEnv) -> None:
    """Workflow 1.18.0's low-confidence lesion counts only once the reader keeps it: an ACCEPTABLE decision without
    the reader's own verdict on it is refused (422, naming it), the form's default "keep" is not applied to it;
    with a verdict it is accepted, and UNACCEPTABLE needs none."""
    from dataclasses import replace

    from neurorad.workflows.contract import WorkflowResult

    res = WorkflowResult.read_json(web_env.folder)
    low = res.findings[0].id
    res.findings = [replace(f, score=0.15 if f.id == low else 0.9) for f in res.findings]
    res.provenance.parameters["activity_min_peak_score"] = 0.23
    res.write_json(web_env.folder)
    c, csrf = _client(web_env, "rad")
    url = f"/web/api/studies/{web_env.study_id}/decision"
    others = [{"finding_id": f.id, "verdict": "keep"} for f in res.findings if f.id != low]
    r = c.post(url, json=_body(web_env, candidates=others), headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and f"{low} (low confidence)" in r.text, r.text
    r = c.post(url, json=_body(web_env, candidates=[*others, {"finding_id": low, "verdict": "discard"}]),
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "ACCEPTABLE"
    r = c.post(url, json=_body(web_env, decision="UNACCEPTABLE", candidates=[], amendment_reason="motion"),
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text


def _red_pixels(ds: pydicom.Dataset) -> int:
    """Pixels coloured as a lesion in a key image (red blend over grey: R - G = 0.65 * 255)."""
    px = ds.pixel_array.astype(int)
    return int(((px[..., 0] - px[..., 1]) > 100).sum())


def _ball_voxels_in_slice(lesion, k: int) -> int:
    from tests.web.msdata import _ball

    shape = (91, 109, 91)
    return int(_ball(shape, lesion.center_vox, lesion.radius_vox)[:, :, k].sum())


def test_delivery_sends_only_reviewed_objects_without_discarded_candidates(web_env_pacs: WebEnv, pacs) -> None:
    """ACCEPTABLE with candidate 2 discarded: the PACS gets the reviewed report, a SEG regenerated
    with lesions 1 and 3 only and key images of the kept lesions, all re-identified; never the
    workflow's draft report / SEG / SC. A later UNACCEPTABLE sends only its superseding report."""
    from neurorad.store.models import Result
    from tests.web.conftest import IDENTITY, ORIGINAL_STUDY_UID, run_jobs
    from tests.web.msdata import LESIONS

    env = web_env_pacs
    with env.app.state.db.session() as s:
        drafts = {r.sop_uid for r in s.scalars(select(Result).where(Result.study_id == env.study_id,
                                                                    Result.sop_uid.is_not(None)))}
        series_uids = {str(pydicom.dcmread(env.data_dir / r.path, stop_before_pixels=True).SeriesInstanceUID)
                       for r in s.scalars(select(Result).where(Result.kind == "seg"))}
    assert len(drafts) == 3  # draft report, draft SEG (all 3 candidates), draft SC
    c, csrf = _client(env, "rad")
    url = f"/web/api/studies/{env.study_id}/decision"
    r = c.post(url, json=_body(env), headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["delivery"].startswith("queued"), r.text
    run_jobs(env.app)
    got = list(pacs.received)
    assert all(ds.PatientID == IDENTITY["PatientID"] and ds.StudyInstanceUID == ORIGINAL_STUDY_UID for ds in got)
    assert not {str(ds.SOPInstanceUID) for ds in got} & drafts  # no draft reached the PACS (UIDs unchanged)
    by_mod = {}
    for ds in got:
        by_mod.setdefault(str(ds.Modality), []).append(ds)
    assert sorted((k, len(v)) for k, v in by_mod.items()) == [("DOC", 1), ("SEG", 1), ("SR", 1)]
    (seg,) = by_mod["SEG"]
    assert {str(x.SegmentLabel) for x in seg.SegmentSequence} == {"1 New T2-FLAIR lesion", "3 New T2-FLAIR lesion"}
    # frames on the examined series (3 axial slices k = 45..47 of the 2 mm grid): lesion 1 only
    expected = sum(_ball_voxels_in_slice(LESIONS[0], k) for k in (45, 46, 47))
    assert expected > 0 and int(seg.pixel_array.sum()) == expected
    ref_series = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    assert ref_series not in series_uids  # re-identified: the PACS's own series UID, not the pseudonym
    n_first = len(got)
    # a later UNACCEPTABLE (an amendment, with its reason) sends a "not usable" report only
    r = c.post(url, json=_body(env, decision="UNACCEPTABLE", score=2, candidates=[],
                               amendment_reason="motion artefact missed at first"),
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["report_version"] == 3, r.text
    run_jobs(env.app)
    new = pacs.received[n_first:]
    assert [str(ds.Modality) for ds in new] == ["DOC"]
    assert "not usable" in c.get(r.json()["report_url"]).text
    # a second run of the delivery sends nothing new
    with env.app.state.db.session() as s:
        from neurorad.store.models import WorkflowRun

        run = s.scalars(select(WorkflowRun)).one()
        assert run.state == "delivered"
    tc, tcsrf = _client(env, "tech")
    assert tc.post(f"/api/studies/{env.study_id}/deliver", headers={"X-CSRF-Token": tcsrf}).status_code == 200
    run_jobs(env.app)
    assert len(pacs.received) == n_first + 1


def test_straight_rejection_is_reported_and_delivered(web_env_pacs: WebEnv, pacs) -> None:
    """needs_review -> rejected -> reported -> delivered: the "not usable" report reaches the PACS
    (nothing else), every step is a recorded transition, and the workflow can still be re-run."""
    from neurorad.store.models import StudyTransition
    from tests.web.conftest import IDENTITY, run_jobs

    env = web_env_pacs
    c, csrf = _client(env, "rad")
    r = c.post(f"/web/api/studies/{env.study_id}/decision",
               json=_body(env, decision="UNACCEPTABLE", score=1, candidates=[], comment="motion"),
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["delivery"].startswith("queued"), r.text
    run_jobs(env.app)
    assert [str(ds.Modality) for ds in pacs.received] == ["DOC"]
    assert pacs.received[0].PatientID == IDENTITY["PatientID"]
    assert "not usable" in c.get(r.json()["report_url"]).text
    with env.app.state.db.session() as s:
        rows = s.scalars(select(StudyTransition).where(StudyTransition.study_id == env.study_id,
                                                       StudyTransition.run_id.is_not(None))
                         .order_by(StudyTransition.id)).all()
    assert [(t.from_state, t.to_state) for t in rows][-3:] == [
        ("needs_review", "rejected"), ("rejected", "reported"), ("reported", "delivered")]
    assert rows[-2].actor == "user:rad" and rows[-1].actor.startswith("worker:")
    tc, tcsrf = _client(env, "tech")
    r = tc.post(f"/api/studies/{env.study_id}/retry", json={"reason": "re-run after the motion check"},
                headers={"X-CSRF-Token": tcsrf})
    assert r.status_code == 200 and r.json()["state"] == "queued"


def test_pages_forbid_inline_scripts_and_framing(web_env: WebEnv) -> None:
    anonymous, _ = _client(web_env)
    c, _ = _client(web_env, "rad")
    for client, url in ((anonymous, "/login"), (c, "/worklist"), (c, f"/studies/{web_env.study_id}")):
        r = client.get(url, follow_redirects=False)
        csp = r.headers["content-security-policy"]
        script_src = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
        assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src, url
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
        # no executable inline script element (only the JSON data block of the study page)
        for tag in re.findall(r"<script[^>]*>", r.text):
            assert "src=" in tag or 'type="application/json"' in tag, (url, tag)
