import numpy as np
import pytest
from scipy import ndimage

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


@pytest.mark.parametrize("seed", range(4))
def test_label_statistics_equal_scipy_on_the_whole_volume(seed) -> None:
    """The foreground-only label statistics give scipy's full-volume numbers exactly (oracle)."""
    from neurorad.quantify.components import label_centroids_ijk, label_maximum, label_sums

    rng = np.random.default_rng(seed)
    labels, n = connected_components(rng.random((30, 25, 20)) > 0.93)
    assert n > 5
    n_asked = n + 2  # labels past the last one: no voxels
    idx = np.arange(1, n_asked + 1)
    values = rng.normal(size=labels.shape).astype(np.float32)
    assert np.array_equal(label_maximum(values, labels, n_asked), np.asarray(ndimage.maximum(values, labels, idx)))
    mask = values > 0.3
    assert np.array_equal(label_sums(mask, labels, n_asked), np.asarray(ndimage.sum_labels(mask, labels, idx)))
    assert np.array_equal(label_sums(values, labels, n_asked), np.asarray(ndimage.sum_labels(values, labels, idx)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.asarray(ndimage.center_of_mass(np.ones(labels.shape, np.uint8), labels, idx))
    assert np.array_equal(np.asarray(label_centroids_ijk(labels, n_asked)), ref, equal_nan=True)
    assert label_maximum(values, labels, 0).size == 0 and label_centroids_ijk(labels, 0) == []
