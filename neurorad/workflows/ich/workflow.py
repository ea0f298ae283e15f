"""The ``ich`` workflow class: requirements, run, clinical wording, review form, report sections."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from neurorad.clinical import ich as rules
from neurorad.errors import InputError
from neurorad.image.ct import hours_between
from neurorad.image.nifti import save_nifti
from neurorad.workflows.contract import (
    SCORE_1_5,
    Alarm,
    Choice,
    Finding,
    FormField,
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
    format_value,
)

SEG_CHOICES = (Choice("accept", "segmentation accepted"), Choice("reject", "segmentation rejected"))

#: quantities that describe the pair (reported only when both segmentations are accepted)
PAIR_QUANTITIES = ("prior_haematoma_volume", "prior_sr_index", "prior_diameter_ap", "prior_diameter_lr",
                   "prior_diameter_si", "prior_axis_type", "volume_change", "volume_change_percent", "expansion",
                   "length_change_ap", "length_change_lr", "length_change_si", "direction_change", "centre_shift",
                   "centre_shift_axial", "centre_shift_coronal", "centre_shift_sagittal", "obvious_change",
                   "sr_index_change", "interval_hours")


class ICHWorkflow(Workflow):
    """Intracerebral haemorrhage on non-contrast CT (PAPERS.md D)."""

    name = "ich"
    version = "0.1.0"
    title = "Intracerebral haemorrhage on non-contrast CT"
    description = ("Haematoma volume, shape regularity (SR index), AP/LR/SI diameters and axis type; with a prior CT "
                   "8-72 h earlier: expansion (>= 6 mL or >= 33 %), length and direction change, centre movement.")
    requirements = Requirements((
        SeriesRole("ct", ("CT_HEAD",), ("CT",), description="non-contrast head CT (current)"),
        SeriesRole("prior_ct", ("CT_HEAD",), ("CT",), prior=1, required=False,
                   description="earlier non-contrast head CT of the same patient (8-72 h before)"),
    ))
    finding_kinds = {"haematoma": "Haematoma (current CT)", "prior_haematoma": "Haematoma (prior CT)"}
    review_form = ReviewForm(
        fields=(SCORE_1_5,
                FormField("current_segmentation", "Haematoma segmentation on the current CT", "choice", SEG_CHOICES),
                FormField("prior_segmentation", "Haematoma segmentation on the prior CT", "choice", SEG_CHOICES,
                          required=False, help="only for a pair; pair measurements need both accepted")),
        allow_missed=False)
    viewer = ViewerLayout((Panel("Current CT (haematoma outlined)", "ct", overlay=True), Panel("Prior CT", "prior_ct")),
                          {"haematoma": "#ff3030", "prior_haematoma": "#ffa500"})
    engines = {"classical": "blood window 45-90 HU inside the CT brain mask, calcification and skull-rim exclusions",
               "unet2d": "learned starter model ich-unet2d (2D U-Net, 2 mm grid; trained on synthetic ICH CT "
                         "phantoms, card: synthetic, validate locally)"}
    #: ``--engine`` also takes a site's model: a registry name[@version], a model folder or nnunet:FOLDER
    engine_models = True

    # ------------------------------------------------------------------------------------ run
    def run(self, inputs: WorkflowInputs, out_dir: Path, progress: Progress) -> WorkflowResult:
        from neurorad.workflows.ich.pipeline import compare, process_scan

        engine = str(inputs.options.get("engine") or inputs.options.get("model") or "classical")
        from neurorad.segment.haematoma import engine_record

        model = engine_record(engine)  # a learned engine is loaded (and its hashes checked) before any work
        space = str(inputs.options.get("space") or "template")
        stage = str(inputs.options.get("measure_stage") or "linear")
        alarms: list[Alarm] = []
        prior_path = inputs.series.get("prior_ct")
        progress(0.02, "current CT")
        current = process_scan(inputs.path("ct"), "ct", engine, space, measure_stage=stage)
        prior = None
        if prior_path is not None:
            progress(0.45, "prior CT")
            prior = process_scan(prior_path, "prior_ct", engine, space, measure_stage=stage)
            if (prior.info.patient_key and current.info.patient_key
                    and prior.info.patient_key != current.info.patient_key):
                raise InputError("--ct and --prior-ct belong to different patients (PatientID/birth date differ): "
                                 "a pair must be one patient's CTs", prior_path)
        progress(0.85, "measurements")
        interval = hours_between(prior.info, current.info) if prior is not None else None
        if prior is not None:
            warn = rules.interval_warning(interval)
            if warn:
                alarms.append(Alarm("ich_interval", warn))
        if space == "native":
            alarms.append(Alarm("ich_native_space", "measured on the CT grid without template registration: "
                                "diameters and centre movement are not in template space", "info"))
        for scan in filter(None, (prior, current)):
            if scan.info.slice_thickness_mm and scan.info.slice_thickness_mm > 5.0:
                alarms.append(Alarm("ich_thick_slices", f"{scan.role}: {scan.info.slice_thickness_mm:g} mm slices; "
                                    "diameters along SI are coarse", "info"))
        pair = compare(prior, current, interval) if prior is not None else None

        files: dict[str, str] = {}
        save_nifti(current.ct.with_data(np.round(current.ct.data).astype(np.int16)), out_dir / "ct.nii.gz")
        save_nifti(current.haematoma, out_dir / "haematoma_mask.nii.gz", dtype=np.uint8)
        volumes = {"ct": "ct.nii.gz"}
        if prior is not None:
            save_nifti(prior.ct.with_data(np.round(prior.ct.data).astype(np.int16)), out_dir / "prior_ct.nii.gz")
            save_nifti(prior.haematoma, out_dir / "prior_haematoma_mask.nii.gz", dtype=np.uint8)
            volumes["prior_ct"] = "prior_ct.nii.gz"
            files["prior_mask"] = "prior_haematoma_mask.nii.gz"

        quantities = _scan_quantities(current, "")
        findings = [_finding(1, "haematoma", current, label=1)]
        if pair is not None:
            quantities += _pair_quantities(pair)
            findings.append(_finding(2, "prior_haematoma", prior, label=None))

        key_images = self._figures(current, prior, pair, out_dir)
        steps = [{"name": f"{s.role}:{k}", "seconds": round(v, 3)} for s in filter(None, (prior, current))
                 for k, v in s.seconds.items()]
        extra: dict[str, Any] = {
            "space": current.space,
            "template": "MNI152 ICBM 2009a non-linear symmetric (nilearn), standing in for 2009c",
            "registration_dice": {s.role: s.registration_dice for s in filter(None, (prior, current))},
            "location_fractions": {s.role: s.location_fractions for s in filter(None, (prior, current))},
            "timepoints": ["prior", "current"] if prior is not None else ["current"],
            "centre_mm": {s.role: s.shape.centre_mm for s in filter(None, (prior, current))},
        }
        if pair is not None and pair.movement is not None:
            extra["centre_vector_mm"] = list(pair.movement.vector_mm)
        result = WorkflowResult(
            self.name, self.version, findings=findings, quantities=quantities, alarms=alarms, key_images=key_images,
            mask="haematoma_mask.nii.gz", reference_role="ct", volumes=volumes, files=files, extra=extra,
            provenance=Provenance(models=[ModelRef(model["name"], model["version"], model["sha256"], model["kind"])],
                                  steps=steps,
                                  parameters={"engine": engine, "space": space, "min_dice": 0.93,
                                              "measure_stage": stage,
                                              "direction_tolerance_mm": rules.DIRECTION_TOLERANCE_MM,
                                              "expansion": ">= 6 mL or >= 33 %",
                                              "registration": _registration_settings(space)}))
        nomo = self._nomogram_risk(result, inputs.options)
        if nomo is not None:
            result.extra["nomogram"] = nomo
        result.summary = self.conclusion(result)
        return result

    def _figures(self, current, prior, pair, out_dir: Path) -> list[KeyImage]:  # noqa: ANN001
        from neurorad.image.geometry import reorient
        from neurorad.workflows.ich.figures import axis_figure, centre_arrow_figure

        keys: list[KeyImage] = []
        for scan, fid in ((current, 1), (prior, 2)):
            if scan is None:
                continue
            name = "axis_current.png" if fid == 1 else "axis_prior.png"
            axis_figure(reorient(scan.ct, "RAS"), reorient(scan.haematoma, "RAS"), scan.shape.diameters,
                        rules.axis_type(scan.shape.diameters), out_dir / name,
                        "Current CT" if fid == 1 else "Prior CT")
            # axial beside coronal: no single PatientOrientation fits (the SC gets an empty one)
            keys.append(KeyImage(name, f"{'Current' if fid == 1 else 'Prior'} CT: slices of maximum haematoma "
                                 "area with AP/LR (axial) and SI (coronal) extents", fid, ()))
        if pair is not None and pair.movement is not None and current.space == "template":
            from neurorad.preprocess.template_registration import template

            centre_arrow_figure(template(1.0)[0], prior.shape.centre_mm, current.shape.centre_mm,
                                out_dir / "centre_movement.png")
            keys.append(KeyImage("centre_movement.png", "Haematoma centre movement on the MNI152 template", 1, ()))
        return keys

    @staticmethod
    def _nomogram_risk(result: WorkflowResult, options: dict[str, Any]) -> dict[str, Any] | None:
        """Risk of poor outcome from the site's fitted nomogram (``options['nomogram']`` or
        ``$NEURORAD_ICH_NOMOGRAM``; fitted with ``neurorad cohort fit``), when configured."""
        path = options.get("nomogram") or os.environ.get("NEURORAD_ICH_NOMOGRAM")
        if not path:
            return None
        from neurorad.cohort.model import Nomogram

        model = Nomogram.load(path)
        values: dict[str, Any] = {q.name: q.value for q in result.quantities}
        # result.json names -> the cohort columns of the simulated/fitted ICH model
        for src, dst in (("haematoma_volume", "volume_ml"), ("diameter_ap", "diameter_ap_mm"),
                         ("length_change_lr", "length_change_lr_mm")):
            if src in values:
                values.setdefault(dst, values[src])
        if isinstance(values.get("expansion"), bool):
            values["expansion"] = int(values["expansion"])
        values.update(options.get("clinical") or {})
        missing = [p for p in model.predictors if values.get(p) is None]
        if missing:
            return {"model": str(path), "missing": missing}
        return {"model": str(path), "risk": model.predict_one(values), "outcome": model.outcome,
                "label": model.label}

    # --------------------------------------------------------------------------- clinical rules
    def conclusion(self, result: WorkflowResult, review: Review | None = None) -> str:
        q = {x.name: x.value for x in result.quantities}
        if "haematoma_volume" not in q:
            return str(result.extra.get("withheld") or "No haematoma measurements reported.")
        v = q["haematoma_volume"]
        if not v:
            return "No intraparenchymal haematoma detected on the current CT."
        loc = next((f.location for f in result.findings if f.id == 1), "")
        s = (f"Haematoma {v:.1f} mL{f' ({loc})' if loc else ''}, SR index {format_value(q.get('sr_index'), 3)}, "
             f"axis {q.get('axis_type')}.")
        if "expansion" in q and isinstance(q.get("volume_change"), (int, float)):
            pct = q.get("volume_change_percent")
            s += (f" Since the prior CT: {q['volume_change']:+.1f} mL"
                  + (f" ({pct:+.0f} %)" if isinstance(pct, (int, float)) else "")
                  + f": {'HAEMATOMA EXPANSION' if q['expansion'] else 'no haematoma expansion'}"
                  f"; centre moved {format_value(q.get('centre_shift'), 1)} mm; "
                  f"direction change {q.get('direction_change')}.")
        elif result.extra.get("withheld"):
            s += " " + str(result.extra["withheld"])
        return s

    def reviewed(self, result: WorkflowResult, review: Review) -> WorkflowResult:
        """Per-scan acceptance: the pair's measurements are reported only when both segmentations are
        accepted; a rejected current segmentation withholds every measurement."""
        if not review.accepted:
            return result
        out = replace(result, quantities=list(result.quantities), findings=list(result.findings),
                      extra=dict(result.extra))
        cur = review.values.get("current_segmentation") or "accept"
        pri = review.values.get("prior_segmentation") or ("accept" if "prior" in result.extra.get("timepoints", [])
                                                          else None)
        if cur == "reject":
            out.quantities, out.findings = [], []
            out.extra["withheld"] = "The reader rejected the current CT's haematoma segmentation: no measurements."
        elif pri == "reject":
            out.quantities = [q for q in out.quantities if q.name not in PAIR_QUANTITIES]
            out.findings = [f for f in out.findings if f.kind != "prior_haematoma"]
            out.extra["withheld"] = ("The reader rejected the prior CT's segmentation: expansion and change "
                                     "measurements are not reported.")
        out.summary = self.conclusion(out, review)
        return out

    # ------------------------------------------------------------------------------------ report
    def report_sections(self, result: WorkflowResult, review: Review | None) -> list[ReportSection]:
        q = {x.name: x for x in result.quantities}
        sections = [ReportSection("Findings", (self.conclusion(result, review),))]
        if "haematoma_volume" not in q:
            return sections
        scans = [("Current CT", "")] + ([("Prior CT", "prior_")] if "prior_haematoma_volume" in q else [])
        rows = []
        for label, name, unit in (("Volume", "haematoma_volume", "mL"), ("SR index", "sr_index", ""),
                                  ("AP diameter (length)", "diameter_ap", "mm"),
                                  ("LR diameter (width)", "diameter_lr", "mm"),
                                  ("SI diameter (height)", "diameter_si", "mm"), ("Longitudinal axis", "axis_type", ""),
                                  ("Location", "location", ""), ("Intraventricular extension", "ivh", "")):
            vals = []
            for _, prefix in scans:
                key = (prefix + name) if not (prefix and name == "haematoma_volume") else "prior_haematoma_volume"
                vals.append(format_value(q[key].value, 3 if name == "sr_index" else 1) if key in q else "-")
            rows.append((label, *vals, unit))
        sections.append(ReportSection("Measurements (template space; volume on the CT grid)", table=ReportTable(
            ("Measurement", *[s for s, _ in scans], "Unit"), tuple(rows)),
            figures=tuple(k.path for k in result.key_images if k.path.startswith("axis_"))))
        if "expansion" in q:
            he = q["expansion"].value
            change_rows = tuple((lab, format_value(q[n].value, 1) if n in q else "-", u) for lab, n, u in (
                ("Volume change", "volume_change", "mL"), ("Volume change", "volume_change_percent", "%"),
                ("AP length change", "length_change_ap", "mm"), ("LR length change", "length_change_lr", "mm"),
                ("SI length change", "length_change_si", "mm"), ("Direction change", "direction_change", ""),
                ("Centre movement", "centre_shift", "mm"), ("  on the axial plane", "centre_shift_axial", "mm"),
                ("  on the coronal plane", "centre_shift_coronal", "mm"),
                ("  on the sagittal plane", "centre_shift_sagittal", "mm"), ("Obvious change", "obvious_change", ""),
                ("Interval between CTs", "interval_hours", "h")))
            sections.append(ReportSection(
                "Haematoma expansion",
                (f"Haematoma expansion (increase >= 6 mL or >= 33 %): {'YES' if he else 'no'}.",
                 "The published study advises attention to lateral (LR) expansion: LR length change was an independent "
                 "predictor of poor outcome (OR 1.14 per mm)."),
                table=ReportTable(("Change", "Value", "Unit"), change_rows),
                figures=tuple(k.path for k in result.key_images if k.path == "centre_movement.png")))
        nomo = result.extra.get("nomogram")
        if nomo:
            if "risk" in nomo:
                text = (f"Site nomogram ({Path(str(nomo['model'])).name}): predicted risk of {nomo.get('outcome')} "
                        f"{100 * float(nomo['risk']):.0f} %.")
            else:
                why = nomo.get("error") or "missing " + ", ".join(nomo["missing"])
                text = f"Site nomogram configured; not computed: {why}."
            sections.append(ReportSection("Prognostic nomogram", (text,)))
        sections.append(ReportSection("Method", (
            f"Haematoma segmented automatically on each CT ({_engine_words(result)}) and reviewed; CTs registered "
            "to the "
            "MNI152 template (nilearn's ICBM 2009a standing in for the paper's 2009c), linear then B-spline, refused "
            "when the registered brain's Dice with the template is < 0.93 after either step. Definitions of the "
            "published paired-CT study (SR index = pi^(1/3)(6V)^(2/3)/A; axis type NL when all diameter ratios lie "
            "within 0.850-1.176).",)))
        return sections


# ---------------------------------------------------------------------------------------- helpers
def _registration_settings(space: str) -> dict[str, Any] | None:
    """The elastix settings of the template registration (provenance), None without registration."""
    if space != "template":
        return None
    from neurorad.preprocess.template_registration import DEFAULTS

    return {**DEFAULTS, "spacing_mm": 3.0, "steps": "rigid + affine (QC), then B-spline (QC)"}


def _engine_words(result: WorkflowResult) -> str:
    """The segmentation engine in the report's words (a learned model is named with its version)."""
    m = result.provenance.models[0] if result.provenance and result.provenance.models else None
    if m is None or m.kind == "classical":
        return "classical HU engine"
    return f"learned model {m.name} {m.version}, validated on synthetic phantoms only unless the site validated it"


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def _scan_quantities(scan, prefix: str) -> list[Quantity]:  # noqa: ANN001
    sh = scan.shape
    d = sh.diameters
    vol_name = "prior_haematoma_volume" if prefix else "haematoma_volume"
    out = [
        Quantity(vol_name, _r(scan.volume_ml), "mL", "Haematoma volume", ("118565006", "SCT", "Volume")),
        Quantity(prefix + "sr_index", _r(sh.sr_index, 4), "1", "Shape regularity index pi^(1/3)(6V)^(2/3)/A"),
        Quantity(prefix + "diameter_ap", _r(d["ap"], 1), "mm", "Anteroposterior diameter (length)"),
        Quantity(prefix + "diameter_lr", _r(d["lr"], 1), "mm", "Left-right diameter (width)"),
        Quantity(prefix + "diameter_si", _r(d["si"], 1), "mm", "Superior-inferior diameter (height)"),
        Quantity(prefix + "axis_type", rules.axis_type(d), "", "Longitudinal axis type (AP/LR/SI/NL)"),
    ]
    if not prefix:
        out.append(Quantity("surface_area", _r(sh.surface_area_mm2, 1), "mm2", "Haematoma surface area"))
        if scan.location:
            out.append(Quantity("location", scan.location, "", "Location (deep/lobar/infratentorial, AAL)"))
        if scan.ivh_ml is not None:
            out.append(Quantity("ivh", bool(scan.ivh_ml >= 0.5), "", "Intraventricular extension"))
    return out


