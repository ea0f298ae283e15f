"""Inference time and peak memory of each network engine on a 1 mm brain (256 x 256 x 176).

Issue 11's targets on this 2-core machine: a 3D network <= 10 s per volume, a 2D slice-wise network
<= 5 s per volume. Each engine is a registry model made here with random (untrained) weights of the
architecture and size the workflows use - speed does not depend on the weights - exported to ONNX
and run through the same ``NetworkSegmenter.predict`` path (working grid, sliding window with
Gaussian weighting, resampling back to the input grid), with torch (float32), ONNX Runtime and, on a
CPU with native bfloat16 (AVX512-BF16 / AMX), torch-bf16 in one run. The bfloat16 row also gives its
agreement with float32 on the timed volume: the largest class-probability difference and the Dice
of the two arg-max foregrounds (1.0 = the same mask).
Peak memory is the growth of the process's maximum resident set size during the call (Linux
``ru_maxrss``), so run each engine in a fresh process (``--engine``) for a clean figure; the default
runs all engines in child processes.

    .venv/bin/python bench/segment.py                 # all engines, torch + onnx, 2 repeats
    .venv/bin/python bench/segment.py --repeats 1 --out bench/out/segment.json
    sh -c 'echo -20 > /proc/self/autogroup; exec .venv/bin/python bench/segment.py'   # priority on a shared machine

The shipped WMH / CMB starters run on 176 slices of 384 x 384 (the papers' grid), as their workflows do.

``--volume head`` (default) is a real head with its zero background: Colin27 (181 x 217 x 181, 1 mm)
centred in the 256 x 256 x 176 (or 384 x 384 x 176) field of view, 176 of its 181 axial slices kept;
inference then crops to the non-zero box as nnU-Net does (``inference.foreground_box``).
``--volume noise`` fills the whole field of view with Gaussian noise (no background: the crop does
nothing), the bench's volume before the crop was added.
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
    # the same 3D U-Net at half width on a 1.5 mm working grid (16x fewer operations per volume)
    "unet3d-half-1.5mm": ("unet3d", [8, 16, 32, 64, 128], [1.5, 1.5, 1.5], [128, 128, 128], 1, 10.0),
    "densevnet-brain": ("densevnet", [4, 8, 16], [3.0, 3.0, 3.0], [64, 80, 64], 1, 10.0),
}
#: shipped starter models (their trained weights and cards), run as the WMH / CMB workflows run them:
#: the 1 mm brain's 176 axial slices resized to the papers' 384 x 384 (issue 13: target 10 s per volume)
SHIPPED = {"wmh-unet2d (shipped)": ("wmh-unet2d", 10.0), "cmb-unet25d (shipped)": ("cmb-unet25d", 10.0)}


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
            # 3D: one window per forward pass (4 at a time was no faster on 2 cores and held 2.3x the memory)
            "inference": InferenceSpec(tuple(patch), 0.5 if arch.spatial_dims == 3 else 0.0, False,
                                       1 if arch.spatial_dims == 3 else 4).to_dict(),
            "training_data": "none", "validation": {}, "intended_use": "benchmark", "licence": "Apache-2.0"}
    finalize_folder(folder, {**card, "files": {}})
    return folder


def bench_volume(kind: str, shape: tuple[int, int, int]):  # noqa: ANN201
    """The timed volume (module docstring): ``noise`` or ``head`` (Colin27 centred, zero background)."""
    from neurorad import resources
    from neurorad.image.nifti import load_nifti
    from neurorad.image.volume import Volume

    if kind == "noise":
        rng = np.random.default_rng(0)
        return Volume(rng.normal(100, 20, shape).astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    head = np.asarray(load_nifti(resources.colin27_head()).data, np.float32)
    nz = np.flatnonzero(head.any(axis=(0, 1)))
    z0 = max(0, min(int(nz[-1]) + 1 - shape[2], int(nz[0])))  # the non-empty slices, from the lowest
    head = head[:shape[0], :shape[1], z0:z0 + shape[2]]
    out = np.zeros(shape, np.float32)
    off = [(n - h) // 2 for n, h in zip(shape, head.shape, strict=True)]
    out[off[0]:off[0] + head.shape[0], off[1]:off[1] + head.shape[1], off[2]:off[2] + head.shape[2]] = head
    return Volume(out, np.diag([1.0, 1.0, 1.0, 1.0]))


def run_one(name: str, repeats: int, volume: str = "head") -> dict:
    """Build (or copy the shipped model), export and time one engine in THIS process."""
    import shutil

    import torch

    from neurorad.segment.engine import load_segmenter
    from neurorad.segment.onnx_engine import export_model_onnx
    from neurorad.segment.registry import SHIPPED_ROOT

    shape = (384, 384, 176) if name in SHIPPED else (256, 256, 176)
    vol = bench_volume(volume, shape)
    with tempfile.TemporaryDirectory() as td:
        if name in SHIPPED:
            model = Path(td) / "m"
            shutil.copytree(SHIPPED_ROOT / SHIPPED[name][0], model)
            arch, target = SHIPPED[name][0], SHIPPED[name][1]
        else:
            model = _make_model(name, Path(td) / "m")
            arch, target = ENGINES[name][0], ENGINES[name][5]
        rep = export_model_onnx(model, repeats=1)
        out = {"engine": name, "architecture": arch, "target_s": target, "volume": list(shape), "content": volume,
               "torch_threads": torch.get_num_threads(),
               "onnx_export": {k: rep[k] for k in ("max_abs_diff", "torch_s", "onnx_s", "bf16_s", "bf16_max_prob_diff",
                                                   "bf16_argmax_agreement", "bf16_accepted", "preferred_engine",
                                                   "fallback_engine") if k in rep}}
        from neurorad.segment.engine import bf16_supported

        ref = None
        for eng in ("torch", "onnx", *(("torch-bf16",) if bf16_supported() else ())):
            seg = load_segmenter(model, engine=eng)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            times, cpus = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                res = seg.predict([vol])
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            assert res.probabilities.spatial_shape == vol.spatial_shape
            out[eng] = {"seconds_best": round(min(times), 2), "seconds_all": [round(t, 2) for t in times],
                        "cpu_seconds_best": round(min(cpus), 2),
                        "peak_rss_mb": round(peak_kb / 1024, 1), "rss_growth_mb": round((peak_kb - before) / 1024, 1),
                        "stages_s": res.record["seconds"]}
            prob = np.asarray(res.probabilities.data)
            if ref is None:
                ref = prob
            elif eng == "torch-bf16":
                fg, fg_ref = prob.argmax(-1) > 0, ref.argmax(-1) > 0
                out[eng]["max_prob_diff_vs_float32"] = round(float(np.abs(prob - ref).max()), 5)
                out[eng]["foreground_dice_vs_float32"] = round(
                    float(2 * (fg & fg_ref).sum() / max(1, fg.sum() + fg_ref.sum())), 6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=sorted([*ENGINES, *SHIPPED]), help="run one engine in this process")
    ap.add_argument("--engines", help="comma-separated subset (default: all)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--volume", choices=("head", "noise"), default="head",
                    help="head: Colin27 with its zero background (default); noise: the whole field of view noise")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.engine:
        print(json.dumps(run_one(a.engine, a.repeats, a.volume)))
        return
    results = []
    names = a.engines.split(",") if a.engines else [*ENGINES, *SHIPPED]
    print(f"volume: {a.volume}; load average before: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    for name in names:
        p = subprocess.run([sys.executable, __file__, "--engine", name, "--repeats", str(a.repeats),
                            "--volume", a.volume],
                           capture_output=True, text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        results.append(r)
        auto = r["onnx_export"]["preferred_engine"]  # what engine="auto" (the default) runs
        ok = ("meets" if r[auto]["seconds_best"] <= r["target_s"] else "MISSES") + f" with the default ({auto})"
        cols = "  ".join(f"{e} {r[e]['seconds_best']:6.2f} s (cpu {r[e]['cpu_seconds_best']:6.1f} s, "
                         f"{r[e]['peak_rss_mb']:5.0f} MB peak)" for e in ("torch", "onnx", "torch-bf16") if e in r)
        agree = (f"  bf16 vs float32: max dp {r['torch-bf16']['max_prob_diff_vs_float32']}, fg Dice "
                 f"{r['torch-bf16']['foreground_dice_vs_float32']}" if "torch-bf16" in r else "")
        print(f"{name:22s} {cols}  target {r['target_s']:.0f} s: {ok}{agree}", flush=True)
    load = Path("/proc/loadavg").read_text().strip()
    print(f"load average after: {load}  (2-core machine shared with other work: figures are loaded)")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"volume": [256, 256, 176], "content": a.volume, "loadavg_after": load,
                                     "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
