"""FROC sweep of the classical MS engine's operating point on widened TUNING phantoms.

The tuning pairs (``widened_ms_options(100000 + i)``, seeds never used by the benchmark's
evaluation set) are run once through steps 1-5 (load .. normalise) and cached; the detection
steps 6-9 then run with ``post.min_peak_score`` lowered to ``--floor``, every detection keeps
its peak score, and the FROC (lesion sensitivity vs false positives per patient, a lesion found
when detections cover >= 40% of it in the common space) is read off by raising the threshold.
The chosen point is the most sensitive one with <= ``--max-fp`` FP per patient (a margin under
the 0.5 target); it is printed as the candidate step's ``z_at_core`` / ``rel_at_core`` (score 0.1,
the regional workflow's core threshold, moved to where the chosen score was).

Usage: ``python bench/ms_sweep.py --cases 1-10 --voxel-mm 1.5 [--engine global] [--cache bench/out/ms_sweep]``

``--engine learned`` or ``fusion`` runs those engines (the shipped model, or ``--set learned.model=FOLDER``); the
network's probability is cached beside each pair per model weights and numeric engine, so variants of the learned
engine's own thresholds run it once: ``--set learned.core_probability=0.3 --set learned.extent_probability=0.15`` (in an
order that keeps the extent under the core after each one: each ``--set`` is checked as it is applied; the
fusion engine's learned part has its own pair, ``learned.fusion_extent_probability`` and
``learned.fusion_core_probability``). The FROC's ``--floor`` lowers the score threshold a candidate's peak must
reach, which for the learned score is the core anchor; the extent anchor (where candidates end, which decides
whether they cover a lesion) does not move with it, so it is swept with ``--set``.

A rule variant is run with ``--set group.param=value`` (repeatable; groups of ``MSConfig``: candidate, fp,
post, classify, e.g. ``--set fp.drift_ratio=0.45``) on the same cached pairs; ``--phantom original`` uses
original-phantom tuning pairs (``ms_benchmark.case_spec(i)``, seed 1000 + i: use i >= 100, the benchmark
evaluates i < 100); ``--phantom widened-crossed`` (or ``widened-oriented``) the same tuning seeds in other slice
planes (``widened_ms_options(orientation=...)``: 3 or 5 mm slices of two planes, or each time point's plane drawn;
their lesions, motion and protocol are the axial pairs'); ``--prep-set field=value`` (repeatable) sets a field of
``MSConfig`` that steps 1-5 read (e.g. ``n4_shrink_mm=5.0``): those pairs are prepared and cached in a subfolder
of ``--cache`` named after the settings, so a preprocessing variant is compared pair by pair with the default on the
same seeds; ``--json FILE`` keeps the per-pair records (lesions with their kind, truth volume and per-detection
coverage, detections with peak score, volume and FP flag: ``score_case``) for a pair-by-pair comparison of two
variants, volumes included. The printed summary ends with the FROC per class of the pair's thicker slice
(``by_thicker_slice``: found lesions, false positives and patient specificity at scores 0.1-0.5).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np


def _indices(spec: str) -> list[int]:
    """``1-3,7`` -> [1, 2, 3, 7]; an empty spec (or part) gives nothing. A part that is not an index or an ascending
    range of indices >= 0 is refused by name (ValueError)."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        a, _, b = part.partition("-")
        try:
            lo, hi = int(a), int(b or a)
        except ValueError:
            raise ValueError(f"{part!r} is not an index or a range such as 12-15") from None
        if lo < 0 or hi < lo:
            raise ValueError(f"{part!r} is not an ascending range of indices >= 0")
        out += list(range(lo, hi + 1))
    return out


def prep_cache(cache: Path, prep_settings: list[str]) -> Path:
    """The cache folder of pairs prepared with ``prep_settings`` (top-level MSConfig fields): ``cache`` itself for
    none, else a subfolder named after the sorted settings (``prep_n4_shrink_mm=5.0``)."""
    if not prep_settings:
        return cache
    name = "prep_" + "_".join(sorted(t.strip().replace("/", "-") for t in prep_settings))
    return cache / name