def _pair_quantities(pair) -> list[Quantity]:  # noqa: ANN001
    he = pair.expansion
    mv = pair.movement
    out = _scan_quantities(pair.prior, "prior_") + [
        Quantity("volume_change", _r(he.change_ml), "mL", "Haematoma volume change"),
        Quantity("volume_change_percent", _r(he.change_percent, 1), "%", "Relative volume change"),
        Quantity("expansion", he.expansion, "", "Haematoma expansion (>= 6 mL or >= 33 %)"),
        Quantity("length_change_ap", _r(pair.changes_mm["ap"], 1), "mm", "AP length change"),
        Quantity("length_change_lr", _r(pair.changes_mm["lr"], 1), "mm", "LR length change"),
        Quantity("length_change_si", _r(pair.changes_mm["si"], 1), "mm", "SI length change"),
        Quantity("direction_change", pair.direction, "", "Direction change (axis of largest length change)"),
        Quantity("obvious_change", pair.obvious, "",
                 "Obvious change (length and centre > 10 mm, or axis type changed)"),
        Quantity("sr_index_change", _r(pair.current.shape.sr_index - pair.prior.shape.sr_index, 4), "1",
                 "SR index change"),
        Quantity("interval_hours", _r(pair.interval_h, 1), "h", "Time from prior to current CT"),
    ]
    if mv is not None:
        out += [Quantity("centre_shift", _r(mv.distance_mm, 2), "mm", "Haematoma centre movement"),
                Quantity("centre_shift_axial", _r(mv.axial_mm, 2), "mm", "Centre movement on the axial plane"),
                Quantity("centre_shift_coronal", _r(mv.coronal_mm, 2), "mm", "Centre movement on the coronal plane"),
                Quantity("centre_shift_sagittal", _r(mv.sagittal_mm, 2), "mm", "Centre movement on the sagittal plane")]
    return out


def _finding(fid: int, kind: str, scan, label: int | None) -> Finding:  # noqa: ANN001
    from neurorad.quantify.morphology import largest_region_centroid_mm

    c = largest_region_centroid_mm(np.asarray(scan.haematoma.data) > 0, scan.haematoma.affine)
    return Finding(fid, kind, _r(scan.volume_ml), label, scan.location, c, (
        Quantity("sr_index", _r(scan.shape.sr_index, 4), "1"),
        Quantity("axis_type", rules.axis_type(scan.shape.diameters), "")))
