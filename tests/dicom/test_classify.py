"""Series classification and selection on realistic attribute sets (vendor naming as seen on
Siemens, GE and Philips scanners) and on pydicom's test files."""

from __future__ import annotations

import json

import pydicom
import pytest
from pydicom.data import get_testdata_file

from neurorad.dicom.classify import (
    DEFAULT_RULES_PATH,
    MissingSeries,
    Selection,
    SeriesRequirement,
    WorkflowRequirements,
    classify_series,
    select_series,
    series_attributes,
)
from neurorad.errors import InputError


def mr(desc: str, **kw) -> dict:
    return {"Modality": "MR", "SeriesDescription": desc, "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"], **kw}


CASES = [
    # Siemens
    (mr("t2_space_dark-fluid_sag_p2_iso", ScanningSequence="SE\\IR", RepetitionTime=5000, EchoTime=387,
        InversionTime=1800, MRAcquisitionType="3D"), "FLAIR"),
    (mr("t1_mprage_sag_p2_iso", ScanningSequence="GR\\IR", RepetitionTime=2300, EchoTime=2.98, InversionTime=900,
        MRAcquisitionType="3D"), "T1"),
    (mr("t1_mprage_sag_p2_iso", ScanningSequence="GR\\IR", RepetitionTime=2300, EchoTime=2.98, InversionTime=900,
        ContrastBolusAgent="Gadovist 1.0", MRAcquisitionType="3D"), "T1C"),
    (mr("t1_mprage_sag_p2_iso", InversionTime=900, EchoTime=3, ContrastBolusAgent="NONE"), "T1"),
    (mr("t1_mprage_sag_p2_iso", InversionTime=900, EchoTime=3, ContrastBolusAgent="ANONYMIZED"), "T1"),
    (mr("ep2d_diff_3scan_trace_p2", ScanningSequence="EP", SequenceName="*ep_b1000t", RepetitionTime=5000,
        EchoTime=89), "DWI"),
    (mr("ep2d_diff_3scan_trace_p2_ADC", ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]), "DWI"),
    (mr("SWI_Images", ImageType=["ORIGINAL", "PRIMARY", "SWI", "NONE"]), "SWI"),
    (mr("t2_tse_tra_p2", ScanningSequence="SE", RepetitionTime=4000, EchoTime=95), "T2"),
    (mr("localizer", ImageType=["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]), "OTHER"),
    (mr("AAHead_Scout_32ch-head-coil"), "OTHER"),
    # GE
    (mr("Ax T2 FLAIR", ScanningSequence="SE\\IR", RepetitionTime=9000, EchoTime=120, InversionTime=2250), "FLAIR"),
    (mr("Sag T1 FLAIR", ScanningSequence="SE\\IR", RepetitionTime=2500, EchoTime=10, InversionTime=860), "T1"),
    (mr("Ax T1 SE +C", ScanningSequence="SE", RepetitionTime=550, EchoTime=14), "T1C"),
    (mr("Ax SWAN"), "SWI"),
    (mr("Ax T2* GRE", ScanningSequence="GR", RepetitionTime=650, EchoTime=20), "OTHER"),
    (mr("Ax T2 FSE", ScanningSequence="SE", RepetitionTime=4000, EchoTime=100), "T2"),
    (mr("Sag 3D BRAVO", ScanningSequence="GR", RepetitionTime=8.2, EchoTime=3.2, InversionTime=450), "T1"),
    # Philips
    (mr("3D_Brain_VIEW_FLAIR_SHC", RepetitionTime=4800, EchoTime=340, InversionTime=1650), "FLAIR"),
    (mr("DWI_SENSE", DiffusionBValue=1000), "DWI"),
    (mr("T1W_3D_TFE post gd"), "T1C"),
    # no description: timing only
    (mr("", ScanningSequence="SE\\IR", RepetitionTime=9000, EchoTime=110, InversionTime=2500), "FLAIR"),
    (mr("", ScanningSequence="SE", RepetitionTime=500, EchoTime=12), "T1"),
    (mr("", ScanningSequence="SE", RepetitionTime=5000, EchoTime=110), "T2"),
    # CT
    ({"Modality": "CT", "BodyPartExamined": "HEAD", "SeriesDescription": "Head 5mm"}, "CT_HEAD"),
    ({"Modality": "CT", "SeriesDescription": "Schaedel nativ 1.0 H30s", "StudyDescription": "CCT"}, "CT_HEAD"),
    ({"Modality": "CT", "BodyPartExamined": "CHEST", "SeriesDescription": "Thorax 1mm"}, "OTHER"),
    ({"Modality": "CT", "SeriesDescription": "Topogram 0.6 T20s", "BodyPartExamined": "HEAD"}, "OTHER"),
    ({"Modality": "PT", "SeriesDescription": "FDG brain"}, "OTHER"),
]


@pytest.mark.parametrize(("attrs", "label"), CASES, ids=[f"{c[0].get('SeriesDescription')}-{c[1]}" for c in CASES])
def test_realistic_series(attrs, label):
    cls = classify_series(attrs)
    assert cls.label == label, cls
    assert cls.reason.startswith("rule '")


def test_pydicom_test_files():
    mr_ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    # spin echo TR 4000 ms / TE 240 ms, no description: T2-weighted by timing
    cls = classify_series(mr_ds)
    assert (cls.label, float(mr_ds.RepetitionTime), float(mr_ds.EchoTime)) == ("T2", 4000.0, 240.0)
    assert "RepetitionTime" in cls.reason
    ct_ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert classify_series(ct_ds).label == "OTHER"  # nothing says head
    ct_ds.BodyPartExamined = "HEAD"
    assert classify_series(ct_ds).label == "CT_HEAD"


def test_classification_survives_deidentification(vault):
    """The profile turns an empty ContrastBolusAgent into nothing, not a dummy that reads as contrast;
    with clean-descriptors the description survives for the rules."""
    from neurorad.dicom.deid import DeidOptions, deidentify_dataset

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.SeriesDescription, ds.InversionTime, ds.EchoTime, ds.ContrastBolusAgent = "t1_mprage_sag", 900, 3, ""
    assert classify_series(ds).label == "T1"
    basic = deidentify_dataset(ds, vault).dataset
    assert basic.ContrastBolusAgent in ("", None)
    assert classify_series(basic).label == "T1"  # timing still says T1
    cleaned = deidentify_dataset(ds, vault, DeidOptions(clean_descriptors=True)).dataset
    assert classify_series(cleaned) == classify_series(ds)


def test_dicom_json_from_qido():
    qido = {"00080060": {"vr": "CS", "Value": ["MR"]}, "0008103E": {"vr": "LO", "Value": ["Ax T2 FLAIR"]},
            "00180082": {"vr": "DS", "Value": [2250]}}
    attrs = series_attributes(qido)
    assert attrs["SeriesDescription"] == "Ax T2 FLAIR" and attrs["InversionTime"] == 2250
    assert classify_series(attrs).label == "FLAIR"


def test_site_rules_file_overrides(tmp_path, monkeypatch):
    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    rules["rules"].insert(0, {"name": "site: DF protocol", "label": "FLAIR",
                              "any": [{"field": "ProtocolName", "regex": "^DF_SAG$"}]})
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    attrs = {"Modality": "MR", "ProtocolName": "DF_SAG"}
    assert classify_series(attrs).label == "OTHER"
    assert classify_series(attrs, rules_path=path).label == "FLAIR"
    monkeypatch.setenv("NEURORAD_SERIES_RULES", str(path))
    assert classify_series(attrs).reason.startswith("rule 'site: DF protocol'")
    rules["rules"][0]["label"] = "NOT_A_LABEL"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rules))
    with pytest.raises(InputError, match="unknown label"):
        classify_series(attrs, rules_path=bad)


