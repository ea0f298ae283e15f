"""The ``ms-lesions`` workflow on the contract: new and enlarging T2-FLAIR lesions between a
patient's previous FLAIR (baseline) and the current one (follow-up).

The science is :func:`neurorad.pipelines.ms_lesions.run_ms_lesions` (FLAIR subtraction after
registration, bias correction and joint normalisation; the CAD of the published deployments,
docs/ms-lesions.md); the clinical rules (activity, gadolinium) are :mod:`neurorad.clinical.ms`.
This module declares what the platform needs: the series (this study's FLAIR and the FLAIR of the
patient's previous study), the finding vocabulary (``new``, ``enlarging``; an enlarging lesion
carries its baseline volume and the change as finding measurements), the review form (1-5
score, keep/discard per lesion, missed-lesion markers), the viewer panels and the report
wording. Volumes are in mL everywhere in the result.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from neurorad.workflows.contract import (
    SCORE_1_5,
    Alarm,
    Choice,
    Finding,
    KeyImage,
    ModelRef,
    Panel,
    Progress,
    Provenance,
    Quantity,
    ReportSection,
    ReportTable,
    Requirements,
    Review,
    ReviewForm,
    SeriesRole,
    ViewerLayout,
    Workflow,
    WorkflowInputs,
    WorkflowResult,
    format_measurement,
    format_value,
)

__all__ = ["MSLesionsWorkflow", "from_ms_result", "generic_result_keys"]

#: Label map of the findings on the common (displayed) grid: the viewer's overlay.
OVERLAY_VOLUME = "lesions_common"


def _ml(mm3: float) -> float:
    return round(float(mm3) / 1000.0, 6)


def _counted(findings: list[Finding], min_score: float | None) -> tuple[list[Finding], int]:
    """The findings that count for activity without the reader (peak score >= ``min_score``, the run's
    ``activity_min_peak_score``; every one when None) and the number of low-confidence ones
    (clinical.ms.split_by_confidence)."""
    from neurorad.clinical.ms import counts_for_activity

    counted = [f for f in findings if counts_for_activity(f.score, min_score)]
    return counted, len(findings) - len(counted)


def _activity_threshold(parameters: Any) -> float | None:
    """The run's ``MSConfig.activity_min_peak_score`` from its recorded parameters; None for runs before workflow
    1.18.0 (every reported lesion counted then), so an old result is judged as it was."""
    value = parameters.get("activity_min_peak_score") if isinstance(parameters, dict) else None
    return float(value) if value is not None else None


def _low_confidence(result: WorkflowResult, finding: Finding) -> bool:
    """True for a lesion under ``result``'s activity threshold (1.18.0): reported, but counted only once kept."""
    from neurorad.clinical.ms import counts_for_activity

    return not counts_for_activity(finding.score, _result_threshold(result))


def _result_threshold(result: WorkflowResult, review: Review | None = None) -> float | None:
    """The activity threshold ``result`` is judged by: its run's (:func:`_activity_threshold`), or None once an
    accepted ``review`` judged every listed lesion (the kept ones count)."""
    if review is not None and review.accepted:
        return None
    return _activity_threshold(result.provenance.parameters)


def _quantities(findings: list[Finding], unresolved_regions: int = 0, reader_marked: int = 0,
                min_score: float | None = None) -> list[Quantity]:
    """Counts and volumes (mL) of new and enlarging lesions, activity and the gadolinium rule: the boolean
    ``gadolinium_recommended`` and the three-valued ``gadolinium`` (RECOMMENDED / NOT NEEDED / READER TO DECIDE,
    the last when no lesion is counted but ``unresolved_regions`` changed regions of tumefactive size were
    left to the reader: clinical.ms.ms_decision), so a reader of the values alone (SR, API) is not told
    "not needed" where the report says the reader decides. ``reader_marked``: lesions the reader marked as
    missed in an accepted review (``reader_marked_lesions``); they count for activity and gadolinium, while the
    counts and volumes of new and enlarging lesions stay the software's measured ones. ``min_score``: the run's
    activity threshold (:func:`_counted`; None after an accepted review, whose kept lesions all count): counts,
    volumes and the decision are of the lesions that count, and ``low_confidence_lesions`` says how many more were
    reported."""
    from neurorad.clinical.ms import ms_decision

    all_findings = findings
    findings, low = _counted(findings, min_score)
    d = ms_decision([f.kind for f in findings], unresolved_regions, reader_marked, low)
    new_ml = sum(f.volume_ml or 0.0 for f in findings if f.kind == "new")
    enl_ml = sum(f.volume_ml or 0.0 for f in findings if f.kind == "enlarging")

    def total_note(kind: str) -> str:  # a total that includes volumes not measurable at this slice thickness
        n = sum(bool(f.volume_note) for f in findings if f.kind == kind)
        return f"approximate: includes {n} lesion volume{'s' if n > 1 else ''} not measurable at this slice thickness" \
            if n else ""

    return [
        Quantity("new_lesions", d.n_new, "1", "New T2-FLAIR lesions"),
        Quantity("enlarging_lesions", d.n_enlarging, "1", "Enlarging T2-FLAIR lesions"),
        Quantity("new_lesion_volume_ml", round(new_ml, 6), "mL", "Volume of new lesions",
                 ("118565006", "SCT", "Volume"), total_note("new")),
        Quantity("enlarging_lesion_volume_ml", round(enl_ml, 6), "mL", "Follow-up volume of enlarging lesions",
                 ("118565006", "SCT", "Volume"), total_note("enlarging")),
        Quantity("lesions_volume_not_measurable", sum(bool(f.volume_note) for f in all_findings), "1",
                 "Lesions whose volume is not measurable at this slice thickness"),
        Quantity("low_confidence_lesions", low, "1", "Low-confidence lesions, not counted (the reader decides)"),
        Quantity("active", d.active, "", "Disease activity (new or enlarging lesion)"),
        Quantity("gadolinium_recommended", d.gadolinium, "", "Gadolinium recommended"),
        Quantity("gadolinium", d.gadolinium_label, "", "Gadolinium (recommended, not needed, reader to decide)"),
        Quantity("unresolved_regions", int(unresolved_regions), "1",
                 "Changed regions of tumefactive size not counted as lesions (the reader decides)"),
        Quantity("reader_marked_lesions", int(reader_marked), "1",
                 "Lesions marked by the reader, missed by the software"),  # <= 64 characters (SR code meaning)
    ]


