"""Cohort table from result.json files + a clinical CSV, and Table 1 with tableone (P values
checked against scipy's tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neurorad.cohort.table import build_cohort, read_results, table1
from neurorad.errors import InputError
from neurorad.workflows.contract import Quantity, WorkflowResult


def _results(root: Path, n: int = 12) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"case{i:02d}"
        d.mkdir(parents=True)
        WorkflowResult("ich", "0.1.0", quantities=[
            Quantity("haematoma_volume", float(rng.uniform(3, 60)), "mL"), Quantity("expansion", bool(i % 3 == 0)),
            Quantity("axis_type", ["AP", "LR", "SI"][i % 3])]).write_json(d)


def test_build_cohort_joins_on_case_id(tmp_path: Path) -> None:
    _results(tmp_path / "res")
    pd.DataFrame({"case_id": [f"case{i:02d}" for i in range(10)], "age": range(50, 60)}).to_csv(tmp_path / "c.csv",
                                                                                                 index=False)
    df = build_cohort([tmp_path / "res"], tmp_path / "c.csv")
    assert len(df) == 10 and {"haematoma_volume", "expansion", "axis_type", "age"} <= set(df.columns)
    assert set(df["expansion"]) == {0, 1}
    pd.DataFrame({"id": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="case_id column"):
        build_cohort([tmp_path / "res"], tmp_path / "bad.csv")
    with pytest.raises(InputError, match="no result.json"):
        read_results([tmp_path / "nothing"])


def test_table1_p_values_match_scipy() -> None:
    from neurorad.cohort.simulate import simulate_ich_cohort

    df = simulate_ich_cohort(300, seed=2)
    t = table1(df, ["age", "volume_ml", "location"], groupby="expansion", nonnormal=["volume_ml"])
    p = t[("Grouped by expansion", "P-Value")]
    g0, g1 = df[df.expansion == 0], df[df.expansion == 1]
    p_age = stats.ttest_ind(g0.age, g1.age, equal_var=False).pvalue  # tableone: Welch's t for two groups
    p_vol = stats.kruskal(g0.volume_ml, g1.volume_ml).pvalue
    p_loc = stats.chi2_contingency(pd.crosstab(df.location, df.expansion))[1]
    got = {k[0]: str(v).strip() for k, v in p.items() if str(v).strip()}

    def same(text: str, want: float) -> bool:  # tableone prints 3 decimals, "<0.001" below
        return want < 0.001 if text.startswith("<") else abs(float(text) - want) <= 6e-4

    assert same(got["age, mean (SD)"], p_age), (got, p_age)
    assert same(got["volume_ml, median [Q1,Q3]"], p_vol), (got, p_vol)
    assert same(got["location, n (%)"], p_loc), (got, p_loc)