#: the phantoms a sweep runs on (``--phantom``): ``ms_benchmark``'s widened phantoms (``widened``, and its pairs in
#: other slice planes, ``widened-crossed`` and ``widened-oriented``: ``ms_benchmark.WIDENED_PHANTOMS``; cached as
#: ``tuning_<i>``, ``tuning_crossed_<i>``, ``tuning_oriented_<i>``) and the original one (pairs >= 100)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from ms_benchmark import WIDENED_PHANTOMS  # noqa: E402 - bench/ is not a package; one list of the phantoms' names

PHANTOMS = (*WIDENED_PHANTOMS, "original")


def prepare(i: int, voxel_mm: float, cache: Path, phantom: str = "widened",
            prep_settings: list[str] | None = None, held_out: bool = False) -> Path:
    """Steps 1-5 of tuning pair ``i`` (cached) with its truth moved into the common space. ``phantom``:
    one of :data:`PHANTOMS` (``ms_benchmark.case_spec(i, voxel_mm, phantom, tuning=True)``; original: i >= 100).
    ``prep_settings``: ``field=value`` of MSConfig for steps 1-5 (:func:`apply_overrides`, top level), cached in
    :func:`prep_cache`. The dict also holds the baseline lesions in the common space (``tb``; pairs cached before it
    lack it) and the finer input's largest voxel (``finer_input_voxel_mm``, which the false-positive step reads since
    workflow 1.17.0; added to older pairs when :func:`load_pair` first reads them) and whether the inputs are slices of
    two orientations (``crossed_slices``, read since workflow 1.26.0; likewise). ``held_out``: the
    benchmark's own evaluation pair ``i`` instead (widened only, cached as
    ``heldout_<i>_<voxel>.pkl``), for analyses that choose nothing (``bench/ms_oracle.py``); the sweep itself
    never prepares one. ``phantom="independent"``: pair ``i`` of the independently written simulator
    (``ms_benchmark.independent_case``, cached as ``independent_<i>_<voxel>.pkl``; ``"independent-mni152"``: the
    same simulator in MNI152's brain, ``independent_mni152_<i>_<voxel>.pkl``), likewise only for analyses that
    choose nothing (it has no tuning seeds; the sweep's command line does not offer it). It has no baseline lesion
    map, so its dict lacks ``tb``; its lesions carry ``location_bin`` (``MS_LOCATION_BINS``) as the phantom's do."""
    cache = prep_cache(cache, prep_settings or [])
    if phantom not in (*PHANTOMS, "independent", "independent-mni152"):  # ms_benchmark's names
        raise ValueError(f"unknown phantom {phantom!r} ({' | '.join(PHANTOMS)} | independent | independent-mni152)")
    if held_out and not phantom.startswith("widened"):
        raise ValueError("held-out pairs are prepared for the widened phantoms only")
    if phantom == "original" and i < 100:
        raise ValueError(f"original-phantom tuning pair {i}: the benchmark evaluates i < 100; use i >= 100")
    plane = phantom.removeprefix("widened").removeprefix("-")  # "", "crossed", "oriented"
    plane = f"{plane}_" if plane else ""
    path = cache / (f"heldout_{plane}{i}_{voxel_mm:g}.pkl" if held_out else
                    f"tuning_{plane}{i}_{voxel_mm:g}.pkl" if phantom.startswith("widened") else
                    f"{phantom.replace('-', '_')}_{i}_{voxel_mm:g}.pkl" if phantom.startswith("independent") else
                    f"tuning_original_{i}_{voxel_mm:g}.pkl")
    if path.exists():
        return path
    from neurorad.pipelines import ms_lesions as ms
    from neurorad.preprocess.transforms import resample
    from neurorad.store.storage import atomic_write

    case, opts = _case(i, voxel_mm, phantom, held_out)
    cfg = apply_overrides(ms.MSConfig(), list(prep_settings or []), top_level=True)
    ctx = ms.MSContext(cfg, cache, case.baseline_flair, case.followup_flair)
    for step in ms.STEPS[:5]:
        step.run(ctx)
    assert ctx.ref is not None
    d = dict(bn=ctx.bn, fn=ctx.fn, brain=ctx.brain, sp=ctx.ref.spacing_mm, vox=ctx.ref.voxel_volume_mm3,
             tn=np.asarray(resample(case.truth["truth_new"], ctx.ref, ctx.Tf, "nearest").data),
             te=np.asarray(resample(case.truth["truth_enlarging"], ctx.ref, ctx.Tf, "nearest").data),
             lesions=case.case["lesions"], opts=opts, finer_input_voxel_mm=ctx.finer_input_voxel_mm,
             crossed_slices=ctx.crossed_slices, bias=_bias_setting(cfg),
             crossed_round_trip=bool(cfg.crossed_round_trip))
    if "truth_baseline_lesions" in case.truth:
        d["tb"] = np.asarray(resample(case.truth["truth_baseline_lesions"], ctx.ref, ctx.Tb, "nearest").data)
    atomic_write(path, pickle.dumps(d), fsync=False)  # a stopped run never leaves half a cache file
    return path


