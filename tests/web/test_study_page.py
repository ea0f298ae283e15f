"""The study page in a real browser (Debian's Chromium, software WebGL), served by tests.web.studypage:
a click is never lost, a checked control is always what is saved, a decided study reopens as decided,
changing it needs an amendment with a reason, and the viewer's sides are right (radiological
convention with letters computed from NiiVue's projection, checked against the pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.web.pixels import png_to_rgb
from tests.web.studypage import FINDINGS, PageServer, make_phantom, page_data

pytestmark = [pytest.mark.slow]
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("study")
    return d, make_phantom(d)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: install Debian's chromium (make install)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def _overlay_panel(page) -> np.ndarray:
    """Pixels of the overlay panel as NiiVue drew them (the DOM letters and numbers hidden)."""
    page.wait_for_timeout(300)
    hide = ".panel .mark, .panel .orient { visibility: hidden !important; }"
    page.evaluate("css => { const s = document.createElement('style'); s.id = 'hide-dom'; s.textContent = css;"
                  " document.head.appendChild(s); }", hide)
    shot = png_to_rgb(page.screenshot())
    page.evaluate("document.getElementById('hide-dom').remove()")
    box = page.locator("#panel-2 canvas").bounding_box()
    return shot[int(box["y"]) + 2:int(box["y"] + box["height"]) - 2, int(box["x"]) + 2:int(box["x"] + box["width"]) - 2]


def _blobs(rgb: np.ndarray) -> dict[str, list[float]]:
    """x centres of the red ('new') and yellow ('enlarging') overlay blobs, and the brain's midline x."""
    from scipy import ndimage

    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    masks = {"new": (r > 150) & (r - g > 90) & (r - b > 90),
             "enlarging": (r > 150) & (g > 120) & (b < 90) & (r - b > 90)}
    out: dict[str, list[float]] = {}
    for kind, m in masks.items():
        lab, n = ndimage.label(ndimage.binary_closing(m, iterations=2))
        out[kind] = sorted(float(c[1]) for c, size in zip(ndimage.center_of_mass(m, lab, range(1, n + 1)),
                                                          ndimage.sum(m, lab, range(1, n + 1)), strict=True)
                           if size >= 3)
    grey = (np.abs(r - g) < 20) & (np.abs(g - b) < 20) & (r > 40)
    cols = np.flatnonzero(grey.sum(axis=0) > 5)
    out["midline"] = [float(cols.min() + cols.max()) / 2] if cols.size else []
    return out


def _checked(page) -> dict[int, str]:
    return {fid: page.locator(f'input[name="cand-{fid}"]:checked').get_attribute("value") for fid, *_ in FINDINGS}


