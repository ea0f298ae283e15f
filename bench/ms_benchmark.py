"""Validation benchmark of the longitudinal MS workflow on phantom pairs built on real anatomy.

The phantom families (``--phantom``):

* ``original`` (the regression set, unchanged seeds 1000+i): a third with no new lesion, the rest
  with 1-4 new lesions of 3-15 mm and 0-2 enlarging ones, bright lesions in periventricular,
  juxtacortical and deep white matter; different bias fields and Rician noise per time point,
  scanner intensity scaling, misalignment up to 10 degrees and 10 mm, alternating 1 mm 3D /
  3 mm 2D (1 x 1 x 3 mm) acquisitions.
* ``widened`` (issue 17; :func:`neurorad.phantom.cases.widened_ms_options`): lesion/WM FLAIR
  contrast 1.15-2.5; periventricular (touching the ventricles: caps, bands; Dawson fingers),
  juxtacortical, infratentorial and deep placement; realistic grey/white FLAIR contrast that
  changes between the time points with CSF suppression, intensity nonlinearity, noise and bias
  (a protocol/scanner change); stable lesions drifting +-10%; 1, 3 or 5 mm slices at either time
  point; motion up to 15 degrees / 15 mm; enlarging lesions grown by volume x 1.8-4.1 (x 2.5-4 before workflow
  1.11.0); a third stable. Evaluation seeds ``--first`` 0..;
  ``--tuning`` uses seeds 100000+ (the set the operating point was chosen on, never evaluated).
* ``widened-crossed`` and ``widened-oriented``: the widened pairs of the same seeds in other slice planes
  (:data:`WIDENED_PHANTOMS`): two different planes of 3 or 5 mm slices per pair (axial against coronal or
  sagittal, stored as a scanner stores those planes), or each time point's plane drawn. The lesions, motion and
  protocol are the axial pair's, so the two compare pair by pair.
* ``independent``: pairs of ``bench/ms_sim_independent.py``, a simulator written by another hand without
  reading the phantom or the detector (its own anatomy variation, FLAIR model, slice profiles, motion and
  lesion placement), seed = case index. Nothing was ever tuned on it: it measures how much of the widened
  phantom's figures belongs to the shared design of phantom and detector.
* ``independent-mni152``: the same simulator with another brain: MNI152 2009a (nilearn's GM and WM
  probability maps; an average of 152 brains, so softer grey/white borders than one subject's) inside Colin27's
  head tissues (the lesion model, protocols and motions are the simulator's; the draws differ per brain, so the
  two sets compare as sets, not pair by pair). It checks that nothing in the engine belongs to Colin27's brain,
  the anatomy of both other phantoms and of the atlas step.

Definitions
* a truth lesion (new, or enlarging: its whole follow-up extent) is FOUND when the detected
  components on the follow-up grid cover >= 40% of its voxels;
* a detected component is a FALSE POSITIVE when it touches no new or enlarging truth lesion;
* beside these, the summary's ``msseg_criterion`` scores the same detections as the MSSEG challenges do
  (animaSegPerfAnalyzer's lesion detection: more than 10 % of a lesion covered by detections that lie at most 70 %
  outside the truth; a detection is true by the same test swapped; :func:`msseg_marks`), for comparison with
  published challenge figures; the targets are read on the 40 % criterion above;
* patient-level "active" truth: >= 1 new or enlarging lesion visible at follow-up; the
  gadolinium decision is "inject" exactly when the workflow calls the patient active;
* volume error of a found lesion: |detected - truth| / truth, detected = the detections that
  overlap it, truth = its voxels on the follow-up grid (a voxel is lesion when >= half of it is:
  the partial-volume rule of the phantom; the workflow delineates new lesions at half their
  peak change, the same rule). The summary's volume error counts only lesions whose covering
  detections the workflow marked ``volume_measurable`` (its rule: measured diameter >= 1.7 slice
  thicknesses of the coarser input, ``ms_difference.volume_measurable``) and gives the number it
  flagged per bin; the all-lesion figure is kept as separate rows (``..._all_lesions``).

FROC: the workflow runs with ``post.min_peak_score`` lowered to ``--froc-floor``; each detection
keeps its peak score, and the operating point (the configured ``min_peak_score``, 0.1) and the
curve are read off the same run (components, FP rules and classification are per component).

Targets (issue 17, widened, held out): lesion sensitivity >= 0.90 at <= 0.5 FP per patient,
patient-level sensitivity >= 0.95 and specificity >= 0.85, no contrast, location or slice
thickness bin below 0.80; median absolute volume error <= 20% per size bin. Published anchors:
candidate TPR 0.83 at FP rate 0.09 (regional workflow); CAD sensitivity > 95%; gadolinium
decision sensitivity 0.88, specificity 0.71; nnU-Net (MUSIC) lesion TPR 0.83.

Usage: ``python bench/ms_benchmark.py --phantom widened --cases 40 --workers 2 [--engine
default|classical|learned|fusion] [--json out.json]``; ``--phantom original --cases 30`` is the regression set.
``--input skull-stripped`` (or ``followup-skull-stripped``) gives the workflow brain-extracted series (workflow
1.22.1), ``--input z-scored`` (or ``followup-z-scored``) series z-scored over the whole image (workflow 1.22.2),
``--input in-plane-x2`` both series on twice as many pixels per in-plane axis (cubic), as a 512-matrix
reconstruction of a 256-matrix acquisition (workflow 1.23.0; the truth goes to the finer follow-up grid).
A variant runs with ``--set group.param=value`` or ``--set field=value`` (MSConfig's own fields), e.g. ``--set
classify.split_enlarging=False`` (workflow 1.7.1's whole-candidate judgement) or ``--set elastix_iterations=250``.
``--case-list 3,7,12-15`` runs only those pairs (a change that can reach only some pairs: workflow 1.21.0's N4
sampling changes only 1 mm pairs); ``--summarise OLD ... --rerun NEW`` then pools them, NEW's records in place of
the same pairs' in OLD (also for ``--compare``'s AFTER).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np

TUNING_SEED0 = 100_000
#: default: MSConfig(), the workflow's default engine (fusion since workflow 1.22.0, classical before: every record
#: of a run carries the engine that ran as ``lesion_engine``); classical: the difference engine (local statistics);
#: global: the classical engine before issue 17; learned: the two-time-point network; fusion: classical + learned
#: (neurorad.segment.ms_learned)
ENGINES = ("default", "classical", "global", "learned", "fusion")
#: what the workflow is given (``--input``, :func:`with_input`): the images as simulated; the follow-up, or both
#: time points, skull-stripped (:func:`skull_stripped`) or z-scored over the whole image; both on twice the in-plane
#: pixels (:func:`upsampled_in_plane`)
INPUTS = ("as-simulated", "followup-skull-stripped", "skull-stripped", "followup-z-scored", "z-scored",
          "in-plane-x2")
SIZE_BINS = [(3, 5), (5, 8), (8, 10**3)]
#: the widened phantom's names and their slice planes (``widened_ms_options(orientation=...)``): ``widened`` slices
#: every time point along z (the benchmark's and the tuning pairs' geometry); ``widened-crossed`` gives each pair 3 or
#: 5 mm slices of two different planes (axial, coronal, sagittal), its lesions, motion and protocol those of the
#: ``widened`` pair of the same seed; ``widened-oriented`` draws each time point's plane (axial 0.6, coronal 0.3,
#: sagittal 0.1) and keeps the pair's thicknesses
WIDENED_PHANTOMS = {"widened": "axial", "widened-crossed": "crossed", "widened-oriented": "random"}
CONTRAST_BINS = [(1.0, 1.5), (1.5, 2.0), (2.0, 3.0)]


def case_spec(i: int, voxel_mm: float = 1.0, phantom: str = "original", tuning: bool = False) -> dict:
    """Parameters of case ``i``: every third case has no new lesion."""
    if phantom in WIDENED_PHANTOMS:
        from neurorad.phantom.cases import widened_ms_options

        seed = (TUNING_SEED0 if tuning else 0) + i
        spec = widened_ms_options(seed, negative=(i % 3 == 0), orientation=WIDENED_PHANTOMS[phantom])
        spec["in_plane_mm"] = voxel_mm
        return spec
    rng = np.random.default_rng(1000 + i)
    negative = i % 3 == 0
    thick = i % 2 == 1
    return dict(
        seed=1000 + i,
        n_stable=int(rng.integers(3, 9)),
        n_new=0 if negative else int(rng.integers(1, 5)),
        n_enlarging=0 if negative else int(rng.integers(0, 3)),
        in_plane_mm=voxel_mm,
        slice_thickness_mm=3.0 if thick else voxel_mm,
        misalign_deg=float(rng.uniform(0, 10)),
        misalign_mm=float(rng.uniform(0, 10)),
        snr=float(rng.uniform(20, 40)),
        bias_strength=float(rng.uniform(0.1, 0.3)),
        scanner_scaling=True,
    )


# the independent simulator's phantom names and the brain each puts its lesions in (ms_sim_independent.set_template)
INDEPENDENT_TEMPLATES = {"independent": "colin27", "independent-mni152": "mni152"}


def independent_case(i: int, template: str = "colin27"):  # noqa: ANN201 - PhantomCase
    """Pair ``i`` of the independently written simulator (``bench/ms_sim_independent.py``, seed ``i``), as the
    benchmark's case object and spec. Its images sit in their own scanner spaces at their own resolutions, its
    truth on the follow-up's grid (a voxel is lesion when at least half of it is). The spec's slice thicknesses
    are the simulated ones (its spacings, gaps included, are the images' largest voxel sizes), its in-plane size
    the smallest voxel size."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from ms_sim_independent import set_template, simulate_pair

    from neurorad.image.volume import Volume
    from neurorad.phantom.cases import PhantomCase

    set_template(template)
    sim = simulate_pair(i)

    def vol(img, dtype):  # noqa: ANN001, ANN202 - nibabel image
        return Volume(np.asarray(img.dataobj).astype(dtype), np.asarray(img.affine, float))

    images = {"baseline_flair": vol(sim["baseline"], np.float32), "followup_flair": vol(sim["followup"], np.float32)}
    truth = {"truth_new": vol(sim["truth_new"], np.int16), "truth_enlarging": vol(sim["truth_enlarging"], np.int16)}
    spacing = [v.spacing_mm for v in images.values()]
    params = sim.get("params", {})
    # the simulated slice thickness (1, 3 or 5 mm: the benchmark's bins); the spacing includes any gap
    thickness = [float(params.get(t, {}).get("slice_thickness_mm", max(s)))
                 for t, s in zip(("baseline", "followup"), spacing, strict=True)]
    spec = {"simulator": "bench/ms_sim_independent.py", "seed": i, "slice_thickness_mm": thickness,
            "slice_spacing_mm": [round(float(max(s)), 3) for s in spacing],
            "in_plane_mm": round(float(min(min(s) for s in spacing)), 3), "params": _jsonable(params)}
    spec["template"] = template
    return PhantomCase("ms-independent", i, images, truth, {"lesions": sim["lesions"]}), spec


def engine_config(engine: str, froc_floor: float | None, settings: tuple[str, ...] = ()):  # noqa: ANN201 - MSConfig
    """The workflow configuration of an engine name (``default``: MSConfig(), the workflow's default engine;
    ``global``: the original classical engine before issue 17), with ``settings`` (``--set``: ``group.param=value``
    or a field of MSConfig itself, ``field=value``; ``ms_sweep.apply_overrides``) applied last."""
    from neurorad.pipelines.ms_lesions import MSConfig
    from neurorad.segment.ms_difference import CandidateParams, ClassifyParams, FPParams

    cfg = MSConfig(write_report=False, write_dicom=False, atlas=False)
    if engine == "global":
        cfg = replace(cfg, candidate=CandidateParams(method="global"),
                      fp=FPParams(cog_rule=True, dipole_rule=False, drift_rule=False, loss_alone_ratio=None,
                                  diffuse_max_focal_volume_mm3=None),
                      classify=ClassifyParams(partial_volume_fraction=None, enlarging_min_volume_ratio=None,
                                              rescue_growth_ratio=None),
                      max_slice_thickness_mm=5.0)
    elif engine in ("classical", "learned", "fusion"):
        cfg = replace(cfg, lesion_engine=engine)
    elif engine != "default":
        raise ValueError(f"unknown engine {engine!r} ({', '.join(ENGINES)})")
    if froc_floor is not None:
        cfg = replace(cfg, post=replace(cfg.post, min_peak_score=froc_floor))
    if settings:
        here = str(Path(__file__).resolve().parent)
        if here not in sys.path:
            sys.path.insert(0, here)
        from ms_sweep import apply_overrides

        cfg = apply_overrides(cfg, list(settings), top_level=True)
    return cfg


def run_engines(case, engines: list[str], froc_floor: float | None, workdir: Path,  # noqa: ANN001
                settings: tuple[str, ...] = ()) -> dict[str, tuple]:
    """The workflow on one phantom pair for several engines: steps 1-5 (load .. normalise) once, then the
    detection and output steps per engine on a copy of that context (the engines differ only from the
    candidate step on; the learned and fusion engines of one model share its network output, computed once).
    Returns ``{engine: (MSResult, seconds)}`` (seconds: shared steps 1-5 + the network where the engine uses
    it + the engine's own); an engine that failed maps to its exception."""
    import copy
    from dataclasses import replace as dc_replace

    from neurorad.pipelines import ms_lesions as ms

    first = 5
    assert [s.name for s in ms.STEPS[:first]] == ["load", "brain", "register", "bias", "normalise"]
    cfgs = {e: engine_config(e, froc_floor, settings) for e in engines}
    t0 = time.perf_counter()
    base = ms.MSContext(cfgs[engines[0]], workdir, case.baseline_flair, case.followup_flair)
    for step in ms.STEPS[:first]:
        step.run(base)
    t_shared = time.perf_counter() - t0
    out: dict[str, tuple] = {}
    network: dict[tuple, tuple[np.ndarray, float]] = {}  # (model, mirroring) -> (probability, seconds): once a pair
    for e in engines:
        tmp = workdir / e
        tmp.mkdir()
        ctx = dc_replace(base, cfg=cfgs[e], tmp=tmp, prov=copy.deepcopy(base.prov), warnings=list(base.warnings),
                         files=dict(base.files))
        t1 = time.perf_counter()
        t_net = 0.0
        try:
            if e in ("learned", "fusion"):  # what step_load does before any work
                from neurorad.segment.ms_learned import learned_probability, learned_segmenter

                key = (cfgs[e].learned.model, cfgs[e].learned.mirror_axes)
                seg = learned_segmenter(*key)
                if key not in network:  # the learned and fusion engines share the network's output
                    tn = time.perf_counter()
                    assert base.ref is not None and base.bn is not None and base.fn is not None
                    prob = learned_probability(seg, base.ref.with_data(base.bn), base.fn, base.brain)
                    network[key] = (prob, time.perf_counter() - tn)
                ctx = dc_replace(ctx, learned_probability=network[key][0])
                t_net = network[key][1]  # each engine's seconds count the network once, as a run of it would
                t1 = time.perf_counter()
            out[e] = (ms._run(ctx, None, first_step=first), t_shared + t_net + time.perf_counter() - t1)
        except Exception as exc:  # noqa: BLE001 - a failed case is a result of the benchmark
            out[e] = (exc, 0.0)
    return out


def case_indices(case_list: str | None, first: int = 0, cases: int = 30) -> list[int]:
    """The pairs a run evaluates: ``case_list`` (``3,7,12-15``, sorted, each once) when given, else ``cases``
    pairs from ``first``. A list reruns the pairs a change can reach; the others' records are pooled with it by
    ``--summarise`` (disjoint cases)."""
    if case_list is None:
        return list(range(first, first + cases))
    from ms_sweep import _indices  # the one parser of index lists in bench/

    try:
        out = sorted(set(_indices(case_list)))
    except ValueError as exc:
        raise ValueError(f"--case-list {case_list!r}: {exc}") from None
    if not out:
        raise ValueError(f"--case-list {case_list!r} names no case")
    return out


def skull_stripped(volume):  # noqa: ANN001, ANN201 - Volume
    """``volume`` with every voxel outside its brain set to 0: deepbet's mask (the workflow's default brain
    extraction) dilated by one voxel, as a brain-extracted series keeps a rim of the brain's edge."""
    from scipy import ndimage

    from neurorad.preprocess.brain_extraction import apply_mask, extract_brain

    keep = ndimage.binary_dilation(np.asarray(extract_brain(volume).data, bool), iterations=1)
    return apply_mask(volume, volume.with_data(keep))


def upsampled_in_plane(volume):  # noqa: ANN001, ANN201 - Volume
    """``volume`` on twice as many voxels along its in-plane axes (all but the thickest; the first two of an
    isotropic grid) by cubic interpolation, the field of view and the slices unchanged: what a scanner's
    reconstruction onto a 512 matrix of a 256-matrix acquisition holds (no detail beyond the acquired voxel)."""
    from scipy import ndimage

    from neurorad.image.volume import Volume

    spacing = np.asarray(volume.spacing_mm, float)
    thick = int(np.argmax(spacing)) if spacing.max() > 1.05 * spacing.min() else 2
    zoom = np.where(np.arange(3) == thick, 1.0, 2.0)
    data = ndimage.zoom(np.asarray(volume.data, np.float32), zoom, order=3, mode="nearest", grid_mode=True)
    affine = np.asarray(volume.affine, float).copy()
    # grid_mode: output voxel i sits at input coordinate (i + 0.5) / z - 0.5
    affine[:3, 3] += affine[:3, :3] @ (-(1.0 - 1.0 / zoom) / 2.0)
    affine[:3, :3] = affine[:3, :3] / zoom
    return Volume(np.maximum(data, 0.0).astype(np.float32), affine)


def with_input(case, which: str):  # noqa: ANN001, ANN201 - PhantomCase
    """The case with its FLAIR images as ``--input`` gives them to the workflow (:data:`INPUTS`). The truth stays
    on the follow-up's grid, which stripping and z-scoring keep; with ``in-plane-x2`` it goes to the finer
    follow-up grid by nearest neighbour."""
    if which not in INPUTS:
        raise ValueError(f"unknown input {which!r} ({', '.join(INPUTS)})")
    from neurorad.preprocess.normalize import zscore
    from neurorad.preprocess.transforms import AffineTransform, resample

    both = ("baseline_flair", "followup_flair")
    roles, change = {"as-simulated": ((), None), "followup-skull-stripped": (both[1:], skull_stripped),
                     "skull-stripped": (both, skull_stripped), "followup-z-scored": (both[1:], zscore),
                     "z-scored": (both, zscore), "in-plane-x2": (both, upsampled_in_plane)}[which]
    for role in roles:
        case.images[role] = change(case.images[role])
    if which == "in-plane-x2":
        for key, truth in list(case.truth.items()):
            case.truth[key] = resample(truth, case.images["followup_flair"], AffineTransform.identity(), "nearest")
    return case


def run_case(i: int, voxel_mm: float, phantom: str = "original", engine: str = "default",
             froc_floor: float | None = None, tuning: bool = False,
             settings: tuple[str, ...] = (), input_as: str = "as-simulated") -> dict | list[dict]:
    """Generate case i, run the workflow, score every detection and truth lesion. ``engine`` may list
    several engines separated by commas: steps 1-5 then run once and a list of records (one per engine,
    each with its ``engine``) is returned. ``input_as``: :data:`INPUTS` (recorded in the spec when not the
    images as simulated)."""
    import torch

    torch.set_num_threads(1)
    from neurorad.phantom.cases import ms_pair
    from neurorad.pipelines.ms_lesions import run_ms_lesions

    t0 = time.perf_counter()
    if phantom in INDEPENDENT_TEMPLATES:
        if tuning:
            raise ValueError("the independent simulator is never tuned on: it has no --tuning seeds")
        case, spec = independent_case(i, INDEPENDENT_TEMPLATES[phantom])
    else:
        spec = case_spec(i, voxel_mm, phantom, tuning)
        case = ms_pair(**spec)
    if input_as != "as-simulated":
        case = with_input(case, input_as)
        spec = {**spec, "input": input_as}
    t_gen = time.perf_counter() - t0
    engines = engine.split(",")
    if len(engines) > 1:
        with tempfile.TemporaryDirectory() as d:
            try:
                runs = run_engines(case, engines, froc_floor, Path(d), settings)
            except Exception as exc:  # noqa: BLE001 - a failed case is a result of the benchmark
                return [{"case": i, "engine": e, "spec": _jsonable(spec), "error": f"{type(exc).__name__}: {exc}"}
                        for e in engines]
        out = []
        for e, (res, t_run) in runs.items():
            if isinstance(res, Exception):
                out.append({"case": i, "engine": e, "spec": _jsonable(spec),
                            "error": f"{type(res).__name__}: {res}"})
            else:
                out.append({"engine": e, "lesion_engine": engine_config(e, froc_floor, settings).lesion_engine,
                            **score_result(i, spec, case, res, t_gen, t_run)})
        return out
    cfg = engine_config(engine, froc_floor, settings)
    with tempfile.TemporaryDirectory() as d:
        t1 = time.perf_counter()
        try:
            res = run_ms_lesions(case.baseline_flair, case.followup_flair, Path(d) / "out", cfg)
        except Exception as exc:  # noqa: BLE001 - a failed case is a result of the benchmark
            return {"case": i, "engine": engine, "lesion_engine": cfg.lesion_engine, "spec": _jsonable(spec),
                    "error": f"{type(exc).__name__}: {exc}"}
        t_run = time.perf_counter() - t1
    return {"engine": engine, "lesion_engine": cfg.lesion_engine, **score_result(i, spec, case, res, t_gen, t_run)}


def score_result(i: int, spec: dict, case, res, t_gen: float, t_run: float) -> dict:  # noqa: ANN001
    """The per-case record of one workflow result: every truth lesion with the detections covering it,
    every detection with its peak score and whether it is a false positive."""
    from neurorad.phantom.cases import MS_LOCATION_BINS

    det = np.asarray(res.labels.data)
    vox = float(res.labels.voxel_volume_mm3)
    truth_new = np.asarray(case.truth["truth_new"].data)
    truth_enl = np.asarray(case.truth["truth_enlarging"].data)
    recs = {rec["id"]: rec for rec in case.case["lesions"]}
    st = spec["slice_thickness_mm"]
    thick = float(max(st) if np.ndim(st) else st)
    peaks = {r.id: float(r.max_score) for r in res.lesions}
    measurable = {r.id: bool(getattr(r, "volume_measurable", True)) for r in res.lesions}
    lesions = []
    for kind, tmap in (("new", truth_new), ("enlarging", truth_enl)):
        for lid in np.unique(tmap[tmap > 0]):
            m = tmap == lid
            rec = recs.get(int(lid), {})
            hits = [int(h) for h in np.unique(det[m]) if h > 0]
            lesions.append({
                "id": int(lid), "kind": kind, "diameter_mm": float(rec.get("diameter_mm", 0.0)),
                "location": MS_LOCATION_BINS.get(rec.get("location", ""), rec.get("location", "")),
                "shape": rec.get("shape", "blob"), "contrast_to_wm": float(rec.get("contrast_to_wm", 2.2)),
                "slice_mm": thick, "voxels": int(m.sum()), "volume_mm3": round(float(m.sum()) * vox, 2),
                # per detection overlapping it: its peak score, covered voxels and volume
                "hits": [{"det": h, "peak": peaks.get(h, 0.0), "covered": int(np.count_nonzero(det[m] == h)),
                          "volume_mm3": round(float(np.count_nonzero(det == h)) * vox, 2),
                          "volume_measurable": measurable.get(h, True)} for h in hits],
            })
    any_truth = (truth_new > 0) | (truth_enl > 0)
    dropped = (spec.get("params") or {}).get("dropped_truth_lesions") or []
    detections = []
    for r in res.lesions:
        mask = det == r.id
        on_truth = bool(np.any(any_truth[mask]))
        of_dropped = not on_truth and _on_dropped_lesion(mask, res.labels.affine, dropped)
        detections.append({"det": r.id, "peak": float(r.max_score), "kind": r.kind,
                           "volume_mm3": float(r.volume_mm3), "fp": not on_truth and not of_dropped,
                           "dropped_truth_lesion": of_dropped, "volume_measurable": measurable.get(r.id, True)})
    return {
        "case": i, "spec": _jsonable(spec), "slice_mm": thick,
        # a pair whose only new lesions have no truth voxel is neither active nor stable in the truth
        "truth_active": True if lesions else (None if dropped else False),
        # the workflow's own patient-level call (clinical.ms.MSDecision.gadolinium_label), beside which
        # patient_decision's reading of the detections can be checked
        "gadolinium": getattr(getattr(res, "decision", None), "gadolinium_label", None),
        "lesions": lesions, "detections": detections, "seconds_generate": round(t_gen, 1),
        "seconds_pipeline": round(t_run, 1), "timings": res.timings_s, "cpu_s": res.cpu_s,
        "warnings": [str(w) for w in res.warnings],
    }


def _on_dropped_lesion(mask: np.ndarray, affine: np.ndarray, dropped: list[dict]) -> bool:
    """Whether a detection (``mask`` on the follow-up grid) lies on a lesion the simulator drew into the image but
    dropped from its truth (``params["dropped_truth_lesions"]`` of ``bench/ms_sim_independent.py``: no follow-up
    voxel is half lesion, e.g. a 3 mm lesion on 5 mm slices). Such a detection finds a lesion that is there, so it
    is neither a true nor a false positive: it does not count. "On" = a detection voxel centre within the lesion's
    diameter (not its radius: lobed and elongated shapes reach further) plus half the largest voxel size of its
    centre."""
    if not dropped or not mask.any():
        return False
    aff = np.asarray(affine, float)
    xyz = (aff[:3, :3] @ np.argwhere(mask).T.astype(float)).T + aff[:3, 3]
    half_voxel_mm = 0.5 * float(np.max(np.linalg.norm(aff[:3, :3], axis=0)))
    for le in dropped:
        c = np.asarray(le.get("center_world_followup_mm", []), float)
        if c.shape != (3,):
            continue
        if float(np.min(np.linalg.norm(xyz - c, axis=1))) <= float(le.get("diameter_mm", 0.0)) + half_voxel_mm:
            return True
    return False


def _jsonable(o):  # noqa: ANN001, ANN202
    return json.loads(json.dumps(o, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))


def _size_key(lo: float, hi: float) -> str:
    """A size bin's name in the summary: "3-5 mm", "8+ mm"."""
    return f"{lo}-{hi if hi < 100 else ''} mm".replace("- mm", "+ mm")


def _rate(num: int, den: int) -> str:
    return f"{num / den:.3f} ({num}/{den})" if den else "n/a (0)"


def _found(le: dict, thr: float) -> bool:
    return sum(h["covered"] for h in le["hits"] if h["peak"] >= thr) >= 0.4 * le["voxels"]


#: the lesion-detection criterion of the MSSEG challenges (MICCAI 2016 and, for new lesions, 2021), as their scorer
#: animaSegPerfAnalyzer defines it (Commowick et al., Sci Rep 2018;8:13650; its defaults): a truth lesion is detected
#: when the detections cover more than ALPHA of it, and the detections overlapping it, taken in decreasing overlap
#: until they hold GAMMA of the covered part, each lie at most BETA outside every truth lesion; the same test with
#: truth and detections swapped says which detections are true. Objects of MIN_VOLUME_MM3 or less are not scored.
MSSEG_ALPHA, MSSEG_BETA, MSSEG_GAMMA, MSSEG_MIN_VOLUME_MM3 = 0.1, 0.7, 0.65, 3.0


def _msseg_tester(overlaps: dict, outside_fraction: dict, size: float, alpha: float, beta: float,
                  gamma: float) -> bool:
    """animaSegPerfAnalyzer's test of one object against the other side's objects (``overlaps``: other object ->
    volume shared with this one; ``outside_fraction``: other object -> its fraction lying in no object of this
    side; ``size``: this object's volume, in the same unit). Written from the criterion's definition (Commowick et
    al. 2018)."""
    covered = sum(overlaps.values())
    if size <= 0 or covered / size <= alpha:
        return False
    weight = 0.0
    for other, n in sorted(overlaps.items(), key=lambda kv: -kv[1]):
        if weight >= gamma:
            break
        if outside_fraction[other] > beta:
            return False
        weight += n / covered
    return True


def msseg_marks(case: dict, thr: float, alpha: float = MSSEG_ALPHA, beta: float = MSSEG_BETA,
                gamma: float = MSSEG_GAMMA, min_volume_mm3: float = MSSEG_MIN_VOLUME_MM3) -> dict:
    """One case's record scored by the MSSEG challenges' criterion (:data:`MSSEG_ALPHA`) at the operating point
    ``thr`` (detections with a lower peak are not reported, so not scored). Returns ``lesions``: per truth lesion of
    ``case["lesions"]``, True / False, or None when it is of ``min_volume_mm3`` or less (not scored), and
    ``detections``: per detection of ``case["detections"]`` reported at ``thr``, "tp", "fp", "dropped" (on a lesion
    the independent simulator drew but left out of its truth: neither, as the benchmark's own count) or "small".

    Read off the benchmark's records (each truth lesion's covered voxels per detection, each detection's volume),
    so any stored run can be rescored. Two departures from running animaSegPerfAnalyzer on the label images: the
    objects are the benchmark's truth lesions and the workflow's lesion labels, where the scorer re-derives
    6-connected components of each binary mask (two truth lesions that touch are one object there, a detection that
    is only 26-connected is several); and an enlarging lesion counts with its whole follow-up extent, as in the
    benchmark (MSSEG 2021 scored new lesions only)."""
    # every size and overlap in mm^3 (all on the follow-up grid): a pair without truth lesions has no voxel size in
    # its record, and its detections must still be scored
    lesions = case["lesions"]
    dets = [d for d in case["detections"] if d["peak"] >= thr]
    det_mm3 = {d["det"]: float(d["volume_mm3"]) for d in dets}  # the workflow's own volume, for one on no lesion
    for le in lesions:
        for h in le["hits"]:
            det_mm3[h["det"]] = float(h["volume_mm3"])  # its voxels on the grid, where it touches a lesion
    scored_lesions = [i for i, le in enumerate(lesions) if le["volume_mm3"] > min_volume_mm3]
    scored_dets = {d["det"] for d in dets if det_mm3[d["det"]] > min_volume_mm3}
    # overlap table (mm^3) between scored truth lesions and scored reported detections
    table = {i: {h["det"]: h["covered"] * lesions[i]["volume_mm3"] / lesions[i]["voxels"]
                 for h in lesions[i]["hits"] if h["det"] in scored_dets and h["covered"]} for i in scored_lesions}
    inside_truth = {j: sum(row.get(j, 0.0) for row in table.values()) for j in scored_dets}
    det_outside = {j: 1.0 - inside_truth[j] / det_mm3[j] if det_mm3[j] else 1.0 for j in scored_dets}
    les_outside = {i: 1.0 - sum(table[i].values()) / lesions[i]["volume_mm3"] for i in scored_lesions}
    found: list[bool | None] = [None] * len(lesions)
    for i in scored_lesions:
        found[i] = _msseg_tester(table[i], det_outside, lesions[i]["volume_mm3"], alpha, beta, gamma)
    det_marks = []
    for d in dets:
        j = d["det"]
        if j not in scored_dets:
            det_marks.append("small")
            continue
        column = {i: table[i][j] for i in scored_lesions if j in table[i]}
        if _msseg_tester(column, les_outside, det_mm3[j], alpha, beta, gamma):
            det_marks.append("tp")
        else:
            det_marks.append("dropped" if d.get("dropped_truth_lesion") else "fp")
    return {"lesions": found, "detections": det_marks}


def _false_positive(d: dict, thr: float) -> bool:
    """A detection that matches no truth lesion and is reported at the score threshold ``thr``."""
    return bool(d["fp"]) and d["peak"] >= thr


def lesion_volume_ratios(case: dict, thr: float) -> list[float | None]:
    """Detected / truth volume of each lesion of one case's record (None where it is not found), in the order of
    ``case["lesions"]``. Lesions that share a detection (peak >= ``thr``) form one group, and each of them gets the
    group's ratio: its detections' volumes, each counted once, over the sum of its lesions' truth volumes. Before
    (session 36) each lesion was compared with the whole volume of every detection touching it, so a detection
    covering a new lesion and a small enlarging one beside it read 10 x the small one's volume (independent
    simulator pair 32): a scoring artefact, not a measurement."""
    lesions = case["lesions"]
    hits = [{h["det"]: float(h["volume_mm3"]) for h in le["hits"] if h["peak"] >= thr} for le in lesions]
    parent = list(range(len(lesions)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_holder: dict[int, int] = {}
    for i, dets in enumerate(hits):
        for det in dets:
            if det in first_holder:
                parent[root(i)] = root(first_holder[det])
            else:
                first_holder[det] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(lesions)):
        groups.setdefault(root(i), []).append(i)
    out: list[float | None] = [None] * len(lesions)
    for members in groups.values():
        detected = {det: v for i in members for det, v in hits[i].items()}
        truth = sum(float(lesions[i]["volume_mm3"]) for i in members)
        for i in members:
            if truth > 0 and _found(lesions[i], thr):
                out[i] = sum(detected.values()) / truth
    return out


def confidence_intervals(ok: list[dict], thr: float, n_boot: int = 2000, seed: int = 0,
                         level: float = 0.95) -> dict:
    """95 % intervals of the summary's figures. Lesion sensitivities (overall and per bin) and false positives per
    patient: percentile intervals of the cluster bootstrap, patients resampled with replacement and each patient's
    lesions kept together (lesions of one patient share its images, registration and protocol, so they are not
    independent; Efron & Tibshirani, An Introduction to the Bootstrap, 1993, ch. 13; Field & Welsh, J R Stat Soc B
    2007;69:369-390, on resampling clusters). Patient sensitivity and specificity: Wilson score intervals
    (``neurorad.evaluate.readers.wilson_ci``; one observation per patient). ``n_boot`` resamples from a fixed
    ``seed``, so a summary is reproducible."""
    from neurorad.evaluate.readers import wilson_ci

    n = len(ok)
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)  # times each patient is drawn
    q = ((1 - level) / 2, (1 + level) / 2)

    def interval(num: np.ndarray, den: np.ndarray) -> list[float] | None:
        if not den.any():
            return None
        s_num, s_den = draws @ num, draws @ den
        keep = s_den > 0
        return [round(float(np.quantile(s_num[keep] / s_den[keep], a)), 3) for a in q]

    def lesion_interval(select) -> list[float] | None:  # noqa: ANN001 - (lesion, case) -> bool
        found = np.array([sum(_found(le, thr) for le in r["lesions"] if select(le, r)) for r in ok], float)
        total = np.array([sum(1 for le in r["lesions"] if select(le, r)) for r in ok], float)
        return interval(found, total)

    n_fp = np.array([sum(_false_positive(d, thr) for d in r["detections"]) for r in ok], float)
    pred = [any(d["peak"] >= thr for d in r["detections"]) for r in ok]
    pos = [p for p, r in zip(pred, ok, strict=True) if r["truth_active"] is True]
    neg = [not p for p, r in zip(pred, ok, strict=True) if r["truth_active"] is False]
    locations = sorted({le["location"] for r in ok for le in r["lesions"]})
    thick = sorted({r["slice_mm"] for r in ok})
    return {
        "method": f"cluster bootstrap over patients ({n_boot} resamples, seed {seed}, percentile) for lesion "
                  "sensitivities and FP per patient; Wilson score for patient sensitivity and specificity",
        "lesion_sensitivity": lesion_interval(lambda le, r: True),
        "false_positives_per_patient": interval(n_fp, np.ones(n)),
        "patient_sensitivity": [round(x, 3) for x in wilson_ci(sum(pos), len(pos))] if pos else None,
        "patient_specificity": [round(x, 3) for x in wilson_ci(sum(neg), len(neg))] if neg else None,
        "lesion_sensitivity_by_size": {_size_key(lo, hi): lesion_interval(
            lambda le, r, lo=lo, hi=hi: lo <= le["diameter_mm"] < hi) for lo, hi in SIZE_BINS},
        "lesion_sensitivity_by_contrast_to_wm": {f"{lo:g}-{hi:g}": lesion_interval(
            lambda le, r, lo=lo, hi=hi: lo <= le["contrast_to_wm"] < hi) for lo, hi in CONTRAST_BINS},
        "lesion_sensitivity_by_location": {loc: lesion_interval(lambda le, r, loc=loc: le["location"] == loc)
                                           for loc in locations},
        "lesion_sensitivity_by_slice_thickness": {f"{t:g} mm": lesion_interval(lambda le, r, t=t: r["slice_mm"] == t)
                                                  for t in thick},
        "lesion_sensitivity_by_kind": {k: lesion_interval(lambda le, r, k=k: le["kind"] == k)
                                       for k in ("new", "enlarging")},
    }


def _volume_measurable(le: dict, thr: float) -> bool:
    """A found lesion's volume is measurable when the workflow marked every detection covering it
    (peak >= ``thr``) measurable (records without the flag, from before it existed, count as measurable)."""
    return all(h.get("volume_measurable", True) for h in le["hits"] if h["peak"] >= thr)


def volume_error_text(ratios: list[float], n_flagged: int | None = None, detail: bool = False) -> str:
    """``median |detected/truth - 1| (n=...; k not measurable)`` of one bin."""
    flagged = "" if n_flagged is None else f"; {n_flagged} flagged not measurable"
    if not ratios:
        return f"n/a (n=0{flagged})"
    extra = f"; detected/truth median {np.median(ratios):.2f}" if detail else ""
    return f"{np.median(np.abs(np.subtract(ratios, 1))):.3f} (n={len(ratios)}{flagged}{extra})"


def operating_point(ok: list[dict], thr: float) -> dict:
    """Lesion and patient figures when detections with peak score >= ``thr`` are kept."""
    les = [le for r in ok for le in r["lesions"]]
    n_fp = sum(_false_positive(d, thr) for r in ok for d in r["detections"])
    pred = {r["case"]: any(d["peak"] >= thr for d in r["detections"]) for r in ok}
    pos = [r for r in ok if r["truth_active"] is True]
    neg = [r for r in ok if r["truth_active"] is False]
    found = sum(_found(le, thr) for le in les)
    return {"threshold": thr, "lesion_sensitivity": found / len(les) if les else float("nan"),
            "found": found, "lesions": len(les), "fp_per_patient": n_fp / max(len(ok), 1),
            "patient_sensitivity": sum(pred[r["case"]] for r in pos) / len(pos) if pos else float("nan"),
            "patient_specificity": sum(not pred[r["case"]] for r in neg) / len(neg) if neg else float("nan")}


def msseg_summary(ok: list[dict], thr: float) -> dict:
    """Lesion sensitivity (overall and per contrast, location and thicker-slice bin), lesion PPV and false positives
    per patient when every case is scored by the MSSEG challenges' criterion (:func:`msseg_marks`)."""
    marks = [msseg_marks(r, thr) for r in ok]
    scored = [(le, f, r) for r, m in zip(ok, marks, strict=True)
              for le, f in zip(r["lesions"], m["lesions"], strict=True) if f is not None]

    def rate(sel: list[tuple[dict, bool, dict]]) -> str:
        return _rate(sum(f for _, f, _ in sel), len(sel))

    dets = [x for m in marks for x in m["detections"]]
    n_tp, n_fp = dets.count("tp"), dets.count("fp")
    thick = sorted({r["slice_mm"] for r in ok})
    locations = sorted({s[0]["location"] for s in scored})
    return {
        "definition": f"animaSegPerfAnalyzer (MSSEG 2016 / 2021): alpha {MSSEG_ALPHA}, beta {MSSEG_BETA}, gamma "
                      f"{MSSEG_GAMMA}, objects over {MSSEG_MIN_VOLUME_MM3:g} mm^3; objects are the benchmark's truth "
                      "lesions and the workflow's lesion labels",
        "lesion_sensitivity": rate(scored),
        "lesions_not_scored_small": sum(f is None for m in marks for f in m["lesions"]),
        "lesion_sensitivity_by_contrast_to_wm": {
            f"{lo:g}-{hi:g}": rate([s for s in scored if lo <= s[0]["contrast_to_wm"] < hi])
            for lo, hi in CONTRAST_BINS},
        "lesion_sensitivity_by_location": {
            loc: rate([s for s in scored if s[0]["location"] == loc]) for loc in locations},
        "lesion_sensitivity_by_slice_thickness": {
            f"{t:g} mm": rate([s for s in scored if s[2]["slice_mm"] == t]) for t in thick},
        "lesion_ppv": _rate(n_tp, n_tp + n_fp),
        "false_positives_per_patient": round(n_fp / max(len(ok), 1), 3),
    }


def workflow_operating_point() -> float:
    """The lesion operating point the workflow reports at, ``PostParams().min_peak_score`` (a peak score on the
    scale whose core anchor is ``ms_difference.SCORE_AT_CORE``; 0.1 until workflow 1.34.0): the threshold every
    figure of the benchmark is read at unless the caller (``--operating-point``) names another, e.g. to read a
    record of an older workflow at its own point."""
    from neurorad.segment.ms_difference import PostParams

    return float(PostParams().min_peak_score)


def _at(thr: float | None) -> float:
    return workflow_operating_point() if thr is None else float(thr)


def patient_decision(ok: list[dict], thr: float | None = None, activity_thr: float | None = None) -> dict:
    """The workflow's patient-level decision (``clinical.ms.ms_decision`` since workflow 1.18.0) read off each
    case's detections: ACTIVE (gadolinium recommended) when a lesion reaches ``activity_thr``
    (``MSConfig.activity_min_peak_score``; None: any reported lesion), READER TO DECIDE when only lesions between
    ``thr`` and it were reported, else NOT NEEDED. Sensitivity: active patients called ACTIVE; specificity: stable
    patients not called ACTIVE; each READER TO DECIDE is counted apart, as neither (a reader looks at its
    candidates before contrast is given). The rows ``patient_sensitivity_active`` / ``patient_specificity_active``
    stay those of any reported lesion (every patient with a candidate called active, workflow 1.17.0 and before).
    Uncounted regions of tumefactive size, the other READER TO DECIDE, are not in the records and not read here."""
    from neurorad.clinical.ms import counts_for_activity

    thr = _at(thr)

    def call(r: dict) -> str:
        peaks = [d["peak"] for d in r["detections"] if d["peak"] >= thr]
        if not peaks:
            return "not needed"
        return "active" if any(counts_for_activity(p, activity_thr) for p in peaks) else "reader to decide"

    pos = [call(r) for r in ok if r["truth_active"] is True]
    neg = [call(r) for r in ok if r["truth_active"] is False]
    # where the records hold the workflow's own call (runs since workflow 1.18.0): how often the reading above
    # differs from it (0 unless an uncounted region of tumefactive size made a READER TO DECIDE, or the run used
    # another threshold). The benchmark runs the workflow with its lesion threshold lowered to the FROC floor, so
    # the workflow also counted lesions under ``thr`` as low-confidence: only cases without such a detection are
    # compared
    own = {"RECOMMENDED": "active", "READER TO DECIDE": "reader to decide", "NOT NEEDED": "not needed"}
    recorded = [r for r in ok if r.get("gadolinium") in own and all(d["peak"] >= thr for d in r["detections"])]
    return {"activity_min_peak_score": activity_thr,
            "cases_with_the_workflows_call": len(recorded),
            "cases_where_it_differs": sum(own[r["gadolinium"]] != call(r) for r in recorded),
            "sensitivity_called_active": _rate(pos.count("active"), len(pos)),
            "specificity_not_called_active": _rate(len(neg) - neg.count("active"), len(neg)),
            "reader_to_decide_active_patients": pos.count("reader to decide"),
            "reader_to_decide_stable_patients": neg.count("reader to decide")}


def summarise(results: list[dict], thr: float | None = None, floor: float = 0.02,
              activity_thr: float | None | str = "default") -> dict:
    """The benchmark's figures over ``results`` at the lesion operating point ``thr`` (None: the workflow's,
    :func:`workflow_operating_point`); ``activity_thr``: the patient decision's threshold (:func:`patient_decision`;
    "default": ``MSConfig().activity_min_peak_score``)."""
    thr = _at(thr)
    if activity_thr == "default":
        from neurorad.pipelines.ms_lesions import MSConfig

        activity_thr = MSConfig().activity_min_peak_score
    ok = [r for r in results if "error" not in r]
    les = [le for r in ok for le in r["lesions"]]

    def rate(sel: list[dict]) -> str:
        return _rate(sum(_found(le, thr) for le in sel), len(sel))

    def fp_pp(cases: list[dict]) -> float:
        return round(sum(_false_positive(d, thr) for r in cases for d in r["detections"]) / max(len(cases), 1), 3)

    by_size = {_size_key(lo, hi):
               rate([le for le in les if lo <= le["diameter_mm"] < hi]) for lo, hi in SIZE_BINS}
    by_contrast = {f"{lo:g}-{hi:g}": rate([le for le in les if lo <= le["contrast_to_wm"] < hi])
                   for lo, hi in CONTRAST_BINS}
    locs = sorted({le["location"] for le in les})
    by_location = {loc: rate([le for le in les if le["location"] == loc]) for loc in locs}
    shapes = sorted({le["shape"] for le in les})
    by_shape = {s: rate([le for le in les if le["shape"] == s]) for s in shapes}
    thick = sorted({r["slice_mm"] for r in ok})
    by_slice = {f"{t:g} mm": rate([le for r in ok if r["slice_mm"] == t for le in r["lesions"]]) for t in thick}
    fp_by_slice = {f"{t:g} mm": fp_pp([r for r in ok if r["slice_mm"] == t]) for t in thick}
    by_kind = {k: rate([le for le in les if le["kind"] == k]) for k in ("new", "enlarging")}
    # volume error of found lesions, by size bin (ratio detected / truth per lesion); below about
    # 1.7 slice thicknesses a lesion's volume is not identifiable from the images (docs/ms-lesions-log.md,
    # "Volumes of small lesions"): the workflow flags it, and the target is read on the lesions it
    # marked measurable; the all-lesion figures stay as separate rows
    # each found lesion's detected / truth volume, a detection over several lesions counted once against all of them
    ratio_of = {id(le): q for r in ok for le, q in zip(r["lesions"], lesion_volume_ratios(r, thr), strict=True)}

    def volume_ratios(sel: list[dict], lo: float, hi: float, measurable: bool | None = None) -> list[float]:
        return [ratio_of[id(le)] for le in sel if lo <= le["diameter_mm"] < hi and ratio_of[id(le)] is not None
                and (measurable is None or _volume_measurable(le, thr) == measurable)]

    def volume_rows(sel: list[dict], detail: bool) -> tuple[dict[str, str], dict[str, str]]:
        measured, every = {}, {}
        for lo, hi in SIZE_BINS:
            measured[_size_key(lo, hi)] = volume_error_text(volume_ratios(sel, lo, hi, True),
                                                           len(volume_ratios(sel, lo, hi, False)), detail)
            every[_size_key(lo, hi)] = volume_error_text(volume_ratios(sel, lo, hi), None, detail)
        return measured, every

    vol_err, vol_err_all = volume_rows(les, True)
    vol_err_by_slice: dict[str, dict[str, str]] = {}
    vol_err_by_slice_all: dict[str, dict[str, str]] = {}
    for t in thick:
        vol_err_by_slice[f"{t:g} mm"], vol_err_by_slice_all[f"{t:g} mm"] = volume_rows(
            [le for r in ok if r["slice_mm"] == t for le in r["lesions"]], False)
    flag_recorded = any("volume_measurable" in h for le in les for h in le["hits"])
    op = operating_point(ok, thr)
    msseg = msseg_summary(ok, thr)
    grid = sorted({round(float(t), 3) for t in [*np.geomspace(max(floor, 0.005), 0.9, 25), thr] if t >= floor})
    froc = [operating_point(ok, t) for t in grid]
    pos = [r for r in ok if r["truth_active"] is True]
    neg = [r for r in ok if r["truth_active"] is False]
    return {
        "cases": len(results), "failed": [(r["case"], r["error"]) for r in results if "error" in r],
        "operating_point_min_peak_score": thr,
        "lesion_sensitivity_all": rate(les),
        "lesion_sensitivity_by_size": by_size,
        "lesion_sensitivity_by_contrast_to_wm": by_contrast,
        "lesion_sensitivity_by_location": by_location,
        "lesion_sensitivity_by_shape": by_shape,
        "lesion_sensitivity_by_slice_thickness": by_slice,
        "lesion_sensitivity_by_kind": by_kind,
        "false_positives_per_patient": fp_pp(ok),
        "false_positives_per_patient_negatives": fp_pp(neg),
        "false_positives_per_patient_by_slice_thickness": fp_by_slice,
        "patient_sensitivity_active": _rate(round(op["patient_sensitivity"] * len(pos)) if pos else 0, len(pos)),
        "patient_specificity_active": _rate(round(op["patient_specificity"] * len(neg)) if neg else 0, len(neg)),
        "patient_decision": patient_decision(ok, thr, activity_thr),
        # over found lesions whose volume the workflow marked measurable (with the number it flagged)
        "median_abs_volume_error_by_size": vol_err,
        "median_abs_volume_error_by_slice_thickness_and_size": vol_err_by_slice,
        # every found lesion, flagged or not
        "median_abs_volume_error_by_size_all_lesions": vol_err_all,
        "median_abs_volume_error_by_slice_thickness_and_size_all_lesions": vol_err_by_slice_all,
        "volume_measurable_flag_recorded": flag_recorded,
        # the same detections scored as the MSSEG challenges score them (MSSEG_ALPHA): for comparison with
        # published challenge figures; the targets above are read on the benchmark's own 40 % criterion
        "msseg_criterion": msseg,
        "confidence_intervals_95": confidence_intervals(ok, thr),
        "froc": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in p.items()} for p in froc],
        "median_seconds_pipeline": float(np.median([r["seconds_pipeline"] for r in ok])) if ok else None,
        "targets": {"lesion_sensitivity": ">= 0.90", "fp_per_patient": "<= 0.5", "patient_sensitivity": ">= 0.95",
                    "patient_specificity": ">= 0.85", "bins": ">= 0.80",
                    "median_abs_volume_error": "<= 0.20 (lesions marked measurable)"},
        "published_anchors": {"candidate_tpr": 0.83, "candidate_fp_rate": 0.09, "cad_sensitivity": "> 0.95",
                              "gadolinium_sensitivity": 0.88, "gadolinium_specificity": 0.71,
                              "music_nnunet_lesion_tpr": 0.83},
    }


