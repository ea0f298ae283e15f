"""N4 fitting levels and mask for the MS workflow: residual white-matter variation and CPU time.

Colin27 1 mm head cropped to the brain + 13 mm (the MS workflow's common grid), a known smooth
multiplicative field (strength 0.6, the preprocess tests' generator), N4 at shrink 4 with 4, 3 or
2 fitting levels (and 3 short levels), inside the brain mask or inside the Otsu head mask. Oracle: white-matter
coefficient of variation (WM = eroded band of the clean image's 70-95th brain percentiles); the
clean image's own CoV is the floor. Wall and CPU seconds per run are printed.

Second table (``--shrink``): the fit's sampling on 1, 3 and 5 mm slice grids (Colin27 averaged over 3 or 5
slices, the field applied before the averaging), shrink by 4 voxels on every axis against shrink towards a
physical spacing per axis (``MSConfig.n4_shrink_mm``). Two oracles: the WM coefficient of variation as above,
and the error of the estimated field against the known one (log field, each centred on its brain median:
median and 99th percentile of the absolute difference inside the brain). CPU s of the fit per run.

Usage: ``python bench/ms_n4_levels.py`` (levels) or ``python bench/ms_n4_levels.py --shrink`` (sampling)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi


def smooth_bias_field(shape: tuple[int, int, int], strength: float = 0.4, seed: int = 0) -> np.ndarray:
    """exp(sum of low-order terms), range about e^{+-strength} (same as tests/preprocess/conftest.py)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    c = rng.uniform(-1, 1, size=6)
    log_f = (c[0] * grids[0] + c[1] * grids[1] + c[2] * grids[2] + c[3] * grids[0] * grids[1]
             + c[4] * grids[2] ** 2 + c[5] * grids[1] ** 2)
    log_f = strength * log_f / np.abs(log_f).max()
    return np.exp(log_f).astype(np.float32)


def thick(vol, mask: np.ndarray, k: int):  # noqa: ANN001, ANN201 - Volume in, (Volume, mask) out
    """``vol`` averaged over blocks of ``k`` slices along its third axis (a thick-slice acquisition's partial
    volume), with the grid's affine; ``mask`` kept where most of the block is brain."""
    from neurorad.image.volume import Volume

    n = vol.shape[2] // k * k
    data = np.asarray(vol.data)[:, :, :n].reshape(vol.shape[0], vol.shape[1], n // k, k).mean(axis=3)
    m = mask[:, :, :n].reshape(mask.shape[0], mask.shape[1], n // k, k).mean(axis=3) > 0.5
    aff = np.array(vol.affine, float)
    aff[:3, 3] = aff[:3, 3] + aff[:3, 2] * (k - 1) / 2  # the block's centre
    aff[:3, 2] = aff[:3, 2] * k
    return Volume(data.astype(np.float32), aff), m


def shrink_table() -> int:
    """N4's sampling on 1/3/5 mm grids: voxel shrink 4 vs shrink towards 4-8 mm per axis (see module doc)."""
    from neurorad import resources
    from neurorad.image.geometry import crop_to_mask
    from neurorad.image.nifti import load_nifti
    from neurorad.preprocess.bias import n4_bias_correct, shrink_factors_for_spacing

    head = load_nifti(resources.colin27_head())
    head = head.with_data(np.asarray(head.data, np.float32))
    brain = np.asarray(load_nifti(resources.colin27_brain()).data) > 0
    c = crop_to_mask(head, brain, 13.0)
    bm = crop_to_mask(head.with_data(brain.astype(np.uint8)), brain, 13.0).data > 0
    print("seed grid  shrink         fit pts  WM CoV (clean / biased / corrected)  |log field error| median / p99"
          "  CPU s")
    for seed in (0, 1):
        field = smooth_bias_field(c.shape, 0.6, seed=seed)
        for k in (1, 3, 5):
            clean, m = thick(c, bm, k) if k > 1 else (c, bm)
            biased, _ = thick(c.with_data(np.asarray(c.data) * field), bm, k) if k > 1 else (
                c.with_data(np.asarray(c.data) * field), bm)
            cd = np.asarray(clean.data)
            lo, hi = np.percentile(cd[m], [70, 95])
            wm = ndi.binary_erosion(m & (cd > lo) & (cd < hi))
            good = m & (cd > 0.05 * float(np.median(cd[m])))  # the log ratio needs a clean image that is not dark
            true_log = np.zeros(cd.shape, np.float32)
            true_log[good] = np.log(np.asarray(biased.data)[good] / cd[good])
            for shrink in (4, 4.0, 5.0, 6.0, 8.0):
                factors = shrink if isinstance(shrink, int) else shrink_factors_for_spacing(clean.spacing_mm, shrink)
                p0 = time.process_time()
                out, est = n4_bias_correct(biased, mask=biased.with_data(m), shrink_factor=factors,
                                           iterations=(25, 25, 15), nonpositive="shift", return_field=True)
                cpu = time.process_time() - p0
                err = np.log(np.asarray(est.data)) - true_log
                err = np.abs(err - np.median(err[good]))[good]
                o = np.asarray(out.data)
                label = f"{shrink} vox" if isinstance(shrink, int) else f"{shrink:g} mm ({'x'.join(map(str, factors))})"
                pts = int(m.sum() / (factors ** 3 if isinstance(factors, int) else np.prod(factors)))
                print(f"seed {seed} {k} mm  {label:<14} {pts:>6}"
                      f"  {float(cd[wm].std() / cd[wm].mean()):.4f} / "
                      f"{float(np.asarray(biased.data)[wm].std() / np.asarray(biased.data)[wm].mean()):.4f} / "
                      f"{float(o[wm].std() / o[wm].mean()):.4f}            {float(np.median(err)):.4f} / "
                      f"{float(np.percentile(err, 99)):.4f}   {cpu:5.1f}", flush=True)
    return 0


def main() -> int:
    if "--shrink" in sys.argv[1:]:
        return shrink_table()
    from neurorad import resources
    from neurorad.image.geometry import crop_to_mask
    from neurorad.image.nifti import load_nifti
    from neurorad.preprocess.bias import n4_bias_correct

    head = load_nifti(resources.colin27_head())
    head = head.with_data(np.asarray(head.data, np.float32))
    brain = np.asarray(load_nifti(resources.colin27_brain()).data) > 0
    c = crop_to_mask(head, brain, 13.0)
    bm = crop_to_mask(head.with_data(brain.astype(np.uint8)), brain, 13.0).data > 0
    clean = np.asarray(c.data)
    lo, hi = np.percentile(clean[bm], [70, 95])
    wm = ndi.binary_erosion(bm & (clean > lo) & (clean < hi))
    biased = c.with_data(clean * smooth_bias_field(clean.shape, 0.6, seed=0))

    def cov(x: np.ndarray) -> float:
        return float(x[wm].std() / x[wm].mean())

    print(f"grid {clean.shape}; WM CoV clean {cov(clean):.4f}, biased {cov(np.asarray(biased.data)):.4f}")
    for its in ((50, 50, 50, 50), (50, 50, 30), (25, 25, 15), (50, 50)):
        for name, mask in (("brain mask", c.with_data(bm)), ("Otsu head mask", None)):
            t0, p0 = time.perf_counter(), time.process_time()
            out = n4_bias_correct(biased, mask=mask, shrink_factor=4, iterations=its)
            print(f"levels {its!s:<18} {name:<15} WM CoV {cov(np.asarray(out.data)):.4f}  "
                  f"wall {time.perf_counter() - t0:5.1f} s  CPU {time.process_time() - p0:5.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
