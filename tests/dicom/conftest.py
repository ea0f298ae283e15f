"""Fixtures of the dicom tests: a fresh vault and a corpus built from the PS3.15 table itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from neurorad.dicom.vault import PseudonymVault, generate_key

# The oracle is the reference copy of PS3.15 Table E.1-1 in ``shared/reference/`` beside the repository
# (the repository's parent folder holds ``shared/``), never the package's own copy: code and oracle
# must not be the same file. Missing reference -> the tests fail (they do not fall back).
REPO_ROOT = Path(__file__).resolve().parents[2]
TABLE = REPO_ROOT.parent / "shared" / "reference" / "dicom_ps3.15_confidentiality_profile.json"


def table_rows() -> list[dict]:
    if not TABLE.is_file():
        pytest.fail(f"PS3.15 reference table not found at {TABLE} (expected ../shared/reference/ beside the "
                    "repository); the de-identification tests need this independent copy")
    out = []
    for row in json.loads(TABLE.read_text()):
        m = re.fullmatch(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", row["tag"])
        if m:
            out.append({**row, "tag_int": int(m.group(1) + m.group(2), 16), "vr": dictionary_VR(
                int(m.group(1) + m.group(2), 16))})
    return out


#: A CSA series header like a scanner's: technical values, an ASCCONV protocol with text parameters,
#: an XProtocol dump and free-text items (markers must not survive de-identification).
CSA_TEXT_MARKERS = ("MKPROTNAMEQ", "MKSEQFILEQ", "MKXPROTQ", "MKFREETEXTQ", "MKDATAFILEQ")
CSA_IMAGE_TAGS = [("NumberOfImagesInMosaic", "US", ["48"]), ("SliceMeasurementDuration", "DS", ["40.0"]),
                  ("ImaCoilString", "LO", ["T:HEA;HEP"]), ("MosaicRefAcqTimes", "FD", ["0.0", "62.5", "125.0"])]
_PHOENIX = ('<XProtocol> { <ParamString."tProtocolName"> { "MKXPROTQ" } }\n'
            '### ASCCONV BEGIN object=MrProtDataImpl@MrProtocolData version=41340006 ###\n'
            'ulVersion\t = \t0x14b44b6\n'
            'tSequenceFileName\t = \t""%SiemensSeq%\\MKSEQFILEQ""\n'
            'tProtocolName\t = \t""MKPROTNAMEQ""\n'
            'sSliceArray.ucMode\t = \t0x4\n'
            'sWipMemBlock.tFree\t = \t""MKFREETEXTQ""\n'
            'sKSpace.lBaseResolution\t = \t128\n'
            '### ASCCONV END ###')
CSA_SERIES_TAGS = [("MrPhoenixProtocol", "UN", [_PHOENIX]), ("DataFileName", "LO", ["MKDATAFILEQ"]),
                   ("GradientMode", "SH", ["Fast"]), ("UsedPatientWeight", "IS", ["70"])]


def csa2_blob(tags: list[tuple[str, str, list[str]]]) -> bytes:
    """A Siemens CSA2 header (the layout nibabel.nicom.csareader and dcm2niix read)."""
    import struct

    out = bytearray(b"SV10\x04\x03\x02\x01" + struct.pack("<2I", len(tags), 77))
    for name, vr, items in tags:
        out += struct.pack("<64si4s3i", name.encode(), len(items), vr.encode(), 0, len(items), 77)
        for item in items:
            data = item.encode("latin-1") + b"\x00"
            out += struct.pack("<4i", len(data), len(data), 77, len(data)) + data + b"\x00" * ((4 - len(data) % 4) % 4)
    return bytes(out)


@pytest.fixture()
def vault(tmp_path: Path) -> PseudonymVault:
    return PseudonymVault(generate_key(), tmp_path / "vault.sqlite")


class Markers:
    """Unique, VR-valid marker values; ``text`` markers can be found by a byte search."""

    def __init__(self, start: int = 0) -> None:
        self.n = start
        self.searchable: dict[str, int] = {}  # marker text -> tag it was put in (0 for special places)

    def next(self) -> int:
        self.n += 1
        assert self.n < 2000, "marker dates would leave 4-digit years"
        return self.n

    def value(self, vr: str, tag: int) -> object:
        i = self.next()
        if vr in ("AE", "CS", "SH", "LO", "ST", "LT", "UT", "UC", "PN", "UR"):
            v = f"MK{i:04d}Q"
        elif vr == "DA":
            # years 4 apart: a date shifted by <= 1095 days can never equal another marker
            v = f"{1000 + 4 * i:04d}{1 + i % 12:02d}{1 + i % 28:02d}"
        elif vr == "TM":
            v = f"{i % 24:02d}{i % 60:02d}{(i * 7) % 60:02d}.9{i:05d}"
        elif vr == "DT":
            v = f"{1000 + 4 * i:04d}{1 + i % 12:02d}{1 + i % 28:02d}101112.8{i:05d}"
        elif vr == "AS":
            v = "087Y"
        elif vr == "DS":
            v = f"-{i}.7311"
        elif vr == "IS":
            v = f"-9{i:05d}"
        elif vr == "UI":
            v = f"1.2.826.0.1.3680043.99.1{i:05d}.7"
        elif vr == "US":
            return 50000 + i
        elif vr in ("OB", "OW", "UN"):
            v = f"MKB{i:04d}Z"
            self.searchable[v] = tag
            return v.encode()
        else:
            raise AssertionError(vr)
        self.searchable[v] = tag
        return v


def build_marker_dataset(markers: Markers, study_uid: str, series_uid: str, sop_uid: str,
                         patient_id: str = "PID-MARKER-777", patient_name: str = "Markerman^Alice") -> Dataset:
    """Every attribute of Table E.1-1 filled with a unique marker, plus nested sequences, private
    tags, curves/overlays and identifying file meta."""
    ds = Dataset()
    for row in table_rows():
        tag, vr = row["tag_int"], row["vr"]
        if tag >> 16 in (0x0000, 0x0002):
            continue  # command set (DIMSE) cannot be in a file; file meta is built below
        if vr == "SQ":
            item = Dataset()
            item.ReferencedSOPClassUID = MRImageStorage
            item.ReferencedSOPInstanceUID = markers.value("UI", tag)
            item.PatientName = markers.value("PN", tag)
            item.StudyDate = markers.value("DA", tag)
            inner = Dataset()
            inner.ReferencedSOPInstanceUID = markers.value("UI", tag)
            inner.OperatorsName = markers.value("PN", tag)
            inner.add_new(0x00091010, "LO", markers.value("LO", tag))  # private without creator
            item.SourceImageSequence = Sequence([inner])
            ds.add_new(tag, "SQ", Sequence([item]))
        else:
            ds.add_new(tag, vr, markers.value(vr, tag))
    # required identity of the instance (UIDs are table U rows: overwrite with our own)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    for v in (sop_uid, study_uid, series_uid):
        markers.searchable[v] = 0
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    markers.searchable[patient_id] = 0x00100020
    markers.searchable["Markerman"] = 0x00100010
    ds.Modality = "MR"
    ds.BurnedInAnnotation = "NO"
    # dates/names the table does not list
    ds.InstanceCreationDate = "19770707"
    markers.searchable["19770707"] = 0x00080012
    ds.add_new(0x00142006, "PN", "MKEvaluator^Bob")  # Evaluator Name: PN not in the table
    markers.searchable["MKEvaluator"] = 0x00142006
    # a sequence the table does not list: processed recursively all the same
    deep = Dataset()
    deep.PatientName = "MKDeepName^Q"
    deep.AccessionNumber = "MKDEEPACC"
    deep.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.99.888.1"
    deep.private_block(0x0011, "ACME DEEP", create=True).add_new(0x01, "LO", "MKDEEPPRIV")
    outer = Dataset()
    outer.SeriesInstanceUID = "1.2.826.0.1.3680043.99.888.2"
    outer.ReferencedInstanceSequence = Sequence([deep])
    ds.ReferencedSeriesSequence = Sequence([outer])  # (0008,1115), not in Table E.1-1
    for m in ("MKDeepName", "MKDEEPACC", "1.2.826.0.1.3680043.99.888.1", "MKDEEPPRIV", "1.2.826.0.1.3680043.99.888.2"):
        markers.searchable[m] = 0x00081115
    # private blocks: one removed, one allow-listed CSA header with a non-listed element too
    ds.private_block(0x0009, "ACME IMAGING", create=True).add_new(0x10, "LO", "MKPRIVATE1Q")
    markers.searchable["MKPRIVATE1Q"] = 0x00091010
    csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    csa.add_new(0x08, "CS", "MKCSATYPEQ")
    markers.searchable["MKCSATYPEQ"] = 0x00291008
    csa.add_new(0x10, "OB", csa2_blob(CSA_IMAGE_TAGS))
    csa.add_new(0x20, "OB", csa2_blob(CSA_SERIES_TAGS))
    for m in CSA_TEXT_MARKERS:
        markers.searchable[m] = 0x00291020
    # curves and overlays
    ds.add_new(0x50003000, "OB", b"MKCURVEDATA1")
    ds.add_new(0x60000022, "LO", "MKOVERLAYDESC")
    ds.add_new(0x60003000, "OB", b"MKOVERLAYDAT")
    for m in ("MKCURVEDATA1", "MKOVERLAYDESC", "MKOVERLAYDAT"):
        markers.searchable[m] = 0x50000000
    # a tiny image
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 4, 4, 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    ds.PixelData = np.arange(16, dtype=np.uint16).tobytes()
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = MRImageStorage
    fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.SourceApplicationEntityTitle = "MKSRCAETQ"
    fm.SendingApplicationEntityTitle = "MKSENDAETQ"
    fm.PrivateInformationCreatorUID = "1.2.826.0.1.3680043.99.77777.1"
    fm.PrivateInformation = b"MKPRIVINFO"
    for m in ("MKSRCAETQ", "MKSENDAETQ", "1.2.826.0.1.3680043.99.77777.1", "MKPRIVINFO"):
        markers.searchable[m] = 0x00020000
    ds.file_meta = fm
    return ds
