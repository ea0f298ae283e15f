"""The workflow contract: what a clinical workflow declares and what it returns.

A clinical workflow (MS new lesions, glioma volumetry, WMH, microbleeds, CT haemorrhage, or a
site's own) is a plug-in. It declares, in the typed objects below, everything the platform needs
to route a study to it, run it, show its result for review, render its report and write its
DICOM objects; the platform (``server``, ``report``, ``dicom``, ``store``) never names a
workflow. See docs/architecture.md, "Workflows are plug-ins".

The shape follows highdicom's idea of one layout per object family: each workflow package has
the same parts (its :class:`Workflow` subclass with requirements, steps, clinical rules, report
wording, review form, viewer layout and vocabularies), so knowing one means knowing all.

Units are in names (``volume_ml``); world coordinates are RAS+ millimetres.

Additive changes only: other workflows and the platform are built on these types.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

__all__ = [
    "CONTRACT_VERSION",
    "Progress",
    "SeriesRole",
    "Requirements",
    "Quantity",
    "Finding",
    "Alarm",
    "KeyImage",
    "ModelRef",
    "Provenance",
    "WorkflowResult",
    "Choice",
    "FormField",
    "ReviewForm",
    "Review",
    "FindingVerdict",
    "Panel",
    "ViewerLayout",
    "ReportSection",
    "ReportTable",
    "WorkflowInputs",
    "Workflow",
    "ACCEPTABLE",
    "UNACCEPTABLE",
    "SCORE_1_5",
]

#: Version of this contract (bumped on incompatible changes; a plug-in may check it).
CONTRACT_VERSION = "1.0"

#: ``progress(fraction in [0, 1], message)``: long steps report here (the server extends the
#: job's lease with it; the CLI draws a progress bar).
Progress = Callable[[float, str], None]

ACCEPTABLE = "ACCEPTABLE"
UNACCEPTABLE = "UNACCEPTABLE"


# ---------------------------------------------------------------------------------- requirements
@dataclass(frozen=True)
class SeriesRole:
    """One series a workflow reads.

    ``role`` names the input (the CLI option is ``--<role>`` with ``_`` as ``-``);
    ``classes`` are series classes from :mod:`neurorad.dicom.classify` (``LABELS``; empty: any);
    ``prior`` is 0 for the current study, 1 for the same patient's previous study, 2 for the one
    before (EASE compares three time points; MS needs one prior).
    """

    role: str
    classes: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ("MR",)
    prior: int = 0
    required: bool = True
    prefer_3d: bool = False
    description: str = ""

    @property
    def cli_option(self) -> str:
        return "--" + self.role.replace("_", "-")


@dataclass(frozen=True)
class Requirements:
    """The series a workflow needs; a study is routed to it when every required role is met."""

    series: tuple[SeriesRole, ...]

    @property
    def priors_needed(self) -> int:
        """How many previous studies of the same patient must exist (largest required ``prior``)."""
        return max((r.prior for r in self.series if r.required), default=0)

    def role(self, name: str) -> SeriesRole:
        for r in self.series:
            if r.role == name:
                return r
        raise KeyError(f"no series role {name!r}; roles: {[r.role for r in self.series]}")

    def describe(self) -> str:
        """One line a technologist can read, e.g. ``flair: MR FLAIR; baseline_flair: MR FLAIR (prior 1)``."""
        parts = []
        for r in self.series:
            what = " ".join(filter(None, ["/".join(r.modalities), "/".join(r.classes) or "any series"]))
            extra = [f"prior {r.prior}"] if r.prior else []
            if not r.required:
                extra.append("optional")
            parts.append(f"{r.role}: {what}" + (f" ({', '.join(extra)})" if extra else ""))
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------- result
Scalar = float | int | bool | str | None


@dataclass(frozen=True)
class Quantity:
    """A named measurement with its unit (UCUM-style: ``mL``, ``mm``, ``mm2``, ``%``, ``1`` for counts,
    ``""`` for categorical/boolean values). ``code`` optionally names a coded concept for the SR
    (e.g. ``("118565006", "SCT", "Volume")``). ``note``, when set, says that the value is NOT a precise
    measurement and why (e.g. ``"approximate: not measurable at 5 mm slices"``): viewers and
    reports show it next to the value (:func:`format_measurement`), the SR qualifies the number as
    indeterminate."""

    name: str
    value: Scalar
    unit: str = ""
    description: str = ""
    code: tuple[str, str, str] | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "value": _json_scalar(self.value), "unit": self.unit}
        if self.description:
            d["description"] = self.description
        if self.code:
            d["code"] = list(self.code)
        if self.note:
            d["note"] = self.note
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Quantity:
        code = d.get("code")
        return cls(str(d["name"]), d.get("value"), str(d.get("unit", "")), str(d.get("description", "")),
                   tuple(code) if code else None, str(d.get("note") or ""))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Finding:
    """One finding (lesion, haematoma, microbleed, tumour component...).

    ``kind`` comes from the workflow's own vocabulary (:attr:`Workflow.finding_kinds`);
    ``label`` is its value in the result's label map (:attr:`WorkflowResult.mask`);
    ``measurements`` holds workflow-specific numbers (e.g. MS: baseline volume of an enlarging
    lesion) with units; ``location`` is a human-readable region (atlas name or clinical class).
    ``volume_note``, when set, says that ``volume_ml`` is NOT a precise measurement and why (e.g. a
    lesion too small for the slice thickness: ``"approximate: not measurable at 5 mm slices"``);
    the platform never shows the number without it (:func:`format_measurement`) and the SR
    qualifies it as indeterminate.
    """

    id: int
    kind: str
    volume_ml: float | None = None
    label: int | None = None
    location: str = ""
    centroid_mm: tuple[float, float, float] | None = None
    measurements: tuple[Quantity, ...] = ()
    score: float | None = None  # confidence in [0, 1] where the engine gives one
    volume_note: str = ""

    def measurement(self, name: str) -> Quantity | None:
        return next((m for m in self.measurements if m.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "id": self.id, "kind": self.kind,
            "volume_ml": None if self.volume_ml is None else round(float(self.volume_ml), 6),
            "label": self.label, "location": self.location,
            "centroid_mm": None if self.centroid_mm is None else [round(float(c), 3) for c in self.centroid_mm],
            "measurements": [m.to_dict() for m in self.measurements],
            "score": None if self.score is None else round(float(self.score), 6),
        }
        if self.volume_note:
            d["volume_note"] = self.volume_note
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        c = d.get("centroid_mm")
        return cls(int(d["id"]), str(d["kind"]), d.get("volume_ml"), d.get("label"), str(d.get("location") or ""),
                   tuple(float(x) for x in c) if c else None,  # type: ignore[arg-type]
                   tuple(Quantity.from_dict(m) for m in d.get("measurements") or ()), d.get("score"),
                   str(d.get("volume_note") or ""))


@dataclass(frozen=True)
class Alarm:
    """A quality warning shown in the worklist (ordered by alarms) and in the report."""

    code: str
    message: str
    severity: Literal["info", "warning", "error"] = "warning"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KeyImage:
    """A key image: an RGB PNG in radiological convention (patient right on image left), with the
    orientation letters of its left and top edges (``("R", "A")`` for an axial slice so shown;
    ``()`` for an image whose panels show different planes, e.g. axial beside coronal: its DICOM
    secondary capture then has an empty PatientOrientation instead of a wrong one)."""

    path: str  # relative to the result folder
    caption: str
    finding_id: int | None = None
    orientation: tuple[str, ...] = ("R", "A")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "caption": self.caption, "finding_id": self.finding_id,
                "orientation": list(self.orientation)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KeyImage:
        o = d.get("orientation")
        o = ("R", "A") if o is None else tuple(str(x) for x in o)  # [] (mixed planes) stays empty
        return cls(str(d["path"]), str(d.get("caption", "")), d.get("finding_id"), o)


@dataclass(frozen=True)
class ModelRef:
    """A model (or classical engine) a result used: recorded on every result and report."""

    name: str
    version: str
    sha256: str = ""  # of the weights (empty for classical engines)
    kind: Literal["classical", "learned"] = "classical"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Provenance:
    """Where a result came from: input hashes, software and model versions, steps, parameters."""

    inputs: dict[str, str] = field(default_factory=dict)  # role -> sha256 (file) or series hash
    software_version: str = ""
    models: list[ModelRef] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # name, seconds, engine, parameters...
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs), "software_version": self.software_version,
                "models": [m.to_dict() for m in self.models], "steps": list(self.steps),
                "parameters": self.parameters}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        return cls(dict(d.get("inputs") or {}), str(d.get("software_version", "")),
                   [ModelRef(**m) for m in d.get("models") or []], list(d.get("steps") or []),
                   dict(d.get("parameters") or {}))


@dataclass
class WorkflowResult:
    """What one run of a workflow produced; generic (no workflow's field names).

    ``mask``: a label map NIfTI (relative path in the result folder) on the grid of the series of
    role ``reference_role`` whose values are the findings' ``label``; the SEG, SR and SC overlays
    are made from it. ``volumes``: named NIfTI images for the viewer (relative paths; e.g.
    ``{"followup": "followup.nii.gz", "baseline": ...}``), which :class:`ViewerLayout` panels name.
    ``summary``: the clinical sentence a radiologist reads (from the workflow's clinical rules).
    ``extra``: workflow-specific JSON (kept in result.json under ``extra``).
    """

    workflow: str
    version: str
    findings: list[Finding] = field(default_factory=list)
    quantities: list[Quantity] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    key_images: list[KeyImage] = field(default_factory=list)
    summary: str = ""
    mask: str | None = None
    reference_role: str | None = None
    volumes: dict[str, str] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    files: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    RESULT_JSON: ClassVar[str] = "result.json"

    def quantity(self, name: str) -> Quantity | None:
        return next((q for q in self.quantities if q.name == name), None)

    def finding(self, finding_id: int) -> Finding | None:
        return next((f for f in self.findings if f.id == finding_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "contract": CONTRACT_VERSION,
            "workflow": self.workflow, "version": self.version, "summary": self.summary,
            "quantities": [q.to_dict() for q in self.quantities],
            "findings": [f.to_dict() for f in self.findings],
            "alarms": [a.to_dict() for a in self.alarms],
            "key_images": [k.to_dict() for k in self.key_images],
            "mask": self.mask, "reference_role": self.reference_role, "volumes": dict(self.volumes),
            "provenance": self.provenance.to_dict(), "files": dict(self.files), "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkflowResult:
        return cls(
            workflow=str(d["workflow"]), version=str(d["version"]),
            findings=[Finding.from_dict(f) for f in d.get("findings") or []],
            quantities=[Quantity.from_dict(q) for q in d.get("quantities") or []],
            alarms=[Alarm(**a) for a in d.get("alarms") or []],
            key_images=[KeyImage.from_dict(k) for k in d.get("key_images") or []],
            summary=str(d.get("summary", "")), mask=d.get("mask"), reference_role=d.get("reference_role"),
            volumes=dict(d.get("volumes") or {}), provenance=Provenance.from_dict(d.get("provenance") or {}),
            files=dict(d.get("files") or {}), extra=dict(d.get("extra") or {}),
        )

    def write_json(self, folder: str | Path) -> Path:
        """Write ``result.json`` (atomically: temp file then rename)."""
        path = Path(folder) / self.RESULT_JSON
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def read_json(cls, folder_or_file: str | Path) -> WorkflowResult:
        from neurorad.errors import InputError

        path = Path(folder_or_file)
        if path.is_dir():
            path = path / cls.RESULT_JSON
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"not a workflow result.json ({err})", path) from err


# ------------------------------------------------------------------------------------ review form
@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class FormField:
    """One field of a review form: ``kind`` is ``choice`` (one of ``choices``), ``text`` or ``bool``."""

    name: str
    label: str
    kind: Literal["choice", "text", "bool"] = "choice"
    choices: tuple[Choice, ...] = ()
    required: bool = True
    help: str = ""

    def validate(self, value: Any) -> Any:
        """The value, checked; raises ``ValueError`` with the field's label on bad input."""
        if value is None or value == "":
            if self.required:
                raise ValueError(f"{self.label}: a value is required")
            return None
        if self.kind == "choice":
            allowed = [c.value for c in self.choices]
            if str(value) not in allowed:
                raise ValueError(f"{self.label}: {value!r} is not one of {allowed}")
            return str(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{self.label}: expected true or false")
            return value
        text = str(value)
        if len(text) > 2000:
            raise ValueError(f"{self.label}: at most 2000 characters")
        return text


#: The 1-5 quality score of EASE (PAPERS.md A4): 1 Perfect ... 5 Terrible.
SCORE_1_5 = FormField("score", "Quality score", "choice", tuple(
    Choice(str(i), f"{i} {name}") for i, name in enumerate(("Perfect", "Good", "Fair", "Poor", "Terrible"), 1)))


@dataclass(frozen=True)
class ReviewForm:
    """The QA form of a workflow.

    Every form has the decision ACCEPTABLE / UNACCEPTABLE (the platform gates reports on it: numbers
    only for ACCEPTABLE results), the workflow's own ``fields`` (scores, grades), per-finding
    verdicts from ``finding_verdicts`` (the first is the default; a finding whose verdict is in
    ``discard_verdicts`` is removed from the reviewed result) and optionally missed-finding markers.
    """

    fields: tuple[FormField, ...] = (SCORE_1_5,)
    finding_verdicts: tuple[Choice, ...] = (Choice("keep", "keep"), Choice("discard", "discard"))
    discard_verdicts: tuple[str, ...] = ("discard",)
    allow_missed: bool = True
    comment: bool = True
    #: time points the reader must accept (e.g. ``("t-2", "t-1", "t")`` for a 3-time-point comparison)
    timepoints: tuple[str, ...] = ()

    def validate(self, values: Mapping[str, Any], verdicts: Mapping[int, str]) -> dict[str, Any]:
        """Checked field values; raises ``ValueError`` naming the first bad field or verdict."""
        out = {f.name: f.validate(values.get(f.name)) for f in self.fields}
        unknown = set(values) - {f.name for f in self.fields}
        if unknown:
            raise ValueError(f"unknown review field(s): {sorted(unknown)}")
        allowed = {c.value for c in self.finding_verdicts}
        for fid, v in verdicts.items():
            if v not in allowed:
                raise ValueError(f"finding {fid}: verdict {v!r} is not one of {sorted(allowed)}")
        return out


@dataclass(frozen=True)
class FindingVerdict:
    finding_id: int
    verdict: str


@dataclass(frozen=True)
class Review:
    """A radiologist's decision on one result version (what the report is regenerated from)."""

    decision: Literal["ACCEPTABLE", "UNACCEPTABLE"]
    values: dict[str, Any] = field(default_factory=dict)  # the form's fields (e.g. score)
    verdicts: dict[int, str] = field(default_factory=dict)  # finding id -> verdict
    missed: tuple[tuple[float, float, float], ...] = ()  # RAS mm of findings the software missed
    comment: str = ""
    reviewer: str = ""
    reviewed_at: str = ""  # ISO 8601
    timepoints_accepted: tuple[str, ...] = ()
    #: report version this decision writes (the workflow's own draft is 1; each decision adds one)
    report_version: int = 0
    #: set when this decision amends an earlier one on the same result version (why it changed)
    amendment_reason: str = ""
    #: earlier independent readings of the same result version, oldest first (the second-reader
    #: protocol, :meth:`Workflow.second_reader_reason`): the workflow's conclusion states the consensus
    #: or the disagreement
    prior_readings: tuple[Review, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.decision == ACCEPTABLE

    @property
    def reader_marked(self) -> int:
        """Findings the reader marked as missed by the software (:attr:`missed`) in an ACCEPTABLE decision; 0 for
        an UNACCEPTABLE one (its report shows no numbers). A workflow whose conclusion counts findings counts
        these too (not measured), so a signed report never says "none found" beside its reader's own marker."""
        return len(self.missed) if self.accepted else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists; ``prior_readings`` nested)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "prior_readings"}
        d = {k: ([list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v)
             for k, v in d.items()}
        d["verdicts"] = {str(k): v for k, v in self.verdicts.items()}
        d["prior_readings"] = [r.to_dict() for r in self.prior_readings]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Review:
        """The inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["verdicts"] = {int(k): v for k, v in (d.get("verdicts") or {}).items()}
        kw["missed"] = tuple(tuple(m) for m in d.get("missed") or ())
        kw["timepoints_accepted"] = tuple(d.get("timepoints_accepted") or ())
        kw["prior_readings"] = tuple(cls.from_dict(r) for r in d.get("prior_readings") or ())
        kw["values"] = dict(d.get("values") or {})
        return cls(**kw)


# ---------------------------------------------------------------------------------- viewer layout
@dataclass(frozen=True)
class Panel:
    """One viewer panel: a background image and optionally the result's overlay.

    ``background`` names a key of :attr:`WorkflowResult.volumes`; ``title`` says what is shown
    (e.g. "Follow-up FLAIR (skull-stripped, registered)")."""

    title: str
    background: str
    overlay: bool = False
    #: shown only when the result has this volume (e.g. an earlier time point that exists only when
    #: the patient has accepted prior results); a missing non-optional panel is an error
    optional: bool = False


@dataclass(frozen=True)
class ViewerLayout:
    """Panels (synchronised), overlay colours per finding kind (hex RGB) and the default window."""

    panels: tuple[Panel, ...]
    kind_colours: dict[str, str] = field(default_factory=dict)
    radiological: bool = True  # patient right on screen left
    #: key of :attr:`WorkflowResult.volumes` holding the findings' label map on the panels' grid (the
    #: overlay); None: :attr:`WorkflowResult.mask` (when the mask is on the grid of the panels)
    overlay: str | None = None


# ----------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class ReportTable:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class ReportSection:
    """A section of a report: a heading, paragraphs, an optional table and figures (PNG paths)."""

    heading: str
    paragraphs: tuple[str, ...] = ()
    table: ReportTable | None = None
    figures: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------- inputs
@dataclass
class WorkflowInputs:
    """What a run receives: role -> a NIfTI file or a DICOM folder, plus context.

    ``study_dates``: role -> ISO date of the study the series belongs to (when known);
    ``prior_results``: accepted earlier results of the same workflow for the same patient, newest
    first, with their reviews (for longitudinal comparisons), and ``prior_dirs`` their folders;
    ``options``: engine choice and workflow options from the CLI or the site's settings.
    """

    series: dict[str, Path]
    study_dates: dict[str, str] = field(default_factory=dict)
    prior_results: list[tuple[WorkflowResult, Review | None]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    #: the folder of each of ``prior_results`` (same order; None when not available), so a workflow
    #: can show an earlier time point's images beside the current ones
    prior_dirs: list[Path | None] = field(default_factory=list)
    #: earlier results of the same workflow for the same patient whose review was UNACCEPTABLE (and whose
    #: study has no accepted run), newest first, with those reviews: a workflow comparing a fixed number of
    #: time points can tell that one of them is missing rather than skip over it (EASE: a rejected
    #: segmentation blocks the comparison). Never to be measured against.
    prior_rejected: list[tuple[WorkflowResult, Review | None]] = field(default_factory=list)

    def path(self, role: str) -> Path:
        try:
            return self.series[role]
        except KeyError:
            from neurorad.errors import InputError

            raise InputError(f"no input for role {role!r}; given: {sorted(self.series)}") from None


# --------------------------------------------------------------------------------------- workflow
class Workflow:
    """Base class of every clinical workflow plug-in.

    Subclasses set the class attributes and implement :meth:`run`; the defaults of the other
    methods give a generic report and review behaviour that a workflow overrides where its
    clinical rules differ. Registered through the entry-point group ``neurorad.workflows``
    (``name = "package.module:WorkflowClass"``); see :mod:`neurorad.workflows.registry`.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"  # semantic version of the workflow (steps, rules, models)
    title: ClassVar[str] = ""  # e.g. "MS new-lesion detection"
    description: ClassVar[str] = ""
    requirements: ClassVar[Requirements] = Requirements(())
    #: finding kind -> human label (the workflow's vocabulary; no other kinds appear in results)
    finding_kinds: ClassVar[dict[str, str]] = {}
    review_form: ClassVar[ReviewForm] = ReviewForm()
    viewer: ClassVar[ViewerLayout] = ViewerLayout(())
    #: engines a site may choose (first is the default) -> description
    engines: ClassVar[dict[str, str]] = {}
    #: True: the engine option also takes a model reference (a registry ``name[@version]`` or a model
    #: folder) besides the names in :attr:`engines`; the workflow checks the reference itself
    engine_models: ClassVar[bool] = False
    #: CID 7162 family keyword of a classical (not learned) engine for DICOM SEG, e.g.
    #: ``"MorphologicalOperations"``; empty: "HistogramAnalysis" (threshold-based engines)
    segment_algorithm_family: ClassVar[str] = ""
    #: name of the quantity (a volume in mL) the software-update protocol compares between versions
    #: (:mod:`neurorad.workflows.reference_set`); empty: the sum of the findings' volumes
    reference_quantity: ClassVar[str] = ""
    #: modules a job process should find already imported: a worker's job processes fork from a
    #: server process that imports these once (``multiprocessing`` forkserver preload), so a job does
    #: not pay seconds of library loading each time. Importing must have no side effect but loading
    #: code (no threads, no models); a module that cannot be imported is skipped
    preload: ClassVar[tuple[str, ...]] = ()
    #: True when :meth:`conclusion` itself counts the findings the reader marked as missed
    #: (:attr:`Review.reader_marked`, e.g. MS activity, the microbleed count); otherwise :meth:`reviewed`
    #: adds the platform's sentence that names them, so no signed conclusion reads as if they were not there
    counts_reader_marked: ClassVar[bool] = False

    # -- running
    def run(self, inputs: WorkflowInputs, out_dir: Path, progress: Progress) -> WorkflowResult:
        """Process one study; write every file into ``out_dir`` (an empty folder) and return the result."""
        raise NotImplementedError(f"workflow {self.name!r} does not implement run()")

    def segment_algorithm(self, result: WorkflowResult) -> tuple[str, str, bool]:
        """(algorithm name, version, learned?) of the engine that made the mask, for DICOM SEG
        (PS3.3 C.8.20.2: a learned engine is in the "Artificial Intelligence" family, a classical one
        in "Image Processing"). Default: the first model in provenance, else the workflow itself."""
        models = result.provenance.models
        if models:
            return models[0].name, models[0].version, models[0].kind == "learned"
        return self.name, self.version, False

    # -- clinical rules
    def conclusion(self, result: WorkflowResult, review: Review | None = None) -> str:
        """The sentence a radiologist reads for ``result`` (already reviewed when ``review`` is given)."""
        return result.summary

    def finding_caption(self, result: WorkflowResult, finding: Finding) -> str:
        """A short qualifier the review page shows beside ``finding``'s kind, e.g. "low confidence" for a finding
        the workflow's rules do not count until the reader keeps it; ``""`` (the default) for none."""
        return ""

    def finding_needs_verdict(self, result: WorkflowResult, finding: Finding) -> bool:
        """True when an ACCEPTABLE decision must carry the reader's own verdict on ``finding``: the form's default
        verdict (e.g. "keep") is not applied to it, the review page starts it with no verdict chosen and the server
        refuses the decision (422) until it has one. For findings whose fate the workflow's rules leave to the
        reader (MS: a low-confidence lesion, which counts only once kept). False (the default) for none."""
        return False

    def reviewed(self, result: WorkflowResult, review: Review) -> WorkflowResult:
        """The result as the reader left it: discarded findings removed and quantities recomputed by
        :meth:`recompute`; findings the reader marked as missed named in the conclusion (unless the workflow's
        :meth:`conclusion` counts them, :attr:`counts_reader_marked`). UNACCEPTABLE keeps the result unchanged
        (the report shows no numbers)."""
        if not review.accepted:
            return result
        discard = set(self.review_form.discard_verdicts)
        kept = [f for f in result.findings if review.verdicts.get(f.id) not in discard]
        out = replace(result, findings=kept)
        out = self.recompute(out)
        out.summary = self.conclusion(out, review)
        if review.reader_marked and not self.counts_reader_marked:
            out.summary = f"{out.summary} {self.reader_marked_sentence(review)}"
        return out

    @staticmethod
    def reader_marked_sentence(review: Review | None) -> str:
        """The platform's sentence naming the findings the reader marked as missed (:attr:`Review.reader_marked`),
        for a conclusion that does not count them otherwise; ``""`` when there are none."""
        marked = review.reader_marked if review is not None else 0
        if not marked:
            return ""
        many = marked > 1
        return (f"The reader marked {marked} finding{'s' if many else ''} that the software missed; "
                f"{'they are' if many else 'it is'} not measured and not in the values above.")

    def second_reader_reason(self, result: WorkflowResult, review: Review) -> str:
        """Why ``review`` (of the reviewed ``result``) needs a second, different radiologist's independent
        reading before anything is delivered; ``""`` when it does not (the default). The server then
        holds the run in ``second_reading`` until another radiologist decides, and passes the first
        decision to the workflow as :attr:`Review.prior_readings` (EASE, PAPERS.md A4: a second reader
        when the volumes change the 2D-based interpretation)."""
        return ""

    def required_timepoints(self, result: WorkflowResult) -> tuple[str, ...]:
        """The time points of :attr:`ReviewForm.timepoints` that the reader must accept for ``result``
        (ACCEPTABLE is refused until each is ticked). Default: all of the form's. A workflow whose
        earlier time points are optional (a patient's first study has none) returns only those this
        result shows."""
        return tuple(self.review_form.timepoints)

    def recompute(self, result: WorkflowResult) -> WorkflowResult:
        """Quantities from the (kept) findings. Default: leave quantities as they are; workflows whose
        totals depend on findings override this."""
        return result

    # -- report
    def report_title(self) -> str:
        return self.title or self.name

    def report_sections(self, result: WorkflowResult, review: Review | None) -> list[ReportSection]:
        """The report body for an ACCEPTABLE (or not yet reviewed) result. Default: conclusion,
        a table of quantities and a table of findings (volumes in mL)."""
        sections = [ReportSection("Findings", (self.conclusion(result, review),))]
        if result.quantities:
            sections.append(ReportSection("Measurements", table=ReportTable(
                ("Quantity", "Value", "Unit"),
                tuple((q.description or q.name, format_measurement(q.value, q.note), q.unit)
                      for q in result.quantities))))
        if result.findings:
            sections.append(ReportSection("Findings table", table=ReportTable(
                ("#", "Kind", "Volume (mL)", "Location"),
                tuple((str(f.id), self.finding_kinds.get(f.kind, f.kind),
                       format_measurement(f.volume_ml, f.volume_note, 3), f.location) for f in result.findings))))
        return sections

    def not_usable_text(self) -> str:
        """What the report says for an UNACCEPTABLE result."""
        return ("The automatic result was reviewed and judged not usable (UNACCEPTABLE); no automatic "
                "measurements are reported. Read the images without the software result.")

    # -- description
    def describe(self) -> dict[str, Any]:
        """What ``neurorad workflows`` and the API show about this workflow."""
        return {
            "name": self.name, "version": self.version, "title": self.title, "description": self.description,
            "requires": self.requirements.describe(), "priors_needed": self.requirements.priors_needed,
            "finding_kinds": dict(self.finding_kinds), "engines": dict(self.engines),
            "review_fields": [f.name for f in self.review_form.fields],
        }


# ------------------------------------------------------------------------------------------ utils
def format_value(value: Any, digits: int = 2) -> str:
    """A quantity's value as text: floats rounded to ``digits``, booleans yes/no, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def format_measurement(value: Any, note: str = "", digits: int = 2, unit: str = "") -> str:
    """A measured value as text for people: :func:`format_value` (with ``unit``), followed by the
    ``note`` of a value that is not a precise measurement, e.g. ``0.045 mL (approximate: not
    measurable at 5 mm slices)``, so such a number is never read as precise."""
    text = format_value(value, digits) + (f" {unit}" if unit and value is not None else "")
    return f"{text} ({note})" if note else text


def _json_scalar(v: Any) -> Any:
    try:
        import numpy as np

        if isinstance(v, np.generic):
            return v.item()
    except ImportError:  # pragma: no cover
        pass
    return v


def _json_default(o: Any) -> Any:
    o = _json_scalar(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        return {f.name: getattr(o, f.name) for f in fields(o)}
    if isinstance(o, (int, float, str, bool)) or o is None:
        return o
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def kept_findings(findings: Sequence[Finding], review: Review | None, discard: Sequence[str] = ("discard",)
                  ) -> list[Finding]:
    """Findings not discarded by ``review`` (all when there is no review)."""
    if review is None:
        return list(findings)
    return [f for f in findings if review.verdicts.get(f.id) not in set(discard)]
