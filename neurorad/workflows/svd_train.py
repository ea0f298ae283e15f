"""Rebuild the phantom dataset and retrain the WMH / microbleed starter models (one command each)::

    python -m neurorad.workflows.svd_train wmh --out RUN   # then: neurorad model import RUN/run/model
    python -m neurorad.workflows.svd_train cmb --out RUN

Data: domain-randomised phantoms (:func:`neurorad.phantom.randomise.randomised_case`: contrast, bias,
noise, resolution, slice thickness, pose, anatomy warp), seeds 0..n-1 (the benchmarks use seeds >= 50000
and the tuning sweeps seeds 40000-40999, so no training phantom is ever scored), put through the papers'
own preprocessing (:mod:`neurorad.segment.svd_starter`) and written as nnU-Net raw datasets whose images
already are the networks' 384 x 384 slices. The training configuration (network, loss, epochs: the
departures from the papers for a CPU budget) is :data:`neurorad.segment.svd_starter.CONFIGS`.

This lives in the workflows layer because it joins the phantoms (``neurorad.phantom``) to the learned
layer (``neurorad.segment``), which may not import them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from neurorad.image.volume import Volume
from neurorad.segment.svd_paper import to_paper_grid
from neurorad.segment.svd_starter import CONFIGS, cmb_input, wmh_input

__all__ = ["wmh_cases", "cmb_cases", "main"]

CMB_BLOCK = 24  # slices kept per microbleed case (the block holding the most microbleed slices)
WMH_SLICES = 24  # slices kept per WMH case: up to half with a lesion, the rest without (CPU budget)


def _label(vol: Volume, lab: np.ndarray, square: str) -> Volume:
    return to_paper_grid(vol, (np.asarray(lab) > 0).astype(np.uint8), square=square, order=0)[0]  # type: ignore[arg-type]


def wmh_cases(n: int, seed0: int = 0) -> Iterator[tuple[str, list[Volume], Volume]]:
    """WMH training cases on the network grid: up to ``WMH_SLICES`` // 2 slices with a lesion and as many
    without (seeded draws; the validation pass over whole cases is what a CPU budget cannot afford)."""
    from neurorad.phantom.randomise import randomised_case

    for i in range(n):
        imgs, lab, _rec = randomised_case("wmh", seed0 + i, contrasts=("flair",))
        x, _g = wmh_input(imgs[0])
        y = _label(imgs[0], lab.data, "pad")
        has = np.asarray(y.data).reshape(-1, y.data.shape[2]).any(axis=0)
        rng = np.random.default_rng(seed0 + i)
        neg = np.flatnonzero(~has & (np.abs(np.asarray(x.data)).reshape(-1, x.data.shape[2]).max(axis=0) > 0))
        pos = np.flatnonzero(has)
        pos = rng.choice(pos, min(len(pos), WMH_SLICES // 2), replace=False)
        keep = np.sort(np.concatenate([pos, rng.choice(neg, min(len(neg), len(pos)), replace=False)])).astype(int)
        yield (f"wmh{seed0 + i:05d}", [Volume(np.asarray(x.data)[:, :, keep], x.affine)],
               Volume(np.asarray(y.data)[:, :, keep], x.affine))


def cmb_cases(n: int, seed0: int = 0) -> Iterator[tuple[str, list[Volume], Volume]]:
    """Microbleed training cases on the network grid: the block of ``CMB_BLOCK`` slices with the most
    microbleed slices (keeps the 3-slice neighbourhoods intact and the validation affordable on a CPU)."""
    from neurorad.phantom.randomise import randomised_case

    for i in range(n):
        imgs, lab, _rec = randomised_case("cmb", seed0 + i, contrasts=("swi",))
        x, _g = cmb_input(imgs[0])
        y = _label(imgs[0], lab.data, "crop")
        has = np.asarray(y.data).reshape(-1, y.data.shape[2]).any(axis=0).astype(int)
        nz = x.data.shape[2]
        width = min(CMB_BLOCK, nz)
        sums = np.convolve(has, np.ones(width, int), mode="valid")
        z0 = int(np.argmax(sums)) if has.any() else max(0, nz // 2 - width // 2)
        z1 = z0 + width
        yield (f"cmb{seed0 + i:05d}", [Volume(np.asarray(x.data)[:, :, z0:z1], x.affine)],
               Volume(np.asarray(y.data)[:, :, z0:z1], x.affine))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neurorad.workflows.svd_train",
                                 description="Build the phantom dataset and train a WMH or microbleed starter "
                                             "model (see the module doc).")
    ap.add_argument("kind", choices=sorted(CONFIGS))
    ap.add_argument("--out", type=Path, required=True, help="run folder (dataset/, config.json, run/)")
    ap.add_argument("--cases", type=int, default=12, help="phantom cases (seeds 0..n-1; default 12)")
    from neurorad.segment.train import add_budget_arguments

    add_budget_arguments(ap)
    a = ap.parse_args(argv)

    from neurorad.segment.dataset import write_dataset
    from neurorad.segment.train import train_starter

    a.out.mkdir(parents=True, exist_ok=True)
    ds = a.out / "dataset"
    t0 = time.perf_counter()
    if not (ds / "dataset.json").exists():
        cases = wmh_cases(a.cases) if a.kind == "wmh" else cmb_cases(a.cases)
        write_dataset(ds, cases, ["flair" if a.kind == "wmh" else "swi"], {0: "background", 1: a.kind},
                      description=f"{a.kind} phantoms (synthetic) in the paper's 384 x 384 input space")
    print(f"dataset: {time.perf_counter() - t0:.0f} s", flush=True)
    # spacing_mm None (the dataset already is the network's grid) has no TOML spelling: parsed from the dict
    print(train_starter(CONFIGS[a.kind], a.out, a, f"python -m neurorad.workflows.svd_train {a.kind}",
                        before=(("cases", a.cases),),
                        after=()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
