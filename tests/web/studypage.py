"""A study page without the data plane: the real template, JS, CSS, NiiVue bundle and display copies,
served on 127.0.0.1 by a small threaded HTTP server, with a phantom whose answer is known.

Used by the page tests (early clicks, reopening a decided study, laterality) and by
``bench/web_viewer.py`` (time to interactive of a 256^3 pair). The decision endpoint records
what the page sends; the decision rules themselves are tested against the real server.

Phantom (RAS+ mm; stored LAS like many DICOM conversions, so the viewer must reorient): finding 1
"new" in the LEFT hemisphere (x = -40 mm), finding 2 "new" small in the right hemisphere, finding 3
"enlarging" in the left hemisphere, posterior. Images are normalised to 0-1 (window must not read
"0 - 1").
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import nibabel as nib
import numpy as np

from neurorad.server.web import review as rv
from neurorad.server.web.display import display_copy
from neurorad.server.web.router import DIST_DIR, STATIC_DIR, STATIC_URL, templates

KIND_COLOURS = {"new": "#ff2020", "enlarging": "#ffd000"}
KIND_LABELS = {"new": "new", "enlarging": "enlarging"}
#: (id, kind, centre RAS mm, radius mm, baseline radius mm)
FINDINGS = [(1, "new", (-40.0, 10.0, 10.0), 6.0, 0.0), (2, "new", (30.0, 0.0, 10.0), 2.5, 0.0),
            (3, "enlarging", (-30.0, -40.0, 10.0), 6.0, 3.5)]
STUDY_ID = 7


def _grid(shape: tuple[int, int, int], spacing_mm: float) -> np.ndarray:
    aff = np.diag([-spacing_mm, spacing_mm, spacing_mm, 1.0])  # LAS storage
    aff[:3, 3] = [(shape[0] - 1) / 2 * spacing_mm, -(shape[1] - 1) / 2 * spacing_mm, -(shape[2] - 1) / 2 * spacing_mm]
    return aff


def make_phantom(folder: Path, shape: tuple[int, int, int] = (96, 112, 80), spacing_mm: float = 2.0,
                 seed: int = 0) -> dict:
    """Baseline, follow-up (float32, 0-1) and a label map (int16) on one grid; returns the truth."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    aff = _grid(shape, spacing_mm)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = (aff[:3, :3] @ ijk + aff[:3, 3:4]).reshape(3, *shape)
    semi = np.array([70.0, 90.0, 65.0])
    r2 = sum((xyz[i] / semi[i]) ** 2 for i in range(3))
    brain = (r2 <= 1).astype(np.float32)
    base = brain * 0.45 + rng.normal(0, 0.02, shape).astype(np.float32) * brain
    fu = base.copy()
    labels = np.zeros(shape, np.int16)
    for fid, _kind, c, r, r0 in FINDINGS:
        d2 = sum((xyz[i] - c[i]) ** 2 for i in range(3))
        labels[d2 <= r * r] = fid
        fu[d2 <= r * r] = 0.9
        if r0:
            base[d2 <= r0 * r0] = 0.9
    for name, arr in (("baseline.nii.gz", base), ("followup.nii.gz", fu)):
        nib.save(nib.Nifti1Image(np.clip(arr, 0, 1).astype(np.float32), aff), folder / name)
    nib.save(nib.Nifti1Image(labels, aff), folder / "labels.nii.gz")
    voxel_ml = spacing_mm ** 3 / 1000.0
    return {"volumes_ml": {fid: float((labels == fid).sum()) * voxel_ml for fid, *_ in FINDINGS}, "affine": aff}