def input_slice_thickness_mm(spec: dict) -> float:
    """The largest voxel spacing of either input of a case (what the workflow's volume rule uses)."""
    st = spec.get("slice_thickness_mm", 1.0)
    return float(max(float(spec.get("in_plane_mm", 1.0)), *np.atleast_1d(np.asarray(st, float))))


def volume_rule_sweep(results: list[dict], ks: tuple[float, ...] = (0.0, 1.0, 1.2, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0,
                                                                    2.1, 2.2, 2.3, 2.4, 2.5, 2.75, 3.0),
                      thr: float | None = None, min_kept: int = 5, target: float = 0.20) -> list[dict]:
    """The volume-measurability rule (``ms_difference.volume_measurable``: measured diameter >= k x
    the coarser input's slice) re-applied after the fact with other ``k``: each detection's measured
    volume (common grid, as the workflow sees it) and the case's slice thickness are in the records.
    Per k: median |volume error| of the found lesions kept as measurable per size bin (n kept,
    n flagged), the fraction of found lesions flagged, and ``ok`` (every size bin, and every slice x
    size cell with >= ``min_kept`` kept lesions, at <= ``target``). For choosing the constant on
    TUNING pairs (``--tuning``), never on the held-out ones. ``thr``: the lesion operating point (None: the
    workflow's)."""
    from neurorad.segment.ms_difference import ClassifyParams, volume_measurable

    thr = _at(thr)

    ok = [r for r in results if "error" not in r]
    rows = []
    for k in ks:
        p = ClassifyParams(volume_min_diameter_slices=k)
        recs = []
        for r in ok:
            t = input_slice_thickness_mm(r["spec"])
            det_vol = {d["det"]: d["volume_mm3"] for d in r["detections"]}
            for le, ratio in zip(r["lesions"], lesion_volume_ratios(r, thr), strict=True):
                if ratio is None:
                    continue
                hits = [h for h in le["hits"] if h["peak"] >= thr]
                keep = all(volume_measurable(det_vol.get(h["det"], h["volume_mm3"]), t, p) for h in hits)
                recs.append((t, le["diameter_mm"], abs(ratio - 1), keep))
        by_size, good = {}, True
        for lo, hi in SIZE_BINS:
            e = [x[2] for x in recs if lo <= x[1] < hi and x[3]]
            n_flag = sum(1 for x in recs if lo <= x[1] < hi and not x[3])
            med = float(np.median(e)) if e else None
            by_size[f"{lo}-{hi if hi < 100 else ''}"] = (round(med, 3) if med is not None else None, len(e), n_flag)
            good &= med is None or med <= target
            for t in sorted({x[0] for x in recs}):
                ec = [x[2] for x in recs if x[0] == t and lo <= x[1] < hi and x[3]]
                good &= len(ec) < min_kept or float(np.median(ec)) <= target
        rows.append({"k_slices": k, "flagged": round(sum(not x[3] for x in recs) / max(len(recs), 1), 3),
                     "found": len(recs), "by_size": by_size, "ok": bool(good)})
    return rows