def _case(i: int, voxel_mm: float, phantom: str, held_out: bool):  # noqa: ANN202 - (PhantomCase, options)
    """Pair ``i`` of ``phantom`` (see :func:`prepare`) and the options it was made with."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from ms_benchmark import INDEPENDENT_TEMPLATES, case_spec, independent_case

    from neurorad.phantom.cases import MS_LOCATION_BINS, ms_pair

    if phantom in INDEPENDENT_TEMPLATES:
        # its own grids: the workflow's common grid is MSConfig's (voxel_mm unused)
        case, opts = independent_case(i, INDEPENDENT_TEMPLATES[phantom])
        case.case["lesions"] = [{**les, "location_bin": MS_LOCATION_BINS.get(les["location"], les["location"])}
                                for les in case.case["lesions"]]
        return case, opts
    opts = case_spec(i, voxel_mm, phantom, tuning=not held_out)  # widened: seed 100000 + i; original: 1000 + i
    return ms_pair(**opts), opts


def _bias_setting(cfg) -> dict:  # noqa: ANN001 - MSConfig
    """How step 4 (N4) treated the intensity scale (the shift's size only where it is used) and, since workflow
    1.21.0, how it sampled a fine grid (``n4_fine_grid_sample_mm``, recorded when set): a cached pair prepared
    another way is not the workflow's."""
    out: dict = ({"n4_nonpositive": "relative", "n4_shift_medians": float(cfg.n4_shift_medians)}
                 if cfg.n4_nonpositive == "relative" else {"n4_nonpositive": cfg.n4_nonpositive})
    if cfg.n4_fine_grid_sample_mm is not None:
        out["n4_fine_grid_sample_mm"] = float(cfg.n4_fine_grid_sample_mm)
    return out


def load_pair(i: int, voxel_mm: float, cache: Path, phantom: str = "widened", prep_settings: list[str] | None = None,
              held_out: bool = False) -> tuple[Path, dict]:
    """The cached pair of :func:`prepare` (made when missing) and its dict, read once. A pair cached before the
    false-positive step read the inputs' geometry (workflow 1.17.0) lacks ``finer_input_voxel_mm``
    (:func:`neurorad.pipelines.ms_lesions.finer_input_voxel_mm`): the pair is made again and loaded (step 1 only, a
    few seconds) and the value added to the cached dict, so every cached pair is judged as the workflow would judge
    it; so is ``crossed_slices`` (:func:`neurorad.pipelines.ms_lesions.crossed_slices`, workflow 1.26.0), which is
    False for the project's own phantoms (both time points sliced along z) without loading them. A pair whose N4
    treated the intensity scale otherwise than the workflow now does (pairs cached before workflow 1.20.0 shifted by
    one unit) is refused, naming the file: its images are not the workflow's; so is a crossed pair prepared with the
    other ``MSConfig.crossed_round_trip`` (judged after ``crossed_slices`` is known)."""
    path = prepare(i, voxel_mm, cache, phantom, prep_settings, held_out)
    d = pickle.loads(path.read_bytes())
    from neurorad.pipelines import ms_lesions as ms

    cfg = apply_overrides(ms.MSConfig(), list(prep_settings or []), top_level=True)
    now = _bias_setting(cfg)
    then = d.get("bias", {"n4_nonpositive": "shift"})  # pairs cached before 1.20.0 recorded nothing
    if then != now:
        raise ValueError(f"{path}: prepared with N4 {then}, the workflow now runs {now} (workflows 1.20.0, 1.21.0): "
                         f"delete the cache folder {path.parent} (or give another --cache) to prepare the pairs again")
    if "crossed_slices" not in d and phantom in ("widened", "original"):
        # workflow 1.26.0 reads whether the inputs are slices of two orientations (ms.crossed_slices); the
        # project's phantoms slice both time points along z, so a pair cached before it is not crossed
        d["crossed_slices"] = False
    if "finer_input_voxel_mm" not in d or "crossed_slices" not in d:
        from neurorad.store.storage import atomic_write

        case, _ = _case(i, voxel_mm, phantom, held_out)
        ctx = ms.MSContext(cfg, path.parent, case.baseline_flair, case.followup_flair)
        ms.STEPS[0].run(ctx)
        assert ctx.b0 is not None and ctx.f0 is not None
        d["finer_input_voxel_mm"] = ms.finer_input_voxel_mm(ctx.b0, ctx.f0)
        d["crossed_slices"] = ms.crossed_slices(ctx.b0, ctx.f0)
        atomic_write(path, pickle.dumps(d), fsync=False)
    # a crossed pair prepared without the round trip the workflow now takes (or with it) is not the workflow's
    # (MSConfig.crossed_round_trip; pairs cached before it recorded nothing, and took none); read once whether the
    # pair is crossed is known, also for a pair whose geometry was just filled in
    took = bool(d.get("crossed_round_trip", False))
    if d["crossed_slices"] and took != bool(cfg.crossed_round_trip):
        raise ValueError(f"{path}: a crossed pair prepared with crossed_round_trip={took}, the workflow now runs "
                         f"{bool(cfg.crossed_round_trip)}: delete it (or give another --cache) to prepare it again")
    return path, d


def learned_probability_cached(pair_path: Path, d: dict, cfg) -> np.ndarray | None:  # noqa: ANN001 - MSConfig
    """The learned model's probability on a cached pair (``None`` for the classical engine), cached beside the
    pair per model weights and numeric engine (``<pair>.learned_<sha256[:16]>_<engine>.npz``, float32 as the workflow
    computes it): a sweep of the learned engine's own thresholds (``--set learned.core_probability=...``) then runs
    the network once per pair, not once per variant. Computed exactly as the candidate step does
    (:func:`neurorad.segment.ms_learned.learned_probability`)."""
    if cfg.lesion_engine == "classical":
        return None
    from neurorad.image.volume import Volume
    from neurorad.segment import ms_learned

    rec = ms_learned.engine_record(cfg.learned.model, cfg.learned.mirror_axes)
    sha = rec["sha256"] or "unhashed"
    # the numeric engine is part of the key: bfloat16 and float32 differ at single voxels (session 40), so a cache
    # made with one is never read by a run of the other; so is the test-time mirroring (LearnedParams.mirror_axes)
    mirrored = "_mirror" + "".join(map(str, rec["mirror_axes"])) if rec["mirror_axes"] else ""
    path = pair_path.with_name(f"{pair_path.stem}.learned_{sha[:16]}_{rec['inference_engine'] or 'engine'}"
                               f"{mirrored}.npz")
    if path.exists():
        with np.load(path) as cached:  # an NpzFile holds its file open until closed
            return cached["p"]
    bn = np.asarray(d["bn"], np.float32)
    ref = Volume(bn, np.diag([*map(float, d["sp"]), 1.0]))
    seg = ms_learned.learned_segmenter(cfg.learned.model, cfg.learned.mirror_axes)
    p = ms_learned.learned_probability(seg, ref, np.asarray(d["fn"]), np.asarray(d["brain"], bool))
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, p=p)
    tmp.replace(path)  # a stopped sweep never leaves half a cache file under the final name
    return p


