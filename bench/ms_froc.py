"""FROC curves of the MS lesion engines, one curve per engine, pooled over benchmark runs (issue 17: "FROC curve
per engine").

Each curve is read off ``bench/ms_benchmark.py`` records (``--json`` or ``--jsonl``; several files of disjoint
cases are pooled, as ``--summarise`` pools them). The benchmark runs the workflow with its lesion threshold lowered
to the FROC floor (0.02) and keeps each detection's peak score, so the curve at a threshold T is what the workflow
would report with ``post.min_peak_score = T``: a lesion is found when the detections of peak >= T cover >= 40 % of
it, a detection of peak >= T touching no lesion is a false positive (the benchmark's definitions). The curve is
evaluated at every distinct detection peak (the exact staircase of a free-response ROC; Chakraborty & Berbaum,
Med Phys 2004, "Observer studies involving detection and localization"), so no point between two peaks is
interpolated. Thresholds under the runs' floor cannot be read: the curve stops at its floor.

Usage::

    python bench/ms_froc.py \
        --curve classical default bench/results/ms_widened_1_19_0.json bench/results/ms_widened_fresh40_79_1_19_0.json \
        --curve learned learned bench/results/ms_widened_engines_1_19_0.json ... \
        --point "ideal observer=0.887@0.5" --png docs/ms-froc.png --json bench/results/ms_froc_1_19_0.json

prints, per curve, the sensitivity reached within each false-positive budget and at the operating point (the
workflow's, or ``--operating-point``), as a Markdown table; ``--png`` draws the curves (sensitivity against false
positives per patient, the operating point marked), ``--json`` keeps every staircase point.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BUDGETS_FP_PER_PATIENT = (0.05, 0.1, 0.25, 0.5, 1.0)


def _bench():  # noqa: ANN202 - the ms_benchmark module
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import ms_benchmark  # noqa: PLC0415 - a sibling script, not a package

    return ms_benchmark


def froc_curve(records: list[dict], floor: float = 0.02, also_at: tuple[float, ...] = ()) -> list[dict]:
    """The FROC staircase of one engine's benchmark records: one point per distinct detection peak >= ``floor``,
    the floor itself and each threshold of ``also_at`` (e.g. the operating point), thresholds ascending, each
    ``ms_benchmark.operating_point`` at that threshold (lesions found, lesion sensitivity, false positives per
    patient, patient sensitivity and specificity). Records with an ``error`` are left out, as the benchmark's
    summary leaves them out."""
    mb = _bench()
    ok = [r for r in records if "error" not in r]
    if not ok:
        raise ValueError("no scored case in the records")
    if any(t < floor for t in also_at):
        raise ValueError(f"a threshold of {min(also_at)} is under the runs' floor {floor}")
    peaks = {round(float(d["peak"]), 6) for r in ok for d in r["detections"] if d["peak"] >= floor}
    return [mb.operating_point(ok, t) for t in sorted(peaks | {floor, *also_at})]


def best_within(curve: list[dict], max_fp_per_patient: float) -> dict | None:
    """The point of highest lesion sensitivity whose false positives per patient are within the budget (the
    highest threshold among equals: fewest false positives); None when no point is."""
    inside = [p for p in curve if p["fp_per_patient"] <= max_fp_per_patient + 1e-12]
    if not inside:
        return None
    return max(inside, key=lambda p: (p["found"], p["threshold"]))


def at_threshold(curve: list[dict], threshold: float) -> dict:
    """The curve's point for a lesion threshold: the detections of peak >= ``threshold`` are those of the
    staircase point of the smallest threshold >= it (no detection peaks between the two)."""
    if threshold < curve[0]["threshold"] - 1e-12:
        raise ValueError(f"threshold {threshold} is under the curve's floor {curve[0]['threshold']}")
    above = [p for p in curve if p["threshold"] >= threshold - 1e-12]
    if not above:
        raise ValueError(f"threshold {threshold} is over every detection's peak: nothing is detected there")
    return above[0]


def table_markdown(curves: dict[str, list[dict]], operating_point: float,
                   budgets: tuple[float, ...] = BUDGETS_FP_PER_PATIENT) -> str:
    """Per curve: the lesion sensitivity (found / lesions) within each false-positive budget, and the point at the
    workflow's operating point with its false positives per patient and patient specificity."""
    head = ["curve", "lesions", *[f"<= {b:g} FP/pt" for b in budgets],
            f"at {operating_point:g} (FP/pt, patient spec.)", "floor (FP/pt)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, c in curves.items():
        cells = [name, str(c[0]["lesions"])]
        for b in budgets:
            p = best_within(c, b)
            cells.append("-" if p is None else f"{p['lesion_sensitivity']:.3f} ({p['found']})")
        op = at_threshold(c, operating_point)
        cells.append(f"{op['lesion_sensitivity']:.3f} ({op['fp_per_patient']:.3f}, {op['patient_specificity']:.3f})")
        cells.append(f"{c[0]['lesion_sensitivity']:.3f} ({c[0]['fp_per_patient']:.3f})")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def draw(curves: dict[str, list[dict]], operating_point: float, points: dict[str, tuple[float, float]],
         png: Path, title: str) -> None:
    """Step plots of lesion sensitivity against false positives per patient, the operating point as a dot."""
    import matplotlib  # noqa: PLC0415 - only for --png

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    styles = ("-", "--", "-.", ":")
    for k, (name, c) in enumerate(curves.items()):
        xs = [p["fp_per_patient"] for p in reversed(c)]  # high threshold first: FP ascending
        ys = [p["lesion_sensitivity"] for p in reversed(c)]
        (line,) = ax.step(xs, ys, where="post", label=name, linestyle=styles[k % len(styles)])
        op = at_threshold(c, operating_point)
        ax.plot([op["fp_per_patient"]], [op["lesion_sensitivity"]], "o", color=line.get_color())
    for name, (sens, fp) in points.items():
        ax.plot([fp], [sens], "k*", markersize=10, label=name)
    ax.axhline(0.90, color="grey", linestyle=":", linewidth=1)
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positives per patient")
    ax.set_ylabel("lesion sensitivity (new and enlarging)")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(left=0)
    ax.set_ylim(top=1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.01, f"dots: operating point {operating_point:g}; dotted: issue 17's 0.90 at <= 0.5 FP/patient",
             fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def _parse_point(text: str) -> tuple[str, tuple[float, float]]:
    try:
        name, rest = text.rsplit("=", 1)
        sens, fp = rest.split("@")
        return name, (float(sens), float(fp))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--point {text!r}: expected NAME=SENSITIVITY@FP_PER_PATIENT") from exc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curve", nargs="+", action="append", required=True, metavar="ITEM",
                    help="LABEL ENGINE FILE [FILE ...]: one curve, the ENGINE rows (default, learned, fusion; "
                         "'default' in a single-engine run) of the files pooled; repeat per curve")
    ap.add_argument("--floor", type=float, default=0.02, help="the runs' FROC floor (ms_benchmark --froc-floor)")
    ap.add_argument("--operating-point", type=float, default=None,
                    help="the lesion threshold to mark (default: the workflow's, PostParams().min_peak_score)")
    ap.add_argument("--point", type=_parse_point, action="append", default=[],
                    help="a reference point to draw, NAME=SENSITIVITY@FP_PER_PATIENT (e.g. an ideal observer)")
    ap.add_argument("--png", type=Path, default=None, help="draw the curves into this PNG")
    ap.add_argument("--title", default="MS new/enlarging lesions: FROC per engine")
    ap.add_argument("--json", type=Path, default=None, help="write every curve's staircase here")
    args = ap.parse_args(argv)
    mb = _bench()
    if args.operating_point is None:
        args.operating_point = mb.workflow_operating_point()
    curves: dict[str, list[dict]] = {}
    for item in args.curve:
        if len(item) < 3:
            ap.error(f"--curve {' '.join(item)}: expected LABEL ENGINE FILE [FILE ...]")
        label, engine, *files = item
        try:
            curves[label] = froc_curve(mb.load_results([Path(f) for f in files], engine), args.floor,
                                        (args.operating_point,))
        except ValueError as exc:
            ap.error(f"--curve {label}: {exc}")
    print(table_markdown(curves, args.operating_point))
    if args.png:
        draw(curves, args.operating_point, dict(args.point), args.png, args.title)
        print(f"wrote {args.png}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"floor": args.floor, "operating_point": args.operating_point,
                                         "curves": curves, "points": dict(args.point),
                                         "runs": {i[0]: {"engine": i[1], "files": i[2:]} for i in args.curve}},
                                        indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