def warning_counts(results: list[dict]) -> dict[str, int]:
    """Cases with any quality warning, with the fusion engine's disagreement warning (its quality alarm), and with
    an enlarging lesion smaller at follow-up than its baseline (``ms_lesions.shrunken_enlarging_warning``)."""
    from neurorad.pipelines.ms_lesions import SHRUNKEN_ENLARGING

    ok = [r for r in results if "error" not in r]

    def having(text: str) -> int:
        return sum(any(text in w for w in r.get("warnings", [])) for r in ok)

    return {"cases_with_warnings": sum(bool(r.get("warnings")) for r in ok),
            "cases_with_engine_disagreement": having("engines disagree"),
            "cases_with_shrunken_enlarging": having(SHRUNKEN_ENLARGING)}


def choose_operating_point(results: list[dict], max_fp_per_patient: float = 0.3, floor: float = 0.02) -> dict:
    """The operating point on the tuning set: among FROC points with FP per patient <=
    ``max_fp_per_patient`` (a margin under the 0.5 target), those with the highest lesion
    sensitivity and then patient specificity form a plateau of thresholds; the point at its
    geometric middle is returned (away from both the FP and the miss side).

    The figures are a staircase in the threshold T (a detection is kept when its peak >= T): constant on each
    interval (p_prev, p] between consecutive distinct peaks, so every step is read exactly, at its top, and the
    plateau's edges are peaks. Until workflow 1.34.0 the rule read 60 geometric grid points from the floor to 0.9
    (about 6.7 % apart): on the 384 widened tuning pairs the plateau (0.0777, 0.0798] fell between two of them and
    the rule returned the grid point under it, 0.0775, whose specificity is 0.898 instead of the plateau's 0.914."""
    ok = [r for r in results if "error" not in r]
    lo_floor = max(floor, 0.005)
    peaks = {float(d["peak"]) for r in ok for d in r["detections"]}
    peaks |= {float(h["peak"]) for r in ok for le in r["lesions"] for h in le["hits"]}
    tops = sorted(p for p in peaks if lo_floor < p <= 0.9) or [lo_floor]
    if tops[-1] < 0.9:
        tops.append(0.9)  # above every peak: nothing reported (the old grid's last point)
    steps = list(zip([lo_floor, *tops[:-1]], tops, strict=True))  # (lower edge, exclusive; top), figures at top
    pts = [(lo, operating_point(ok, top)) for lo, top in steps]
    good = [(lo, p) for lo, p in pts if p["fp_per_patient"] <= max_fp_per_patient]
    if not good:
        return pts[-1][1]

    def key(p: dict) -> tuple[float, float]:
        return round(p["lesion_sensitivity"], 6), p["patient_specificity"]

    best = max(key(p) for _, p in good)
    plateau = [(lo, p["threshold"]) for lo, p in good if key(p) == best]
    lower, upper = min(lo for lo, _ in plateau), max(top for _, top in plateau)
    return operating_point(ok, float(np.sqrt(lower * upper)))


