"""The one key-image renderer: radiological convention, letters, finding ids in captions."""

from __future__ import annotations

import numpy as np
import pytest

from neurorad.image import Volume
from neurorad.pipelines.ms_report import lesion_panels
from neurorad.report.key_images import KeyImagePanel, render_key_image


def _coloured_columns(img: np.ndarray) -> np.ndarray:
    return np.argwhere(np.ptp(img.astype(int), axis=2) > 40)[:, 1]


def test_ms_panels_show_left_lesion_on_image_right_and_keep_table_ids() -> None:
    shape = (30, 30, 8)
    img = np.full(shape, 50.0, np.float32)
    labels = np.zeros(shape, np.int32)
    labels[3:7, 12:16, 3:5] = 3  # lesion 3 at small i: RAS i runs to the patient's right -> LEFT hemisphere
    img[labels > 0] = 120.0
    (panel,) = lesion_panels(img, img, labels, ["new", "new", "enlarging"], [(4.5, 13.5, 3.5)], ids=[3])
    assert panel.caption.endswith("lesion 3")  # the table's id, not the position in the list
    third = (panel.pixels.shape[1] - 8) // 3
    cols = _coloured_columns(panel.pixels)
    start = 2 * (third + 4)
    assert cols.size and cols.min() >= start and cols.mean() > start + third / 2
    # without ids the caption still names the label under the centroid
    (again,) = lesion_panels(img, img, labels, ["new", "new", "enlarging"], [(4.5, 13.5, 3.5)])
    assert again.caption.endswith("lesion 3")


def test_render_key_image_refuses_mismatched_grids() -> None:
    a = Volume(np.zeros((5, 5, 3), np.float32), np.eye(4))
    b = Volume(np.zeros((5, 6, 3), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="share one grid"):
        render_key_image([KeyImagePanel(a), KeyImagePanel(b)])
    with pytest.raises(ValueError, match="label map"):
        render_key_image([KeyImagePanel(a)], labels=b)
