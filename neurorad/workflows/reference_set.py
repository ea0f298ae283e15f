"""The software-update protocol of EASE, generic for every workflow: a reference set per workflow,
re-run on every update and compared with the previous version's results (PAPERS.md A4).

The paper's protocol, as implemented here:

1. On any update, re-process the reference set (EASE: 20 accepted surveillance scans):
   :func:`run_set` runs the workflow on every case into ``runs/<label>/<case>/``.
2. Compare with the earlier version (:func:`compare_runs`). Segmentations unchanged (identical
   masks and volumes) -> ``UNCHANGED``: deploy.
3. Changed -> the new results must be QA'd again (:func:`record_review`, the same 1-5 form).
4. Scores equal or better than the previous version's -> ``COMPATIBLE``: deploy; any worse ->
   ``NOT_DEPLOYABLE`` (the paper leaves this case open; deployment is implicitly not allowed).
5. A volume change of more than 25 % in **any accepted** reference case -> ``INCOMPATIBLE``:
   volumes cannot be compared across the version boundary and later reports carry a warning.

The volume compared is the workflow's :attr:`~neurorad.workflows.contract.Workflow.reference_quantity`
(e.g. ``whole_tumour_volume``), or the sum of the findings' volumes when it declares none; the Dice
coefficient is taken between the two versions' label maps (``result.mask``, any label > 0).

Layout of a reference-set folder::

    reference_set.json            workflow name, cases (role -> input path), reviews per run label
    runs/<label>/<case>/          the workflow's output folder for that case (result.json, mask ...)
    runs/<label>/run.json         software version, workflow version, models, per-case status
    compare_<old>_vs_<new>.json   the comparison (also .md, the printed table)

Paths of inputs are stored as given (absolute, or relative to the set folder).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurorad.errors import InputError, NeuroradError
from neurorad.workflows.contract import ACCEPTABLE, UNACCEPTABLE, Workflow, WorkflowInputs, WorkflowResult

__all__ = ["MANIFEST", "VOLUME_CHANGE_LIMIT", "CaseComparison", "SetComparison", "ReferenceSet", "run_set",
           "compare_runs", "record_review", "reference_volume_ml"]

MANIFEST = "reference_set.json"
#: EASE: an update changing the volume of any accepted reference segmentation by more than 25 % is incompatible
VOLUME_CHANGE_LIMIT = 0.25
#: masks with Dice >= this and volumes equal to 1e-6 mL count as unchanged (float noise of resampling)
UNCHANGED_DICE = 0.9999

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass
class ReferenceSet:
    """A reference set folder (see the module docstring)."""

    folder: Path
    workflow: str
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {"series": {role: path}, "options"}
    reviews: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # label -> case -> review

    @classmethod
    def open(cls, folder: str | Path) -> ReferenceSet:
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise InputError(f"not a reference set (no {MANIFEST}; create one with `neurorad reference-set add`)",
                             folder)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(folder, str(d["workflow"]), dict(d.get("cases") or {}), dict(d.get("reviews") or {}))
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"unreadable reference set manifest ({err})", path) from err

    @classmethod
    def open_or_create(cls, folder: str | Path, workflow: str) -> ReferenceSet:
        folder = Path(folder)
        if (folder / MANIFEST).exists():
            ref = cls.open(folder)
            if ref.workflow != workflow:
                raise InputError(f"this reference set belongs to workflow {ref.workflow!r}, not {workflow!r}", folder)
            return ref
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, workflow)

    def save(self) -> Path:
        path = self.folder / MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"workflow": self.workflow, "cases": self.cases, "reviews": self.reviews},
                                  indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
        return path

    def add_case(self, case_id: str, series: dict[str, str], options: dict[str, Any] | None = None) -> None:
        if not _LABEL.match(case_id):
            raise InputError(f"case id {case_id!r}: use letters, digits, '.', '_', '+', '-' (no identifiers)")
        for role, p in series.items():
            if not self.resolve(p).exists():
                raise InputError(f"input for role {role!r} of case {case_id!r} does not exist", self.resolve(p))
        self.cases[case_id] = {"series": dict(series), "options": dict(options or {})}

    def resolve(self, p: str | Path) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.folder / p

    def run_dir(self, label: str) -> Path:
        return self.folder / "runs" / label

    def labels(self) -> list[str]:
        runs = self.folder / "runs"
        return sorted(p.name for p in runs.iterdir() if (p / "run.json").is_file()) if runs.is_dir() else []


def _check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise InputError(f"run label {label!r}: use letters, digits, '.', '_', '+', '-' (e.g. the version)")
    return label


def run_set(ref: ReferenceSet, workflow: Workflow, label: str | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run ``workflow`` on every case of ``ref`` into ``runs/<label>/`` (label: the workflow's version).

    A case that fails is recorded with its error and the others still run; a case whose result
    already exists under that label is kept (re-running a label resumes it). Returns ``run.json``.
    """
    from neurorad import __version__
    from neurorad.workflows.runner import execute

    if workflow.name != ref.workflow:
        raise InputError(f"reference set of workflow {ref.workflow!r} cannot be run with {workflow.name!r}", ref.folder)
    if not ref.cases:
        raise InputError("the reference set has no cases (add them with `neurorad reference-set add`)", ref.folder)
    label = _check_label(label or workflow.version)
    out = ref.run_dir(label)
    out.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    models: dict[str, str] = {}
    for i, (case_id, case) in enumerate(sorted(ref.cases.items())):
        if progress:
            progress(case_id, i, len(ref.cases))
        dest = out / case_id
        if (dest / WorkflowResult.RESULT_JSON).is_file():
            status[case_id] = "ok"
            continue
        inputs = WorkflowInputs({r: ref.resolve(p) for r, p in case["series"].items()},
                                options=dict(case.get("options") or {}))
        try:
            res = execute(workflow, inputs, dest, write_outputs=False)
        except NeuroradError as err:
            status[case_id] = f"failed: {err}"
            continue
        status[case_id] = "ok"
        models.update({m.name: m.version for m in res.provenance.models})
    record = {"label": label, "workflow": workflow.name, "workflow_version": workflow.version,
              "software_version": __version__, "models": models, "cases": status}
    tmp = out / "run.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(out / "run.json")
    return record