def core_thresholds(threshold: float, params) -> dict:  # noqa: ANN001 - CandidateParams
    """z/rel core anchors that put score 0.1 where score ``threshold`` was (same extents)."""
    lo, hi = np.log(0.01 / 0.99), np.log(0.1 / 0.9)
    lt = np.log(threshold / (1 - threshold))
    out = {}
    for name, ext, core in (("z", params.z_at_extent, params.z_at_core), ("rel", params.rel_at_extent,
                                                                          params.rel_at_core)):
        a = (hi - lo) / (core - ext)
        b = core - hi / a
        out[f"{name}_at_core"] = round(float(b + lt / a), 4)
    return out


def engine_of(record: dict, engine: str) -> bool:
    """Whether a benchmark record holds ``engine``'s result. A record names the benchmark engine it ran
    (``engine``; before workflow 1.22.0 only a multi-engine run's records did) and, since 1.22.0, the workflow's
    engine (``lesion_engine``). ``classical`` and ``fusion`` also take the records of the
    default engine that ran them: before 1.22.0 (no ``lesion_engine``) the default was the classical engine."""
    ran = record.get("engine", "default")
    if ran == engine:
        return True
    if ran == "default" and engine in ("classical", "fusion"):
        return record.get("lesion_engine", "classical") == engine
    return False


