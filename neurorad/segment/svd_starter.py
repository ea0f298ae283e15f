"""Starter models of the WMH 2D U-Net and the microbleed 3-slice U-Net, trained on phantoms only.

One command trains each starter model (dataset + training + registry model folder; none is shipped yet:
on the 2 shared CPU cores of the first session the training did not finish)::

    python -m neurorad.segment.svd_starter wmh --out runs/wmh-unet2d
    python -m neurorad.segment.svd_starter cmb --out runs/cmb-unet25d

Data: domain-randomised phantoms (:func:`neurorad.segment.phantom_data.randomised_case`: contrast, bias,
noise, resolution, slice thickness, pose, anatomy warp), seeds 0..n-1 (the benchmarks use seeds >= 50000),
put through the papers' own preprocessing (:mod:`neurorad.segment.svd_paper`) and written as nnU-Net raw
datasets whose images already are the networks' 384 x 384 slices (``spacing_mm`` none, normalisation
``none`` in the card: the workflow engines apply the same preprocessing before the network).

* WMH (PAPERS.md B2): global z-score, zero-pad to square, 384 x 384; ``unet2d`` (MONAI BasicUNet 2D,
  features 16-256, batch norm, bilinear upsampling), cross-entropy, Adam 3e-4, learning rate -10 % after
  30 epochs without validation-Dice gain, stop after 60, best validation checkpoint. Kept per case: the
  slices with a lesion and as many without.
* Microbleeds (C2): SWI WM-peak alignment, rare-bin window, min-max 0-1, square crop, 384 x 384;
  ``unet25d`` with 3 slices in and the middle slice out, cross-entropy on two classes (= binary
  cross-entropy), Adam 1e-3, learning rate x 0.1 on plateau; half of the training patches centred on a
  microbleed (the paper's 1 : 1 positive : negative slices, approximately: a random patch may hold one).

Departures for a CPU budget (the shipped models were trained on 2 shared CPU cores), stated in the cards:
128 x 128 training patches from the 384 x 384 slices (the papers train on whole slices), 6 epochs of 12
batches of 4 (the papers: 200 epochs, batch 32), Adam 1e-3 for both (the WMH paper: 3e-4; a higher rate
for so few steps), 12 cases (10 training, 2 validation); microbleed cases are cut to the block of 40
slices with the most microbleeds. These starter models are undertrained; their cards say so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from neurorad.image.volume import Volume
from neurorad.segment.svd_paper import swi_paper_normalise, to_paper_grid, wmh_paper_normalise

__all__ = ["wmh_input", "cmb_input", "wmh_cases", "cmb_cases", "CONFIGS", "main"]


def wmh_input(vol: Volume) -> tuple[Volume, object]:
    """The WMH network's input stack (z-scored, padded, 384 x 384) and its geometry."""
    return to_paper_grid(vol, wmh_paper_normalise(vol.data), square="pad")


def cmb_input(vol: Volume, wm_mask: np.ndarray | None = None) -> tuple[Volume, object]:
    """The microbleed network's input stack (WM-peak aligned, windowed 0-1, square crop, 384 x 384)."""
    data = np.asarray(vol.data, np.float32)
    mask = wm_mask
    if mask is None:  # no WM mask: the head above Otsu's threshold (brain tissue dominates its histogram)
        from skimage.filters import threshold_otsu

        mask = data > threshold_otsu(data)
    y, _ = swi_paper_normalise(data, mask)
    return to_paper_grid(vol, y, square="crop")


def _label(vol: Volume, lab: np.ndarray, square: str) -> Volume:
    return to_paper_grid(vol, (np.asarray(lab) > 0).astype(np.uint8), square=square, order=0)[0]  # type: ignore[arg-type]


