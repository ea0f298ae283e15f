"""Brain extraction of the weakly supervised model beside deepbet, HD-BET and its label source.

Test sets (issue 11; the skull-stripping paper's Table 1/2 metrics):

* held-out phantoms: an nnU-Net raw dataset written with TRUTH brain labels, e.g.
  ``neurorad dataset phantom --kind glioma --target brain --labels truth --contrasts t1,t2,flair
  --mix-contrasts --cases 6 --seed 2 --out Test_TruthBrain`` (seed 2: cases unseen in training, seed 1);
* Colin27 (real T1 head, ``ch2.nii.gz``) against its ``ch2bet`` mask (``ch2bet > 0``).

Metrics per case (:func:`neurorad.evaluate.segmentation.segmentation_metrics`): Dice, sensitivity,
specificity (over the whole image), HD95 (max of the two directed 95th percentiles, mm).

    .venv/bin/python bench/brain_weak.py --test Test_TruthBrain --engines prior-gmm,deepbet --out a.json
    .venv/bin/python bench/brain_weak.py --summary a.json b.json      # the table

The phantoms are synthetic: their figures say how the engines behave on them, not on patients.
Colin27 lies in MNI space, where the prior-gmm label method starts from an almost perfect prior,
so its figure there flatters that method.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _cases(test: Path | None, colin: bool) -> list[tuple[str, str, object, np.ndarray]]:
    from neurorad import resources
    from neurorad.image.nifti import load_nifti
    from neurorad.segment.dataset import read_dataset

    out = []
    if test is not None:
        ds = read_dataset(test)
        meta = json.loads((test / "dataset.json").read_text()).get("neurorad_cases", [])
        for i, c in enumerate(ds.cases):
            imgs, lab = ds.load_case(c)
            contrast = (meta[i].get("contrasts") or ["?"])[0] if i < len(meta) else "?"
            out.append((c, f"phantom-{contrast}", imgs[0], np.asarray(lab.data) > 0))
    if colin:
        head = load_nifti(resources.colin27_head())
        out.append(("colin27", "colin27-t1", head, np.asarray(load_nifti(resources.colin27_brain()).data) > 0))
    return out


def run(test: Path | None, engines: list[str], colin: bool) -> list[dict]:
    from neurorad.evaluate.segmentation import segmentation_metrics
    from neurorad.preprocess.brain_extraction import get_extractor

    rows = []
    cases = _cases(test, colin)
    for eng in engines:
        ext = get_extractor(eng)
        for cid, group, vol, truth in cases:
            t0 = time.perf_counter()
            mask = np.asarray(ext.extract(vol).data, bool)  # type: ignore[attr-defined]
            sec = time.perf_counter() - t0
            m = segmentation_metrics(mask, truth, vol.spacing_mm)  # type: ignore[attr-defined]
            row = {"engine": eng, "case": cid, "group": group, "dice": m["dice"], "sensitivity": m["sensitivity"],
                   "specificity": m["specificity"], "hd95_mm": m["hd95_mm"], "seconds": round(sec, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    lines = ["| engine | test set | n | Dice % | sensitivity % | specificity % | HD95 mm | s/volume |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        g = "colin27 (real T1 vs ch2bet)" if r["group"].startswith("colin") else "held-out phantoms (T1/T2/FLAIR)"
        groups.setdefault((r["engine"], g), []).append(r)
        if not r["group"].startswith("colin"):
            groups.setdefault((r["engine"], r["group"]), []).append(r)
    for (eng, g), rs in sorted(groups.items()):
        def ms(k: str, scale: float = 100.0, rs: list[dict] = rs) -> str:
            v = np.array([r[k] for r in rs], float) * scale
            return f"{v.mean():.2f}" + (f" ({v.std(ddof=1):.2f})" if len(v) > 1 else "")
        lines.append(f"| {eng} | {g} | {len(rs)} | {ms('dice')} | {ms('sensitivity')} | {ms('specificity')} | "
                     f"{ms('hd95_mm', 1.0)} | {ms('seconds', 1.0)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", type=Path, help="nnU-Net raw dataset with truth brain labels")
    ap.add_argument("--engines", default="neurorad-weak,prior-gmm,deepbet,hdbet")
    ap.add_argument("--no-colin", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--summary", nargs="*", type=Path, help="print the table of earlier --out files")
    a = ap.parse_args()
    if a.summary:
        rows = [r for p in a.summary for r in json.loads(p.read_text())]
        print(summary(rows))
        return
    rows = run(a.test, [e.strip() for e in a.engines.split(",") if e.strip()], not a.no_colin)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(summary(rows))


if __name__ == "__main__":
    main()
