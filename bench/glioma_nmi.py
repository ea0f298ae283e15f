#!/usr/bin/env python
"""The glioma workflow's registration NMI floor: NMI of correctly registered T1/T2/FLAIR -> T1c pairs against the
same pairs deliberately misregistered (shifted 2-10 mm, rotated 3-10 deg), scored exactly as the workflow's
check does (normalised mutual information on the Otsu foreground of the T1c brain box, coarsened to the
2 mm registration grid; ``neurorad.preprocess.registration``). Synthetic phantoms only.

Input: folders kept by ``bench/glioma.py --seed0 101 --keep DIR`` (tuning seeds; the sequences there are already
registered to T1c and N4-corrected, so "correct" is the workflow's own result and the misregistrations are
applied on top). The floor must pass every correct pair and should refuse gross failures.

Usage: ``python bench/glioma_nmi.py DIR``"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from neurorad.image.geometry import crop_to_mask, resample_to_spacing, rigid_matrix
from neurorad.image.nifti import load_nifti
from neurorad.preprocess.registration import _foreground, normalized_mutual_information
from neurorad.preprocess.transforms import AffineTransform, resample
from neurorad.workflows.glioma.workflow import REGISTRATION_SPACING_MM

MOVES = {"correct": ((0, 0, 0), (0, 0, 0)), "shift 2 mm": ((0, 0, 0), (2, 0, 0)), "shift 4 mm": ((0, 0, 0), (0, 4, 0)),
         "shift 8 mm": ((0, 0, 0), (0, 0, 8)), "rot 3 deg": ((3, 0, 0), (0, 0, 0)), "rot 6 deg": ((0, 6, 0), (0, 0, 0)),
         "rot 10 deg": ((0, 0, 10), (0, 0, 0)), "shift 5 mm + rot 5 deg": ((5, 0, 5), (3, 4, 0))}


def main() -> None:
    root = Path(sys.argv[1])
    out: dict[str, list[float]] = {k: [] for k in MOVES}
    for d in sorted(p for p in root.iterdir() if (p / "brain_mask.nii.gz").is_file()):
        ref = load_nifti(d / "t1c.nii.gz")
        brain = load_nifti(d / "brain_mask.nii.gz")
        fixed = crop_to_mask(ref, brain, margin_mm=10.0)
        coarse = tuple(max(float(s), REGISTRATION_SPACING_MM) for s in fixed.spacing_mm)
        fixed = resample_to_spacing(fixed, coarse)
        fg = _foreground(fixed)
        for s in ("t1", "t2", "flair"):
            mov = load_nifti(d / f"{s}.nii.gz")
            for name, (rot, shift) in MOVES.items():
                t = AffineTransform(rigid_matrix(rot, shift, fixed.center_mm))
                w = resample(mov, fixed, t, "linear")
                out[name].append(normalized_mutual_information(fixed.data, w.data, fg))
        print(d.name, ref.spacing_mm, {k: round(v[-1], 4) for k, v in out.items()}, flush=True)
    for k, v in out.items():
        print(f"{k:<24} NMI min {min(v):.4f} median {np.median(v):.4f} max {max(v):.4f} (n={len(v)})")


if __name__ == "__main__":
    main()
