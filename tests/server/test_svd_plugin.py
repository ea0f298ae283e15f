"""The ``wmh`` plug-in end to end through the generic server path: a FLAIR study in (C-STORE bytes),
routed by series class to ``wmh``, run with the classical engine, reviewed with the workflow's own
4-grade form (one finding discarded), reported, and SEG/SR delivered re-identified to the PACS.

Small on purpose (the 45 s CI budget of the SVD work): 44 axial slices of Colin27 at 4 x 4 x 3 mm with
two bright lesions painted into the deep white matter; the platform code never names the workflow."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import ndimage

from neurorad import resources
from tests.server.dicomdata import IDENTITY, write_series
from tests.server.test_flow import Sink, _app, _only_run, _run_jobs, _web_session

N_SLICES, SIZE = 44, 64  # 3 mm slices over 132 mm, 4 mm pixels: the whole brain at its true shape


def _colin27_at_4x4x3_mm() -> np.ndarray:
    """(N_SLICES, SIZE, SIZE) axial slices of Colin27 (1 mm) taken every 3 mm and every 4th pixel, so
    the series' 4 x 4 x 3 mm geometry is the anatomy's (the atlas registration checks its scales)."""
    data = np.asarray(nib.load(str(resources.colin27_head())).dataobj, dtype=np.float32)
    k0 = data.shape[2] // 2 - 3 * N_SLICES // 2 + 10
    out = []
    for k in range(k0, k0 + 3 * N_SLICES, 3):
        sl = np.rot90(data[:, :, k])
        pad = np.zeros((4 * SIZE, 4 * SIZE), np.float32)
        pad[: sl.shape[0], : sl.shape[1]] = sl
        out.append(pad[::4, ::4])
    arr = np.stack(out)
    return arr / max(float(arr.max()), 1.0) * 3000.0


def _flair_with_lesions() -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Colin27 slices with two 3 x 3 x 2 voxel blobs at twice the white-matter level, placed in the
    eroded white matter (the brightest tissue of this T1) of the central slices."""
    px = _colin27_at_4x4x3_mm()
    centre = np.zeros(px.shape, bool)
    centre[N_SLICES // 2 - 4:N_SLICES // 2 + 4, SIZE // 4:3 * SIZE // 4, SIZE // 4:3 * SIZE // 4] = True
    wm_level = float(np.percentile(px[centre], 90))
    wm = ndimage.binary_erosion((px > 0.9 * wm_level) & centre, iterations=2)
    pts = np.argwhere(wm)
    assert len(pts) >= 2, "no deep white matter found in the Colin27 slices"
    a = pts[0]
    b = pts[np.argmax(np.abs(pts - a).sum(axis=1))]  # far from the first: two separate lesions
    for k, i, j in (a, b):
        px[k:k + 2, i - 1:i + 2, j - 1:j + 2] = 2.0 * wm_level
    return np.clip(px, 0, 4095).astype(np.uint16), [tuple(a), tuple(b)]


@pytest.mark.slow
def test_wmh_study_is_routed_run_reviewed_with_its_grade_form_and_delivered(settings, tmp_path):
    sink = Sink()
    try:
        settings.workflows = ["wmh"]
        settings.workflow_options = {"wmh": {"engine": "classical"}}
        app = _app(settings, sink)
        pixels, _ = _flair_with_lesions()
        for f in write_series(tmp_path / "flair", "FLAIR", n_slices=N_SLICES, size=SIZE, pixels=pixels):
            assert app.state.plane.ingest_bytes(f.read_bytes(), "MOD").stored
        assert len(app.state.plane.complete_quiet_studies()) == 1
        _run_jobs(app)
        tok = app.state.tok
        with TestClient(app) as client:
            sid, d, run = _only_run(client, app)
            assert run["workflow"] == "wmh" and run["state"] == "needs_review", run
            c, csrf = _web_session(app)
            page = c.get(f"/web/api/studies/{sid}/review").json()
            assert [p["title"] for p in page["panels"]] == ["FLAIR with WMH"]
            (grade,) = page["form"]["fields"]
            assert grade["name"] == "grade" and len(grade["choices"]) == 4  # Shan et al.'s 4-grade scale
            findings = page["findings"]
            assert len(findings) >= 2, findings  # both painted lesions found
            assert {f["kind_label"] for f in findings} <= {"Periventricular WMH", "Deep WMH"}
            vols = {f["id"]: f["volume_ml"] for f in findings}
            # the wmh form: a grade outside the scale is refused, a valid one accepted
            drop = max(vols)
            body = {"result_version": run["result_version"], "decision": "ACCEPTABLE", "values": {"grade": "9"},
                    "verdicts": [{"finding_id": drop, "verdict": "discard"}]}
            r = client.post(f"/api/studies/{sid}/review", json=body, headers=tok["radiologist"])
            assert r.status_code == 422, r.text
            body["values"] = {"grade": "3"}
            r = c.post(f"/web/api/studies/{sid}/decision", json=body, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["discarded"] == [drop] and sorted(out["kept"]) == sorted(set(vols) - {drop})
            html = c.get(out["report_url"]).text
            kept_ml = sum(v for k, v in vols.items() if k != drop)
            assert "WMH" in html or "hyperintens" in html
            _run_jobs(app)
            d = client.get(f"/api/studies/{sid}", headers=tok["technologist"]).json()
            assert d["state"] == "delivered" and d["runs"][0]["state"] == "delivered", d
        got = {str(ds.Modality): ds for ds in sink.received}
        assert {"SEG", "SR"} <= set(got), sorted(got)
        for ds in sink.received:  # re-identified for the PACS
            assert ds.PatientID == IDENTITY["PatientID"]
        assert len(got["SEG"].SegmentSequence) == len(vols) - 1  # the discarded lesion is not delivered
        assert kept_ml > 0
    finally:
        sink.stop()
