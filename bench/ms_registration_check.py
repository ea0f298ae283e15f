"""Does the MS workflow's registration check tell a registered pair from a misregistered one?

For each tuning pair the workflow's steps 1-5 run (load .. normalise; the absolute NMI floor off, so no pair
is refused), then both similarity measures are taken at the pose the registration found and at poses moved
off it (shifts of 3, 6 and 12 mm; rotations of 5, 10 and 20 degrees about the image centre):

* ``nmi``: normalised mutual information (``preprocess.registration.normalized_mutual_information``, 64
  bins, inside the Otsu foreground of the baseline, as the registration's own check computes it) of the
  skull-stripped pair in the common space, before bias correction;
* ``r``: the workflow's registration check of step 5 (``smoothed_correlation``: Pearson r of the bias-corrected,
  normalised pair smoothed to 4 mm FWHM inside the brain; refused below ``MSConfig.min_registration_correlation``).

A useful check has every registered value above every misregistered one. Prints one row per pair and a
summary (lowest registered value, highest misregistered value per measure). Pairs: widened tuning pairs
(``ms_benchmark.case_spec(i, phantom='widened', tuning=True)``, seed 100000 + i) and original-style
tuning pairs (``ms_benchmark.case_spec(i)``, seed 1000 + i, i >= 100),
never the benchmark's evaluation seeds. Synthetic phantoms of one anatomy: a pair of two different people is
not among them.

Usage: ``python bench/ms_registration_check.py [--cases 0-3] [--original 115,101] [--voxel-mm 1.0]``
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

OFFSETS = {  # name -> (rotation axis 0/1/2 or None, degrees, shift vector mm)
    "shift 3 mm": (None, 0.0, (3.0, 0.0, 0.0)),
    "shift 6 mm": (None, 0.0, (0.0, 6.0, 0.0)),
    "shift 12 mm": (None, 0.0, (0.0, 0.0, 12.0)),
    "rotate 5 deg": (0, 5.0, (0.0, 0.0, 0.0)),
    "rotate 10 deg": (1, 10.0, (0.0, 0.0, 0.0)),
    "rotate 20 deg": (2, 20.0, (0.0, 0.0, 0.0)),
}


def moved(a: np.ndarray, spacing_mm: tuple[float, float, float], axis: int | None, deg: float,
          shift_mm: tuple[float, float, float]) -> np.ndarray:
    """``a`` rotated by ``deg`` about ``axis`` (through the array centre) and shifted by ``shift_mm`` (linear)."""
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    sp = np.asarray(spacing_mm, float)
    rot = np.eye(3) if axis is None else Rotation.from_euler("xyz"[axis], deg, degrees=True).as_matrix()
    m = np.diag(1.0 / sp) @ rot @ np.diag(sp)
    ctr = (np.asarray(a.shape, float) - 1.0) / 2.0
    offset = ctr - m @ ctr - np.asarray(shift_mm) / sp
    return ndimage.affine_transform(np.asarray(a, np.float32), m, offset, order=1)


def measure(case, cfg) -> dict:  # noqa: ANN001 - phantom case, MSConfig
    """Steps 1-5 on ``case``, then ``nmi`` and ``r`` at the found pose ("registered") and at each of OFFSETS."""
    from neurorad.pipelines import ms_lesions as ms
    from neurorad.preprocess.registration import _foreground, normalized_mutual_information

    ctx = ms.MSContext(cfg, Path("."), case.baseline_flair, case.followup_flair)
    for step in ms.STEPS[:5]:
        step.run(ctx)
    assert ctx.ref is not None and ctx.b_c is not None and ctx.f_c is not None
    sp = ctx.ref.spacing_mm
    b_c, f_c = np.asarray(ctx.b_c.data, np.float32), np.asarray(ctx.f_c.data, np.float32)
    fg = _foreground(ctx.b_c)
    register_params = next(s.parameters for s in ctx.prov.steps if s.name == "register")
    rows = {"registered": (normalized_mutual_information(b_c, f_c, fg),
                           ms.smoothed_correlation(ctx.bn, ctx.fn, ctx.brain, sp))}
    for name, (axis, deg, shift) in OFFSETS.items():
        rows[name] = (normalized_mutual_information(b_c, moved(f_c, sp, axis, deg, shift), fg),
                      ms.smoothed_correlation(ctx.bn, moved(ctx.fn, sp, axis, deg, shift), ctx.brain, sp))
    return {"rows": rows, "nmi_registration_step": register_params.get("nmi_after")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="0-3", help="widened tuning pairs, e.g. 0-3 or 1,5")
    ap.add_argument("--original", default="115", help="original-style tuning pairs (>= 100), e.g. 115,101")
    ap.add_argument("--voxel-mm", type=float, default=1.0, help="in-plane voxel of the phantoms")
    args = ap.parse_args(argv)
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from ms_benchmark import case_spec
    from ms_sweep import _indices

    from neurorad.phantom.cases import ms_pair
    from neurorad.pipelines.ms_lesions import MSConfig

    cfg = replace(MSConfig(), min_registration_nmi=1.0)
    jobs = [(f"widened {i}", "widened", i) for i in _indices(args.cases)]
    jobs += [(f"original {i}", "original", i) for i in _indices(args.original)]
    lowest_ok, highest_off = {"nmi": 2.0, "r": 1.0}, {"nmi": 0.0, "r": -1.0}
    for label, kind, i in jobs:
        if kind == "original" and i < 100:
            raise SystemExit(f"original-style pair {i}: the benchmark evaluates i < 100; use i >= 100")
        opts = case_spec(i, args.voxel_mm, kind, tuning=True)
        res = measure(ms_pair(**opts), cfg)
        cells = []
        for name, (nmi, r) in res["rows"].items():
            cells.append(f"{name}: nmi {nmi:.4f} r {r:.3f}")
            if name == "registered":
                lowest_ok = {"nmi": min(lowest_ok["nmi"], nmi), "r": min(lowest_ok["r"], r)}
            else:
                highest_off = {"nmi": max(highest_off["nmi"], nmi), "r": max(highest_off["r"], r)}
        slices = opts.get("slice_thickness_mm")
        print(f"{label} (slices {slices} mm; registration step's nmi_after {res['nmi_registration_step']}): "
              + "; ".join(cells), flush=True)
    print(f"lowest at the registered pose: nmi {lowest_ok['nmi']:.4f}, r {lowest_ok['r']:.3f}")
    print(f"highest when moved off it: nmi {highest_off['nmi']:.4f}, r {highest_off['r']:.3f}")
    for key in ("nmi", "r"):
        verdict = "separates" if lowest_ok[key] > highest_off[key] else "does NOT separate"
        print(f"{key} {verdict} registered from misregistered pairs on these {len(jobs)} pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