def record_review(ref: ReferenceSet, workflow: Workflow, label: str, case_id: str, decision: str,
                  score: str | None = None, reviewer: str = "") -> dict[str, Any]:
    """Store a radiologist's QA of one case's result under run ``label`` (the workflow's own form)."""
    if case_id not in ref.cases:
        raise InputError(f"no case {case_id!r} in the reference set; cases: {sorted(ref.cases)}", ref.folder)
    if decision not in (ACCEPTABLE, UNACCEPTABLE):
        raise InputError(f"decision must be {ACCEPTABLE} or {UNACCEPTABLE}, not {decision!r}")
    if not (ref.run_dir(_check_label(label)) / case_id / WorkflowResult.RESULT_JSON).is_file():
        raise InputError(f"case {case_id!r} has no result under run {label!r} (run the set first)", ref.folder)
    field_ = _score_field(workflow)
    if score is not None and field_ is not None:
        try:
            score = field_.validate(score)
        except ValueError as err:
            raise InputError(str(err)) from None
    review = {"decision": decision, "score": score, "reviewer": reviewer}
    ref.reviews.setdefault(label, {})[case_id] = review
    ref.save()
    return review


def _score_field(workflow: Workflow):  # noqa: ANN202
    return next((f for f in workflow.review_form.fields if f.name == "score" and f.kind == "choice"), None)


def _score_rank(workflow: Workflow, score: Any) -> int | None:
    """Position of ``score`` among the form's choices; the contract lists the best first (1 Perfect)."""
    f = _score_field(workflow)
    if f is None or score is None:
        return None
    values = [c.value for c in f.choices]
    return values.index(str(score)) if str(score) in values else None


