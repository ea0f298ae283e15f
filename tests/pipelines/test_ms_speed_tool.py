"""bench/ms_speed.py's --compare-config parsing; bench/ms_benchmark.py's warning counts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from neurorad.pipelines.ms_lesions import MSConfig
from tests._bench import load_bench

ms_speed = load_bench("ms_speed")


def test_overrides_are_literals_and_apply_to_msconfig():
    o = ms_speed.parse_overrides("n4_iterations=(25, 25, 15);elastix_iterations=400;brain_engine=hdbet")
    assert o == {"n4_iterations": (25, 25, 15), "elastix_iterations": 400, "brain_engine": "hdbet"}
    cfg = replace(MSConfig(), **o)
    assert cfg.elastix_iterations == 400 and cfg.n4_iterations == (25, 25, 15)
    assert ms_speed.parse_overrides("elastix_iterations=400,crop_margin_mm=6.0") == {
        "elastix_iterations": 400, "crop_margin_mm": 6.0}


def test_an_item_without_a_value_is_refused():
    with pytest.raises(SystemExit, match="not key=value"):
        ms_speed.parse_overrides("elastix_iterations")


def test_benchmark_counts_cases_per_warning_kind():
    bench = load_bench("ms_benchmark")
    rows = [{"warnings": []},
            {"warnings": ["enlarging lesion 2 (170 vs 624 mm3) measures smaller at follow-up than the baseline "
                          "lesion(s) touched: ..."]},
            {"warnings": ["engines disagree on 2 of 3 lesions", "something else"]},
            {"error": "ProcessingError: x", "warnings": ["engines disagree"]}]  # a failed case counts nowhere
    assert bench.warning_counts(rows) == {"cases_with_warnings": 2, "cases_with_engine_disagreement": 1,
                                          "cases_with_shrunken_enlarging": 1}
