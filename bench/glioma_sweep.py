#!/usr/bin/env python
"""Sweeps of the classical glioma engine's operating points on TUNING phantoms only (seeds 101-..., never the
held-out 60000..). Synthetic phantoms only.

Two modes:

* default (the first sweep): FLAIR/T2 thresholds on seeds 101-104 with truth brain, truth alignment, SNR 25,
  no N4, 1.5 mm; whole-tumour Dice and median volume error per (FLAIR, T2) pair (about 10 CPU minutes).
* ``--thick DIR``: the third sweep, of the partial-volume level (``pv_fraction``) on 5 mm and 1 mm draws
  of tuning seeds 200-208 (5 mm slices) and 210-213 (1 mm), otherwise the benchmark's distribution
  (``bench/glioma.py`` specs and draws: noise, bias, gamma, weaker enhancement, misaligned sequences); each
  draw goes through the workflow (sitk registration, truth brain, N4) once and is kept in DIR
  (about 20 CPU s per 5 mm draw, 60 per 1 mm one), then re-segmented per point.
* ``--cache DIR``: re-segments the registered, bias-corrected sequences that ``bench/glioma.py --seed0 101
  --keep DIR`` kept (the workflow's own preprocessing of the benchmark's distribution: 1 and 5 mm slices,
  misaligned sequences, N4, gamma contrast, weaker enhancement), sweeping the partial-volume level
  (``pv_fraction``, 0 = off), 3D hole filling, smoothing and the FLAIR and T1c thresholds; seconds per point.

The chosen point is the GliomaParams default (neurorad/segment/glioma_classical.py).

Usage: ``python bench/glioma_sweep.py [--cache DIR | --thick DIR]``"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from neurorad.image.masks import dice
from neurorad.segment.glioma_classical import GliomaParams, segment_glioma


def _report(res: dict) -> None:
    for k, v in sorted(res.items()):
        d = np.array(v)
        print(f"{k}: WT Dice mean {d[:, 0].mean():.3f} min {d[:, 0].min():.3f}, vol err median "
              f"{100 * np.median(d[:, 1]):+.1f} %, median |err| {100 * np.median(np.abs(d[:, 1])):.1f} %, "
              f"max |err| {100 * np.abs(d[:, 1]).max():.1f} %")


def first_sweep() -> None:
    from neurorad.phantom.cases import make_case

    res: dict = {}
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
            res.setdefault(f"flair>={fl} t2>={t2}", []).append((dice(seg.classes > 0, truth > 0), v))
        print("seed", seed, flush=True)
    _report(res)


def cache_sweep(cache: Path) -> None:
    from neurorad.image.nifti import load_nifti

    res: dict = {}
    for d in sorted(p for p in cache.iterdir() if (p / "truth_tumour_class.nii.gz").is_file()):
        im = {s: np.asarray(load_nifti(d / f"{s}.nii.gz").data, np.float32) for s in ("t1", "t1c", "t2", "flair")}
        ref = load_nifti(d / "t1c.nii.gz")
        brain = np.asarray(load_nifti(d / "brain_mask.nii.gz").data) > 0
        truth = np.asarray(load_nifti(d / "truth_tumour_class.nii.gz").data) > 0
        grid = [(1.4, 0.5, 1.6, False, 0.0)]  # the first operating point
        grid += list(itertools.product((1.25, 1.3, 1.4), (1.0,), (1.25,), (True,), (0.0, 0.5)))
        for fl, sm, t1c, fh, bf in grid:
            seg = segment_glioma(im["t1"], im["t1c"], im["t2"], im["flair"], brain, ref.spacing_mm,
                                 GliomaParams(flair_ratio=fl, smooth_sigma_mm=sm, t1c_ratio=t1c, fill_holes=fh,
                                              pv_fraction=bf))
            v = (seg.classes > 0).sum() / max(1, truth.sum()) - 1
            res.setdefault(f"flair>={fl} smooth {sm} t1c>={t1c} fill {fh:d} pv {bf}", []).append(
                (dice(seg.classes > 0, truth), v))
        print(d.name, ref.spacing_mm, flush=True)
    _report(res)


THICK_SEEDS = {5.0: tuple(range(200, 209)), 1.0: tuple(range(210, 214))}


def thick_draws(cache: Path) -> None:
    """Draw A of each tuning seed at the given slice thickness, through the workflow, kept in ``cache``."""
    import tempfile

    import glioma as bench  # bench/glioma.py, beside this file

    from neurorad.image.nifti import save_nifti
    from neurorad.phantom.cases import make_case
    from neurorad.preprocess.registration import RegistrationLimits
    from neurorad.workflows.contract import WorkflowInputs
    from neurorad.workflows.glioma import GliomaWorkflow
    from neurorad.workflows.runner import execute

    cache.mkdir(parents=True, exist_ok=True)
    for thick, seeds in THICK_SEEDS.items():
        for seed in seeds:
            dst = cache / f"{seed}_{thick:.0f}mm"
            if (dst / "truth_tumour_class.nii.gz").is_file():
                continue
            spec = bench.specs(1, seed)[0]
            spec["slice_thickness_mm"] = thick
            if thick != 1.0 and spec["in_plane_mm"] == 1.0:
                spec["in_plane_mm"] = float(np.random.default_rng(seed + 99).uniform(0.9, 1.3))
            case = make_case("glioma", seed, pair=False, snr=None, diameter_mm=spec["diameter_mm"],
                             in_plane_mm=spec["in_plane_mm"], slice_thickness_mm=thick,
                             bias_strength=spec["bias_strength"])
            vols = bench.draw(case, spec, np.random.default_rng([seed, 7]))
            with tempfile.TemporaryDirectory(prefix="neurorad-glioma-sweep-") as td:
                series = {s: save_nifti(v, Path(td) / f"{s}.nii") for s, v in vols.items()}
                opts = {"registration_backend": "sitk", "registration_limits": RegistrationLimits(min_nmi=1.005),
                        "brain_mask": case.truth["truth_baseline_brain"]}
                execute(GliomaWorkflow(), WorkflowInputs(series, options=opts), dst, write_outputs=False)
            save_nifti(case.truth["truth_baseline_tumour_class"], dst / "truth_tumour_class.nii.gz")
            print("drawn", dst.name, flush=True)


def thick_sweep(cache: Path) -> None:
    from neurorad.image.nifti import load_nifti

    thick_draws(cache)
    for thick in THICK_SEEDS:
        res: dict = {}
        for d in sorted(cache.glob(f"*_{thick:.0f}mm")):
            im = {s: np.asarray(load_nifti(d / f"{s}.nii.gz").data, np.float32) for s in ("t1", "t1c", "t2", "flair")}
            ref = load_nifti(d / "t1c.nii.gz")
            brain = np.asarray(load_nifti(d / "brain_mask.nii.gz").data) > 0
            truth = np.asarray(load_nifti(d / "truth_tumour_class.nii.gz").data) > 0
            for pv in (0.0, 0.5, 0.55, 0.6):
                seg = segment_glioma(im["t1"], im["t1c"], im["t2"], im["flair"], brain, ref.spacing_mm,
                                     GliomaParams(pv_fraction=pv))
                v = (seg.classes > 0).sum() / max(1, truth.sum()) - 1
                res.setdefault(f"{thick:.0f} mm, pv_fraction {pv}", []).append((dice(seg.classes > 0, truth), v))
        _report(res)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=None, help="folder written by bench/glioma.py --keep (tuning seeds)")
    p.add_argument("--thick", type=Path, default=None,
                   help="folder for the third sweep's tuning draws (made when absent), 5 and 1 mm slices")
    a = p.parse_args()
    if a.thick is not None:
        thick_sweep(a.thick)
    elif a.cache is None:
        first_sweep()
    else:
        cache_sweep(a.cache)


if __name__ == "__main__":
    main()
