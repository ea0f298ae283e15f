"""The workflow contract: result round trip, review semantics, registry errors, generic CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from neurorad.errors import InputError
from neurorad.workflows import registry
from neurorad.workflows.contract import (
    Finding,
    Quantity,
    Requirements,
    Review,
    ReviewForm,
    SeriesRole,
    Workflow,
    WorkflowInputs,
    WorkflowResult,
)
from neurorad.workflows.runner import execute


class _Counting(Workflow):
    """A toy workflow: one finding per line of a text input; total volume = sum of findings."""

    name = "toy-count"
    version = "1.2.3"
    title = "Toy counter"
    requirements = Requirements((SeriesRole("image", ("T1",)), SeriesRole("prior_image", ("T1",), prior=1,
                                                                             required=False)))
    finding_kinds = {"blob": "Blob"}

    def run(self, inputs, out_dir, progress):
        lines = [float(x) for x in Path(inputs.path("image")).read_text().split()]
        progress(0.5, "counted")
        findings = [Finding(i + 1, "blob", v, label=i + 1) for i, v in enumerate(lines)]
        return self.recompute(WorkflowResult(self.name, self.version, findings=findings))

    def recompute(self, result):
        total = sum(f.volume_ml or 0.0 for f in result.findings)
        return replace(result, quantities=[Quantity("total_volume", total, "mL"),
                                           Quantity("count", len(result.findings), "1")],
                       summary=f"{len(result.findings)} blob(s), {total:.1f} mL")


def test_result_round_trip(tmp_path: Path) -> None:
    res = _Counting().recompute(WorkflowResult("toy-count", "1.2.3", findings=[
        Finding(1, "blob", 1.5, 1, "left frontal", (1.0, 2.0, 3.0), (Quantity("baseline_volume", 0.5, "mL"),))]))
    res.write_json(tmp_path)
    back = WorkflowResult.read_json(tmp_path)
    assert back.to_dict() == res.to_dict()
    d = json.loads((tmp_path / "result.json").read_text())
    assert {"workflow", "version", "quantities", "findings", "alarms"} <= set(d)
    assert d["quantities"][0] == {"name": "total_volume", "value": 1.5, "unit": "mL"}
    with pytest.raises(InputError, match="not a workflow result.json"):
        WorkflowResult.read_json(tmp_path / "missing.json")


def test_review_discards_and_recomputes() -> None:
    wf = _Counting()
    res = wf.recompute(WorkflowResult(wf.name, wf.version, findings=[Finding(1, "blob", 2.0), Finding(2, "blob", 3.0)]))
    assert res.quantity("total_volume").value == 5.0
    reviewed = wf.reviewed(res, Review("ACCEPTABLE", {"score": "2"}, {2: "discard"}))
    assert [f.id for f in reviewed.findings] == [1]
    assert reviewed.quantity("total_volume").value == 2.0
    assert reviewed.summary == "1 blob(s), 2.0 mL"
    # UNACCEPTABLE keeps the result; the report shows no numbers (not_usable_text)
    assert wf.reviewed(res, Review("UNACCEPTABLE")).quantity("total_volume").value == 5.0


def test_review_form_validation() -> None:
    form = ReviewForm()
    assert form.validate({"score": "3"}, {1: "keep"}) == {"score": "3"}
    with pytest.raises(ValueError, match="Quality score"):
        form.validate({"score": "9"}, {})
    with pytest.raises(ValueError, match="verdict"):
        form.validate({"score": "1"}, {1: "maybe"})
    with pytest.raises(ValueError, match="unknown review field"):
        form.validate({"score": "1", "grade": "x"}, {})


def test_requirements() -> None:
    req = _Counting.requirements
    assert req.priors_needed == 0  # the prior is optional
    assert req.role("prior_image").cli_option == "--prior-image"
    assert "prior 1, optional" in req.describe()
    with pytest.raises(KeyError):
        req.role("flair")


def test_registry_errors() -> None:
    class NoRun(Workflow):
        name = "no-run"

    with pytest.raises(registry.WorkflowLoadError, match="does not implement run"):
        registry.register(NoRun)
    with pytest.raises(registry.WorkflowLoadError, match="unknown workflow 'nope'"):
        registry.load("nope")
    registry.register(_Counting)
    try:
        assert registry.load("toy-count").version == "1.2.3"
        assert "toy-count" in [w.name for w in registry.installed()]
        with pytest.raises(registry.WorkflowLoadError, match="nope"):
            registry.load_enabled(["toy-count", "nope"])
    finally:
        registry.unregister("toy-count")


def test_execute_is_atomic_and_writes_result(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("1.0 2.5")
    wf = _Counting()
    out = tmp_path / "out"
    res = execute(wf, WorkflowInputs({"image": src}), out, write_outputs=False)
    assert res.quantity("count").value == 2
    d = json.loads((out / "result.json").read_text())
    assert d["provenance"]["inputs"]["image"] and d["provenance"]["software_version"]
    with pytest.raises(InputError, match="not empty"):
        execute(wf, WorkflowInputs({"image": src}), out, write_outputs=False)
    with pytest.raises(InputError, match="--image"):
        execute(wf, WorkflowInputs({}), tmp_path / "o2", write_outputs=False)
    bad = tmp_path / "bad.txt"
    bad.write_text("x")
    with pytest.raises(ValueError):
        execute(wf, WorkflowInputs({"image": bad}), tmp_path / "o3", write_outputs=False)
    assert not (tmp_path / "o3").exists() and not list(tmp_path.glob(".tmp-*"))


def test_cli_lists_workflows() -> None:
    out = subprocess.run([sys.executable, "-c", "from neurorad.cli import main; main()", "workflows", "--json"],
                         capture_output=True, text=True, timeout=300)
    names = {w["name"] for w in json.loads(out.stdout)["workflows"]}
    assert {"ms-lesions", "summary"} <= names
    bad = subprocess.run([sys.executable, "-c", "from neurorad.cli import main; main()", "workflows",
                          "--enabled", "not-a-workflow"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not-a-workflow" in bad.stderr


def test_generic_cli_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from neurorad.cli.workflows import run_workflow_cli

    src = tmp_path / "in.txt"
    src.write_text("4 1")
    registry.register(_Counting)
    try:
        with pytest.raises(typer.Exit) as ex:
            run_workflow_cli("toy-count", ["--help"])
        assert ex.value.exit_code == 0
        assert "--prior-image" in capsys.readouterr().out
        run_workflow_cli("toy-count", ["--image", str(src), "--out", str(tmp_path / "o"), "--no-dicom"])
        assert "total_volume = 5.0 mL" in capsys.readouterr().out
        with pytest.raises(typer.Exit) as ex:
            run_workflow_cli("toy-count", ["--out", str(tmp_path / "o4")])  # --image missing
        assert ex.value.exit_code == 2
    finally:
        registry.unregister("toy-count")
