"""Pure helpers of the review pages: volume change rule, lesion table, page description."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from neurorad.errors import InputError
from neurorad.server.web import review as rv


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


def test_missing_images_is_a_clear_error(web_env, tmp_path: Path) -> None:
    from neurorad.workflows.ms_lesions import MSLesionsWorkflow

    folder = tmp_path / "r"
    shutil.copytree(web_env.folder, folder)
    (folder / "baseline.nii.gz").unlink()
    with pytest.raises(InputError, match="no viewable image for the panel"):
        rv.build_review(folder, 1, str, MSLesionsWorkflow())


def test_jump_targets_come_from_the_displayed_label_map(web_env, tmp_path: Path) -> None:
    """A workflow may measure findings on the exam's own grid but show them in another space (the
    layout's overlay volume). Here the displayed label map is shifted by 3 voxels (6 mm) in i: the
    jump target must follow it, the reported numbers stay the result's."""
    import nibabel as nib
    import numpy as np

    from neurorad.workflows.contract import WorkflowResult
    from neurorad.workflows.ms_lesions import MSLesionsWorkflow

    folder = tmp_path / "r"
    shutil.copytree(web_env.folder, folder)
    img = nib.load(folder / "new_lesions.nii.gz")
    shifted = np.roll(np.asarray(img.dataobj), 3, axis=0)
    nib.save(nib.Nifti1Image(shifted, img.affine), folder / "new_lesions_common.nii.gz")
    res = WorkflowResult.read_json(folder)
    res.volumes["lesions_common"] = "new_lesions_common.nii.gz"
    res.write_json(folder)
    table = {f.id: f for f in res.findings}
    d = rv.build_review(folder, 1, str, MSLesionsWorkflow())
    assert d["overlay"]["url"] == "new_lesions_common.nii.gz"
    for f in d["findings"]:
        assert f["x_mm"] == pytest.approx(table[f["id"]].centroid_mm[0] + 6.0, abs=0.1)  # +3 voxels of 2 mm
        assert (f["y_mm"], f["z_mm"]) == pytest.approx(table[f["id"]].centroid_mm[1:], abs=0.1)
        assert f["volume_ml"] == pytest.approx(table[f["id"]].volume_ml)


def test_a_low_confidence_finding_is_captioned_on_the_review_page(web_env, tmp_path: Path) -> None:
    """The contract's finding_caption reaches the review page: an MS lesion under the run's activity threshold
    (workflow 1.18.0) reads "(low confidence)" beside its kind, the others do not; a run without the threshold
    captions none."""
    from dataclasses import replace

    from neurorad.workflows.contract import WorkflowResult
    from neurorad.workflows.ms_lesions import MSLesionsWorkflow

    folder = tmp_path / "r"
    shutil.copytree(web_env.folder, folder)
    res = WorkflowResult.read_json(folder)
    assert len(res.findings) >= 2
    res.findings = [replace(f, score=0.15 if i == 0 else 0.9) for i, f in enumerate(res.findings)]
    res.provenance.parameters["activity_min_peak_score"] = 0.23
    res.write_json(folder)
    d = rv.build_review(folder, 1, str, MSLesionsWorkflow())
    labels = {f["id"]: f["kind_label"] for f in d["findings"]}
    first = res.findings[0].id
    assert labels[first].endswith(" (low confidence)")
    assert not any("low confidence" in v for k, v in labels.items() if k != first)
    assert {f["id"]: f["needs_verdict"] for f in d["findings"]} == {f.id: f.id == first for f in res.findings}
    res.provenance.parameters.pop("activity_min_peak_score")
    res.write_json(folder)
    assert not any("low confidence" in f["kind_label"]
                   for f in rv.build_review(folder, 1, str, MSLesionsWorkflow())["findings"])
