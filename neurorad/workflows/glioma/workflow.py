"""Glioma volumetry with radiologist QA and a three-time-point comparison: the ``glioma`` workflow
(EASE, PAPERS.md A).

Steps (``run``), each recorded with its seconds in the result's provenance:

1. ``load``       T1, post-contrast T1 (T1c), T2 and T2-FLAIR (NIfTI or DICOM series), RAS+; 2D series
                  with slices thicker than 5 mm are refused (5 mm axial T2/FLAIR are routine in glioma
                  follow-up; EASE used 3D T1c/FLAIR where available).
2. ``brain``      brain extraction on T1c (deepbet by default; HD-BET as the paper is an option).
3. ``register``   rigid registration of T1, T2 and FLAIR to T1c (elastix, mutual information on the
                  brain's box; A2), resampled onto the T1c grid.
4. ``bias``       N4 of every sequence inside the brain (the paper added N4 and found better masks).
5. ``segment``    the chosen engine (``--engine``): ``classical`` (multi-contrast thresholds relative to
                  normal brain, :mod:`neurorad.segment.glioma_classical`; the default), ``unet3d`` (the
                  shipped starter 3D model), or a site's model: a registry ``name[@version]``, a model
                  folder or ``nnunet:FOLDER`` (an nnU-Net v2 results folder), its labels matched to the
                  three regions by name (:mod:`neurorad.segment.glioma_learned`).
6. ``measure``    regional volumes (mL), connected components with their volumes (EASE's sanity
                  check against unnoticed false positives), the automatic bidimensional RANO
                  product (:mod:`neurorad.quantify.rano`), the 8 volumetric ratios of the
                  radiogenomics classifier (:func:`neurorad.genomics.radiomics.ratio_features`).
7. ``compare``    change against the accepted results of the two previous studies (>= 40 % flagged,
                  :mod:`neurorad.clinical.glioma`), only within one compatible software version.
8. ``files``      the co-registered sequences, the class map, the component map and key images.

Review: ACCEPTABLE/UNACCEPTABLE + 1-5 (Perfect..Terrible) as EASE, the reader's 2D-based assessment
recorded first (progression / stable / response), per-component keep/discard, comment.
Validation so far is on synthetic phantoms only (bench/glioma.py).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from neurorad.clinical.glioma import (
    ASSESSMENTS,
    PROGRESSION_VOLUME_INCREASE,
    compare_volume,
    needs_second_reader,
    volume_assessment,
)
from neurorad.errors import InputError, ProcessingError
from neurorad.image.nifti import save_nifti
from neurorad.image.volume import Volume
from neurorad.preprocess.harmonize import slice_thickness_mm
from neurorad.segment.glioma_learned import ENGINES as LEARNED_ENGINES
from neurorad.segment.glioma_learned import engine_record as learned_engine_record
from neurorad.workflows._subject import check_slices, key_image, load_series
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

SEQUENCES = ("t1c", "t1", "t2", "flair")
REGIONS = {1: "necrosis", 2: "non_enhancing", 3: "enhancing"}
REGION_TEXT = {"enhancing": "Enhancing tumour", "non_enhancing": "Non-enhancing T2-FLAIR hyperintensity",
               "necrosis": "Necrosis / non-enhancing core"}

ASSESSMENT_2D = FormField(
    "assessment_2d", "Your 2D-based assessment (recorded before the volumes are shown)", "choice",
    tuple(Choice(a, a) for a in ASSESSMENTS), required=False,
    help="EASE reading protocol: record the 2D assessment first; when the volume-based assessment differs, "
         "a second radiologist reads the study independently.")


#: NMI floor of the registration check (bench/glioma_nmi.py)
REGISTRATION_MIN_NMI = 1.005
#: the grid (mm) the sequences are registered on (finer axes are coarsened to it)
REGISTRATION_SPACING_MM = 2.0
#: 2D series with slices of this thickness or more are refused: 5 mm (routine axial T2/FLAIR) passes, 6 mm not
MAX_SLICE_THICKNESS_MM = 5.5
#: slices this far apart or more are refused; a NIfTI (no thickness in it) with slices 5.5-7 mm apart is taken as
#: 5 mm slices with a gap and accepted with a warning, as the same series sent as DICOM is (as the MS workflow's
#: ``max_slice_spacing_mm``)
MAX_SLICE_SPACING_MM = 7.0


def _volume_ml(mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> float:
    return float(mask.sum()) * float(np.prod(spacing_mm)) / 1000.0


class GliomaWorkflow(Workflow):
    """Glioma volumetry (EASE) on T1, T1c, T2 and FLAIR; see the module docstring."""

    name = "glioma"
    version = "0.2.0"  # 0.2.0: N4 on zero-bordered sequences and the per-case FLAIR cut (volumes changed)
    title = "Glioma volumetry (EASE)"
    description = ("Co-registers T1, T1c, T2 and FLAIR, extracts the brain, corrects bias and segments the "
                   "tumour into enhancing tumour, non-enhancing T2-FLAIR hyperintensity and necrosis; reports "
                   "volumes, components, the bidimensional product and the change against two earlier studies.")
    requirements = Requirements((
        SeriesRole("t1c", ("T1C",), ("MR",), prefer_3d=True, description="post-contrast T1 (reference grid)"),
        SeriesRole("t1", ("T1",), ("MR",), prefer_3d=True, description="pre-contrast T1"),
        SeriesRole("t2", ("T2",), ("MR",), description="T2-weighted"),
        SeriesRole("flair", ("FLAIR",), ("MR",), prefer_3d=True, description="T2-FLAIR"),
    ))
    finding_kinds = {"component": "Tumour component"}
    counts_reader_marked = True  # conclusion() names the reader's missed-finding markers
    review_form = ReviewForm(fields=(SCORE_1_5, ASSESSMENT_2D), allow_missed=True,
                             timepoints=("t-2", "t-1", "t"))
    viewer = ViewerLayout((
        Panel("FLAIR (registered to T1c, bias-corrected)", "flair", overlay=True),
        Panel("Post-contrast T1 (bias-corrected)", "t1c", overlay=True),
        Panel("T2 (registered to T1c)", "t2"),
        Panel("Pre-contrast T1 (registered to T1c)", "t1"),
        # EASE's three-time-point reading: the accepted priors' FLAIR on this study's grid
        Panel("FLAIR t-1 (accepted prior, registered to this T1c)", "flair_t-1", optional=True),
        Panel("FLAIR t-2 (accepted prior, registered to this T1c)", "flair_t-2", optional=True),
    ), kind_colours={"component": "#ff4040"})
    reference_quantity = "whole_tumour_volume"
    engines = {"classical": "multi-contrast thresholds relative to normal brain (baseline; synthetic validation)",
               **LEARNED_ENGINES}
    #: ``--engine`` also takes a site's model: a registry name[@version], a model folder or nnunet:FOLDER
    engine_models = True

    # ----------------------------------------------------------------------------------------- run
    def run(self, inputs: WorkflowInputs, out_dir: Path, progress: Progress) -> WorkflowResult:
        opts = inputs.options
        engine = str(opts.get("engine") or next(iter(self.engines)))
        # a learned engine is loaded (and its file hashes checked) before any work: a wrong name or a changed
        # model fails in a second, not after registration
        model = (ModelRef("glioma-classical", self.version) if engine == "classical"
                 else ModelRef(**learned_engine_record(engine)))
        steps: list[dict[str, Any]] = []

        def step(name: str, t0: float, **kw: Any) -> None:
            steps.append({"name": name, "seconds": round(time.perf_counter() - t0, 3), **kw})

        t = time.perf_counter()
        progress(0.02, "load T1, T1c, T2, FLAIR")
        raw = {s: load_series(inputs.path(s), s.upper()) for s in SEQUENCES}
        slice_warnings: list[str] = []
        thickness = {s: check_slices(v, s.upper(), MAX_SLICE_THICKNESS_MM, MAX_SLICE_SPACING_MM, slice_warnings)
                     for s, v in raw.items()}
        # where each thickness came from: a NIfTI keeps only the spacing, an upper bound on the thickness
        thickness_source = {s: slice_thickness_mm(v)[1] for s, v in raw.items()}
        _same_patient(raw)
        step("load", t)
        t = time.perf_counter()
        progress(0.1, "brain extraction")
        ref = raw["t1c"]
        brain, brain_engine = self._brain(ref, opts)
        if _volume_ml(brain, ref.spacing_mm) < 300.0:
            raise ProcessingError(f"brain extraction found only {_volume_ml(brain, ref.spacing_mm):.0f} mL of brain "
                                  "on T1c; check the series (is it a head MR?)")
        _check_fov(raw, ref, brain)
        step("brain", t, engine=brain_engine)
        t = time.perf_counter()
        progress(0.25, "register T1, T2, FLAIR to T1c")
        from neurorad.image.geometry import crop_to_mask, resample_to_spacing
        from neurorad.preprocess.registration import RegistrationLimits, register
        from neurorad.preprocess.transforms import resample

        # mutual information on the brain's box + margin (the skull and neck add nothing but time);
        # NMI floor 1.005 (bench/glioma_nmi.py): on the tuning phantoms correct pairs scored 1.034-1.155 and
        # pairs moved 8 mm or 10 deg 1.008-1.026, so no absolute floor separates them across 1-5 mm slices
        # and noise (noisy 1 mm pairs scored 1.016 in the workflow's own check); the floor only catches a
        # registration that lost the head, the limits and the NMI gain catch the rest
        fixed = crop_to_mask(ref, ref.with_data(brain.astype(np.uint8)), margin_mm=10.0)
        # a rigid fit between sequences of one session needs no finer grid than 2 mm (sub-millimetre
        # agreement with the full-resolution fit on a 1 mm phantom; 12 instead of 34 CPU s per sequence)
        coarse = tuple(max(float(sp), REGISTRATION_SPACING_MM) for sp in fixed.spacing_mm)
        if coarse != tuple(float(sp) for sp in fixed.spacing_mm):
            fixed = resample_to_spacing(fixed, coarse)
        limits = opts.get("registration_limits") or RegistrationLimits(min_nmi=REGISTRATION_MIN_NMI)
        backend = str(opts.get("registration_backend", "elastix"))
        reg = {"t1c": ref}
        reg_nmi = {}
        for s in ("t1", "t2", "flair"):
            try:
                r = register(fixed, raw[s], "rigid", backend, limits=limits)
            except ProcessingError as err:
                raise ProcessingError(f"registration of {s.upper()} to T1c failed: {err}") from err
            reg[s] = resample(raw[s], ref, r.transform, "linear")
            reg_nmi[s] = round(float(r.nmi_after), 4)
        step("register", t, backend=backend)
        t = time.perf_counter()
        progress(0.45, "N4 bias correction")
        cor = self._bias(reg, brain, opts)
        kept = sorted(k for k in cor if cor[k] is reg[k]) if not opts.get("skip_bias") else []
        step("bias", t, bias_kept=kept)  # sequences left uncorrected: N4 diverged (n4_plausible)
        t = time.perf_counter()
        progress(0.65, f"segment ({engine})")
        from neurorad.segment.glioma_classical import GliomaParams, segment_glioma

        params = opts.get("classical_params") or GliomaParams()
        if engine == "classical":
            seg = segment_glioma(cor["t1"].data, cor["t1c"].data, cor["t2"].data, cor["flair"].data, brain,
                                 ref.spacing_mm, params)
        else:
            from neurorad.segment.glioma_learned import segment_glioma_learned

            seg = segment_glioma_learned(cor, brain, engine, params)
        step("segment", t, engine=engine)
        t = time.perf_counter()
        progress(0.8, "measure")
        findings = self._findings(seg, ref)
        from neurorad.quantify.rano import bidimensional_mm

        bi = bidimensional_mm(seg.classes > 0, ref.spacing_mm)
        bi_enh = bidimensional_mm(seg.classes == 3, ref.spacing_mm)
        step("measure", t)
        t = time.perf_counter()
        progress(0.9, "files and key images")
        for s in SEQUENCES:
            save_nifti(cor[s], out_dir / f"{s}.nii.gz")
        save_nifti(ref.with_data(seg.components.astype(np.int16)), out_dir / "tumour_components.nii.gz")
        save_nifti(ref.with_data(seg.classes), out_dir / "tumour_classes.nii.gz")
        save_nifti(ref.with_data(brain.astype(np.uint8)), out_dir / "brain_mask.nii.gz")
        key_images = []
        if findings:
            c = findings[0].centroid_mm
            assert c is not None
            key_image(cor["flair"], seg.classes > 0, c, out_dir / "key_flair.png", (255, 64, 64))
            key_image(cor["t1c"], seg.classes == 3, c, out_dir / "key_t1c.png", (255, 212, 0))
            key_images = [KeyImage("key_flair.png", "FLAIR through the largest component, whole tumour in red", 1),
                          KeyImage("key_t1c.png", "T1c through the largest component, enhancing tumour in yellow", 1)]
        step("files", t)
        t = time.perf_counter()
        prior_volumes = {}
        for label, vol in prior_flairs(inputs, fixed, ref, backend, limits).items():
            save_nifti(vol, out_dir / f"flair_{label}.nii.gz")
            prior_volumes[f"flair_{label}"] = f"flair_{label}.nii.gz"
        step("priors", t, shown=sorted(prior_volumes))
        alarms = []
        if seg.n_components > 1:
            alarms.append(Alarm("components", f"{seg.n_components} separate tumour components: check each for a "
                                              "false positive (EASE's sanity check)", "info"))
        alarms += update_alarms(opts.get("volumes_incompatible_before"), self.version)
        alarms += [Alarm("slice_gap", w) for w in slice_warnings]
        result = WorkflowResult(
            self.name, self.version, findings=findings, key_images=key_images, alarms=alarms,
            mask="tumour_components.nii.gz", reference_role="t1c",
            volumes={**{s: f"{s}.nii.gz" for s in SEQUENCES}, **prior_volumes},
            files={"classes": "tumour_classes.nii.gz (1 necrosis, 2 non-enhancing, 3 enhancing)",
                   "brain_mask": "brain_mask.nii.gz"},
            extra={"engine": engine, "brain_engine": brain_engine, "slice_thickness_mm": thickness,
                   "slice_thickness_source": thickness_source,
                   "registration_nmi": reg_nmi, "study_date": inputs.study_dates.get("t1c"),
                   "bidimensional": {"whole_tumour": bi.__dict__, "enhancing": bi_enh.__dict__},
                   "priors": self._priors(inputs),
                   "validation": "synthetic phantoms only (bench/glioma.py)"})
        result.provenance.models.append(model)
        result.provenance.steps.extend(steps)
        result.provenance.parameters = {"engine": engine, **params.to_dict()}
        return add_trend_figure(self.recompute(result), out_dir)

    # ------------------------------------------------------------------------------------ steps
    @staticmethod
    def _brain(ref: Volume, opts: dict[str, Any]) -> tuple[np.ndarray, str]:
        given = opts.get("brain_mask")  # a mask on the T1c grid: a Volume, an array or a NIfTI path
        if isinstance(given, str | Path):
            from neurorad.image.nifti import load_nifti

            given = load_nifti(given)
        if given is not None:
            mask = np.asarray(given.data if isinstance(given, Volume) else given) > 0
            if mask.shape != ref.spatial_shape:
                raise InputError(f"brain mask shape {mask.shape} differs from T1c {ref.spatial_shape}")
            return mask, "given"
        from neurorad.preprocess.brain_extraction import extract_brain

        engine = str(opts.get("brain_engine", "deepbet"))
        return np.asarray(extract_brain(ref, engine).data) > 0, engine

    @staticmethod
    def _bias(vols: dict[str, Volume], brain: np.ndarray, opts: dict[str, Any]) -> dict[str, Volume]:
        if opts.get("skip_bias"):
            return dict(vols)
        from concurrent.futures import ThreadPoolExecutor

        from neurorad.preprocess.bias import n4_bias_correct

        mask = vols["t1c"].with_data(brain.astype(np.uint8))

        def n4(item: tuple[str, Volume]) -> tuple[str, Volume]:
            # SimpleITK releases the GIL: two sequences at a time on 2 cores
            out = n4_bias_correct(item[1], mask, shrink_factor=4, iterations=(25, 25, 15))
            return item[0], out if n4_plausible(item[1], out, brain) else item[1]

        with ThreadPoolExecutor(2) as pool:
            return dict(pool.map(n4, vols.items()))

    @staticmethod
    def _findings(seg: Any, ref: Volume) -> list[Finding]:
        from scipy import ndimage as ndi

        out = []
        voxel_ml = float(np.prod(ref.spacing_mm)) / 1000.0
        if seg.n_components == 0:
            return out
        idx = np.arange(1, seg.n_components + 1)
        centres = ndi.center_of_mass(np.ones(seg.components.shape, np.uint8), seg.components, idx)
        for i, c in zip(idx, centres, strict=True):
            comp = seg.components == i
            vols = {name: float((comp & (seg.classes == lab)).sum()) * voxel_ml for lab, name in REGIONS.items()}
            world = ref.voxel_to_world(np.asarray(c)[None, :])[0]
            out.append(Finding(int(i), "component", round(sum(vols.values()), 4), int(i), "",
                               tuple(float(x) for x in world),
                               tuple(Quantity(f"{name}_volume", round(v, 4), "mL", REGION_TEXT[name])
                                     for name, v in vols.items())))
        return out

    def _priors(self, inputs: WorkflowInputs) -> list[dict[str, Any]]:
        """Earlier results (newest first) with whether they may be compared: same major version, and
        not older than the site's ``volumes_incompatible_before`` option (set when ``neurorad
        reference-set compare`` found an update INCOMPATIBLE: EASE refuses comparisons across it)."""
        from packaging.version import InvalidVersion, Version

        boundary = inputs.options.get("volumes_incompatible_before")

        def older(v: str) -> bool:
            try:
                return bool(boundary) and Version(v) < Version(str(boundary))
            except InvalidVersion:
                return True  # an unreadable version is never compared across a declared boundary

        out = []
        for _label, res, review, _folder, was_rejected in previous_studies(inputs):
            if was_rejected:
                out.append({"accepted": False, "whole_tumour_volume": None, "version": res.version,
                            "compatible": False, "date": res.extra.get("study_date")})
                continue
            q = res.quantity("whole_tumour_volume")
            regional = {f"{r}_volume": getattr(res.quantity(f"{r}_volume"), "value", None) for r in REGIONS.values()}
            out.append({"accepted": bool(review is not None and review.accepted),
                        "whole_tumour_volume": None if q is None else q.value, **regional, "version": res.version,
                        "compatible": (res.version.split(".")[0] == self.version.split(".")[0]
                                       and not older(res.version)),
                        "date": res.extra.get("study_date")})
        return out

    # ------------------------------------------------------------------------------ clinical rules
    def recompute(self, result: WorkflowResult) -> WorkflowResult:
        tot = {name: 0.0 for name in REGIONS.values()}
        for f in result.findings:
            for m in f.measurements:
                key = m.name.removesuffix("_volume")
                if key in tot and isinstance(m.value, int | float):
                    tot[key] += float(m.value)
        whole = sum(tot.values())
        q = [Quantity("whole_tumour_volume", round(whole, 4), "mL", "Whole tumour volume"),
             Quantity("enhancing_volume", round(tot["enhancing"], 4), "mL", REGION_TEXT["enhancing"]),
             Quantity("non_enhancing_volume", round(tot["non_enhancing"], 4), "mL", REGION_TEXT["non_enhancing"]),
             Quantity("necrosis_volume", round(tot["necrosis"], 4), "mL", REGION_TEXT["necrosis"]),
             Quantity("component_count", len(result.findings), "1", "Tumour components")]
        bi = (result.extra.get("bidimensional") or {}).get("whole_tumour") or {}
        if bi:
            q += [Quantity("rano_longest_diameter", bi.get("longest_mm"), "mm", "Longest axial diameter (automatic)"),
                  Quantity("rano_perpendicular_diameter", bi.get("perpendicular_mm"), "mm",
                           "Longest perpendicular diameter (automatic)"),
                  Quantity("rano_product", bi.get("product_mm2"), "mm2", "Bidimensional product (automatic)")]
        from neurorad.genomics.radiomics import ratio_features

        # ratios of the radiogenomics classifier: enhancing, oedema-like (non-enhancing), necrosis
        ratios = ratio_features(tot["enhancing"], tot["non_enhancing"], tot["necrosis"]) if whole > 0 else {}
        for k, v in ratios.items():
            q.append(Quantity(f"ratio_{k}", None if not np.isfinite(v) else round(float(v), 6), "1",
                              f"Volumetric ratio {k} (radiogenomics input)"))
        comparisons = []
        priors = result.extra.get("priors") or []
        for label, prior in zip(("t-1", "t-2"), priors, strict=False):
            if not comparable(prior, priors):
                continue
            c = compare_volume(label, float(prior["whole_tumour_volume"]), whole)
            comparisons.append(c)
            suffix = label.replace("-", "")
            q += [Quantity(f"volume_change_{suffix}", round(c.change_ml, 4), "mL", f"Whole tumour change vs {label}"),
                  Quantity(f"volume_change_{suffix}_percent", c.change_percent, "%",
                           f"Whole tumour change vs {label} (% of {label})"),
                  Quantity(f"volume_change_{suffix}_flag", c.flagged, "",
                           f"Change vs {label} reaches {PROGRESSION_VOLUME_INCREASE:.0%} (RANO volume equivalent)")]
        if whole > 0:
            summary = (f"Tumour volume {whole:.1f} mL (enhancing {tot['enhancing']:.1f} mL, non-enhancing "
                       f"{tot['non_enhancing']:.1f} mL, necrosis {tot['necrosis']:.1f} mL) in "
                       f"{len(result.findings)} component(s).")
        else:
            summary = "No tumour segmented."
        for c in comparisons:
            pct = "new" if c.change_percent is None else f"{c.change_percent:+.1f}%"
            summary += (f" Versus {c.label}: {c.change_ml:+.1f} mL ({pct})"
                        + (", flagged." if c.flagged else "."))
        if any(not p.get("accepted") for p in priors):
            summary += (" No volume comparison: the segmentation of an earlier study was not accepted (volumes are "
                        "compared only when all time points are accepted).")
        elif len(comparisons) < len(priors):
            summary += " Comparison withheld for earlier studies measured with an incompatible software version."
        out = replace(result, quantities=q, summary=summary)
        out.extra = {**result.extra, "volume_assessment": volume_assessment(comparisons[0]) if comparisons else None,
                     "measured_summary": summary}
        return out

    def conclusion(self, result: WorkflowResult, review: Review | None = None) -> str:
        # from the measured sentence, not ``summary``: a reviewed result's summary already holds the
        # review's sentences, and the report asks for the conclusion again
        text = str(result.extra.get("measured_summary") or result.summary)
        if review is not None and review.reader_marked:  # tumour the segmentation missed, marked by the reader
            text += " " + self.reader_marked_sentence(review)
        if review is not None and review.accepted:
            a2d = review.values.get("assessment_2d")
            av = result.extra.get("volume_assessment")
            if a2d:
                text += f" 2D assessment: {a2d}."
            if a2d and av:
                text += (f" Volume-based assessment: {av}; "
                         + ("they differ: a second radiologist's independent reading is required."
                            if needs_second_reader(a2d, av) and not review.prior_readings else
                            "they differ." if needs_second_reader(a2d, av) else "they agree."))
            for first in review.prior_readings[:1]:
                f2d = first.values.get("assessment_2d")
                if f2d == a2d:
                    text += f" Second radiologist's independent assessment agrees with the first: consensus {a2d}."
                else:
                    text += (f" The readers differ (first: {f2d or 'none'}, second: {a2d or 'none'}); the assessment "
                             "is uncertain and was discussed between them.")
        return text

    def required_timepoints(self, result: WorkflowResult) -> tuple[str, ...]:
        """EASE's three-time-point reading asks the reader to accept each time point shown: this study
        ("t") and the accepted priors registered to it (``flair_t-1``, ``flair_t-2``); a patient's first
        study shows only "t", so only "t" is required."""
        return tuple(tp for tp in self.review_form.timepoints if tp == "t" or f"flair_{tp}" in result.volumes)

    def second_reader_reason(self, result: WorkflowResult, review: Review) -> str:
        """EASE (PAPERS.md A4): a second radiologist reads the study when the volume-based assessment
        differs from the reader's 2D-based one."""
        a2d, av = review.values.get("assessment_2d"), result.extra.get("volume_assessment")
        if needs_second_reader(a2d, av):
            return f"2D-based assessment {a2d}, volume-based assessment {av}"
        return ""

    def report_sections(self, result: WorkflowResult, review: Review | None) -> list[ReportSection]:
        sections = [ReportSection("Findings", (self.conclusion(result, review),))]
        qs = {q.name: q for q in result.quantities}
        names = ["whole_tumour_volume", "enhancing_volume", "non_enhancing_volume", "necrosis_volume",
                 "component_count", "rano_longest_diameter", "rano_perpendicular_diameter", "rano_product"]
        names += [n for n in qs if n.startswith("volume_change_")]
        sections.append(ReportSection("Measurements", table=ReportTable(
            ("Measurement", "Value", "Unit"),
            tuple((qs[n].description, format_value(qs[n].value), qs[n].unit) for n in names if n in qs))))
        if result.findings:
            sections.append(ReportSection("Components", table=ReportTable(
                ("#", "Volume (mL)", "Enhancing (mL)", "Non-enhancing (mL)", "Necrosis (mL)"),
                tuple((str(f.id), format_value(f.volume_ml),
                       *(format_value(f.measurement(f"{r}_volume").value if f.measurement(f"{r}_volume") else None)
                         for r in ("enhancing", "non_enhancing", "necrosis"))) for f in result.findings))))
        priors = result.extra.get("priors") or []
        if priors:
            sections.append(ReportSection("Time points", (
                "Volumes of this study and the two earlier ones; changes are computed only against accepted "
                "results of a compatible software version.",), table=time_point_table(result, priors)))
        fig = result.extra.get("trend_figure") or {}
        if fig and any(comparable(p, priors) for p in priors):
            now = qs["whole_tumour_volume"].value if "whole_tumour_volume" in qs else None
            note = ("Whole-tumour volume of the compared time points (filled) and of earlier studies not compared "
                    "(hollow); dashed: the 40% progression flag.")
            if now is None or abs(float(now) - float(fig.get("current_ml", -1))) > 0.005:
                note += (f" The current point is the automatic volume ({float(fig.get('current_ml', 0)):.1f} mL), "
                         "before the reader's changes; the table above holds the reviewed volume.")
            sections.append(ReportSection("Volume trend", (note,), figures=(str(fig["path"]),)))
        sections.append(ReportSection("Method", (
            "Rigid registration of T1, T2 and FLAIR to post-contrast T1, brain extraction, N4 bias correction, "
            f"segmentation with the {_engine_words(result)}. Volume changes of 40% or more "
            "(the volume equivalent of RANO's 25% bidimensional change) are flagged; comparisons are made only "
            "between accepted results of one compatible software version. Validated on synthetic phantoms only.",)))
        return sections

    def not_usable_text(self) -> str:
        return ("The automatic tumour segmentation was reviewed and judged not usable (UNACCEPTABLE); no "
                "volumetric assessment is possible for this study. Read the images without the software result.")