def page_data(folder: Path, truth: dict, decided: dict | None = None, decisions: list | None = None,
              preview: bool = True) -> dict:
    """The study page's data (the keys of :func:`neurorad.server.web.review.build_review`)."""

    def url(name: str) -> str:
        return f"/web/api/studies/{STUDY_ID}/files/{name}?run=1"

    findings = [{"id": fid, "kind": kind, "kind_label": KIND_LABELS[kind], "label": fid,
                 "volume_ml": truth["volumes_ml"][fid], "location": "", "x_mm": c[0], "y_mm": c[1], "z_mm": c[2],
                 "measurements": [], "score": None} for fid, kind, c, _r, _r0 in FINDINGS]
    panels = [{"title": "Baseline FLAIR (skull-stripped, registered)", "background": "baseline",
               "url": url("baseline.nii.gz"), "overlay": False},
              {"title": "Follow-up FLAIR (skull-stripped, registered)", "background": "followup",
               "url": url("followup.nii.gz"), "overlay": False},
              {"title": "Follow-up FLAIR + findings", "background": "followup", "url": url("followup.nii.gz"),
               "overlay": True}]
    return {
        "workflow": "test-followup", "workflow_title": "Follow-up (test)", "workflow_version": "1.0.0",
        "result_version": 11, "summary": "3 findings", "finding": "3 findings",
        "panels": panels, "radiological": True, "kind_labels": KIND_LABELS,
        "overlay": {"url": url("labels.nii.gz"), "opacity": 0.8, "kind_colours": KIND_COLOURS,
                    "labels": {str(fid): kind for fid, kind, *_ in FINDINGS}},
        "findings": findings, "alarms": 0, "alarm_messages": [],
        "form": {"fields": [{"name": "score", "label": "Quality score", "kind": "choice", "required": True, "help": "",
                             "choices": [{"value": str(i), "label": f"{i} {n}"} for i, n in
                                         enumerate(("Perfect", "Good", "Fair", "Poor", "Terrible"), 1)]}],
                 "finding_verdicts": [{"value": "keep", "label": "keep"}, {"value": "discard", "label": "discard"}],
                 "discard_verdicts": ["discard"], "allow_missed": True, "comment": True, "timepoints": []},
        "timepoints_required": [],
        "decided": decided, "decisions": decisions or ([decided] if decided else []),
        "draft_report_url": f"/web/api/studies/{STUDY_ID}/reports/1?fmt=html&run=1",
        "state": "needs_review", "can_decide": True, "run_id": 1,
        "decision_url": f"/web/api/studies/{STUDY_ID}/decision",
        "preview_level": "preview" if preview else None,
        "exam_dates": [{"label": "baseline", "date": "2025-03-02"}, {"label": "follow-up", "date": "2026-01-20"}],
    }


def render_page(data: dict) -> str:
    tmpl = templates.get_template("study.html")
    return tmpl.render(user=None, csrf_token="tok", base="", static_url=STATIC_URL, logout_url="/logout",
                       study_id=STUDY_ID, review=data, review_json=rv.json_for_script(data))


@dataclass
class PageServer:
    """Serves one study page on 127.0.0.1; ``image_delay_s`` delays every NIfTI answer, ``css_delay_s``
    the stylesheet (a page drawn before its CSS arrives, as on a loaded server)."""

    folder: Path
    data: dict
    image_delay_s: float = 0.0
    css_delay_s: float = 0.0
    posts: list = field(default_factory=list)

    def __enter__(self) -> PageServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:  # quiet
                pass

            def _send(self, body: bytes, ctype: str, code: int = 200) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                u = urlparse(self.path)
                if u.path == f"/studies/{STUDY_ID}":
                    return self._send(render_page(owner.data).encode(), "text/html; charset=utf-8")
                if u.path.startswith(STATIC_URL + "/"):
                    name = u.path[len(STATIC_URL) + 1:]
                    p = DIST_DIR / name[5:] if name.startswith("dist/") else STATIC_DIR / name
                    if p.is_file():
                        ctype = "text/javascript" if p.suffix == ".js" else "text/css"
                        if p.suffix == ".css":
                            time.sleep(owner.css_delay_s)
                        return self._send(p.read_bytes(), ctype)
                prefix = f"/web/api/studies/{STUDY_ID}/files/"
                if u.path.startswith(prefix):
                    name = u.path[len(prefix):]
                    src = owner.folder / name
                    if src.is_file():
                        time.sleep(owner.image_delay_s)
                        preview = parse_qs(u.query).get("level") == ["preview"]
                        path = display_copy(src, owner.folder / "cache", is_label=name == "labels.nii.gz",
                                            preview=preview)
                        return self._send(path.read_bytes(), "application/octet-stream")
                self._send(b"not found", "text/plain", 404)

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.posts.append(body)
                n = 1 + len(owner.data.get("decisions") or []) + len(owner.posts)
                out = {"decision": body["decision"], "report_version": n, "delivery": "stored",
                       "report_url": f"/web/api/studies/{STUDY_ID}/reports/{n}?fmt=html&run=1"}
                self._send(json.dumps(out).encode(), "application/json")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/studies/{STUDY_ID}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


