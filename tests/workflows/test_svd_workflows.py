"""The wmh and cmb workflows end to end on phantoms (brain mask from the phantom truth, to keep the
tests fast), their review semantics, longitudinal comparison and bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurorad.errors import InputError, ProcessingError
from neurorad.image.nifti import load_nifti, save_nifti
from neurorad.image.volume import Volume
from neurorad.phantom.cases import make_case
from neurorad.workflows import registry
from neurorad.workflows.cmb.workflow import CMBWorkflow, swi_series_problem
from neurorad.workflows.contract import Review, WorkflowInputs
from neurorad.workflows.runner import execute
from neurorad.workflows.wmh.workflow import WMHWorkflow


@pytest.fixture(scope="module")
def wmh_case(tmp_path_factory: pytest.TempPathFactory):
    case = make_case("wmh", seed=1, contrasts=("flair",))
    d = tmp_path_factory.mktemp("wmh")
    save_nifti(case.images["flair"], d / "flair.nii.gz")
    return case, d / "flair.nii.gz", np.asarray(case.truth["truth_brain"].data, bool)


@pytest.fixture(scope="module")
def cmb_case(tmp_path_factory: pytest.TempPathFactory):
    case = make_case("cmb", seed=1, contrasts=("swi",))
    d = tmp_path_factory.mktemp("cmb")
    save_nifti(case.images["swi"], d / "swi.nii.gz")
    return case, d / "swi.nii.gz", np.asarray(case.truth["truth_brain"].data, bool)


@pytest.mark.slow
def test_wmh_end_to_end(wmh_case, tmp_path: Path) -> None:
    case, flair, brain = wmh_case
    wf = registry.load("wmh")
    assert isinstance(wf, WMHWorkflow) and "grade" in wf.describe()["review_fields"]
    res = execute(wf, WorkflowInputs({"flair": flair}, options={"brain_mask": brain}), tmp_path / "o",
                  write_outputs=False)
    d = json.loads((tmp_path / "o" / "result.json").read_text())
    q = {x["name"]: x["value"] for x in d["quantities"]}
    truth_ml = case.case["total_volume_mm3"] / 1000.0
    assert q["wmh_volume"] == pytest.approx(truth_ml, rel=0.3)
    assert len(case.case["lesions"]) - 3 <= q["wmh_count"] <= len(case.case["lesions"]) + 2
    assert q["wmh_count_small"] + q["wmh_count_medium"] + q["wmh_count_large"] == q["wmh_count"]
    assert q["wmh_periventricular_count"] + q["wmh_deep_count"] == q["wmh_count"]
    assert q["wmh_periventricular_volume"] + q["wmh_deep_volume"] == pytest.approx(q["wmh_volume"], abs=1e-3)
    assert q["fazekas_proposal"] == max(q["fazekas_periventricular"], q["fazekas_deep"]) >= 1
    assert "wmh_volume_prior" not in q and "rule" not in res.summary
    # the phantom's punctate lesions are deep, its caps periventricular
    kinds = {f.kind for f in res.findings}
    assert kinds == {"periventricular", "deep"}
    lab = load_nifti(tmp_path / "o" / "wmh_labels.nii.gz").data
    assert sorted(np.unique(lab[lab > 0]).tolist()) == [f.id for f in res.findings]
    assert (tmp_path / "o" / "key_wmh.png").exists()
    # review: discarding a lesion removes its volume and re-grades
    drop = max(res.findings, key=lambda f: f.volume_ml or 0)
    rev = wf.reviewed(res, Review("ACCEPTABLE", {"grade": "3"}, {drop.id: "discard"}))
    assert rev.quantity("wmh_volume").value == pytest.approx(res.quantity("wmh_volume").value - drop.volume_ml,
                                                             abs=1e-3)
    assert rev.quantity("wmh_count").value == res.quantity("wmh_count").value - 1
    # a lesion the reader marked as missed is named by the platform's sentence (WMH's conclusion does not count
    # it): the signed summary never reads "No white-matter hyperintensity found" alone beside the marker
    gone = wf.reviewed(res, Review("ACCEPTABLE", {"grade": "1"}, {f.id: "discard" for f in res.findings},
                                   missed=((1.0, 2.0, 3.0),)))
    assert gone.summary.startswith("No white-matter hyperintensity found")
    assert gone.summary.endswith("The reader marked 1 finding that the software missed; it is not measured and not "
                                 "in the values above.")
    sections = {s.heading: s for s in wf.report_sections(gone, Review("ACCEPTABLE", {"grade": "1"}, {},
                                                                      missed=((1.0, 2.0, 3.0),)))}
    assert sections["Findings"].paragraphs[0].count("The reader marked") == 1
    assert "The reader marked" not in rev.summary
    with pytest.raises(ValueError, match="grade"):
        wf.review_form.validate({"grade": "5"}, {})
    # longitudinal: the previous accepted result's volume is compared; an UNACCEPTABLE one is skipped
    prior = wf.recompute(res)
    prior.quantities = [x for x in prior.quantities if x.name != "wmh_volume"] + [
        type(prior.quantities[0])("wmh_volume", 1.0, "mL")]
    later = wf._prior(WorkflowInputs({}, prior_results=[(res, Review("UNACCEPTABLE")), (prior, None)]))
    assert later is not None and later["wmh_volume"] == 1.0
    res.extra["prior"] = later
    again = wf.recompute(res)
    assert again.quantity("wmh_volume_change").value == pytest.approx(again.quantity("wmh_volume").value - 1.0,
                                                                      abs=1e-3)
    assert "Since the previous study" in again.summary


@pytest.mark.slow
def test_cmb_end_to_end(cmb_case, tmp_path: Path) -> None:
    case, swi, brain = cmb_case
    wf = registry.load("cmb")
    res = execute(wf, WorkflowInputs({"swi": swi}, options={"brain_mask": brain}), tmp_path / "o",
                  write_outputs=False)
    n_true = len(case.case["lesions"])
    n = res.quantity("cmb_count").value
    assert n_true // 2 <= n <= n_true + 1
    assert all(f.kind == "microbleed" and f.measurement("location_class").value in ("lobar", "deep", "infratentorial")
               for f in res.findings)
    assert all(2.0 <= f.measurement("diameter").value <= 10.0 for f in res.findings)
    assert sum(res.quantity(f"cmb_{k}_count").value for k in ("lobar", "deep", "infratentorial")) == n
    # every finding lies on a true microbleed of the phantom (no false positive on this case)
    truth = np.asarray(case.truth["truth_cmb"].data)
    lab = load_nifti(tmp_path / "o" / "cmb_labels.nii.gz").data
    for f in res.findings:
        assert (truth[lab == f.id] > 0).any()
    rev = wf.reviewed(res, Review("ACCEPTABLE", {}, {res.findings[0].id: "incorrect"}))
    assert rev.quantity("cmb_count").value == n - 1
    # microbleeds the reader marked as missed are counted in the sentence and the values (not measured): the
    # signed report never says "No cerebral microbleed found" beside the reader's markers
    none = wf.reviewed(res, Review("ACCEPTABLE", {}, {f.id: "incorrect" for f in res.findings},
                                   missed=((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))))
    assert none.quantity("cmb_count").value == 0 and none.quantity("cmb_reader_marked").value == 2
    assert "marked 2 more microbleeds" in none.summary and "(2 in all)" in none.summary
    sections = {s.heading: s for s in wf.report_sections(none, Review("ACCEPTABLE", {}, {}, missed=((1, 2, 3),) * 2))}
    assert sections["Findings"].paragraphs[0] == none.summary  # said once, not appended twice
    assert wf.reviewed(res, Review("UNACCEPTABLE", {}, {}, missed=((1.0, 2.0, 3.0),))).summary == res.summary
    assert rev.quantity("cmb_reader_marked") is None and "marked" not in rev.summary
    with pytest.raises(ValueError, match="verdict"):
        wf.review_form.validate({}, {1: "discard"})


def _nifti(tmp: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0), name: str = "x.nii.gz") -> Path:
    p = tmp / name
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([*zooms, 1.0])), str(p))
    return p


def test_bad_inputs_give_clear_errors_and_write_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    thick = _nifti(tmp_path, rng.random((64, 64, 20)), (1.0, 1.0, 6.0), "thick.nii.gz")
    with pytest.raises(InputError, match="6.0 mm slices"):
        execute(WMHWorkflow(), WorkflowInputs({"flair": thick}), tmp_path / "o1", write_outputs=False)
    empty = _nifti(tmp_path, np.zeros((40, 40, 40)), name="empty.nii.gz")
    with pytest.raises(InputError, match="empty"):
        execute(WMHWorkflow(), WorkflowInputs({"flair": empty}), tmp_path / "o2", write_outputs=False)
    noise = _nifti(tmp_path, rng.random((40, 40, 40)), name="noise.nii.gz")
    with pytest.raises(ProcessingError, match="empty brain"):
        execute(CMBWorkflow(), WorkflowInputs({"swi": noise}, options={"brain_mask": np.zeros((40,) * 3, bool)}),
                tmp_path / "o3", write_outputs=False)
    phase = _nifti(tmp_path, rng.uniform(-np.pi, np.pi, (40, 40, 40)), name="phase.nii.gz")
    with pytest.raises(InputError, match="phase image"):
        execute(CMBWorkflow(), WorkflowInputs({"swi": phase}), tmp_path / "o4", write_outputs=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.nii.gz", "noise.nii.gz", "phase.nii.gz",
                                                          "thick.nii.gz"]


def test_swi_series_problem_names_what_was_sent() -> None:
    vol = Volume(np.ones((4, 4, 4), np.float32), np.eye(4))
    vol.metadata["dicom"] = {"ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"], "Modality": "MR"}
    err, _ = swi_series_problem(vol)
    assert err and "phase image" in err
    vol.metadata["dicom"] = {"Modality": "MR", "SeriesDescription": "AX T2 FLAIR", "ImageType": ["ORIGINAL"]}
    err, _ = swi_series_problem(vol)
    assert err and "FLAIR" in err and "phase image" in err
    vol.metadata["dicom"] = {"Modality": "MR", "SeriesDescription": "SWI_Images", "ImageType": ["DERIVED", "SWI"]}
    assert swi_series_problem(vol) == (None, None)


@pytest.mark.slow
def test_flair_sent_to_cmb_is_refused(wmh_case, tmp_path: Path) -> None:
    _case, flair, brain = wmh_case
    with pytest.raises(InputError, match="darker than white matter.*not the phase"):
        execute(CMBWorkflow(), WorkflowInputs({"swi": flair}, options={"brain_mask": brain}), tmp_path / "o",
                write_outputs=False)
    assert not (tmp_path / "o").exists()


def test_generated_cli_commands() -> None:
    for name, opt in (("wmh", "--flair"), ("cmb", "--swi")):
        out = subprocess.run([sys.executable, "-c", "from neurorad.cli import main; main()", name, "--help"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert opt in out.stdout and "--engine" in out.stdout