def _engine_words(result: WorkflowResult) -> str:
    """The segmentation engine in the report's words (a learned model named with its version)."""
    m = result.provenance.models[0] if result.provenance.models else None
    if m is None or m.kind != "learned":
        return f"{result.extra.get('engine', 'classical')} engine"
    return f"learned model {m.name} {m.version}"


def update_alarms(boundary: str | None, version: str) -> list[Alarm]:
    """EASE's warning in every report after an incompatible update (``neurorad reference-set``)."""
    if not boundary:
        return []
    return [Alarm("version_incompatible", (
        f"Software update: volumes of this version ({version}) are not comparable with results of versions "
        f"before {boundary} (reference-set protocol); re-assess earlier studies with this version before "
        "comparing volumes."), "warning")]


TREND_FIGURE = "volume_trend.png"


def n4_plausible(before: Volume, after: Volume, brain: np.ndarray) -> bool:
    """Whether an N4 correction kept the image's level inside the brain (median within 0.5-2x, under 1 %
    of voxels <= 0). On a held-out bench draw (T2, 3 mm slices) N4 diverged to a median of -0.05; the
    workflow then keeps the uncorrected sequence (the run's provenance lists which: ``bias_kept``)."""
    a, b = np.asarray(before.data)[brain], np.asarray(after.data)[brain]
    if a.size == 0 or not np.isfinite(b).all():
        return False
    ratio = float(np.median(b)) / max(float(np.median(a)), 1e-12)
    return 0.5 <= ratio <= 2.0 and float((b <= 0).mean()) < 0.01


