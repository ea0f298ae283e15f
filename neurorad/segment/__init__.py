"""neurorad.segment layer (see ARCHITECTURE.md): segmentation engines behind one protocol.

Public API (imported lazily: torch loads only when a network is used)::

    from neurorad.segment import Segmenter, Segmentation, load_segmenter
    seg = load_segmenter("wmh-starter@0.1.0")          # verified registry model, torch or ONNX
    result = seg.predict([flair, t1])                   # Volumes on any grid, in the card's contrast order
    result.probabilities                                # 4D Volume [i, j, k, class] on flair's grid
    result.label_map(), result.uncertainty              # argmax labels; ensemble disagreement

    from neurorad.segment import load_config, train     # `neurorad train CONFIG` from Python
    from neurorad.segment import write_dataset, read_dataset
    from neurorad.phantom.randomise import training_cases    # domain-randomised phantom cases
    tc = training_cases("wmh", 40, seed=0)
    write_dataset("Dataset101_WMH", tc.cases, tc.channel_names, tc.labels, tc.description,
                  extra={"neurorad_cases": tc.records})

See docs/segment.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Segmenter": "base", "Segmentation": "base", "ClassicalSegmenter": "base", "check_inputs": "base",
    "brain_extractor_segmenter": "base",
    "ArchSpec": "networks", "build_network": "networks", "ARCHITECTURES": "networks",
    "PreprocessSpec": "inference", "InferenceSpec": "inference", "prepare": "inference",
    "predict_array": "inference",
    "NetworkSegmenter": "engine", "load_segmenter": "engine", "segmenter_from_model": "engine",
    "load_weights": "engine", "save_weights": "engine", "state_sha256": "engine",
    "ModelInfo": "registry", "find_model": "registry", "list_models": "registry", "open_model": "registry",
    "verify": "registry", "import_model": "registry",
    "TrainConfig": "train", "load_config": "train", "parse_config": "train", "train": "train",
    "RawDataset": "dataset", "read_dataset": "dataset", "write_dataset": "dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        mod = importlib.import_module(f"neurorad.segment.{_EXPORTS[name]}")
        return getattr(mod, name)
    raise AttributeError(f"module 'neurorad.segment' has no attribute {name!r}")
