"""Rebuild the glioma phantom dataset and retrain the learned glioma starter model (one command)::

    python -m neurorad.workflows.glioma.train --out RUN --minutes 45   # then: neurorad model import RUN/run/model
    python -m neurorad.workflows.glioma.train --out RUN --resume       # continue a stopped run

Engine (b) of issue 12: a small 3D U-Net trained with :func:`neurorad.segment.train.train` (what
``neurorad train`` runs) on glioma phantoms, input and output as the workflow feeds it
(:mod:`neurorad.segment.glioma_learned`): the four co-registered sequences T1, T1c, T2, FLAIR, skull-stripped
(zero outside the brain mask), labels EASE's three regions (1 necrosis / non-enhancing core, 2 non-enhancing
T2-FLAIR hyperintensity = the phantom's oedema and non-enhancing tumour, 3 enhancing tumour).

Data: :func:`neurorad.phantom.cases.glioma` phantoms (Colin27/MNI152 anatomy, BraTS-like sub-regions), seeds
1000.. (the benchmark ``bench/glioma.py`` scores seeds 60000-60019 and the classical engine was tuned on
101-213, so no training phantom is ever scored), domain-randomised per case from one seeded generator: tumour
diameter 10-50 mm (log-uniform), slice thickness 1 mm or 1.5-6 mm, in-plane 0.9-1.4 mm, SNR 8-40 (Rician),
bias 0-0.35, a gamma 0.7-1.4 and a scale 0.5-2 per sequence, enhancement (the rim's T1c excess over T1)
scaled by 0.35-1.0, a smooth anatomy warp (~3 mm SD) and a rigid pose (+-12 degrees, +-10 mm).
The sequences of a case share one grid (the workflow registers them before segmenting; registration residue
is not simulated). The label is drawn from the same tumour on a 2 mm grid (a second, noise-free acquisition:
the same seed and diameter give the same tumour on any grid), so thick-slice cases keep a fine truth; every
case is stored on the 2 mm training grid.

Deterministic given the seed; resumable (``--resume``); ``--minutes`` stops at the first epoch boundary after
the budget, keeping the best validation checkpoint. Lives in the workflows layer because it joins the
phantoms to the learned layer.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from neurorad.image.volume import Volume
from neurorad.segment.glioma_learned import CHANNELS, LABEL_NAMES, LEARNED_MODEL

__all__ = ["glioma_cases", "CONFIG", "RETRAIN", "TRAIN_SEED0", "main"]

TRAIN_SEED0 = 1000
STORE_SPACING_MM = 2.0
RETRAIN = "python -m neurorad.workflows.glioma.train --out RUN --minutes 45 && neurorad model import RUN/run/model"
#: phantom tumour labels (neurorad.phantom.cases: 1 necrosis, 2 oedema, 3 enhancing, 4 non-enhancing) -> model class
_TRUTH_TO_CLASS = np.array([0, 1, 2, 3, 2], np.uint8)

_NAME, _VERSION = LEARNED_MODEL.split("@")

#: the training configuration (departures from HD-GLIO / nnU-Net scale for a 2-core CPU budget: 3D U-Net with
#: channels 8-128, 2 mm working grid, ~1500 steps of batch 2; stated in the card)
CONFIG: dict[str, dict] = {
    "model": {"name": _NAME, "version": _VERSION,
              "task": "glioma sub-regions on co-registered, skull-stripped T1, T1c, T2, FLAIR: "
                      "1 necrosis / non-enhancing core, 2 non-enhancing T2-FLAIR hyperintensity, 3 enhancing tumour",
              "architecture": "unet3d", "features": [8, 16, 32, 64, 128]},
    "data": {"dataset": "dataset", "spacing_mm": [2.0, 2.0, 2.0], "normalization": "zscore-nonzero",
             "patch_size": [64, 64, 64], "val_fraction": 0.1},
    "training": {"seed": 0, "max_epochs": 60, "iterations_per_epoch": 30, "batch_size": 2, "learning_rate": 2e-3,
                 "loss": "dice_ce", "lr_patience_epochs": 8, "lr_factor": 0.5, "stop_patience_epochs": 20,
                 "foreground_oversample": 0.67, "mirror_augment": True, "intensity_augment": True},
    "inference": {"patch_size": [64, 64, 64], "overlap": 0.25, "mirror_tta": False, "batch_size": 1},
    "card": {
        "training_data": "SYNTHETIC data built on real anatomy: domain-randomised glioma phantoms (neurorad.phantom: "
                         "Colin27 head + MNI152 tissue maps, a glioma 10-50 mm with necrosis, oedema, enhancing "
                         "rim and non-enhancing tumour; random slice thickness, in-plane resolution, noise, bias, "
                         "per-sequence gamma and scale, enhancement strength, pose and anatomy warp), sequences "
                         "skull-stripped with the truth brain mask, labels = the phantoms' truth mapped to EASE's "
                         "three regions. Never a patient scan.",
        "intended_use": "starter model for trying the glioma workflow and comparing engines (bench/glioma.py "
                        "--engines); it must be validated locally on the site's own scans (or replaced by a site "
                        "model, e.g. an nnU-Net v2 glioma model through --engine nnunet:FOLDER) before any "
                        "clinical use",
        "limitations": "NOT FIT FOR CLINICAL USE: trained on synthetic phantoms of one anatomy only (one deep "
                       "white-matter tumour per case, no mass effect, always an enhancing rim), for a CPU budget of "
                       "<= 45 min on shared cores (3D U-Net, channels 8-128, 2 mm grid): undertrained; the 2 mm "
                       "grid smooths small regions (necrosis); inputs must be co-registered and skull-stripped "
                       "(the glioma workflow does both); never validated on patients; validation figures are on "
                       "held-out phantoms only",
        "licence": "Apache-2.0",
    },
}


def _spec(rng: np.random.Generator) -> dict:
    thick = 1.0 if rng.random() < 0.35 else float(rng.uniform(1.5, 6.0))
    return dict(diameter_mm=float(np.exp(rng.uniform(np.log(10.0), np.log(50.0)))), slice_thickness_mm=thick,
                in_plane_mm=1.0 if thick == 1.0 else float(rng.uniform(0.9, 1.4)), snr=float(rng.uniform(8, 40)),
                bias_strength=float(rng.uniform(0.0, 0.35)),
                gamma={s: float(rng.uniform(0.7, 1.4)) for s in CHANNELS},
                scale={s: float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) for s in CHANNELS},
                enhancement=float(rng.uniform(0.35, 1.0)))


def glioma_cases(n: int, seed0: int = TRAIN_SEED0) -> Iterator[tuple[str, list[Volume], Volume]]:
    """``n`` randomised training cases (module doc): four skull-stripped sequences on the 2 mm grid and
    the three-region label."""
    from neurorad.image.geometry import resample_to_reference, rigid_matrix
    from neurorad.phantom.cases import glioma
    from neurorad.phantom.randomise import apply_warp, random_warp
    from neurorad.phantom.render import TISSUE_INTENSITY, add_rician_noise

    for i in range(n):
        seed = seed0 + i
        rng = np.random.default_rng([seed, 1201])
        sp = _spec(rng)
        case = glioma(seed=seed, pair=False, snr=None, diameter_mm=sp["diameter_mm"],
                      in_plane_mm=sp["in_plane_mm"], slice_thickness_mm=sp["slice_thickness_mm"],
                      bias_strength=sp["bias_strength"])
        fine = glioma(seed=seed, pair=False, snr=None, diameter_mm=sp["diameter_mm"], in_plane_mm=STORE_SPACING_MM,
                      slice_thickness_mm=STORE_SPACING_MM, bias_strength=0.0)
        lab_vol = fine.truth["truth_baseline_tumour_class"]
        brain = np.asarray(fine.truth["truth_baseline_brain"].data) > 0
        enhancing = np.asarray(case.truth["truth_baseline_tumour_class"].data) == 3
        chans = []
        for s in CHANNELS:
            v = case.images[f"baseline_{s}"]
            d = np.asarray(v.data, np.float32)
            if s == "t1c":  # weaker enhancement: the rim's T1c excess over its T1 level scaled down
                base = np.asarray(case.images["baseline_t1"].data, np.float32)
                d = np.where(enhancing, base + sp["enhancement"] * (d - base), d)
            d = add_rician_noise(d, TISSUE_INTENSITY[s]["wm"] / sp["snr"], rng)
            hi = float(np.percentile(d, 99.9)) or 1.0
            d = np.clip(d / hi, 0, None) ** sp["gamma"][s] * hi * sp["scale"][s]
            on_fine = resample_to_reference(v.with_data(d.astype(np.float32)), lab_vol, "linear")
            chans.append(np.where(brain, np.asarray(on_fine.data, np.float32), 0.0).astype(np.float32))
        lab = _TRUTH_TO_CLASS[np.clip(np.asarray(lab_vol.data, np.int64), 0, 4)] * brain
        field = random_warp(rng, lab_vol.spatial_shape, lab_vol.spacing_mm)
        chans = [apply_warp(c, field, 1).astype(np.float32) for c in chans]
        lab = apply_warp(lab.astype(np.uint8), field, 0)
        pose = rigid_matrix(tuple(float(v) for v in rng.uniform(-12.0, 12.0, 3)),
                            tuple(float(v) for v in rng.uniform(-10.0, 10.0, 3)))
        affine = pose @ lab_vol.affine
        label = Volume(lab.astype(np.uint8), affine.copy())
        yield f"glioma{seed:05d}", [Volume(c, affine.copy()) for c in chans], label


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neurorad.workflows.glioma.train",
                                 description="Build the glioma phantom dataset and train the learned glioma starter "
                                             "model (see the module doc).")
    ap.add_argument("--out", type=Path, required=True, help="run folder (dataset/, config.json, run/)")
    ap.add_argument("--cases", type=int, default=60, help=f"phantoms (seeds {TRAIN_SEED0}.., default 60)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: a fixed count keeps runs bit-identical)")
    from neurorad.segment.train import add_budget_arguments

    add_budget_arguments(ap)
    a = ap.parse_args(argv)

    import torch

    from neurorad.segment.dataset import write_dataset
    from neurorad.segment.train import train_starter

    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    ds = a.out / "dataset"
    t0 = time.perf_counter()
    if not (ds / "dataset.json").exists():
        write_dataset(ds, glioma_cases(a.cases), [c.upper() for c in CHANNELS], dict(enumerate(LABEL_NAMES)),
                      overwrite=True,
                      description=f"glioma phantoms (synthetic, real anatomy), seeds {TRAIN_SEED0}-"
                                  f"{TRAIN_SEED0 + a.cases - 1}, domain-randomised, skull-stripped; labels "
                                  "1 necrosis, 2 non-enhancing, 3 enhancing")
    print(f"dataset: {time.perf_counter() - t0:.0f} s", flush=True)
    print(train_starter(CONFIG, a.out, a, "python -m neurorad.workflows.glioma.train",
                        before=(("cases", a.cases if a.cases != 60 else None),),
                        after=(("threads", a.threads if a.threads != 1 else None),)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