def wmh_cases(n: int, seed0: int = 0) -> Iterator[tuple[str, list[Volume], Volume]]:
    from neurorad.segment.phantom_data import randomised_case

    for i in range(n):
        imgs, lab, _rec = randomised_case("wmh", seed0 + i, contrasts=("flair",))
        x, _g = wmh_input(imgs[0])
        y = _label(imgs[0], lab.data, "pad")
        has = np.asarray(y.data).reshape(-1, y.data.shape[2]).any(axis=0)
        rng = np.random.default_rng(seed0 + i)
        neg = np.flatnonzero(~has & (np.abs(np.asarray(x.data)).reshape(-1, x.data.shape[2]).max(axis=0) > 0))
        keep = np.sort(np.concatenate([np.flatnonzero(has), rng.choice(neg, min(len(neg), int(has.sum())),
                                                                       replace=False)])).astype(int)
        yield (f"wmh{seed0 + i:05d}", [Volume(np.asarray(x.data)[:, :, keep], x.affine)],
               Volume(np.asarray(y.data)[:, :, keep], x.affine))


CMB_BLOCK = 40


def cmb_cases(n: int, seed0: int = 0) -> Iterator[tuple[str, list[Volume], Volume]]:
    from neurorad.segment.phantom_data import randomised_case

    for i in range(n):
        imgs, lab, _rec = randomised_case("cmb", seed0 + i, contrasts=("swi",))
        x, _g = cmb_input(imgs[0])
        y = _label(imgs[0], lab.data, "crop")
        # a contiguous block of ``CMB_BLOCK`` slices holding the most microbleed slices (keeps the 3-slice
        # neighbourhoods intact and the validation affordable on a CPU)
        has = np.asarray(y.data).reshape(-1, y.data.shape[2]).any(axis=0).astype(int)
        nz = x.data.shape[2]
        width = min(CMB_BLOCK, nz)
        sums = np.convolve(has, np.ones(width, int), mode="valid")
        z0 = int(np.argmax(sums)) if has.any() else max(0, nz // 2 - width // 2)
        z1 = z0 + width
        yield (f"cmb{seed0 + i:05d}", [Volume(np.asarray(x.data)[:, :, z0:z1], x.affine)],
               Volume(np.asarray(y.data)[:, :, z0:z1], x.affine))


_COMMON_CARD = {
    "intended_use": "starter model for trying the workflow and for tests; retrain on a site's labelled data "
                    "before any clinical use",
    "limitations": "trained on synthetic phantoms only (neurorad.phantom) for 72 steps on 2 shared CPU cores: "
                   "undertrained; never validated on patients",
    "licence": "Apache-2.0",
}

CONFIGS: dict[str, dict] = {
    "wmh": {
        "model": {"name": "wmh-unet2d", "version": "0.1.0", "task": "white-matter hyperintensities on FLAIR",
                  "architecture": "unet2d", "features": [16, 32, 64, 128, 256]},
        "data": {"dataset": "dataset", "spacing_mm": None, "normalization": "none", "patch_size": [128, 128],
                 "val_fraction": 0.15},
        "training": {"seed": 0, "max_epochs": 6, "iterations_per_epoch": 12, "batch_size": 4,
                     "learning_rate": 1e-3, "loss": "ce", "lr_patience_epochs": 30, "lr_factor": 0.9,
                     "stop_patience_epochs": 60, "foreground_oversample": 0.5},
        "inference": {"overlap": 0.25, "mirror_tta": False},
        "card": {"training_data": "domain-randomised WMH phantoms (synthetic), papers' preprocessing "
                                  "(z-score, pad, 384 x 384); PAPERS.md B", **_COMMON_CARD},
    },
    "cmb": {
        "model": {"name": "cmb-unet25d", "version": "0.1.0", "task": "cerebral microbleeds on SWI",
                  "architecture": "unet25d", "features": [16, 32, 64, 128, 256], "slices": 3},
        "data": {"dataset": "dataset", "spacing_mm": None, "normalization": "none", "patch_size": [128, 128],
                 "val_fraction": 0.15},
        "training": {"seed": 0, "max_epochs": 6, "iterations_per_epoch": 12, "batch_size": 4,
                     "learning_rate": 1e-3, "loss": "ce", "lr_patience_epochs": 30, "lr_factor": 0.1,
                     "stop_patience_epochs": 60, "foreground_oversample": 0.5},
        "inference": {"overlap": 0.25, "mirror_tta": False},
        "card": {"training_data": "domain-randomised microbleed phantoms (synthetic), papers' preprocessing "
                                  "(WM-peak alignment, window, min-max, square crop, 384 x 384, 3 slices); "
                                  "PAPERS.md C", **_COMMON_CARD},
    },
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neurorad.segment.svd_starter",
                                 description="Build the phantom dataset and train a starter model (see module doc).")
    ap.add_argument("kind", choices=sorted(CONFIGS))
    ap.add_argument("--out", type=Path, required=True, help="run folder (dataset/, config.json, run/)")
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=None, help="override max_epochs (tests use 1)")
    ap.add_argument("--iterations", type=int, default=None, help="override iterations_per_epoch")
    a = ap.parse_args(argv)
    import json

    from neurorad.segment.dataset import write_dataset
    from neurorad.segment.train import parse_config, train

    a.out.mkdir(parents=True, exist_ok=True)
    ds = a.out / "dataset"
    if not (ds / "dataset.json").exists():
        cases = wmh_cases(a.cases) if a.kind == "wmh" else cmb_cases(a.cases)
        write_dataset(ds, cases, ["flair" if a.kind == "wmh" else "swi"], {0: "background", 1: a.kind},
                      description=f"{a.kind} phantoms (synthetic) in the paper's 384 x 384 input space")
    cfg = {k: dict(v) for k, v in CONFIGS[a.kind].items()}
    if a.epochs:
        cfg["training"]["max_epochs"] = a.epochs
    if a.iterations:
        cfg["training"]["iterations_per_epoch"] = a.iterations
    cfg["card"]["command"] = f"python -m neurorad.segment.svd_starter {a.kind} --out RUN --cases {a.cases}"
    # spacing_mm None (the dataset already is the network's grid) has no TOML spelling: parsed from the dict
    (a.out / "config.json").write_text(json.dumps(cfg, indent=1))
    train(parse_config(cfg, a.out, a.out / "config.json"), a.out / "run")
    print(a.out / "run" / "model")
    return 0


