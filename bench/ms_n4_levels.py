"""N4 fitting levels and mask for the MS workflow: residual white-matter variation and CPU time.

Colin27 1 mm head cropped to the brain + 13 mm (the MS workflow's common grid), a known smooth
multiplicative field (strength 0.6, the preprocess tests' generator), N4 at shrink 4 with 4, 3 or
2 fitting levels (and 3 short levels), inside the brain mask or inside the Otsu head mask. Oracle: white-matter
coefficient of variation (WM = eroded band of the clean image's 70-95th brain percentiles); the
clean image's own CoV is the floor. Wall and CPU seconds per run are printed.

Usage: ``python bench/ms_n4_levels.py``
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


def main() -> int:
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
