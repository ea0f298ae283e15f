"""Series classification (T1, T1C, T2, FLAIR, SWI, DWI, CT_HEAD, OTHER) and series selection.

Classification reads the attributes of a series' first instance (SeriesDescription, ProtocolName,
SequenceName, ScanningSequence, RepetitionTime/EchoTime/InversionTime in ms, ContrastBolusAgent,
ImageType, Modality, BodyPartExamined, DiffusionBValue) and applies ordered, site-editable rules
from a JSON file (default ``neurorad/dicom/data/series_rules.json``; override with the
``rules_path`` argument or ``$NEURORAD_SERIES_RULES``). The first rule that holds wins and its
name, with the attribute tests that held, is the reason. Classify on the *original* attributes:
the PS3.15 profile removes SeriesDescription and ContrastBolusAgent.

Timing rules follow the usual contrast definitions (e.g. Bushberg et al., The Essential Physics of
Medical Imaging, ch. 12): T1-weighted short TR/short TE or inversion-prepared with TI 500-1400 ms
(MPRAGE), T2-weighted long TR/long TE, FLAIR inversion recovery with TI 1500-3500 ms nulling CSF.

Selection picks, for each series a workflow requires, the best candidate: 3D acquisitions first
when the requirement prefers 3D, then ORIGINAL over DERIVED images, then thinner slices, then more
instances, then the later series number (a repeat usually replaces a failed first try).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from neurorad.errors import InputError

__all__ = [
    "SeriesClass",
    "SeriesRequirement",
    "WorkflowRequirements",
    "Selection",
    "MissingSeries",
    "DEFAULT_RULES_PATH",
    "LABELS",
    "classify_series",
    "select_series",
    "series_attributes",
    "is_3d",
    "load_rules",
]

DEFAULT_RULES_PATH = Path(__file__).parent / "data" / "series_rules.json"
LABELS = ("T1", "T1C", "T2", "FLAIR", "SWI", "DWI", "CT_HEAD", "OTHER")

#: attributes (keywords) the rules and selection read; series_attributes() extracts these
ATTRIBUTES = (
    "Modality", "SeriesDescription", "ProtocolName", "SequenceName", "ScanningSequence", "SequenceVariant",
    "RepetitionTime", "EchoTime", "InversionTime", "ContrastBolusAgent", "ImageType", "BodyPartExamined",
    "DiffusionBValue", "MRAcquisitionType", "SliceThickness", "SeriesNumber", "StudyDescription",
    "SeriesInstanceUID", "StudyInstanceUID", "Rows", "Columns", "Manufacturer",
)


@dataclass(frozen=True)
class SeriesClass:
    """A series label and the rule that gave it (human-readable, no PHI)."""

    label: str
    reason: str


@lru_cache(maxsize=8)
def _load_rules_cached(path: str, mtime: float) -> dict[str, Any]:
    try:
        rules = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"series rules file unreadable: {exc}", path) from None
    if not isinstance(rules.get("rules"), list):
        raise InputError("series rules file has no 'rules' list", path)
    labels = set(rules.get("labels", LABELS))
    for i, rule in enumerate(rules["rules"]):
        if rule.get("label") not in labels:
            raise InputError(f"rule {i} ({rule.get('name')!r}) has unknown label {rule.get('label')!r}", path)
        for cond in [*rule.get("all", []), *rule.get("any", []), *rule.get("none", [])]:
            if "regex" in cond:
                re.compile(cond["regex"])
    return rules


def load_rules(rules_path: str | Path | None = None) -> dict[str, Any]:
    """The rule set: ``rules_path``, else ``$NEURORAD_SERIES_RULES``, else the shipped default."""
    path = Path(rules_path or os.environ.get("NEURORAD_SERIES_RULES") or DEFAULT_RULES_PATH)
    if not path.is_file():
        raise InputError("series rules file not found", path)
    return _load_rules_cached(str(path), path.stat().st_mtime)


def series_attributes(ds: Dataset | Mapping[str, Any]) -> dict[str, Any]:
    """Plain dict of the attributes classification/selection read, from a pydicom Dataset or a
    mapping (DICOM JSON keyed by tag like ``"0008103E"`` is accepted too)."""
    out: dict[str, Any] = {}
    if isinstance(ds, Dataset):
        for kw in ATTRIBUTES:
            if kw in ds and ds[kw].value is not None:
                v = ds[kw].value
                if isinstance(v, MultiValue | list | tuple):
                    out[kw] = [str(x) for x in v]
                elif isinstance(v, int | float):
                    out[kw] = v
                else:
                    out[kw] = str(v)
        return out
    from pydicom.datadict import tag_for_keyword

    for kw in ATTRIBUTES:
        if kw in ds:
            out[kw] = ds[kw]
        else:
            tag = tag_for_keyword(kw)
            key = f"{tag:08X}" if tag is not None else None
            if key and key in ds and isinstance(ds[key], Mapping):  # DICOM JSON (QIDO-RS)
                vals = ds[key].get("Value", [])
                if vals:
                    out[kw] = vals[0] if len(vals) == 1 else vals
    for k, v in ds.items():  # keep extra keys (e.g. n_instances) the caller provided
        if k not in out and not re.fullmatch(r"[0-9A-Fa-f]{8}", str(k)):
            out[k] = v
    return out


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [p for p in v.split("\\")] if v else []
    if isinstance(v, list | tuple):
        return [str(x) for x in v]
    return [str(v)]


def _as_number(v: Any) -> float | None:
    if isinstance(v, list | tuple):
        v = v[0] if v else None
    try:
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _test(cond: Mapping[str, Any], attrs: Mapping[str, Any]) -> bool:
    name = cond["field"]
    value = attrs.get(name)
    if "present" in cond:
        return (value is not None) == bool(cond["present"])
    if "nonempty" in cond:
        filled = any(s.strip() for s in _as_list(value))
        return filled == bool(cond["nonempty"])
    if value is None:
        return False
    if "equals" in cond:
        return "\\".join(_as_list(value)).strip().upper() == str(cond["equals"]).upper()
    if "contains" in cond:
        return str(cond["contains"]).upper() in {s.strip().upper() for s in _as_list(value)}
    if "regex" in cond:
        return re.search(cond["regex"], "\\".join(_as_list(value))) is not None
    if "min" in cond or "max" in cond:
        x = _as_number(value)
        if x is None:
            return False
        return ("min" not in cond or x >= cond["min"]) and ("max" not in cond or x <= cond["max"])
    raise InputError(f"series rule condition has no test: {dict(cond)}")


def _describe(cond: Mapping[str, Any]) -> str:
    test = next(k for k in ("regex", "equals", "contains", "min", "max", "present", "nonempty") if k in cond)
    extra = f"..{cond['max']}" if test == "min" and "max" in cond else ""
    return f"{cond['field']} {test} {cond[test]}{extra}"


def classify_series(
    attrs: Mapping[str, Any] | Dataset, rules_path: str | Path | None = None
) -> SeriesClass:
    """Label one series from its (first instance's) attributes by the first rule that holds."""
    a = series_attributes(attrs) if isinstance(attrs, Dataset) else attrs
    rules = load_rules(rules_path)
    for rule in rules["rules"]:
        all_ = rule.get("all", [])
        any_ = rule.get("any", [])
        none_ = rule.get("none", [])
        if not all(_test(c, a) for c in all_):
            continue
        hits = [c for c in any_ if _test(c, a)]
        if any_ and not hits:
            continue
        if any(_test(c, a) for c in none_):
            continue
        why = [_describe(c) for c in all_] + [_describe(hits[0])] if hits else [_describe(c) for c in all_]
        reason = f"rule '{rule['name']}'" + (f": {'; '.join(why)}" if why else "")
        return SeriesClass(rule["label"], reason)
    return SeriesClass("OTHER", "no rule matched")


# ---------------------------------------------------------------------------------------------
# selection


@dataclass(frozen=True)
class SeriesRequirement:
    """One series a workflow needs (``required``) or can use."""

    label: str
    prefer_3d: bool = False
    required: bool = True


@dataclass(frozen=True)
class WorkflowRequirements:
    """The series classes a caller needs; ``name`` names the need (free text)."""

    name: str
    series: tuple[SeriesRequirement, ...]


@dataclass
class Selection:
    """Chosen series per label (the caller's own attribute mappings) with why, and all classes."""

    status: str
    chosen: dict[str, Mapping[str, Any]]
    reasons: dict[str, str]
    classes: list[SeriesClass] = field(default_factory=list)


@dataclass
class MissingSeries:
    """A required series is absent: ``status`` = ``"missing_series"``, ``missing`` lists labels."""

    status: str
    missing: list[str]
    classes: list[SeriesClass] = field(default_factory=list)
    chosen: dict[str, Mapping[str, Any]] = field(default_factory=dict)


def is_3d(attrs: Mapping[str, Any]) -> bool:
    """3D acquisition: MRAcquisitionType 3D, or (CT/unknown) slices <= 1.5 mm."""
    acq = "\\".join(_as_list(attrs.get("MRAcquisitionType"))).strip().upper()
    if acq:
        return acq == "3D"
    thick = _as_number(attrs.get("SliceThickness"))
    return thick is not None and thick <= 1.5


def _rank_key(attrs: Mapping[str, Any], prefer_3d: bool) -> tuple:
    image_type = {s.strip().upper() for s in _as_list(attrs.get("ImageType"))}
    thick = _as_number(attrs.get("SliceThickness"))
    n = _as_number(attrs.get("n_instances", attrs.get("NumberOfSeriesRelatedInstances")))
    number = _as_number(attrs.get("SeriesNumber"))
    return (
        1 if (prefer_3d and is_3d(attrs)) else 0,
        1 if "ORIGINAL" in image_type else 0,
        -(thick if thick is not None else 1e9),
        n or 0,
        number or 0,
    )


def select_series(
    study_series: Sequence[Mapping[str, Any] | Dataset],
    workflow_requirements: WorkflowRequirements,
    rules_path: str | Path | None = None,
) -> Selection | MissingSeries:
    """Classify every series of a study and pick the best one per required label.

    ``study_series``: one attribute mapping (or first-instance Dataset) per series; an
    ``n_instances`` key, if present, is used for ranking. ``workflow_requirements``: the series
    classes a caller needs (the workflows' own requirements live in their plug-ins,
    :class:`neurorad.workflows.contract.Requirements`; this module never names a workflow).
    """
    items = [series_attributes(s) if isinstance(s, Dataset) else s for s in study_series]
    classes = [classify_series(a, rules_path) for a in items]
    chosen: dict[str, Mapping[str, Any]] = {}
    reasons: dict[str, str] = {}
    missing: list[str] = []
    for req in workflow_requirements.series:
        cands = [(a, c) for a, c in zip(items, classes, strict=True) if c.label == req.label]
        if not cands:
            if req.required:
                missing.append(req.label)
            continue
        best, cls = max(cands, key=lambda ac: _rank_key(ac[0], req.prefer_3d))
        chosen[req.label] = best
        note = "3D" if is_3d(best) else "2D"
        reasons[req.label] = f"{cls.reason}; best of {len(cands)} candidate(s) ({note})"
    if missing:
        return MissingSeries("missing_series", missing, classes, chosen)
    return Selection("selected", chosen, reasons, classes)
