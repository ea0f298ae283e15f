"""``neurorad convert``: DICOM series folder <-> NIfTI (image layer)."""

from __future__ import annotations

from pathlib import Path

import typer

from neurorad.errors import InputError


def _is_nifti(p: Path) -> bool:
    return p.is_file() and (p.name.endswith(".nii") or p.name.endswith(".nii.gz"))


def convert(
    src: Path = typer.Argument(..., help="A DICOM folder (or file) to convert to NIfTI, or a NIfTI file to write as "
                                         "a DICOM series."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .nii/.nii.gz file (from DICOM) or series folder "
                                                      "(from NIfTI)."),
    modality: str = typer.Option("MR", "--modality", help="MR or CT (NIfTI -> DICOM only; CT values are HU)."),
    series_uid: str | None = typer.Option(None, "--series-uid", help="SeriesInstanceUID to read when the folder "
                                                                     "holds several series."),
    engine: str = typer.Option("auto", "--engine", help="DICOM reader: auto (dcm2niix, pydicom fallback), "
                                                        "dcm2niix or pydicom."),
    series_description: str = typer.Option("", "--series-description", help="SeriesDescription (NIfTI -> DICOM)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Convert DICOM -> NIfTI (dcm2niix) or NIfTI -> DICOM MR/CT series. Writes atomically."""
    from neurorad.image.dicom_series import read_dicom_series, write_dicom_series
    from neurorad.image.nifti import load_nifti, save_nifti

    if not src.exists():
        raise InputError("file or folder not found", src)
    if _is_nifti(src):
        if modality.upper() not in ("MR", "CT"):
            raise InputError(f"--modality must be MR or CT, got {modality!r}")
        vol = load_nifti(src)
        if vol.data.ndim != 3:
            raise InputError(f"a DICOM series needs a 3D image, got shape {vol.shape}", src)
        path = write_dicom_series(vol, out, modality=modality.upper(), series_description=series_description,
                                  overwrite=overwrite)
        typer.echo(f"wrote {vol.spatial_shape[2]} {modality.upper()} images to {path}")
        return
    if not (out.name.endswith(".nii") or out.name.endswith(".nii.gz")):
        raise InputError("output of a DICOM conversion must end in .nii or .nii.gz", out)
    if out.exists() and not overwrite:
        raise InputError("output exists (use --overwrite)", out)
    vol = read_dicom_series(src, series_uid=series_uid, engine=engine)
    save_nifti(vol, out)
    sidecar = out.with_name(out.name.replace(".nii.gz", "").replace(".nii", "") + ".json")
    import json

    public = {k: v for k, v in vol.metadata.get("dicom", {}).items()
              if k not in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")}
    sidecar.write_text(json.dumps({"dicom": public, "reader": vol.metadata.get("reader")}, indent=2))
    typer.echo(f"wrote {out} {vol.shape} spacing_mm={tuple(round(s, 4) for s in vol.spacing_mm)} "
               f"({vol.metadata.get('reader')})")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("convert")(convert)
