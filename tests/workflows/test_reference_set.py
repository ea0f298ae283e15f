"""Software-update protocol (EASE, PAPERS.md A4) on a stub workflow through the contract: unchanged
segmentations deploy, a > 25 % volume change of an accepted case is incompatible, a changed but
compatible version needs QA and is judged by its scores; the CLI prints and writes the table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from neurorad.image.nifti import save_nifti
from neurorad.image.volume import Volume
from neurorad.workflows import registry
from neurorad.workflows.contract import (
    SCORE_1_5,
    Finding,
    Quantity,
    Requirements,
    ReviewForm,
    SeriesRole,
    Workflow,
    WorkflowResult,
)
from neurorad.workflows.reference_set import ReferenceSet, compare_runs, record_review, run_set


class Stub(Workflow):
    """Thresholds a radial profile: the segmented ball's radius follows ``threshold`` analytically."""

    name = "stub-volumetry"
    version = "1.0.0"
    threshold = 0.5
    requirements = Requirements((SeriesRole("img", ("T1",)),))
    finding_kinds = {"ball": "ball"}
    review_form = ReviewForm(fields=(SCORE_1_5,))
    reference_quantity = "ball_volume"

    def run(self, inputs, out_dir, progress):
        from neurorad.image.nifti import load_nifti

        vol = load_nifti(inputs.path("img"))
        mask = (np.asarray(vol.data) > self.threshold).astype(np.uint8)
        save_nifti(vol.with_data(mask), out_dir / "mask.nii.gz")
        ml = float(mask.sum()) * vol.voxel_volume_mm3 / 1000.0
        return WorkflowResult(self.name, self.version, findings=[Finding(1, "ball", ml, 1)], mask="mask.nii.gz",
                              quantities=[Quantity("ball_volume", ml, "mL")])


def _versions(version: str, threshold: float) -> type[Stub]:
    return type("Stub" + version.replace(".", "_"), (Stub,), {"version": version, "threshold": threshold})