def detect(d: dict, cfg, learned_probability: np.ndarray | None = None,  # noqa: ANN001 - MSConfig
           ) -> tuple[np.ndarray, list[float]]:
    """Steps 6-9 on a cached pair: label map and each label's peak score.

    Runs the workflow's own step functions (:data:`neurorad.pipelines.ms_lesions.STEPS`, candidates to
    classify) on a context holding the cached normalised pair, so the sweep cannot drift from the workflow:
    before workflow 1.8.1 this chained the ``ms_difference`` functions itself and missed the per-lesion
    judgement of enlarging candidates that step 9 gained in 1.8.0. A lesion's peak is the score's maximum over its
    final (grown, delineated) extent, as the workflow's lesion table and the benchmark read it.
    ``learned_probability`` (learned and fusion engines): the network's output for this pair
    (:func:`learned_probability_cached`); None runs the network in the candidate step."""
    import tempfile

    from neurorad.image.volume import Volume
    from neurorad.pipelines import ms_lesions as ms
    from neurorad.quantify.components import label_maximum

    bn = np.asarray(d["bn"])
    with tempfile.TemporaryDirectory(prefix="ms-sweep-") as tmp:
        ctx = ms.MSContext(cfg, Path(tmp), None, None)
        ctx.ref = Volume(np.zeros(bn.shape, np.float32), np.diag([*map(float, d["sp"]), 1.0]))
        ctx.bn, ctx.fn, ctx.brain = bn, np.asarray(d["fn"]), np.asarray(d["brain"], bool)
        ctx.finer_input_voxel_mm = d.get("finer_input_voxel_mm")  # load_pair adds it to pairs cached before 1.17.0
        ctx.crossed_slices = bool(d.get("crossed_slices", False))  # ... and this to pairs cached before 1.26.0
        ctx.learned_probability = learned_probability
        names = [s.name for s in ms.STEPS]
        for step in ms.STEPS[names.index("candidates"): names.index("classify") + 1]:
            step.run(ctx)
    assert ctx.cand is not None and ctx.labels is not None
    peaks = [float(p) for p in np.atleast_1d(label_maximum(ctx.cand.score, ctx.labels, ctx.n))] if ctx.n else []
    return ctx.labels, peaks


