from __future__ import annotations

from pathlib import Path

import pytest

from neurorad.segment.dataset import write_dataset
from neurorad.segment.planted import planted_cases


@pytest.fixture(scope="session")
def planted_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 planted-blob cases, 32^3 voxels at 1.5 mm (one channel, labels background/blob)."""
    root = tmp_path_factory.mktemp("planted") / "Dataset900_Planted"
    write_dataset(root, planted_cases(8, seed=1), ["T1"], {0: "background", 1: "blob"})
    return root


def tiny_config(dataset: Path, arch: str, **training: object) -> dict:
    """A seconds-scale training config for the planted task."""
    three_d = arch in ("unet3d", "dynunet", "densevnet")
    feats = {"unet2d": [8, 16, 32, 64, 128], "unet25d": [8, 16, 32, 64, 128], "unet3d": [8, 16, 32, 64, 128],
             "dynunet": [8, 16, 32, 64], "densevnet": [4, 4, 8]}[arch]
    tr = {"seed": 0, "max_epochs": 12, "iterations_per_epoch": 8, "batch_size": 2 if three_d else 8,
          "learning_rate": 3e-3, "stop_at_val_dice": 0.85}
    tr.update(training)
    tr = {k: v for k, v in tr.items() if v is not None}
    return {
        "model": {"name": f"planted-{arch}", "version": "0.1.0", "task": "planted blobs", "architecture": arch,
                  "features": feats, "slices": 3 if arch == "unet25d" else 1},
        "data": {"dataset": str(dataset), "spacing_mm": [1.5, 1.5, 1.5],
                 "patch_size": [32, 32, 32] if three_d else [32, 32], "val_fraction": 0.25},
        "training": tr,
        "card": {"training_data": "synthetic planted blobs (neurorad.segment.planted)", "intended_use": "tests only"},
    }
