"""The review app in a real browser (Debian's Chromium, headless, software WebGL via SwiftShader).

One radiologist session: sign in, worklist, open the MS result, the three synchronized panels
show the overlay colour exactly at the lesion (checked on screenshot pixels), keyboard slice
scrolling, discard one candidate, accept; then the regenerated report lists the remaining
lesions, the audit log holds the decision, and the PACS holds the new report version.

The PACS is Orthanc (Debian, DICOMweb, authentication on; the data plane's integration fixture).
Debian's Orthanc binds every interface, so the session runs inside a private network namespace
(``unshare -n``, loopback only): the outer test re-runs this file there with NEURORAD_NETNS=1.
Set NEURORAD_DOCS_SCREENSHOTS=1 to refresh the screenshots in docs/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from tests.web.conftest import IDENTITY, ORIGINAL_STUDY_UID, PASSWORD, LiveServer, WebEnv, build_env, run_jobs
from tests.web.pixels import crosshair_center, overlay_mask, png_to_rgb

pytestmark = [pytest.mark.slow, pytest.mark.services]
DOCS = Path(__file__).resolve().parents[2] / "docs"
VIEWER_TIMEOUT_MS = 90_000


def _panel_pixels(page, shot: np.ndarray, index: int) -> np.ndarray:
    box = page.locator(f"#panel-{index} canvas").bounding_box()
    x0, y0 = int(box["x"]) + 2, int(box["y"]) + 2
    x1, y1 = int(box["x"] + box["width"]) - 2, int(box["y"] + box["height"]) - 2
    return shot[y0:y1, x0:x1]


def _panels(page) -> list[np.ndarray]:
    page.wait_for_timeout(300)  # let NiiVue finish the frame after the last event
    shot = png_to_rgb(page.screenshot())
    return [_panel_pixels(page, shot, i) for i in range(3)]


def _blobs(mask: np.ndarray) -> list[tuple[float, float]]:
    """Centres (x, y) of the overlay blobs; closing first so the crosshair does not split one."""
    from scipy import ndimage

    lab, n = ndimage.label(ndimage.binary_closing(mask, iterations=3))
    return [(float(c[1]), float(c[0])) for c in ndimage.center_of_mass(mask, lab, range(1, n + 1))]


def _slice(page) -> int:
    return int(page.locator("#location").get_attribute("data-slice"))


def _panels_mm(page) -> list[str]:
    return page.locator("#location").get_attribute("data-panels-mm").split(";")


IN_NETNS = os.environ.get("NEURORAD_NETNS") == "1"
REPO = Path(__file__).resolve().parents[2]


def test_review_session_in_private_network_namespace() -> None:
    """Runs :func:`test_review_session` inside ``unshare -n`` (see module docstring)."""
    if IN_NETNS:
        pytest.skip("already inside the namespace")
    if shutil.which("unshare") is None:
        pytest.fail("util-linux `unshare` is required for the browser test (Orthanc as the PACS)")
    cmd = (f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider -x -s "
           f"{Path(__file__)}::test_review_session")
    r = subprocess.run(["unshare", "-n", "sh", "-c", cmd], env=dict(os.environ, NEURORAD_NETNS="1"),
                       capture_output=True, text=True, timeout=900, cwd=REPO)
    out = r.stdout[-6000:] + r.stderr[-3000:]
    print(out)
    if r.returncode != 0 and "Operation not permitted" in r.stderr and "unshare" in r.stderr:
        pytest.fail("unshare -n needs root or user namespaces (run `make test` as root, as the Makefile does)")
    assert r.returncode == 0, out
    assert "1 passed" in r.stdout


@pytest.mark.skipif(not IN_NETNS, reason="runs in a private network namespace (see the test above)")
def test_review_session(tmp_path: Path, browser_context) -> None:
    from neurorad.server.settings import Destination
    from tests.integration.conftest import ORTHANC, PACS_PASSWORD, PACS_USER, Orthanc

    if not Path(ORTHANC).exists():
        pytest.fail("Orthanc not installed (Debian packages orthanc + orthanc-dicomweb)")
    orthanc = Orthanc(tmp_path / "orthanc")
    try:
        env = build_env(tmp_path / "data", destinations=[Destination(
            name="orthanc", dicomweb_url=orthanc.dicomweb, username=PACS_USER, password=PACS_PASSWORD)])
        with LiveServer(env.app) as live_server:
            _session(env, orthanc, live_server, browser_context)
    finally:
        orthanc.stop()


def _session(web_env: WebEnv, orthanc, live_server: LiveServer, browser_context) -> None:
    from tests.web.test_worklist import _add_studies

    others = _add_studies(web_env, [("alarm3", 3, 26, "ms-lesions"), ("calm", 0, 50, "ms-lesions"),
                                    ("glioma", 0, 4, "summary")])
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # sign in (the worklist sends us to the form first)
    page.goto(live_server.url + "/worklist")
    assert "/login" in page.url
    page.fill("#username", "rad")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#worklist")
    row = page.locator(f'#worklist tr[data-study="{web_env.study_id}"]')
    assert row.count() == 1
    shown = [int(x) for x in page.locator("#worklist tbody tr").evaluate_all("rs => rs.map(r => r.dataset.study)")]
    assert shown == [others["alarm3"], web_env.study_id, others["calm"], others["glioma"]]
    assert web_env.pseudo_id in row.inner_text()
    if os.environ.get("NEURORAD_DOCS_SCREENSHOTS"):
        page.screenshot(path=str(DOCS / "review-worklist.png"))

    # open the MS result
    row.click()
    page.wait_for_url(f"**/studies/{web_env.study_id}")
    page.wait_for_selector("body[data-ready]", state="attached", timeout=VIEWER_TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.ready") == "1", page.locator("#status").inner_text()
    load_ms = int(page.evaluate("document.body.dataset.loadMs"))

    # The page opens on lesion 1: the crosshair is at its centre in all three panels, the overlay
    # colour appears only in the third panel, and there it surrounds the crosshair.
    panels = _panels(page)
    if os.environ.get("NEURORAD_DOCS_SCREENSHOTS"):
        page.screenshot(path=str(DOCS / "review-study.png"))
    red = [int(overlay_mask(p).sum()) for p in panels]
    assert red[0] == 0 and red[1] == 0, red
    assert red[2] > 30, red
    centre = crosshair_center(panels[2])
    assert centre is not None
    blobs = _blobs(overlay_mask(panels[2]))
    k = web_env.truth["lesions"][0].center_vox[2]
    visible = [le for le in web_env.truth["lesions"] if abs(le.center_vox[2] - k) < le.radius_vox]
    assert len(blobs) == len(visible) == 2, blobs
    # lesion 1 lies under the crosshair ...
    d = [np.hypot(x - centre[0], y - centre[1]) for x, y in blobs]
    assert min(d) < 5, (blobs, centre)
    (x1, y1), (x2, y2) = blobs[int(np.argmin(d))], blobs[1 - int(np.argmin(d))]
    # ... and lesion 2 (60 mm to the patient's right, 10 mm posterior) sits left of it on screen
    # (radiological convention) and slightly lower (posterior is down in axial view).
    assert x2 < x1 - 50 and y2 > y1, blobs
    # same crosshair position on screen in all panels (same slice, plane and zoom)
    centres = [crosshair_center(p) for p in panels]
    assert all(c is not None and abs(c[0] - centres[0][0]) < 2 and abs(c[1] - centres[0][1]) < 2
               for c in centres), centres

    # keyboard: slices move together in all panels
    k0 = _slice(page)
    lesion1 = web_env.truth["lesions"][0]
    assert k0 == lesion1.center_vox[2]
    for _ in range(3):
        page.keyboard.press("ArrowUp")
    assert _slice(page) == k0 + 3
    mm = _panels_mm(page)
    assert len(set(mm)) == 1, mm
    page.keyboard.press("PageUp")  # 10 more slices: beyond every lesion (radius <= 4 voxels)
    assert _slice(page) == k0 + 13
    assert all(int(overlay_mask(p).sum()) == 0 for p in _panels(page))
    page.keyboard.press("PageDown")
    page.keyboard.press("ArrowDown")
    assert _slice(page) == k0 + 2
    assert int(overlay_mask(_panels(page)[2]).sum()) > 0

    # plane switch applies to all panels
    page.keyboard.press("c")
    assert page.locator("#plane").input_value() == "coronal"
    page.keyboard.press("x")

    # discard candidate 2 with the keyboard (j = next candidate, d = discard), then accept
    page.keyboard.press("j")  # selects lesion 2 and jumps to its centre (slice 52; lesion 1 also cut)
    assert _slice(page) == web_env.truth["lesions"][1].center_vox[2]
    assert len(_blobs(overlay_mask(_panels(page)[2]))) == 2
    page.keyboard.press("d")
    assert page.locator('#lesions tr[data-lesion="2"]').get_attribute("data-verdict") == "discard"
    # the discarded candidate leaves the overlay; lesion 1 stays
    after = _blobs(overlay_mask(_panels(page)[2]))
    assert len(after) == 1, after
    assert "2 of 3 findings kept" in page.locator("#summary").inner_text()
    page.keyboard.press("a")
    page.keyboard.press("4")
    page.fill("#comment", "Candidate 2 is a flow artefact.")
    page.click("#submit")
    page.wait_for_selector("body[data-decision-saved='1']", state="attached", timeout=60_000)
    assert "ACCEPTABLE" in page.locator("#status").inner_text()
    assert not errors, errors

    # the regenerated report lists the remaining lesions only
    href = page.locator("#report-link").get_attribute("href")
    report = page.request.get(live_server.url + href).text()
    rows = {int(m) for m in re.findall(r"<tr><td>(\d+)</td>", report)}  # the lesion table
    assert rows == {1, 3}, rows
    assert "Candidate 2 is a flow artefact." in report

    # the audit log holds the decision
    from neurorad.store.models import AuditEvent, QADecision, Result, Study

    with web_env.app.state.db.session() as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "qa.decision")).one()
        assert ev.actor == "user:rad" and ev.details["kept"] == [1, 3]
        assert ev.details["result_version"] == web_env.result_id
        dec = s.scalars(select(QADecision)).one()
        assert (dec.decision, dec.score, dec.result_id) == ("ACCEPTABLE", 4, web_env.result_id)
        report_sop = s.scalars(select(Result).where(Result.kind == "review_dcm", Result.sop_class_uid ==
                                                    "1.2.840.10008.5.1.4.1.1.104.1")).one().sop_uid
        assert report_sop

    # the PACS (Orthanc, over DICOMweb) holds the reviewed objects only, re-identified into the
    # original study: report version 2, the SEG of lesions 1 and 3, key images; no draft
    assert run_jobs(web_env.app) >= 1
    study_uid = ORIGINAL_STUDY_UID
    got = {}
    for inst in orthanc.qido(f"/studies/{study_uid}/instances"):
        sop = inst["00080018"]["Value"][0]
        series = inst["0020000E"]["Value"][0]
        (meta,) = orthanc.qido(f"/studies/{study_uid}/series/{series}/instances/{sop}/metadata")
        got[sop] = pydicom.Dataset.from_json(meta)
    assert report_sop in got, sorted(got)
    rep = got[report_sop]
    assert rep.PatientID == IDENTITY["PatientID"] and str(rep.PatientName) == IDENTITY["PatientName"]
    assert rep.MIMETypeOfEncapsulatedDocument == "application/pdf"
    with web_env.app.state.db.session() as s:
        drafts = {r.sop_uid for r in s.scalars(select(Result).where(Result.qa_decision_id.is_(None),
                                                                    Result.sop_uid.is_not(None)))}
    assert drafts and not drafts & set(got)
    segs = [d for d in got.values() if d.Modality == "SEG"]
    assert len(segs) == 1 and {str(x.SegmentLabel) for x in segs[0].SegmentSequence} == {
        "1 New T2-FLAIR lesion", "3 New T2-FLAIR lesion"}
    with web_env.app.state.db.session() as s:
        assert s.get(Study, web_env.study_id).state == "delivered"
    print(f"viewer load {load_ms} ms")
