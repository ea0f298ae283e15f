"""Train a tiny nnU-Net v2 model with nnU-Net's own code, for tests (run as a script, one process).

    python tests/segment/nnunet_tiny.py RAW_ROOT DATASET_ID WORK_ROOT

``RAW_ROOT`` holds ``Dataset<ID>_<name>/`` in the nnU-Net raw layout (what ``neurorad dataset``
writes). nnU-Net's own fingerprint extraction, planning (``ExperimentPlanner``), preprocessing and
``nnUNetTrainer`` run with the default plans and the ``3d_fullres`` configuration; only the
schedule is cut to seconds (1 epoch of 2 training and 1 validation iteration, fold 0), so the
results folder ``WORK_ROOT/results/Dataset<ID>_<name>/nnUNetTrainer__nnUNetPlans__3d_fullres/`` is
exactly what a site's ``nnUNetv2_train`` leaves (plans.json, dataset.json, fold_0/checkpoint_final.pth).

nnU-Net reads its folders from environment variables at import, so they are set before importing
it, hence a separate process. Its fingerprint and preprocessing steps start "spawn" worker pools;
each spawned worker re-imports nnU-Net and torch (tens of seconds on a loaded 2-core machine), so
here the pools fork instead: this process has not started torch's thread pool yet, and the workers
only read images and resample.
"""

from __future__ import annotations

import multiprocessing
import os
import sys


class _ForkContext:
    """Stands in for the ``multiprocessing`` module inside two nnU-Net modules: pools fork."""

    @staticmethod
    def get_context(method: str | None = None) -> multiprocessing.context.BaseContext:  # noqa: ARG004
        return multiprocessing.get_context("fork")


def main(raw_root: str, dataset_id: int, work_root: str) -> str:
    os.environ["nnUNet_raw"] = raw_root
    os.environ["nnUNet_preprocessed"] = os.path.join(work_root, "preprocessed")
    os.environ["nnUNet_results"] = os.path.join(work_root, "results")
    os.environ["nnUNet_compile"] = "false"
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    import torch
    from nnunetv2.experiment_planning import plan_and_preprocess_api as api
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.preprocessing.preprocessors import default_preprocessor

    fingerprint_extractor.multiprocessing = _ForkContext  # type: ignore[assignment]
    default_preprocessor.multiprocessing = _ForkContext  # type: ignore[assignment]
    api.extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=False, verbose=False)
    api.plan_experiments([dataset_id])
    api.preprocess([dataset_id], configurations=("3d_fullres",), num_processes=(1,), verbose=False)

    os.environ["nnUNet_n_proc_DA"] = "0"  # data augmentation in this process (no background workers)
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(dataset_id), "3d_fullres", 0, "nnUNetTrainer", device=torch.device("cpu"))
    trainer.num_iterations_per_epoch = 2
    trainer.num_val_iterations_per_epoch = 1
    trainer.num_epochs = 1
    trainer.run_training()
    return str(trainer.output_folder_base)


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
