"""The platform's outputs (report, SEG, SR, SC, Encapsulated PDF) of any workflow, checked against
independent oracles: highdicom/pydicom reading the objects back, dciodvfy (dicom3tools) validating
them, and a phantom whose lesion volumes and sides are known by construction."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from neurorad.image import Volume, load_image, save_nifti, write_dicom_series
from neurorad.report.key_images import KeyImagePanel, load_png, render_key_image, save_png
from neurorad.workflows.contract import (
    Finding,
    KeyImage,
    ModelRef,
    Quantity,
    Requirements,
    Review,
    SeriesRole,
    Workflow,
    WorkflowInputs,
    WorkflowResult,
)
from neurorad.workflows.outputs import write_outputs
from neurorad.workflows.runner import execute

SPACING = (2.0, 2.0, 3.0)
VOXEL_ML = SPACING[0] * SPACING[1] * SPACING[2] / 1000.0
SHAPE = (40, 48, 12)
AFFINE = np.array([[2.0, 0, 0, -39.0], [0, 2.0, 0, -47.0], [0, 0, 3.0, -16.5], [0, 0, 0, 1]])
#: lesion in the patient's LEFT hemisphere (RAS x < 0) and one in the right, with voxel counts
LESIONS = {"left": ((-21.0, 5.0, 1.5), 2), "right": ((17.0, -9.0, -10.5), 1)}  # centre mm, half-size vox


def _phantom() -> tuple[Volume, dict[str, int]]:
    rng = np.random.default_rng(7)
    i, j, k = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    data = np.full(SHAPE, 20.0, np.float32)
    brain = ((i - 19.5) / 18) ** 2 + ((j - 23.5) / 22) ** 2 + ((k - 5.5) / 7) ** 2 < 1
    data[brain] = 100 + rng.normal(0, 3, int(brain.sum()))
    counts = {}
    inv = np.linalg.inv(AFFINE)
    for name, (centre, h) in LESIONS.items():
        c = np.rint(inv @ np.array([*centre, 1.0]))[:3].astype(int)
        sl = tuple(slice(x - h, x + h + 1) for x in c)
        data[sl] = 160.0
        counts[name] = int(np.prod([s.stop - s.start for s in sl]))
    return Volume(data, AFFINE.copy()), counts


class _Spots(Workflow):
    """A toy plug-in: bright spots by threshold; one finding per connected component."""

    name = "toy-spots"
    version = "0.3.1"
    title = "Toy bright-spot volumetry"
    requirements = Requirements((SeriesRole("image", ()),))
    finding_kinds = {"spot": "Bright spot"}

    def run(self, inputs, out_dir, progress):
        vol = load_image(inputs.path("image"))
        lab, n = ndimage.label(np.asarray(vol.data) > 140)
        mask = vol.with_data(lab.astype(np.int16))
        save_nifti(mask, out_dir / "mask.nii.gz")
        findings, keys = [], []
        for v in range(1, n + 1):
            ijk = np.argwhere(lab == v).mean(axis=0)
            c = tuple(float(x) for x in (vol.affine @ np.array([*ijk, 1.0]))[:3])
            findings.append(Finding(v, "spot", float((lab == v).sum()) * VOXEL_ML, label=v, centroid_mm=c,
                                    measurements=(Quantity("max_intensity", float(vol.data[lab == v].max()), "1"),)))
            img = render_key_image([KeyImagePanel(vol, title="image", window=(0, 250)),
                                    KeyImagePanel(vol, overlay=True, title="spots", window=(0, 250))],
                                   labels=mask, centre_mm=c)
            save_png(img, out_dir / f"key_{v}.png")
            keys.append(KeyImage(f"key_{v}.png", f"Finding {v}", v))
        res = WorkflowResult(self.name, self.version, findings=findings, key_images=keys, mask="mask.nii.gz",
                             reference_role="image")
        res.provenance.models.append(ModelRef("spot-threshold", "0.1", kind="classical"))
        return self.recompute(res)

    def recompute(self, result):
        total = sum(f.volume_ml or 0.0 for f in result.findings)
        return replace(result, quantities=[Quantity("total_spot_volume", total, "mL", "Total spot volume"),
                                           Quantity("spot_count", len(result.findings), "1"),
                                           Quantity("any_spot", bool(result.findings), "")],
                       summary=f"{len(result.findings)} spot(s)")


class _CTSpots(_Spots):
    """The same plug-in declared for CT (as a haemorrhage workflow would be)."""

    name = "toy-ct-spots"
    requirements = Requirements((SeriesRole("image", (), modalities=("CT",)),))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("outputs")
    vol, counts = _phantom()
    save_nifti(vol, tmp / "img.nii.gz")
    wf = _Spots()
    out = {"counts": counts}
    for name in ("a", "b"):
        execute(wf, WorkflowInputs({"image": tmp / "img.nii.gz"}), tmp / name)
        out[name] = tmp / name
    write_dicom_series(vol, tmp / "dcm_in", identity={"PatientID": "PSEUDO-7"}, series_description="T2")
    execute(wf, WorkflowInputs({"image": tmp / "dcm_in"}), tmp / "from_dicom")
    out["dcm_in"], out["from_dicom"] = tmp / "dcm_in", tmp / "from_dicom"
    execute(_CTSpots(), WorkflowInputs({"image": tmp / "img.nii.gz"}), tmp / "ct")
    out["ct"] = tmp / "ct"
    return out


def _uids(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in sorted((folder / "dicom").rglob("*.dcm"))}


def _volume_groups(sr_path: Path) -> dict[str, tuple[float, int, str]]:
    sr = hd.sr.srread(sr_path)
    out = {}
    for g in sr.content.get_volumetric_roi_measurement_groups():
        vol = next(m for m in g.get_measurements() if m.name.value == "118565006")
        seg = g.referenced_segment
        out[g.tracking_identifier] = (float(vol.value), int(seg.referenced_segment_numbers[0]),
                                      str(seg.referenced_sop_instance_uid))
    return out


def test_two_cli_runs_write_identical_uids(runs) -> None:
    a, b = _uids(runs["a"]), _uids(runs["b"])
    assert set(a) >= {"dicom/seg.dcm", "dicom/sr.dcm", "dicom/report_pdf.dcm", "dicom/sc/sc_001.dcm"}
    assert a == b
    assert len(set(a.values())) == len(a)  # and all distinct


def test_seg_one_segment_per_finding_with_algorithm_identity(runs) -> None:
    seg = hd.seg.segread(runs["a"] / "dicom" / "seg.dcm")
    res = WorkflowResult.read_json(runs["a"])
    assert seg.number_of_segments == len(res.findings) == 2
    for n, f in enumerate(res.findings, start=1):
        d = seg.get_segment_description(n)
        assert d.segment_label == f"{f.id} Bright spot"
        assert d.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algo = d.algorithm_identification[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("spot-threshold", "0.1")
        assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == "123105"  # classical: Histogram Analysis
        # the segment's voxels are the finding's voxels (independent: volume from the phantom)
        sops = [uid for _, _, uid in seg.get_source_image_uids()]
        n_vox = int(seg.get_pixels_by_source_instance(sops, segment_numbers=[n]).sum())
        assert n_vox * VOXEL_ML == pytest.approx(f.volume_ml)
    assert "toy-spots 0.3.1" in seg.SeriesDescription and seg.ContentLabel == "TOY_SPOTS"
    assert seg.DeviceSerialNumber not in ("", "0")
    assert "toy-spots 0.3.1" in list(seg.SoftwareVersions)


def test_sr_holds_every_quantity_and_volume_referencing_seg(runs) -> None:
    res = WorkflowResult.read_json(runs["a"])
    seg = pydicom.dcmread(runs["a"] / "dicom" / "seg.dcm", stop_before_pixels=True)
    groups = _volume_groups(runs["a"] / "dicom" / "sr.dcm")
    counts = runs["counts"]
    expected = sorted(c * VOXEL_ML for c in counts.values())  # by construction of the phantom
    assert sorted(v for v, _, _ in groups.values()) == pytest.approx(expected)
    for f in res.findings:
        vol, segment, sop = groups[f"Finding {f.id}"]
        assert vol == pytest.approx(f.volume_ml) and sop == seg.SOPInstanceUID
        assert seg.SegmentSequence[segment - 1].SegmentLabel.startswith(f"{f.id} ")
    sr = hd.sr.srread(runs["a"] / "dicom" / "sr.dcm")
    (mg,) = [g for g in sr.content.get_image_measurement_groups()
             if g.tracking_identifier == "Toy bright-spot volumetry"]
    names = {m.name.value: float(m.value) for m in mg.get_measurements()}
    assert names["total_spot_volume"] == pytest.approx(sum(expected))
    assert names["spot_count"] == 2
    evals = {e.name.value: e.value.value for e in mg.get_qualitative_evaluations()}
    assert evals["any_spot"] == "373066001"  # Yes
    # the source series is referenced as evidence
    ref = pydicom.dcmread(sorted((runs["a"] / "dicom" / "reference").glob("*.dcm"))[0], stop_before_pixels=True)
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert ev.StudyInstanceUID == ref.StudyInstanceUID
    assert ref.SeriesInstanceUID in {s.SeriesInstanceUID for s in ev.ReferencedSeriesSequence}


def test_pdf_and_sc(runs) -> None:
    pdf = pydicom.dcmread(runs["a"] / "dicom" / "report_pdf.dcm")
    data = (runs["a"] / "report.pdf").read_bytes()
    assert bytes(pdf.EncapsulatedDocument)[:pdf.EncapsulatedDocumentLength] == data
    assert "(draft, report version 1)" in pdf.DocumentTitle and "Toy bright-spot" in pdf.DocumentTitle
    scs = sorted((runs["a"] / "dicom" / "sc").glob("*.dcm"))
    assert len(scs) == 2
    for p in scs:
        assert list(pydicom.dcmread(p).PatientOrientation) == ["L", "P"]


def test_dicom_input_is_referenced(runs) -> None:
    src = pydicom.dcmread(sorted(runs["dcm_in"].glob("*.dcm"))[0], stop_before_pixels=True)
    seg = pydicom.dcmread(runs["from_dicom"] / "dicom" / "seg.dcm", stop_before_pixels=True)
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.PatientID == "PSEUDO-7"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert not (runs["from_dicom"] / "dicom" / "reference").exists()
    # a DICOM run's UIDs depend on the study, not on the files: differ from the NIfTI run's
    assert _uids(runs["from_dicom"])["dicom/seg.dcm"] != _uids(runs["a"])["dicom/seg.dcm"]


def test_reviewed_outputs_hold_only_kept_findings(runs, tmp_path: Path) -> None:
    folder = tmp_path / "rev"
    shutil.copytree(runs["a"], folder)
    res = WorkflowResult.read_json(folder)
    inputs = WorkflowInputs({"image": runs["a"].parent / "img.nii.gz"})
    drop = res.findings[1]
    review = Review("ACCEPTABLE", {"score": "2"}, {drop.id: "discard"}, reviewer="rad1", reviewed_at="2026-11-30T10:00")
    shown = write_outputs(_Spots(), res, folder, inputs, review, version=2)
    assert [f.id for f in shown.findings] == [res.findings[0].id]
    seg = hd.seg.segread(folder / "dicom" / "seg.dcm")
    assert seg.number_of_segments == 1
    groups = _volume_groups(folder / "dicom" / "sr.dcm")
    assert list(groups) == [f"Finding {res.findings[0].id}"]
    assert len(list((folder / "dicom" / "sc").glob("*.dcm"))) == 1  # the discarded finding's key image is gone
    draft, reviewed = _uids(runs["a"]), _uids(folder)
    for key in ("dicom/seg.dcm", "dicom/sr.dcm", "dicom/report_pdf.dcm"):
        assert draft[key] != reviewed[key]
    # the same review written again gives the same objects (a re-run sends no duplicates)
    again = tmp_path / "again"
    shutil.copytree(runs["a"], again)
    write_outputs(_Spots(), WorkflowResult.read_json(again), again, inputs, review, version=2)
    assert _uids(again)["dicom/seg.dcm"] == reviewed["dicom/seg.dcm"]
    # UNACCEPTABLE: the not-usable report only, no numbers in DICOM
    bad = tmp_path / "bad"
    shutil.copytree(runs["a"], bad)
    write_outputs(_Spots(), WorkflowResult.read_json(bad), bad, inputs, Review("UNACCEPTABLE", reviewer="rad1"),
                  version=3)
    doc = pydicom.dcmread(bad / "dicom" / "report_pdf.dcm", stop_before_pixels=True)
    assert "not usable" in str(doc.DocumentTitle), doc.DocumentTitle
    assert not (bad / "dicom" / "seg.dcm").exists() and not (bad / "dicom" / "sr.dcm").exists()


# ------------------------------------------------------------------------------------- laterality
def _letters(img: np.ndarray) -> dict[str, np.ndarray]:
    """The burned-in letters (white glyphs) at the left/right/top/bottom edges of the last panel."""
    white = (img.min(axis=2) > 160) & (np.ptp(img.astype(int), axis=2) < 20)
    lab, n = ndimage.label(white)
    boxes = ndimage.find_objects(lab)
    cents = [((b[0].start + b[0].stop) / 2, (b[1].start + b[1].stop) / 2) for b in boxes]
    right = max(range(n), key=lambda m: cents[m][1])
    return {"right": (lab[boxes[right]] == right + 1)}


def _looks_like_l(glyph: np.ndarray) -> bool:
    """'L' has an empty upper-right quadrant; 'R' has its bowl there."""
    h, w = glyph.shape
    return glyph[: h // 2, w // 2:].mean() < 0.1


def _lesion_columns(img: np.ndarray) -> np.ndarray:
    """Columns of coloured (overlay) pixels: the rest of a key image is grey."""
    return np.argwhere(np.ptp(img.astype(int), axis=2) > 40)[:, 1]


def test_left_lesion_is_on_image_right_with_an_L_there(runs) -> None:
    res = WorkflowResult.read_json(runs["a"])
    left = next(f for f in res.findings if f.centroid_mm[0] < 0)  # RAS: x < 0 is the patient's left
    key = next(k for k in res.key_images if k.finding_id == left.id)
    sc_path = sorted((runs["a"] / "dicom" / "sc").glob("*.dcm"))[res.key_images.index(key)]
    sc = pydicom.dcmread(sc_path)
    for img in (load_png(runs["a"] / key.path), sc.pixel_array):
        w = img.shape[1]
        panel_w = (w - 4) // 2
        cols = _lesion_columns(img)
        cols = cols[cols > panel_w + 4]  # the overlay panel
        assert cols.size and cols.mean() > panel_w + 4 + panel_w / 2  # on the image right
        assert _looks_like_l(_letters(img)["right"])
    assert list(sc.PatientOrientation) == ["L", "P"]  # columns run to the patient's left: matches
    # and the right-hemisphere lesion is on the image left, with an R on the left edge
    right = next(f for f in res.findings if f.centroid_mm[0] > 0)
    img = render_key_image([KeyImagePanel(load_image(runs["a"].parent / "img.nii.gz"), overlay=True,
                                          window=(0, 250))],
                           labels=load_image(runs["a"] / "mask.nii.gz"), centre_mm=right.centroid_mm)
    cols = _lesion_columns(img)
    assert cols.size and cols.mean() < img.shape[1] / 2
    white = (img.min(axis=2) > 160)
    lab, n = ndimage.label(white)
    boxes = ndimage.find_objects(lab)
    leftmost = min(range(n), key=lambda m: boxes[m][1].start)
    assert not _looks_like_l(lab[boxes[leftmost]] == leftmost + 1)


# ---------------------------------------------------------------------------------------- dciodvfy
def _dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail("dciodvfy (Debian package dicom3tools) is not installed: run scripts/install_system.sh")
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def test_every_written_object_passes_dciodvfy(runs, tmp_path: Path) -> None:
    objects = [runs["a"] / "dicom" / n for n in ("seg.dcm", "sr.dcm", "report_pdf.dcm")]
    objects += [sorted((runs["a"] / "dicom" / "sc").glob("*.dcm"))[0],
                sorted((runs["a"] / "dicom" / "reference").glob("*.dcm"))[0],
                sorted(runs["dcm_in"].glob("*.dcm"))[0], runs["from_dicom"] / "dicom" / "seg.dcm",
                runs["from_dicom"] / "dicom" / "sr.dcm"]
    ct_ref = sorted((runs["ct"] / "dicom" / "reference").glob("*.dcm"))[0]
    assert pydicom.dcmread(ct_ref, stop_before_pixels=True).Modality == "CT"  # the role's modality
    sr = pydicom.dcmread(runs["ct"] / "dicom" / "sr.dcm")
    (proc,) = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert proc.ConceptCodeSequence[0].CodeMeaning == "CT Head"  # TID 1500 procedure reported
    objects += [ct_ref, runs["ct"] / "dicom" / "seg.dcm", runs["ct"] / "dicom" / "sr.dcm"]
    vol, _ = _phantom()
    ct = write_dicom_series(vol.with_data(np.asarray(vol.data) - 1000), tmp_path / "ct", modality="CT")
    objects.append(sorted(ct.glob("*.dcm"))[0])
    failures = {str(p): e for p in objects if (e := _dciodvfy_errors(p))}
    assert not failures, failures
