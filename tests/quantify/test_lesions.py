"""Lesion table and atlas lookup: analytic volumes/centroids, real AAL/JHU name lists."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from neurorad import resources
from neurorad.image.volume import Volume
from neurorad.quantify.atlas import component_regions, load_atlas, read_label_names
from neurorad.quantify.lesions import equivalent_diameter_mm, lesion_table, write_lesion_csv


def _labels() -> Volume:
    lab = np.zeros((20, 20, 20), np.int16)
    lab[2:5, 2:5, 2:5] = 1  # 27 voxels
    lab[10:12, 10:14, 10:15] = 2  # 40 voxels
    aff = np.diag([2.0, 1.5, 3.0, 1.0])
    aff[:3, 3] = [-10, 5, 20]
    return Volume(lab, aff)


def test_lesion_table_volumes_and_centroids_are_analytic() -> None:
    vol = _labels()
    rows = lesion_table(vol, 2, ["new", "enlarging"])
    assert [r.kind for r in rows] == ["new", "enlarging"]
    assert rows[0].volume_mm3 == pytest.approx(27 * 9.0)
    assert rows[1].volume_mm3 == pytest.approx(40 * 9.0)
    # centre of voxels 2..4 is index 3 -> world = 3*spacing + origin
    assert (rows[0].centroid_x_mm, rows[0].centroid_y_mm, rows[0].centroid_z_mm) == pytest.approx((-4.0, 9.5, 29.0))
    assert rows[1].centroid_x_mm == pytest.approx(10.5 * 2 - 10)
    assert rows[0].diameter_mm == pytest.approx((6 * 243 / np.pi) ** (1 / 3), abs=0.01)


def test_equivalent_diameter_of_a_sphere() -> None:
    assert equivalent_diameter_mm(4 / 3 * np.pi * 5**3) == pytest.approx(10.0)


def test_csv_has_header_even_without_lesions(tmp_path) -> None:
    p = write_lesion_csv([], tmp_path / "l.csv")
    with open(p) as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["id", "kind", "volume_mm3"] and len(rows) == 1


def test_component_regions_majority_label() -> None:
    lab = np.zeros((5, 5, 5), np.int32)
    lab[0:2, 0, 0] = 1
    lab[4, 4, 4] = 2
    atlas = np.zeros_like(lab)
    atlas[0, 0, 0] = 7
    atlas[1, 0, 0] = 7
    out = component_regions(lab, 2, atlas, {7: "Seven"})
    assert out[0] == ("Seven", 1.0)
    assert out[1] == ("", 0.0)


def test_real_atlas_names_and_hemispheres() -> None:
    names = read_label_names(resources.mricron("aal.nii.txt"))
    assert len(names) == 116 and names[1] == "Precentral L"
    jhu = read_label_names(resources.mricron("JHU-WhiteMatter-labels-1mm.nii.txt"))
    assert len(jhu) == 48
    aal = load_atlas("aal", resources.mricron("aal.nii.gz"), resources.mricron("aal.nii.txt"))
    # independent oracle: AAL names end in _L / _R; in RAS+ space left is x < 0
    data = aal.volume.data
    ijk = np.argwhere(data > 0)[::997]
    xyz = aal.volume.voxel_to_world(ijk)
    for (i, j, k), x in zip(ijk, xyz[:, 0], strict=True):
        name = aal.names[int(data[i, j, k])]
        if name.endswith(" L") and abs(x) > 10:
            assert x < 0
        if name.endswith(" R") and abs(x) > 10:
            assert x > 0


def test_jhu_mirrored_to_match_aal_hemispheres() -> None:
    jhu = load_atlas("jhu", resources.mricron("JHU-WhiteMatter-labels-1mm.nii.gz"),
                     resources.mricron("JHU-WhiteMatter-labels-1mm.nii.txt"), mirror_lr=True)
    for lab, name in jhu.names.items():
        ijk = np.argwhere(jhu.volume.data == lab)
        if not len(ijk):
            continue
        x = float(jhu.volume.voxel_to_world(ijk)[:, 0].mean())
        if name.endswith(" R"):
            assert x > 3, name
        if name.endswith(" L"):
            assert x < -3, name
