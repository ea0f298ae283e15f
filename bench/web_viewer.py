"""Time to interactive of the study page (run: .venv/bin/python bench/web_viewer.py [repeats] [side]).

Opens the real study page (template, viewer.js, NiiVue bundle, the server's display copies) in
headless Chromium (Debian's, software WebGL via SwiftShader) from 127.0.0.1 (tests.web.studypage)
with a baseline/follow-up pair and a label overlay of ``side``^3 voxels (default 256, 1 mm), and
reads, from the navigation start (``performance.now()``'s origin, i.e. honest page time):

* form ready: the verdict and decision controls are wired and enabled (clicks take effect);
* interactive: the three panels show the images (preview resolution when the page uses it) and
  the page answers: measured as the time until a click on a verdict after ``ready`` has been
  applied (the click is sent as soon as ``ready`` is seen; its latency is included);
* full: the full-resolution images replaced the preview.

Cases: the full images only (as before) and preview first (downsampled display copies, at most
128 voxels a side, then full resolution). The display copies are built once before timing (the
server builds them on the first request of each result version). Software GL on a shared CPU is
far slower than a GPU browser; figures taken on a loaded machine are upper bounds.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.web.studypage import STUDY_ID, PageServer, make_phantom, page_data  # noqa: E402

TARGET_S = 3.0


def measure_once(browser, srv: PageServer) -> dict[str, float]:
    """One page load; times in ms since navigation start."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    t0 = time.perf_counter()
    page.goto(srv.url, wait_until="commit")
    page.wait_for_selector("body[data-ready='1']", state="attached", timeout=600_000)
    # a click right after the images are shown: interactive when it has taken effect
    page.locator('input[name="cand-2"][value="discard"]').click(timeout=600_000)
    page.wait_for_selector('#lesions tr[data-lesion="2"][data-verdict="discard"]', state="attached")
    interactive_ms = page.evaluate("performance.now()")
    wall_ms = (time.perf_counter() - t0) * 1000
    page.wait_for_selector("body[data-detail='full']", state="attached", timeout=600_000)
    ds = page.evaluate("({...document.body.dataset})")
    page.close()
    return {"form_ms": float(ds["formReadyMs"]), "shown_ms": float(ds["loadMs"]), "interactive_ms": interactive_ms,
            "full_ms": float(ds.get("fullMs", ds["loadMs"])), "wall_ms": wall_ms}


def run(side: int, repeats: int) -> dict[str, dict[str, float]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        folder = Path(tmp)
        truth = make_phantom(folder, shape=(side, side, side), spacing_mm=256.0 / side)
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        for label, preview in (("full images only", False), ("preview first", True)):
            with PageServer(folder, page_data(folder, truth, preview=preview)) as srv:
                base = srv.url.rsplit("/studies", 1)[0]
                for name in ("baseline.nii.gz", "followup.nii.gz", "labels.nii.gz"):  # build the display copies
                    for q in ("", "&level=preview"):
                        httpx.get(f"{base}/web/api/studies/{STUDY_ID}/files/{name}?run=1{q}", timeout=600)
                runs = [measure_once(browser, srv) for _ in range(repeats)]
                out[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        browser.close()
    return out


def main(repeats: int = 3, side: int = 256) -> None:
    res = run(side, repeats)
    print(f"study page, {side}^3 baseline + follow-up + labels, headless Chromium + SwiftShader, median of "
          f"{repeats} (s from navigation start)")
    print(f"{'case':<20}{'form ready':>11}{'images':>8}{'interactive':>12}{'full res':>9}")
    for label, r in res.items():
        print(f"{label:<20}{r['form_ms'] / 1000:>11.2f}{r['shown_ms'] / 1000:>8.2f}{r['interactive_ms'] / 1000:>12.2f}"
              f"{r['full_ms'] / 1000:>9.2f}")
    tti = res["preview first"]["interactive_ms"] / 1000
    print(f"time to interactive (preview first): {tti:.2f} s; target <= {TARGET_S:.0f} s: "
          f"{'met' if tti <= TARGET_S else 'NOT met'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, int(sys.argv[2]) if len(sys.argv) > 2 else 256)
