"""Inference time and peak memory of each network engine on a 1 mm brain (256 x 256 x 176).

Issue 11's targets on this 2-core machine: a 3D network <= 10 s per volume, a 2D slice-wise network
<= 5 s per volume. Each engine is a registry model made here with random (untrained) weights of the
architecture and size the workflows use - speed does not depend on the weights - exported to ONNX
and run through the same ``NetworkSegmenter.predict`` path (working grid, sliding window with
Gaussian weighting, resampling back to the input grid), with torch and with ONNX Runtime in one run.
Peak memory is the growth of the process's maximum resident set size during the call (Linux
``ru_maxrss``), so run each engine in a fresh process (``--engine``) for a clean figure; the default
runs all engines in child processes.

    .venv/bin/python bench/segment.py                 # all engines, torch + onnx, 2 repeats
    .venv/bin/python bench/segment.py --repeats 1 --out bench/out/segment.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: name -> (architecture, features, spacing_mm, patch, slices, target seconds)
ENGINES = {
    "unet2d-wmh": ("unet2d", [16, 32, 64, 128, 256], [1.0, 1.0, 1.0], [256, 256], 1, 5.0),
    "unet25d-cmb": ("unet25d", [16, 32, 64, 128, 256], [1.0, 1.0, 1.0], [256, 256], 3, 5.0),
    "unet3d": ("unet3d", [16, 32, 64, 128, 256], [1.0, 1.0, 1.0], [128, 128, 128], 1, 10.0),
    "densevnet-brain": ("densevnet", [4, 8, 16], [3.0, 3.0, 3.0], [64, 80, 64], 1, 10.0),
}


def _make_model(name: str, folder: Path) -> Path:
    import torch

    from neurorad.segment.engine import save_weights
    from neurorad.segment.inference import InferenceSpec, PreprocessSpec
    from neurorad.segment.networks import ArchSpec, build_network
    from neurorad.segment.registry import finalize_folder

    arch_name, feats, spacing, patch, slices, _ = ENGINES[name]
    arch = ArchSpec(arch_name, 1, 2, tuple(feats), slices)
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    save_weights(build_network(arch), folder / "fold_0.pt")
    card = {"name": f"bench-{name}", "version": "0.0.0", "task": "benchmark (random weights)",
            "labels": {"0": "background", "1": "fg"}, "contrasts": ["t1"],
            "preprocessing": PreprocessSpec(tuple(spacing), "zscore").to_dict(),  # type: ignore[arg-type]
            "architecture": arch.to_dict(),
            "inference": InferenceSpec(tuple(patch), 0.5 if arch.spatial_dims == 3 else 0.0, False, 4).to_dict(),
            "training_data": "none", "validation": {}, "intended_use": "benchmark", "licence": "Apache-2.0"}
    finalize_folder(folder, {**card, "files": {}})
    return folder


def run_one(name: str, repeats: int) -> dict:
    """Build, export and time one engine in THIS process."""
    from neurorad.image.volume import Volume
    from neurorad.segment.engine import load_segmenter
    from neurorad.segment.onnx_engine import export_model_onnx

    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(100, 20, (256, 256, 176)).astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    with tempfile.TemporaryDirectory() as td:
        model = _make_model(name, Path(td) / "m")
        rep = export_model_onnx(model, repeats=1)
        out = {"engine": name, "architecture": ENGINES[name][0], "target_s": ENGINES[name][5],
               "onnx_export": {k: rep[k] for k in ("max_abs_diff", "torch_s", "onnx_s", "preferred_engine")}}
        for eng in ("torch", "onnx"):
            seg = load_segmenter(model, engine=eng)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = seg.predict([vol])
                times.append(time.perf_counter() - t0)
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            assert res.probabilities.spatial_shape == vol.spatial_shape
            out[eng] = {"seconds_best": round(min(times), 2), "seconds_all": [round(t, 2) for t in times],
                        "peak_rss_mb": round(peak_kb / 1024, 1), "rss_growth_mb": round((peak_kb - before) / 1024, 1),
                        "stages_s": res.record["seconds"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=sorted(ENGINES), help="run one engine in this process")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.engine:
        print(json.dumps(run_one(a.engine, a.repeats)))
        return
    results = []
    for name in ENGINES:
        p = subprocess.run([sys.executable, __file__, "--engine", name, "--repeats", str(a.repeats)],
                           capture_output=True, text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        results.append(r)
        t, o = r["torch"], r["onnx"]
        ok = "meets" if min(t["seconds_best"], o["seconds_best"]) <= r["target_s"] else "MISSES"
        print(f"{name:16s} torch {t['seconds_best']:6.2f} s ({t['peak_rss_mb']:6.0f} MB peak)  "
              f"onnx {o['seconds_best']:6.2f} s ({o['peak_rss_mb']:6.0f} MB peak)  target {r['target_s']:.0f} s: {ok}",
              flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"volume": [256, 256, 176], "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
