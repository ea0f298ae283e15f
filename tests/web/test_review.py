"""Pure helpers of the review pages: volume change rule, lesion table, page description."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from neurorad.errors import InputError
from neurorad.server.web import review as rv


def test_volume_threshold_is_the_volume_equivalent_of_rano_2d() -> None:
    # RANO progression: >= 25 % increase in the product of two perpendicular diameters. For a
    # sphere (V ~ d^3, SPD ~ d^2) that is a volume factor 1.25^(3/2) = 1.398, i.e. ~40 %.
    assert 1.25**1.5 - 1 == pytest.approx(rv.PROGRESSION_VOLUME_INCREASE, abs=0.005)


@pytest.mark.parametrize(
    ("prior", "current", "flag"),
    [(10.0, 14.0, True), (10.0, 13.99, False), (10.0, 5.0, False), (10.0, 20.0, True), (0.0, 1.0, True),
     (0.0, 0.0, False)],
)
def test_volume_change_flag(prior: float, current: float, flag: bool) -> None:
    c = rv.volume_change("prior", prior, current)
    assert c.flag is flag
    if prior:
        assert c.change_fraction == pytest.approx((current - prior) / prior)


def test_volume_change_text_and_errors() -> None:
    assert rv.volume_change("p", 10, 14).change_text == "+40%"
    assert rv.volume_change("p", 0, 2).change_text == "new"
    with pytest.raises(ValueError):
        rv.volume_change("p", -1, 2)


def test_read_candidates_units_and_bad_rows(tmp_path: Path) -> None:
    p = tmp_path / "lesions.csv"
    p.write_text("id,kind,volume_mm3,centroid_x_mm,centroid_y_mm,centroid_z_mm,location\n"
                 "4,new,1250,1.5,-2,3,JHU tract\n")
    (c,) = rv.read_candidates(p)
    assert (c.lesion_id, c.volume_ml, c.x_mm, c.z_mm, c.region) == (4, 1.25, 1.5, 3.0, "JHU tract")
    p.write_text("id,volume_mm3\nx,abc\n")
    with pytest.raises(InputError, match="lesions.csv"):
        rv.read_candidates(p)
    assert rv.read_candidates(tmp_path / "absent.csv") == []


def test_worklist_order_and_wait_text() -> None:
    now = datetime(2026, 1, 2, 12, 0)
    rows = [(0, now - timedelta(hours=5)), (3, now), (3, now - timedelta(hours=1)), (0, now - timedelta(days=3))]
    ordered = sorted(rows, key=lambda r: rv.worklist_order_key(*r))
    assert ordered == [rows[2], rows[1], rows[3], rows[0]]
    assert rv.humanize_wait(now - timedelta(minutes=7), now) == "7 min"
    assert rv.humanize_wait(now - timedelta(hours=3, minutes=5), now) == "3 h 5 min"
    assert rv.humanize_wait(now - timedelta(days=2, hours=4), now) == "2 d 4 h"


def test_json_for_script_cannot_close_the_element() -> None:
    s = rv.json_for_script({"a": "</script><b>&"})
    assert "</" not in s and json.loads(s) == {"a": "</script><b>&"}


def make_glioma_folder(folder: Path, ms_folder: Path, prior_ml: tuple[float, float], current_ml: float) -> None:
    """Three time points (current + two priors) built from the MS test images."""
    folder.mkdir(parents=True)
    for name in ("prior2", "prior1"):
        shutil.copy(ms_folder / "baseline.nii.gz", folder / f"{name}.nii.gz")
    shutil.copy(ms_folder / "followup.nii.gz", folder / "current.nii.gz")
    shutil.copy(ms_folder / "new_lesions.nii.gz", folder / "segmentation.nii.gz")
    shutil.copy(ms_folder / "lesions.csv", folder / "lesions.csv")
    (folder / "result.json").write_text(json.dumps({
        "workflow": "glioma-volumetry", "finding": "tumour volume", "volume_ml": current_ml,
        "priors": [{"timepoint": "prior1", "label": "prior 1", "volume_ml": prior_ml[0]},
                   {"timepoint": "prior2", "label": "prior 2", "volume_ml": prior_ml[1]}],
    }))


def test_three_time_point_protocol(web_env, tmp_path: Path) -> None:
    folder = tmp_path / "glioma"
    make_glioma_folder(folder, web_env.folder, (10.0, 6.0), 12.0)
    d = rv.build_review(folder, 7, lambda n: f"/f/{n}")
    assert [p["timepoint"] for p in d.panels] == ["prior2", "prior1", "current"]
    assert [p["overlay"] for p in d.panels] == [False, False, True]
    assert d.overlay["url"] == "/f/segmentation.nii.gz"
    assert d.timepoints_required == ["prior 2", "prior 1", "current + segmentation"]
    ch = {c.label: c for c in d.volume_changes}
    assert ch["prior 1"].change_fraction == pytest.approx(0.2) and not ch["prior 1"].flag
    assert ch["prior 2"].change_fraction == pytest.approx(1.0) and ch["prior 2"].flag


def test_missing_images_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    with pytest.raises(InputError, match="no viewable images"):
        rv.build_review(tmp_path / "r", 1, str)


def test_jump_targets_come_from_the_displayed_label_map(web_env, tmp_path: Path) -> None:
    """lesions.csv is measured on the follow-up's grid; the viewer shows the common space. Here
    the common-space label map is shifted by 3 voxels (6 mm) in i: the jump target must follow it."""
    import nibabel as nib
    import numpy as np

    folder = tmp_path / "r"
    shutil.copytree(web_env.folder, folder)
    img = nib.load(folder / "new_lesions.nii.gz")
    shifted = np.roll(np.asarray(img.dataobj), 3, axis=0)
    nib.save(nib.Nifti1Image(shifted, img.affine), folder / "new_lesions_common.nii.gz")
    table = {c.lesion_id: c for c in rv.read_candidates(folder / "lesions.csv")}
    d = rv.build_review(folder, 1, str)
    assert d.overlay["url"] == "new_lesions_common.nii.gz"
    for c in d.lesions:
        assert c.x_mm == pytest.approx(table[c.lesion_id].x_mm + 6.0, abs=0.05)  # +3 voxels of 2 mm
        assert (c.y_mm, c.z_mm) == pytest.approx((table[c.lesion_id].y_mm, table[c.lesion_id].z_mm), abs=0.05)
        assert c.volume_ml == table[c.lesion_id].volume_ml  # the reported numbers stay the table's