def test_click_at_once_takes_effect_is_shown_and_saved(phantom, browser) -> None:
    folder, truth = phantom
    # the stylesheet arrives late (CI failed once on a page drawn before review.css): disabled controls
    # must look disabled from the page's own first bytes
    with PageServer(folder, page_data(folder, truth), image_delay_s=3.0, css_delay_s=1.0) as srv:
        page, errors = _page(browser)
        page.goto(srv.url, wait_until="commit")
        discard2 = page.locator('input[name="cand-2"][value="discard"]')
        discard2.wait_for(state="attached", timeout=TIMEOUT_MS)
        # Before the script runs the control is visibly disabled (never clickable without effect) ...
        # (read in one evaluation: the script may enable it between two calls)
        opacity = discard2.evaluate("e => e.disabled ? getComputedStyle(e).opacity : null")
        if opacity is not None:
            assert float(opacity) < 0.7
        # ... and the click, as soon as it can be made, takes effect while the images still load.
        discard2.click(timeout=TIMEOUT_MS)
        assert page.evaluate("document.body.dataset.ready") is None, "images were already loaded: test too slow"
        assert page.locator('#lesions tr[data-lesion="2"]').get_attribute("data-verdict") == "discard"
        assert "2 of 3 findings kept" in page.locator("#summary").inner_text()
        assert page.locator('#legend .kind[data-kind="new"] .count').inner_text() == "1"

        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=TIMEOUT_MS)
        page.wait_for_selector("body[data-detail='full']", state="attached", timeout=TIMEOUT_MS)
        # the overlay shows what the list says: finding 2 (new, right hemisphere) is gone
        blobs = _blobs(_overlay_panel(page))
        assert len(blobs["new"]) == 1 and len(blobs["enlarging"]) == 1, blobs
        marks = page.locator("#panel-2 .mark").evaluate_all("ms => ms.map(m => m.dataset.finding)")
        assert sorted(marks) == ["1", "3"]
        # window fields keep their precision (0-1 images)
        lo, hi = float(page.locator("#win-min").input_value()), float(page.locator("#win-max").input_value())
        assert 0 < lo < hi < 1 and (lo, hi) != (0, 1)

        page.keyboard.press("a")
        page.keyboard.press("4")
        page.fill("#comment", "2 is a vessel")
        page.click("#submit")
        page.wait_for_selector("body[data-decision-saved='1']", state="attached", timeout=TIMEOUT_MS)
        (sent,) = srv.posts
        saved = {v["finding_id"]: v["verdict"] for v in sent["verdicts"]}
        assert saved == {1: "keep", 2: "discard", 3: "keep"} == _checked(page)
        assert sent["values"] == {"score": "4"} and sent["decision"] == "ACCEPTABLE"
        assert "amendment_reason" not in sent
        # saved: read-only until an amendment is started; the new report version is linked
        assert page.locator('input[name="cand-1"][value="discard"]').is_disabled()
        assert page.locator('#reports a[data-version="2"]').count() == 1
        assert not errors, errors


def test_a_finding_left_to_the_reader_has_no_default_verdict(phantom, browser) -> None:
    """A finding the workflow leaves to the reader (``needs_verdict``, e.g. a low-confidence MS lesion) starts with
    no verdict chosen; the page refuses ACCEPTABLE until the reader gives one, and sends only chosen verdicts."""
    folder, truth = phantom
    data = page_data(folder, truth)
    data["findings"][2].update(needs_verdict=True, kind_label="enlarging (low confidence)")
    with PageServer(folder, data) as srv:
        page, errors = _page(browser)
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=TIMEOUT_MS)
        assert page.locator('input[name="cand-3"]:checked').count() == 0
        assert page.locator('#lesions tr[data-lesion="3"]').get_attribute("data-verdict") == ""
        # its row is marked (review.css) until the reader chooses
        shade = 'e => getComputedStyle(e.querySelector("td")).backgroundColor'
        assert page.locator('#lesions tr[data-lesion="3"]').evaluate(shade) != \
            page.locator('#lesions tr[data-lesion="1"]').evaluate(shade)
        assert "awaiting your verdict" in page.locator("#summary").inner_text()
        assert "2 of 3 findings kept" in page.locator("#summary").inner_text()
        page.keyboard.press("a")
        page.keyboard.press("4")
        page.click("#submit")
        assert "#3" in page.locator("#status").inner_text() and not srv.posts
        # UNACCEPTABLE needs no verdict on it
        page.keyboard.press("u")
        page.click("#submit")
        page.wait_for_selector("body[data-decision-saved='1']", state="attached", timeout=TIMEOUT_MS)
        (sent,) = srv.posts
        assert sent["decision"] == "UNACCEPTABLE"
        assert {v["finding_id"] for v in sent["verdicts"]} == {1, 2}
        assert not errors, errors

    with PageServer(folder, data) as srv:
        page, errors = _page(browser)
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=TIMEOUT_MS)
        page.locator('input[name="cand-3"][value="discard"]').click()
        assert "awaiting" not in page.locator("#summary").inner_text()
        assert page.locator('#lesions tr[data-lesion="3"]').get_attribute("data-verdict") == "discard"
        page.keyboard.press("a")
        page.keyboard.press("4")
        page.click("#submit")
        page.wait_for_selector("body[data-decision-saved='1']", state="attached", timeout=TIMEOUT_MS)
        (sent,) = srv.posts
        assert {v["finding_id"]: v["verdict"] for v in sent["verdicts"]} == {1: "keep", 2: "keep", 3: "discard"}
        assert not errors, errors


