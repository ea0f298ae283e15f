"""Benchmark of neurorad.phantom and the image layer's DICOM I/O (run: .venv/bin/python bench/phantom_image.py).

1. Phantom anatomy load (cold, once per process) and a 1 mm MS pair (FLAIR, warm); target: pair in a few
   seconds. Also the pair with T1+T2+FLAIR and a 5 mm-slice pair, and one case of every other kind.
2. DICOM: write a 181x217x181 float volume as an MR series, then read it with dcm2niix and with the
   pydicom reader (the comparison, same run), and the geometry/voxel agreement of the two readers.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _time(fn, repeat: int = 1):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    from neurorad.image import read_dicom_series, write_dicom_series
    from neurorad.phantom import anatomy as anat_mod
    from neurorad.phantom import load_anatomy, ms_pair
    from neurorad.phantom.cases import make_case

    cached = (anat_mod._cache_dir() / f"phantom-{anat_mod._cache_key()}.npz").exists()
    t, _ = _time(load_anatomy)
    state = 'present' if cached else 'absent'
    print(f"phantom anatomy load, first in process      {t:6.2f} s   (disk mask cache {state})")
    t, case = _time(lambda: ms_pair(seed=1), repeat=2)
    print(f"ms-pair 1 mm FLAIR (2 images, 6 truth maps)  {t:6.2f} s   (target: a few seconds)")
    t, _ = _time(lambda: ms_pair(seed=1, contrasts=("flair", "t1", "t2")))
    print(f"ms-pair 1 mm FLAIR+T1+T2 (6 images)          {t:6.2f} s")
    t, _ = _time(lambda: ms_pair(seed=1, slice_thickness_mm=5.0))
    print(f"ms-pair 1x1x5 mm FLAIR                       {t:6.2f} s")
    for kind in ("wmh", "glioma", "cmb", "ich-pair"):
        t, c = _time(lambda k=kind: make_case(k, seed=1))
        print(f"{kind:<9} default options ({len(c.images)} images)      {t:6.2f} s")

    vol = case.images["baseline_flair"]
    tmp = Path(tempfile.mkdtemp())
    try:
        t, _ = _time(lambda: write_dicom_series(vol, tmp / "s", overwrite=True))
        print(f"DICOM write {vol.spatial_shape} MR series   {t:6.2f} s")
        t1, a = _time(lambda: read_dicom_series(tmp / "s", engine="dcm2niix"), repeat=2)
        t2, b = _time(lambda: read_dicom_series(tmp / "s", engine="pydicom"), repeat=2)
        print(f"DICOM read dcm2niix                          {t1:6.2f} s")
        print(f"DICOM read pydicom (comparison)              {t2:6.2f} s")
        print(f"  readers agree: affine max diff {np.abs(a.affine - b.affine).max():.2e} mm, "
              f"voxel max diff {np.abs(a.data - b.data).max():.2e} (storage step {np.ptp(vol.data) / 65535:.2e})")
        print(f"  round trip vs original: voxel max diff {np.abs(a.data - vol.data).max():.2e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
