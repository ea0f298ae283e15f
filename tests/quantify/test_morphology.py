"""Shape measurements of the ICH study (PAPERS.md D2.6) against analytic answers and the paper's
worked example (Figure 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurorad.clinical.ich import axis_type, direction_change, expansion, length_changes
from neurorad.image.volume import Volume
from neurorad.quantify.morphology import (
    centre_movement,
    describe_shape,
    ellipsoid_surface_area_mm2,
    largest_region_centroid_mm,
    sr_index,
)


def ellipsoid(diam_ap: float, diam_lr: float, diam_si: float, voxel: float = 0.5,
              centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Volume:
    """A binary ellipsoid (x = LR, y = AP, z = SI) on an axis-aligned RAS grid."""
    half = np.array([diam_lr, diam_ap, diam_si]) / 2
    n = (np.ceil(2 * half / voxel) + 8).astype(int)
    axes = [(np.arange(k) - (k - 1) / 2) * voxel for k in n]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    m = (x / half[0]) ** 2 + (y / half[1]) ** 2 + (z / half[2]) ** 2 <= 1.0
    aff = np.diag([voxel, voxel, voxel, 1.0])
    aff[:3, 3] = np.asarray(centre) - (n - 1) / 2 * voxel
    return Volume(m.astype(np.uint8), aff)


def test_sr_index_of_a_sphere_is_one_at_half_mm() -> None:
    for d in (12.0, 30.0):
        s = describe_shape(ellipsoid(d, d, d, 0.5))
        assert s.sr_index == pytest.approx(1.0, abs=0.02), d
        assert s.volume_ml == pytest.approx(math.pi / 6 * d**3 / 1000, rel=0.01)


def test_sr_index_of_an_ellipsoid_matches_the_analytic_value() -> None:
    a, b, c = 22.0, 11.0, 14.5  # semi-axes of the worked example's initial haematoma
    analytic = sr_index(4 / 3 * math.pi * a * b * c, ellipsoid_surface_area_mm2(a, b, c))
    assert 0.8 < analytic < 0.95  # an elongated shape is less regular than a sphere
    s = describe_shape(ellipsoid(2 * a, 2 * b, 2 * c, 0.5))
    assert s.sr_index == pytest.approx(analytic, rel=0.03)
    # the exact ellipsoid area reduces to the sphere's 4 pi r^2 and is symmetric in its arguments
    assert ellipsoid_surface_area_mm2(5, 5, 5) == pytest.approx(4 * math.pi * 25)
    assert ellipsoid_surface_area_mm2(3, 7, 5) == pytest.approx(ellipsoid_surface_area_mm2(7, 5, 3))


def test_paper_worked_example_figure_2() -> None:
    """73-year-old man: L44/W22/H29 mm (AP) -> L50/W32/H32 mm (AP); changes 6/10/3 mm, direction LR;
    15.6 -> 23.5 mL is haematoma expansion (PAPERS.md D3)."""
    s0 = describe_shape(ellipsoid(44, 22, 29))
    s1 = describe_shape(ellipsoid(50, 32, 32))
    for s, want in ((s0, (44, 22, 29)), (s1, (50, 32, 32))):
        got = (s.diameter_ap_mm, s.diameter_lr_mm, s.diameter_si_mm)
        assert np.allclose(got, want, atol=0.6), got
    assert axis_type(s0.diameters) == "AP" and axis_type(s1.diameters) == "AP"
    ch = length_changes(s0.diameters, s1.diameters)
    assert {k: round(v) for k, v in ch.items()} == {"ap": 6, "lr": 10, "si": 3}
    assert direction_change(ch) == "LR"
    he = expansion(15.6, 23.5)
    assert he.expansion and he.change_ml == pytest.approx(7.9) and he.change_percent == pytest.approx(50.64, abs=0.01)
    # the ellipsoids' own volumes (14.7 -> 26.8 mL) also expand
    assert expansion(s0.volume_ml, s1.volume_ml).expansion


def test_axis_type_nl_boundaries() -> None:
    assert axis_type({"ap": 30, "lr": 30 * 0.86, "si": 30 * 0.9}) == "NL"
    assert axis_type({"ap": 30, "lr": 30 * 0.84, "si": 30}) == "AP"  # LR/AP = 0.84 < 0.850
    assert axis_type({"ap": 20, "lr": 25, "si": 40}) == "SI"
    assert axis_type({"ap": 20, "lr": 35, "si": 21}) == "LR"


def test_direction_change_tolerance() -> None:
    assert direction_change({"ap": 5.0, "lr": 4.0, "si": 0.0}) == "none"  # 1 mm apart < 2 mm
    assert direction_change({"ap": 5.0, "lr": 4.0, "si": 0.0}, tolerance_mm=0.5) == "AP"
    assert direction_change({"ap": -9.0, "lr": 2.0, "si": 3.0}) == "AP"  # absolute change


def test_expansion_thresholds() -> None:
    assert expansion(30.0, 36.0).expansion  # exactly +6 mL
    assert not expansion(30.0, 35.9).expansion  # +5.9 mL, +19.7 %
    assert expansion(3.0, 3.99).expansion  # exactly +33 %
    assert not expansion(10.0, 13.2).expansion


def test_centre_of_largest_region_and_movement() -> None:
    v = ellipsoid(20, 20, 20, 1.0, centre=(10.0, -5.0, 3.0))
    m = v.data.copy()
    m[:2, :2, :2] = 1  # a small second region far from the centre
    c = largest_region_centroid_mm(m, v.affine)
    assert np.allclose(c, (10.0, -5.0, 3.0), atol=1e-6)
    mv = centre_movement((0, 0, 0), (3.0, 4.0, 12.0))
    assert mv.distance_mm == pytest.approx(13.0)
    assert (mv.axial_mm, mv.coronal_mm, mv.sagittal_mm) == pytest.approx((5.0, math.hypot(3, 12), math.hypot(4, 12)))


def test_oblique_grid_is_refused() -> None:
    v = ellipsoid(10, 10, 10, 1.0)
    v.affine[:3, :3] = np.array([[0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    with pytest.raises(ValueError, match="axis-aligned"):
        describe_shape(v)