def reference_volume_ml(workflow: Workflow, result: WorkflowResult) -> float | None:
    """The volume the update protocol compares: the workflow's reference quantity, else the findings' sum."""
    name = getattr(workflow, "reference_quantity", "") or ""
    if name:
        q = result.quantity(name)
        return None if q is None or not isinstance(q.value, int | float) else float(q.value)
    vols = [f.volume_ml for f in result.findings if f.volume_ml is not None]
    return float(sum(vols))


def _mask_dice(a_dir: Path, a: WorkflowResult, b_dir: Path, b: WorkflowResult) -> float | None:
    if not a.mask or not b.mask:
        return None
    import numpy as np

    from neurorad.image.masks import dice
    from neurorad.image.nifti import load_nifti

    va, vb = load_nifti(a_dir / a.mask), load_nifti(b_dir / b.mask)
    if va.spatial_shape != vb.spatial_shape or not np.allclose(va.affine, vb.affine, atol=1e-3):
        return None
    return float(dice(np.asarray(va.data) > 0, np.asarray(vb.data) > 0))


@dataclass(frozen=True)
class CaseComparison:
    case: str
    accepted: bool | None  # the previous version's QA decision (None: not reviewed)
    old_ml: float | None
    new_ml: float | None
    change_fraction: float | None
    dice: float | None
    old_score: str | None
    new_score: str | None
    status: str  # unchanged | changed | exceeds | missing

    def row(self) -> tuple[str, ...]:
        def f(x: float | None, d: int) -> str:
            return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"

        acc = "-" if self.accepted is None else ("yes" if self.accepted else "no")
        pct = "-" if self.change_fraction is None else f"{100 * self.change_fraction:+.1f}"
        return (self.case, acc, f(self.old_ml, 2), f(self.new_ml, 2), pct, f(self.dice, 3),
                self.old_score or "-", self.new_score or "-", self.status)


COLUMNS = ("case", "accepted", "old mL", "new mL", "change %", "Dice", "old score", "new score", "status")


@dataclass(frozen=True)
class SetComparison:
    workflow: str
    old: str
    new: str
    cases: tuple[CaseComparison, ...]
    verdict: str  # UNCHANGED | COMPATIBLE | QA_NEEDED | NOT_DEPLOYABLE | INCOMPATIBLE
    reason: str

    @property
    def passed(self) -> bool:
        return self.verdict in ("UNCHANGED", "COMPATIBLE")

    def table(self) -> str:
        rows = [COLUMNS] + [c.row() for c in self.cases]
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
        lines = ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in rows]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "old": self.old, "new": self.new, "verdict": self.verdict,
                "passed": self.passed, "reason": self.reason, "volume_change_limit": VOLUME_CHANGE_LIMIT,
                "cases": [dict(zip(("case", "accepted", "old_ml", "new_ml", "change_fraction", "dice",
                                    "old_score", "new_score", "status"),
                                   (c.case, c.accepted, c.old_ml, c.new_ml, c.change_fraction, c.dice,
                                    c.old_score, c.new_score, c.status), strict=True)) for c in self.cases]}


