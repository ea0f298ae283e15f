"""PS3.15 Annex E de-identification: a marker corpus built from Table E.1-1 itself.

Oracle: the expected fate of every attribute is read by this test from the reference table
(basic action + option columns), independently of neurorad's implementation; the check is a byte
search of the written file (data set and file meta).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path

import pydicom
import pytest
from nibabel.nicom import csareader
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from neurorad.dicom.deid import (
    PROFILE_PATH,
    PROFILE_SHA256,
    DeidOptions,
    QuarantineError,
    deidentify_dataset,
    deidentify_folder,
    reidentify_dataset,
)
from neurorad.dicom.vault import PseudonymVault

from .conftest import TABLE, Markers, build_marker_dataset, table_rows

STUDY, SERIES = "1.2.826.0.1.3680043.99.1.1", "1.2.826.0.1.3680043.99.1.2"
SOP_A, SOP_B = "1.2.826.0.1.3680043.99.1.3", "1.2.826.0.1.3680043.99.1.4"
TEXT_VRS = {"AE", "CS", "SH", "LO", "ST", "LT", "UT", "UC", "PN", "UR"}


def test_profile_copy_is_byte_identical_to_reference():
    raw = PROFILE_PATH.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == PROFILE_SHA256
    assert TABLE.is_file(), f"reference table missing: {TABLE}"
    assert raw == TABLE.read_bytes()


def _write_corpus(tmp_path: Path) -> tuple[Path, dict[str, Markers], Dataset]:
    """Two instances of one study (own marker sets; B references A); returns markers by SOP UID."""
    src = tmp_path / "in"
    src.mkdir()
    ma, mb = Markers(0), Markers(1000)  # dates stay 4-digit years (< 9999)
    a = build_marker_dataset(ma, STUDY, SERIES, SOP_A)
    b = build_marker_dataset(mb, STUDY, SERIES, SOP_B)
    # B references A: the reference must follow A's new UID
    ref = Dataset()
    ref.ReferencedSOPClassUID = a.SOPClassUID
    ref.ReferencedSOPInstanceUID = SOP_A
    b.ReferencedImageSequence = Sequence([ref])
    a.save_as(src / "a.dcm", enforce_file_format=True)
    (src / "sub").mkdir()
    b.save_as(src / "sub" / "b.dcm", enforce_file_format=True)
    return src, {SOP_A: ma, SOP_B: mb}, a


def _expected_survivors(options: DeidOptions) -> set[int]:
    """Tags whose marker the standard lets survive under ``options`` (oracle from the table)."""
    keep = set()
    for row in table_rows():
        vr = row["vr"]
        cols = []
        if options.retain_device_identity:
            cols.append(row.get("rtnDevIdOpt"))
        if options.retain_patient_characteristics:
            cols.append(row.get("rtnPatCharsOpt"))
        k = "K" in cols
        c_text = vr in TEXT_VRS and vr != "PN" and (
            (options.clean_descriptors and row.get("cleanDescOpt") == "C")
            or (options.retain_patient_characteristics and row.get("rtnPatCharsOpt") == "C"))
        c_time = vr == "TM" and options.retain_longitudinal_modified_dates and row.get("rtnLongModifDatesOpt") == "C"
        if vr != "SQ" and (k or c_text or c_time):
            keep.add(row["tag_int"])
    return keep


@pytest.mark.parametrize(
    "options",
    [DeidOptions(),
     DeidOptions(retain_longitudinal_modified_dates=True, retain_patient_characteristics=True,
                 retain_device_identity=True, clean_descriptors=True),
     DeidOptions(retain_safe_private=True)],
    ids=["basic", "all-options", "retain-safe-private"],
)
def test_no_removed_marker_survives_in_written_files(tmp_path, vault, options):
    src, marker_sets, _ = _write_corpus(tmp_path)
    all_markers = {**marker_sets[SOP_A].searchable, **marker_sets[SOP_B].searchable}
    summary = deidentify_folder(src, tmp_path / "out", vault, options)
    assert summary["written"] == 2 and summary["quarantined_count"] == 0, summary
    survivors_allowed = _expected_survivors(options)
    for rel in summary["written_files"]:
        # the vault's new UIDs (2.25.<a random 39-digit integer>) are left out of the byte search: a digit marker
        # (a date) can appear in one by chance (seen once in a suite run: "55920901" in a run of "all-options")
        raw = re.sub(rb"2\.25\.\d+", b"|", (tmp_path / "out" / rel).read_bytes())
        out = pydicom.dcmread(tmp_path / "out" / rel)
        markers = marker_sets[vault.original_uid(out.SOPInstanceUID)]
        found = {m: tag for m, tag in all_markers.items() if m.encode() in raw}
        unexpected = {m: f"{tag:08X}" for m, tag in found.items() if tag not in survivors_allowed}
        assert not unexpected, unexpected
        # what the options keep must still be there (the options are not no-ops)
        kept = {m for m, tag in markers.searchable.items() if tag in survivors_allowed}
        assert kept <= set(found), sorted(kept - set(found))
        if options.retain_device_identity:
            assert markers_for(markers, 0x00181000) & set(found)  # Device Serial Number kept
        assert out.PatientIdentityRemoved == "YES"
        codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
        assert {item.CodingSchemeDesignator for item in out.DeidentificationMethodCodeSequence} == {"DCM"}
        if options.retain_safe_private:
            # the CSA headers survive, cleaned: still readable (nibabel's reader as the oracle), the
            # technical values kept, the free text gone (the marker check above), 113111 declared
            assert codes == {"113100", "113111"}
            block = out.private_block(0x0029, "SIEMENS CSA HEADER")
            image, series = (csareader.read(bytes(block[e].value)) for e in (0x10, 0x20))
            assert image["tags"]["NumberOfImagesInMosaic"]["items"] == [48]
            assert image["tags"]["MosaicRefAcqTimes"]["items"] == [0.0, 62.5, 125.0]
            assert series["tags"]["GradientMode"]["items"] == ["Fast"]
            assert series["tags"]["UsedPatientWeight"]["items"] == [0]  # a patient characteristic: dummy
            phoenix = series["tags"]["MrPhoenixProtocol"]["items"][0]
            assert "sKSpace.lBaseResolution\t = \t128" in phoenix and "<XProtocol>" not in phoenix
            assert 0x00291008 not in out  # not on the allow-list
        else:
            # default: no private element at all, and no Retain Safe Private declared
            assert not any(e.tag.is_private for e in out)
            assert "113111" not in codes
            if options.retain_device_identity:
                assert {"113100", "113105", "113107", "113108", "113109"} == codes
            else:
                assert codes == {"113100"}
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert "SourceApplicationEntityTitle" not in out.file_meta
        assert out.PatientID == out.PatientName == vault.pseudonym("PID-MARKER-777")
        assert not any(0x5000 <= e.tag.group <= 0x60FF for e in out)
        assert 0x00142006 not in out  # PN outside the table removed
        # every attribute of the table is gone, emptied, dummy, a new UID, or allowed to stay
        for row in table_rows():
            tag = row["tag_int"]
            if tag in out and tag not in survivors_allowed and row["vr"] == "US":
                assert out[tag].value in (None, 0, b"")


def markers_for(markers: Markers, tag: int) -> set[str]:
    return {m for m, t in markers.searchable.items() if t == tag}


def test_uids_consistent_within_study_and_references_follow(tmp_path, vault):
    src, _, a = _write_corpus(tmp_path)
    summary = deidentify_folder(src, tmp_path / "out", vault)
    outs = [pydicom.dcmread(tmp_path / "out" / r) for r in summary["written_files"]]
    by_orig = {vault.original_uid(o.SOPInstanceUID): o for o in outs}
    oa, ob = by_orig[SOP_A], by_orig[SOP_B]
    assert oa.StudyInstanceUID == ob.StudyInstanceUID != STUDY
    assert oa.SeriesInstanceUID == ob.SeriesInstanceUID != SERIES
    assert oa.SOPInstanceUID != ob.SOPInstanceUID
    assert ob.ReferencedImageSequence[0].ReferencedSOPInstanceUID == oa.SOPInstanceUID
    for o in outs:
        assert vault.original_uid(o.StudyInstanceUID) == STUDY
        for uid in (o.StudyInstanceUID, o.SeriesInstanceUID, o.SOPInstanceUID):
            assert uid.startswith("2.25.") and len(uid) <= 64
    # same site key, another run: same new UIDs (pseudonymisation is deterministic)
    again = deidentify_dataset(a, vault).dataset
    assert again.SOPInstanceUID == oa.SOPInstanceUID


def test_retain_dates_shifts_by_the_patients_offset(vault):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.SeriesDate, ds.AcquisitionDate = "20040826", "20040827"
    ds.AcquisitionDateTime = "20040827123456.123"
    res = deidentify_dataset(ds, vault, DeidOptions(retain_longitudinal_modified_dates=True))
    shift = vault.date_shift_days(str(ds.PatientID))
    assert shift != 0 and res.date_shift_days == shift

    def shifted(d: str) -> str:
        return (dt.datetime.strptime(d, "%Y%m%d") + dt.timedelta(days=shift)).strftime("%Y%m%d")

    out = res.dataset
    assert out.StudyDate == shifted(ds.StudyDate)
    assert out.SeriesDate == shifted("20040826")
    assert out.AcquisitionDate == shifted("20040827")
    assert out.AcquisitionDateTime == shifted("20040827") + "123456.123"
    assert out.InstanceCreationDate == shifted(ds.InstanceCreationDate)  # not in the table: shifted too
    assert out.StudyTime == ds.StudyTime  # times kept under this option
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    # a second study of the same patient gets the same offset: intervals are preserved
    ds2 = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds2.StudyInstanceUID, ds2.StudyDate = "1.2.826.0.1.3680043.99.5", "20050101"
    out2 = deidentify_dataset(ds2, vault, DeidOptions(retain_longitudinal_modified_dates=True)).dataset
    d = (dt.datetime.strptime(out2.StudyDate, "%Y%m%d") - dt.datetime.strptime(out.StudyDate, "%Y%m%d")).days
    assert d == (dt.date(2005, 1, 1) - dt.date(2004, 8, 26)).days
    # without the option: dates removed or emptied
    plain = deidentify_dataset(ds, vault).dataset
    assert plain.StudyDate in ("", None) and "InstanceCreationDate" not in plain
    assert plain.LongitudinalTemporalInformationModified == "REMOVED"


def test_device_and_patient_characteristics_options(vault):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PatientAge, ds.PatientWeight = "042Y", "71.5"
    base = deidentify_dataset(ds, vault).dataset
    assert base.DeviceSerialNumber != ds.DeviceSerialNumber and base.StationName != ds.StationName
    assert "PatientAge" not in base and base.PatientSex in ("", None)
    opt = deidentify_dataset(ds, vault, DeidOptions(retain_device_identity=True,
                                                    retain_patient_characteristics=True)).dataset
    assert opt.DeviceSerialNumber == ds.DeviceSerialNumber and opt.StationName == ds.StationName
    assert opt.PatientSex == ds.PatientSex and opt.PatientAge == "042Y" and float(opt.PatientWeight) == 71.5


def test_clean_descriptors_removes_identifiers_but_keeps_meaning(vault):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PatientName = "Doe^John"
    ds.SeriesDescription = "T2 FLAIR doe 2023-01-05 id 1234567"
    base = deidentify_dataset(ds, vault).dataset
    assert "SeriesDescription" not in base
    out = deidentify_dataset(ds, vault, DeidOptions(clean_descriptors=True)).dataset
    assert out.SeriesDescription.startswith("T2 FLAIR")
    for leak in ("doe", "Doe", "2023", "1234567"):
        assert leak not in out.SeriesDescription


@pytest.mark.parametrize(
    ("change", "quarantined"),
    [({"BurnedInAnnotation": "YES"}, True),
     ({"Modality": "US"}, True),
     ({"Modality": "US", "BurnedInAnnotation": "NO"}, False),
     ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, True),
     ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.104.1"}, True),
     ({"RecognizableVisualFeatures": "YES"}, True),
     ({"PatientID": ""}, True),
     ({}, False)],
)
def test_quarantine(vault, change, quarantined):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for k, v in change.items():
        setattr(ds, k, v)
    if quarantined:
        with pytest.raises(QuarantineError) as exc:
            deidentify_dataset(ds, vault)
        assert exc.value.reason and str(ds.PatientName) not in exc.value.reason
    else:
        deidentify_dataset(ds, vault)


def test_folder_lists_quarantined_and_skipped(tmp_path, vault):
    src = tmp_path / "in"
    src.mkdir()
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.save_as(src / "ok.dcm")
    ds.BurnedInAnnotation = "YES"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.99.9"
    ds.save_as(src / "burned.dcm")
    (src / "notes.txt").write_text("not dicom")
    raw = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    (src / "cut.dcm").write_bytes(raw[:300])
    (src / "short_pixels.dcm").write_bytes(raw[:-1000])
    summary = deidentify_folder(src, tmp_path / "out", vault)
    assert summary["written"] == 1
    assert [q["input"] for q in summary["quarantined"]] == ["burned.dcm"]
    reasons = {s["input"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"notes.txt", "cut.dcm", "short_pixels.dcm"}
    assert reasons["notes.txt"] == "not a DICOM file" and "truncated pixel data" in reasons["short_pixels.dcm"]
    assert (tmp_path / "out" / "summary.json").is_file()
    assert not list((tmp_path / "out").rglob(".*tmp*"))


def test_reidentify_result_restores_identity_and_references(vault):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PatientBirthDate = "19700203"
    deid = deidentify_dataset(ds, vault).dataset
    # a result made on the de-identified series (e.g. a SEG) references it
    result = Dataset()
    result.PatientID, result.PatientName = deid.PatientID, deid.PatientName
    result.StudyInstanceUID = deid.StudyInstanceUID
    result.SeriesInstanceUID = "2.25.1234567"
    result.SOPInstanceUID = "2.25.7654321"
    ref = Dataset()
    ref.SeriesInstanceUID = deid.SeriesInstanceUID
    ref.ReferencedInstanceSequence = Sequence([Dataset()])
    ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID = deid.SOPInstanceUID
    result.ReferencedSeriesSequence = Sequence([ref])
    result.PatientIdentityRemoved = "YES"
    back = reidentify_dataset(result, vault)
    assert back.PatientID == ds.PatientID and str(back.PatientName) == str(ds.PatientName)
    assert back.PatientBirthDate == ds.PatientBirthDate
    assert back.StudyInstanceUID == ds.StudyInstanceUID and back.StudyDate == ds.StudyDate
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == ds.SeriesInstanceUID
    assert back.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
        ds.SOPInstanceUID
    assert back.SOPInstanceUID == "2.25.7654321"  # the result's own UID stays
    assert "PatientIdentityRemoved" not in back
    assert result.PatientID == deid.PatientID  # input untouched


def test_input_dataset_not_modified(vault: PseudonymVault):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    before = ds.to_json_dict()
    deidentify_dataset(ds, vault, DeidOptions(retain_longitudinal_modified_dates=True))
    assert ds.to_json_dict() == before


def test_dcm2niix_reads_deidentified_series_like_the_original(tmp_path, vault):
    """Oracle: dcm2niix on the original series. De-identification must not change geometry or voxels."""
    import subprocess

    import dcm2niix
    import nibabel as nib
    import numpy as np

    exe = str(Path(dcm2niix.__file__).parent / "dcm2niix")
    src = tmp_path / "series"
    src.mkdir()
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    base.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    base.SeriesDescription = "t2_tse_tra"
    base.PatientName = "Niftiman^Carl"
    rng = np.random.default_rng(0)
    for k in range(6):
        base.SOPInstanceUID = f"1.2.826.0.1.3680043.99.60.{k + 1}"
        base.InstanceNumber = k + 1
        base.ImagePositionPatient = [-83.9063, -91.2, 6.6406 + 2.0 * k]
        base.SliceLocation = 6.6406 + 2.0 * k
        base.PixelData = rng.integers(0, 4000, (64, 64), dtype=np.int16).tobytes()
        base.save_as(src / f"{k}.dcm", enforce_file_format=True)
    summary = deidentify_folder(src, tmp_path / "deid", vault, DeidOptions(retain_longitudinal_modified_dates=True))
    assert summary["written"] == 6
    vols = []
    for name, folder in (("orig", src), ("deid", tmp_path / "deid")):
        out = tmp_path / f"nii_{name}"
        out.mkdir()
        r = subprocess.run([exe, "-z", "n", "-f", "vol", "-o", str(out), str(folder)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        niis = list(out.glob("*.nii"))
        assert len(niis) == 1, r.stdout
        vols.append(nib.load(niis[0]))
    assert vols[0].shape == vols[1].shape == (64, 64, 6)
    np.testing.assert_array_equal(vols[0].get_fdata(), vols[1].get_fdata())
    np.testing.assert_allclose(vols[0].affine, vols[1].affine, atol=1e-5)
    assert b"Niftiman" not in b"".join(p.read_bytes() for p in (tmp_path / "nii_deid").iterdir())


def test_real_siemens_file_with_overlays_and_private_tags(vault):
    ds = pydicom.dcmread(get_testdata_file("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert any(e.tag.is_private for e in ds) and any(0x6000 <= e.tag.group <= 0x60FF for e in ds)
    out = deidentify_dataset(ds, vault).dataset
    assert not any(e.tag.is_private for e in out)  # SIEMENS MEDCOM blocks are not on the allow-list
    assert not any(0x6000 <= e.tag.group <= 0x60FF for e in out)
    assert out.PixelData == ds.PixelData and out.Rows == ds.Rows
    for kw in ("InstitutionName", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        if ds.get(kw):
            assert not out.get(kw) or str(out.get(kw)) in ("ANONYMIZED", "")
    # a non-empty StudyInstanceUID the vault can map back
    assert vault.original_uid(out.StudyInstanceUID) == ds.StudyInstanceUID