def load_results(files: list[Path], engine: str = "default") -> list[dict]:
    """The per-case records of one or more runs, sorted by case: each file a ``--jsonl`` file (one record per line)
    or a ``--json`` file (``{"summary": ..., "cases": [...]}``). A multi-engine run gives the rows of ``engine``.
    Pooled files must hold disjoint cases (the case index is the seed): a case in two files is refused by name, as
    is a file that is neither form."""
    results: list[dict] = []
    seen: dict[int, Path] = {}
    for f in files:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{f}: cannot read ({exc.strerror})") from exc
        try:
            whole = json.loads(text)
            rows = whole["cases"] if isinstance(whole, dict) and "cases" in whole else [whole]
        except json.JSONDecodeError:
            try:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise ValueError(f"{f}: line {exc.lineno} is not JSON: neither a --json nor a --jsonl file") from exc
        if not all(isinstance(r, dict) and "case" in r for r in rows):
            raise ValueError(f"{f}: not a benchmark run (records without a 'case')")
        if any("engine" in r for r in rows):  # the rows of the engine asked for (a run before workflow 1.22.0 of
            # one engine named none: all its rows)
            rows = [r for r in rows if engine_of(r, engine)]
        for r in rows:
            if r["case"] in seen:
                raise ValueError(f"case {r['case']} is in both {seen[r['case']]} and {f}: pool runs of disjoint cases")
            seen[r["case"]] = Path(f)
        results.extend(rows)
    results.sort(key=lambda r: r["case"])
    return results


