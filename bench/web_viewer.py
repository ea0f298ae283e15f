"""Time to interactive of the study page (run: .venv/bin/python bench/web_viewer.py [repeats] [side]).

Opens the real study page (template, viewer.js + preview2d.js, the NiiVue bundle, the server's
display copies) in headless Chromium (Debian's, software WebGL via SwiftShader) from 127.0.0.1
(tests.web.studypage) with a baseline/follow-up pair and a label overlay of ``side``^3 voxels
(default 256, 1 mm), and reads, from the navigation start (``performance.now()``'s origin, i.e.
honest page time):

* form ready: the verdict and decision controls are wired and enabled (clicks take effect);
* images: the three panels show the images (2D slice panels, no WebGL; the preview level first
  when the page has one);
* interactive: the page answers: a verdict clicked from inside the page the moment the images
  are shown has been applied (the page's own clock when its handler ran);
* full: the full-resolution display copies replaced the preview in the 2D panels;
* longest block: the longest main-thread task after the images were shown (PerformanceObserver
  'longtask'), up to full resolution;
* 3D viewer: the reader then presses v (NiiVue: zoom, pan, multiplanar, 3D): the time until all
  panels are NiiVue panels and the longest block meanwhile (what starting it costs under
  software GL; the page never starts it unasked).

Cases: the full images only and preview first (downsampled display copies, at most 128 voxels a
side, then full resolution). The display copies are built once before timing (the server builds
them on the first request of each result version). Software GL on a shared CPU is far slower than
a GPU browser; figures taken on a loaded machine are upper bounds. The load average is printed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.web.studypage import STUDY_ID, PageServer, make_phantom, measure_page, page_data  # noqa: E402

TARGET_S = 3.0


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
                runs = [measure_page(browser, srv, click_in_page=True, start_niivue=True) for _ in range(repeats)]
                out[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        browser.close()
    return out


def main(repeats: int = 3, side: int = 256) -> None:
    import os

    load_before = os.getloadavg()[0]
    res = run(side, repeats)
    print(f"study page, {side}^3 baseline + follow-up + labels, headless Chromium + SwiftShader, median of "
          f"{repeats} (s from navigation start); load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)")
    print(f"{'case':<20}{'form ready':>11}{'images':>8}{'interactive':>12}{'full res':>9}{'longest block':>14}"
          f"{'3D viewer':>10}{'its block':>10}")
    for label, r in res.items():
        print(f"{label:<20}{r['form_ms'] / 1000:>11.2f}{r['shown_ms'] / 1000:>8.2f}{r['interactive_ms'] / 1000:>12.2f}"
              f"{r['full_ms'] / 1000:>9.2f}{r['block_ms'] / 1000:>14.2f}{r['niivue_ms'] / 1000:>10.2f}"
              f"{r['niivue_block_ms'] / 1000:>10.2f}")
    print("interactive = a verdict clicked as soon as the images are shown has taken effect; longest block = the")
    print("longest main-thread task from the images to full resolution; 3D viewer = time to start NiiVue on all")
    print("panels when the reader asks (key v) and the longest block meanwhile.")
    tti = res["preview first"]["interactive_ms"] / 1000
    print(f"time to interactive (preview first): {tti:.2f} s; target <= {TARGET_S:.0f} s: "
          f"{'met' if tti <= TARGET_S else 'NOT met'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, int(sys.argv[2]) if len(sys.argv) > 2 else 256)
