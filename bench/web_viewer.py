"""Benchmark of the review viewer (prints figures; run: .venv/bin/python bench/web_viewer.py [repeats]).

Opens the study page in headless Chromium (Debian's, software WebGL via SwiftShader) from a
server on 127.0.0.1 and reads the page's own timings: WebGL set-up of the three NiiVue panels,
then fetching + decoding + uploading the volumes (baseline, follow-up twice, label overlay),
until the first synchronized frame. Two sizes in the same run: the test data (91x109x91, 2 mm)
and the issue's target, a 256^3 baseline/follow-up pair with overlay (target: < 2 s). The raw
transfer of the three files over HTTP is measured separately, as the floor.

Software GL on a shared CPU is far slower than a GPU browser; the figure a reader sees on a
workstation is the GPU one, so this bench bounds it from above.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, PASSWORD, LiveServer, build_env  # noqa: E402

#: data types as neurorad.pipelines.ms_lesions writes them (normalised float32 images, int16 labels)
PIPELINE_DTYPES = {"baseline.nii.gz": np.float32, "followup.nii.gz": np.float32, "new_lesions.nii.gz": np.int16}


def upscale_result(folder: Path, shape: tuple[int, int, int]) -> None:
    """Resample the result images to ``shape`` (linear for images, nearest for labels), stored
    with the MS workflow's data types (float32 images, int16 labels)."""
    for name, order in (("baseline.nii.gz", 1), ("followup.nii.gz", 1), ("new_lesions.nii.gz", 0)):
        img = nib.load(folder / name)
        data = np.asarray(img.dataobj, dtype=np.float32)
        factors = [t / s for t, s in zip(shape, data.shape, strict=True)]
        out = ndimage.zoom(data, factors, order=order).astype(PIPELINE_DTYPES[name])
        aff = img.affine.copy()
        aff[:3, :3] = aff[:3, :3] / np.array(factors)
        nib.save(nib.Nifti1Image(out, aff), folder / name)


DECODE_JS = """async (urls) => {
  const { NVImage } = await import("/web/static/dist/niivue.js");
  const t0 = performance.now();
  await Promise.all(urls.map((url) => NVImage.loadFromUrl({ url })));
  return performance.now() - t0;
}"""


def measure(env, repeats: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {"total_ms": [], "gl_ms": [], "volumes_ms": [], "http_ms": [], "decode_ms": [],
                                   "prep_ms": []}
    with LiveServer(env.app) as srv, sync_playwright() as p, tempfile.TemporaryDirectory() as prof:
        ctx = p.chromium.launch_persistent_context(prof, executable_path=str(CHROMIUM), headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 800})
        page = ctx.new_page()
        page.goto(srv.url + "/login")
        page.fill("#username", "rad")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#worklist")
        cookies = {c["name"]: c["value"] for c in ctx.cookies()}
        # once per result version: the server builds its display copies on the first request
        t0 = time.perf_counter()
        with httpx.Client(base_url=srv.url, cookies=cookies, timeout=300) as c:
            for name in ("baseline.nii.gz", "followup.nii.gz", "new_lesions.nii.gz"):
                c.get(f"/web/api/studies/{env.study_id}/files/{name}").raise_for_status()
        out["prep_ms"].append((time.perf_counter() - t0) * 1000)
        for _ in range(repeats):
            page.goto(f"{srv.url}/studies/{env.study_id}", wait_until="commit")
            page.wait_for_selector("body[data-ready='1']", state="attached", timeout=600_000)
            ds = page.evaluate("({...document.body.dataset})")
            out["total_ms"].append(float(ds["loadMs"]))
            out["gl_ms"].append(float(ds["glInitMs"]))
            out["volumes_ms"].append(float(ds["volumesMs"]))
            # The browser's CPU part alone (fetch + gunzip + NIfTI parse + RAS reorientation of the
            # three files the panels share), without WebGL: what remains on a GPU workstation.
            out["decode_ms"].append(page.evaluate(DECODE_JS, [f"/web/api/studies/{env.study_id}/files/{n}" for n in
                                                              ("baseline.nii.gz", "followup.nii.gz",
                                                               "new_lesions.nii.gz")]))
            t0 = time.perf_counter()
            with httpx.Client(base_url=srv.url, cookies=cookies) as c:
                for name in ("baseline.nii.gz", "followup.nii.gz", "new_lesions.nii.gz"):
                    c.get(f"/web/api/studies/{env.study_id}/files/{name}").raise_for_status()
            out["http_ms"].append((time.perf_counter() - t0) * 1000)
        ctx.close()
    return out


def main(repeats: int = 1) -> None:
    print(f"viewer load, headless Chromium + SwiftShader, median of {repeats} (ms)")
    print(f"{'case':<28}{'total':>8}{'webgl':>8}{'volumes':>9}{'decode':>8}{'http':>7}{'first GET':>10}")
    cases = (("91x109x91 (2 mm test)", None, True),
             ("256^3, files as stored", (256, 256, 256), False),
             ("256^3, display copies", (256, 256, 256), True))
    for label, shape, compact in cases:
        with tempfile.TemporaryDirectory() as tmp:
            env = build_env(Path(tmp) / "data")
            env.app.state.settings.viewer_display_copies = compact
            if shape:
                upscale_result(env.folder, shape)
            r = measure(env, repeats)
            med = {k: statistics.median(v) for k, v in r.items()}
            print(f"{label:<28}{med['total_ms']:>8.0f}{med['gl_ms']:>8.0f}{med['volumes_ms']:>9.0f}"
                  f"{med['decode_ms']:>8.0f}{med['http_ms']:>7.0f}{med['prep_ms']:>10.0f}")
            env.app.state.db.dispose()
    print("total = page start to first synchronized frame; webgl = 3 NiiVue contexts + shaders; volumes = load +")
    print("GPU upload (4 textures from 3 files); decode = the 3 files fetched and parsed without WebGL; http = raw")
    print("transfer of the 3 files. Target (issue 7): 256^3 pair with overlay < 2000 ms from localhost (GPU browser).")
    print("256^3 files as the MS workflow stores them (float32 images, int16 labels); 'display copies' = what the")
    print("server sends by default (int16 scaled images, uint8 labels, gzip 1). 'first GET' = the 3 files fetched once")
    print("before the page opens (with display copies: building them, once per result version; not in 'total').")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
