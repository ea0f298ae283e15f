"""Gadolinium decision and activity rule."""

from __future__ import annotations

import pytest

from neurorad.clinical.ms import ms_decision


def test_active_with_new_lesion_recommends_gadolinium() -> None:
    d = ms_decision(["new", "enlarging", "new"])
    assert d.active and d.gadolinium and (d.n_new, d.n_enlarging) == (2, 1)
    assert "recommended" in d.gadolinium_reason and d.gadolinium_reason.count(".") == 1


def test_enlarging_only_is_active() -> None:
    d = ms_decision(["enlarging"])
    assert d.active and d.gadolinium and "1 enlarging" in d.activity_text


def test_no_lesion_no_gadolinium() -> None:
    d = ms_decision([])
    assert not d.active and not d.gadolinium and "not needed" in d.gadolinium_reason


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError):
        ms_decision(["stable"])