def _literal(raw: str) -> object:
    """A ``--set`` value as a Python literal (0.45, None, True, (1, 2)); else the string itself."""
    import ast

    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        return raw.strip()


def apply_overrides(cfg, settings: list[str], top_level: bool = False):  # noqa: ANN001, ANN201 - MSConfig
    """``cfg`` with each ``group.param=value`` of ``settings`` set (value read by :func:`_literal`). An unknown
    group or parameter is an error naming it. With ``top_level`` a ``field=value`` sets a field of MSConfig itself
    (``bench/ms_speed.py --compare-config``; the sweep's ``--prep-set``, whose pairs are prepared with them in their
    own cache: the cached steps 1-5 of the default pairs would not see them)."""
    from dataclasses import fields, is_dataclass, replace

    for item in settings:
        key, sep, raw = item.partition("=")
        group, dot, param = key.strip().partition(".")
        if sep and not dot and top_level:
            if group not in {f.name for f in fields(cfg)}:
                raise ValueError(f"{item!r}: {type(cfg).__name__} has no field {group!r}")
            cfg = replace(cfg, **{group: _literal(raw)})
            continue
        if not sep or not dot:
            raise ValueError(f"--set {item!r}: expected group.param=value, e.g. fp.drift_ratio=0.45")
        sub = getattr(cfg, group, None)
        if not is_dataclass(sub):
            raise ValueError(f"--set {item!r}: {group!r} is not a parameter group of MSConfig")
        if param not in {f.name for f in fields(sub)}:
            raise ValueError(f"--set {item!r}: {type(sub).__name__} has no parameter {param!r}")
        cfg = replace(cfg, **{group: replace(sub, **{param: _literal(raw)})})
    return cfg


