"""The ``summary`` workflow: a non-clinical check of the data plane, on the workflow contract.

It reads one received series (any MR or CT series), describes it (instances, matrix, intensity
percentiles of the central slice, as quantities) and writes a Secondary Capture of the central
slice as its key image; the platform writes the report, its Encapsulated PDF and the key image's
Secondary Capture (:mod:`neurorad.workflows.outputs`), so a site can test receive -> run -> review -> deliver with
real DICOM objects before enabling a clinical workflow. It is not a clinical result and says so
in every output.

``NEURORAD_SUMMARY_DELAY_S`` (test knob) makes a run last that long, so crash-safety tests can
kill a worker mid-run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from neurorad.workflows.contract import (
    SCORE_1_5,
    KeyImage,
    Panel,
    Progress,
    Quantity,
    Requirements,
    ReviewForm,
    SeriesRole,
    ViewerLayout,
    Workflow,
    WorkflowInputs,
    WorkflowResult,
)

__all__ = ["SummaryWorkflow"]


def _edge_letters(ds) -> tuple[str, str]:
    """Patient directions at the left and top edges of a stored slice (from ImageOrientationPatient;
    ``("R", "A")`` for a standard axial slice)."""
    iop = [float(x) for x in getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]

    def toward(v: list[float]) -> str:  # LPS: the letter the vector points to, most of the way
        a = int(np.argmax(np.abs(v)))
        return ("L", "P", "H")[a] if v[a] > 0 else ("R", "A", "F")[a]

    opposite = {"L": "R", "R": "L", "P": "A", "A": "P", "H": "I", "F": "S"}
    return opposite[toward(iop[:3])], opposite[toward(iop[3:])]


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


class SummaryWorkflow(Workflow):
    """Central-slice Secondary Capture + Encapsulated PDF of one series (data-plane check)."""

    name = "summary"
    version = "1.0.0"
    title = "Series summary (data-plane check, not a clinical result)"
    description = ("Describes one received MR or CT series and writes a central-slice Secondary Capture; the "
                   "report (and its Encapsulated PDF) lists the series' facts. For testing a site's PACS path, "
                   "not for diagnosis.")
    requirements = Requirements((SeriesRole("image", (), ("MR", "CT"), description="any MR or CT image series"),))
    finding_kinds: dict[str, str] = {}
    review_form = ReviewForm(fields=(SCORE_1_5,), allow_missed=False)
    viewer = ViewerLayout((Panel("Series as received", "image"),))

    def run(self, inputs: WorkflowInputs, out_dir: Path, progress: Progress) -> WorkflowResult:
        import pydicom

        from neurorad.errors import InputError

        src = Path(inputs.path("image"))
        delay_s = float(os.environ.get("NEURORAD_SUMMARY_DELAY_S", "0") or 0)
        t_end = time.monotonic() + delay_s
        while time.monotonic() < t_end:
            progress(0.1, "waiting (NEURORAD_SUMMARY_DELAY_S)")
            time.sleep(min(0.5, max(0.0, t_end - time.monotonic())))
        if not src.is_dir():
            raise InputError("the summary workflow reads a DICOM series folder", src)
        files = _dicom_files(src)
        if not files:
            raise InputError("no DICOM file in the series folder", src)
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        order = sorted(range(len(files)), key=lambda i: int(getattr(headers[i], "InstanceNumber", i) or i))
        ref = pydicom.dcmread(files[order[len(order) // 2]])
        progress(0.3, "read series")
        img = ref.pixel_array.astype(np.float64)
        if img.ndim == 3:
            img = img[img.shape[0] // 2]
        lo, hi = (float(x) for x in np.percentile(img, [1, 99]))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "key_images").mkdir(exist_ok=True)
        grey = np.clip((img - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plt.imsave(out_dir / "key_images" / "central_slice.png", np.repeat(grey[..., None], 3, axis=2))
        key = KeyImage("key_images/central_slice.png", "Central slice as stored (not reoriented)", None,
                       _edge_letters(ref))
        progress(0.6, "central slice")
        facts = [
            Quantity("instances", len(files), "1", "Instances in the series"),
            Quantity("rows", int(ref.Rows), "1", "Matrix rows"),
            Quantity("columns", int(ref.Columns), "1", "Matrix columns"),
            Quantity("central_slice_p1", round(lo, 3), "", "Central slice intensity, 1st percentile"),
            Quantity("central_slice_p99", round(hi, 3), "", "Central slice intensity, 99th percentile"),
        ]
        volumes = {}
        try:  # a NIfTI copy for the review page's viewer (not needed for the DICOM objects)
            from neurorad.image.dicom_series import read_dicom_series
            from neurorad.image.nifti import save_nifti

            save_nifti(read_dicom_series(src), out_dir / "image.nii.gz")
            volumes["image"] = "image.nii.gz"
        except Exception as err:  # noqa: BLE001 - single-slice or odd series: no viewer copy, say so
            facts.append(Quantity("viewer_copy", f"not written ({type(err).__name__})", ""))
        modality = str(getattr(ref, "Modality", "") or "")
        summary = (f"Data-plane check (not a clinical result): {modality} series of {len(files)} instance(s), "
                   f"{ref.Rows} x {ref.Columns}.")
        return WorkflowResult(self.name, self.version, quantities=facts, summary=summary, volumes=volumes,
                              key_images=[key], reference_role="image")