def _decision(result: WorkflowResult, review: Review | None) -> Any:
    """The MS decision (clinical.ms.ms_decision) of ``result`` as ``review`` leaves it: its findings' kinds, the
    run's uncounted regions of tumefactive size and the reader's missed-lesion markers."""
    from neurorad.clinical.ms import ms_decision

    counted, low = _counted(result.findings, _result_threshold(result, review))
    return ms_decision([f.kind for f in counted], _unresolved_regions(result.extra),
                       review.reader_marked if review is not None else 0, low)


def _unresolved_regions(extra: Any) -> int:
    """Changed regions of tumefactive size the run did not count, from its ``result.json`` (``extra`` of the
    result; 0 for runs before workflow 1.5.2): they stay the reader's to judge whatever the review kept, so every
    conclusion says so."""
    decision = (extra.get("decision") or {}) if isinstance(extra, dict) else {}
    return int(decision.get("unresolved_regions") or 0) if isinstance(decision, dict) else 0


def _volume_rule_record(result: WorkflowResult) -> dict:
    """The run's ``volume_rule`` record of its result.json ({} when absent)."""
    rule = (result.extra.get("volume_rule") or {}) if isinstance(result.extra, dict) else {}
    return rule if isinstance(rule, dict) else {}


def _delineation_rule(result: WorkflowResult) -> str:
    """How the run measured each lesion (its result.json's ``volume_rule.delineation``; before workflow 1.31.0,
    half maximum)."""
    rule = _volume_rule_record(result)
    if rule.get("delineation"):
        return str(rule["delineation"])
    return "voxels at >= half the lesion's peak change (partial-volume rule)"


def _volume_rule(result: WorkflowResult) -> str:
    """The volume-measurability rule the run used (its result.json), else the current default."""
    rule = _volume_rule_record(result)
    if rule.get("rule"):
        t = rule.get("slice_thickness_mm")
        return str(rule["rule"]) + (f" (slice thickness of this pair: {float(t):g} mm)" if t else "")
    from neurorad.segment.ms_difference import volume_rule_text

    return volume_rule_text()