def check_prep_settings(prep_settings: list[str]) -> None:
    """``--prep-set`` takes MSConfig's own fields (``field=value``, :func:`apply_overrides` with ``top_level``):
    a detection rule (``group.param``) or an unknown field is a ValueError naming it, so a tool refuses it before
    any pair runs (this sweep, ``bench/ms_oracle.py``)."""
    if any("." in t.partition("=")[0] for t in prep_settings):
        raise ValueError("--prep-set takes MSConfig's own fields (field=value); detection rules go to --set")
    from neurorad.pipelines import ms_lesions as ms

    apply_overrides(ms.MSConfig(), list(prep_settings), top_level=True)


def _run_pair(job: tuple) -> dict:
    """One cached pair through steps 6-9, scored (a worker process of ``main``)."""
    i, voxel_mm, cache, phantom, cfg, prep_settings = job
    import torch

    torch.set_num_threads(1)
    path, d = load_pair(i, voxel_mm, cache, phantom, prep_settings)
    lab, peaks = detect(d, cfg, learned_probability_cached(path, d, cfg))
    rec = score_case(d, lab, peaks, i)
    rec["slice_thickness_mm"] = d["opts"]["slice_thickness_mm"]
    if "slice_axis" in d["opts"]:  # a pair in other slice planes (widened-crossed, widened-oriented)
        rec["slice_axis"] = list(d["opts"]["slice_axis"])
    rec["crossed_slices"] = bool(d["crossed_slices"])  # load_pair always knows it
    return rec


def score_case(d: dict, lab: np.ndarray, peaks: list[float], case_id: int) -> dict:
    """The benchmark's per-case record (common space): lesions (kind, voxels, truth volume) with per-detection
    coverage and each covering detection's volume, and detections with their volume, so that
    ``ms_benchmark.lesion_volume_ratios`` reads a sweep's volumes as it reads the benchmark's. A pair without its
    voxel volume (``d["vox"]``, which every prepared pair holds) gets None for every volume."""
    truth = (d["tn"] > 0) | (d["te"] > 0)
    counts = np.bincount(lab.ravel(), minlength=len(peaks) + 1)

    def volume_mm3(n_voxels: int) -> float | None:
        return round(float(n_voxels * d["vox"]), 1) if d.get("vox") is not None else None

    lesions = []
    for kind, tmap in (("new", d["tn"]), ("enlarging", d["te"])):
        for lid in np.unique(tmap[tmap > 0]):
            m = tmap == lid
            hits = [int(h) for h in np.unique(lab[m]) if h > 0]
            lesions.append({"id": int(lid), "kind": kind, "voxels": int(m.sum()), "volume_mm3": volume_mm3(m.sum()),
                            "hits": [{"det": h, "peak": peaks[h - 1], "covered": int(np.count_nonzero(lab[m] == h)),
                                      "volume_mm3": volume_mm3(counts[h])} for h in hits]})
    dets = [{"det": h, "peak": peaks[h - 1], "fp": not bool(truth[lab == h].any()), "volume_mm3": volume_mm3(counts[h])}
            for h in range(1, len(peaks) + 1)]
    return {"case": case_id, "truth_active": bool(lesions), "lesions": lesions, "detections": dets}


