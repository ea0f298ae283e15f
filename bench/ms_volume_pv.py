"""How well can a small lesion's volume be measured at all? Partial volume on thick slices.

Analytic check of the MS workflow's volume rule (delineation at half the lesion's peak change,
docs/ms-lesions.md) against ellipsoids of known volume, independent of any phantom: each lesion
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
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage


def fraction(shape: tuple[int, ...], spacing: tuple[float, ...], centre_mm: np.ndarray, semi_mm: np.ndarray,
             ss: int = 5) -> np.ndarray:
    """Lesion fraction of each voxel (voxel i covers [i s, (i+1) s) mm) of an axis-aligned ellipsoid."""
    sub = (np.arange(ss) + 0.5)[None, :] / ss
    axes = [((np.arange(n)[:, None] + sub) * s).ravel() for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip((x, y, z), centre_mm, semi_mm, strict=True)) <= 1.0
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


def main() -> None:
    from neurorad.segment.ms_difference import CandidateParams, _smoothing_sigma_vox

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=12)
    a = ap.parse_args()
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
