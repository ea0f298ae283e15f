"""How well can a small lesion's volume be measured at all? Partial volume on thick slices.

Analytic check of the MS workflow's volume rule (delineation at half the lesion's peak change,
docs/ms-lesions-log.md) against ellipsoids of known volume, independent of any phantom: each lesion
(random semi-axes within +-25 % of the diameter's half, random sub-voxel centre) is rasterised on the
common grid by 5^3 sub-samples per voxel (its lesion fraction per voxel), scaled to contrast 0.3,
given Gaussian noise (SD 0.05) and smoothed exactly as the candidate step smooths
(``ms_difference._smoothing_sigma_vox``). Three volume estimates are compared with the TRUE
(continuous) volume 4/3 pi a b c:

* ``truth rule``: voxels with lesion fraction >= 0.5 (the benchmark's truth definition) - the
  quantisation of the truth itself;
* ``half max``: the workflow's rule (connected voxels >= half the 95th-percentile peak);
* ``ball fit``: least-squares fit of a blurred ball (radius and contrast free, known smoothing and
  voxel) - what a model-based partial-volume estimate could do.

Usage: ``python bench/ms_volume_pv.py [--reps 12]``. Prints the median |relative error| per slice
configuration and diameter.

``--sweep`` chooses the constants of the workflow's volume-measurability rule
(:func:`neurorad.segment.ms_difference.volume_measurable`): lesions of 3-14 mm (true diameter, three
size bins drawn equally), randomly oriented ellipsoids (semi-axes +-25 %), contrast 0.15-0.6 over
noise SD 0.05, on grids with slices of 1, 1.5, 2, 3, 4, 5 and 6 mm (in-plane 1-1.5 mm, never above
the slice). Each lesion is delineated as the workflow delineates a new one: its candidate (the
component of the smoothed difference above 3 noise SDs holding the peak) cut by
:func:`~neurorad.segment.ms_difference.delineate` (half of the 95th-percentile peak). The rule
sees only that MEASURED volume and the slice thickness; for each candidate constant (diameter >= k
slice thicknesses and >= d mm) the table gives the median |error| (vs the true volume) of the lesions
kept as measurable, per size bin and per slice x size cell, and the fraction flagged. The chosen
constant keeps every size bin and every cell with >= ``--min-kept`` kept lesions at <= 20 % and
flags the fewest. ``python bench/ms_volume_pv.py --sweep --reps 30 [--json out.json]``.

``--sweep --sweep-level`` runs the same sweep with the lesions measured as the workflow measures them since 1.31.0
(the partial-volume level of lesions of 5 mm and more); ``--acquisition-fwhm-mm 1`` blurs the lesions by the
acquisition first, as ``--level`` does.

``--level`` compares half maximum with the partial-volume level of large lesions
(:func:`neurorad.segment.ms_difference.partial_volume_core`, ``ClassifyParams.pv_level_min_diameter_mm``) on such
lesions with an acquisition blur of 1 mm FWHM as well: ``python bench/ms_volume_pv.py --level --reps 40``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from neurorad.segment.ms_difference import ClassifyParams


def fraction(shape: tuple[int, ...], spacing: tuple[float, ...], centre_mm: np.ndarray, semi_mm: np.ndarray,
             ss: int = 5, rotation: np.ndarray | None = None) -> np.ndarray:
    """Lesion fraction of each voxel (voxel i covers [i s, (i+1) s) mm) of an ellipsoid, axis-aligned or
    with its axes along the columns of ``rotation`` (3 x 3)."""
    sub = (np.arange(ss) + 0.5)[None, :] / ss
    axes = [((np.arange(n)[:, None] + sub) * s).ravel() for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    g = [x - centre_mm[0], y - centre_mm[1], z - centre_mm[2]]
    if rotation is not None:  # coordinates in the ellipsoid's own axes
        g = [g[0] * rotation[0, i] + g[1] * rotation[1, i] + g[2] * rotation[2, i] for i in range(3)]
    inside = sum((gi / r) ** 2 for gi, r in zip(g, semi_mm, strict=True)) <= 1.0
    return inside.reshape(shape[0], ss, shape[1], ss, shape[2], ss).mean(axis=(1, 3, 5))


def half_max_voxels(d: np.ndarray) -> int:
    peak = float(np.percentile(d[d > 0.5 * d.max()], 95))
    lab, _ = ndimage.label(d >= 0.5 * peak)
    return int(np.count_nonzero(lab == lab[np.unravel_index(np.argmax(d), d.shape)]))


def ball_fit_volume(d: np.ndarray, spacing: tuple[float, ...], sig_vox: list[float], centre_mm: np.ndarray) -> float:
    best = (np.inf, 0.0)
    for r in np.geomspace(0.5, 9.0, 36):
        t = ndimage.gaussian_filter(fraction(d.shape, spacing, centre_mm, np.array([r, r, r]), ss=3), sig_vox)
        a = np.stack([t.ravel(), np.ones(t.size)], 1)
        coef = np.linalg.lstsq(a, d.ravel(), rcond=None)[0]
        sse = float(((a @ coef - d.ravel()) ** 2).sum())
        if sse < best[0]:
            best = (sse, 4.0 / 3.0 * np.pi * r**3)
    return best[1]


SWEEP_SLICES_MM = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0)
SWEEP_SIZE_BINS = ((3.0, 5.0), (5.0, 8.0), (8.0, 14.0))  # true diameter (mm), as bench/ms_benchmark.py
SWEEP_K = (0.0, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.65, 1.7, 1.75, 1.8, 1.9, 2.0, 2.2, 2.5)
SWEEP_D_MM = (0.0, 3.0, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0)


def workflow_volume_mm3(d: np.ndarray, noise_sd: float, voxel_mm3: float, params: ClassifyParams | None = None,
                        spacing_mm: tuple[float, float, float] | None = None) -> float:
    """The volume the workflow measures for a new lesion on the smoothed difference ``d``: its
    candidate (26-connected component above 3 noise SDs, the score's extent z = 3, holding the peak)
    delineated by :func:`neurorad.segment.ms_difference.delineate` (the partial-volume rule; with ``params`` and
    ``spacing_mm``, its partial-volume level where ``params.pv_level_min_diameter_mm`` is set; without
    ``spacing_mm``, half maximum: the rule the ``--sweep`` chose the measurability constant for, before workflow
    1.31.0)."""
    from neurorad.segment.ms_difference import ClassifyParams, delineate

    lab, _ = ndimage.label(d > 3.0 * noise_sd, ndimage.generate_binary_structure(3, 3))
    top = lab[np.unravel_index(np.argmax(d), d.shape)]
    if top == 0:
        return 0.0
    cand = (lab == top).astype(np.int32)
    p = params if params is not None else ClassifyParams()
    return float(np.count_nonzero(delineate(cand, 1, ["new"], d, p, spacing_mm=spacing_mm) == 1)) * voxel_mm3


def draw_lesion(rng: np.random.Generator, t: float, lo: float, hi: float, margin_slices: float = 2.0,
                acquisition_fwhm_mm: float = 0.0) -> dict:
    """One lesion of the ``--sweep`` on slices of ``t`` mm (in-plane 1-1.5 mm): a randomly oriented ellipsoid of
    true diameter in [lo, hi) mm (semi-axes +-25 %), contrast 0.15-0.6, blurred by the acquisition
    (``acquisition_fwhm_mm``, Gaussian) and the candidate step's smoothing, with noise SD 0.05 smoothed the same
    way. Returns the smoothed change ``d``, its ``noise``, ``spacing``, ``diameter_mm``, ``contrast``,
    ``true_mm3`` and the lesion ``fraction``."""
    from neurorad.segment.ms_difference import CandidateParams, _smoothing_sigma_vox

    s_in = min(float(rng.uniform(1.0, 1.5)), t)
    spacing = (s_in, s_in, t)
    sig = np.asarray(_smoothing_sigma_vox(spacing, CandidateParams()))
    diam = float(rng.uniform(lo, hi))
    semi = diam / 2 * rng.uniform(0.8, 1.25, 3)
    half = 1.25 * semi.max() + 4 * max(sg * s for sg, s in zip(sig, spacing, strict=True)) + margin_slices * t
    shape = tuple(int(np.ceil(2 * half / s)) for s in spacing)
    centre = np.array([n * s / 2 for n, s in zip(shape, spacing, strict=True)])
    centre = centre + rng.uniform(-0.5, 0.5, 3) * np.asarray(spacing)
    fr = fraction(shape, spacing, centre, semi, rotation=random_rotation(rng))
    contrast = float(rng.uniform(0.15, 0.6))
    noise = ndimage.gaussian_filter(rng.normal(0, 0.05, shape), list(sig))
    blur = np.sqrt(sig**2 + (acquisition_fwhm_mm / 2.3548 / np.asarray(spacing)) ** 2)
    d = ndimage.gaussian_filter(contrast * fr, list(blur)) + noise
    return {"d": d, "noise": noise, "spacing": spacing, "diameter_mm": diam, "contrast": contrast,
            "true_mm3": 4.0 / 3.0 * np.pi * float(np.prod(semi)), "fraction": fr}


LEVEL_MIN_DIAMETERS_MM = (None, 5.0, 6.0, 7.0)


def level_table(reps: int, seed: int = 0, acquisition_fwhm_mm: float = 1.0) -> list[dict]:
    """Half maximum against the partial-volume level (``ClassifyParams.pv_level_min_diameter_mm`` in
    :data:`LEVEL_MIN_DIAMETERS_MM`; None is half maximum) on the lesions of the ``--sweep`` (3-14 mm randomly
    oriented ellipsoids, contrast 0.15-0.6, noise SD 0.05, slices of 1, 3 and 5 mm), blurred by the acquisition
    (``acquisition_fwhm_mm``: a point spread and the registration's resampling) before the candidate step's
    smoothing. Median |error| against the true volume of the lesions the workflow marks measurable, per slice x
    size bin."""
    from neurorad.segment.ms_difference import ClassifyParams, volume_measurable

    rng = np.random.default_rng(seed)
    rows = []
    for t in (1.0, 3.0, 5.0):
        for lo, hi in SWEEP_SIZE_BINS:
            errs: dict[float | None, list[float]] = {m: [] for m in LEVEL_MIN_DIAMETERS_MM}
            for _ in range(reps):
                les = draw_lesion(rng, t, lo, hi, 3.0, acquisition_fwhm_mm)
                d, noise, spacing, true_mm3 = les["d"], les["noise"], les["spacing"], les["true_mm3"]
                vv = float(np.prod(spacing))
                for m in LEVEL_MIN_DIAMETERS_MM:
                    p = ClassifyParams(pv_level_min_diameter_mm=m)
                    v = workflow_volume_mm3(d, float(noise.std()), vv, p, spacing)
                    if v > 0 and volume_measurable(v, t, p):
                        errs[m].append(abs(v / true_mm3 - 1))
            rows.append({"slice_mm": t, "size": f"{lo:g}-{hi:g}",
                         **{f"min_{m}": (round(float(np.median(e)), 3) if e else None, len(e))
                            for m, e in errs.items()}})
    return rows


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def simulate_lesions(reps: int, seed: int = 0, level: bool = False, acquisition_fwhm_mm: float = 0.0) -> list[dict]:
    """``reps`` lesions per slice thickness and size bin (see the module docstring): true diameter,
    true and measured volumes. ``level``: measured as the workflow measures since 1.31.0 (the partial-volume level
    of the large lesions, ``ClassifyParams()``'s defaults); otherwise at half maximum, as the rule was first chosen.
    ``acquisition_fwhm_mm``: the acquisition's own blur (:func:`draw_lesion`)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in SWEEP_SLICES_MM:
        for lo, hi in SWEEP_SIZE_BINS:
            for _ in range(reps):
                les = draw_lesion(rng, t, lo, hi, acquisition_fwhm_mm=acquisition_fwhm_mm)
                fr, spacing = les["fraction"], les["spacing"]
                vv = float(np.prod(spacing))
                out.append({"slice_mm": t, "inplane_mm": round(spacing[0], 3),
                            "diameter_mm": round(les["diameter_mm"], 3), "contrast": round(les["contrast"], 3),
                            "true_mm3": round(les["true_mm3"], 3),
                            "voxel_truth_mm3": round(np.count_nonzero(fr >= 0.5) * vv, 3),
                            "measured_mm3": round(workflow_volume_mm3(
                                les["d"], float(les["noise"].std()), vv, spacing_mm=spacing if level else None), 3)})
    return out


def sweep_table(records: list[dict], ks: tuple[float, ...] = SWEEP_K, ds: tuple[float, ...] = SWEEP_D_MM,
                min_kept: int = 8, target: float = 0.20) -> list[dict]:
    """For each rule (k slice thicknesses, d mm): median |error| (vs the true volume) of the lesions
    the rule keeps as measurable, per size bin and per slice x size cell, and the fraction flagged.
    ``ok``: every size bin and every cell with >= ``min_kept`` kept lesions at <= ``target``."""
    from neurorad.segment.ms_difference import ClassifyParams, volume_measurable

    rows = []
    slices = sorted({r["slice_mm"] for r in records})
    err = np.array([abs(r["measured_mm3"] / r["true_mm3"] - 1) for r in records])
    for k in ks:
        for dmin in ds:
            p = ClassifyParams(volume_min_diameter_slices=k, volume_min_diameter_mm=dmin)
            keep = np.array([volume_measurable(r["measured_mm3"], r["slice_mm"], p) for r in records])
            by_size, by_cell, ok = {}, {}, True
            for lo, hi in SWEEP_SIZE_BINS:
                sel = np.array([lo <= r["diameter_mm"] < hi for r in records])
                e = err[sel & keep]
                by_size[f"{lo:g}-{hi:g}"] = (round(float(np.median(e)), 3) if e.size else None, int(e.size),
                                              round(float(1 - keep[sel].mean()), 3))
                ok &= not (e.size and np.median(e) > target)
                for t in slices:
                    c = sel & np.array([r["slice_mm"] == t for r in records])
                    ec = err[c & keep]
                    by_cell[f"{t:g} mm {lo:g}-{hi:g}"] = (round(float(np.median(ec)), 3) if ec.size else None,
                                                          int(ec.size), round(float(1 - keep[c].mean()), 3))
                    ok &= not (ec.size >= min_kept and np.median(ec) > target)
            flagged = ~keep
            upper = [r["measured_mm3"] >= r["true_mm3"] for r, f in zip(records, flagged, strict=True) if f]
            rows.append({"k_slices": k, "d_min_mm": dmin, "flagged": round(float(flagged.mean()), 3),
                         "flagged_upper_bound": round(float(np.mean(upper)), 3) if upper else None,
                         "ok": bool(ok), "by_size": by_size, "by_cell": by_cell})
    return rows


def choose_rule(rows: list[dict]) -> dict | None:
    """The rule meeting the target that flags the fewest lesions (ties: the smaller constants)."""
    ok = [r for r in rows if r["ok"]]
    return min(ok, key=lambda r: (r["flagged"], r["k_slices"], r["d_min_mm"])) if ok else None


def print_sweep(records: list[dict], rows: list[dict], best: dict | None) -> None:
    err = np.array([abs(r["measured_mm3"] / r["true_mm3"] - 1) for r in records])
    print(f"{len(records)} lesions; all kept (no rule): median |error| by slice x size (3-5 / 5-8 / 8-14 mm):")
    for t in SWEEP_SLICES_MM:
        cells = []
        for lo, hi in SWEEP_SIZE_BINS:
            sel = np.array([r["slice_mm"] == t and lo <= r["diameter_mm"] < hi for r in records])
            cells.append(f"{np.median(err[sel]):.2f}")
        print(f"  {t:g} mm: " + " / ".join(cells))
    print("\nrule: measured diameter >= k x slice and >= d mm | flagged | median |error| kept, 3-5 / 5-8 / 8-14 mm "
          "(n kept, fraction flagged) | worst cell with >= 8 kept | meets <= 0.20")
    for r in rows:
        if r["d_min_mm"] not in (0.0, best["d_min_mm"] if best else 0.0):
            continue
        worst = max(((v[0], k) for k, v in r["by_cell"].items() if v[0] is not None and v[1] >= 8), default=(None, ""))
        sizes = " / ".join(f"{v[0] if v[0] is not None else '-'} ({v[1]}, {v[2]:.2f})" for v in r["by_size"].values())
        print(f"  k={r['k_slices']:<4g} d={r['d_min_mm']:<4g} | {r['flagged']:.3f} | {sizes} | "
              f"{worst[0]} ({worst[1]}) | {'yes' if r['ok'] else 'no'}")
    if best is None:
        print("\nno rule meets the target")
        return
    print(f"\nchosen: k={best['k_slices']:g}, d={best['d_min_mm']:g} mm; flagged {best['flagged']:.3f}; "
          f"flagged lesions whose measured volume >= true volume: {best['flagged_upper_bound']}")
    print("per slice x size cell (median |error| of kept, n kept, fraction flagged):")
    for t in SWEEP_SLICES_MM:
        print(f"  {t:g} mm: " + " | ".join(
            f"{lo:g}-{hi:g}: {best['by_cell'][f'{t:g} mm {lo:g}-{hi:g}']}" for lo, hi in SWEEP_SIZE_BINS))


def main() -> None:
    from neurorad.segment.ms_difference import CandidateParams, _smoothing_sigma_vox

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--sweep", action="store_true", help="choose the volume-measurability rule (see above)")
    ap.add_argument("--min-kept", type=int, default=8, help="sweep: cells with fewer kept lesions are not judged")
    ap.add_argument("--json", type=Path, help="sweep: write the lesions and the table here")
    ap.add_argument("--seed", type=int, default=0, help="sweep: random seed of the lesions")
    ap.add_argument("--level", action="store_true",
                    help="half maximum against the partial-volume level of large lesions (see level_table)")
    ap.add_argument("--sweep-level", action="store_true",
                    help="sweep: measure the lesions with the partial-volume level of the large ones (the workflow "
                         "since 1.31.0) instead of half maximum")
    ap.add_argument("--acquisition-fwhm-mm", type=float, default=0.0,
                    help="sweep: the acquisition's own blur before the candidate step's smoothing (default 0)")
    a = ap.parse_args()
    if a.level:
        print("median |error| vs the true volume of the lesions marked measurable (n); min_None = half maximum, "
              "min_D = partial-volume level from D mm")
        for r in level_table(a.reps, a.seed):
            print(f"  {r['slice_mm']:g} mm, {r['size']} mm: " + " | ".join(
                f"{k} {v[0]} ({v[1]})" for k, v in r.items() if k.startswith("min_")), flush=True)
        return
    if a.sweep:
        records = simulate_lesions(a.reps, a.seed, a.sweep_level, a.acquisition_fwhm_mm)
        rows = sweep_table(records, min_kept=a.min_kept)
        best = choose_rule(rows)
        print_sweep(records, rows, best)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps({"lesions": records, "rules": rows, "chosen": best}, indent=1))
        return
    rng = np.random.default_rng(0)
    print(f"{'grid (mm)':<16}{'diameter':>9}{'truth rule':>12}{'half max':>10}{'ball fit':>10}"
          "   (median |error| vs true volume)")
    for spacing in ((1.0, 1.0, 1.0), (1.5, 1.5, 3.0), (1.5, 1.5, 5.0)):
        sig = _smoothing_sigma_vox(spacing, CandidateParams())
        shape = tuple(int(np.ceil(40 / s)) for s in spacing)
        vv = float(np.prod(spacing))
        for diam in (3.5, 4.5, 6.0, 8.0, 12.0):
            e_truth, e_hm, e_fit = [], [], []
            for _ in range(a.reps):
                centre = np.full(3, 20.0) + rng.uniform(-0.5, 0.5, 3) * np.asarray(spacing)
                semi = diam / 2 * rng.uniform(0.8, 1.25, 3)
                true_mm3 = 4.0 / 3.0 * np.pi * float(np.prod(semi))
                fr = fraction(shape, spacing, centre, semi)
                d = ndimage.gaussian_filter(0.3 * fr + rng.normal(0, 0.05, shape), sig)
                com = np.array(ndimage.center_of_mass(np.clip(d, 0, None) * (d >= 0.5 * d.max())))
                e_truth.append(abs(np.count_nonzero(fr >= 0.5) * vv / true_mm3 - 1))
                e_hm.append(abs(half_max_voxels(d) * vv / true_mm3 - 1))
                e_fit.append(abs(ball_fit_volume(d, spacing, sig, (com + 0.5) * np.asarray(spacing)) / true_mm3 - 1))
            print(f"{'x'.join(f'{s:g}' for s in spacing):<16}{diam:>7.1f} mm{np.median(e_truth):>12.2f}"
                  f"{np.median(e_hm):>10.2f}{np.median(e_fit):>10.2f}", flush=True)


if __name__ == "__main__":
    main()
