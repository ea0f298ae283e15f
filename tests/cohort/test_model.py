"""The cohort model against R: coefficients equal rms::lrm (1e-6), AUC and its DeLong CI equal
pROC (1e-4), on the SIMULATED ICH cohort; nomogram points follow rms's scale; calibration and
decision curves behave as defined."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neurorad.cohort.model import Nomogram, fit_nomogram, screen, validate
from neurorad.cohort.simulate import CANDIDATES, NOMOGRAM_PREDICTORS, simulate_ich_cohort
from neurorad.evaluate.roc import auc_delong, decision_curve

R_SCRIPT = r"""
suppressMessages({library(rms); library(pROC)})
a <- commandArgs(TRUE)
d <- read.csv(a[1])
d$location <- factor(d$location, levels = c("deep", "infratentorial", "lobar"))
f <- lrm(poor_outcome ~ age + volume_ml + location + gcs + expansion + sr_index + diameter_ap_mm +
         length_change_lr_mm, data = d)
p <- plogis(predict(f))
r <- roc(d$poor_outcome, p, levels = c(0, 1), direction = "<", quiet = TRUE)
ci <- ci.auc(r, method = "delong")
cat(jsonlite_free <- paste0('{"coef": [', paste(sprintf("%.12g", coef(f)), collapse = ","), '], "names": ["',
    paste(names(coef(f)), collapse = '","'), '"], "auc": [', paste(sprintf("%.12g", as.numeric(ci)), collapse = ","),
    '], "dxy": ', sprintf("%.12g", f$stats[["Dxy"]]), '}'))
"""


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return simulate_ich_cohort(1094, seed=0)


@pytest.fixture(scope="module")
def model(cohort: pd.DataFrame) -> Nomogram:
    return fit_nomogram(cohort, "poor_outcome", NOMOGRAM_PREDICTORS, label="SIMULATED")


def test_simulated_cohort_is_shaped_like_the_paper(cohort: pd.DataFrame) -> None:
    assert len(cohort) == 1094 and cohort["simulated"].all()
    assert cohort["expansion"].mean() == pytest.approx(0.243, abs=0.001)
    assert cohort["volume_ml"].median() == pytest.approx(20.2, rel=0.1)
    by_he = cohort.groupby("expansion")["volume_ml"].median()
    assert by_he[1] > by_he[0]
    assert cohort["location"].value_counts(normalize=True)["deep"] == pytest.approx(0.698, abs=0.04)


def test_selection_keeps_the_papers_eight_predictors(cohort: pd.DataFrame) -> None:
    s = screen(cohort, "poor_outcome", CANDIDATES)
    assert set(s.loc[s.selected, "predictor"]) == set(NOMOGRAM_PREDICTORS)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R (r-cran-rms, r-cran-proc) not installed")
def test_coefficients_and_auc_equal_r(cohort: pd.DataFrame, model: Nomogram, tmp_path: Path) -> None:
    csv = tmp_path / "cohort.csv"
    cohort.to_csv(csv, index=False)
    script = tmp_path / "oracle.R"
    script.write_text(R_SCRIPT)
    out = subprocess.run(["Rscript", str(script), str(csv)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    ours = [model.coefficients[k] for k in ["Intercept", "age", "volume_ml", "location=infratentorial",
                                            "location=lobar", "gcs", "expansion", "sr_index", "diameter_ap_mm",
                                            "length_change_lr_mm"]]
    assert np.allclose(ours, r["coef"], atol=1e-6, rtol=0), (ours, r["coef"])
    auc = auc_delong(model.predict(cohort), cohort["poor_outcome"])
    lo, mid, hi = r["auc"]
    assert (auc.ci_low, auc.auc, auc.ci_high) == pytest.approx((lo, mid, hi), abs=1e-4)
    assert 2 * auc.auc - 1 == pytest.approx(r["dxy"], abs=1e-6)


def test_nomogram_points_and_risk(model: Nomogram, cohort: pd.DataFrame, tmp_path: Path) -> None:
    row = cohort.iloc[0]
    total = sum(model.points(p, row[p]) for p in model.predictors)
    assert float(model.total_points_to_risk(total)) == pytest.approx(model.predict_one(row.to_dict()), rel=1e-9)
    # the widest predictor spans exactly 100 points
    widest = max(max(model.points(p, v) for v in (model.levels.get(p) or model.ranges[p])) for p in model.predictors)
    assert widest == pytest.approx(100.0)
    back = Nomogram.load(model.save(tmp_path / "m.json"))
    assert back.predict_one(row.to_dict()) == pytest.approx(model.predict_one(row.to_dict()))
    lr = model.odds_ratios().set_index("term").loc["length_change_lr_mm"]
    assert lr["or_low"] < 1.1386 < lr["or_high"]  # the published OR lies in our CI


def test_validation_optimism_is_small_and_positive(model: Nomogram, cohort: pd.DataFrame) -> None:
    v = validate(cohort, model, n_boot=20, seed=1)
    assert v["apparent"]["Slope"] == pytest.approx(1.0, abs=1e-6)  # apparent recalibration slope is 1 by definition
    assert v["apparent"]["Intercept"] == pytest.approx(0.0, abs=1e-6)
    assert 0 <= v["optimism"]["Dxy"] < 0.05 and v["corrected"]["Slope"] < 1.0
    assert len(v["calibration"]["corrected"]) == len(v["calibration"]["predicted"])


def test_decision_curve_definition() -> None:
    p = np.array([0.9, 0.8, 0.3, 0.2])
    y = np.array([1, 0, 1, 0])
    dc = decision_curve(p, y, np.array([0.5]))
    assert dc["net_benefit"][0] == pytest.approx(1 / 4 - 1 / 4 * 1.0)  # TP 1, FP 1, odds 1
    assert dc["treat_all"][0] == pytest.approx(0.5 - 0.5)


def test_ich_report_uses_a_site_nomogram(model: Nomogram, tmp_path: Path) -> None:
    """The ich workflow's report shows the risk from a fitted nomogram, or names what is missing."""
    from neurorad.workflows.contract import Quantity, WorkflowResult
    from neurorad.workflows.ich import ICHWorkflow

    path = model.save(tmp_path / "nomogram.json")
    res = WorkflowResult("ich", ICHWorkflow.version, quantities=[
        Quantity("haematoma_volume", 23.5, "mL"), Quantity("diameter_ap", 50.0, "mm"), Quantity("sr_index", 0.552),
        Quantity("expansion", True), Quantity("length_change_lr", 10.0, "mm"), Quantity("location", "deep")])
    clinical = {"age": 73, "gcs": 13}
    got = ICHWorkflow._nomogram_risk(res, {"nomogram": str(path), "clinical": clinical})
    want = model.predict_one({"age": 73, "gcs": 13, "volume_ml": 23.5, "diameter_ap_mm": 50.0, "sr_index": 0.552,
                              "expansion": 1, "length_change_lr_mm": 10.0, "location": "deep"})
    assert got["risk"] == pytest.approx(want)
    res.extra["nomogram"] = got
    text = " ".join(p for s in ICHWorkflow().report_sections(res, None) for p in s.paragraphs)
    assert f"{100 * want:.0f} %" in text
    assert ICHWorkflow._nomogram_risk(res, {"nomogram": str(path)})["missing"] == ["age", "gcs"]
