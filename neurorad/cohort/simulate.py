"""A SIMULATED cohort shaped like the published paired-CT ICH cohort (PAPERS.md D5), for the demo and
the tests. Nothing in it is patient data: every row carries ``simulated = True``.

Marginals follow the paper's Table 1/2 (1,094 patients; expansion 24.3 %; male 63.8 %; age 61 (SD
~13); GCS median 14 (IQR 4); initial volume median 20.2 mL (IQR 25.4), larger with expansion;
location deep 69.8 % / lobar 21.6 % / infratentorial 8.6 %; IVH 34.2 %; SR index 0.542 (0.104);
AP/LR/SI diameters 60.5 (23.3) / 43.9 (15.0) / 55.3 (15.8) mm; LR length change 1.9 (9.0) mm,
larger with expansion; axis types AP/LR/SI/NL 64.7/5.5/19.5/10.3 %). The outcome (poor, GOS <= 3)
is drawn from a logistic model on the paper's 8 nomogram predictors, with the LR length change's
published OR of 1.139 per mm, tuned to an AUC near the published 0.824; 11 further variables carry
no effect (the paper screened 19).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["simulate_ich_cohort", "NOMOGRAM_PREDICTORS", "CANDIDATES"]

NOMOGRAM_PREDICTORS = ["age", "volume_ml", "location", "gcs", "expansion", "sr_index", "diameter_ap_mm",
                       "length_change_lr_mm"]
CANDIDATES = NOMOGRAM_PREDICTORS + ["sex", "ivh", "onset_to_ct_h", "interval_h", "hypertension", "diabetes",
                                    "smoking", "alcohol", "antiplatelet", "sbp_mmhg", "glucose_mmol"]


def simulate_ich_cohort(n: int = 1094, seed: int = 0) -> pd.DataFrame:
    """The simulated cohort (module doc); one row per patient."""
    rng = np.random.default_rng(seed)
    he = np.zeros(n, bool)
    he[rng.permutation(n)[:int(round(0.243 * n))]] = True
    age = np.clip(rng.normal(61, 13, n), 18, 95).round()
    male = rng.random(n) < 0.638
    gcs_values = np.arange(3, 16)
    gcs_p = np.array([1, 2, 2, 3, 3, 4, 4, 5, 6, 8, 10, 17, 35], float)
    gcs = rng.choice(gcs_values, n, p=gcs_p / gcs_p.sum())
    loc = rng.choice(["deep", "lobar", "infratentorial"], n, p=[0.698, 0.216, 0.086])
    vol = np.exp(rng.normal(np.log(np.where(he, 25.9, 18.7)), 0.9))
    z_vol = (np.log(vol) - np.log(20.2)) / 0.9
    sr = np.clip(rng.normal(0.542, 0.104, n) - 0.02 * z_vol, 0.15, 0.98)
    ap = np.clip(60.5 + 15.0 * z_vol + rng.normal(0, 17, n), 10, 150)
    lr = np.clip(43.9 + 10.0 * z_vol + rng.normal(0, 11, n), 8, 110)
    si = np.clip(55.3 + 10.0 * z_vol + rng.normal(0, 12, n), 8, 120)
    lr_change = rng.normal(np.where(he, 2.8, 1.6), np.where(he, 11.3, 8.1))
    ivh = rng.random(n) < 0.342
    onset = np.exp(rng.normal(np.log(3.0), 0.8, n))
    interval = np.clip(np.exp(rng.normal(np.log(22.8), 0.6, n)), 8.5, 71.5)
    lp = (-0.35 + 0.035 * (age - 61) + 0.6 * np.log(vol / 20.2) - 0.24 * (gcs - 14) + 0.5 * he
          - 1.8 * (sr - 0.542) + 0.008 * (ap - 60.5) + np.log(1.1386) * lr_change
          + np.where(loc == "lobar", -0.3, np.where(loc == "infratentorial", 0.5, 0.0)))
    poor = rng.random(n) < 1 / (1 + np.exp(-lp))
    d = np.stack([ap, lr, si], 1)
    longest = np.array(["AP", "LR", "SI"])[np.argmax(d, 1)]
    ratios = d[:, :, None] / d[:, None, :]
    nl = np.all((ratios >= 0.85) & (ratios <= 1.176), axis=(1, 2))
    return pd.DataFrame({
        "case_id": [f"SIM{i:05d}" for i in range(n)],
        "simulated": True,
        "age": age, "sex": np.where(male, "M", "F"), "gcs": gcs, "location": loc,
        "volume_ml": vol.round(2), "expansion": he.astype(int), "ivh": ivh.astype(int),
        "sr_index": sr.round(4), "diameter_ap_mm": ap.round(1), "diameter_lr_mm": lr.round(1),
        "diameter_si_mm": si.round(1), "axis_type": np.where(nl, "NL", longest),
        "length_change_lr_mm": lr_change.round(2), "onset_to_ct_h": onset.round(1), "interval_h": interval.round(1),
        "hypertension": (rng.random(n) < 0.7).astype(int), "diabetes": (rng.random(n) < 0.15).astype(int),
        "smoking": (rng.random(n) < 0.3).astype(int), "alcohol": (rng.random(n) < 0.25).astype(int),
        "antiplatelet": (rng.random(n) < 0.1).astype(int), "sbp_mmhg": rng.normal(165, 25, n).round(),
        "glucose_mmol": np.exp(rng.normal(np.log(7.0), 0.25, n)).round(2),
        "poor_outcome": poor.astype(int),
    })