def from_ms_result(res: Any, folder: Path | None = None, version: str | None = None) -> WorkflowResult:
    """A :class:`~neurorad.pipelines.ms_lesions.MSResult` as a generic :class:`WorkflowResult`.

    Findings: one per lesion row (volume in mL, label = lesion id in ``new_lesions.nii.gz``,
    centroid in the follow-up's RAS mm, location from the atlases); enlarging lesions carry
    ``baseline_volume_ml`` and ``volume_change_ml`` as measurements. ``folder``: where the run
    wrote its files (default ``res.out_dir``); its ``result.json`` goes into ``extra``.
    """
    from neurorad.clinical.ms import ms_decision

    folder = Path(folder or res.out_dir)
    findings = []
    for r in res.lesions:
        note = str(getattr(r, "volume_note", "") or "")  # volume not measurable at this slice thickness
        meas = [Quantity("diameter_mm", round(float(r.diameter_mm), 3), "mm", "Equivalent-sphere diameter", note=note)]
        if r.kind == "enlarging":
            meas += [Quantity("baseline_volume_ml", _ml(r.baseline_volume_mm3), "mL", "Volume at baseline"),
                     Quantity("volume_change_ml", _ml(r.volume_change_mm3), "mL", "Change since baseline",
                              note=note)]
        findings.append(Finding(int(r.id), str(r.kind), _ml(r.volume_mm3), int(r.id), r.location,
                                (float(r.centroid_x_mm), float(r.centroid_y_mm), float(r.centroid_z_mm)),
                                tuple(meas), round(float(r.max_score), 6), note))
    ms_json: dict[str, Any] = {}
    if (folder / "result.json").exists():
        ms_json = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    prov_in = ms_json.get("provenance") or {}
    steps = [{"name": s.get("name"), "seconds": s.get("seconds"), "engine": s.get("engine")}
             for s in prov_in.get("steps", []) if isinstance(s, dict)]
    weights = {s.get("name"): s.get("weights_sha256") for s in prov_in.get("steps", [])
               if isinstance(s, dict) and s.get("weights_sha256")}
    models = [ModelRef("neurorad FLAIR subtraction CAD (ms_difference)", str(ms_json.get("version") or ""),
                       kind="classical")]
    learned = {s.get("name"): (s.get("parameters") or {}).get("learned_model") for s in prov_in.get("steps", [])
               if isinstance(s, dict)}
    for step, sha in weights.items():
        engine = next((s.get("engine") for s in steps if s.get("name") == step), step)
        lm = learned.get(step)
        if isinstance(lm, dict):  # the learned lesion engine (issue 17): the model's own name and version
            models.append(ModelRef(str(lm.get("name")), str(lm.get("version")), str(sha), "learned"))
        else:
            models.append(ModelRef(f"{engine} ({step})", "", str(sha), "learned"))
    volumes = {"baseline": "baseline.nii.gz", "followup": "followup.nii.gz"}
    if (folder / "new_lesions_common.nii.gz").exists():
        volumes[OVERLAY_VOLUME] = "new_lesions_common.nii.gz"
    for p in sorted(folder.glob("*_registered.nii.gz")):
        volumes[p.name[: -len("_registered.nii.gz")]] = p.name
    unresolved = _unresolved_regions(ms_json)
    min_score = _activity_threshold(ms_json.get("parameters"))
    counted, low = _counted(findings, min_score)
    d = ms_decision([f.kind for f in counted], unresolved, low_confidence=low)
    extra = {k: v for k, v in ms_json.items() if k not in ("workflow", "version", "provenance")}
    return WorkflowResult(
        workflow=MSLesionsWorkflow.name, version=version or MSLesionsWorkflow.version, findings=findings,
        quantities=_quantities(findings, unresolved, min_score=min_score),
        alarms=[Alarm("quality", str(w)) for w in res.warnings],
        summary=d.conclusion, mask="new_lesions.nii.gz" if (folder / "new_lesions.nii.gz").exists() else None,
        reference_role="flair", volumes=volumes,
        provenance=Provenance(inputs={"baseline_flair": str((prov_in.get("inputs") or {}).get("baseline", "")),
                                      "flair": str((prov_in.get("inputs") or {}).get("followup", ""))},
                              software_version=str(ms_json.get("version") or ""), models=models, steps=steps,
                              parameters=dict(ms_json.get("parameters") or {})),
        extra=extra,
    )


def generic_result_keys(res: Any) -> dict[str, Any]:
    """The contract's keys of ``result.json`` (``workflow``, ``version``, ``quantities``, ``findings``,
    ``alarms``, ``summary``) for an MS run, to merge into the pipeline's own ``result.json``
    (``neurorad ms-lesions`` keeps its historical keys and adds these)."""
    d = from_ms_result(res).to_dict()
    return {k: d[k] for k in ("contract", "workflow", "version", "summary", "quantities", "findings", "alarms",
                              "mask", "reference_role", "volumes")}


