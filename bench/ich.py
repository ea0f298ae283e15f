"""Validation benchmark of the ``ich`` workflow on held-out ich-pair CT phantoms (synthetic).

Cases (deterministic by index, seeds 5000+i, never used for tuning): initial volume 3-80 mL
(log-uniform), location cycling deep / lobar / infratentorial, slice thickness alternating 5 mm
(0.5 mm in-plane) and thin (1 mm), follow-up misaligned by 2-10 degrees and 2-10 mm, and every
other case expanding (volume factor 1.4-2.2) or not (1.0). The learned starter model was trained on
ich-pair seeds 0-15 (``neurorad.workflows.ich.train``), never on these. Per engine it reports:

* volume error (mL, |measured - truth|, native grid) and Dice of the haematoma on each scan;
* diameter error (mm): AP/LR/SI measured in template space against the truth's diameters on the
  phantom's own MNI-space grid (the phantom anatomy is Colin27 in MNI space; the follow-up truth
  is moved back by the phantom's rigid motion), so it includes the template registration;
* axis-type agreement, expansion accuracy (truth: the phantom's volumes and the >= 6 mL / >= 33 %
  rule), location agreement (truth: AAL class of the truth haematoma in MNI space);
* wall and CPU seconds per pair (target <= 60 s on 2 cores).

Every engine runs on the same generated pair (``--engines classical,unet2d``, the default; any workflow
engine or model reference). Usage::

    python bench/ich.py --cases 20 [--start 0] [--engines classical,unet2d] [--space template] [--json out.json]
    python bench/ich.py --merge a.json b.json --json all.json    # join runs (e.g. resumed with --start)

(figures taken on a shared, loaded machine are labelled so by the caller).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LOCATIONS = ("deep_gm", "lobar", "infratentorial")


def case_spec(i: int) -> dict:
    rng = np.random.default_rng(5000 + i)
    thick = i % 2 == 0
    return {
        "seed": 5000 + i,
        "volume_ml": float(np.exp(rng.uniform(np.log(3.0), np.log(80.0)))),
        "expansion_factor": float(rng.uniform(1.4, 2.2)) if i % 2 == 1 else 1.0,
        "location": LOCATIONS[i % 3],
        "slice_thickness_mm": 5.0 if thick else 1.0,
        "in_plane_mm": 0.5 if thick else 1.0,
        "misalign_deg": float(rng.uniform(2, 10)),
        "misalign_mm": float(rng.uniform(2, 10)),
    }


def _truth_in_mni(truth, matrix: np.ndarray | None):  # noqa: ANN001, ANN202
    """The truth haematoma on the 1 mm template grid: sample truth at m @ x for template points x."""
    from scipy import ndimage

    from neurorad.image.volume import Volume
    from neurorad.preprocess.template_registration import template

    t1 = template(1.0)[0]
    shape = t1.spatial_shape
    ijk = np.indices(shape).reshape(3, -1).astype(np.float32)
    xyz = t1.affine[:3, :3] @ ijk + t1.affine[:3, 3:4]
    if matrix is not None:
        xyz = matrix[:3, :3] @ xyz + matrix[:3, 3:4]
    src = np.linalg.inv(truth.affine) @ np.vstack([xyz, np.ones((1, xyz.shape[1]), np.float32)])
    vals = ndimage.map_coordinates((np.asarray(truth.data) == 1).astype(np.float32), src[:3], order=1, cval=0.0)
    return Volume((vals.reshape(shape) >= 0.5).astype(np.uint8), t1.affine.copy())


def _truths(case) -> dict:  # noqa: ANN001 - a PhantomCase
    """Per time point: the truth on the CT grid (RAS), its diameters/axis in MNI space, and the location."""
    from neurorad.clinical.ich import axis_type
    from neurorad.image.geometry import reorient
    from neurorad.quantify.morphology import describe_shape
    from neurorad.workflows.ich.pipeline import location_class

    out = {}
    for tp in ("followup", "baseline"):
        motion = case.case["transform"].get(tp)
        t_mni = _truth_in_mni(case.truth[f"truth_{tp}_ich_class"], np.asarray(motion["matrix_ras"]) if motion
                              else None)
        ts = describe_shape(t_mni)
        out[tp] = {"mask": np.asarray(reorient(case.truth[f"truth_{tp}_ich_class"], "RAS").data) == 1,
                   "volume": case.case["haematoma_volume_ml"][tp], "diam": ts.diameters,
                   "axis": axis_type(ts.diameters),
                   "location": location_class(t_mni)[0] if tp == "followup" else ""}
    return out


def run_case(i: int, engines: list[str], space: str) -> dict[str, dict]:
    """One phantom pair, generated once, through the workflow with every engine: engine -> record."""
    import resource

    from neurorad.clinical.ich import expansion
    from neurorad.image.masks import dice
    from neurorad.image.nifti import load_nifti
    from neurorad.phantom.cases import ich_pair
    from neurorad.phantom.io import write_case
    from neurorad.workflows.contract import WorkflowInputs
    from neurorad.workflows.ich import ICHWorkflow
    from neurorad.workflows.runner import execute

    spec = case_spec(i)
    case = ich_pair(**spec)
    truths: dict | None = None
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ich-bench-") as tmp:
        folder = write_case(case, Path(tmp) / "case")
        for engine in engines:
            rec = {"case": i, **{("phantom_location" if k == "location" else k): v for k, v in spec.items()}}
            try:
                t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
                res = execute(ICHWorkflow(), WorkflowInputs(
                    {"ct": folder / "followup_ct.nii.gz", "prior_ct": folder / "baseline_ct.nii.gz"},
                    options={"engine": engine, "space": space}), Path(tmp) / engine, write_outputs=False)
                c1 = resource.getrusage(resource.RUSAGE_SELF)
                rec["wall_s"] = time.perf_counter() - t0
                rec["cpu_s"] = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
                truths = truths or _truths(case)
                q = {x.name: x.value for x in res.quantities}
                for tp, prefix, mask_file in (("followup", "", "haematoma_mask.nii.gz"),
                                              ("baseline", "prior_", "prior_haematoma_mask.nii.gz")):
                    t = truths[tp]
                    ours = load_nifti(Path(tmp) / engine / mask_file)
                    rec[f"{tp}_volume_truth"] = t["volume"]
                    rec[f"{tp}_volume"] = q["haematoma_volume" if not prefix else "prior_haematoma_volume"]
                    rec[f"{tp}_dice"] = dice(np.asarray(ours.data) > 0, t["mask"])
                    rec[f"{tp}_diam_truth"] = t["diam"]
                    rec[f"{tp}_diam"] = {a: q[f"{prefix}diameter_{a}"] for a in ("ap", "lr", "si")}
                    rec[f"{tp}_axis_truth"], rec[f"{tp}_axis"] = t["axis"], q[f"{prefix}axis_type"]
                    if tp == "followup":
                        rec["location_truth"] = t["location"]
                        rec["location"] = q.get("location", "")
                he_truth = expansion(rec["baseline_volume_truth"], rec["followup_volume_truth"]).expansion
                rec["expansion_truth"], rec["expansion"] = bool(he_truth), bool(q["expansion"])
                rec["registration_dice"] = res.extra.get("registration_dice")
                rec["model"] = res.provenance.models[0].to_dict() if res.provenance.models else None
            except Exception as err:  # noqa: BLE001 - a refused case is a result too
                rec = {"case": i, "error": f"{type(err).__name__}: {err}"}
            out[engine] = rec
    return out


def summarise(recs: list[dict]) -> dict:
    out: dict = {"cases": len(recs)}
    vol_err = [abs(r[f"{tp}_volume"] - r[f"{tp}_volume_truth"]) for r in recs for tp in ("baseline", "followup")]
    rel_err = [abs(r[f"{tp}_volume"] - r[f"{tp}_volume_truth"]) / r[f"{tp}_volume_truth"] for r in recs
               for tp in ("baseline", "followup")]
    dices = [r[f"{tp}_dice"] for r in recs for tp in ("baseline", "followup")]
    derr = [abs(r[f"{tp}_diam"][a] - r[f"{tp}_diam_truth"][a]) for r in recs for tp in ("baseline", "followup")
            for a in ("ap", "lr", "si")]
    out["volume_abs_error_ml_median"] = float(np.median(vol_err))
    out["volume_abs_error_ml_max"] = float(np.max(vol_err))
    out["volume_rel_error_median"] = float(np.median(rel_err))
    out["dice_median"] = float(np.median(dices))
    out["dice_min"] = float(np.min(dices))
    out["diameter_abs_error_mm_median"] = float(np.median(derr))
    out["diameter_abs_error_mm_p90"] = float(np.percentile(derr, 90))
    out["axis_agreement"] = float(np.mean([r[f"{tp}_axis"] == r[f"{tp}_axis_truth"] for r in recs
                                           for tp in ("baseline", "followup")]))
    out["expansion_accuracy"] = float(np.mean([r["expansion"] == r["expansion_truth"] for r in recs]))
    out["location_agreement"] = float(np.mean([r["location"] == r["location_truth"] for r in recs]))
    out["wall_s_per_pair_median"] = float(np.median([r["wall_s"] for r in recs]))
    out["cpu_s_per_pair_median"] = float(np.median([r["cpu_s"] for r in recs]))
    return out


def _collect(results: dict, engine: str, rec: dict) -> None:
    entry = results["engines"].setdefault(engine, {"cases": []})
    entry["cases"] = [r for r in entry["cases"] if r["case"] != rec["case"]] + [rec]
    entry["cases"].sort(key=lambda r: r["case"])
    ok = [r for r in entry["cases"] if "error" not in r]
    entry["summary"] = summarise(ok) if ok else {}
    entry["refused"] = len(entry["cases"]) - len(ok)


def table(results: dict) -> str:
    """The per-engine summaries side by side (markdown)."""
    engines = list(results["engines"])
    rows = [("pairs scored (refused)", lambda e: f"{e['summary'].get('cases', 0)} ({e['refused']})"),
            ("volume error mL, median (max)", lambda e: f"{e['summary']['volume_abs_error_ml_median']:.2f} "
                                                        f"({e['summary']['volume_abs_error_ml_max']:.1f})"),
            ("Dice, median (min)", lambda e: f"{e['summary']['dice_median']:.3f} ({e['summary']['dice_min']:.3f})"),
            ("diameter error mm, median / p90", lambda e: f"{e['summary']['diameter_abs_error_mm_median']:.1f} / "
                                                          f"{e['summary']['diameter_abs_error_mm_p90']:.1f}"),
            ("axis-type agreement", lambda e: f"{e['summary']['axis_agreement']:.2f}"),
            ("expansion accuracy", lambda e: f"{e['summary']['expansion_accuracy']:.2f}"),
            ("location agreement", lambda e: f"{e['summary']['location_agreement']:.2f}"),
            ("wall s / pair, median", lambda e: f"{e['summary']['wall_s_per_pair_median']:.0f}"),
            ("CPU s / pair, median", lambda e: f"{e['summary']['cpu_s_per_pair_median']:.0f}")]
    lines = ["| | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for label, fn in rows:
        cells = []
        for e in engines:
            try:
                cells.append(fn(results["engines"][e]))
            except KeyError:
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--engines", default="classical,unet2d",
                    help="comma-separated engines (workflow engine names or model references); each pair is "
                         "generated once and run through every engine")
    ap.add_argument("--space", default="template", choices=("template", "native"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--merge", type=Path, nargs="+",
                    help="merge earlier --json files (per engine and case; later files win) into --json and print "
                         "the table; runs nothing")
    a = ap.parse_args(argv)
    results: dict = {"space": a.space, "engines": {}}
    if a.merge:
        for f in a.merge:
            d = json.loads(f.read_text())
            results["space"] = d.get("space", a.space)
            for engine, entry in d["engines"].items():
                for rec in entry["cases"]:
                    _collect(results, engine, rec)
        if a.json:
            a.json.write_text(json.dumps(results, indent=1, default=str))
        print(table(results))
        return 0
    engines = [e for e in a.engines.split(",") if e]
    for i in range(a.start, a.start + a.cases):
        for engine, rec in run_case(i, engines, a.space).items():
            print(json.dumps({"engine": engine, **rec}, default=str), flush=True)
            _collect(results, engine, rec)
        if a.json:  # after every case: a run stopped part-way keeps what it measured
            a.json.write_text(json.dumps(results, indent=1, default=str))
    for engine in engines:
        print(engine, json.dumps(results["engines"][engine]["summary"], indent=1), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
