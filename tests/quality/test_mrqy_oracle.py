"""Our MRQy metrics against the ``mrqy`` package's own metric functions (mrqy 0.0.3 ``QCF``), fed the
same foreground/background, on one real Colin27 slice; and the documented mrqy bugs, shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurorad.quality.image_metrics import image_quality_metrics
from tests.quality._oracle import run_oracle

pytestmark = pytest.mark.slow
COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")


@pytest.mark.skipif(not COLIN.exists(), reason="mricron-data not installed")
def test_against_mrqy_functions(oracle_python, tmp_path):
    from neurorad.image.nifti import load_nifti

    head = load_nifti(COLIN).data.astype(np.float64)
    rng = np.random.default_rng(0)
    sl = np.abs(head[:, :, 90] + rng.normal(0, 0.01 * head.max(), head.shape[:2]))  # a noisy background
    fg = sl > 0.25 * sl.max()
    np.save(tmp_path / "F.npy", sl * fg)
    np.save(tmp_path / "B.npy", sl * ~fg)
    np.save(tmp_path / "f.npy", sl[fg])
    np.save(tmp_path / "b.npy", sl[~fg])
    np.save(tmp_path / "img.npy", sl)
    ref = run_oracle(oracle_python, """
        import json, numpy as np
        import mrqy.QCF as q
        F, B, f, b = (np.load(n + ".npy") for n in "FBfb")
        img = np.load("img.npy")
        names = {"MEAN": q.mean, "RNG": q.rang, "VAR": q.variance, "CV": q.percent_coefficient_variation,
                 "SNR1": q.snr1, "CJV": q.cjv, "FBER": q.fber, "EFC": q.efc}
        out = {k: float(fn(F, B, None, f, b)) for k, fn in names.items()}
        spike = np.zeros((20, 20)); spike[10, 10] = 100.0
        out["patch_holds_max"] = bool(q.patch(spike, 5).max() == 100.0)
        out["efc_img"] = float(q.efc(img, None, None, None, None))
        out["efc_img_x2"] = float(q.efc(2 * img + 5, None, None, None, None))
        print(json.dumps(out))
    """, tmp_path)
    ours = image_quality_metrics(sl[:, :, None], fg[:, :, None])
    for k in ("MEAN", "RNG", "VAR", "CV", "SNR1", "CJV", "FBER"):
        assert ours[k] == pytest.approx(ref[k], rel=1e-9), k
    # documented mrqy bugs: its 5x5 "centred" patch misses the brightest pixel it is meant to centre on,
    # and its EFC adds 1e16 inside the log (so it no longer measures the image's entropy)
    assert ref["patch_holds_max"] is False
    from neurorad.quality.image_metrics import _patch

    spike = np.zeros((20, 20, 20))
    spike[10, 10, 10] = 100.0
    p = _patch(spike, np.ones_like(spike, bool))
    assert p.shape == (5, 5, 5) and p[2, 2, 2] == 100.0  # ours is centred on the brightest voxel
    assert ref["EFC"] != pytest.approx(ours["EFC"], rel=0.05)
    assert 0 < ours["EFC"] <= 1
