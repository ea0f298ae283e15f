"""Prognostic model of a cohort: predictor selection, multivariable logistic regression, nomogram,
discrimination, calibration with bootstrap optimism correction, decision curves.

Follows the published ICH study (PAPERS.md D2.8, D4): candidates are screened one at a time and
those with **P < 0.05** (likelihood-ratio test of the univariable logistic model) enter one
multivariable logistic regression (maximum likelihood, Newton-Raphson, statsmodels ``Logit``;
identical to R ``rms::lrm``, the oracle in tests/cohort/test_model.py); odds ratios with Wald
95 % CIs; the model drawn as a **nomogram** as R ``rms::nomogram`` draws one (the predictor
whose effect spans the widest linear-predictor range gets 0-100 points, the others in
proportion; total points map to the linear predictor and the risk); **ROC AUC** with the DeLong
CI (:mod:`neurorad.evaluate.roc`); **calibration** by Harrell's bootstrap optimism correction
(Harrell, Lee & Mark, Stat Med 1996; ``rms::validate``/``calibrate``): indexes (Dxy, calibration
intercept and slope, Brier) and a lowess calibration curve are computed on each bootstrap fit's
own sample and on the original sample, and the mean difference (the optimism) is subtracted from
the apparent value; **decision-curve analysis** (Vickers & Elkin 2006).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from neurorad.errors import InputError
from neurorad.evaluate.roc import auc_delong

__all__ = ["Nomogram", "screen", "fit_nomogram", "validate", "calibration_curve", "design"]


def _is_categorical(s: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def design(df: pd.DataFrame, predictors: list[str], levels: dict[str, list[str]] | None = None
           ) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Numeric design matrix (no intercept): numeric columns as they are, categorical ones as
    treatment dummies ``name=level`` against their first level (sorted, or as given in ``levels``)."""
    levels = dict(levels or {})
    cols = {}
    for p in predictors:
        s = df[p]
        if _is_categorical(s):
            lv = levels.get(p) or sorted(str(v) for v in s.dropna().unique())
            levels[p] = lv
            for v in lv[1:]:
                cols[f"{p}={v}"] = (s.astype(str) == v).astype(float)
        else:
            cols[p] = s.astype(float)
    return pd.DataFrame(cols, index=df.index), levels


def _logit_fit(x: pd.DataFrame, y: np.ndarray):  # noqa: ANN202 - statsmodels result
    import statsmodels.api as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sm.Logit(y, sm.add_constant(x, has_constant="add")).fit(method="newton", maxiter=100, tol=1e-12,
                                                                       disp=False)