class MSLesionsWorkflow(Workflow):
    """Longitudinal MS: new and enlarging T2-FLAIR lesions, activity and the gadolinium decision."""

    name = "ms-lesions"
    # 1.1.0: CAD centre-of-gravity rule off by default (FPParams.cog_rule); 1.2.0: operating point from
    # the FROC sweep on 29 widened tuning pairs (CandidateParams.z_at_core / rel_at_core) and the drift rule's
    # ratio 0.6 -> 0.5 from a sweep on 47 tuning pairs (FPParams.drift_ratio); diffuse-change rule (FPParams);
    # 1.3.0: the diffuse-change rule's peak bound 0.5 -> 0.8 (FPParams.diffuse_max_peak, sweep at 1 mm);
    # 1.4.0: the enlarging-lesion path (ClassifyParams.rescue_growth_ratio: a rim dropped as misregistration or
    # drift next to a baseline lesion whose half-maximum size grew >= 2.5x is kept) and the moved-structure rule
    # (FPParams.loss_alone_ratio: more loss around a candidate than gain inside it drops it); 1.5.0: a size bound
    # on focal change (FPParams.diffuse_max_focal_volume_mm3: a region larger than a 20 mm lesion at half maximum
    # is reported as diffuse change, with a warning, not as a lesion); 1.5.1: no absolute NMI floor on the
    # registration (MSConfig.min_registration_nmi 1.01 -> 1.0: it refused a correctly registered thick-slice
    # pair); the smoothed-correlation check guards the registration; 1.5.2: a changed region of tumefactive size
    # that the size bound did not count is named in the conclusion, which then never says "no new lesion,
    # gadolinium not needed" (clinical.ms.ms_decision's unresolved_regions; result.json decision); 1.5.3: speed
    # (outputs identical: both time points' deepbet side by side, the NMI histogram by bincount, Nyul landmarks
    # once per image) and two quantities, the three-valued "gadolinium" and "unresolved_regions"; 1.5.4: lesions
    # the reader marks as missed in an accepted review count for activity and gadolinium (reader_marked_lesions;
    # before, the signed conclusion could say "no new lesion, gadolinium not needed" beside the reader's marker);
    # 1.6.0: slices of two orientations (axial 2D against coronal 2D) are matched in both directions
    # (ms_lesions.antialias_thick_axes; 8 false positives on such a pair of the independent simulator), and a NIfTI
    # input whose slices lie 5.5-7 mm apart (5 mm slices with a gap) is compared with a warning, not refused
    # (MSConfig.max_slice_spacing_mm); found on bench/ms_sim_independent.py, a simulator written without reading
    # the phantom or the detector; 1.7.0: a new lesion that shares a candidate with a brighter one is reported
    # on its own (ms_difference.separate_lesion_cores: its own half-maximum core, cut off from the candidate's,
    # judged by the same false-positive rules); before, the partial-volume rule cut it away (a 14 mm lesion
    # scoring 1.0 on an independent-simulator pair had no detected voxel), and the drift rule compares each time
    # point's contrast against its own 3 mm surround (FPParams.drift_reference "shell"; before, both against the
    # baseline's local tissue level: widened tuning sweep 173 lesions at 0.177 FP per patient -> 174 at 0.115);
    # 1.7.1: a quality warning when an enlarging lesion measures smaller at follow-up than the baseline lesions it
    # touches (ms_lesions.shrunken_enlarging_warning); detections unchanged; 1.8.0: an enlarging candidate that
    # touches two or more baseline lesions is judged per touched lesion (ms_difference.judge_enlarging_parts): a
    # part the false-positive rules drop (a stable neighbour's drift) leaves it, so the lesion delineated is the
    # one that grew (an independent-simulator pair reported the stable neighbour instead); 1.8.1: a NIfTI
    # follow-up's DICOM reference series is written in a child process while the image steps run
    # (MSConfig.reference_series_process; detections and outputs unchanged, about 1-1.5 s less per 1 mm pair);
    # 1.9.0: the fusion engine unites the two engines' final lesions (ms_learned.merge_engine_lesions; before, a
    # learned candidate overlapping a classical one was dropped, and with it a lesion inside a classical candidate
    # the rules dropped whole) and the learned model is ms-unet3d 0.2.0 (trained 2.8 x longer); the classical
    # engine's detections are unchanged; 1.9.1: the learned model runs through its shipped ONNX export (ONNX
    # Runtime on torch's thread count; about 16 s of CPU per 1 mm pair instead of 21 s; detections unchanged on
    # the 40 held-out widened pairs); 1.10.0: the learned engine alone and the learned part of the fusion engine have
    # their own operating points (LearnedParams.anchors), chosen by the tuning sweep: the learned engine's
    # probability anchors 0.3 / 0.5 -> 0.08 / 0.4, fusion's unchanged (classical and fusion detections unchanged);
    # 1.10.1: the anchors are read from the model card's operating_point (ms-unet3d 0.2.0's card carries 1.10.0's
    # point, so detections are unchanged) and the candidate step records them with their source; 1.11.0: an
    # enlarging lesion is one that grew by more than measurement varies: the unchanged-enlarging check's minimum
    # growth 1.8 -> 1.5 and the enlarging-lesion path's 2.5 -> 2.1 (ms_difference.ClassifyParams), chosen on the
    # widened tuning pairs once their enlarging lesions grew by volume x 1.8-4.1 instead of 2.5-4; 1.12.0: the
    # candidate step smooths each axis at its own resolution (CandidateParams.isotropic_smoothing False: the in-plane
    # smoothing up to the slice thickness predated the matched resampling and blurred small lesions away), and a
    # new lesion that shares a candidate is searched for where it was lost: cut off from a brighter neighbour at the
    # dip between them (ClassifyParams.split_saddle_fraction 0.7) and beside a baseline lesion that did not grow,
    # whose candidate is dropped (ClassifyParams.split_beside_unchanged); 1.13.0: the analysis mask keeps only voxels
    # both images imaged (MSConfig.fov_coverage: a follow-up slab that motion moved off the baseline's brain left
    # zeros and B-spline ringing there, slab-shaped false positives on 5 mm pairs); 1.14.0: a candidate that touches
    # no baseline lesion is signal drift from a baseline contrast of 0.35 x its follow-up contrast (FPParams.
    # drift_ratio_new; 0.5 as before for one that touches a baseline lesion): stable lesions too faint at baseline
    # for the lesion mask read as new on thick-slice pairs; 1.15.0: the learned model is ms-unet3d 0.3.0 (trained on
    # a GPU: 80 pairs, 79,200 patches of 64^3 against 0.2.0's 2,880 of 48^3; its own swept anchors 0.05 / 0.2
    # alone, 0.3 / 0.5 in fusion): the learned and fusion engines' detections change, the classical engine's do not;
    # the field-of-view shortcut (a brain well inside both fields of view needs no resampled coverage) uses the
    # crop's margin (_coverage_margin_mm, 18.7 mm for 5 mm slices against 1 mm) instead of a fixed 12 mm, so it is
    # taken only where the resampled coverage is exactly 1 (of the 40 held-out widened and 40 independent pairs only
    # independent pair 18 took it with 12 mm; it no longer does, and its resampled coverage drops no brain voxel);
    # 1.15.1: the same values, faster (about 2 s per 1 mm pair): the coverage of equal-voxel pairs by a voxel-box
    # test instead of resampled ones, the NIfTI maps written (ISA-L gzip) while the report is made, step 5 per time
    # point in a thread, the SEG from a segment-number map, deepbet without the skull-stripped image it discarded
    # (docs/ms-lesions-log.md "Workflow 1.15.1"); 1.16.0: a candidate must hold more than 20 mm^3 instead of 12
    # (PostParams.min_volume_mm3, chosen on the 96 widened tuning pairs: 10 -> 7 false positives at the same 179 of
    # 203 lesions; docs/ms-lesions-log.md "Workflow 1.16.0"); it also bounds the learned engine's candidates; 1.17.0:
    # the misregistration test shifts a thick-slice axis by 1.5 mm read between its slices instead of a whole slice
    # where the other time point resolved that axis (FPParams.shift_thick_axis_mm and shift_thick_axis_finer_input_mm,
    # the inputs' geometry read in step 3): 349 instead of 346 of the 192 tuning pairs' 395 lesions at the same 20
    # false positives (docs/ms-lesions-log.md "Workflow 1.17.0"); 1.18.0: a lesion counts for activity and gadolinium
    # without the reader only from a peak score of 0.23 (MSConfig.activity_min_peak_score, the middle of the tuning
    # pairs' plateau of best patient sensitivity and specificity); weaker lesions are reported as low-confidence, and
    # when only such lesions are found the reader decides (READER TO DECIDE); an accepted review counts the lesions
    # it keeps; detections are unchanged (docs/ms-lesions-log.md "Workflow 1.18.0"); 1.19.0: the partial-volume rule
    # reads a lesion's peak around its maximum when the candidate is mostly weaker change around it
    # (ClassifyParams.delineation_focal_ratio 3.7): a 70 mm^3 lesion inside a 3.5 mL candidate of faint change was
    # reported at 3.5 mL (docs/ms-lesions-log.md "Workflow 1.19.0"); 1.20.0: N4 shifts each image by two of its brain
    # medians (MSConfig.n4_nonpositive "relative") instead of one intensity unit, so a series gives the same lesions
    # in any intensity units (docs/ms-lesions-log.md "Workflow 1.20.0")
    # 1.21.0: N4 fits on 6 mm samples on a 1 mm grid (3 s faster per 1 mm pair; docs/ms-lesions-log.md
    # "Workflow 1.21.0"); 1.22.0: the default lesion engine is fusion (the classical engine's lesions united with
    # the learned model's; docs/ms-lesions-log.md "Workflow 1.22.0"); 1.22.1: voxels without signal (exact zeros
    # connected to the grid's faces, as outside a skull-stripped series) leave each time point's brain mask, a mask
    # that loses >= 1 mL to them is named in a warning, and a common voxel whose resampled value mixes them in is
    # not compared (no change where an image holds no such zeros: every benchmark set; "Workflow 1.22.1"); 1.22.2: a
    # series more than 10 % negative (z-scored, offset) is shifted so that its darkest 1 % of signal sits at 0, with a
    # warning (no benchmark image holds a negative voxel; "Workflow 1.22.2"); 1.23.0: an input axis with voxels finer
    # than 0.8 mm (512-matrix reconstructions) is averaged to about 1 mm there (MSConfig.fine_grid_below_mm; no
    # benchmark image is that fine; "Workflow 1.23.0"); 1.24.0: the enlarging-lesion path keeps a dropped candidate
    # whose baseline lesion grew x 1.8 (not 2.1) when its baseline contrast ratio is under 0.6
    # (ClassifyParams.rescue_growth_ratio_low_drift; "Workflow 1.24.0"); 1.25.0: the moved-structure rule counts the
    # loss around a candidate beyond the shell's expected noise loss (FPParams.loss_noise_floor; "Workflow 1.25.0");
    # 1.26.0: in the fusion engine the misregistration test takes the shifted baseline's noise maximum off for a
    # candidate the other engine's score reaches 0.1 in, except on slices of two orientations
    # (FPParams.shift_confirm_score, shift_confirm_crossed; "Workflow 1.26.0"); 1.27.0: on slices of two
    # orientations the coarser image is also sampled on the finer one's slices and back (MSConfig.crossed_round_trip),
    # so both carry the cubic B-spline's interpolation across each other's slices (pairs of one orientation
    # unchanged; "Workflow 1.27.0"); 1.28.0: on slices of two orientations step 9 keeps an enlarging lesion whose
    # half-maximum size grew x 1.25 (not 1.5; ClassifyParams.crossed_min_volume_ratio; pairs of one orientation
    # unchanged; "Workflow 1.28.0"); 1.29.0: on slices of two orientations the learned engine's candidates dropped as
    # drift or misregistration beside a baseline lesion that grew x 1.55 are kept as enlarging
    # (ClassifyParams.crossed_learned_rescue_ratio; "Workflow 1.29.0"); 1.30.0: when the follow-up's grid is finer
    # than the common (coarser) grid, each new lesion and each enlarging lesion's follow-up extent is delineated again
    # and measured on the follow-up's own grid (ClassifyParams.finer_followup_ratio, finer_followup_enlarging;
    # ms_lesions.followup_grid_labels; the same detections, other volumes; "Workflow 1.30.0"); 1.31.0: a lesion
    # measuring >= 5 mm at half maximum (and measurable at the slice thickness) is delineated at the level whose
    # extent holds its partial-volume sum (ClassifyParams.pv_level_min_diameter_mm, ms_difference.partial_volume_core):
    # smoothing read convex lesions 5-12 % small at half maximum; the same detections, other volumes ("Workflow
    # 1.31.0"); 1.32.0: the partial-volume level also for the separate lesions added after half maximum, each
    # lesion's sum over the voxels nearer to it than to another lesion (ms_difference.partial_volume_levels), and on
    # the follow-up's finer grid likewise, where a finer delineation up to 3.0 x (not 1.5 x) the thick-slice mask is
    # trusted (ClassifyParams.finer_followup_volume_bounds; "Workflow 1.32.0"); 1.33.0: an enlarging lesion grows
    # into the follow-up voxels 0.1 over the local tissue level as well as over the brain-wide threshold, so a faint
    # one is no longer reported as its rim (ClassifyParams.grow_local_excess; "Workflow 1.33.0"); 1.34.0: the lesion
    # operating point is the FROC rule's on all 384 widened tuning pairs, a candidate reported from a peak score of
    # 0.0787 instead of 0.1 (PostParams.min_peak_score; the rule now reads the FROC staircase at its steps; every
    # engine's scores as before, the learned engine's mapped to the scale's fixed anchors; "Workflow 1.34.0"); 1.35.0:
    # in a new candidate, a second lesion over the candidate's half maximum that the saddle test kept joined to the
    # brighter lesion's core is cut off at the core's own level and reported (ClassifyParams.split_at_core_level;
    # "Workflow 1.35.0"); 1.35.1: the same values, faster: the signal coverage of step 3 (1.22.1) resamples the
    # supports only near a voxel without signal, not on the whole grid (ms_lesions.signal_coverage's crop; "Workflow
    # 1.35.1"); 1.36.0: on a thick follow-up (3-5 mm slices of one orientation, not the finer grid) each new lesion
    # and each enlarging lesion's follow-up extent is delineated again on the follow-up's own slices, reaching one
    # slice, so a lesion one slice thick no longer comes back on the slice beside it (ClassifyParams.
    # thick_followup_redelineate; ms_lesions.followup_grid_labels; more lesions found on thick follow-ups, the same
    # false positives; "Workflow 1.36.0"); 1.37.0: the same on pairs whose slices lie in two planes (axial against
    # coronal or sagittal; ClassifyParams.thick_followup_crossed; "Workflow 1.37.0")
    version = "1.37.0"
    title = "MRI brain follow-up: new and enlarging T2-FLAIR lesions"
    description = ("Compares this study's FLAIR with the FLAIR of the patient's previous study (registered, "
                   "bias-corrected, jointly normalised subtraction) and reports new and enlarging lesions, "
                   "disease activity and whether gadolinium is needed.")
    requirements = Requirements((
        SeriesRole("flair", ("FLAIR",), ("MR",), prefer_3d=True, description="Follow-up FLAIR (the exam being read)"),
        SeriesRole("baseline_flair", ("FLAIR",), ("MR",), prior=1, prefer_3d=True,
                   description="Baseline FLAIR of the patient's previous study"),
    ))
    finding_kinds = {"new": "New T2-FLAIR lesion", "enlarging": "Enlarging T2-FLAIR lesion"}
    counts_reader_marked = True  # conclusion() counts the reader's missed-finding markers
    review_form = ReviewForm(
        fields=(SCORE_1_5,),
        finding_verdicts=(Choice("keep", "keep (true lesion)"), Choice("discard", "discard (false positive)")),
        discard_verdicts=("discard",), allow_missed=True, comment=True)
    viewer = ViewerLayout(
        panels=(Panel("Baseline FLAIR (skull-stripped, registered)", "baseline"),
                Panel("Follow-up FLAIR (skull-stripped, registered)", "followup"),
                Panel("Follow-up FLAIR + new (red) and enlarging (yellow) lesions", "followup", overlay=True)),
        kind_colours={"new": "#ff2020", "enlarging": "#ffd000"}, overlay=OVERLAY_VOLUME)
    engines = {"deepbet": "deepbet brain extraction (CPU)", "hdbet": "HD-BET brain extraction"}
    # the pipeline (torch, deepbet) and ITK-elastix's wrapped modules: 13-15 s of a cold job's 51 s;
    # the report writers (matplotlib, highdicom): 2-3 s more; the default fusion engine's network code (MONAI's
    # U-Net and sliding window where the model runs in bfloat16, ONNX Runtime where it runs its float32 export)
    preload = ("neurorad.pipelines.ms_lesions", "deepbet", "neurorad.preprocess.elastix_preload",
               "neurorad.pipelines.ms_report", "neurorad.report.preload", "neurorad.segment.ms_learned",
               "neurorad.segment.engine", "monai.networks.nets", "monai.inferers", "onnxruntime")

    # -- running
    def run(self, inputs: WorkflowInputs, out_dir: Path, progress: Progress) -> WorkflowResult:
        from neurorad.pipelines.ms_lesions import STEPS, MSConfig, run_ms_lesions

        names = [getattr(st, "name", None) or st[0] for st in STEPS]  # Step objects (or (name, text) pairs)
        known = {f.name for f in fields(MSConfig)}
        opts = dict(inputs.options)
        if "engine" in opts:
            opts["brain_engine"] = opts.pop("engine")
        # the platform writes the report and DICOM objects (neurorad.workflows.outputs), not the pipeline
        cfg = replace(MSConfig(), write_report=False, write_dicom=False,
                      **{k: v for k, v in opts.items() if k in known and k not in ("write_report", "write_dicom")})

        def on_step(step: str) -> None:
            i = names.index(step) if step in names else 0
            progress(0.9 * i / len(names), step)

        res = run_ms_lesions(inputs.path("baseline_flair"), inputs.path("flair"), out_dir, cfg, overwrite=True,
                             progress=on_step)
        result = from_ms_result(res, out_dir, self.version)
        progress(0.92, "key images")
        result.key_images = write_key_images(out_dir, result.findings, self.finding_kinds)
        return result

    # -- clinical rules
    def conclusion(self, result: WorkflowResult, review: Review | None = None) -> str:
        return _decision(result, review).conclusion

    def finding_caption(self, result: WorkflowResult, finding: Finding) -> str:
        """"low confidence" for a lesion under the run's activity threshold (1.18.0): the reader sees which lesions
        do not count until kept."""
        return "low confidence" if _low_confidence(result, finding) else ""

    def finding_needs_verdict(self, result: WorkflowResult, finding: Finding) -> bool:
        """A low-confidence lesion (:meth:`finding_caption`) needs the reader's own keep or discard: accepting the
        result must not count it for activity by default."""
        return _low_confidence(result, finding)

    def recompute(self, result: WorkflowResult) -> WorkflowResult:
        return replace(result, quantities=_quantities(result.findings, _unresolved_regions(result.extra),
                                                      min_score=_result_threshold(result)))

    def reviewed(self, result: WorkflowResult, review: Review) -> WorkflowResult:
        out = super().reviewed(result, review)
        if review.accepted:
            # the reader's missed-lesion markers count for activity and gadolinium in the values too (the
            # conclusion counts them through conclusion(out, review))
            # and the lesions the reader kept count whatever their score (the reader judged the low-confidence ones)
            out = replace(out, quantities=_quantities(out.findings, _unresolved_regions(out.extra),
                                                      review.reader_marked, min_score=None))
            kept = {f.id for f in out.findings}  # key images of the kept lesions only
            out.key_images = [k for k in result.key_images if k.finding_id is None or k.finding_id in kept]
        return out

    # -- report
    def report_sections(self, result: WorkflowResult, review: Review | None) -> list[ReportSection]:
        from neurorad.clinical.ms import counts_for_activity

        d = _decision(result, review)
        sections = [ReportSection("Conclusion", (d.activity_text,)),
                    ReportSection("Gadolinium", (d.gadolinium_reason,))]
        if result.findings:
            rows = []
            threshold = _result_threshold(result, review)
            for f in result.findings:
                base = f.measurement("baseline_volume_ml")
                change = f.measurement("volume_change_ml")
                low = not counts_for_activity(f.score, threshold)
                rows.append((str(f.id), self.finding_kinds.get(f.kind, f.kind) + (" (low confidence)" if low else ""),
                             format_measurement(f.volume_ml, f.volume_note, 3),
                             format_value(base.value, 3) if base else "-",
                             (f"{change.value:+.3f}" + (" (approximate)" if change.note else ""))
                             if change and isinstance(change.value, float) else "-",
                             f.location or "-"))
            sections.append(ReportSection("Lesions", table=ReportTable(
                ("#", "Type", "Volume (mL)", "Baseline (mL)", "Change (mL)", "Location"), tuple(rows))))
        figures = tuple(k.path for k in result.key_images)
        if figures:
            sections.append(ReportSection("Key images", ("Axial slices in radiological convention (patient right "
                                                         "on image left): baseline | follow-up | lesions.",),
                                          figures=figures))
        engine = str((result.provenance.parameters or {}).get("lesion_engine") or "classical")
        model = next((m for m in result.provenance.models if m.kind == "learned" and m.version), None)
        learned = f"the learned model {model.name} {model.version}" if model else "a learned model"
        candidates = {
            "learned": f"candidates from {learned} (two-time-point 3D U-Net on the registered pair, trained on "
                       "synthetic phantoms)",
            "fusion": f"candidates from the robust z-score of the subtraction fused with {learned} (two-time-point "
                      "3D U-Net, trained on synthetic phantoms; each engine detects on its own and a lesion is "
                      "reported when either finds it, strong disagreement raised as a quality alarm)",
        }.get(engine, "candidates from the robust z-score of the subtraction")
        n_flag = sum(bool(f.volume_note) for f in result.findings)
        if n_flag:
            sections.append(ReportSection("Lesion volumes", (
                f"{n_flag} of {len(result.findings)} lesion volumes are not measurable at this slice thickness: "
                "the lesion is too small for the slices, its measured volume is approximate (it may be several "
                "times too large or somewhat too small) and is included in the totals.",)))
        sections.append(ReportSection("Method", (
            "Follow-up FLAIR registered rigidly to the baseline FLAIR (halfway space), skull-stripped, N4 "
            f"bias-corrected and jointly intensity-normalised; {candidates}, false-positive reduction, new vs "
            "enlarging by overlap with baseline lesions. A new "
            "or enlarging T2-FLAIR lesion indicates disease activity (MAGNIMS-CMSC-NAIMS 2021). Lesion volumes: "
            f"{_delineation_rule(result)}; {_volume_rule(result)}.",)))
        return sections


