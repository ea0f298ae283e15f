"""bench/ms_speed.py's --compare-config parsing: MSConfig fields as Python literals."""

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
