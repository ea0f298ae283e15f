"""Phantom datasets in the nnU-Net raw layout with domain randomisation (real anatomy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from neurorad.errors import InputError
from neurorad.phantom.randomise import randomised_case
from neurorad.segment.dataset import read_dataset


@pytest.mark.slow
def test_randomised_brain_case_is_deterministic_and_varied(tmp_path):
    a_imgs, a_lab, a_rec = randomised_case("wmh", 3, target="brain", contrasts=("flair",))
    b_imgs, b_lab, _ = randomised_case("wmh", 3, target="brain", contrasts=("flair",))
    np.testing.assert_array_equal(a_imgs[0].data, b_imgs[0].data)
    np.testing.assert_array_equal(a_lab.data, b_lab.data)
    assert a_imgs[0].same_grid(a_lab)
    # the draws are recorded and change the acquisition: voxel size and pose are not the defaults
    assert 1.0 <= a_rec["slice_thickness_mm"] <= 5.0
    assert abs(a_imgs[0].spacing_mm[2] - a_rec["slice_thickness_mm"]) < 0.2
    assert a_imgs[0].is_oblique  # rigid pose in the scanner frame
    brain_ml = float(np.asarray(a_lab.data).sum() * a_lab.voxel_volume_mm3 / 1000)
    assert 1000 < brain_ml < 2000  # an adult brain (Colin27/MNI152 ~1.5 L), warped
    # the CLI writes it as an nnU-Net raw dataset
    from neurorad.cli import app

    r = CliRunner().invoke(app, ["--quiet", "dataset", "phantom", "--kind", "wmh", "--cases", "1", "--target",
                                 "brain", "--contrasts", "flair", "--randomise", "noise,bias", "--out",
                                 str(tmp_path / "ds")])
    assert r.exit_code == 0, r.output
    ds = read_dataset(tmp_path / "ds")
    assert ds.channel_names == ("FLAIR",) and ds.labels == {0: "background", 1: "brain"}
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert "snr" in meta["neurorad_cases"][0] and "pose_rotation_deg" not in meta["neurorad_cases"][0]


def test_bad_phantom_dataset_requests():
    with pytest.raises(InputError, match="unknown phantom kind"):
        randomised_case("nope", 0)
    with pytest.raises(InputError, match="target must be"):
        randomised_case("wmh", 0, target="skull")


def test_weak_labels_from_another_contrast_of_the_same_case():
    """``label_contrast``: the label source sees the case's T1 (same geometry), only the FLAIR is written."""
    from neurorad.phantom.randomise import training_cases

    seen = []

    def relabel(vols, truth):
        seen.append((vols[0].metadata.get("contrast"), vols[0].same_grid(truth)))
        return truth.with_data((np.asarray(truth.data) > 0).astype(np.uint8))

    tc = training_cases("wmh", 1, target="brain", contrasts=("flair",), randomise=set(), relabel=relabel,
                        label_source="weak (test)", label_contrast="t1")
    (cid, vols, lab), = list(tc.cases)
    assert seen == [("t1", True)]
    assert [v.metadata["contrast"] for v in vols] == ["flair"] and vols[0].same_grid(lab)
    assert tc.records[0]["labels_from"] == "t1" and tc.records[0]["contrasts"] == ["flair"]


def test_weak_label_options_need_weak_labels(tmp_path):
    from neurorad.cli import app

    r = CliRunner().invoke(app, ["--quiet", "dataset", "phantom", "--kind", "wmh", "--cases", "1", "--target", "brain",
                                 "--weak-from", "t1", "--out", str(tmp_path / "ds")])
    assert r.exit_code != 0 and "--labels weak" in (r.output + str(r.exception))
    r = CliRunner().invoke(app, ["--quiet", "dataset", "phantom", "--kind", "wmh", "--cases", "1", "--target", "brain",
                                 "--labels", "weak", "--weak-engine", "nope", "--out", str(tmp_path / "ds")])
    assert r.exit_code != 0 and "unknown brain extraction engine" in (r.output + str(r.exception))
    assert not (tmp_path / "ds").exists()