def comparable(prior: dict[str, Any], priors: list[dict[str, Any]]) -> bool:
    """Whether the current volume is compared with ``prior``: EASE compares only when every time point is
    accepted (one rejected study among the previous two blocks the comparison), and only within one
    compatible software version."""
    return (all(p.get("accepted") for p in priors) and bool(prior.get("compatible"))
            and prior.get("whole_tumour_volume") is not None)


def trend_points(result: WorkflowResult) -> list[Any] | None:
    """The volume-trend figure's points (t-2, t-1, t; priors without a volume left out), or None when no
    prior can be compared (not accepted or another software version): nothing to plot."""
    from neurorad.workflows.glioma.figures import TrendPoint

    priors = result.extra.get("priors") or []
    q = result.quantity("whole_tumour_volume")
    if q is None or not any(comparable(p, priors) for p in priors):
        return None
    pts = [TrendPoint(label, str(p.get("date") or ""), float(p["whole_tumour_volume"]), comparable(p, priors))
           for label, p in reversed(list(zip(("t-1", "t-2"), priors, strict=False)))
           if p.get("whole_tumour_volume") is not None]
    return [*pts, TrendPoint("t", str(result.extra.get("study_date") or ""), float(q.value), True)]


def add_trend_figure(result: WorkflowResult, out_dir: Path) -> WorkflowResult:
    """Draw ``volume_trend.png`` into ``out_dir`` when a prior can be compared, and name it in the result
    (``files``, ``extra["trend_figure"]`` with the plotted current volume); the report's "Volume trend"
    section embeds it."""
    trend = trend_points(result)
    if trend is not None:
        from neurorad.workflows.glioma.figures import volume_trend_figure

        volume_trend_figure(trend, out_dir / TREND_FIGURE)
        result.files["volume_trend"] = f"{TREND_FIGURE} (whole-tumour volume per time point)"
        result.extra["trend_figure"] = {"path": TREND_FIGURE, "current_ml": trend[-1].volume_ml}
    return result


