"""``neurorad batch``: a workflow over a tiny BIDS dataset (pybids) in parallel; resumable;
BIDS-derivatives outputs, a cohort table with units; a failing session listed, others finish."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from neurorad.workflows import registry
from neurorad.workflows.batch import find_sessions, run_batch
from neurorad.workflows.contract import Quantity, Requirements, SeriesRole, Workflow, WorkflowResult

SPACING_MM = (1.0, 1.2, 2.0)


class BrightVolume(Workflow):
    """Volume of voxels above half the maximum (mL); refuses an all-zero image."""

    name = "test-bright-volume"
    version = "1.0.0"
    requirements = Requirements((SeriesRole("flair", ("FLAIR",), ("MR",)),))

    def run(self, inputs, out_dir, progress):
        img = nib.load(inputs.path("flair"))
        data = np.asarray(img.dataobj, np.float32)
        if not data.any():
            raise ValueError("empty image")
        voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
        n = int((data > 0.5 * data.max()).sum())
        return WorkflowResult(self.name, self.version, quantities=[
            Quantity("bright_volume_ml", n * voxel_ml, "mL", "volume above half maximum"),
            Quantity("bright_voxels", n, "1", "voxel count")])


class WithPrior(BrightVolume):
    name = "test-with-prior"
    requirements = Requirements((SeriesRole("flair", ("FLAIR",), ("MR",)),
                                 SeriesRole("baseline", ("FLAIR",), ("MR",), prior=1)))


@pytest.fixture
def workflows():
    registry.register(BrightVolume)
    registry.register(WithPrior)
    yield
    registry.unregister(BrightVolume.name)
    registry.unregister(WithPrior.name)


def _flair(path, n_bright: int) -> None:
    data = np.zeros((8, 8, 4), np.float32)
    data.flat[:n_bright] = 100.0
    if n_bright:
        data.flat[n_bright:n_bright + 5] = 10.0  # below half maximum
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*SPACING_MM, 1.0])), path)


@pytest.fixture
def bids(tmp_path):
    root = tmp_path / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
    _flair(root / "sub-01/ses-01/anat/sub-01_ses-01_FLAIR.nii.gz", 10)
    _flair(root / "sub-01/ses-02/anat/sub-01_ses-02_FLAIR.nii.gz", 20)
    _flair(root / "sub-02/ses-01/anat/sub-02_ses-01_FLAIR.nii.gz", 0)  # all zero: the workflow fails
    _flair(root / "sub-03/ses-01/anat/sub-03_ses-01_T1w.nii.gz", 7)  # no FLAIR: not applicable
    return root


def test_find_sessions_uses_requirements_and_priors(bids, workflows):
    with_prior = {s.case_id: s for s in find_sessions(bids, WithPrior.requirements)}
    assert with_prior["sub-01_ses-01"].missing  # first session has nothing earlier
    ses2 = with_prior["sub-01_ses-02"]
    assert not ses2.missing and ses2.series["baseline"].name == "sub-01_ses-01_FLAIR.nii.gz"
    assert ses2.series["flair"].name == "sub-01_ses-02_FLAIR.nii.gz"
    assert "missing flair" in with_prior["sub-03_ses-01"].missing


def test_batch_parallel_resumable_with_cohort_table(bids, workflows, tmp_path):
    seen = []
    rep = run_batch(bids, BrightVolume.name, jobs=2, progress=lambda n, t, eta: seen.append((n, t, eta)))
    out = bids / "derivatives" / f"neurorad-{BrightVolume.name}"
    assert sorted(rep.done) == ["sub-01_ses-01", "sub-01_ses-02"]
    assert [c for c, _ in rep.failed] == ["sub-02_ses-01"] and "empty image" in rep.failed[0][1]
    assert [c for c, _ in rep.not_applicable] == ["sub-03_ses-01"]
    assert seen[-1][:2] == (3, 3) and seen[-1][2] == 0
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "neurorad"
    assert (out / "sub-01/ses-02/result.json").is_file()
    assert not (out / "sub-02/ses-01").exists()  # nothing half-written for the failure
    assert "sub-02_ses-01\tValueError: empty image" in (out / "failures.tsv").read_text()
    table = pd.read_csv(out / "cohort.csv")
    voxel_ml = np.prod(SPACING_MM) / 1000.0
    assert list(table.case_id) == ["sub-01_ses-01", "sub-01_ses-02"]
    assert table.bright_voxels.tolist() == [10, 20]
    assert table.bright_volume_ml.tolist() == pytest.approx([10 * voxel_ml, 20 * voxel_ml])
    units = json.loads((out / "cohort.json").read_text())
    assert units["bright_volume_ml"]["Units"] == "mL" and units["bright_voxels"]["Units"] == "1"
    # resumable: done sessions are skipped (their files untouched), the failure is tried again
    mtime = (out / "sub-01/ses-01/result.json").stat().st_mtime_ns
    rep2 = run_batch(bids, BrightVolume.name, jobs=1)
    assert sorted(rep2.skipped) == ["sub-01_ses-01", "sub-01_ses-02"] and not rep2.done
    assert [c for c, _ in rep2.failed] == ["sub-02_ses-01"]
    assert (out / "sub-01/ses-01/result.json").stat().st_mtime_ns == mtime
    assert pd.read_csv(out / "cohort.csv").equals(table)


def test_batch_cli(bids, workflows, tmp_path):
    from neurorad.cli import app

    res = CliRunner().invoke(app, ["--quiet", "batch", "--bids", str(bids), "--workflow", BrightVolume.name,
                                   "--out", str(tmp_path / "deriv")])
    assert res.exit_code == 1, res.output  # one session failed
    assert "sub-02_ses-01: ValueError: empty image" in res.output
    assert "2 done" in res.output and (tmp_path / "deriv/cohort.csv").is_file()
    res = CliRunner().invoke(app, ["batch", "--bids", str(tmp_path / "nowhere"), "--workflow", BrightVolume.name])
    assert res.exit_code != 0


def test_batch_on_a_dask_cluster(bids, workflows, tmp_path):
    """The --executor dask:// path: sessions run as tasks of a (loopback, in-process) Dask scheduler."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        executor = "dask://" + cluster.scheduler_address.split("://", 1)[1]
        rep = run_batch(bids, BrightVolume.name, tmp_path / "deriv", executor=executor)
    assert sorted(rep.done) == ["sub-01_ses-01", "sub-01_ses-02"]
    assert [c for c, _ in rep.failed] == ["sub-02_ses-01"]
    assert pd.read_csv(tmp_path / "deriv" / "cohort.csv").bright_voxels.tolist() == [10, 20]