def compare_runs(ref: ReferenceSet, workflow: Workflow, old: str, new: str) -> SetComparison:
    """Apply the update protocol to runs ``old`` and ``new`` of ``ref`` (see the module docstring)."""
    runs = {}
    for label in (old, new):
        if not (ref.run_dir(_check_label(label)) / "run.json").is_file():
            raise InputError(f"no run {label!r} in the reference set; runs: {ref.labels()}", ref.folder)
        runs[label] = ref.run_dir(label)
    old_reviews, new_reviews = ref.reviews.get(old, {}), ref.reviews.get(new, {})
    cases = []
    for case_id in sorted(ref.cases):
        a_dir, b_dir = runs[old] / case_id, runs[new] / case_id
        rev_old, rev_new = old_reviews.get(case_id), new_reviews.get(case_id)
        accepted = None if rev_old is None else rev_old.get("decision") == ACCEPTABLE
        scores = (None if rev_old is None else rev_old.get("score"), None if rev_new is None else rev_new.get("score"))
        if not (a_dir / WorkflowResult.RESULT_JSON).is_file() or not (b_dir / WorkflowResult.RESULT_JSON).is_file():
            cases.append(CaseComparison(case_id, accepted, None, None, None, None, *scores, "missing"))
            continue
        a, b = WorkflowResult.read_json(a_dir), WorkflowResult.read_json(b_dir)
        va, vb = reference_volume_ml(workflow, a), reference_volume_ml(workflow, b)
        d = _mask_dice(a_dir, a, b_dir, b)
        frac = None
        if va is not None and vb is not None:
            frac = (vb - va) / va if va > 0 else (0.0 if vb == 0 else math.inf)
        same_volume = va is not None and vb is not None and abs(vb - va) <= 1e-6
        if same_volume and (d is None or d >= UNCHANGED_DICE):
            status = "unchanged"
        elif accepted and (frac is None or abs(frac) > VOLUME_CHANGE_LIMIT):
            status = "exceeds"
        else:
            status = "changed"
        cases.append(CaseComparison(case_id, accepted, va, vb, frac if frac is None or math.isfinite(frac) else None,
                                    d, *scores, status))
    verdict, reason = _verdict(workflow, cases)
    return SetComparison(workflow.name, old, new, tuple(cases), verdict, reason)


def _verdict(workflow: Workflow, cases: list[CaseComparison]) -> tuple[str, str]:
    limit = f"{VOLUME_CHANGE_LIMIT:.0%}"
    missing = [c.case for c in cases if c.status == "missing"]
    if missing:
        return "QA_NEEDED", f"no result under both runs for: {', '.join(missing)} (run the set again)"
    exceeds = [c.case for c in cases if c.status == "exceeds"]
    if exceeds:
        return "INCOMPATIBLE", (f"volume of accepted case(s) {', '.join(exceeds)} changed by more than {limit}: "
                                "volumes cannot be compared across the versions; later reports must carry a warning "
                                "that earlier volumes be re-assessed with the new version")
    if all(c.status == "unchanged" for c in cases):
        return "UNCHANGED", "segmentations unchanged: deploy"
    changed = [c for c in cases if c.status == "changed"]
    unrated = [c.case for c in changed if c.new_score is None]
    if unrated:
        return "QA_NEEDED", ("segmentations changed (no accepted volume beyond " + limit + "): repeat the manual QA "
                             "of the new results for " + ", ".join(unrated) + " (`neurorad reference-set review`)")
    worse = [c.case for c in changed
             if (r_new := _score_rank(workflow, c.new_score)) is not None
             and (r_old := _score_rank(workflow, c.old_score)) is not None and r_new > r_old]
    if worse:
        return "NOT_DEPLOYABLE", f"quality scores worse than the previous version for: {', '.join(worse)}"
    return "COMPATIBLE", "segmentations changed within " + limit + " and quality scores equal or better: deploy"


def write_comparison(ref: ReferenceSet, cmp: SetComparison) -> tuple[Path, Path]:
    """``compare_<old>_vs_<new>.json`` and ``.md`` in the set folder (atomic writes)."""
    stem = f"compare_{cmp.old}_vs_{cmp.new}"
    paths = []
    for suffix, text in ((".json", json.dumps(cmp.to_dict(), indent=2)),
                         (".md", f"# Reference set: {cmp.workflow} {cmp.old} -> {cmp.new}\n\n{cmp.table()}\n\n"
                                 f"**{cmp.verdict}**: {cmp.reason}\n")):
        p = ref.folder / (stem + suffix)
        tmp = ref.folder / (stem + suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
        paths.append(p)
    return paths[0], paths[1]
