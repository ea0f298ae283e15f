"""Benchmark of the preprocess layer on the real Colin27 head (1 mm, 181x217x181).

Each task runs in its own subprocess, so its peak memory (``ru_maxrss`` of that process,
including model loading) and its time (the task alone, data loading excluded; first-call
library initialisation included) are measured independently. Prints one table and the Dice
figures of brain extraction against ``ch2bet > 0`` and its envelope.

    .venv/bin/python bench/preprocess.py            # everything (~3-5 min on 2 idle cores)
    .venv/bin/python bench/preprocess.py deepbet n4 # a subset
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r'''
import json, resource, sys, time
import numpy as np
from neurorad import resources
from neurorad.image.nifti import load_nifti
task, outdir = sys.argv[1], sys.argv[2]
head = load_nifti(resources.colin27_head())
head = head.with_data(np.asarray(head.data, dtype=np.float32))
extra = {}
if task.startswith("bet:"):
    from neurorad.preprocess.brain_extraction import get_extractor
    eng = get_extractor(task[4:])
    t0 = time.perf_counter(); m = eng.extract(head); sec = time.perf_counter() - t0
    np.save(f"{outdir}/{task[4:]}.npy", m.data)
    extra["weights_sha256"] = eng.weights_sha256[:16]
elif task.startswith("reg:"):
    from neurorad.preprocess.registration import register
    from neurorad.preprocess.transforms import AffineTransform, resample
    true = AffineTransform.from_euler((10.0, -8.0, 12.0), (15.0, -12.0, 8.0), center_mm=tuple(head.center_mm))
    moving = resample(head, head, true.inverse())
    rng = np.random.default_rng(0)
    moving = moving.with_data(moving.data + rng.normal(scale=5.0, size=moving.shape).astype(np.float32))
    brain = load_nifti(resources.colin27_brain()).data > 0
    pts = head.voxel_to_world(np.argwhere(brain)[::5])
    t0 = time.perf_counter(); r = register(head, moving, "rigid", task[4:]); sec = time.perf_counter() - t0
    extra["target_error_mm"] = round(float(np.linalg.norm(r.transform.apply(pts) - true.apply(pts), axis=1).mean()), 3)
    extra["nmi_after"] = round(r.nmi_after, 3)
elif task == "n4":
    from neurorad.preprocess.bias import n4_bias_correct
    t0 = time.perf_counter(); n4_bias_correct(head, shrink_factor=4); sec = time.perf_counter() - t0
    extra["shrink_factor"] = 4
else:
    raise SystemExit(f"unknown task {task}")
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"task": task, "seconds": round(sec, 2), "peak_rss_mb": round(peak_mb), **extra}))
'''

TASKS = {
    "deepbet": "bet:deepbet",
    "hdbet": "bet:hdbet",
    "robex": "bet:robex",
    "elastix": "reg:elastix",
    "sitk": "reg:sitk",
    "ants": "reg:ants",
    "n4": "n4",
}
ENVELOPE_RADIUS_VOX = 5


def run_task(task: str, outdir: str) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, task, outdir], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"task": task, "error": last[:150], "process_seconds": round(wall, 1)}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["process_seconds"] = round(wall, 1)
    return res


def main(names: list[str]) -> None:
    import numpy as np

    from neurorad import resources
    from neurorad.image.masks import dice
    from neurorad.image.nifti import load_nifti
    from neurorad.preprocess.brain_extraction import envelope, fuse_masks

    names = names or list(TASKS)
    rows = []
    with tempfile.TemporaryDirectory() as outdir:
        for n in names:
            print(f"running {n} ...", file=sys.stderr, flush=True)
            rows.append(run_task(TASKS[n], outdir))
        masks = {p.stem: np.load(p) for p in Path(outdir).glob("*.npy")}
    if {"deepbet", "hdbet", "robex"} <= set(masks):
        t0 = time.perf_counter()
        masks["consensus"] = fuse_masks([masks["deepbet"], masks["hdbet"], masks["robex"]], "majority")
        fuse_s = time.perf_counter() - t0
        masks["consensus-staple"] = fuse_masks([masks["deepbet"], masks["hdbet"], masks["robex"]], "staple")
        secs = sum(r["seconds"] for r in rows if r["task"] in ("bet:deepbet", "bet:hdbet", "bet:robex"))
        peak = max(r["peak_rss_mb"] for r in rows if r["task"] in ("bet:deepbet", "bet:hdbet", "bet:robex"))
        rows.append({"task": "bet:consensus", "seconds": round(secs + fuse_s, 2), "peak_rss_mb": peak,
                     "note": "sum of the three engines + majority vote (engines run one after another)"})

    print(f"\n{'task':<18}{'seconds':>9}{'peak MB':>9}  details")
    for r in rows:
        if "error" in r:
            print(f"{r['task']:<18}{'-':>9}{'-':>9}  not available: {r['error']}")
            continue
        det = {k: v for k, v in r.items() if k not in ("task", "seconds", "peak_rss_mb")}
        print(f"{r['task']:<18}{r['seconds']:>9.2f}{r['peak_rss_mb']:>9}  {det}")

    if masks:
        ref = load_nifti(resources.colin27_brain()).data > 0
        env = envelope(ref, ENVELOPE_RADIUS_VOX)
        print(f"\nBrain extraction on Colin27 (reference ch2bet>0: {ref.sum() / 1000:.0f} ml; envelope = closing "
              f"with a {ENVELOPE_RADIUS_VOX} mm ball + hole filling: {env.sum() / 1000:.0f} ml)")
        print(f"{'engine':<18}{'volume ml':>10}{'Dice':>8}{'Dice env':>10}")
        for k, m in masks.items():
            print(f"{k:<18}{m.sum() / 1000:>10.0f}{dice(m, ref):>8.4f}{dice(m, env):>10.4f}")
        keys = [k for k in ("deepbet", "hdbet", "robex") if k in masks]
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                print(f"agreement {a} vs {b}: Dice {dice(masks[a], masks[b]):.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