@pytest.fixture
def ref_set(tmp_path):
    """Two cases: radial profiles 1 - r/R (R = 10 and 7 voxels of 2 mm) on a 24^3 grid."""
    idx = np.indices((24, 24, 24)).astype(float) - 11.5
    r = np.sqrt((idx**2).sum(0))
    ref = ReferenceSet.open_or_create(tmp_path / "set", Stub.name)
    for case, radius in (("case-a", 10.0), ("case-b", 7.0)):
        img = np.clip(1.0 - r / radius, 0, None).astype(np.float32)
        p = save_nifti(Volume(img, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / f"{case}.nii.gz")
        ref.add_case(case, {"img": str(p)})
    ref.save()
    yield ref
    registry.unregister(Stub.name)


def test_update_protocol_verdicts(ref_set) -> None:
    v1, same, drift, big = (_versions("1.0.0", 0.5), _versions("1.0.1", 0.5), _versions("1.1.0", 0.46),
                            _versions("2.0.0", 0.3))
    for cls in (v1, same, drift, big):
        run_set(ref_set, cls())
    wf = v1()
    for case in ("case-a", "case-b"):
        record_review(ref_set, wf, "1.0.0", case, "ACCEPTABLE", "2")
    unchanged = compare_runs(ref_set, wf, "1.0.0", "1.0.1")
    assert unchanged.verdict == "UNCHANGED" and unchanged.passed
    assert all(c.dice == pytest.approx(1.0) and c.change_fraction == 0.0 for c in unchanged.cases)

    # threshold 0.5 -> 0.3 grows the radius from R/2 to 0.7 R: volume x 2.74 (+174 %), far over 25 %
    incompatible = compare_runs(ref_set, wf, "1.0.0", "2.0.0")
    assert incompatible.verdict == "INCOMPATIBLE" and not incompatible.passed
    a = incompatible.cases[0]
    assert a.status == "exceeds" and a.change_fraction == pytest.approx(0.7**3 / 0.5**3 - 1, rel=0.15)
    assert a.dice == pytest.approx(2 * 0.5**3 / (0.5**3 + 0.7**3), rel=0.1)  # nested balls

    # 0.5 -> 0.46: radius x 1.08, volume +26 % analytically (+22 % and +30 % on these voxel grids): one
    # accepted case over 25 % makes the version incompatible; the limit counts only for accepted cases
    drifted = compare_runs(ref_set, wf, "1.0.0", "1.1.0")
    assert drifted.verdict == "INCOMPATIBLE" and [c.status for c in drifted.cases] == ["changed", "exceeds"]
    ref_set.reviews["1.0.0"]["case-a"]["decision"] = "UNACCEPTABLE"
    ref_set.reviews["1.0.0"]["case-b"]["decision"] = "UNACCEPTABLE"
    qa = compare_runs(ref_set, wf, "1.0.0", "1.1.0")
    assert qa.verdict == "QA_NEEDED" and {c.status for c in qa.cases} == {"changed"}
    record_review(ref_set, wf, "1.1.0", "case-a", "ACCEPTABLE", "2")
    record_review(ref_set, wf, "1.1.0", "case-b", "ACCEPTABLE", "1")
    assert compare_runs(ref_set, wf, "1.0.0", "1.1.0").verdict == "COMPATIBLE"
    record_review(ref_set, wf, "1.1.0", "case-b", "UNACCEPTABLE", "4")  # worse score (1 Perfect ... 5 Terrible)
    assert compare_runs(ref_set, wf, "1.0.0", "1.1.0").verdict == "NOT_DEPLOYABLE"


def test_cli_add_run_review_compare_writes_the_table(tmp_path) -> None:
    from neurorad.cli.reference_set import app

    img = np.zeros((12, 12, 12), np.float32)
    img[3:9, 3:9, 3:9] = 1.0
    img[5:7, 5:7, 5:7] = 0.4  # a core that the "new version" (threshold 0.3) adds back
    p = save_nifti(Volume(img, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "x.nii.gz")
    folder = tmp_path / "set"
    cli = CliRunner()
    try:
        registry.register(_versions("1.0.0", 0.5))
        r = cli.invoke(app, ["add", str(folder), "c1", "--workflow", Stub.name, "--series", f"img={p}"])
        assert r.exit_code == 0, r.output
        bad = cli.invoke(app, ["add", str(folder), "c2", "--workflow", Stub.name, "--series", f"t2={p}"])
        assert bad.exit_code != 0 and "no role 't2'" in str(bad.exception)
        assert cli.invoke(app, ["run", str(folder)]).exit_code == 0
        assert cli.invoke(app, ["review", str(folder), "1.0.0", "c1", "--decision", "acceptable",
                                "--score", "2"]).exit_code == 0
        registry.register(_versions("1.2.0", 0.3))
        assert cli.invoke(app, ["run", str(folder)]).exit_code == 0
        r = cli.invoke(app, ["compare", str(folder), "--old", "1.0.0", "--new", "1.2.0"])
        assert r.exit_code == 1, r.output  # 208 -> 216 voxels: +3.8 %, changed, QA needed
        assert "QA_NEEDED" in r.output and "| c1" in r.output and "+3.8" in r.output
        written = json.loads((folder / "compare_1.0.0_vs_1.2.0.json").read_text())
        assert written["verdict"] == "QA_NEEDED" and written["cases"][0]["accepted"] is True
        assert (folder / "compare_1.0.0_vs_1.2.0.md").read_text().count("| c1") == 1
        registry.register(_versions("2.0.0", -0.1))  # the whole field of view: +730 %
        assert cli.invoke(app, ["run", str(folder)]).exit_code == 0
        r = cli.invoke(app, ["compare", str(folder), "--old", "1.0.0", "--new", "2.0.0"])
        assert r.exit_code == 1 and "INCOMPATIBLE" in r.output and "+730.8" in r.output
        assert "'volumes_incompatible_before': '2.0.0'" in r.output
    finally:
        registry.unregister(Stub.name)


def test_bad_inputs_are_named(ref_set, tmp_path) -> None:
    from neurorad.errors import InputError

    with pytest.raises(InputError, match="does not exist"):
        ref_set.add_case("c3", {"img": str(tmp_path / "nope.nii.gz")})
    with pytest.raises(InputError, match="no run"):
        compare_runs(ref_set, Stub(), "1.0.0", "9.9.9")
    with pytest.raises(InputError, match="belongs to workflow"):
        ReferenceSet.open_or_create(ref_set.folder, "other")
    with pytest.raises(InputError, match="cannot be run"):
        run_set(ref_set, type("Other", (Stub,), {"name": "other"})())
