"""A small, hand-made MS longitudinal result for the review-app tests.

Built from real anatomy (Colin27, Debian ``mricron-data``) downsampled to 2 mm, with three
spherical "new lesions" painted bright into the follow-up. The files mimic what
:func:`neurorad.pipelines.ms_lesions.run_ms_lesions` writes (volumes, label map, lesion table,
result.json), so the viewer and QA code paths are exercised without running the pipeline.
The lesion centres and radii are returned so tests can check pixels against a known truth.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from neurorad import resources
from neurorad.image.volume import Volume
from neurorad.quantify.lesions import lesion_table, write_lesion_csv


@dataclass(frozen=True)
class Lesion:
    label: int
    center_vox: tuple[int, int, int]
    radius_vox: int


# 2 mm grid of Colin27 (91 x 109 x 91); centres inside white matter.
LESIONS = (
    Lesion(1, (30, 55, 50), 4),
    Lesion(2, (60, 50, 52), 3),
    Lesion(3, (45, 70, 56), 2),
)


def _ball(shape: tuple[int, ...], center: tuple[int, int, int], radius: int) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    dist2 = sum((g - c) ** 2 for g, c in zip(grid, center, strict=True))
    return dist2 <= radius**2


def make_ms_result(out_dir: Path, lesions: tuple[Lesion, ...] = LESIONS) -> dict:
    """Write an MS result folder; return a dict describing the truth."""
    out_dir.mkdir(parents=True, exist_ok=True)
    img = nib.load(resources.colin27_head())
    data = np.asarray(img.dataobj, dtype=np.float32)[::2, ::2, ::2].copy()
    affine = img.affine.copy()
    affine[:3, :3] *= 2.0
    rng = np.random.default_rng(0)
    baseline = data + rng.normal(0, 2.0, data.shape).astype(np.float32)
    followup = data * 1.02 + rng.normal(0, 2.0, data.shape).astype(np.float32)
    labels = np.zeros(data.shape, np.uint8)
    rows: list[dict] = []
    expected_ml = {}
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    for les in lesions:
        m = _ball(data.shape, les.center_vox, les.radius_vox)
        labels[m] = les.label
        followup[m] = 230.0
        expected_ml[les.label] = float(m.sum()) * voxel_ml
    score = np.where(labels > 0, 0.9, 0.0).astype(np.float32)
    diff = (followup - baseline).astype(np.float32)

    def save(arr: np.ndarray, name: str) -> None:
        nib.save(nib.Nifti1Image(arr, affine), str(out_dir / name))

    save(baseline.astype(np.int16), "baseline.nii.gz")
    save(followup.astype(np.int16), "followup.nii.gz")
    save(labels, "new_lesions.nii.gz")
    save(score, "score.nii.gz")
    save(diff.astype(np.int16), "difference.nii.gz")
    # The lesion table exactly as the workflow writes it (neurorad.quantify.lesions).
    table = lesion_table(Volume(labels, affine), len(lesions), kinds=["new"] * len(lesions), score=score)
    write_lesion_csv(table, out_dir / "lesions.csv")
    # result.json on the workflow contract, as the ms-lesions plug-in writes it
    from neurorad.workflows.contract import Alarm, Finding, WorkflowResult
    from neurorad.workflows.ms_lesions import MSLesionsWorkflow

    wf = MSLesionsWorkflow()
    findings = [Finding(r.id, r.kind, r.volume_mm3 / 1000.0, r.id, r.location,
                        (r.centroid_x_mm, r.centroid_y_mm, r.centroid_z_mm)) for r in table]
    result = wf.recompute(WorkflowResult(
        wf.name, wf.version, findings=findings,
        alarms=[Alarm("quality", "follow-up FLAIR contrast is lower than usual")],
        mask="new_lesions.nii.gz", reference_role="flair",
        volumes={"baseline": "baseline.nii.gz", "followup": "followup.nii.gz",
                 "lesions_common": "new_lesions.nii.gz"},
        extra={"lesions": [asdict(r) | {"location": r.location} for r in table]}))
    result.summary = wf.conclusion(result)
    result.write_json(out_dir)
    json.loads((out_dir / "result.json").read_text())
    for r in table:
        rows.append({"lesion_id": r.id, "volume_ml": r.volume_mm3 / 1000.0, "volume_mm3": r.volume_mm3,
                     "x_mm": r.centroid_x_mm, "y_mm": r.centroid_y_mm, "z_mm": r.centroid_z_mm})
    return {"affine": affine, "shape": data.shape, "lesions": lesions, "rows": rows, "expected_ml": expected_ml}
