"""Cerebral microbleeds (CMB) on SWI: the ``cmb`` workflow.

Steps (``run``), each recorded with its seconds in the result's provenance:

1. ``load``     SWI (NIfTI or DICOM series), RAS+; refuse empty images, 2D series with slices >= 5 mm, and
                series that are not SWI magnitude / minimum-intensity projections: a phase image (DICOM
                ImageType P/PHASE, or values symmetric around zero), or another contrast (DICOM series class
                FLAIR/T1/T2/DWI, or an image whose CSF is darker than white matter, which SWI never shows).
                A magnitude-only gradient-echo series is accepted with a warning (microbleeds are less
                conspicuous without susceptibility weighting of the phase).
2. ``anatomy``  brain mask; MNI152 priors and AAL/JHU labels registered to the subject.
3. ``detect``   the chosen engine: ``classical`` (multi-scale LoG blobs, sphericity, vessel and brain-surface
                exclusion, :mod:`neurorad.segment.cmb_classical`) or ``unet25d`` (the 3-slice U-Net of
                PAPERS.md C through the learned-segmentation layer; starter model ``cmb-unet25d`` shipped,
                trained on phantoms only, retrained with ``python -m neurorad.workflows.svd_train cmb``).
                Candidates outside 2-10 mm are removed (PAPERS.md C2 step 3).
4. ``rules``    one finding per microbleed with location (lobar / deep / infratentorial, MARS classes) and
                size; count and distribution (:mod:`neurorad.clinical.svd`).
5. ``files``    swi.nii.gz, cmb_labels.nii.gz (label = finding id), cmb_probability.nii.gz, key image.

Review: each label is correct (keep) or incorrect (discard), missed microbleeds are marked (the
clinical evaluation categories of PAPERS.md C4). Validation so far is on synthetic phantoms only.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from neurorad.clinical.svd import CMB_LOCATIONS, cmb_distribution, cmb_location
from neurorad.errors import InputError
from neurorad.image.nifti import save_nifti
from neurorad.image.volume import Volume
from neurorad.workflows._subject import check_slices, key_image, load_series, subject_anatomy
from neurorad.workflows.contract import (
    Alarm,
    Choice,
    Finding,
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

#: CSF / white-matter intensity ratio below which the image cannot be SWI (CSF is bright on SWI)
MIN_CSF_WM_RATIO = 0.8


def swi_series_problem(vol: Volume) -> tuple[str | None, str | None]:
    """(error, warning) for a series sent as SWI, from its DICOM attributes and its values.

    The error names what the series is (a phase image, FLAIR ...); the warning flags a magnitude-only
    gradient-echo series."""
    dcm = vol.metadata.get("dicom") or {}
    it = dcm.get("ImageType") or []
    itype = [str(x).upper() for x in (it.split("\\") if isinstance(it, str) else it)]
    if "P" in itype or "PHASE" in itype:
        return ("is a phase image (DICOM ImageType " + "\\".join(itype) + "); microbleed detection needs the SWI "
                "magnitude or minimum-intensity projection, not the phase", None)
    if dcm:
        from neurorad.dicom.classify import classify_series, series_attributes

        cls = classify_series(series_attributes(dcm))
        if cls.label in ("FLAIR", "T1", "T1C", "T2", "DWI", "CT_HEAD"):
            return (f"is a {cls.label} series ({cls.reason}), not SWI; microbleed detection needs the SWI magnitude "
                    "or minimum-intensity projection (not a phase image)", None)
        if cls.label != "SWI" and "M" in itype:
            return None, ("magnitude-only gradient-echo series (no SWI processing): microbleeds are less conspicuous; "
                          "send the SWI series when there is one")
    data = np.asarray(vol.data)
    nz = data[data != 0]
    if nz.size and np.mean(nz < 0) > 0.2:
        return ("has values symmetric around zero, as a phase image; microbleed detection needs the SWI magnitude "
                "or minimum-intensity projection, not the phase", None)
    return None, None


class CMBWorkflow(Workflow):
    """Cerebral microbleed detection on SWI (see the module docstring)."""

    name = "cmb"
    # 0.1.1: microbleeds the reader marks as missed are counted in the reviewed conclusion (cmb_reader_marked)
    version = "0.1.1"
    title = "Cerebral microbleeds (SWI)"
    description = ("Detects cerebral microbleeds (2-10 mm) on SWI: count, one finding per microbleed with its "
                   "location (lobar / deep / infratentorial) and size, and the distribution.")
    requirements = Requirements((SeriesRole("swi", ("SWI",), ("MR",), prefer_3d=True,
                                            description="SWI magnitude or minIP (not the phase image)"),))
    finding_kinds = {"microbleed": "Microbleed"}
    counts_reader_marked = True  # conclusion() counts the reader's missed-finding markers
    review_form = ReviewForm(
        fields=(),
        finding_verdicts=(Choice("correct", "correct label (keep)"), Choice("incorrect", "incorrect label (discard)")),
        discard_verdicts=("incorrect",), allow_missed=True)
    viewer = ViewerLayout((Panel("SWI with microbleeds", "swi", overlay=True),),
                          kind_colours={"microbleed": "#00c8ff"})
    engines = {
        "classical": "multi-scale LoG blobs, sphericity, vessel and brain-surface exclusion, 2-10 mm",
        "unet25d": "3-slice U-Net of PAPERS.md C (WM-peak normalisation, 384 x 384, 3 slices in, middle out), "
                   "2-10 mm; starter model cmb-unet25d (phantom-trained, half width; option model= for a site's)",
    }

    def run(self, inputs: WorkflowInputs, out_dir: Path, progress: Progress) -> WorkflowResult:
        opts = inputs.options
        engine = str(opts.get("engine") or next(iter(self.engines)))
        if engine not in self.engines:
            raise InputError(f"unknown engine {engine!r} for workflow cmb; choose one of {list(self.engines)}")
        steps: list[dict[str, Any]] = []
        alarms: list[Alarm] = []
        t = time.perf_counter()
        progress(0.02, "load SWI")
        src = inputs.path("swi")
        vol = load_series(src, "SWI")
        err, warn = swi_series_problem(vol)
        if err:
            raise InputError(f"the series sent as SWI {err}", src)
        if warn:
            alarms.append(Alarm("magnitude_only", warn))
        thickness = check_slices(vol, "SWI")
        steps.append({"name": "load", "seconds": round(time.perf_counter() - t, 3)})
        t = time.perf_counter()
        progress(0.1, "brain mask and tissue priors")
        anat = subject_anatomy(vol, brain_engine=str(opts.get("brain_engine", "deepbet")),
                               brain_mask=opts.get("brain_mask"))
        wm = anat.brain & (anat.wm_prior >= 0.9)
        csf = anat.brain & (anat.csf_prior >= 0.9)
        if wm.sum() > 100 and csf.sum() > 100:
            ratio = float(np.median(vol.data[csf]) / max(float(np.median(vol.data[wm])), 1e-6))
            if ratio < MIN_CSF_WM_RATIO:
                raise InputError(
                    f"the series sent as SWI has cerebrospinal fluid darker than white matter (ratio {ratio:.2f}), as "
                    "on FLAIR or T1-weighted images, never on SWI; send the SWI magnitude or minimum-intensity "
                    "projection (not the phase image)", src)
        steps.append({"name": "anatomy", "seconds": round(time.perf_counter() - t, 3), **anat.seconds})
        t = time.perf_counter()
        progress(0.5, f"detect ({engine})")
        labels, prob, cands, model, params = self._detect(engine, vol, anat, opts)
        steps.append({"name": "detect", "engine": engine, "seconds": round(time.perf_counter() - t, 3)})
        t = time.perf_counter()
        findings = []
        aal, aal_names = anat.atlas["aal"]
        jhu, jhu_names = anat.atlas["jhu"]
        for k, c in enumerate(cands, 1):
            ijk = tuple(int(x) for x in c["centre_ijk"])
            xyz = vol.voxel_to_world(np.asarray(ijk))[0]
            mni = anat.transform.matrix @ np.append(xyz, 1.0)
            an, jn = aal_names.get(int(aal[ijk]), ""), jhu_names.get(int(jhu[ijk]), "")
            loc = cmb_location(an, jn, float(mni[2]))
            region = an or jn
            findings.append(Finding(
                k, "microbleed", float((labels == k).sum()) * vol.voxel_volume_mm3 / 1000.0, k,
                f"{loc}" + (f" ({region})" if region else ""), tuple(float(x) for x in xyz), (
                    Quantity("diameter", round(float(c["diameter_mm"]), 2), "mm"),
                    Quantity("location_class", loc, ""),
                    Quantity("contrast", round(1.0 - float(c["centre_ratio"]), 3), "1"),
                ), float(c["score"])))
        steps.append({"name": "rules", "seconds": round(time.perf_counter() - t, 3)})
        progress(0.9, "files")
        t = time.perf_counter()
        save_nifti(vol, out_dir / "swi.nii.gz")
        save_nifti(vol.with_data(labels.astype(np.int16)), out_dir / "cmb_labels.nii.gz")
        save_nifti(vol.with_data(prob.astype(np.float32)), out_dir / "cmb_probability.nii.gz")
        key_images = []
        for f in findings[:3]:
            name = f"key_cmb_{f.id}.png"
            key_image(vol, labels == f.id, f.centroid_mm, out_dir / name, (0, 200, 255))
            key_images.append(KeyImage(name, f"Microbleed {f.id} ({f.location})", f.id))
        steps.append({"name": "files", "seconds": round(time.perf_counter() - t, 3)})
        result = WorkflowResult(
            self.name, self.version, findings=findings, alarms=alarms, key_images=key_images,
            mask="cmb_labels.nii.gz", reference_role="swi", volumes={"swi": "swi.nii.gz"},
            files={"probability": "cmb_probability.nii.gz"},
            extra={"engine": engine, "slice_thickness_mm": thickness, "brain_engine": anat.brain_engine,
                   "atlas_registration_nmi": round(anat.nmi, 4),
                   "validation": "synthetic phantoms only (bench/cmb.py)"})
        result.provenance.models.append(model)
        result.provenance.steps.extend(steps)
        result.provenance.parameters = {"engine": engine, **params}
        return self.recompute(result)

    def _detect(self, engine: str, vol: Volume, anat: Any, opts: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], ModelRef, dict[str, Any]]:
        if engine == "classical":
            from dataclasses import asdict

            from neurorad.segment.cmb_classical import CMBParams, detect_cmb

            p = opts.get("classical_params") or CMBParams()
            det = detect_cmb(vol.data, anat.brain, vol.spacing_mm, p)
            return (det.labels, det.probability, [asdict(c) for c in det.accepted],
                    ModelRef("cmb-classical", self.version), p.to_dict())
        if engine == "unet25d":
            from neurorad.segment.svd_starter import cmb_input, load_starter, predict_native

            seg = load_starter("cmb", opts.get("model"))
            x, geom = cmb_input(vol)
            prob = predict_native(seg, x, geom) * anat.brain
            thr = float(opts.get("threshold", 0.5))
            labels, cands = _foci_from_probability(vol, prob, anat.brain, thr)
            ref = ModelRef(seg.name, seg.version, seg.weights_sha256 or "", "learned")
            return labels, prob, cands, ref, {"threshold": thr, "diameter_mm": [2.0, 10.0],
                                              "model": f"{seg.name}@{seg.version}"}
        raise InputError(f"engine {engine!r} is not available")  # pragma: no cover - guarded in run()

    def recompute(self, result: WorkflowResult) -> WorkflowResult:
        locs = []
        for f in result.findings:
            m = f.measurement("location_class")
            locs.append(str(m.value) if m is not None else "lobar")
        diam = [float(f.measurement("diameter").value) for f in result.findings if f.measurement("diameter")]
        dist = cmb_distribution(locs)
        q = [Quantity("cmb_count", len(result.findings), "1", "Number of microbleeds")]
        q += [Quantity(f"cmb_{loc}_count", locs.count(loc), "1", f"{loc.capitalize()} microbleeds")
              for loc in CMB_LOCATIONS]
        q += [Quantity("cmb_count_2_5mm", sum(2.0 <= d < 5.0 for d in diam), "1", "Microbleeds 2-5 mm"),
              Quantity("cmb_count_5_10mm", sum(5.0 <= d <= 10.0 for d in diam), "1", "Microbleeds 5-10 mm"),
              Quantity("cmb_distribution", dist, "", "Distribution (MARS classes)")]
        n = len(result.findings)
        if n == 0:
            summary = "No cerebral microbleed found."
        else:
            parts = ", ".join(f"{locs.count(loc)} {loc}" for loc in CMB_LOCATIONS if locs.count(loc))
            summary = f"{n} cerebral microbleed(s): {parts}; distribution {dist}."
            if dist == "strictly lobar":
                summary += " A strictly lobar distribution is the pattern of cerebral amyloid angiopathy (Boston " \
                           "criteria 2.0 need clinical context)."
        return replace(result, quantities=q, summary=summary)

    def conclusion(self, result: WorkflowResult, review: Review | None = None) -> str:
        """The counts' sentence; after an accepted review whose reader marked microbleeds the software missed, a
        sentence that counts them (not measured, location not classified), so the signed report never says "No
        cerebral microbleed found" beside its reader's markers, nor gives a distribution as if it were complete."""
        marked = review.reader_marked if review is not None else 0
        if not marked:
            return result.summary
        n = len(result.findings)
        many = marked > 1
        return (self.recompute(result).summary + f" The reader marked {marked} more microbleed{'s' if many else ''} "
                f"that the software missed ({n + marked} in all); {'they are' if many else 'it is'} not measured and "
                "not location-classified, so the counts and the distribution above cover the software's "
                "microbleeds only.")

    def reviewed(self, result: WorkflowResult, review: Review) -> WorkflowResult:
        out = super().reviewed(result, review)
        if review.reader_marked:
            out = replace(out, quantities=[*out.quantities, Quantity(
                "cmb_reader_marked", review.reader_marked, "1",
                "Microbleeds marked by the reader, missed by the software")])
        return out

    def report_sections(self, result: WorkflowResult, review: Review | None) -> list[ReportSection]:
        sections = [ReportSection("Findings", (self.conclusion(result, review),))]
        sections.append(ReportSection("Measurements", table=ReportTable(
            ("Quantity", "Value", "Unit"),
            tuple((q.description or q.name, format_value(q.value), q.unit) for q in result.quantities))))
        if result.findings:
            sections.append(ReportSection("Microbleeds", table=ReportTable(
                ("#", "Location", "Diameter (mm)", "Score"),
                tuple((str(f.id), f.location, format_value(f.measurement("diameter").value
                                                           if f.measurement("diameter") else None, 1),
                       format_value(f.score, 2)) for f in result.findings))))
        sections.append(ReportSection("Method", (
            f"Engine: {result.extra.get('engine')}. Foci of 2-10 mm only; location classes after MARS (Gregoire "
            "et al. 2009) from AAL/JHU atlas labels registered to the SWI. Validated on synthetic phantoms only.",)))
        return sections


