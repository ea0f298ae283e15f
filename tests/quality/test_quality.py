"""Image-quality metrics (analytic + real Colin27), batch effects (statsmodels, scipy, sklearn), alarms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.decomposition import PCA
from statsmodels.stats.multitest import multipletests

from neurorad.errors import InputError
from neurorad.quality import alarms, batch_effects, fusion
from neurorad.quality.image_metrics import METRICS, image_quality_metrics

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")


def test_image_metrics_analytic():
    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    fg = np.zeros(shape, bool)
    fg[8:32, 8:32, 8:32] = True
    img = np.where(fg, 100.0, 10.0) + rng.normal(0, 1, shape) * np.where(fg, 4.0, 2.0)
    m = image_quality_metrics(img, fg)
    assert set(m) == set(METRICS)
    assert m["MEAN"] == pytest.approx(100, abs=0.1)
    assert m["SNR1"] == pytest.approx(2.0, rel=0.03)  # std(f)/std(b) = 4/2
    assert m["CJV"] == pytest.approx((4 + 2) / 90, rel=0.03)
    assert m["CV"] == pytest.approx(4.0, rel=0.03)
    assert m["FBER"] == pytest.approx(np.median((100 + 4 * rng.normal(size=10**5)) ** 2) / np.median(
        (10 + 2 * rng.normal(size=10**5)) ** 2), rel=0.05)
    uniform = np.ones(shape)
    u = image_quality_metrics(uniform + fg, fg)
    assert 0 < u["EFC"] <= 1.0
    assert image_quality_metrics(np.ones(shape), fg)["EFC"] == pytest.approx(1.0)
    # default foreground (Otsu + largest component + fill) recovers the cube
    auto = image_quality_metrics(img)
    assert auto["MEAN"] == pytest.approx(m["MEAN"], rel=0.01)
    with pytest.raises(InputError):
        image_quality_metrics(img[0])


@pytest.mark.skipif(not COLIN.exists(), reason="mricron-data not installed")
def test_image_metrics_real_head_noise_monotone():
    from neurorad.image.nifti import load_nifti

    head = load_nifti(COLIN).data.astype(np.float64)[::2, ::2, ::2]
    rng = np.random.default_rng(1)
    clean = image_quality_metrics(head)
    noisy = image_quality_metrics(head + rng.normal(0, 0.1 * head.max(), head.shape))
    assert noisy["SNR1"] < clean["SNR1"] and noisy["CJV"] > clean["CJV"] and noisy["PSNR"] < clean["PSNR"]
    assert noisy["EFC"] > clean["EFC"]


def test_bh_against_statsmodels():
    p = np.random.default_rng(2).random(57) ** 2
    p[3] = np.nan
    ours = batch_effects.benjamini_hochberg(p)
    ref = multipletests(p[np.isfinite(p)], method="fdr_bh")[1]
    np.testing.assert_allclose(ours[np.isfinite(p)], ref, rtol=1e-12)
    assert np.isnan(ours[3])


def test_quality_performance_correlation_and_site_pca():
    rng = np.random.default_rng(3)
    n = 45
    site = pd.Series(np.repeat(["A", "B", "C"], 15), index=[f"c{i}" for i in range(n)])
    shift = site.map({"A": 0.0, "B": 2.0, "C": 4.0}).to_numpy()
    q = pd.DataFrame({"SNR1": 5 + shift + rng.normal(size=n), "CJV": 1 - 0.1 * shift + 0.1 * rng.normal(size=n),
                      "EFC": rng.normal(size=n), "CONST": np.ones(n)}, index=site.index)
    perf = pd.DataFrame({"dice": 0.7 + 0.03 * q["SNR1"] + 0.01 * rng.normal(size=n)}, index=site.index)
    c = batch_effects.quality_performance_correlation(q, perf, alpha=0.25)
    row = c[(c.quality_metric == "SNR1")].iloc[0]
    assert row["rho"] == pytest.approx(stats.spearmanr(q["SNR1"], perf["dice"])[0])
    assert row["significant"]
    res = batch_effects.site_pca(q, site)
    ref = PCA(2).fit((q.drop(columns="CONST") - q.drop(columns="CONST").mean()) / q.drop(columns="CONST").std(ddof=0))
    np.testing.assert_allclose(res["explained_variance_ratio"], ref.explained_variance_ratio_, rtol=1e-8)
    assert res["anova"].iloc[0]["p"] < 1e-6  # the batch effect is found on PC1
    assert len(res["pairwise"]) == 6


def _sphere(shape, c, r):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r


def test_majority_vote_and_simple_basic():
    a = np.zeros((5, 5, 5), bool)
    b, c = a.copy(), a.copy()
    a[1:3] = True
    b[2:4] = True
    c[2] = True
    mv = fusion.majority_vote([a, b, c])
    assert mv[2].all() and not mv[1].any() and not mv[3].any()
    assert fusion.majority_vote([a, b], weights=[1, 1])[1].all()  # tie -> foreground
    assert fusion.majority_vote([a, b, c], weights=[3, 0, 0]).sum() == a.sum()
    s = fusion.simple_fusion([a, b, c])
    assert s.dtype == bool and s[2].all()
    with pytest.raises(InputError):
        fusion.majority_vote([a, np.zeros((4, 4, 4))])


def test_alarms_flag_degraded_cases():
    rng = np.random.default_rng(4)
    shape = (24, 24, 24)
    cases, truths = [], []
    for i in range(30):
        r = rng.uniform(5, 8)
        t = _sphere(shape, (12, 12, 12), r)
        bad = i % 5 == 0
        cand = []
        for k in range(5):
            jitter = rng.integers(-1, 2, 3) * (4 if bad and k < 3 else 1)
            cand.append(_sphere(shape, tuple(12 + jitter), r + rng.normal(0, 0.3 if not bad else 2)))
        if i == 7:
            cand[4] = np.zeros(shape, bool)  # empty candidate -> HD inf -> alarm
        cases.append(cand)
        truths.append(t)
    table, sims, _ = alarms.ensemble_quality(cases, similarities=("dice", "neg_hd95_mm"), alpha=1.0, truths=truths)
    assert sims.shape == (30, 5, 2)
    # MAD threshold by hand for one candidate/metric
    col = sims[:, 0, 0]
    med = np.median(col)
    assert alarms.thresholds(sims, 1.0)[0, 0] == pytest.approx(med - np.median(np.abs(col - med)))
    assert table.loc[7, "alarms"] >= 1
    bad_mean = table.loc[table.case % 5 == 0, "alarms"].mean()
    good_mean = table.loc[table.case % 5 != 0, "alarms"].mean()
    assert bad_mean > good_mean
    first = table.sort_values("triage_rank").case.head(6).tolist()
    assert sum(c % 5 == 0 for c in first) >= 4
    cal = alarms.alpha_calibration(sims, truth_dice=table["fusion_truth_dice"].to_numpy())
    assert (np.diff(cal["mean_alarms"]) <= 0).all()  # larger alpha -> fewer alarms
    assert np.nanmin(cal["pearson_r_dice"]) < 0
    assert alarms.entropy_bits(np.array([0, 0, 1, 1])) == pytest.approx(1.0)


def test_quality_table_per_sequence():
    from neurorad.quality.image_metrics import quality_table

    rng = np.random.default_rng(5)
    fg = np.zeros((20, 20, 20), bool)
    fg[5:15, 5:15, 5:15] = True
    imgs = {f"c{i}": {"t1": fg * 100.0 + rng.normal(0, 3, fg.shape), "flair": fg * 50.0 + rng.normal(0, 3, fg.shape)}
            for i in range(3)}
    t = quality_table(imgs, {c: fg for c in imgs})
    assert t.shape == (3, 2 * len(METRICS)) and "flair_SNR1" in t.columns
    assert t.loc["c0", "t1_MEAN"] == pytest.approx(100, abs=1)
