"""``neurorad convert``: DICOM series folder <-> NIfTI (image layer)."""

from __future__ import annotations

from pathlib import Path

import typer

from neurorad.errors import InputError


def _is_nifti(p: Path) -> bool:
    return p.is_file() and (p.name.endswith(".nii") or p.name.endswith(".nii.gz"))


def _dicom_date(option: str, value: str) -> str:
    import datetime as dt

    text = value.strip().replace("-", "")
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise InputError(f"{option} must be a date YYYYMMDD or YYYY-MM-DD, got {value!r}") from None
    return text


def _dicom_time(option: str, value: str) -> str:
    text = value.strip().replace(":", "")
    if len(text) == 4:
        text += "00"
    if not (len(text) == 6 and text.isdigit() and int(text[:2]) < 24 and int(text[2:4]) < 60 and int(text[4:]) < 60):
        raise InputError(f"{option} must be a time HHMMSS or HH:MM[:SS], got {value!r}")
    return text


def _check_uid(option: str, value: str) -> None:
    from pydicom.uid import UID

    if not UID(value).is_valid:
        raise InputError(f"{option} is not a valid DICOM UID (digits and dots, at most 64 characters): {value!r}")


def _identity(patient_name: str | None, patient_id: str | None, birth_date: str | None, sex: str | None,
              study_date: str | None, study_time: str | None, accession: str | None,
              study_description: str | None) -> dict[str, str]:
    """The identity attributes given on the command line, checked against their DICOM value representations."""
    ident: dict[str, str] = {}
    for option, kw, value, limit in (("--patient-name", "PatientName", patient_name, 64),
                                     ("--patient-id", "PatientID", patient_id, 64),
                                     ("--accession", "AccessionNumber", accession, 16),
                                     ("--study-description", "StudyDescription", study_description, 64)):
        if value is not None:
            if len(value) > limit or "\\" in value:
                raise InputError(f"{option} must be at most {limit} characters without a backslash, got {value!r}")
            ident[kw] = value
    if birth_date is not None:
        ident["PatientBirthDate"] = _dicom_date("--birth-date", birth_date)
    if sex is not None:
        if sex.upper() not in ("M", "F", "O"):
            raise InputError(f"--sex must be M, F or O, got {sex!r}")
        ident["PatientSex"] = sex.upper()
    if study_date is not None:
        ident["StudyDate"] = _dicom_date("--study-date", study_date)
    if study_time is not None:
        ident["StudyTime"] = _dicom_time("--study-time", study_time)
    return ident


def convert(
    src: Path = typer.Argument(..., help="A DICOM folder (or file) to convert to NIfTI, or a NIfTI file to write as "
                                         "a DICOM series."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .nii/.nii.gz file (from DICOM) or series folder "
                                                      "(from NIfTI)."),
    modality: str = typer.Option("MR", "--modality", help="MR or CT (NIfTI -> DICOM only; CT values are HU)."),
    series_uid: str | None = typer.Option(None, "--series-uid", help="SeriesInstanceUID to read when the folder "
                                                                     "holds several series; NIfTI -> DICOM: the "
                                                                     "SeriesInstanceUID to write."),
    engine: str = typer.Option("auto", "--engine", help="DICOM reader: auto (dcm2niix, pydicom fallback), "
                                                        "dcm2niix or pydicom."),
    series_description: str = typer.Option("", "--series-description", help="SeriesDescription (NIfTI -> DICOM)."),
    patient_name: str | None = typer.Option(None, "--patient-name", help="PatientName, DICOM PN: FAMILY^GIVEN "
                                                                        "(NIfTI -> DICOM; default PHANTOM^SYNTHETIC)."),
    patient_id: str | None = typer.Option(None, "--patient-id", help="PatientID (NIfTI -> DICOM; <= 64 characters)."),
    birth_date: str | None = typer.Option(None, "--birth-date", help="PatientBirthDate, YYYYMMDD or YYYY-MM-DD."),
    sex: str | None = typer.Option(None, "--sex", help="PatientSex: M, F or O."),
    study_date: str | None = typer.Option(None, "--study-date", help="StudyDate (also Series/Content date), YYYYMMDD "
                                                                     "or YYYY-MM-DD; default today."),
    study_time: str | None = typer.Option(None, "--study-time", help="StudyTime, HHMMSS or HH:MM[:SS]; default now."),
    accession: str | None = typer.Option(None, "--accession", help="AccessionNumber (at most 16 characters)."),
    study_uid: str | None = typer.Option(None, "--study-uid", help="StudyInstanceUID (e.g. to add a series to an "
                                                                   "existing study); default a new UID."),
    study_description: str | None = typer.Option(None, "--study-description", help="StudyDescription."),
    series_number: int = typer.Option(1, "--series-number", help="SeriesNumber (NIfTI -> DICOM)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Convert DICOM -> NIfTI (dcm2niix) or NIfTI -> DICOM MR/CT series. Writes atomically.

    NIfTI -> DICOM takes the patient and study identifiers and dates (--patient-name, --patient-id,
    --birth-date, --sex, --study-date, --study-time, --accession, --study-uid) so a site can build a
    realistic test study for its own PACS path; --series-uid then sets the written SeriesInstanceUID.
    """
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
        identity = _identity(patient_name, patient_id, birth_date, sex, study_date, study_time, accession,
                             study_description)
        if study_uid is not None:
            _check_uid("--study-uid", study_uid)
        if series_uid is not None:
            _check_uid("--series-uid", series_uid)
        path = write_dicom_series(vol, out, modality=modality.upper(), series_description=series_description,
                                  identity=identity, study_instance_uid=study_uid, series_instance_uid=series_uid,
                                  series_number=series_number, overwrite=overwrite)
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