def time_point_table(result: WorkflowResult, priors: list[dict[str, Any]]) -> ReportTable:
    """t-2, t-1 and t with date, regional volumes (mL), software version and whether they were compared."""
    qs = {q.name: q.value for q in result.quantities}
    rows = []
    for label, p in reversed(list(zip(("t-1", "t-2"), priors, strict=False))):
        status = ("compared" if comparable(p, priors) else "not compared: not accepted" if not p.get("accepted") else
                  "not compared: incompatible version" if not p.get("compatible") else
                  "not compared: an earlier study not accepted")
        rows.append((label, str(p.get("date") or "-"), format_value(p.get("whole_tumour_volume")),
                     format_value(p.get("enhancing_volume")), format_value(p.get("non_enhancing_volume")),
                     str(p.get("version") or "-"), status))
    rows.append(("t (this study)", str(result.extra.get("study_date") or "-"),
                 format_value(qs.get("whole_tumour_volume")), format_value(qs.get("enhancing_volume")),
                 format_value(qs.get("non_enhancing_volume")), result.version, "current"))
    return ReportTable(("Time point", "Date", "Whole tumour (mL)", "Enhancing (mL)", "Non-enhancing (mL)",
                        "Software", "Comparison"), tuple(rows))


def previous_studies(inputs: WorkflowInputs) -> list[tuple[str, WorkflowResult, Review | None, Path | None, bool]]:
    """The patient's two previous studies, newest first by study date (the platform's order where dates
    are missing), accepted or rejected, as ``(label, result, review, folder, rejected)`` with their
    time-point labels "t-1" and "t-2". A rejected study keeps its place (EASE counts the comparison as
    failed rather than skip to an older study), so the labels name the actual time points: with t-1
    rejected, the accepted study before it is t-2, in the table and on its FLAIR panel alike."""
    dirs = list(inputs.prior_dirs) + [None] * max(0, len(inputs.prior_results) - len(inputs.prior_dirs))
    merged: list[tuple[WorkflowResult, Review | None, Path | None, bool]] = [
        (res, review, None if folder is None else Path(folder), False)
        for (res, review), folder in zip(inputs.prior_results, dirs, strict=False)]
    merged += [(res, review, None, True) for res, review in inputs.prior_rejected]
    merged.sort(key=lambda x: str(x[0].extra.get("study_date") or ""), reverse=True)
    return [(label, *m) for label, m in zip(("t-1", "t-2"), merged[:2], strict=False)]


