#!/usr/bin/env python
"""Diagnostic sweep of the classical engine's FLAIR/T2 thresholds on tuning seeds 101-104 (never the
held-out 60000..): truth brain, truth alignment, SNR 25, no N4, 1.5 mm; whole-tumour Dice and median
volume error per (FLAIR, T2) threshold pair. The chosen point is the GliomaParams default
(neurorad/segment/glioma_classical.py). Synthetic phantoms only.

Usage: ``python bench/glioma_sweep.py`` (about 10 CPU minutes)."""
import itertools

import numpy as np

from neurorad.image.masks import dice
from neurorad.phantom.cases import make_case
from neurorad.segment.glioma_classical import GliomaParams, segment_glioma

res = {}
for seed in (101, 102, 103, 104):
    c = make_case("glioma", seed, pair=False, snr=25.0, in_plane_mm=1.5, slice_thickness_mm=1.5)
    im = {s: np.asarray(c.images[f"baseline_{s}"].data) for s in ("t1", "t1c", "t2", "flair")}
    truth = np.asarray(c.truth["truth_baseline_tumour_class"].data)
    brain = np.asarray(c.truth["truth_baseline_brain"].data) > 0
    sp = c.images["baseline_t1c"].spacing_mm
    for fl, t2 in itertools.product((1.25, 1.3, 1.4), (0.9, 1.0, 1.1, 1.25)):
        seg = segment_glioma(im["t1"], im["t1c"], im["t2"], im["flair"], brain, sp,
                             GliomaParams(flair_ratio=fl, t2_ratio=t2))
        v = (seg.classes > 0).sum() / max(1, (truth > 0).sum()) - 1
        res.setdefault((fl, t2), []).append((dice(seg.classes > 0, truth > 0), v))
    print("seed", seed, flush=True)
for k, v in sorted(res.items()):
    d = np.array(v)
    print(f"flair>={k[0]} t2>={k[1]}: WT Dice mean {d[:,0].mean():.3f} min {d[:,0].min():.3f}, "
          f"vol err median {100*np.median(d[:,1]):+.0f} %")
