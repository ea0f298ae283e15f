"""Workflow registry: the job runner maps a workflow name to a callable.

A workflow is ``run(inputs, out_dir, progress) -> list[Path]``:

* ``inputs``: role -> sorted list of de-identified DICOM files of the selected series
  (e.g. ``{"image": [...]}``, or ``{"flair": [...], "baseline_flair": [...]}``).
* ``out_dir``: an empty scratch folder; every file the workflow leaves there that is DICOM
  becomes a :class:`~neurorad.store.models.Result` (kind from its SOP Class), other files
  (PDF, JSON, CSV, NIfTI) are stored as results too but not delivered.
* ``progress(fraction, message)``: optional progress report (also extends the job's lease).

Built in: ``summary`` (always available; a Secondary Capture of the central slice and an
Encapsulated PDF summary of the series, written with highdicom/pydicom), and ``ms-lesions``
when :mod:`neurorad.pipelines.ms_lesions` is importable.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurorad.dicom.results import deterministic_uid

ProgressFn = Callable[[float, str], None]
WorkflowFn = Callable[[dict[str, list[Path]], Path, ProgressFn], list[Path]]


@dataclass(frozen=True)
class Requirement:
    """One series a workflow needs: its role and which series qualify."""

    role: str
    modalities: tuple[str, ...] = ("MR", "CT")
    classes: tuple[str, ...] = ()  # series classes (from the classifier) that qualify; empty: any
    prior: bool = False  # taken from the same patient's previous study (e.g. a baseline FLAIR)


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    run: WorkflowFn
    requirements: tuple[Requirement, ...] = field(default_factory=tuple)
    description: str = ""


REGISTRY: dict[str, WorkflowSpec] = {}


def register(spec: WorkflowSpec) -> None:
    REGISTRY[spec.name] = spec


def get(name: str) -> WorkflowSpec:
    if name == "auto":
        name = "ms-lesions" if "ms-lesions" in REGISTRY else "summary"
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown workflow {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def _edge_letters(ds) -> tuple[str, str]:
    """Patient directions at the left and top edges of a stored slice (from ImageOrientationPatient;
    ``("R", "A")`` for a standard axial slice)."""
    iop = [float(x) for x in getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]

    def toward(v: list[float]) -> str:  # LPS: the letter the vector points to, most of the way
        a = int(np.argmax(np.abs(v)))
        return ("L", "P", "H")[a] if v[a] > 0 else ("R", "A", "F")[a]

    opposite = {"L": "R", "R": "L", "P": "A", "A": "P", "H": "I", "F": "S"}
    return opposite[toward(iop[:3])], opposite[toward(iop[3:])]


# -- the built-in summary workflow -------------------------------------------------------------
def _summary_pdf(lines: list[str]) -> bytes:
    """A one-page PDF of text lines (matplotlib's PDF backend; no extra dependency)."""
    from matplotlib.backends.backend_pdf import FigureCanvasPdf
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.27, 11.69))
    FigureCanvasPdf(fig)
    for i, line in enumerate(lines):
        fig.text(0.08, 0.92 - 0.035 * i, line, family="monospace", fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf")
    return buf.getvalue()


def run_summary(inputs: dict[str, list[Path]], out_dir: Path, progress: ProgressFn | None = None) -> list[Path]:
    """Summary workflow: central-slice Secondary Capture + Encapsulated PDF with series facts.

    Not a clinical result: it exercises the data plane end to end (receive, run, review,
    deliver) with real DICOM objects built from the received series.
    """
    import pydicom

    from neurorad import __version__
    from neurorad.dicom.results import write_encapsulated_pdf, write_secondary_captures

    files = inputs["image"]
    progress = progress or (lambda f, m: None)
    # test knob: makes the job last long enough to be killed mid-run (crash-safety tests)
    delay_s = float(os.environ.get("NEURORAD_SUMMARY_DELAY_S", "0") or 0)
    t_end = time.monotonic() + delay_s
    while time.monotonic() < t_end:
        progress(0.1, "waiting (NEURORAD_SUMMARY_DELAY_S)")
        time.sleep(min(0.5, max(0.0, t_end - time.monotonic())))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    order = sorted(range(len(files)), key=lambda i: int(getattr(headers[i], "InstanceNumber", i) or i))
    mid = files[order[len(order) // 2]]
    ref = pydicom.dcmread(mid)
    progress(0.3, "read series")
    img = ref.pixel_array.astype(np.float64)
    if img.ndim == 3:
        img = img[img.shape[0] // 2]
    lo, hi = np.percentile(img, [1, 99])
    grey = np.clip((img - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    rgb = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    series_uid = str(ref.SeriesInstanceUID)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the central slice as stored: its edges are those of the source image, not a display convention
    letters = _edge_letters(ref)
    (sc_path,) = write_secondary_captures(
        [(rgb, letters)], ref, out_dir, series_description="neurorad summary (SC)",
        series_instance_uid=deterministic_uid(series_uid, "summary-sc-series"),
        sop_instance_uids=[deterministic_uid(series_uid, "summary-sc")])
    sc_path = sc_path.rename(out_dir / "summary_sc.dcm")
    progress(0.6, "wrote secondary capture")

    lines = ["neurorad summary (not a diagnostic report)", "",
             f"series: {getattr(ref, 'SeriesDescription', '')}", f"modality: {getattr(ref, 'Modality', '')}",
             f"instances: {len(files)}", f"matrix: {ref.Rows} x {ref.Columns}",
             f"pixel spacing (mm): {list(getattr(ref, 'PixelSpacing', []))}",
             f"slice thickness (mm): {getattr(ref, 'SliceThickness', '')}",
             f"central slice intensity p1/p99: {lo:.1f} / {hi:.1f}", f"neurorad {__version__}"]
    pdf_path = write_encapsulated_pdf(
        _summary_pdf(lines), ref, out_dir / "summary_pdf.dcm", title="neurorad summary",
        sop_instance_uid=deterministic_uid(series_uid, "summary-pdf"),
        series_instance_uid=deterministic_uid(series_uid, "summary-pdf-series"), series_number=991)
    progress(0.9, "wrote encapsulated PDF")
    return [sc_path, pdf_path]


register(WorkflowSpec("summary", run_summary, (Requirement("image"),),
                      "central-slice Secondary Capture + Encapsulated PDF summary (data-plane check)"))


def _register_ms_lesions() -> None:
    """Register ``ms-lesions`` when the MS workflow is installed (see neurorad.pipelines.ms_lesions)."""
    try:
        from neurorad.server import ms_adapter
    except ImportError:
        return
    spec = ms_adapter.spec()
    if spec is not None:
        register(spec)


_register_ms_lesions()