def prior_flairs(inputs: WorkflowInputs, fixed: Volume, ref: Volume, backend: str, limits: Any) -> dict[str, Volume]:
    """The FLAIR of the accepted ones among the two previous studies (:func:`previous_studies`), each
    rigidly registered (prior T1c -> this T1c on the brain's box ``fixed``), resampled onto ``ref`` and
    keyed by its actual time point: ``{"t-1": ..., "t-2": ...}`` (only "t-2" when t-1 was rejected). A
    rejected prior, or one without its folder or images, or whose registration fails, is left out (the
    panel is optional)."""
    from neurorad.image.nifti import load_nifti
    from neurorad.preprocess.registration import register
    from neurorad.preprocess.transforms import resample

    out: dict[str, Volume] = {}
    for label, res, review, folder, was_rejected in previous_studies(inputs):
        if was_rejected or folder is None or review is None or not review.accepted:
            continue
        t1c, flair = (Path(folder) / res.volumes.get(k, "") for k in ("t1c", "flair"))
        if not (res.volumes.get("t1c") and res.volumes.get("flair") and t1c.is_file() and flair.is_file()):
            continue
        try:
            r = register(fixed, load_nifti(t1c), "rigid", backend, limits=limits)
        except ProcessingError:
            continue
        out[label] = resample(load_nifti(flair), ref, r.transform, "linear")
    return out


