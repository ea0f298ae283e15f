import numpy as np
import pytest

from neurorad.quantify.components import connected_components, describe_components, label_volumes_mm3


def test_connectivity_diagonal_neighbours():
    m = np.zeros((4, 4, 4), bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # corner-touching only
    assert connected_components(m, 26)[1] == 1
    assert connected_components(m, 18)[1] == 2
    assert connected_components(m, 6)[1] == 2
    assert connected_components(np.zeros((3, 3, 3)), 26)[1] == 0
    with pytest.raises(ValueError):
        connected_components(m, 8)


def test_volumes_and_centroids_against_analytic_boxes():
    m = np.zeros((20, 20, 20), bool)
    m[2:5, 2:6, 2:7] = True  # 3*4*5 = 60 voxels, centre (3, 3.5, 4)
    m[10:12, 10:12, 10:12] = True  # 8 voxels
    labels, n = connected_components(m)
    vols = sorted(label_volumes_mm3(labels, 0.5, n))
    assert vols == [4.0, 30.0]
    comps = {c.n_voxels: c for c in describe_components(labels, n, 0.5)}
    assert comps[60].centroid_ijk == pytest.approx((3.0, 3.5, 4.0))
    assert comps[8].volume_mm3 == 4.0