def test_reopened_decision_shows_as_decided_and_amendment_needs_reason(phantom, browser) -> None:
    folder, truth = phantom
    decided = {"id": 5, "decision": "ACCEPTABLE", "score": 4, "values": {"score": "4"},
               "verdicts": [{"finding_id": 1, "verdict": "keep"}, {"finding_id": 2, "verdict": "discard"},
                            {"finding_id": 3, "verdict": "keep"}],
               "missed": [], "comment": "2 is a vessel", "user": "rad1", "at": "2026-11-30T10:12",
               "result_version": 11, "report_version": 2, "amends": None, "amendment_reason": None,
               "report_url": "/web/api/studies/7/reports/2?fmt=html&run=1"}
    with PageServer(folder, page_data(folder, truth, decided=decided)) as srv:
        page, errors = _page(browser)
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=TIMEOUT_MS)
        page.wait_for_selector("body[data-detail='full']", state="attached", timeout=TIMEOUT_MS)
        # every verdict, the decision, the score and the comment as decided; read-only
        assert _checked(page) == {1: "keep", 2: "discard", 3: "keep"}
        assert page.locator('input[name="decision"]:checked').get_attribute("value") == "ACCEPTABLE"
        assert page.locator('input[name="field-score"]:checked').get_attribute("value") == "4"
        assert page.locator("#comment").input_value() == "2 is a vessel"
        assert page.locator('input[name="cand-2"][value="keep"]').is_disabled()
        assert page.locator("#submit").is_disabled()
        assert "2 of 3 findings kept" in page.locator("#summary").inner_text()
        # the overlay as decided (finding 2 not drawn) and links to every report version
        blobs = _blobs(_overlay_panel(page))
        assert len(blobs["new"]) == 1, blobs
        versions = page.locator("#reports a[data-version]").evaluate_all("a => a.map(x => x.dataset.version)")
        assert versions == ["1", "2"]
        draft = page.locator('#reports a[data-version="1"]').get_attribute("href")
        assert draft.startswith("/web/api/studies/7/reports/1")

        # the mouse wheel scrolls the slices of all panels (one slice per notch, up = superior)
        s0 = int(page.locator("#location").get_attribute("data-slice"))
        box = page.locator("#panel-0 canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -120)
        page.wait_for_function(f"document.getElementById('location').dataset.slice !== '{s0}'", timeout=TIMEOUT_MS)
        assert int(page.locator("#location").get_attribute("data-slice")) == s0 + 1
        assert len(set(page.locator("#location").get_attribute("data-panels-mm").split(";"))) == 1
        page.mouse.wheel(0, 120)  # and back (finding 2 is small: cut by the first slice only)
        page.wait_for_function(f"document.getElementById('location').dataset.slice === '{s0}'", timeout=TIMEOUT_MS)

        # changing it is an amendment, which needs a reason
        page.click("#amend")
        assert page.locator("#amend-box").is_visible()
        page.locator('input[name="cand-2"][value="keep"]').check()
        page.click("#submit")
        assert "needs a reason" in page.locator("#status").inner_text() and not srv.posts
        page.fill("#amendment-reason", "2 is a small lesion after all")
        page.click("#submit")
        page.wait_for_selector("body[data-decision-saved='1']", state="attached", timeout=TIMEOUT_MS)
        (sent,) = srv.posts
        assert sent["amendment_reason"] == "2 is a small lesion after all"
        assert {v["finding_id"]: v["verdict"] for v in sent["verdicts"]} == {1: "keep", 2: "keep", 3: "keep"}
        assert sent["values"] == {"score": "4"} and sent["comment"] == "2 is a vessel"
        assert page.locator('#reports a[data-version="3"]').count() == 1  # the superseding version
        assert len(_blobs(_overlay_panel(page))["new"]) == 2
        assert not errors, errors


def test_laterality_radiological_with_letters(phantom, browser) -> None:
    """Finding 1 lies in the LEFT hemisphere (x = -40 mm RAS): on the image right, next to "L", in the
    2D slice panels and in NiiVue (the 3D viewer the reader can start)."""
    folder, truth = phantom
    with PageServer(folder, page_data(folder, truth, preview=False)) as srv:
        page, errors = _page(browser)
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=TIMEOUT_MS)
        letters = {s: page.locator(f"#panel-2 .orient.{s}").inner_text() for s in ("left", "right", "top", "bottom")}
        assert letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
        blobs = _blobs(_overlay_panel(page))
        (mid,) = blobs["midline"]
        new = blobs["new"]
        assert len(new) == 2 and new[1] > mid + 20 and new[0] < mid - 20, blobs  # 1 left -> image right
        assert blobs["enlarging"][0] > mid + 20, blobs  # 3 is in the left hemisphere too
        # the number next to finding 1 is on the image right as well
        mark = page.locator('#panel-2 .mark[data-finding="1"]').bounding_box()
        box = page.locator("#panel-2 canvas").bounding_box()
        assert mark["x"] - box["x"] > mid
        # coronal: still patient right on screen left
        page.keyboard.press("c")
        page.wait_for_timeout(300)
        letters = {s: page.locator(f"#panel-2 .orient.{s}").inner_text() for s in ("left", "right", "top", "bottom")}
        assert letters == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
        blobs = _blobs(_overlay_panel(page))
        assert blobs["new"] and max(blobs["new"]) > blobs["midline"][0] + 20, blobs
        # the same in the 3D viewer (NiiVue, started on request: key v), at the same position
        before = page.locator("#location").get_attribute("data-panels-mm").split(";")[0]
        page.keyboard.press("v")
        page.wait_for_selector("body[data-engine='niivue']", state="attached", timeout=TIMEOUT_MS)
        assert page.locator("#panel-2 canvas").count() == 1
        mms = page.locator("#location").get_attribute("data-panels-mm").split(";")
        assert mms == [before] * 3, (before, mms)
        letters = {s: page.locator(f"#panel-2 .orient.{s}").inner_text() for s in ("left", "right", "top", "bottom")}
        assert letters == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
        page.keyboard.press("x")
        page.wait_for_timeout(300)
        letters = {s: page.locator(f"#panel-2 .orient.{s}").inner_text() for s in ("left", "right", "top", "bottom")}
        assert letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
        blobs = _blobs(_overlay_panel(page))
        (mid,) = blobs["midline"]
        assert len(blobs["new"]) == 2 and blobs["new"][1] > mid + 20 and blobs["new"][0] < mid - 20, blobs
        assert not errors, errors