def screen(df: pd.DataFrame, outcome: str, candidates: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Univariable logistic screen: one row per candidate with its likelihood-ratio P value and
    whether it enters the multivariable model (P < ``alpha``)."""
    y = _outcome(df, outcome)
    rows = []
    for c in candidates:
        sub = df[[c]].dropna()
        x, _ = design(sub, [c])
        res = _logit_fit(x, y[sub.index.map(df.index.get_loc)])
        rows.append({"predictor": c, "lr_chi2": float(res.llr), "df": int(res.df_model), "p": float(res.llr_pvalue),
                     "selected": bool(res.llr_pvalue < alpha)})
    return pd.DataFrame(rows)


def _outcome(df: pd.DataFrame, outcome: str) -> np.ndarray:
    if outcome not in df:
        raise InputError(f"no outcome column {outcome!r}; columns: {list(df.columns)}")
    y = df[outcome]
    vals = set(pd.unique(y.dropna()))
    if not vals <= {0, 1}:
        raise InputError(f"outcome {outcome!r} must be 0/1 or true/false, found {sorted(map(str, vals))[:5]}")
    return y.astype(int).to_numpy()


@dataclass
class Nomogram:
    """A fitted logistic model and its nomogram scale (JSON round trip: :meth:`save`, :meth:`load`)."""

    outcome: str
    predictors: list[str]
    coefficients: dict[str, float]  # "Intercept" and design columns
    levels: dict[str, list[str]] = field(default_factory=dict)
    ranges: dict[str, list[float]] = field(default_factory=dict)  # numeric predictor -> [low, high]
    stderr: dict[str, float] = field(default_factory=dict)
    n: int = 0
    events: int = 0
    label: str = ""

    # -- prediction
    def linear_predictor(self, df: pd.DataFrame) -> np.ndarray:
        x, _ = design(df, self.predictors, self.levels)
        lp = np.full(len(df), self.coefficients["Intercept"])
        for c in x.columns:
            lp += self.coefficients[c] * x[c].to_numpy()
        return lp

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.linear_predictor(df)))

    def predict_one(self, values: dict[str, Any]) -> float:
        return float(self.predict(pd.DataFrame([{p: values[p] for p in self.predictors}]))[0])

    # -- odds ratios
    def odds_ratios(self, level: float = 0.95) -> pd.DataFrame:
        z = stats.norm.ppf(1 - (1 - level) / 2)
        rows = []
        for c, b in self.coefficients.items():
            if c == "Intercept":
                continue
            se = self.stderr.get(c, float("nan"))
            rows.append({"term": c, "coef": b, "se": se, "or": np.exp(b), "or_low": np.exp(b - z * se),
                         "or_high": np.exp(b + z * se), "p": 2 * stats.norm.sf(abs(b / se)) if se > 0 else np.nan})
        return pd.DataFrame(rows)

    # -- nomogram scale (rms::nomogram)
    def _effects(self) -> dict[str, dict[str, float]]:
        """predictor -> {value label: beta * x} at the ends of its axis (numeric) or per level."""
        out: dict[str, dict[str, float]] = {}
        for p in self.predictors:
            if p in self.levels:
                lv = self.levels[p]
                out[p] = {v: (0.0 if i == 0 else self.coefficients[f"{p}={v}"]) for i, v in enumerate(lv)}
            else:
                lo, hi = self.ranges[p]
                b = self.coefficients[p]
                out[p] = {repr(lo): b * lo, repr(hi): b * hi}
        return out

    def points_scale(self) -> float:
        """Linear-predictor units per point: the widest effect range spans 100 points."""
        widest = max(max(e.values()) - min(e.values()) for e in self._effects().values())
        return widest / 100.0 if widest > 0 else 1.0

    def points(self, predictor: str, value: Any) -> float:
        """Points of one predictor value (0 at the predictor's lowest effect)."""
        eff = self._effects()[predictor]
        low = min(eff.values())
        if predictor in self.levels:
            v = eff[str(value)]
        else:
            v = self.coefficients[predictor] * float(value)
        return (v - low) / self.points_scale()

    def total_points_to_risk(self, total: float | np.ndarray) -> np.ndarray:
        base = self.coefficients["Intercept"] + sum(min(e.values()) for e in self._effects().values())
        lp = base + np.asarray(total, float) * self.points_scale()
        return 1.0 / (1.0 + np.exp(-lp))

    # -- persistence
    def save(self, path: str | Path) -> Path:
        p = Path(path)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps({"format": "neurorad-nomogram/1", **asdict(self)}, indent=2))
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> Nomogram:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
            if d.pop("format", None) != "neurorad-nomogram/1":
                raise ValueError("not a neurorad nomogram")
            return cls(**d)
        except (OSError, ValueError, TypeError) as err:
            raise InputError(f"cannot read the nomogram ({err})", p) from err


def fit_nomogram(df: pd.DataFrame, outcome: str, predictors: list[str], label: str = "") -> Nomogram:
    """Multivariable logistic regression of ``outcome`` on ``predictors`` (complete cases)."""
    sub = df[[outcome, *predictors]].dropna()
    if len(sub) < 10:
        raise InputError(f"only {len(sub)} complete cases for {predictors}")
    y = _outcome(sub, outcome)
    x, levels = design(sub, predictors)
    res = _logit_fit(x, y)
    names = ["Intercept", *x.columns]
    coefs = {n: float(v) for n, v in zip(names, np.asarray(res.params), strict=True)}
    se = {n: float(v) for n, v in zip(names, np.asarray(res.bse), strict=True)}
    ranges = {p: [float(sub[p].min()), float(sub[p].max())] for p in predictors if p not in levels}
    return Nomogram(outcome, list(predictors), coefs, levels, ranges, se, len(sub), int(y.sum()), label)


def _indexes(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Dxy (= 2 AUC - 1), calibration intercept and slope (logistic recalibration), Brier score."""
    import statsmodels.api as sm

    lp = np.log(np.clip(p, 1e-12, 1 - 1e-12) / np.clip(1 - p, 1e-12, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sm.Logit(y, sm.add_constant(lp)).fit(method="newton", disp=False, tol=1e-10)
    return {"Dxy": 2 * auc_delong(p, y).auc - 1, "Intercept": float(r.params[0]), "Slope": float(r.params[1]),
            "Brier": float(np.mean((p - y) ** 2))}


def _lowess(p: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    from statsmodels.nonparametric.smoothers_lowess import lowess

    fit = lowess(y, p, frac=2 / 3, it=0, return_sorted=True)
    return np.interp(grid, fit[:, 0], fit[:, 1])


def validate(df: pd.DataFrame, model: Nomogram, n_boot: int = 200, seed: int = 0,
             grid: np.ndarray | None = None) -> dict[str, Any]:
    """Apparent and optimism-corrected indexes and calibration curve (module doc)."""
    sub = df[[model.outcome, *model.predictors]].dropna().reset_index(drop=True)
    y = _outcome(sub, model.outcome)
    p = model.predict(sub)
    grid = np.linspace(np.quantile(p, 0.02), np.quantile(p, 0.98), 50) if grid is None else grid
    apparent = _indexes(p, y)
    app_curve = _lowess(p, y, grid)
    rng = np.random.default_rng(seed)
    opt = {k: [] for k in apparent}
    curve_opt = []
    done = 0
    while done < n_boot:
        idx = rng.integers(0, len(sub), len(sub))
        boot = sub.iloc[idx].reset_index(drop=True)
        yb = y[idx]
        if yb.sum() in (0, len(yb)):
            continue
        try:
            mb = fit_nomogram(boot, model.outcome, model.predictors)
        except (InputError, np.linalg.LinAlgError, KeyError):
            continue
        pb_train, pb_test = mb.predict(boot), mb.predict(sub)
        tr, te = _indexes(pb_train, yb), _indexes(pb_test, y)
        for k in opt:
            opt[k].append(tr[k] - te[k])
        curve_opt.append(_lowess(pb_train, yb, grid) - _lowess(pb_test, y, grid))
        done += 1
    optimism = {k: float(np.mean(v)) for k, v in opt.items()}
    corrected = {k: apparent[k] - optimism[k] for k in apparent}
    auc = auc_delong(p, y)
    return {"apparent": apparent, "optimism": optimism, "corrected": corrected, "n_boot": n_boot,
            "auc": asdict(auc), "auc_corrected": (corrected["Dxy"] + 1) / 2,
            "calibration": {"predicted": grid.tolist(), "apparent": app_curve.tolist(),
                            "corrected": (app_curve - np.mean(curve_opt, axis=0)).tolist()}}


def calibration_curve(result: dict[str, Any]) -> pd.DataFrame:
    c = result["calibration"]
    return pd.DataFrame({"predicted": c["predicted"], "apparent": c["apparent"], "corrected": c["corrected"]})
