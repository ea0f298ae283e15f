"""How visible is each new MS lesion at all? A known-shape observer of the widened phantom's subtraction (issue 17).

For each truth new or enlarging lesion of a pair (in the common space after the workflow's steps 1-5, as every
engine sees it), the change follow-up - baseline (both normalised) is averaged over the lesion's exact footprint:
the matched filter of a uniform lesion. The same footprint is placed at every position of the nearby brain (within
``--radius-mm``, fully inside the brain and clear of every truth lesion): an empirical null that carries the pair's
own correlated noise (residual anatomy at edges, thick-slice partial volume, residual bias, the protocol's contrast
change) instead of a white-noise model. A lesion's visibility is ``z = (lesion mean - null median) / (1.4826 x the
null's median absolute deviation)``.

An observer that knows each lesion's shape but not where it is tests about ``N = brain voxels / footprint voxels``
positions, so at ``--fp`` false positives per patient its threshold is ``z_t = Phi^-1(1 - fp / N)`` and it finds the
lesion with probability ``Phi(z - z_t)`` (Rose's criterion, the ideal observer of detection theory: Burgess,
J Opt Soc Am A 1999). The mean over lesions is the ceiling of any detector that reads only these two images: a
lesion under its ``z_t`` is found at that budget only by chance. The ceiling is optimistic (a Gaussian null; the
observer is given the shape). An enlarging lesion's footprint is its growth (its follow-up extent outside the
baseline lesions, both in the common space; ``footprint = "growth"``); on pairs cached before the baseline lesions
were, its whole follow-up extent (``"whole"``), where the unchanged core dilutes the change.

Usage::

    python bench/ms_oracle.py --cases 0-47 --workers 2 [--cache bench/out/ms_sweep] [--found SWEEP.json]
    python bench/ms_oracle.py --held-out --cases 0-39 --workers 2      # the benchmark's own evaluation pairs
    python bench/ms_oracle.py --phantom independent --cases 0-39 --workers 2 --engines default,fusion
    python bench/ms_oracle.py --cases 0-95 --prep-set n4_nonpositive=floor   # steps 1-5 prepared another way

Pairs are prepared and cached by ``bench/ms_sweep.py``'s ``prepare`` (held-out pairs as ``heldout_<i>_<mm>.pkl``;
this tool chooses nothing, so it may read them). ``--found`` joins a sweep's per-pair records (``ms_sweep.py
--json``) to show which lesions an engine found; ``--engines`` instead runs the named engines' detection steps on
each prepared pair at their shipped operating points (``ms_sweep.detect``, the workflow's own steps) and reports,
per engine, the lesions it finds and how many visible ones (z over the search threshold) it misses. The summary's
``by_bin`` gives the observer's expected sensitivity per bin of the benchmark (contrast, location, new / enlarging,
thicker slice) beside what each engine found there: where it is under a bin's target, no detector of these two
images reaches that target. ``--phantom
independent`` reads pairs of the independently written simulator (``bench/ms_sim_independent.py``, never tuned
on; no baseline lesion map, so its enlarging lesions are judged on their whole follow-up extent);
``--phantom independent-mni152`` the same simulator in MNI152 2009a's brain.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def footprint_z(diff: np.ndarray, brain: np.ndarray, mask: np.ndarray, exclude: np.ndarray,
                spacing_mm: tuple[float, float, float], radius_mm: float = 20.0) -> dict[str, float]:
    """The visibility of the lesion ``mask`` in the change map ``diff`` (module doc): its footprint mean against the
    same footprint at every position within ``radius_mm`` of it that lies fully inside ``brain`` and touches no
    voxel of ``exclude`` (the pair's truth lesions, dilated). Returns ``z``, ``mean_change``, ``null_sd``,
    ``n_null`` (positions of the null) and ``n_voxels``."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("footprint_z: empty lesion mask")
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    kernel = mask[sl].astype(np.float32)
    n = float(kernel.sum())
    margin = [int(np.ceil(radius_mm / s)) for s in spacing_mm]
    box = tuple(slice(max(0, s.start - m), min(size, s.stop + m)) for s, m, size in zip(sl, margin, mask.shape,
                                                                                          strict=True))
    d = np.where(brain[box], diff[box], 0.0).astype(np.float32)
    mean_at = ndimage.correlate(d, kernel, mode="constant") / n
    inside = ndimage.correlate(brain[box].astype(np.float32), kernel, mode="constant") >= n - 0.5
    clear = ndimage.correlate(exclude[box].astype(np.float32), kernel, mode="constant") < 0.5
    null = mean_at[inside & clear]
    lesion = float(diff[mask].astype(np.float64).mean())
    if null.size < 10:
        return {"z": float("nan"), "mean_change": lesion, "null_sd": float("nan"), "n_null": int(null.size),
                "n_voxels": int(n)}
    med = float(np.median(null))
    sd = float(1.4826 * np.median(np.abs(null - med)))
    return {"z": (lesion - med) / sd if sd > 0 else float("nan"), "mean_change": lesion, "null_sd": sd,
            "n_null": int(null.size), "n_voxels": int(n)}


def search_threshold(n_positions: float, fp_per_patient: float) -> float:
    """The z an ideal observer testing ``n_positions`` independent positions needs for ``fp_per_patient`` false
    positives (Gaussian null): ``Phi^-1(1 - fp / n)``."""
    from scipy.stats import norm

    if n_positions <= fp_per_patient or fp_per_patient <= 0:
        raise ValueError(f"search_threshold: need 0 < fp ({fp_per_patient}) < positions ({n_positions})")
    return float(norm.isf(fp_per_patient / n_positions))


def pair_records(d: dict, case: int, fp_per_patient: float, radius_mm: float) -> list[dict]:
    """Every truth new / enlarging lesion of a prepared pair (``ms_sweep.prepare``'s dict) with its visibility,
    the search threshold at ``fp_per_patient`` and the ideal observer's probability of finding it."""
    from scipy import ndimage
    from scipy.stats import norm

    brain = np.asarray(d["brain"], bool)
    diff = np.where(brain, np.asarray(d["fn"], np.float32) - np.asarray(d["bn"], np.float32), 0.0)
    truth = (np.asarray(d["tn"]) > 0) | (np.asarray(d["te"]) > 0)
    exclude = ndimage.binary_dilation(truth, iterations=2)
    info = {int(les["id"]): les for les in d.get("lesions", [])}
    out = []
    baseline = np.asarray(d["tb"]) > 0 if "tb" in d else None
    for kind, tmap in (("new", np.asarray(d["tn"])), ("enlarging", np.asarray(d["te"]))):
        for lid in np.unique(tmap[tmap > 0]):
            m = tmap == lid
            footprint = "whole"
            if kind == "enlarging" and baseline is not None and (m & ~baseline).any():
                m, footprint = m & ~baseline, "growth"  # only where the lesion grew can the change show
            rec = footprint_z(diff, brain, m, exclude, tuple(d["sp"]), radius_mm)
            z_t = search_threshold(brain.sum() / rec["n_voxels"], fp_per_patient)
            les = info.get(int(lid), {})
            out.append({"case": case, "id": int(lid), "kind": kind, "footprint": footprint,
                        **{k: round(v, 4) for k, v in rec.items()},
                        "z_threshold": round(z_t, 3),
                        "p_ideal": round(float(norm.cdf(rec["z"] - z_t)) if np.isfinite(rec["z"]) else 0.0, 4),
                        "slice_thickness_mm": list(d["opts"].get("slice_thickness_mm", ())),
                        "contrast_to_wm": les.get("contrast_to_wm"), "location": les.get("location_bin")})
    return out


def by_bin(rows: list[dict], engines: Sequence[str] = ()) -> dict[str, dict[str, dict]]:
    """The ideal observer's expected sensitivity per bin of the benchmark's summary (``bench/ms_benchmark.py``:
    contrast to white matter in its ``CONTRAST_BINS``, location bin, new / enlarging, the pair's thicker slice),
    beside what each engine of ``engines`` found there: a bin whose expectation is under a target cannot reach it
    with any detector that reads these two images (issue 17's bins must reach 0.80).

    Returns ``{"contrast_to_wm" | "location" | "kind" | "thicker_slice": {bin: {"lesions", "ideal_expected",
    "under_search_threshold", "found_<engine>"...}}}``; rows without a contrast or location are left out of that
    grouping only."""
    from ms_benchmark import CONTRAST_BINS

    def contrast_bin(r: dict) -> str | None:
        c = r.get("contrast_to_wm")
        return next((f"{lo:g}-{hi:g}" for lo, hi in CONTRAST_BINS if c is not None and lo <= c < hi), None)

    keys = {"contrast_to_wm": contrast_bin,
            "location": lambda r: r.get("location"),
            "kind": lambda r: r.get("kind"),
            "thicker_slice": lambda r: (f"{max(r['slice_thickness_mm']):g} mm" if r.get("slice_thickness_mm")
                                        else None)}
    out: dict[str, dict[str, dict]] = {}
    for name, key in keys.items():
        groups: dict[str, list[dict]] = {}
        for r in rows:
            k = key(r)
            if k is not None:
                groups.setdefault(str(k), []).append(r)
        out[name] = {}
        for k in sorted(groups):
            sel = groups[k]
            rec = {"lesions": len(sel),
                   "ideal_expected": round(sum(r["p_ideal"] for r in sel) / len(sel), 3),
                   "under_search_threshold": sum(1 for r in sel if not r["z"] >= r["z_threshold"])}
            for e in engines:
                rec[f"found_{e}"] = round(sum(1 for r in sel if r.get(f"found_{e}")) / len(sel), 3)
            out[name][k] = rec
    return out


def sweep_records(path: Path) -> list[dict]:
    """The per-pair records of ``bench/ms_sweep.py --json`` (a list of ``{"case", "lesions", ...}`` in the common
    space) read from ``path`` for ``--found``; anything else is a ValueError naming the file and what it holds
    (a benchmark record, ``ms_benchmark.py --json``, is a dict of ``cases`` in each image's own space, whose lesion
    ids and coverage the common-space records do not share)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--found {path}: not a readable JSON file ({exc})") from exc
    if isinstance(data, dict) and "cases" in data:
        raise ValueError(f"--found {path}: a benchmark record (ms_benchmark.py --json); give a sweep's per-pair "
                         "records (ms_sweep.py --json), which are in the common space the observer reads")
    if not (isinstance(data, list) and all(isinstance(r, dict) and "case" in r and "lesions" in r for r in data)):
        raise ValueError(f"--found {path}: expected a sweep's per-pair records (ms_sweep.py --json: a list of "
                         "objects with 'case' and 'lesions')")
    return data


def engine_found(path: Path, d: dict, engine: str, settings: tuple[str, ...] = ()) -> tuple[dict[int, bool], int]:
    """Which truth lesions of a prepared pair ``engine`` (``ms_benchmark.engine_config``'s names, at its shipped
    operating point, or with ``settings``: ``--set group.param=value``) finds: the workflow's own detection steps
    on the cached pair (``ms_sweep.detect``), a lesion found when its detections cover >= 40% of it in the common
    space (the benchmark's rule), and how many of its detections touch no truth lesion (false positives)."""
    from ms_benchmark import _found, engine_config
    from ms_sweep import detect, learned_probability_cached, score_case

    cfg = engine_config(engine, None, settings)
    lab, peaks = detect(d, cfg, learned_probability_cached(path, d, cfg))
    rec = score_case(d, lab, peaks, -1)
    return {le["id"]: _found(le, float("-inf")) for le in rec["lesions"]}, sum(det["fp"] for det in rec["detections"])


def _run(job: tuple) -> tuple[list[dict], dict[str, int]]:
    i, voxel_mm, cache, held_out, fp, radius, phantom, engines, settings, prep_settings = job
    import torch
    from ms_sweep import load_pair

    torch.set_num_threads(1)
    path, d = load_pair(i, voxel_mm, cache, phantom, list(prep_settings), held_out=held_out)
    rows = pair_records(d, i, fp, radius)
    false_positives = {}
    for engine in engines:
        found, false_positives[engine] = engine_found(path, d, engine, settings)
        for r in rows:
            r[f"found_{engine}"] = found.get(r["id"])
    return rows, false_positives


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="0-47", help="pair indices, e.g. 0-47 or 1,2,5")
    ap.add_argument("--held-out", action="store_true", help="the benchmark's evaluation pairs, not tuning pairs")
    ap.add_argument("--voxel-mm", type=float, default=1.0)
    ap.add_argument("--cache", type=Path, default=Path("bench/out/ms_sweep"))
    ap.add_argument("--fp", type=float, default=0.5, help="false positives per patient the observer may make")
    ap.add_argument("--radius-mm", type=float, default=20.0, help="the null's neighbourhood around each lesion")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ms_sweep import PHANTOMS

    ap.add_argument("--phantom", default="widened",
                    choices=[*(p for p in PHANTOMS if p != "original"), "independent", "independent-mni152"],
                    help="widened-crossed, widened-oriented: the widened pairs in other slice planes (ms_sweep's "
                         "--phantom); independent: pairs of bench/ms_sim_independent.py (seed = index; never tuned "
                         "on); independent-mni152: the same simulator in MNI152 2009a's brain")
    ap.add_argument("--found", type=Path, help="a sweep's per-pair records (ms_sweep.py --json) to join")
    ap.add_argument("--engines", default="",
                    help="comma-separated engines (default, classical, global, learned, fusion) run on each prepared "
                         "pair at their shipped operating points, to show which lesions each finds")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="GROUP.PARAM=VALUE",
                    help="a rule variant for --engines, e.g. classify.rescue_growth_ratio=2.5 (repeatable)")
    ap.add_argument("--prep-set", dest="prep_settings", action="append", default=[], metavar="FIELD=VALUE",
                    help="steps 1-5 with this MSConfig field set (repeatable; ms_sweep.py's --prep-set and its cache "
                         "folder, prepared there when missing), e.g. n4_nonpositive=floor: how visible the lesions "
                         "are after another preparation")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the per-lesion records here")
    args = ap.parse_args(argv)
    from concurrent.futures import ProcessPoolExecutor

    from ms_sweep import _indices

    if args.held_out and not args.phantom.startswith("widened"):
        ap.error("--held-out names the widened phantom's evaluation pairs; the independent simulator has only those")
    found_records = None
    if args.found:  # read before any pair runs: a wrong file must not cost the run
        try:
            found_records = sweep_records(args.found)
        except ValueError as exc:
            ap.error(str(exc))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    from ms_benchmark import ENGINES

    if unknown := [e for e in engines if e not in ENGINES]:
        ap.error(f"--engines: unknown {', '.join(unknown)} (known: {', '.join(ENGINES)})")
    if args.settings:
        if not engines:
            ap.error("--set applies to --engines; name the engines")
        try:
            from ms_benchmark import engine_config

            engine_config(engines[0], None, tuple(args.settings))  # checked here, before any pair runs
        except ValueError as exc:
            ap.error(str(exc))
    from ms_sweep import check_prep_settings

    try:
        check_prep_settings(args.prep_settings)  # before any pair runs
    except ValueError as exc:
        ap.error(str(exc))
    jobs = [(i, args.voxel_mm, args.cache, args.held_out, args.fp, args.radius_mm, args.phantom, engines,
             tuple(args.settings), tuple(args.prep_settings)) for i in _indices(args.cases)]
    rows: list[dict] = []
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        false_positives = {e: 0 for e in engines}
        for recs, fps in pool.map(_run, jobs):
            rows.extend(recs)
            for e, k in fps.items():
                false_positives[e] += k
    if args.found:
        from ms_benchmark import _found, workflow_operating_point

        thr = workflow_operating_point()
        found = {(r["case"], le["id"]): _found(le, thr) for r in found_records for le in r["lesions"]}
        for r in rows:
            r["found"] = found.get((r["case"], r["id"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"{'pair':>4} {'id':>3} {'kind':9} {'voxels':>6} {'slices mm':>10} {'x WM':>5} {'location':15} "
          f"{'change':>7} {'null SD':>7} {'z':>6} {'z_t':>5} {'P':>5} found" + "".join(f" {e}" for e in engines))
    for r in sorted(rows, key=lambda r: (np.nan_to_num(r["z"], nan=-99), r["case"])):
        found = "" if "found" not in r else ("yes" if r["found"] else "NO")
        print(f"{r['case']:>4} {r['id']:>3} {r['kind']:9} {r['n_voxels']:>6} "
              f"{'/'.join(f'{t:g}' for t in r['slice_thickness_mm']):>10} {r['contrast_to_wm'] or 0:>5.2f} "
              f"{str(r['location']):15} {r['mean_change']:>7.3f} {r['null_sd']:>7.3f} {r['z']:>6.2f} "
              f"{r['z_threshold']:>5.2f} {r['p_ideal']:>5.2f} {found:5}"
              + "".join(f" {'yes' if r[f'found_{e}'] else 'NO':{len(e)}}" for e in engines))
    n = len(rows)
    below = sum(1 for r in rows if not r["z"] >= r["z_threshold"])
    summary = {"pairs": len(jobs), "phantom": args.phantom, "lesions": n, "held_out": args.held_out,
               "fp_per_patient": args.fp, "settings": args.settings, "prep_settings": args.prep_settings,
               "ideal_observer_expected_sensitivity": round(sum(r["p_ideal"] for r in rows) / max(n, 1), 4),
               "lesions_under_their_search_threshold": below,
               "lesions_under_z_3": sum(1 for r in rows if not r["z"] >= 3.0)}
    if args.found:
        summary["found"] = sum(1 for r in rows if r.get("found"))
        summary["found_under_threshold"] = sum(1 for r in rows if r.get("found") and not r["z"] >= r["z_threshold"])
    for e in engines:
        hit = [(bool(r[f"found_{e}"]), bool(r["z"] >= r["z_threshold"])) for r in rows]
        summary[f"found_{e}"] = sum(f for f, _ in hit)
        summary[f"found_{e}_under_threshold"] = sum(f and not v for f, v in hit)
        summary[f"missed_{e}_over_threshold"] = sum(v and not f for f, v in hit)
        summary[f"false_positives_{e}_per_patient"] = round(false_positives[e] / max(len(jobs), 1), 3)
    summary["by_bin"] = by_bin(rows, engines)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
