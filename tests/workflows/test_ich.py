"""The ``ich`` workflow on synthetic heads: result.json, expansion, review per scan, bad input.

The fast tests measure in native space (no template registration) on small analytic heads; the
slow test runs the whole pipeline (template registration + Dice QC) on an ich-pair phantom.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from neurorad.errors import InputError, ProcessingError
from neurorad.image.dicom_series import write_dicom_series
from neurorad.image.nifti import save_nifti
from neurorad.image.volume import Volume
from neurorad.workflows.contract import Review, WorkflowInputs
from neurorad.workflows.ich import ICHWorkflow
from neurorad.workflows.runner import execute


def synthetic_head(haematoma_mm: tuple[float, float, float] | None, voxel: float = 1.0, noise: float = 2.0,
                   seed: int = 0, centre: tuple[float, float, float] = (22.0, 5.0, 8.0)) -> Volume:
    """A CT head in HU: air, scalp, skull (1000 HU), brain (33 HU), ventricle (8 HU) and an
    ellipsoidal haematoma of diameters (AP, LR, SI) mm at 70 HU."""
    n = int(150 / voxel)
    ax = (np.arange(n) - (n - 1) / 2) * voxel
    x, y, z = np.meshgrid(ax, ax * 1.2, ax, indexing="ij")
    r = np.sqrt((x / 58) ** 2 + (y / 72) ** 2 + (z / 58) ** 2)
    img = np.full(x.shape, -1000.0, np.float32)
    img[r < 1.12] = 40.0  # scalp
    img[r < 1.06] = 1000.0  # skull
    img[r < 1.0] = 33.0  # brain
    img[(np.abs(x) < 8) & (np.abs(y) < 25) & (np.abs(z - 5) < 10)] = 8.0  # ventricle
    if haematoma_mm is not None:
        ap, lr, si = haematoma_mm
        e = ((x - centre[0]) / (lr / 2)) ** 2 + ((y - centre[1]) / (ap / 2)) ** 2 + ((z - centre[2]) / (si / 2)) ** 2
        img[e <= 1] = 70.0
    img += np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)
    aff = np.diag([voxel, 1.2 * voxel, voxel, 1.0])
    aff[:3, 3] = -(n - 1) / 2 * voxel * np.array([1.0, 1.2, 1.0])
    return Volume(img, aff, {"modality": "CT"})


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ich")
    out = {}
    for name, h in (("prior", (44, 22, 29)), ("current", (50, 32, 32))):
        p = d / f"{name}.nii"
        save_nifti(synthetic_head(h, seed=len(name)), p, dtype=np.int16)
        out[name] = p
    return out


@pytest.fixture(scope="module")
def pair_run(pair_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ich-run") / "o"
    execute(ICHWorkflow(), WorkflowInputs({"ct": pair_files["current"], "prior_ct": pair_files["prior"]},
                                          options={"space": "native"}), out)
    return out


def _run(series: dict[str, Path], out: Path, **options) -> dict:
    execute(ICHWorkflow(), WorkflowInputs(series, options={"space": "native", **options}), out)
    return json.loads((out / "result.json").read_text())


def _q(d: dict) -> dict:
    return {q["name"]: q["value"] for q in d["quantities"]}


def test_pair_in_native_space_gives_the_worked_example_shape(pair_run: Path) -> None:
    d = json.loads((pair_run / "result.json").read_text())
    q = _q(d)
    # analytic ellipsoid volumes 14.7 -> 26.8 mL
    assert q["prior_haematoma_volume"] == pytest.approx(4 / 3 * np.pi * 22 * 11 * 14.5 / 1000, rel=0.12)
    assert q["haematoma_volume"] == pytest.approx(4 / 3 * np.pi * 25 * 16 * 16 / 1000, rel=0.12)
    assert q["expansion"] is True
    assert q["axis_type"] == "AP" and q["prior_axis_type"] == "AP"
    assert q["direction_change"] == "LR"
    assert q["length_change_lr"] == pytest.approx(10, abs=2.5)
    assert q["centre_shift"] == pytest.approx(0.0, abs=1.5)  # same centre
    for name in ("haematoma_volume", "sr_index", "diameter_ap", "diameter_lr", "diameter_si", "axis_type",
                 "volume_change", "expansion", "centre_shift", "direction_change"):
        assert name in q, name
    assert 0.5 < q["sr_index"] <= 1.05
    assert {f["kind"] for f in d["findings"]} == {"haematoma", "prior_haematoma"}
    assert (pair_run / "haematoma_mask.nii.gz").exists() and (pair_run / "axis_current.png").exists()
    assert "HAEMATOMA EXPANSION" in d["summary"]
    assert any(a["code"] == "ich_interval" for a in d["alarms"])  # NIfTI: interval unknown
    html = (pair_run / "report.html").read_text()
    assert "Haematoma expansion" in html and "YES" in html


def test_single_ct_without_haematoma(tmp_path: Path) -> None:
    p = tmp_path / "none.nii"
    save_nifti(synthetic_head(None, voxel=1.5), p, dtype=np.int16)
    d = _run({"ct": p}, tmp_path / "o")
    q = _q(d)
    assert q["haematoma_volume"] == 0 and "expansion" not in q
    assert "No intraparenchymal haematoma" in d["summary"]


def test_review_per_scan(pair_run: Path) -> None:
    from neurorad.workflows.contract import WorkflowResult

    wf = ICHWorkflow()
    res = WorkflowResult.read_json(pair_run)
    both = wf.reviewed(res, Review("ACCEPTABLE", {"score": "2", "current_segmentation": "accept",
                                                  "prior_segmentation": "accept"}))
    assert both.quantity("expansion").value is True
    prior_rejected = wf.reviewed(res, Review("ACCEPTABLE", {"score": "3", "current_segmentation": "accept",
                                                            "prior_segmentation": "reject"}))
    assert prior_rejected.quantity("expansion") is None and prior_rejected.quantity("haematoma_volume") is not None
    assert "prior CT's segmentation" in prior_rejected.summary
    cur_rejected = wf.reviewed(res, Review("ACCEPTABLE", {"score": "4", "current_segmentation": "reject"}))
    assert not cur_rejected.quantities and "rejected the current" in cur_rejected.summary
    wf.review_form.validate({"score": "2", "current_segmentation": "accept"}, {})
    with pytest.raises(ValueError, match="current CT"):
        wf.review_form.validate({"score": "2", "current_segmentation": "maybe"}, {})


def _dicom(vol: Volume, folder: Path, modality: str = "CT", pid: str = "ICH001", date: str = "20240115",
           time: str = "080000") -> Path:
    return write_dicom_series(vol, folder, modality=modality, identity={"PatientID": pid},
                              attributes={"StudyDate": date, "StudyTime": time, "SeriesDate": date,
                                          "SeriesTime": time, "AcquisitionDate": date, "AcquisitionTime": time})


def test_bad_input_is_named(tmp_path: Path) -> None:
    head = synthetic_head((30, 20, 20), voxel=4.0)
    wf = ICHWorkflow()
    # an MR image (no air below -500) given as NIfTI
    mr = tmp_path / "mr.nii.gz"
    save_nifti(Volume(np.clip(head.data + 1000, 0, None) / 3, head.affine), mr)
    with pytest.raises(InputError, match="not Hounsfield units"):
        execute(wf, WorkflowInputs({"ct": mr}, options={"space": "native"}), tmp_path / "o1")
    # an MR DICOM series sent as CT
    mr_dcm = _dicom(head.with_data(np.clip(head.data + 1000, 0, 3000)), tmp_path / "mrdcm", modality="MR")
    with pytest.raises(InputError, match="modality MR, not CT"):
        execute(wf, WorkflowInputs({"ct": mr_dcm}, options={"space": "native"}), tmp_path / "o2")
    # a CT without rescale values
    ct_dcm = _dicom(head, tmp_path / "ctdcm")
    norescale = tmp_path / "norescale"
    norescale.mkdir()
    for f in sorted(ct_dcm.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        del ds.RescaleIntercept
        del ds.RescaleSlope
        ds.save_as(norescale / f.name)
    with pytest.raises(InputError, match="without RescaleIntercept and RescaleSlope"):
        execute(wf, WorkflowInputs({"ct": norescale}, options={"space": "native"}), tmp_path / "o3")
    assert not (tmp_path / "o3").exists()


def test_pair_rules_from_dicom_headers(tmp_path: Path) -> None:
    wf = ICHWorkflow()
    h0 = synthetic_head((30, 20, 20), voxel=4.0, seed=1)
    h1 = synthetic_head((36, 24, 22), voxel=4.0, seed=2)
    prior = _dicom(h0, tmp_path / "p", date="20240115", time="080000")
    other = _dicom(h1, tmp_path / "x", pid="SOMEONE_ELSE", date="20240116", time="080000")
    with pytest.raises(InputError, match="different patients"):
        execute(wf, WorkflowInputs({"ct": other, "prior_ct": prior}, options={"space": "native"}), tmp_path / "o1")
    # 96 h later: measured, with the interval warning
    late = _dicom(h1, tmp_path / "late", date="20240119", time="080000")
    res = execute(wf, WorkflowInputs({"ct": late, "prior_ct": prior}, options={"space": "native"}), tmp_path / "o2",
                  write_outputs=False)
    assert res.quantity("interval_hours").value == pytest.approx(96.0)
    assert any("outside the 8-72 h window" in a.message for a in res.alarms)
    ok = _dicom(h1, tmp_path / "ok", date="20240116", time="020000")  # 18 h
    res = execute(wf, WorkflowInputs({"ct": ok, "prior_ct": prior}, options={"space": "native"}), tmp_path / "o3",
                  write_outputs=False)
    assert res.quantity("interval_hours").value == pytest.approx(18.0)
    assert not any(a.code == "ich_interval" for a in res.alarms)


def test_interval_from_deidentified_copies(tmp_path: Path) -> None:
    """The platform's de-identification (server options: dates shifted by the patient's offset, times kept)
    leaves the interval between a patient's CTs computable, and equal to the identified headers' interval."""
    from neurorad.dicom.deid import DeidOptions, deidentify_dataset
    from neurorad.dicom.vault import PseudonymVault
    from neurorad.image.ct import ct_info, hours_between

    tiny = Volume(np.full((6, 6, 2), -1000, np.int16), np.diag([4.0, 4.0, 4.0, 1.0]))
    vault = PseudonymVault(b"k" * 32, tmp_path / "vault.sqlite")
    opts = DeidOptions(retain_longitudinal_modified_dates=True, clean_descriptors=True,
                       retain_patient_characteristics=True)
    infos = {}
    for name, date, time in (("prior", "20231231", "220000"), ("current", "20240101", "160000")):  # 18 h, new year
        folder = _dicom(tiny, tmp_path / name, date=date, time=time)
        deid = tmp_path / f"{name}_deid"
        deid.mkdir()
        for i, f in enumerate(sorted(folder.glob("*.dcm"))):
            out = deidentify_dataset(pydicom.dcmread(f), vault, opts).dataset
            assert out.AcquisitionDate != date  # shifted
            pydicom.dcmwrite(deid / f"{i}.dcm", out, enforce_file_format=True)
        infos[name] = (ct_info(folder), ct_info(deid))
    assert hours_between(infos["prior"][0], infos["current"][0]) == pytest.approx(18.0)
    assert hours_between(infos["prior"][1], infos["current"][1]) == pytest.approx(18.0)


def test_cli_help_names_the_roles(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from neurorad.cli.workflows import run_workflow_cli

    with pytest.raises(typer.Exit):
        run_workflow_cli("ich", ["--help"])
    out = capsys.readouterr().out
    assert "--ct" in out and "--prior-ct" in out and "--engine" in out


@pytest.mark.slow
def test_phantom_pair_through_template_registration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The full pipeline on an ich-pair phantom: registration QC passes, volumes and expansion match
    the truth; with an impossible Dice threshold the pair is refused with the reason."""
    from neurorad.phantom.cases import ich_pair
    from neurorad.phantom.io import write_case

    case = ich_pair(seed=3, volume_ml=20.0, expansion_factor=1.6, slice_thickness_mm=2.0, in_plane_mm=1.0)
    folder = write_case(case, tmp_path / "case")
    inputs = WorkflowInputs({"ct": folder / "followup_ct.nii.gz", "prior_ct": folder / "baseline_ct.nii.gz"})
    res = execute(ICHWorkflow(), inputs, tmp_path / "o")
    truth = case.case["haematoma_volume_ml"]
    assert res.quantity("haematoma_volume").value == pytest.approx(truth["followup"], rel=0.15)
    assert res.quantity("prior_haematoma_volume").value == pytest.approx(truth["baseline"], rel=0.15)
    assert res.quantity("expansion").value is True
    assert min(res.extra["registration_dice"]["ct"].values()) >= 0.93
    import neurorad.preprocess.template_registration as tr

    assert res.provenance.parameters["registration"]["iterations_bspline"] == tr.DEFAULTS["iterations_bspline"]
    assert (tmp_path / "o" / "centre_movement.png").exists()
    from neurorad.image.ct import load_ct
    from neurorad.preprocess.ct_brain import ct_brain_mask
    from neurorad.preprocess.template_registration import register_to_template

    ct, _ = load_ct(folder / "baseline_ct.nii.gz")
    calls: list[list[str]] = []
    run_elastix = tr._elastix

    def counted(fixed, moving, maps, initial, log):  # noqa: ANN001, ANN202
        calls.append([m["Transform"][0] for m in maps])
        return run_elastix(fixed, moving, maps, initial, log)

    monkeypatch.setattr(tr, "_elastix", counted)
    with pytest.raises(ProcessingError, match="registration QC failed after the linear step: Dice"):
        register_to_template(ct, ct_brain_mask(ct), spacing_mm=4.0, min_dice=0.999, iterations_linear=30,
                             iterations_bspline=5)
    # the linear QC refuses before the B-spline starts, and elastix ran our maps (not its defaults)
    assert calls == [["EulerTransform", "AffineTransform"]]
