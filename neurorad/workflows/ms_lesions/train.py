"""Rebuild the widened MS phantom pairs and retrain the learned MS engine (one command)::

    python -m neurorad.workflows.ms_lesions.train --out RUN --cases 46 --minutes 50 --threads 2
    neurorad model import RUN/run/model   # then register the new model
    python -m neurorad.workflows.ms_lesions.train --out RUN --resume       # continue a stopped run

On a GPU machine that lacks the imaging stack (the steps 1-5 need SimpleITK and elastix), prepare here and
train there from the compact prepared cases (:func:`neurorad.segment.train.write_prepared`)::

    python -m neurorad.workflows.ms_lesions.train --out RUN --cases 80 --write-prepared PREP   # here
    python -m neurorad.workflows.ms_lesions.train --out RUN2 --prepared PREP --device cuda \
        --batch-size 16 --patch 64 --minutes 6                                              # there

The shipped ``ms-unet3d`` 0.3.0 was made so (:data:`RETRAIN`): 80 pairs, 361 s on one H200, 79,200 patches of 64^3
against 0.2.0's 2,880 of 48^3 on 2 CPU cores (docs/ms-lesions-log.md, "Workflow 1.15.0").

The learned engine of issue 17 (:mod:`neurorad.segment.ms_learned`): a small two-time-point 3D U-Net, the
baseline and the registered follow-up FLAIR as two input channels (as the MUSIC workflow's nnU-Net,
PAPERS.md), output background / new-or-enlarging lesion, Dice + cross-entropy, trained with
:func:`neurorad.segment.train.train` (what ``neurorad train`` runs).

Data: widened MS phantom pairs (:func:`neurorad.phantom.cases.widened_ms_options`) with seeds
``200000 + i``, disjoint from the benchmark's evaluation seeds (0..) and the tuning seeds (100000..) of
``bench/ms_sweep.py``, so no training pair is ever scored or tuned on. Each pair goes through the
workflow's own steps 1-5 (load, brain, register, bias, normalise: :data:`neurorad.pipelines.ms_lesions.STEPS`),
so the network sees exactly what it sees at run time (the normalised baseline and follow-up in the common
halfway space, zero outside the common brain mask); the truth new and enlarging lesions (an enlarging lesion:
its whole follow-up extent, as the benchmark scores it) are brought into the same space with the follow-up's
transform (nearest neighbour). Steps 1-5 are cached per pair (``RUN/pairs/``), so a stopped preparation resumes.

Domain randomisation on top of the widened phantom's own (lesion contrast 1.15-2.5, placement, grey/white and
CSF contrast per time point, intensity nonlinearity, noise, bias, lesion drift, 1/3/5 mm slices at either time
point, motion up to 15 degrees / 15 mm): in-plane voxel 1.2-1.8 mm on the first 46 pairs (the shipped 0.2.0's
data) and 1.0-1.3 mm on any pair after them (the benchmark's 1 mm grid), 2-6 new lesions on most pairs (more
foreground per pair; every sixth pair stable), and per stored case a follow-up intensity curve (gamma
0.92-1.08, scale 0.95-1.05: a residual of the normalisation) and a blur of one time point (Gaussian, SD 0-0.6
voxel: a resolution mismatch); training adds flips and a joint scale/shift.

``--init MODEL`` fine-tunes a registry model instead of starting from random weights (half the learning rate,
or ``--learning-rate``; the card records it); ``--lr-schedule poly`` and ``--foreground-sampling component``
(:mod:`neurorad.segment.train`) anneal the rate and centre foreground patches per lesion; ``--version`` names a
successor on its card. Tried on 2026-12-03: 0.2.0 fine-tuned for 48 min on 70 pairs (``--cases 70 --init
ms-unet3d@0.2.0``, the 24 added pairs at 1.0-1.3 mm) found fewer held-out lesions at 1 mm than 0.2.0 (learned
engine 32/55 against 41/55 on widened pairs 0-30); 0.2.0 fine-tuned for 47 min on its own 46 pairs with ``--init
ms-unet3d@0.2.0 --learning-rate 0.001 --lr-schedule poly --foreground-sampling component --epochs 52`` reached a
validation Dice of 0.657 (0.629) but no more tuning lesions (learned 78 of 93 only at lower anchors and more false
positives, fusion 85 against 84). Neither was shipped (docs/ms-lesions-log.md). A model that ships needs its anchors
swept and written on its card (``ms_learned.set_operating_point``).

Deterministic given the seeds; ``--minutes`` stops at the first epoch boundary after the budget, keeping the
best validation checkpoint. Lives in the workflows layer because it joins the phantoms, the workflow's
preprocessing and the learned layer.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from neurorad.image.volume import Volume
from neurorad.segment.ms_learned import CHANNELS, LABEL_NAMES, LEARNED_MODEL

__all__ = ["TRAIN_SEED0", "CONFIG", "RETRAIN", "training_options", "prepare_pair", "ms_cases", "write_prepared_pairs",
           "main"]

#: training seeds: disjoint from evaluation (0..) and tuning (100000..) seeds
TRAIN_SEED0 = 200_000
#: in-plane voxel range of the first pairs (the set 0.2.0 was trained on) and of the pairs added after them
#: (the 1 mm grid the benchmark runs at, which the first set did not cover)
N_FIRST, FIRST_IN_PLANE_MM, LATER_IN_PLANE_MM = 46, (1.2, 1.8), (1.0, 1.3)
RETRAIN = ("python -m neurorad.workflows.ms_lesions.train --out RUN --cases 80 --write-prepared RUN/prep && "
           "python -m neurorad.workflows.ms_lesions.train --out RUN --prepared RUN/prep --device cuda --batch-size 16 "
           "--patch 64 --iterations 150 --minutes 6.2 --version 0.3.0 && neurorad model import RUN/run/model")

_NAME, _VERSION = LEARNED_MODEL.split("@")

#: the training configuration (departures from nnU-Net scale for a 2-core CPU budget: 3D U-Net with channels
#: 8-128, 1.5 mm working grid, patches of 48^3, several hundred steps of batch 2; stated in the card). On a GPU
#: (``--device cuda``) the shipped 0.3.0 took batches of 16 patches of 64^3 (``--batch-size 16 --patch 64``)
CONFIG: dict[str, dict] = {
    "model": {"name": _NAME, "version": _VERSION,
              "task": "new and enlarging T2-FLAIR lesions from a baseline FLAIR and the registered follow-up FLAIR "
                      "(two channels, normalised and skull-stripped by the ms-lesions workflow's steps 1-5)",
              "architecture": "unet3d", "features": [8, 16, 32, 64, 128]},
    "data": {"dataset": "dataset", "spacing_mm": [1.5, 1.5, 1.5], "normalization": "none",
             "patch_size": [48, 48, 48], "val_fraction": 0.08},
    "training": {"seed": 0, "max_epochs": 80, "iterations_per_epoch": 40, "batch_size": 2, "learning_rate": 2e-3,
                 "loss": "dice_ce", "lr_patience_epochs": 8, "lr_factor": 0.5, "stop_patience_epochs": 25,
                 "foreground_oversample": 0.67, "mirror_augment": True, "intensity_augment": True},
    "inference": {"patch_size": [64, 64, 64], "overlap": 0.25, "mirror_tta": False, "batch_size": 1},
    "card": {
        "training_data": "SYNTHETIC data built on real anatomy: widened MS phantom pairs (neurorad.phantom: Colin27 "
                         "head + MNI152 tissue maps; new lesions of contrast 1.15-2.5 x WM, periventricular, "
                         "juxtacortical, deep and infratentorial, Dawson fingers, caps, bands; enlarging and stable "
                         "lesions with signal drift; a protocol/scanner change between the time points; 1/3/5 mm "
                         "slices; motion up to 15 degrees / 15 mm), seeds 200000+ (disjoint from the benchmark's "
                         "evaluation and tuning seeds), each pair preprocessed by the ms-lesions workflow's steps 1-5; "
                         "labels = the phantoms' truth new and enlarging lesions in the common space. Never a patient "
                         "scan.",
        "intended_use": "learned / fusion engine of the ms-lesions workflow (MSConfig.engine), for trying the "
                        "workflow and comparing engines (bench/ms_benchmark.py --engine); it must be validated "
                        "locally on the site's own exams before any clinical use",
        "limitations": "NOT FIT FOR CLINICAL USE: trained on synthetic phantoms of one anatomy (smooth blob, "
                       "ovoid, cap and band lesions; no flow artefacts, no non-rigid change, no real scanner's "
                       "FLAIR); a small network (3D U-Net, channels 8-128, 1.5 mm grid) trained for minutes (the "
                       "card's training.seconds and command); inputs must be the ms-lesions workflow's normalised "
                       "common-space pair (baseline brain median = 1, zero outside the brain); validated on "
                       "held-out phantoms only",
        "licence": "Apache-2.0",
    },
}


def training_options(i: int) -> dict[str, Any]:
    """:func:`~neurorad.phantom.ms_pair` options of training pair ``i`` (seed ``TRAIN_SEED0 + i``; module doc)."""
    from neurorad.phantom.cases import widened_ms_options

    seed = TRAIN_SEED0 + i
    rng = np.random.default_rng([seed, 1701])
    negative = i % 6 == 0
    opts = widened_ms_options(seed, negative=negative)
    lo, hi = FIRST_IN_PLANE_MM if i < N_FIRST else LATER_IN_PLANE_MM
    opts["in_plane_mm"] = round(float(rng.uniform(lo, hi)), 2)
    if not negative:
        opts["n_new"] = int(rng.integers(2, 7))
        opts["n_enlarging"] = int(rng.integers(0, 3))
    return opts


def prepare_pair(i: int, cache: Path) -> Path:
    """Steps 1-5 of training pair ``i`` with its truth in the common space, cached in ``cache`` (a pickle of
    the normalised pair, the brain mask, the label and the common grid's affine)."""
    path = cache / f"pair_{TRAIN_SEED0 + i}.pkl"
    if path.exists():
        return path
    import tempfile

    from neurorad.phantom.cases import ms_pair
    from neurorad.pipelines import ms_lesions as ms
    from neurorad.preprocess.transforms import resample

    opts = training_options(i)
    case = ms_pair(**opts)
    with tempfile.TemporaryDirectory(prefix="ms-train-") as tmp:
        ctx = ms.MSContext(ms.MSConfig(), Path(tmp), case.baseline_flair, case.followup_flair)
        for step in ms.STEPS[:5]:
            step.run(ctx)
    assert ctx.ref is not None and ctx.bn is not None and ctx.fn is not None and ctx.brain is not None
    truth = np.zeros(ctx.ref.spatial_shape, np.uint8)
    for key in ("truth_new", "truth_enlarging"):
        t = np.asarray(resample(case.truth[key], ctx.ref, ctx.Tf, "nearest").data)
        truth |= (t > 0).astype(np.uint8)
    d = dict(bn=ctx.bn.astype(np.float32), fn=ctx.fn.astype(np.float32), brain=ctx.brain.astype(bool),
             label=truth & ctx.brain.astype(np.uint8), affine=np.asarray(ctx.ref.affine), opts=opts)
    cache.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_suffix(".tmp")
    tmp_path.write_bytes(pickle.dumps(d))
    tmp_path.replace(path)
    return path


def randomise_pair(bn: np.ndarray, fn: np.ndarray, brain: np.ndarray, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The stored case's extra domain randomisation (module doc): a follow-up intensity curve and a blur of one
    time point, inside the brain (zero outside, as the workflow gives it)."""
    from scipy import ndimage

    b, f = bn.astype(np.float32), fn.astype(np.float32)
    g, s = float(rng.uniform(0.92, 1.08)), float(rng.uniform(0.95, 1.05))
    f = s * np.clip(f, 0, None) ** g
    sd = float(rng.uniform(0.0, 0.6))
    if sd > 0.05:
        if rng.random() < 0.5:
            b = ndimage.gaussian_filter(b, sd)
        else:
            f = ndimage.gaussian_filter(f, sd)
    return np.where(brain, b, 0).astype(np.float32), np.where(brain, f, 0).astype(np.float32)


def ms_cases(indices: list[int], cache: Path) -> Iterator[tuple[str, list[Volume], Volume]]:
    """The training cases (module doc): two channels (baseline, follow-up) and the lesion label."""
    for i in indices:
        d = pickle.loads(prepare_pair(i, cache).read_bytes())
        rng = np.random.default_rng([TRAIN_SEED0 + i, 1702])
        b, f = randomise_pair(d["bn"], d["fn"], d["brain"], rng)
        aff = d["affine"]
        yield (f"ms{TRAIN_SEED0 + i:06d}", [Volume(b, aff.copy()), Volume(f, aff.copy())],
               Volume(d["label"].astype(np.uint8), aff.copy()))


def write_prepared_pairs(indices: list[int], cache: Path, folder: Path) -> Path:
    """The training cases (:func:`ms_cases`) on the network's 1.5 mm working grid, cropped as inference crops
    (:func:`neurorad.segment.inference.foreground_box`: the box where a channel exceeds its minimum; the MS pairs'
    baseline dips below zero inside the brain, so for them that box is the whole grid), written as compact
    prepared cases (:func:`neurorad.segment.train.write_prepared`) for training where steps 1-5 cannot run."""
    from neurorad.segment.dataset import RawDataset
    from neurorad.segment.inference import PreprocessSpec, foreground_box, prepare
    from neurorad.segment.train import PreparedCase, write_prepared

    prep = PreprocessSpec(tuple(CONFIG["data"]["spacing_mm"]), CONFIG["data"]["normalization"])
    cases = []
    for cid, imgs, lab in ms_cases(indices, cache):
        arr, lab_arr, _ = prepare(imgs, prep, lab)
        assert lab_arr is not None
        box = foreground_box(arr, tuple(CONFIG["data"]["patch_size"]))
        if box is not None:
            arr, lab_arr = arr[(slice(None), *box)], lab_arr[box]
        cases.append(PreparedCase(cid, arr, lab_arr, np.zeros((0, 3), int)))
    ds = RawDataset(folder, tuple(CHANNELS), dict(enumerate(LABEL_NAMES)), tuple(c.case_id for c in cases))
    return write_prepared(folder, cases, ds, prep,
                          description=f"widened MS phantom pairs (synthetic, real anatomy), seeds "
                                      f"{TRAIN_SEED0 + indices[0]}-{TRAIN_SEED0 + indices[-1]}, through the "
                                      "ms-lesions workflow's steps 1-5; label 1 = new or enlarging lesion")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neurorad.workflows.ms_lesions.train",
                                 description="Build the widened MS phantom pairs (through the workflow's steps 1-5) "
                                             "and train the learned MS engine (see the module doc).")
    ap.add_argument("--out", type=Path, required=True, help="run folder (pairs/, dataset/, config.json, run/)")
    ap.add_argument("--cases", type=int, default=60, help=f"phantom pairs (seeds {TRAIN_SEED0}.., default 60)")
    ap.add_argument("--prepare-only", action="store_true", help="stop after caching the pairs' steps 1-5")
    ap.add_argument("--init", metavar="MODEL", default=None,
                    help="fine-tune: start from this registry model's weights (name@version or folder) at half the "
                         "learning rate (or --learning-rate), instead of random weights")
    ap.add_argument("--version", default=_VERSION,
                    help=f"the trained model's version on its card (default {_VERSION}, the shipped model's: give "
                         "the next one when training a successor)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: a fixed count keeps runs bit-identical)")
    ap.add_argument("--write-prepared", type=Path, metavar="FOLDER", default=None,
                    help="prepare the pairs (steps 1-5), write them on the network's working grid as compact "
                         "prepared cases to FOLDER (about 0.64 MB a pair) and stop; train from them with --prepared")
    ap.add_argument("--prepared", type=Path, metavar="FOLDER", default=None,
                    help="train from a --write-prepared FOLDER instead of building the pairs (no SimpleITK or "
                         "elastix needed: for a GPU machine)")
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                    help="where to train (default cpu; cuda: a GPU, several threads drawing the patches)")
    ap.add_argument("--batch-size", type=int, default=None, help="override the batch size (default 2)")
    ap.add_argument("--patch", type=int, default=None, help="override the cubic training patch (default 48)")
    from neurorad.segment.train import add_budget_arguments

    add_budget_arguments(ap)
    a = ap.parse_args(argv)

    import torch

    from neurorad.segment.dataset import write_dataset
    from neurorad.segment.train import train_starter

    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    pairs = a.out / "pairs"
    t0 = time.perf_counter()
    if a.prepared is None:
        for i in range(a.cases):
            prepare_pair(i, pairs)
            print(f"pair {i + 1}/{a.cases} ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    if a.prepare_only:
        return 0
    if a.write_prepared is not None:
        write_prepared_pairs(list(range(a.cases)), pairs, a.write_prepared)
        print(f"prepared cases in {a.write_prepared} ({time.perf_counter() - t0:.0f} s)", flush=True)
        return 0
    ds = a.out / "dataset"
    if a.prepared is None and not (ds / "dataset.json").exists():
        write_dataset(ds, ms_cases(list(range(a.cases)), pairs), list(CHANNELS), dict(enumerate(LABEL_NAMES)),
                      overwrite=True,
                      description=f"widened MS phantom pairs (synthetic, real anatomy), seeds {TRAIN_SEED0}-"
                                  f"{TRAIN_SEED0 + a.cases - 1}, through the ms-lesions workflow's steps 1-5; "
                                  "label 1 = new or enlarging lesion")
    print(f"dataset: {time.perf_counter() - t0:.0f} s", flush=True)
    config = {k: dict(v) for k, v in CONFIG.items()}
    config["model"]["version"] = a.version
    if a.prepared is not None:
        config["data"].pop("dataset")
        config["data"]["prepared"] = str(a.prepared.resolve())
    config["training"]["device"] = a.device
    if a.batch_size:
        config["training"]["batch_size"] = a.batch_size
    if a.patch:
        config["data"]["patch_size"] = [a.patch] * 3
    if a.init:
        config["training"].update(init_weights=a.init, learning_rate=CONFIG["training"]["learning_rate"] / 2)
    print(train_starter(config, a.out, a, "python -m neurorad.workflows.ms_lesions.train",
                        before=(("cases", a.cases if a.cases != 60 and a.prepared is None else None),
                                ("prepared", "PREP" if a.prepared is not None else None), ("init", a.init),
                                ("version", a.version if a.version != _VERSION else None)),
                        after=(("threads", a.threads if a.threads != 1 else None),
                               ("device", a.device if a.device != "cpu" else None),
                               ("batch-size", a.batch_size), ("patch", a.patch))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
