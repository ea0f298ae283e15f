"""Clinical rules of the small-vessel-disease workflows: Fazekas-style proposal, strata, locations."""

from __future__ import annotations

import pytest

from neurorad.clinical.svd import (
    WMHLesion,
    cmb_distribution,
    cmb_location,
    fazekas_proposal,
    size_stratum,
    volume_change,
)


def test_fazekas_proposal_rule() -> None:
    assert fazekas_proposal([]).overall == 0
    caps = WMHLesion(300.0, True, 4.0, 9.0)
    halo = WMHLesion(900.0, True, 8.0, 30.0)
    irregular = WMHLesion(5000.0, True, 14.0, 60.0)
    punctate = WMHLesion(10.0, False, 25.0, 4.0)
    beginning = WMHLesion(400.0, False, 25.0, 12.0)
    confluent = WMHLesion(4000.0, False, 25.0, 25.0)
    assert (fazekas_proposal([caps]).periventricular, fazekas_proposal([caps]).deep) == (1, 0)
    assert fazekas_proposal([caps, halo]).periventricular == 2
    assert fazekas_proposal([irregular, punctate]).periventricular == 3
    assert fazekas_proposal([punctate]).deep == 1
    assert fazekas_proposal([punctate, beginning]).deep == 2
    p = fazekas_proposal([caps, confluent])
    assert (p.periventricular, p.deep, p.overall) == (1, 3, 3)
    assert "10 mm" in p.rule and "20 mm" in p.rule
    # boundaries: <= 5 mm is grade 1, 10 mm across is grade 2
    assert fazekas_proposal([WMHLesion(1.0, True, 5.0, 1.0)]).periventricular == 1
    assert fazekas_proposal([WMHLesion(1.0, False, 50.0, 10.0)]).deep == 2


def test_size_strata_are_the_papers() -> None:
    assert [size_stratum(v) for v in (0.0, 19.99, 20.0, 149.9, 150.0, 1e6)] == [
        "small", "small", "medium", "medium", "large", "large"]


def test_volume_change() -> None:
    assert volume_change(12.0, 10.0) == pytest.approx((2.0, 20.0))
    assert volume_change(1.0, 0.0) == (1.0, None)


def test_cmb_location_classes() -> None:
    assert cmb_location("Cerebelum_Crus1_L".replace("_", " "), "") == "infratentorial"
    assert cmb_location("", "Middle cerebellar peduncle") == "infratentorial"
    assert cmb_location("Thalamus L", "") == "deep"
    assert cmb_location("", "Posterior limb of internal capsule R") == "deep"
    assert cmb_location("Frontal Mid R", "") == "lobar"
    assert cmb_location("", "", mni_z_mm=-40.0) == "infratentorial"
    assert cmb_location("", "", mni_z_mm=30.0) == "lobar"


def test_cmb_distribution() -> None:
    assert cmb_distribution([]) == "none"
    assert cmb_distribution(["lobar", "lobar"]) == "strictly lobar"
    assert cmb_distribution(["deep", "infratentorial"]) == "deep/infratentorial"
    assert cmb_distribution(["lobar", "deep"]) == "mixed"
    with pytest.raises(ValueError, match="unknown"):
        cmb_distribution(["cortex"])