def write_key_images(folder: Path, findings: list[Finding], kind_labels: dict[str, str]) -> list[KeyImage]:
    """One PNG per finding (baseline | follow-up | lesions through the lesion's centre slice, in
    radiological convention), captioned with the finding's own id; [] without the images."""
    import nibabel as nib
    import numpy as np

    from neurorad.pipelines.ms_report import lesion_panels, panel_window

    names = ("baseline.nii.gz", "followup.nii.gz", "new_lesions_common.nii.gz")
    if not findings or not all((folder / n).exists() for n in names):
        return []
    imgs = [nib.as_closest_canonical(nib.load(folder / n)) for n in names]
    if len({im.shape[:3] for im in imgs}) != 1:
        return []
    base, fu = (np.asarray(im.dataobj, dtype=np.float32) for im in imgs[:2])
    labels = np.rint(np.asarray(imgs[2].dataobj)).astype(np.int32)
    n = max(int(labels.max()), max(f.id for f in findings))
    by_id = {f.id: f.kind for f in findings}
    kinds = [by_id.get(i, "new") for i in range(1, n + 1)]
    window = panel_window(fu)  # one window for every lesion's image (computed once, not per lesion)
    out_dir = folder / "key_images"
    out = []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for f in findings:
        sel = labels == f.id
        if not sel.any():
            continue
        (panel,) = lesion_panels(base, fu, labels, kinds, [tuple(np.argwhere(sel).mean(0))], None, max_images=1,
                                 window=window)
        out_dir.mkdir(exist_ok=True)
        rel = f"key_images/lesion_{f.id}.png"
        plt.imsave(folder / rel, panel.pixels)
        out.append(KeyImage(rel, f"Lesion {f.id} ({kind_labels.get(f.kind, f.kind).lower()}): baseline | "
                                 "follow-up | lesion", f.id, ("R", "A")))
    return out
