"""Bad input at the gate, folder import, grouping and the quiet-period rule."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from neurorad.dicom.ingest import StudyCompletion, group_instances, import_folder, validate_instance
from neurorad.errors import InputError

MR = get_testdata_file("MR_small.dcm")


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_valid_instances_pass():
    assert validate_instance(MR).Modality == "MR"
    assert validate_instance(Path(MR).read_bytes()).SOPInstanceUID
    jp2 = validate_instance(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))  # compressed, supported
    assert jp2.file_meta.TransferSyntaxUID.is_compressed


def test_bad_inputs_are_named_and_explained(tmp_path):
    raw = Path(MR).read_bytes()
    ds = pydicom.dcmread(MR)
    no_pixels = pydicom.dcmread(MR)
    del no_pixels.PixelData
    mpeg = pydicom.dcmread(MR)
    mpeg.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    mpeg.PixelData = encapsulate([b"\x00\x01" * 64])
    mpeg["PixelData"].VR, mpeg["PixelData"].is_undefined_length = "OB", True
    cases = {
        "truncated.dcm": (raw[: len(raw) - 2000], "truncated pixel data"),
        "cut_header.dcm": (raw[:400], "truncated file"),
        "junk.dcm": (b"%PDF-1.4 definitely not dicom" * 20, "not a DICOM file"),
        "cut_jpeg2000.dcm": (Path(get_testdata_file("emri_small_jpeg_2k_lossless.dcm")).read_bytes()[:-10],
                             "truncated file"),
        "empty.dcm": (b"", "not a DICOM file"),
        "no_pixels.dcm": (_bytes(no_pixels), "no pixel data"),
        "rtplan.dcm": (Path(get_testdata_file("rtplan.dcm")).read_bytes(), "modality RTPLAN not accepted"),
    }
    for name, (data, problem) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError) as exc:
            validate_instance(path)
        assert problem in str(exc.value) and str(path) in str(exc.value), (name, str(exc.value))
        assert str(ds.PatientName) not in str(exc.value) and str(ds.PatientID) not in str(exc.value)
    # pydicom writes MPEG2's meta as asked; we refuse to decode it (unsupported syntax)
    buf = io.BytesIO()
    mpeg.save_as(buf, enforce_file_format=True)
    with pytest.raises(InputError, match="unsupported transfer syntax"):
        validate_instance(buf.getvalue(), name="AE MODALITY1 #3")
    assert validate_instance(get_testdata_file("rtplan.dcm"), allowed_modalities=None, require_pixels=False)


def test_import_folder_skips_and_reports(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "mr.dcm").write_bytes(Path(MR).read_bytes())
    (tmp_path / "a" / "b" / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    (tmp_path / "a" / "notes.txt").write_text("hello")
    (tmp_path / "a" / ".hidden").write_text("x")
    skipped: list[tuple[Path, str]] = []
    got = list(import_folder(tmp_path, on_skip=lambda p, why: skipped.append((p, why))))
    assert sorted(d.Modality for d in got) == ["CT", "MR"]
    assert all(Path(d.filename).is_file() for d in got)
    assert skipped == [(tmp_path / "a" / "notes.txt", "not a DICOM file")]
    with pytest.raises(InputError, match="folder not found"):
        list(import_folder(tmp_path / "nope"))


def test_group_instances_by_study_and_series():
    items = [
        {"StudyInstanceUID": "1", "SeriesInstanceUID": "1.1", "InstanceNumber": 3},
        {"StudyInstanceUID": "1", "SeriesInstanceUID": "1.1", "InstanceNumber": 1},
        {"StudyInstanceUID": "1", "SeriesInstanceUID": "1.2", "InstanceNumber": 1},
        {"StudyInstanceUID": "2", "SeriesInstanceUID": "2.1", "InstanceNumber": None},
    ]
    g = group_instances(items)
    assert set(g) == {"1", "2"} and set(g["1"]) == {"1.1", "1.2"}
    assert [i["InstanceNumber"] for i in g["1"]["1.1"]] == [1, 3]
    ds = pydicom.dcmread(MR)
    assert list(group_instances([ds])[ds.StudyInstanceUID]) == [ds.SeriesInstanceUID]


def test_study_completion_quiet_period():
    rule = StudyCompletion(quiet_period_s=90)
    t0 = dt.datetime(2026, 1, 1, 12, 0, 0)
    assert not rule.is_complete(t0, t0 + dt.timedelta(seconds=89))
    assert rule.is_complete(t0, t0 + dt.timedelta(seconds=90))
    assert rule.seconds_until_complete(t0, t0 + dt.timedelta(seconds=30)) == 60
    arrivals = {"s1": 1000.0, "s2": 1050.0, "s3": 1100.0}
    assert rule.complete_studies(arrivals, now=1140.0) == ["s1", "s2"]
    assert rule.complete_studies(arrivals, now=1000.0) == []
