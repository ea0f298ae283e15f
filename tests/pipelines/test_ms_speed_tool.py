"""bench/ms_speed.py's --compare-config (ms_sweep.apply_overrides with top-level fields); bench/ms_benchmark.py's
warning counts and its --set variants."""

from __future__ import annotations

from dataclasses import replace

import pytest

from neurorad.pipelines.ms_lesions import MSConfig
from tests._bench import load_bench

ms_speed = load_bench("ms_speed")


def test_overrides_are_literals_and_apply_to_msconfig():
    cfg = ms_speed.config_overrides("n4_iterations=(25, 25, 15);elastix_iterations=400;brain_engine=hdbet")
    assert cfg == replace(MSConfig(), n4_iterations=(25, 25, 15), elastix_iterations=400, brain_engine="hdbet")
    assert ms_speed.config_overrides("elastix_iterations=250,crop_margin_mm=6.0") == replace(
        MSConfig(), elastix_iterations=250, crop_margin_mm=6.0)
    # a parameter group's field as the sweep's --set writes it
    assert ms_speed.config_overrides("fp.drift_ratio=0.45").fp.drift_ratio == 0.45


def test_the_comparison_is_labelled_by_the_changed_fields_only():
    text = "candidate.isotropic_smoothing=True;classify.split_saddle_fraction=None;elastix_iterations=250"
    label = ms_speed.config_label(MSConfig(), ms_speed.config_overrides(text))
    assert label == ("elastix_iterations=250, candidate.isotropic_smoothing=True, "
                     "classify.split_saddle_fraction=None")
    assert ms_speed.config_label(MSConfig(), MSConfig()) == "unchanged"


@pytest.mark.parametrize(("text", "message"), [("elastix_iterations", "expected group.param=value"),
                                               ("elastix_iteration=250", "MSConfig has no field 'elastix_iteration'")])
def test_what_cannot_be_applied_is_refused(text, message):
    with pytest.raises(SystemExit, match=message):
        ms_speed.config_overrides(text)


def test_compare_malloc_reads_every_pairs_wall_from_the_childs_output():
    """--compare-malloc parses the lines main() prints for the first pair and each further one (not the median
    line, not a step's wall)."""
    out = ("warm: preloaded neurorad.pipelines.ms_lesions in 4.1 s wall, 5.0 s CPU (not counted below)\n"
           "fast: deepbet + elastix: 21.3 s wall, 33.9 s CPU (wall/CPU per step: brain 4.5/8.0)\n"
           "TOTAL                                   21.3 / 33.9\n"
           "pair 1: 19.8 s wall, 31.0 s CPU\npair 2: 20.4 s wall, 32.2 s CPU\n"
           "default engines over 3 pairs: median 20.4 s wall, 32.2 s CPU\n")
    assert [float(x) for x in ms_speed._PAIR_WALL.findall(out)] == [21.3, 19.8, 20.4]


def test_benchmark_counts_cases_per_warning_kind():
    bench = load_bench("ms_benchmark")
    rows = [{"warnings": []},
            {"warnings": ["enlarging lesion 2 (170 vs 624 mm3) measures smaller at follow-up than the baseline "
                          "lesion(s) touched: ..."]},
            {"warnings": ["engines disagree on 2 of 3 lesions", "something else"]},
            {"error": "ProcessingError: x", "warnings": ["engines disagree"]}]  # a failed case counts nowhere
    assert bench.warning_counts(rows) == {"cases_with_warnings": 2, "cases_with_engine_disagreement": 1,
                                          "cases_with_shrunken_enlarging": 1}


def test_benchmark_variant_settings_apply_last_and_unknown_ones_are_refused():
    bench = load_bench("ms_benchmark")
    cfg = bench.engine_config("default", 0.02, ("classify.split_enlarging=False", "elastix_iterations=250"))
    assert cfg.classify.split_enlarging is False and cfg.elastix_iterations == 250
    assert cfg.post.min_peak_score == 0.02 and cfg.write_dicom is False  # the benchmark's own settings stay
    assert bench.engine_config("default", None).classify.split_enlarging is True
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        bench.engine_config("default", None, ("classify.nope=1",))
    with pytest.raises(SystemExit):
        bench.main(["--set", "elastix_iterationz=3"])