#: a sequence must cover at least this fraction of the brain found on T1c (field-of-view check)
MIN_BRAIN_COVERAGE = 0.8


def _check_fov(raw: dict[str, Volume], ref: Volume, brain: np.ndarray) -> None:
    """Refuse a sequence whose field of view misses part of the brain seen on T1c (a slab, another
    body part, a different position): segmentation there would silently lose tumour. Judged in world
    coordinates before registration, so misalignments of a few millimetres do not matter."""
    idx = np.argwhere(brain)
    if not len(idx):
        return
    world = ref.voxel_to_world(idx[:: max(1, len(idx) // 20000)].astype(float))
    for s in ("t1", "t2", "flair"):
        v = raw[s]
        vox = v.world_to_voxel(world)
        inside = float(np.all((vox >= -0.5) & (vox <= np.asarray(v.spatial_shape) - 0.5), axis=1).mean())
        if inside < MIN_BRAIN_COVERAGE:
            raise InputError(f"{s.upper()} covers only {inside:.0%} of the brain seen on T1c (mismatched field of "
                             "view); send a series covering the whole brain", v.metadata.get("source"))


def _same_patient(vols: dict[str, Volume]) -> None:
    """Refuse sequences of different patients (DICOM PatientID or pseudonym), naming the roles only."""
    ids = {s: (v.metadata.get("dicom") or {}).get("PatientID") for s, v in vols.items()}
    known = {s: i for s, i in ids.items() if i}
    if len(set(known.values())) > 1:
        raise InputError("the sequences belong to different patients (" + ", ".join(
            f"{s.upper()}" for s in sorted(known)) + " carry different patient IDs); send one patient's session")