#: Clicks "discard" of finding 2 from inside the page the moment the images are shown (a reader's
#: instant click, without the test driver's polling latency, which is seconds on a loaded machine).
CLICK_AT_READY_JS = """
new MutationObserver((_, obs) => {
  if (document.body && document.body.dataset.ready === "1") {
    obs.disconnect();
    document.querySelector('input[name="cand-2"][value="discard"]').click();
  }
}).observe(document, { attributes: true, subtree: true, attributeFilter: ["data-ready"] });
"""


def measure_page(browser, srv: PageServer, click_in_page: bool = False, start_niivue: bool = False
                 ) -> dict[str, float]:
    """One page load, times in ms since navigation start (``performance.now()``'s origin): form ready,
    images shown, interactive (a mouse click on a verdict sent as soon as the images are seen has been
    applied, by the page's own clock), full resolution, longest main-thread block after the images.
    With ``start_niivue`` the reader then starts the 3D viewer (key v): ``niivue_ms`` is how long it
    took and ``niivue_block_ms`` the longest block meanwhile."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    if click_in_page:
        page.add_init_script(CLICK_AT_READY_JS)
    t0 = time.perf_counter()
    page.goto(srv.url, wait_until="commit")
    radio = page.locator('input[name="cand-2"][value="discard"]')
    radio.wait_for(state="attached", timeout=600_000)
    page.wait_for_selector("body[data-form-ready='1']", state="attached", timeout=600_000)
    box = None if click_in_page else radio.bounding_box(timeout=600_000)
    page.wait_for_selector("body[data-ready='1']", state="attached", timeout=600_000)
    # a mouse click right after the images are shown (no waiting for the page's consent, as a reader's
    # click): interactive when the page has applied it (its own clock: data-last-verdict-ms)
    if box is not None:
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector('#lesions tr[data-lesion="2"][data-verdict="discard"]', state="attached",
                           timeout=600_000)
    interactive_ms = float(page.evaluate("document.body.dataset.lastVerdictMs"))
    wall_ms = (time.perf_counter() - t0) * 1000
    page.wait_for_selector("body[data-detail='full']", state="attached", timeout=600_000)
    ds = page.evaluate("({...document.body.dataset})")
    out = {"form_ms": float(ds["formReadyMs"]), "shown_ms": float(ds["loadMs"]), "interactive_ms": interactive_ms,
           "full_ms": float(ds.get("fullMs", ds["loadMs"])), "wall_ms": wall_ms,
           "block_ms": float(ds.get("maxBlockMs", "0"))}
    if start_niivue:
        page.wait_for_timeout(500)
        t = float(page.evaluate("performance.now()"))
        page.keyboard.press("v")
        page.wait_for_selector("body[data-engine='niivue']", state="attached", timeout=600_000)
        ds = page.evaluate("({...document.body.dataset})")
        out["niivue_ms"] = float(page.evaluate("performance.now()")) - t
        out["niivue_block_ms"] = float(ds.get("maxBlockMs", "0"))
    page.close()
    return out
