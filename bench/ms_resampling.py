"""Thick-slice resampling variants of the MS workflow on TUNING pairs (issue 17).

Steps 1-2 (load, brain) of each pair are cached; steps 3-5 (register, bias, normalise) run per
variant ``resampling/interpolation`` (``MSConfig.resampling``: native | native_thick | halfway;
``MSConfig.resample_interpolation``: bspline | linear), then the detection steps 6-9 as in
``bench/ms_sweep.py``. Prints lesions found and false positives (peak score >= 0.1, with their
volume in mm^3) per pair and variant. Pairs: ``w<i>`` widened tuning seeds (100000 + i),
``o<i>`` original-style pairs on 3 mm slices with seeds 5000 + i (not the regression set's
1000-1029). Each variant's steps 1-5 are pickled in the sweep's format, so ``bench/ms_sweep.py``
can be pointed at them.

Usage: ``python bench/ms_resampling.py --pairs w0-8,o0-5 --variants halfway/linear,native/bspline``
"""

from __future__ import annotations

import argparse
import copy
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def pair_options(kind: str, i: int, voxel_mm: float) -> dict:
    from neurorad.phantom.cases import widened_ms_options

    if kind == "w":
        o = widened_ms_options(100_000 + i, negative=(i % 3 == 0))
    else:
        rng = np.random.default_rng(5000 + i)
        neg = i % 3 == 0
        o = dict(seed=5000 + i, n_stable=int(rng.integers(3, 9)), n_new=0 if neg else int(rng.integers(1, 5)),
                 n_enlarging=0 if neg else int(rng.integers(0, 3)), slice_thickness_mm=3.0,
                 misalign_deg=float(rng.uniform(0, 10)), misalign_mm=float(rng.uniform(0, 10)),
                 snr=float(rng.uniform(20, 40)), bias_strength=float(rng.uniform(0.1, 0.3)), scanner_scaling=True)
    o["in_plane_mm"] = voxel_mm
    return o


def steps_1_2(kind: str, i: int, voxel_mm: float, cache: Path) -> dict:
    from neurorad.phantom.cases import ms_pair
    from neurorad.pipelines import ms_lesions as ms

    p = cache / f"{kind}{i}_{voxel_mm:g}_12.pkl"
    if p.exists():
        return pickle.loads(p.read_bytes())
    opts = pair_options(kind, i, voxel_mm)
    case = ms_pair(**opts)
    ctx = ms.MSContext(ms.MSConfig(), cache, case.baseline_flair, case.followup_flair)
    ms.step_load(ctx)
    ms.step_brain(ctx)
    d = dict(ctx=ctx, truth=case.truth, lesions=case.case["lesions"], opts=opts)
    cache.mkdir(parents=True, exist_ok=True)
    p.write_bytes(pickle.dumps(d))
    return d


def steps_3_5(d: dict, variant: str) -> dict:
    """The sweep's cached-pair record for one resampling variant."""
    from neurorad.pipelines import ms_lesions as ms
    from neurorad.preprocess.transforms import resample

    ctx = copy.copy(d["ctx"])
    how, interp = variant.split("/")
    ctx.cfg = replace(ms.MSConfig(), resampling=how, resample_interpolation=interp)
    ms.step_register(ctx)
    ms.step_bias(ctx)
    ms.step_normalise(ctx)
    assert ctx.ref is not None
    return dict(bn=ctx.bn, fn=ctx.fn, brain=ctx.brain, sp=ctx.ref.spacing_mm, vox=ctx.ref.voxel_volume_mm3,
                tn=np.asarray(resample(d["truth"]["truth_new"], ctx.ref, ctx.Tf, "nearest").data),
                te=np.asarray(resample(d["truth"]["truth_enlarging"], ctx.ref, ctx.Tf, "nearest").data),
                lesions=d["lesions"], opts=d["opts"])


def _pairs(spec: str) -> list[tuple[str, int]]:
    out = []
    for part in spec.split(","):
        kind, rng = part[0], part[1:]
        a, _, b = rng.partition("-")
        out += [(kind, i) for i in range(int(a), int(b or a) + 1)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="w0-8,o0-5")
    ap.add_argument("--variants", default="halfway/linear,native/linear,halfway/bspline,native/bspline")
    ap.add_argument("--voxel-mm", type=float, default=1.5)
    ap.add_argument("--cache", type=Path, default=Path("bench/out/ms_resampling"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ms_benchmark import engine_config
    from ms_sweep import detect, score_case

    cfg = engine_config("classical", 0.02)  # the classical engine: the workflow default before 1.22.0, when the
    # variants were measured (detect() here is given no learned probability)
    for kind, i in _pairs(args.pairs):
        d = steps_1_2(kind, i, args.voxel_mm, args.cache)
        for v in args.variants.split(","):
            t0 = time.perf_counter()
            dd = steps_3_5(d, v)
            (args.cache / f"{kind}{i}_{args.voxel_mm:g}_{v.replace('/', '-')}.pkl").write_bytes(pickle.dumps(dd))
            lab, peaks = detect(dd, cfg)
            r = score_case(dd, lab, peaks, i)
            found = sum(sum(h["covered"] for h in le["hits"] if h["peak"] >= 0.1) >= 0.4 * le["voxels"]
                        for le in r["lesions"])
            fps = [int((lab == x["det"]).sum() * dd["vox"]) for x in r["detections"] if x["fp"] and x["peak"] >= 0.1]
            print(f"{kind}{i} slices {dd['opts']['slice_thickness_mm']} {v}: found {found}/{len(r['lesions'])}, "
                  f"FP at 0.1 (mm3) {fps} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