def _series(desc, n, number, **kw):
    return mr(desc, n_instances=n, SeriesNumber=number, **kw)


FLAIR_T1 = WorkflowRequirements("flair+t1", (SeriesRequirement("FLAIR", prefer_3d=True),
                                             SeriesRequirement("T1", True, required=False)))
FOUR = WorkflowRequirements("four", (SeriesRequirement("T1", True), SeriesRequirement("T1C", True),
                                     SeriesRequirement("T2"), SeriesRequirement("FLAIR", True)))


def test_selection_prefers_3d_flair_and_reports_missing():
    flair2d = _series("Ax T2 FLAIR", 28, 3, MRAcquisitionType="2D", SliceThickness=5, InversionTime=2250)
    flair3d = _series("t2_space_dark-fluid_sag_p2_iso", 176, 5, MRAcquisitionType="3D", SliceThickness=1,
                      InversionTime=1800)
    t1 = _series("t1_mprage_sag_p2_iso", 176, 6, MRAcquisitionType="3D", InversionTime=900, EchoTime=3)
    loc = _series("localizer", 3, 1, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    sel = select_series([loc, flair2d, flair3d, t1], FLAIR_T1)
    assert isinstance(sel, Selection) and sel.status == "selected"
    assert sel.chosen["FLAIR"] is flair3d and sel.chosen["T1"] is t1
    assert "3D" in sel.reasons["FLAIR"] and "2 candidate" in sel.reasons["FLAIR"]
    # without the 3D, the 2D FLAIR is used; without any FLAIR the study is missing a series
    assert select_series([loc, flair2d], FLAIR_T1).chosen["FLAIR"] is flair2d
    missing = select_series([loc, t1], FLAIR_T1)
    assert isinstance(missing, MissingSeries)
    assert missing.status == "missing_series" and missing.missing == ["FLAIR"]
    tumor = select_series([flair3d, t1], FOUR)
    assert isinstance(tumor, MissingSeries) and tumor.missing == ["T1C", "T2"]
    # a repeat of the same protocol: the later series wins
    repeat = _series("t2_space_dark-fluid_sag_p2_iso", 176, 9, MRAcquisitionType="3D", SliceThickness=1,
                     InversionTime=1800)
    assert select_series([flair3d, repeat], FLAIR_T1).chosen["FLAIR"] is repeat
    custom = WorkflowRequirements("ct", (SeriesRequirement("CT_HEAD"),))
    assert isinstance(select_series([flair3d], custom), MissingSeries)