def test_time_to_interactive_of_a_256_cube_pair(tmp_path_factory, browser) -> None:
    """256^3 baseline + follow-up + labels (1 mm): the form is usable before any image, the preview
    is shown before the full images, and a verdict clicked the moment the images are shown (from inside
    the page: the test driver's own latency is seconds on a loaded machine) is applied before the
    full-resolution swap (the page never freezes the reader's first action). The figures
    are printed (software GL; `bench/web_viewer.py` prints the same with both loading strategies);
    NEURORAD_TTI_BUDGET_S makes the time to interactive a hard bound (e.g. 3 on an idle machine)."""
    import os

    import httpx

    from tests.web.studypage import STUDY_ID, measure_page

    folder = tmp_path_factory.mktemp("tti")
    truth = make_phantom(folder, shape=(256, 256, 256), spacing_mm=1.0)
    with PageServer(folder, page_data(folder, truth, preview=True)) as srv:
        base = srv.url.rsplit("/studies", 1)[0]
        for name in ("baseline.nii.gz", "followup.nii.gz", "labels.nii.gz"):  # display copies, once per version
            for q in ("", "&level=preview"):
                httpx.get(f"{base}/web/api/studies/{STUDY_ID}/files/{name}?run=1{q}", timeout=600).raise_for_status()
        r = measure_page(browser, srv, click_in_page=True)
    print("256^3 pair, s from navigation start: " + ", ".join(f"{k} {v / 1000:.2f}" for k, v in r.items()))
    assert r["form_ms"] < r["shown_ms"] < r["full_ms"], r
    assert r["interactive_ms"] < r["full_ms"], r
    budget = float(os.environ.get("NEURORAD_TTI_BUDGET_S", "0") or 0)
    if budget:
        assert r["interactive_ms"] <= budget * 1000, r