def froc_by_thickness(results: list[dict], thresholds: tuple[float, ...] = (0.1, 0.15, 0.2, 0.3, 0.5)) -> dict:
    """FROC points per class of the pair's thicker slice (``"5 mm"``: records' ``slice_thickness_mm``, one value or
    the pair's two): found lesions, false positives and patient specificity at each score threshold. On the widened
    tuning pairs most false positives sit on 5 mm pairs, above any threshold (docs/ms-lesions-log.md "Workflow
    1.13.0")."""
    from ms_benchmark import operating_point

    def thicker(r: dict) -> float:
        return float(np.max(np.atleast_1d(np.asarray(r["slice_thickness_mm"], float))))

    out = {}
    for t in sorted({thicker(r) for r in results}):
        sel = [r for r in results if thicker(r) == t]
        out[f"{t:g} mm"] = {"pairs": len(sel), "froc": [
            {"threshold": thr, "found": p["found"], "lesions": p["lesions"],
             "false_positives": int(round(p["fp_per_patient"] * len(sel))),
             "patient_specificity": round(p["patient_specificity"], 3)}
            for thr in thresholds for p in [operating_point(sel, thr)]]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="1-11", help="tuning pair indices, e.g. 1-11 or 1,2,5")
    ap.add_argument("--voxel-mm", type=float, default=1.5)
    ap.add_argument("--floor", type=float, default=0.02)
    ap.add_argument("--max-fp", type=float, default=0.3)
    ap.add_argument("--cache", type=Path, default=Path("bench/out/ms_sweep"))
    ap.add_argument("--engine", default="default", choices=["default", "classical", "global", "learned", "fusion"],
                    help="default: the workflow's default engine (fusion since workflow 1.22.0, classical before); "
                         "global: the classical engine before issue 17 (for its FROC on the same pairs); learned, "
                         "fusion: the learned model's probability is cached per pair and model, so variants of "
                         "its thresholds (--set learned.core_probability=0.3) run the network once")
    ap.add_argument("--phantom", default="widened", choices=list(PHANTOMS),
                    help="widened: the tuning pairs (seeds 100000 + i); widened-crossed, widened-oriented: the same "
                         "seeds in other slice planes (ms_benchmark.WIDENED_PHANTOMS); original: original-phantom "
                         "tuning pairs (case_spec(i), i >= 100)")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="GROUP.PARAM=VALUE",
                    help="a rule variant, e.g. fp.drift_ratio=0.45 (repeatable)")
    ap.add_argument("--prep-set", dest="prep_settings", action="append", default=[], metavar="FIELD=VALUE",
                    help="an MSConfig field read by steps 1-5, e.g. n4_shrink_mm=5.0: pairs prepared with it and "
                         "cached in a subfolder of --cache (repeatable)")
    ap.add_argument("--workers", type=int, default=1, help="pairs run in this many processes")
    ap.add_argument("--json", type=Path, help="write the per-pair records here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from concurrent.futures import ProcessPoolExecutor

    from ms_benchmark import (
        choose_operating_point,
        core_thresholds,
        engine_config,
        operating_point,
        workflow_operating_point,
    )

    from neurorad.pipelines.ms_lesions import MSConfig

    try:  # checked here, before any pair runs
        check_prep_settings(args.prep_settings)
        cfg = apply_overrides(engine_config(args.engine, args.floor), args.settings)
        cfg = apply_overrides(cfg, args.prep_settings, top_level=True)
    except ValueError as exc:
        ap.error(str(exc))
    cases = _indices(args.cases)
    if args.phantom == "original" and min(cases) < 100:
        ap.error(f"--phantom original --cases {args.cases}: the benchmark evaluates pairs i < 100; tune on i >= 100")
    jobs = [(i, args.voxel_mm, args.cache, args.phantom, cfg, args.prep_settings) for i in cases]
    results = []
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        for rec in pool.map(_run_pair, jobs):
            results.append(rec)
            print(f"tuning pair {rec['case']}: {len(rec['lesions'])} lesions, {len(rec['detections'])} detections",
                  flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results))
    grid = np.geomspace(args.floor, 0.9, 30)
    froc = [operating_point(results, float(t)) for t in grid]
    best = choose_operating_point(results, args.max_fp, args.floor)
    out = {"pairs": len(results), "froc": [{k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()}
                                           for p in froc],
           "settings": args.settings, "prep_settings": args.prep_settings, "phantom": args.phantom,
           "configured": operating_point(results, workflow_operating_point()), "chosen": best,
           "chosen_core_thresholds": core_thresholds(best["threshold"], MSConfig().candidate),
           "by_thicker_slice": froc_by_thickness(results)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
