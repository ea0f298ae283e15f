"""FROC sweep of the classical MS engine's operating point on widened TUNING phantoms.

The tuning pairs (``widened_ms_options(100000 + i)``, seeds never used by the benchmark's
evaluation set) are run once through steps 1-5 (load .. normalise) and cached; the detection
steps 6-9 then run with ``post.min_peak_score`` lowered to ``--floor``, every detection keeps
its peak score, and the FROC (lesion sensitivity vs false positives per patient, a lesion found
when detections cover >= 40% of it in the common space) is read off by raising the threshold.
The chosen point is the most sensitive one with <= ``--max-fp`` FP per patient (a margin under
the 0.5 target); it is printed as the candidate step's ``z_at_core`` / ``rel_at_core`` (score 0.1,
the regional workflow's core threshold, moved to where the chosen score was).

Usage: ``python bench/ms_sweep.py --cases 1-10 --voxel-mm 1.5 [--engine global] [--cache bench/out/ms_sweep]``
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np


def _indices(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def prepare(i: int, voxel_mm: float, cache: Path) -> Path:
    """Steps 1-5 of tuning pair ``i`` (cached) with its truth moved into the common space."""
    path = cache / f"tuning_{i}_{voxel_mm:g}.pkl"
    if path.exists():
        return path
    from neurorad.phantom.cases import ms_pair, widened_ms_options
    from neurorad.pipelines import ms_lesions as ms
    from neurorad.preprocess.transforms import resample

    opts = widened_ms_options(100_000 + i, negative=(i % 3 == 0))
    opts["in_plane_mm"] = voxel_mm
    case = ms_pair(**opts)
    ctx = ms.MSContext(ms.MSConfig(), cache, case.baseline_flair, case.followup_flair)
    for step in ms.STEPS[:5]:
        step.run(ctx)
    assert ctx.ref is not None
    d = dict(bn=ctx.bn, fn=ctx.fn, brain=ctx.brain, sp=ctx.ref.spacing_mm, vox=ctx.ref.voxel_volume_mm3,
             tn=np.asarray(resample(case.truth["truth_new"], ctx.ref, ctx.Tf, "nearest").data),
             te=np.asarray(resample(case.truth["truth_enlarging"], ctx.ref, ctx.Tf, "nearest").data),
             lesions=case.case["lesions"], opts=opts)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(d))
    return path


def detect(d: dict, cfg) -> tuple[np.ndarray, list[float]]:  # noqa: ANN001 - MSConfig
    """Steps 6-9 on a cached pair: label map and each label's peak score."""
    from scipy import ndimage

    from neurorad.segment import ms_difference as md

    c = md.candidate_score(d["bn"], d["fn"], d["brain"], d["sp"], cfg.candidate)
    lab, n = md.binarise_components(c.score, d["vox"], cfg.post)
    lab0, n0 = lab, n
    lab, n, dec = md.false_positive_reduction(lab, n, d["bn"], d["fn"], d["brain"], d["sp"], c.sigma, c.brain_median,
                                              c.brain_sigma, cfg.fp, difference=c.difference,
                                              tissue_level=c.tissue_level, score=c.score)
    base = md.baseline_lesion_mask(d["bn"], d["brain"], d["sp"], c.brain_median, c.brain_sigma, cfg.classify)
    lab, n, _ = md.rescue_grown_enlarging(lab0, n0, dec, d["bn"], d["fn"], base, c.tissue_level, d["sp"],
                                          cfg.classify)
    kinds = md.classify_new_enlarging(lab, n, base, d["sp"], cfg.classify)
    lab, n, kinds, _ = md.drop_unchanged_enlarging(lab, n, kinds, d["bn"], d["fn"], base, c.tissue_level, d["sp"],
                                                   cfg.classify)
    peaks = [float(p) for p in np.atleast_1d(ndimage.maximum(c.score, lab, np.arange(1, n + 1)))] if n else []
    lab, _ = md.grow_enlarging(lab, n, kinds, d["fn"], base, d["brain"], d["sp"], c.brain_median, c.brain_sigma,
                               cfg.classify)
    lab = md.delineate(lab, n, kinds, c.difference, cfg.classify, d["fn"], c.tissue_level)
    return lab, peaks


def score_case(d: dict, lab: np.ndarray, peaks: list[float], case_id: int) -> dict:
    """The benchmark's per-case record (common space): lesions with per-detection coverage."""
    truth = (d["tn"] > 0) | (d["te"] > 0)
    lesions = []
    for tmap in (d["tn"], d["te"]):
        for lid in np.unique(tmap[tmap > 0]):
            m = tmap == lid
            hits = [int(h) for h in np.unique(lab[m]) if h > 0]
            lesions.append({"id": int(lid), "voxels": int(m.sum()),
                            "hits": [{"det": h, "peak": peaks[h - 1], "covered": int(np.count_nonzero(lab[m] == h))}
                                     for h in hits]})
    dets = [{"det": h, "peak": peaks[h - 1], "fp": not bool(truth[lab == h].any())} for h in range(1, len(peaks) + 1)]
    return {"case": case_id, "truth_active": bool(lesions), "lesions": lesions, "detections": dets}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="1-11", help="tuning pair indices, e.g. 1-11 or 1,2,5")
    ap.add_argument("--voxel-mm", type=float, default=1.5)
    ap.add_argument("--floor", type=float, default=0.02)
    ap.add_argument("--max-fp", type=float, default=0.3)
    ap.add_argument("--cache", type=Path, default=Path("bench/out/ms_sweep"))
    ap.add_argument("--engine", default="default", choices=["default", "global"],
                    help="global: the classical engine before issue 17 (for its FROC on the same pairs)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ms_benchmark import choose_operating_point, core_thresholds, engine_config, operating_point

    from neurorad.pipelines.ms_lesions import MSConfig

    cfg = engine_config(args.engine, args.floor)
    results = []
    for i in _indices(args.cases):
        d = pickle.loads(prepare(i, args.voxel_mm, args.cache).read_bytes())
        lab, peaks = detect(d, cfg)
        results.append(score_case(d, lab, peaks, i))
        print(f"tuning pair {i}: {len(results[-1]['lesions'])} lesions, {len(peaks)} detections", flush=True)
    grid = np.geomspace(args.floor, 0.9, 30)
    froc = [operating_point(results, float(t)) for t in grid]
    best = choose_operating_point(results, args.max_fp, args.floor)
    out = {"pairs": len(results), "froc": [{k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()}
                                           for p in froc],
           "configured_0.1": operating_point(results, 0.1), "chosen": best,
           "chosen_core_thresholds": core_thresholds(best["threshold"], MSConfig().candidate)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
