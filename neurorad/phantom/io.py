"""Write a :class:`PhantomCase` to disk: NIfTI and/or DICOM series, truth maps, ``case.json``.

Layout of ``out_dir``::

    case.json                     kind, seed, lesions (volumes = truth maps), transforms, acquisition
    <image>.nii.gz                e.g. baseline_flair.nii.gz, followup_flair.nii.gz (format nifti/both)
    truth_*.nii.gz                truth label maps (always NIfTI)
    dicom/<image>/IM0001.dcm ...  one series per image (format dicom/both); one study per time point

Everything is written into a hidden temporary folder beside ``out_dir`` and renamed into place
at the end, so an interrupted run never leaves a case that looks complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from neurorad.atomic import atomic_dir
from neurorad.errors import InputError
from neurorad.image.dicom_series import write_dicom_series
from neurorad.image.nifti import save_nifti
from neurorad.phantom.cases import PhantomCase

FORMATS = ("nifti", "dicom", "both")

_DICOM_ATTRS = {
    "t1": {"MRAcquisitionType": "3D", "RepetitionTime": "2300", "EchoTime": "2.98", "InversionTime": "900",
           "FlipAngle": "9", "ScanningSequence": "GR\\IR", "SequenceVariant": "SK\\SP\\MP"},
    "t1c": {"MRAcquisitionType": "3D", "RepetitionTime": "2300", "EchoTime": "2.98", "InversionTime": "900",
            "FlipAngle": "9", "ScanningSequence": "GR\\IR", "SequenceVariant": "SK\\SP\\MP",
            "ContrastBolusAgent": "gadoterate meglumine"},
    "t2": {"MRAcquisitionType": "2D", "RepetitionTime": "5000", "EchoTime": "95", "FlipAngle": "150",
           "ScanningSequence": "SE", "SequenceVariant": "SK\\SP"},
    "flair": {"MRAcquisitionType": "3D", "RepetitionTime": "5000", "EchoTime": "390", "InversionTime": "1800",
              "FlipAngle": "120", "ScanningSequence": "SE\\IR", "SequenceVariant": "SK\\SP\\MP"},
    "swi": {"MRAcquisitionType": "3D", "RepetitionTime": "28", "EchoTime": "20", "FlipAngle": "15",
            "ScanningSequence": "GR", "SequenceVariant": "SP"},
    "ct": {"KVP": "120"},
}


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def write_case(case: PhantomCase, out_dir: str | Path, format: str = "nifti", overwrite: bool = False) -> Path:  # noqa: A002
    """Write images, truth maps and ``case.json``; returns ``out_dir``."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError("output folder exists and is not empty (use overwrite)", out)
    with atomic_dir(out, prefix=f".tmp-{out.name}-") as tmp:
        files: dict[str, str] = {}
        for name, vol in case.images.items():
            if format in ("nifti", "both"):
                save_nifti(vol, tmp / f"{name}.nii.gz")
                files[name] = f"{name}.nii.gz"
            if format in ("dicom", "both"):
                contrast = vol.metadata.get("contrast", "t1")
                tp = vol.metadata.get("timepoint", "baseline")
                study = case.dicom_studies.get(tp, {})
                ident = dict(case.case.get("dicom", {}).get("patient", {}))
                ident.update({k: v for k, v in study.items() if k != "StudyInstanceUID"})
                series_no = 1 + list(case.images).index(name)
                attrs = dict(_DICOM_ATTRS.get(contrast, {}))
                thickness = float(vol.metadata.get("slice_thickness_mm", 1.0))
                if "MRAcquisitionType" in attrs:
                    attrs["MRAcquisitionType"] = "2D" if thickness > 2.0 else "3D"
                # one frame of reference per time point (all its series share the patient position)
                uid_root = f"neurorad-phantom/{case.kind}/{case.seed}/{tp}"
                path = write_dicom_series(
                    vol, tmp / "dicom" / name, modality=vol.metadata.get("modality", "MR"), identity=ident,
                    study_instance_uid=study.get("StudyInstanceUID"),
                    series_description=vol.metadata.get("series_description", name),
                    series_number=series_no, attributes=attrs,
                    frame_of_reference_uid=generate_uid(entropy_srcs=[uid_root, "frame-of-reference"]),
                    uid_seed=f"{uid_root}/{name}",
                )
                files[f"{name}_dicom"] = str(path.relative_to(tmp))
        for name, vol in case.truth.items():
            save_nifti(vol, tmp / f"{name}.nii.gz", dtype=np.uint16 if vol.data.dtype != np.uint8 else None)
            files[name] = f"{name}.nii.gz"
        doc = dict(case.case)
        doc["files"] = files
        (tmp / "case.json").write_text(json.dumps(doc, indent=2, default=_json_default))
    return out