if __name__ == "__main__":
    sys.exit(main())


MODELS = {"wmh": "wmh-unet2d@0.1.0", "cmb": "cmb-unet25d@0.1.0"}


def load_starter(kind: str, ref: str | None = None):  # noqa: ANN201 - a neurorad.segment Segmenter
    """The learned-layer segmenter of ``kind`` (``ref``: a registry name[@version] or model folder; default
    the shipped starter); :class:`~neurorad.errors.InputError` naming the retrain command when absent."""
    from neurorad.errors import InputError

    ref = ref or MODELS[kind]
    try:
        from neurorad.segment.engine import load_segmenter
    except ImportError as exc:  # the learned-segmentation layer (torch, MONAI) is not installed
        raise InputError(f"the learned engine needs neurorad's learned-segmentation layer ({exc})") from exc
    try:
        return load_segmenter(ref, engine="torch")
    except InputError as exc:
        raise InputError(f"model {ref} is not available ({exc.problem}); retrain it with `python -m "
                         f"neurorad.segment.svd_starter {kind} --out RUN` and `neurorad model import RUN/run/model`"
                         ) from exc


def predict_native(seg, x: Volume, geom: object) -> np.ndarray:  # noqa: ANN001
    """Foreground probability of the network on its 384 x 384 stack ``x``, back on the native grid."""
    from neurorad.segment.svd_paper import from_paper_grid

    res = seg.predict([x])
    p = np.asarray(res.probabilities.data, np.float32)
    fg = 1.0 - p[..., 0]
    return np.clip(from_paper_grid(fg, geom), 0.0, 1.0)  # type: ignore[arg-type]
