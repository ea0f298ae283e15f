"""Rebuild the ICH phantom dataset and retrain the learned haematoma starter model (one command)::

    python -m neurorad.workflows.ich.train --out RUN --minutes 20   # then: neurorad model import RUN/run/model
    python -m neurorad.workflows.ich.train --out RUN --resume       # continue a stopped run

Data: ``ich-pair`` CT phantoms (:func:`neurorad.phantom.cases.ich_pair`: Colin27/MNI152 anatomy in HU, a
hyperdense haematoma with an oedema rim), BOTH time points of each pair as cases, seeds 0..n-1 (the benchmark
``bench/ich.py`` scores seeds 5000-5019, so no training phantom is ever scored), domain-randomised per case
from one seeded generator: haematoma volume 2-90 mL (log-uniform), location deep / lobar / infratentorial in
turn, slice thickness 1-5 mm, in-plane 0.8-1.6 mm, CT noise 2-8 HU, HU calibration (offset +-5 HU, gain
0.95-1.05), rigid pose (+-12 degrees, +-10 mm) and a smooth anatomy warp (~3 mm SD)
(:mod:`neurorad.phantom.randomise`); each case is stored resampled to the 2 mm training grid (the acquisition's
slice thickness and partial volume stay in the image). The label is the haematoma only (class 1; the oedema
rim is background).
Written in the nnU-Net raw layout (:func:`neurorad.segment.dataset.write_dataset`) and trained with
:func:`neurorad.segment.train.train` on :data:`CONFIG` (a small 2D U-Net on a 2 mm grid: CT blood is
high-contrast, so it learns in minutes on 2 CPU cores).

Deterministic given the seed (training: ``CONFIG["training"]["seed"]``); resumable (``--resume``); the
wall-clock budget ``--minutes`` stops the loop at the first epoch boundary after it and keeps the best
validation checkpoint. This lives in the workflows layer because it joins the phantoms to the learned layer.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from neurorad.image.volume import Volume
from neurorad.segment.haematoma import LEARNED_MODEL

__all__ = ["ich_cases", "CONFIG", "RETRAIN", "main"]

LOCATIONS = ("deep_gm", "lobar", "infratentorial")
STORE_SPACING_MM = 2.0  # cases are written on the training grid
RETRAIN = "python -m neurorad.workflows.ich.train --out RUN --minutes 20 && neurorad model import RUN/run/model"

_NAME, _VERSION = LEARNED_MODEL.split("@")

#: the training configuration (departures from nnU-Net-scale training for a 2-core CPU budget: a 2D U-Net,
#: channels 8-128, 2 mm working grid, a few hundred steps; stated in the card)
CONFIG: dict[str, dict] = {
    "model": {"name": _NAME, "version": _VERSION,
              "task": "intracerebral haematoma (acute blood) on non-contrast head CT",
              "architecture": "unet2d", "features": [8, 16, 32, 64, 128]},
    "data": {"dataset": "dataset", "spacing_mm": [2.0, 2.0, 2.0], "normalization": "ct", "patch_size": [96, 96],
             "val_fraction": 0.08},
    "training": {"seed": 0, "max_epochs": 40, "iterations_per_epoch": 50, "batch_size": 8, "learning_rate": 2e-3,
                 "loss": "dice_ce", "lr_patience_epochs": 8, "lr_factor": 0.5, "stop_patience_epochs": 15,
                 "foreground_oversample": 0.5, "mirror_augment": True,
                 # HU are calibrated: the generic +-30 HU intensity jitter would blur blood (60-80 HU) into grey
                 # matter (35-40 HU); the dataset carries a realistic +-5 HU / 0.95-1.05 calibration draw instead
                 "intensity_augment": False},
    "inference": {"patch_size": [128, 128], "overlap": 0.25, "mirror_tta": False, "batch_size": 8},
    "card": {
        "training_data": "SYNTHETIC data built on real anatomy: domain-randomised ich-pair CT phantoms "
                         "(neurorad.phantom: Colin27 head + MNI152 tissue maps in Hounsfield units, a hyperdense "
                         "haematoma 2-90 mL deep/lobar/infratentorial with an oedema rim; random slice thickness, "
                         "in-plane resolution, noise, HU calibration, pose and anatomy warp), both time points of "
                         "each pair, labels = the phantoms' haematoma truth. Never a patient scan.",
        "intended_use": "starter model for trying the ich workflow and comparing engines (bench/ich.py); it must "
                        "be validated locally on the site's own CTs (or replaced by a site model) before any "
                        "clinical use",
        "limitations": "NOT FIT FOR CLINICAL USE: trained on synthetic phantoms of one anatomy only, for a CPU "
                       "budget of <= 20 min on 2 shared cores (2D U-Net, channels 8-128, 2 mm grid, a few hundred "
                       "steps of batch 8): undertrained; 2 mm grid smooths small haematomas; no real "
                       "beam hardening, motion, calcification variety, subdural/subarachnoid or "
                       "intraventricular blood, surgery or contrast in its training data; never validated on "
                       "patients; validation figures are on held-out phantoms only",
        "licence": "Apache-2.0",
    },
}


def ich_cases(n: int, seed0: int = 0) -> Iterator[tuple[str, list[Volume], Volume]]:
    """``2 n`` randomised training cases (baseline and follow-up CT of ``n`` ich-pair phantoms; module doc)."""
    from neurorad.image.geometry import resample_to_spacing, rigid_matrix
    from neurorad.phantom.cases import ich_pair
    from neurorad.phantom.randomise import apply_warp, random_warp

    for i in range(n):
        seed = seed0 + i
        rng = np.random.default_rng([seed, 7177])
        thick = float(rng.uniform(1.0, 5.0))
        in_plane = float(rng.uniform(0.8, 1.6))  # finer in-plane voxels cost minutes and vanish on the 2 mm grid
        case = ich_pair(seed=seed, volume_ml=float(np.exp(rng.uniform(np.log(2.0), np.log(90.0)))),
                        expansion_factor=float(rng.uniform(1.0, 2.2)), location=LOCATIONS[i % 3],
                        slice_thickness_mm=thick, in_plane_mm=in_plane, noise_hu=float(rng.uniform(2.0, 8.0)),
                        misalign_deg=float(rng.uniform(0.0, 10.0)), misalign_mm=float(rng.uniform(0.0, 10.0)))
        for tp in ("baseline", "followup"):
            img = case.images[f"{tp}_ct"]
            data = np.asarray(img.data, np.float32) * np.float32(rng.uniform(0.95, 1.05)) + np.float32(
                rng.uniform(-5.0, 5.0))
            # stored on the network's 2 mm grid (the acquisition's partial volume is already in the image):
            # the warp and the files then cost seconds instead of minutes
            img = resample_to_spacing(img.with_data(data), STORE_SPACING_MM, "linear", default_value=-1000.0)
            lab = (np.asarray(case.truth[f"truth_{tp}_ich_class"].data) == 1).astype(np.float32)
            lab = resample_to_spacing(case.truth[f"truth_{tp}_ich_class"].with_data(lab), STORE_SPACING_MM,
                                      "linear").data >= 0.5
            field = random_warp(rng, img.spatial_shape, img.spacing_mm)
            data, lab = apply_warp(np.asarray(img.data, np.float32), field, 1), apply_warp(lab.astype(np.uint8),
                                                                                           field, 0)
            pose = rigid_matrix(tuple(float(v) for v in rng.uniform(-12.0, 12.0, 3)),
                                tuple(float(v) for v in rng.uniform(-10.0, 10.0, 3)))
            affine = pose @ img.affine
            yield f"ich{seed:04d}{tp[0]}", [Volume(data, affine.copy())], Volume(lab, affine.copy())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neurorad.workflows.ich.train",
                                 description="Build the ICH phantom dataset and train the learned haematoma starter "
                                             "model (see the module doc).")
    ap.add_argument("--out", type=Path, required=True, help="run folder (dataset/, config.json, run/)")
    ap.add_argument("--cases", type=int, default=16, help="phantom pairs (seeds 0..n-1, 2 cases each; default 16)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared 2-core machine one thread was 3x faster than "
                         "two, and a fixed count keeps runs bit-identical)")
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
        write_dataset(ds, ich_cases(a.cases), ["CT"], {0: "background", 1: "haematoma"}, overwrite=True,
                      description=f"ich-pair CT phantoms (synthetic, real anatomy), seeds 0-{a.cases - 1}, both "
                                  "time points, domain-randomised; label 1 = haematoma")
    print(f"dataset: {time.perf_counter() - t0:.0f} s", flush=True)
    print(train_starter(CONFIG, a.out, a, "python -m neurorad.workflows.ich.train",
                        before=(("cases", a.cases if a.cases != 16 else None),),
                        after=(("threads", a.threads if a.threads != 1 else None),)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