def _foci_from_probability(vol: Volume, prob: np.ndarray, brain: np.ndarray, threshold: float,
                           min_mm: float = 2.0, max_mm: float = 10.0) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Label map (1..n) and candidate records of the 26-connected foci of ``prob >= threshold`` whose
    equivalent-sphere diameter lies in [``min_mm``, ``max_mm``] (PAPERS.md C2 step 3)."""
    from scipy import ndimage

    from neurorad.quantify.components import connected_components, label_voxel_counts

    lab, n = connected_components(prob >= threshold, 26)
    out = np.zeros(lab.shape, np.int32)
    cands: list[dict[str, Any]] = []
    if n == 0:
        return out, cands
    counts = label_voxel_counts(lab, n)
    diam = np.cbrt(6.0 * counts * vol.voxel_volume_mm3 / np.pi)
    med = float(np.median(vol.data[brain])) or 1.0
    means = ndimage.mean(prob, lab, np.arange(1, n + 1))
    peaks = ndimage.maximum_position(prob, lab, np.arange(1, n + 1))
    for i in range(n):
        if not min_mm <= diam[i] <= max_mm:
            continue
        k = len(cands) + 1
        out[lab == i + 1] = k
        c = tuple(int(x) for x in peaks[i])
        cands.append({"centre_ijk": c, "diameter_mm": float(diam[i]), "centre_ratio": float(vol.data[c]) / med,
                      "score": float(means[i])})
    return out, cands
