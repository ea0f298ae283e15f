#!/usr/bin/env python
"""Train a site-style nnU-Net v2 glioma model on the glioma phantom dataset, for engine (a) of the glioma
benchmark (``bench/glioma.py --engines classical,unet3d,nnunet:FOLDER``; issue 12).

A site brings an nnU-Net v2 results folder (the way HD-GLIO-like models are shared); none can be downloaded
here, so this script makes one with nnU-Net's own code, exactly as ``nnUNetv2_plan_and_preprocess`` and
``nnUNetv2_train DATASET 3d_fullres 0`` would: fingerprint, ``ExperimentPlanner``, preprocessing, the default
``nnUNetTrainer`` (its data augmentation, Dice+CE loss with deep supervision, poly learning rate, SGD). Data:
the nnU-Net raw dataset that ``python -m neurorad.workflows.glioma.train --out RUN`` writes (``RUN/dataset``:
channels T1, T1C, T2, FLAIR, labels necrosis / non_enhancing / enhancing; glioma phantoms of seeds 1000.., never
the benchmark's 60000..). Departures for a 2-core CPU, printed and recorded in ``neurorad_cpu_budget.json`` beside
the results: the plan's patch size, batch size and widths are cut (``--patch``, ``--batch``, ``--max-features``)
and the schedule is ``--epochs`` x ``--iterations`` (nnU-Net's default is 1000 x 250 on a GPU); the resulting
model is UNDERTRAINED and only shows that a site's nnU-Net model runs through the workflow.

Usage::

    python bench/glioma_nnunet.py --dataset RUN/dataset --work NNUNET_WORK --epochs 20 --iterations 10
    # prints the results folder; then: python bench/glioma.py --engines classical,unet3d,nnunet:FOLDER
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

DATASET_ID = 512


class _ForkContext:
    """nnU-Net's fingerprint and preprocessing pools spawn workers that re-import torch (slow on 2 cores):
    fork instead (this process has not started torch's thread pool yet)."""

    @staticmethod
    def get_context(method: str | None = None) -> multiprocessing.context.BaseContext:  # noqa: ARG004
        return multiprocessing.get_context("fork")


def _cut_plans(plans_file: Path, patch: int, batch: int, max_features: int) -> dict:
    """Shrink the 3d_fullres configuration for a CPU budget (recorded, module doc)."""
    plans = json.loads(plans_file.read_text())
    cfg = plans["configurations"]["3d_fullres"]
    before = {"patch_size": cfg["patch_size"], "batch_size": cfg["batch_size"],
              "features_per_stage": cfg["architecture"]["arch_kwargs"]["features_per_stage"]}
    ak = cfg["architecture"]["arch_kwargs"]
    n_stages = ak["n_stages"]
    # keep as many stages as a cubic patch of `patch` voxels allows (each stride-2 stage halves it, down to 4)
    keep = 1
    size = patch
    while keep < n_stages and size // 2 >= 4:
        size //= 2
        keep += 1
    for k in ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage"):
        ak[k] = ak[k][:keep]
    ak["n_conv_per_stage_decoder"] = ak["n_conv_per_stage_decoder"][:keep - 1]
    ak["n_stages"] = keep
    ak["features_per_stage"] = [min(int(f), max_features) for f in ak["features_per_stage"]]
    ak["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * (keep - 1)
    ak["kernel_sizes"] = [[3, 3, 3]] * keep
    cfg["patch_size"] = [patch] * 3
    cfg["batch_size"] = batch
    plans_file.write_text(json.dumps(plans, indent=2))
    return {"before": before, "after": {"patch_size": cfg["patch_size"], "batch_size": batch,
                                        "features_per_stage": ak["features_per_stage"]}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True, help="nnU-Net raw dataset (RUN/dataset of the trainer)")
    ap.add_argument("--work", type=Path, required=True, help="nnU-Net raw/preprocessed/results roots go here")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=10, help="training iterations per epoch (nnU-Net: 250)")
    ap.add_argument("--patch", type=int, default=64, help="cubic patch size (voxels) of the cut plan")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--max-features", type=int, default=128, help="widest stage of the cut plan (nnU-Net: 320)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    work = a.work.resolve()
    raw = work / "raw"
    name = f"Dataset{DATASET_ID}_GliomaPhantom"
    (raw / name).parent.mkdir(parents=True, exist_ok=True)
    if not (raw / name).exists():
        (raw / name).symlink_to(a.dataset.resolve(), target_is_directory=True)
    os.environ["nnUNet_raw"] = str(raw)
    os.environ["nnUNet_preprocessed"] = str(work / "preprocessed")
    os.environ["nnUNet_results"] = str(work / "results")
    os.environ["nnUNet_compile"] = "false"
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    import torch
    from nnunetv2.experiment_planning import plan_and_preprocess_api as api
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.preprocessing.preprocessors import default_preprocessor

    torch.set_num_threads(a.threads)
    fingerprint_extractor.multiprocessing = _ForkContext  # type: ignore[assignment]
    default_preprocessor.multiprocessing = _ForkContext  # type: ignore[assignment]
    t0 = time.perf_counter()
    pre = work / "preprocessed" / name
    if not (pre / "nnUNetPlans.json").exists():
        api.extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=True, verbose=False)
        api.plan_experiments([DATASET_ID])
    budget = _cut_plans(pre / "nnUNetPlans.json", a.patch, a.batch, a.max_features)
    shutil.rmtree(pre / "nnUNetPlans_3d_fullres", ignore_errors=True)
    api.preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(1,), verbose=False)
    print(f"plan and preprocess: {time.perf_counter() - t0:.0f} s; plan cut for CPU: {budget}", flush=True)

    os.environ["nnUNet_n_proc_DA"] = "0"
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", 0, "nnUNetTrainer", device=torch.device("cpu"))
    trainer.num_iterations_per_epoch = a.iterations
    trainer.num_val_iterations_per_epoch = max(1, a.iterations // 5)
    trainer.num_epochs = a.epochs
    t1 = time.perf_counter()
    trainer.run_training()
    out = Path(trainer.output_folder_base)
    budget.update({"epochs": a.epochs, "iterations_per_epoch": a.iterations, "threads": a.threads,
                   "train_seconds": round(time.perf_counter() - t1, 1),
                   "command": "python bench/glioma_nnunet.py " + " ".join(argv or sys.argv[1:])})
    (out / "neurorad_cpu_budget.json").write_text(json.dumps(budget, indent=2))
    print(f"training: {budget['train_seconds']:.0f} s", flush=True)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
