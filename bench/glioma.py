"""Glioma workflow benchmark on held-out phantoms: region Dice, volume error, scan-rescan repeatability and
seconds per case, beside the EASE paper's figures (PAPERS.md A6; EASE reports no Dice or timing, only QA
rates and that 4 of 55 stable patients were flagged > 40 % by inconsistent segmentations).

Cases (seeded from 60000; the classical engine was tuned on seeds 101-104, never scored here): one glioma
(diameter 15-45 mm, centre drawn in deep white matter, so location varies per seed) on Colin27 anatomy;
cases alternate between 1 mm isotropic and 5 mm slices (in-plane 0.9-1.3 mm); SNR 12-40; bias 0-0.3;
per-sequence gamma 0.85-1.15 (contrast); enhancement scaled by 0.6-1.0 (the rim's T1c excess over T1);
T1, T2 and FLAIR each moved against T1c by up to 5 deg / 5 mm (motion between sequences; the workflow
registers them back). Each case is "scanned" twice: draw A on the case's grid, scored against the truth
(Dice, volume error); draw B, the rescan, of the same tumour (same seed and diameter) with another slice
thickness (1, 3 or 5 mm, not A's), another bias strength, independent Rician noise and independent
motion. Scan-rescan repeatability on A vs B: repeatability coefficient RC = 2.77 x within-case SD of the
whole-tumour volume (Bland & Altman 1999); a "false flag" is a >= 40 % change between the two draws of an
unchanged tumour, EASE's progression threshold (the true volumes of A and B differ by the grids' partial
volume only, < 1 %). Regions: whole tumour (all labels), enhancing (truth 3 vs class 3),
non-enhancing T2-FLAIR hyperintensity (truth oedema 2 + non-enhancing tumour 4 vs class 2), necrosis
(truth 1 vs class 1).

Brain mask: the phantom's truth by default (``--brain truth``; ``--brain deepbet`` runs the workflow's
brain extraction). The registration's NMI floor is 1.005 (``--min-nmi``; the workflow's 1.01 refused
T2 -> T1c on the first case although both backends converged to the same transform, NMI 1.009).
Registration backend: ``--registration elastix`` is the workflow's default (the
paper's tool), ``sitk`` is SimpleITK's Mattes-MI optimiser (faster here). Synthetic: these figures
describe the phantoms, not patients; seconds are wall and CPU on whatever machine runs it.

Engines (issue 12): ``--engines classical,unet3d,nnunet:FOLDER`` runs the workflow with the first engine and
scores every engine on the same co-registered, bias-corrected draws (the workflow's own outputs), one column
each (Dice per region, volume error, scan-rescan flags, seconds of the segment step).

Usage: ``python bench/glioma.py --cases 20 [--brain truth|deepbet] [--registration elastix|sitk] [--engines E1,E2]
[--json out.json]``;
split over processes: ``--start 0 --cases 4 --json a.json`` ... then ``--merge a.json b.json ...``.
Each row records the workflow's step seconds (``steps_a``/``steps_b``) for the speed figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HELD_OUT_SEED = 60000
#: truth labels (neurorad.phantom.cases.GLIOMA_LABELS) per workflow class (REGIONS of the workflow)
REGION_TRUTH = {"enhancing": ((3,), (3,)), "non_enhancing": ((2, 4), (2,)), "necrosis": ((1,), (1,))}
PAPER = [
    ("whole-tumour Dice, mean", "dice_whole_tumour_mean", "not reported (target >= 0.85, issue 12)"),
    ("median |volume error| whole tumour %", "volume_error_abs_median_pct", "not reported (target <= 10 %)"),
    ("median |volume error| %, draws A and B (rescans too)", "volume_error_abs_median_pct_ab", "-"),
    ("enhancing Dice, mean", "dice_enhancing_mean", "not reported"),
    ("non-enhancing Dice, mean", "dice_non_enhancing_mean", "not reported"),
    ("necrosis Dice, mean", "dice_necrosis_mean", "not reported"),
    ("repeatability coefficient whole tumour (mL)", "rc_ml", "not reported (no scan-rescan study)"),
    ("repeatability coefficient (% of mean)", "rc_pct", "-"),
    ("false >= 40 % flags in scan-rescan pairs", "false_flags", "4 of 55 stable patients flagged (clinical)"),
    ("seconds per case, mean (wall)", "seconds_mean", "not reported (issue target <= 90 s)"),
    ("CPU seconds per case, mean", "cpu_seconds_mean", "-"),
]


def specs(n: int, seed0: int = HELD_OUT_SEED, start: int = 0) -> list[dict[str, Any]]:
    """``n`` case specifications seeded from ``seed0`` (the distribution in the module docstring): slices
    alternate between 1 mm (1 mm isotropic) and 5 mm (in-plane 0.9-1.3 mm); the rescan (draw B) has another
    slice thickness (1, 3 or 5 mm, not A's) and another bias strength."""
    out = []
    for i in range(start, start + n):
        rng = np.random.default_rng(seed0 + i)
        thick = (1.0, 5.0)[i % 2]
        in_plane = 1.0 if thick == 1.0 else float(rng.uniform(0.9, 1.3))
        out.append(dict(seed=seed0 + i, diameter_mm=float(rng.uniform(15, 45)),
                        in_plane_mm=in_plane, slice_thickness_mm=thick,
                        snr=float(rng.uniform(12, 40)), bias_strength=float(rng.uniform(0.0, 0.3)),
                        gamma={s: float(rng.uniform(0.85, 1.15)) for s in ("t1", "t1c", "t2", "flair")},
                        enhancement=float(rng.uniform(0.6, 1.0)),
                        rescan_slice_thickness_mm=float(rng.choice([t for t in (1.0, 3.0, 5.0) if t != thick])),
                        rescan_bias_strength=float(rng.uniform(0.0, 0.3))))
    return out


def draw(case: Any, spec: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One acquisition of a noise-free phantom: Rician noise at the spec's SNR (of white matter, as the
    phantom's own), gamma contrast, and T1/T2/FLAIR moved against T1c by up to 5 deg / 5 mm."""
    from neurorad.image.geometry import rigid_matrix
    from neurorad.image.volume import Volume
    from neurorad.phantom.render import TISSUE_INTENSITY, add_rician_noise

    out = {}
    enhancing = np.asarray(case.truth["truth_baseline_tumour_class"].data) == 3
    for s in ("t1", "t1c", "t2", "flair"):
        v = case.images[f"baseline_{s}"]
        d = np.asarray(v.data, np.float32)
        if s == "t1c":  # weaker enhancement: the rim's T1c contrast over its T1 level scaled by the spec's factor
            base = np.asarray(case.images["baseline_t1"].data, np.float32)
            d = np.where(enhancing, base + spec["enhancement"] * (d - base), d).astype(np.float32)
        sigma = TISSUE_INTENSITY[s]["wm"] / spec["snr"]
        d = add_rician_noise(d, sigma, rng)
        hi = float(np.percentile(d, 99.9)) or 1.0
        d = (np.clip(d / hi, 0, None) ** spec["gamma"][s] * hi).astype(np.float32)
        aff = v.affine
        if s != "t1c":
            rot = tuple(float(x) for x in rng.uniform(-5, 5, 3))
            shift = tuple(float(x) for x in rng.uniform(-5, 5, 3))
            aff = rigid_matrix(rot, shift, v.center_mm) @ v.affine
        out[s] = Volume(d, aff, dict(v.metadata))
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    from neurorad.image.masks import dice

    return float(dice(a, b))


def _segment_again(out: Path, engine: str) -> tuple[np.ndarray, float]:
    """Class map of another engine on the workflow's own co-registered, bias-corrected sequences and brain mask
    (what its segment step would have been given), and its seconds."""
    from neurorad.image.nifti import load_nifti
    from neurorad.segment.glioma_classical import segment_glioma
    from neurorad.segment.glioma_learned import segment_glioma_learned

    seqs = {s: load_nifti(out / f"{s}.nii.gz") for s in ("t1", "t1c", "t2", "flair")}
    brain = np.asarray(load_nifti(out / "brain_mask.nii.gz").data) > 0
    t0 = time.perf_counter()
    if engine == "classical":
        seg = segment_glioma(*(np.asarray(seqs[s].data) for s in ("t1", "t1c", "t2", "flair")), brain,
                             seqs["t1c"].spacing_mm)
    else:
        seg = segment_glioma_learned(seqs, brain, engine)
    return seg.classes, time.perf_counter() - t0


def _dice_regions(row: dict[str, Any], classes: np.ndarray, truth: np.ndarray) -> None:
    """Dice of the whole tumour and of each region of draw A into ``row``."""
    row["dice_whole_tumour"] = _dice(classes > 0, truth > 0)
    for name, (t_labels, p_labels) in REGION_TRUTH.items():
        row[f"dice_{name}"] = _dice(np.isin(classes, p_labels), np.isin(truth, t_labels))
    row["volume_error_pct"] = row["volume_error_pct_a"]


def _score(row: dict[str, Any], tag: str, classes: np.ndarray, truth: np.ndarray, voxel_ml: float) -> None:
    """Whole-tumour volume and error of one draw into ``row``; for draw A also the Dice per region."""
    row[f"whole_tumour_ml_{tag}"] = float((classes > 0).sum()) * voxel_ml
    row[f"volume_error_pct_{tag}"] = 100.0 * (row[f"whole_tumour_ml_{tag}"] / row[f"true_whole_tumour_ml_{tag}"]
                                              - 1.0)
    if tag == "a":
        _dice_regions(row, classes, truth)


def _score_engines(row: dict[str, Any], tag: str, out: Path, truth: np.ndarray, voxel_ml: float,
                   engines: tuple[str, ...], first: np.ndarray | None = None) -> None:
    """Score each engine on one draw's preprocessed sequences in ``out`` into ``row["by_engine"]``; ``first``:
    the class map the workflow itself made with ``engines[0]`` (not recomputed)."""
    for i, e in enumerate(engines):
        er = row.setdefault("by_engine", {}).setdefault(e, {})
        er[f"true_whole_tumour_ml_{tag}"] = row[f"true_whole_tumour_ml_{tag}"]
        if i == 0 and first is not None:
            _score(er, tag, first, truth, voxel_ml)
            continue
        try:
            classes, secs = _segment_again(out, e)
        except Exception as err:  # noqa: BLE001 - a failed engine is a result of the benchmark
            er[f"error_{tag}"] = f"{type(err).__name__}: {err}"
            continue
        er[f"segment_seconds_{tag}"] = secs
        _score(er, tag, classes, truth, voxel_ml)


def rescore(rows: list[dict[str, Any]], keep: Path, engines: tuple[str, ...]) -> list[dict[str, Any]]:
    """Score more engines on the draws a run kept (``--keep``): the workflow's preprocessed sequences, brain mask
    and truth of each draw, without running the registration and N4 again."""
    from neurorad.image.nifti import load_nifti

    for n, row in enumerate(rows):
        for tag in ("a", "b"):
            d = keep / f"{row['seed']}{tag}"
            if not (d / "truth_tumour_class.nii.gz").exists():
                continue
            tv = load_nifti(d / "truth_tumour_class.nii.gz")
            _score_engines(row, tag, d, np.asarray(tv.data), float(np.prod(tv.spacing_mm)) / 1000.0, engines)
        print(f"rescored {n + 1}/{len(rows)} (seed {row['seed']})", flush=True)
    return rows


def run_case(spec: dict[str, Any], tmp: Path, brain: str, registration: str, min_nmi: float = 1.005,
             keep: Path | None = None, options: dict[str, Any] | None = None,
             engines: tuple[str, ...] = ("classical",)) -> dict[str, Any]:
    """Draw A (the spec's grid) scored against the truth; draw B, the rescan of the same tumour with another
    slice thickness, bias strength, noise and pose, for the repeatability. ``keep``: a folder where each
    draw's workflow outputs and truth are kept (``bench/glioma_sweep.py --cache`` re-segments them).
    ``engines``: the workflow runs with the first; every engine (the first too) is then scored on the same
    co-registered, bias-corrected sequences, into ``row["by_engine"][engine]``."""
    import shutil

    from neurorad.image.nifti import load_nifti, save_nifti
    from neurorad.phantom.cases import make_case
    from neurorad.preprocess.registration import RegistrationLimits
    from neurorad.workflows.contract import WorkflowInputs
    from neurorad.workflows.glioma import GliomaWorkflow
    from neurorad.workflows.runner import execute

    row: dict[str, Any] = {"seed": spec["seed"], "diameter_mm": spec["diameter_mm"],
                           "in_plane_mm": spec["in_plane_mm"], "slice_thickness_mm": spec["slice_thickness_mm"],
                           "rescan_slice_thickness_mm": spec["rescan_slice_thickness_mm"],
                           "snr": spec["snr"], "bias": spec["bias_strength"], "enhancement": spec["enhancement"]}
    rng = np.random.default_rng([spec["seed"], 7])
    row["by_engine"] = {e: {} for e in engines}
    for tag in ("a", "b"):
        thick = spec["slice_thickness_mm"] if tag == "a" else spec["rescan_slice_thickness_mm"]
        bias = spec["bias_strength"] if tag == "a" else spec["rescan_bias_strength"]
        # the same seed and diameter give the same tumour (shape, place) on whatever grid
        case = make_case("glioma", spec["seed"], pair=False, snr=None, diameter_mm=spec["diameter_mm"],
                         in_plane_mm=spec["in_plane_mm"], slice_thickness_mm=thick, bias_strength=bias)
        truth_vol = case.truth["truth_baseline_tumour_class"]
        truth = np.asarray(truth_vol.data)
        voxel_ml = float(np.prod(case.images["baseline_t1c"].spacing_mm)) / 1000.0
        row[f"true_whole_tumour_ml_{tag}"] = float((truth > 0).sum()) * voxel_ml
        opts: dict[str, Any] = {"registration_backend": registration, "engine": engines[0],
                                "registration_limits": RegistrationLimits(min_nmi=min_nmi), **(options or {})}
        if brain == "truth":
            opts["brain_mask"] = case.truth["truth_baseline_brain"]
        vols = draw(case, spec, rng)
        d = tmp / f"{spec['seed']}{tag}"
        d.mkdir()
        series = {s: save_nifti(v, d / f"{s}.nii") for s, v in vols.items()}  # uncompressed: no gzip time
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            res = execute(GliomaWorkflow(), WorkflowInputs(series, options=opts), d / "out", write_outputs=False)
        except Exception as err:  # noqa: BLE001 - a failed case is a result of the benchmark
            row[f"error_{tag}"] = f"{type(err).__name__}: {err}"
            continue
        row[f"seconds_{tag}"] = time.perf_counter() - t0
        row[f"cpu_seconds_{tag}"] = time.process_time() - c0
        row[f"steps_{tag}"] = {st["name"]: st["seconds"] for st in res.provenance.steps}
        row[f"whole_tumour_ml_{tag}"] = float(res.quantity("whole_tumour_volume").value)
        row[f"volume_error_pct_{tag}"] = 100.0 * (row[f"whole_tumour_ml_{tag}"] / row[f"true_whole_tumour_ml_{tag}"]
                                                  - 1.0)
        if keep is not None:
            dst = keep / f"{spec['seed']}{tag}"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(d / "out", dst)
            save_nifti(truth_vol, dst / "truth_tumour_class.nii.gz")
        classes = np.asarray(load_nifti(d / "out" / "tumour_classes.nii.gz").data)
        if tag == "a":  # the workflow's own reported volume stays the row's; the Dice comes from its class map
            row["true_whole_tumour_ml"] = row["true_whole_tumour_ml_a"]
            _dice_regions(row, classes, truth)
        row["by_engine"][engines[0]][f"segment_seconds_{tag}"] = row[f"steps_{tag}"].get("segment")
        _score_engines(row, tag, d / "out", truth, voxel_ml, engines, classes)
        shutil.rmtree(d)
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from neurorad.clinical.glioma import compare_volume

    ok = [r for r in rows if "dice_whole_tumour" in r]
    pairs = [r for r in rows if "whole_tumour_ml_a" in r and "whole_tumour_ml_b" in r]
    s: dict[str, Any] = {"cases": len(rows), "failed": len(rows) - len(ok), "pairs": len(pairs)}
    for k in ("whole_tumour", "enhancing", "non_enhancing", "necrosis"):
        v = [r[f"dice_{k}"] for r in ok]
        s[f"dice_{k}_mean"] = float(np.mean(v)) if v else None
        s[f"dice_{k}_min"] = float(np.min(v)) if v else None
    err = [abs(r["volume_error_pct"]) for r in ok]
    s["volume_error_abs_median_pct"] = float(np.median(err)) if err else None
    s["volume_error_mean_pct"] = float(np.mean([r["volume_error_pct"] for r in ok])) if ok else None
    both = [abs(r[k]) for r in rows for k in ("volume_error_pct_a", "volume_error_pct_b") if k in r]
    s["volume_error_abs_median_pct_ab"] = float(np.median(both)) if both else None
    if pairs:
        a = np.array([r["whole_tumour_ml_a"] for r in pairs])
        b = np.array([r["whole_tumour_ml_b"] for r in pairs])
        wsd = float(np.sqrt(np.mean((a - b) ** 2 / 2.0)))
        s["rc_ml"] = 2.77 * wsd
        s["rc_pct"] = 100.0 * 2.77 * float(np.sqrt(np.mean(((a - b) / ((a + b) / 2)) ** 2 / 2.0)))
        # the change rule of the workflow, both directions: an unchanged tumour must not be flagged
        s["false_flags"] = int(sum(compare_volume("t-1", x, y).flagged or compare_volume("t-1", y, x).flagged
                                   for x, y in zip(a, b, strict=True)))
    seg_secs = [r[k] for r in rows for k in ("segment_seconds_a", "segment_seconds_b") if r.get(k) is not None]
    s["segment_seconds_mean"] = float(np.mean(seg_secs)) if seg_secs else None
    secs = [r[k] for r in rows for k in ("seconds_a", "seconds_b") if k in r]
    cpus = [r[k] for r in rows for k in ("cpu_seconds_a", "cpu_seconds_b") if k in r]
    s["seconds_mean"] = float(np.mean(secs)) if secs else None
    s["seconds_max"] = float(np.max(secs)) if secs else None
    s["cpu_seconds_mean"] = float(np.mean(cpus)) if cpus else None
    return s


ENGINE_ROWS = [
    ("whole-tumour Dice, mean (min)", "dice_whole_tumour"), ("enhancing Dice, mean", "dice_enhancing_mean"),
    ("non-enhancing Dice, mean", "dice_non_enhancing_mean"), ("necrosis Dice, mean", "dice_necrosis_mean"),
    ("median |volume error| %, first scans", "volume_error_abs_median_pct"),
    ("median |volume error| %, both draws", "volume_error_abs_median_pct_ab"),
    ("repeatability coefficient (mL)", "rc_ml"), ("false >= 40 % flags / pairs", "false_flags"),
    ("segment step seconds, mean", "segment_seconds_mean"), ("failed draws", "failed")]


def engine_rows(rows: list[dict[str, Any]], engine: str) -> list[dict[str, Any]]:
    """The rows as one engine scored them (``row["by_engine"]``), in the shape :func:`summarise` takes."""
    return [{"seed": r["seed"], **r["by_engine"][engine]} for r in rows if engine in r.get("by_engine", {})]


def engine_table(rows: list[dict[str, Any]], engines: list[str]) -> str:
    """One column per engine, every engine scored on the same preprocessed draws."""
    sums = {e: summarise(engine_rows(rows, e)) for e in engines}
    lines = ["| measure | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for label, key in ENGINE_ROWS:
        cells = []
        for e in engines:
            sm = sums[e]
            if key == "dice_whole_tumour":
                v = sm.get("dice_whole_tumour_mean")
                cells.append("-" if v is None else f"{v:.3f} ({sm['dice_whole_tumour_min']:.3f})")
            elif key == "false_flags":
                cells.append(f"{sm.get('false_flags', '-')} / {sm['pairs']}")
            elif key == "failed":
                n = sum(f"error_{t}" in r for r in engine_rows(rows, e) for t in ("a", "b"))
                cells.append(str(n))
            else:
                v = sm.get(key)
                cells.append("-" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(summary: dict[str, Any]) -> str:
    lines = [f"| {'measure':<48} | {'neurorad (classical)':>20} | paper (EASE) |", f"|{'-' * 50}|{'-' * 22}|---|"]
    for label, key, paper in PAPER:
        v = summary.get(key)
        txt = "-" if v is None else (f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else
                                     f"{v:.1f}" if isinstance(v, float) else str(v))
        lines.append(f"| {label:<48} | {txt:>20} | {paper} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--seed0", type=int, default=HELD_OUT_SEED)
    p.add_argument("--start", type=int, default=0,
                   help="first case index (cases start..start+cases-1 of the series, so runs can be split)")
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="summarise the rows of these --json files (a split run) instead of running")
    p.add_argument("--brain", choices=("truth", "deepbet"), default="truth")
    p.add_argument("--registration", choices=("elastix", "sitk"), default="sitk")
    p.add_argument("--min-nmi", type=float, default=1.005,
                   help="registration's NMI floor (the workflow's default 1.01 refuses T2->T1c on most of these "
                        "noisy phantoms although elastix and SimpleITK agree on the result: NMI 1.009)")
    p.add_argument("--engines", default="classical",
                   help="comma-separated segmentation engines, each scored on the same co-registered, bias-corrected "
                        "draws (the workflow runs with the first): classical, unet3d, a registry name[@version], a "
                        "model folder or nnunet:FOLDER")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--rescore", type=Path, nargs="+", default=None, metavar="JSON",
                   help="score --engines on the draws the runs of these --json files kept in --keep (no "
                        "registration or N4 again); writes the rows with the new engines to --json")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep each draw's registered, bias-corrected sequences and truth here (for the sweep)")
    a = p.parse_args()
    engines = tuple(e.strip() for e in a.engines.split(",") if e.strip())
    if a.rescore:
        if a.keep is None or a.json is None:
            p.error("--rescore needs --keep (the kept draws) and --json (where the rescored rows go)")
        docs = [json.loads(f.read_text()) for f in a.rescore]
        rows = rescore(sorted((r for d in docs for r in d["rows"]), key=lambda r: r["seed"]), a.keep, engines)
        known = list(dict.fromkeys([*docs[0].get("engines", ["classical"]), *engines]))
        a.json.write_text(json.dumps({**{k: v for k, v in docs[0].items() if k != "rows"}, "engines": known,
                                      "rows": rows, "summary": summarise(rows)}, indent=2))
        print(engine_table(rows, known))
        return
    if a.merge:
        docs = [json.loads(f.read_text()) for f in a.merge]
        rows = sorted((r for d in docs for r in d["rows"]), key=lambda r: r["seed"])
        s = summarise(rows)
        print(f"\nGlioma, {len(rows)} held-out phantoms (synthetic; merged from {len(docs)} runs), brain mask: "
              f"{docs[0]['brain']}, registration: {docs[0]['registration']}, {s['failed']} failed, "
              f"{s['pairs']} scan-rescan pairs")
        print(table(s))
        engines = docs[0].get("engines", ["classical"])
        if len(engines) > 1 or "by_engine" in rows[0]:
            print(f"\nEngines on the same draws ({len(rows)} cases):")
            print(engine_table(rows, engines))
        return
    if a.keep is not None:
        a.keep.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="neurorad-bench-glioma-") as td:
        for i, spec in enumerate(specs(a.cases, a.seed0, a.start)):
            row = run_case(spec, Path(td), a.brain, a.registration, a.min_nmi, a.keep, engines=engines)
            rows.append(row)
            msg = (f"case {i + 1}/{a.cases} seed {row['seed']}: d {row['diameter_mm']:.0f} mm, "
                   f"{row['in_plane_mm']:.2f}x{row['slice_thickness_mm']:.1f} mm "
                   f"(B {row['rescan_slice_thickness_mm']:.0f} mm), "
                   f"SNR {row['snr']:.0f}, enh {row['enhancement']:.2f}: ")
            if "dice_whole_tumour" in row:
                msg += (f"WT Dice {row['dice_whole_tumour']:.3f}, ET {row['dice_enhancing']:.3f}, "
                        f"vol err {row['volume_error_pct']:+.1f} %, A/B {row.get('whole_tumour_ml_a', 0):.1f}/"
                        f"{row.get('whole_tumour_ml_b', float('nan')):.1f} mL "
                        f"(true {row['true_whole_tumour_ml_a']:.1f}/"
                        f"{row.get('true_whole_tumour_ml_b', float('nan')):.1f}), {row.get('seconds_a', 0):.0f} s "
                        f"{row.get('error_b', '')}")
            else:
                msg += row.get("error_a", "failed")
            print(msg, flush=True)
            if a.json is not None:
                a.json.write_text(json.dumps({"brain": a.brain, "registration": a.registration,
                                              "min_nmi": a.min_nmi, "engines": list(engines), "rows": rows,
                                              "summary": summarise(rows)}, indent=2))
    s = summarise(rows)
    print(f"\nGlioma, {a.cases} held-out phantoms (synthetic), brain mask: {a.brain}, registration: {a.registration}, "
          f"{s['failed']} failed, {s['pairs']} scan-rescan pairs")
    print(table(s))
    if len(engines) > 1:
        print(f"\nEngines on the same draws ({len(rows)} cases):")
        print(engine_table(rows, list(engines)))


if __name__ == "__main__":
    main()