def with_reruns(results: list[dict], rerun_files: list[Path], engine: str = "default") -> list[dict]:
    """``results`` with the records of ``rerun_files`` (``--rerun``: pairs run again after a change that reaches
    only them, e.g. ``--case-list``) in place of the same pairs' records; the rerun files hold disjoint cases, each
    a case of ``results`` (a rerun of a pair the run does not hold is refused by name). The records keep which run
    they came from (``rerun_of``), so a pooled summary is traceable to its files."""
    if not rerun_files:
        return results
    reruns = {r["case"]: r for r in load_results(rerun_files, engine)}
    held = {r["case"] for r in results}
    missing = sorted(set(reruns) - held)
    if missing:
        raise ValueError(f"--rerun holds case(s) {missing} that the records it replaces in do not (--summarise files, "
                         f"--compare's AFTER): a rerun replaces pairs")
    return [{**reruns[r["case"]], "rerun_of": "--summarise"} if r["case"] in reruns else r for r in results]


def compare_runs(before: list[dict], after: list[dict], thr: float | None = None) -> dict:
    """Two runs of the same pairs compared pair by pair (each a :func:`load_results` list of one engine): the
    lesions each finds that the other does not (``_found`` at ``thr``), the false positives (peak >= ``thr``), the
    lesions whose measured volume changed (:func:`lesion_volume_ratios`, to 0.1 %) and the gadolinium calls that
    differ. ``same_detections``: every pair has the same lesions found and as many false positives (their peaks
    may differ), the check that a change leaves the results as they were (another numeric engine, another library
    version); pairs in only one run are listed, not compared. ``thr`` None: the workflow's operating point."""
    thr = _at(thr)
    a = {r["case"]: r for r in before if "error" not in r}
    b = {r["case"]: r for r in after if "error" not in r}
    common = sorted(set(a) & set(b))
    rows, totals = [], {"lesions": 0, "found_before": 0, "found_after": 0, "fp_before": 0, "fp_after": 0,
                        "volume_changed": 0, "gadolinium_changed": 0}
    for c in common:
        ra, rb = a[c], b[c]
        if len(ra["lesions"]) != len(rb["lesions"]):
            raise ValueError(f"case {c}: {len(ra['lesions'])} lesions in one run, {len(rb['lesions'])} in the other: "
                             "not the same pair")
        fa = {le["id"] for le in ra["lesions"] if _found(le, thr)}
        fb = {le["id"] for le in rb["lesions"] if _found(le, thr)}
        pa = sorted(round(d["peak"], 3) for d in ra["detections"] if _false_positive(d, thr))
        pb = sorted(round(d["peak"], 3) for d in rb["detections"] if _false_positive(d, thr))
        va, vb = lesion_volume_ratios(ra, thr), lesion_volume_ratios(rb, thr)
        vol = {le["id"]: [round(x, 3), round(y, 3)] for le, x, y in zip(ra["lesions"], va, vb, strict=True)
               if x is not None and y is not None and abs(x - y) > 1e-3 * max(x, y)}
        gad = (ra.get("gadolinium"), rb.get("gadolinium"))
        totals["lesions"] += len(ra["lesions"])
        totals["found_before"] += len(fa)
        totals["found_after"] += len(fb)
        totals["fp_before"] += len(pa)
        totals["fp_after"] += len(pb)
        totals["volume_changed"] += len(vol)
        totals["gadolinium_changed"] += gad[0] != gad[1]
        if fa != fb or pa != pb or vol or gad[0] != gad[1]:
            rows.append({"case": c, "found_only_before": sorted(fa - fb), "found_only_after": sorted(fb - fa),
                         "fp_peaks_before": pa, "fp_peaks_after": pb, "volume_ratio_before_after": vol,
                         "gadolinium_before_after": list(gad)})
    lost = sum(len(r["found_only_before"]) for r in rows)
    gained = sum(len(r["found_only_after"]) for r in rows)
    return {"pairs": len(common), **totals, "lesions_lost": lost, "lesions_gained": gained,
            "same_detections": lost == gained == 0 and all(len(r["fp_peaks_before"]) == len(r["fp_peaks_after"])
                                                         for r in rows),
            "only_before": sorted(set(a) - set(b)), "only_after": sorted(set(b) - set(a)), "differences": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phantom", default="original",
                    choices=["original", *WIDENED_PHANTOMS, *INDEPENDENT_TEMPLATES],
                    help="original: the regression set; widened: issue 17's phantom (widened-crossed: its pairs in "
                         "two slice planes, 3 or 5 mm; widened-oriented: each time point's plane drawn); independent: "
                         "pairs of "
                         "bench/ms_sim_independent.py, a simulator written without reading the phantom or the "
                         "detector (its own grids: --voxel-mm does not apply); independent-mni152: the same simulator "
                         "with MNI152 2009a's brain instead of Colin27's")
    ap.add_argument("--engine", default="default",
                    help="default: MSConfig(), the workflow's default engine (fusion since workflow 1.22.0, classical "
                         "before; each record names the engine that ran, lesion_engine); classical: the difference "
                         "engine (local statistics); global: the classical engine before issue 17; learned: the "
                         "two-time-point network (MSConfig.lesion_engine); fusion: classical + learned. Several, "
                         "comma-separated (e.g. classical,learned,fusion): steps 1-5 run once per pair and each "
                         "engine's rows carry its name (summarise with --summarise FILE --engine NAME; NAME classical "
                         "or fusion also reads the rows a run of the default engine made with it)")
    ap.add_argument("--input", dest="input_as", default="as-simulated", choices=INPUTS,
                    help="what the workflow is given: the images as simulated (default), or the follow-up or both "
                         "time points skull-stripped first (deepbet's mask dilated by one voxel), as a site that "
                         "archives brain-extracted series sends them, or z-scored over the whole image (mean 0, SD "
                         "1), as research pipelines write them, or in-plane-x2: both on twice as many in-plane "
                         "pixels (cubic), as a 512-matrix reconstruction")
    ap.add_argument("--cases", type=int, default=30, help="number of cases (default 30)")
    ap.add_argument("--first", type=int, default=0, help="index of the first case")
    ap.add_argument("--case-list", default=None, metavar="INDICES",
                    help="run these cases instead of --first/--cases, e.g. 3,7,12-15 (rerun the pairs a change can "
                         "reach; pool with the other pairs' records by --summarise)")
    ap.add_argument("--tuning", action="store_true", help="widened TUNING seeds (100000+): choose the operating point")
    ap.add_argument("--froc-floor", type=float, default=0.02,
                    help="run with min_peak_score lowered to this, to read the FROC (the figures are read at "
                         "--operating-point)")
    ap.add_argument("--operating-point", type=float, default=None, metavar="SCORE",
                    help="read every figure at this lesion peak-score threshold (default: the workflow's own, "
                         "PostParams().min_peak_score; e.g. 0.1 for a record of workflow 1.33.0 or before)")
    ap.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)), help="parallel processes")
    ap.add_argument("--voxel-mm", type=float, default=1.0, help="in-plane voxel size (1.0 as the issue; 1.5 faster)")
    ap.add_argument("--json", type=Path, default=None, help="write per-case results and the summary here")
    ap.add_argument("--jsonl", type=Path, default=None,
                    help="append each finished case here as it completes (a partial run can be summarised)")
    ap.add_argument("--summarise", type=Path, action="append", default=None, metavar="FILE",
                    help="only summarise the cases of a --jsonl or --json file; repeat it to pool runs of disjoint "
                         "cases (e.g. seeds 0-39 and --first 40), summarised as one set")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="run a variant: group.param=value (e.g. classify.split_enlarging=False) or a field of "
                         "MSConfig itself (e.g. elastix_iterations=250), as bench/ms_sweep.py --set; repeatable; "
                         "applies to every --engine")
    ap.add_argument("--compare", type=Path, nargs=2, default=None, metavar=("BEFORE", "AFTER"),
                    help="compare two runs of the same pairs pair by pair (--json or --jsonl files; with --engine for "
                         "a multi-engine run's rows): lesions found by one only, false positives, measured volumes, "
                         "gadolinium calls")
    ap.add_argument("--rerun", type=Path, action="append", default=[], metavar="FILE",
                    help="with --summarise or --compare's AFTER: records of pairs run again (e.g. --case-list after a "
                         "change that reaches only those pairs) replace the same pairs' records of the other files")
    ap.add_argument("--volume-rule-sweep", action="store_true",
                    help="with --summarise: re-apply the volume-measurability rule with other constants (choose it "
                         "on --tuning pairs only)")
    args = ap.parse_args(argv)
    bad = [e for e in args.engine.split(",") if e not in ENGINES]
    if bad:
        ap.error(f"unknown engine(s) {', '.join(bad)}; choose from {', '.join(ENGINES)}")
    if args.rerun and not (args.summarise or args.compare):
        ap.error("--rerun replaces records of --summarise files (or of --compare's AFTER); it runs nothing")
    settings = tuple(args.settings)
    try:  # refuse an unknown setting before any pair runs
        for e in args.engine.split(","):
            engine_config(e, args.froc_floor, settings)
    except ValueError as exc:
        ap.error(str(exc))
    if args.compare:
        try:
            before, after = (load_results([f], args.engine) for f in args.compare)
            after = with_reruns(after, args.rerun, args.engine)
            cmp = compare_runs(before, after, args.operating_point)
        except ValueError as exc:
            ap.error(str(exc))
        print(json.dumps({"before": str(args.compare[0]), "after": str(args.compare[1]), "engine": args.engine, **cmp},
                         indent=2))
        return 0
    if args.summarise:
        try:
            results = with_reruns(load_results(args.summarise, args.engine), args.rerun, args.engine)
        except ValueError as exc:
            ap.error(str(exc))
        summary = summarise(results, args.operating_point, args.froc_floor)
        summary.update(phantom=args.phantom, engine=args.engine, summarised_from=[str(f) for f in args.summarise],
                       **({"reruns": [str(f) for f in args.rerun]} if args.rerun else {}),
                       **warning_counts(results))
        if args.volume_rule_sweep:
            summary["volume_rule_sweep"] = volume_rule_sweep(results, thr=args.operating_point)
        print(json.dumps(summary, indent=2))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        idx = case_indices(args.case_list, args.first, args.cases)
    except ValueError as exc:
        ap.error(str(exc))
    results = []
    op = _at(args.operating_point)  # the threshold each finished case is printed at
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as ex:
        futs = {ex.submit(run_case, i, args.voxel_mm, args.phantom, args.engine, args.froc_floor, args.tuning,
                          settings, args.input_as): i for i in idx}
        for fu in as_completed(futs):
            got = fu.result()
            for r in got if isinstance(got, list) else [got]:
                results.append(r)
                if args.jsonl:
                    with args.jsonl.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(r, default=str) + "\n")
                tag = f" {r['engine']}" if "engine" in r else ""
                if "error" in r:
                    print(f"case {r['case']}{tag}: ERROR {r['error']}", flush=True)
                else:
                    found = sum(_found(le, op) for le in r["lesions"])
                    n_fp = sum(_false_positive(d, op) for d in r["detections"])
                    print(f"case {r['case']:3d}{tag} slice {r['slice_mm']:g} mm active={r['truth_active']!s:5} "
                          f"found {found}/{len(r['lesions'])} fp {n_fp} ({r['seconds_pipeline']:.0f} s)", flush=True)
    results.sort(key=lambda r: r["case"])
    engines = args.engine.split(",")
    by_engine = {e: [r for r in results if r.get("engine", e) == e] for e in engines}
    summaries = {}
    for e, rows in by_engine.items():
        sm = summarise(rows, args.operating_point, args.froc_floor)
        sm.update(wall_seconds=round(time.perf_counter() - t0, 1), workers=args.workers, voxel_mm=args.voxel_mm,
                  phantom=args.phantom, engine=e, tuning=args.tuning, first=args.first, settings=list(settings),
                  input=args.input_as,
                  **({"case_list": idx} if args.case_list is not None else {}),
                  **warning_counts(rows))
        summaries[e] = sm
    summary = summaries[engines[0]] if len(engines) == 1 else {"engines": summaries}
    if args.tuning:
        from neurorad.pipelines.ms_lesions import MSConfig

        best = choose_operating_point(by_engine[engines[0]], 0.3, args.froc_floor)
        summary["chosen_operating_point"] = best
        summary["chosen_core_thresholds"] = core_thresholds(best["threshold"], MSConfig().candidate)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "cases": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
