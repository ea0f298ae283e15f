"""The learned WMH 2D U-Net and microbleed 3-slice U-Net engines' model side: network inputs (the papers'
preprocessing, :mod:`neurorad.segment.svd_paper`), the starter models' training configurations, loading a
model and mapping its prediction back onto the native grid.

The starter models ``wmh-unet2d`` and ``cmb-unet25d`` are shipped in ``neurorad/segment/models/`` (cards
there). One command rebuilds the phantom dataset and retrains each (it lives in the workflows layer, which
may use the phantoms; this layer may not)::

    python -m neurorad.workflows.svd_train wmh --out RUN   # then: neurorad model import RUN/run/model
    python -m neurorad.workflows.svd_train cmb --out RUN

Method as the papers (PAPERS.md B2, C2):

* WMH: global z-score, zero-pad to square, 384 x 384; ``unet2d`` (MONAI BasicUNet 2D, batch norm,
  bilinear upsampling), Adam, learning rate -10 % after 30 epochs without validation-Dice gain, stop
  after 60, best validation checkpoint; kept per case: the slices with a lesion and as many without.
* Microbleeds: SWI WM-peak alignment, rare-bin window, min-max 0-1, square crop, 384 x 384; ``unet25d``
  with 3 slices in and the middle slice out, Adam 1e-3, learning rate x 0.1 on plateau; half of the
  training patches centred on a microbleed (the paper's 1 : 1 positive : negative slices, approximately).

Departures for a CPU budget (the shipped models were trained on 2 shared CPU cores in <= 25 min each),
stated in the cards: a half-width network (channels 8-128; the WMH paper: 16-256; the microbleed paper:
64), Dice + cross-entropy loss (the papers: cross-entropy; the Dice term makes the few steps learn the
rare lesion class), 128 x 128 training patches from the 384 x 384 slices (the papers: whole slices),
``STARTER_EPOCHS`` x ``STARTER_ITERATIONS`` batches of 4 within a wall-clock budget (the papers: up to
200 epochs, batch 32), Adam 1e-3 for both (the WMH paper: 3e-4), 12 phantom cases (11 training, 1
validation) of 24 slices each (WMH: up to 12 with a lesion and as many without; microbleeds: the block of
24 slices with the most microbleeds). Inference runs on the whole 384 x 384 slice.
These starter models are undertrained; their cards say so.
"""

from __future__ import annotations

import numpy as np

from neurorad.image.volume import Volume
from neurorad.segment.svd_paper import swi_paper_normalise, to_paper_grid, wmh_paper_normalise

__all__ = ["wmh_input", "cmb_input", "CONFIGS", "MODELS", "RETRAIN", "load_starter", "predict_native"]


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


CMB_BLOCK = 40


STARTER_FEATURES = [8, 16, 32, 64, 128]
STARTER_EPOCHS = 40
STARTER_ITERATIONS = 25

_COMMON_CARD = {
    "intended_use": "starter model for trying the workflow and for tests; retrain on a site's labelled data "
                    "before any clinical use",
    "limitations": "NOT FIT FOR CLINICAL USE OR FOR PATIENT IMAGES: trained on synthetic phantoms only "
                   "(neurorad.phantom; 12 cases of 24 slices) for a CPU budget of <= 25 min on 2 shared cores: "
                   "a half-width network (channels 8-128), Dice + cross-entropy, 40 epochs of 25 steps of "
                   "batch 4 on 128 x 128 patches (the papers: 200 epochs, batch 32, whole slices): "
                   "undertrained; never validated on patients; figures measured on held-out phantoms only (bench/)",
    "licence": "Apache-2.0",
}

_TRAINING = {"seed": 0, "max_epochs": STARTER_EPOCHS, "iterations_per_epoch": STARTER_ITERATIONS, "batch_size": 4,
             "learning_rate": 1e-3, "loss": "dice_ce", "lr_patience_epochs": 30, "stop_patience_epochs": 60,
             "foreground_oversample": 0.5}
_DATA = {"dataset": "dataset", "spacing_mm": None, "normalization": "none", "patch_size": [128, 128],
         "val_fraction": 0.08}  # 1 validation case of 12

CONFIGS: dict[str, dict] = {
    "wmh": {
        "model": {"name": "wmh-unet2d", "version": "0.2.0", "task": "white-matter hyperintensities on FLAIR",
                  "architecture": "unet2d", "features": STARTER_FEATURES},
        "data": dict(_DATA),
        "training": {**_TRAINING, "lr_factor": 0.9},
        "inference": {"patch_size": [384, 384], "overlap": 0.0, "mirror_tta": False, "batch_size": 4},
        "card": {"training_data": "SYNTHETIC: domain-randomised WMH phantoms (neurorad.phantom, seeds 0-11), "
                                  "papers' preprocessing (z-score, pad, 384 x 384); PAPERS.md B", **_COMMON_CARD},
    },
    "cmb": {
        "model": {"name": "cmb-unet25d", "version": "0.2.0", "task": "cerebral microbleeds on SWI",
                  "architecture": "unet25d", "features": STARTER_FEATURES, "slices": 3},
        "data": dict(_DATA),
        "training": {**_TRAINING, "lr_factor": 0.1},
        "inference": {"patch_size": [384, 384], "overlap": 0.0, "mirror_tta": False, "batch_size": 4},
        "card": {"training_data": "SYNTHETIC: domain-randomised microbleed phantoms (neurorad.phantom, seeds "
                                  "0-11), papers' preprocessing (WM-peak alignment, window, min-max, square "
                                  "crop, 384 x 384, 3 slices); PAPERS.md C", **_COMMON_CARD},
    },
}

RETRAIN = {k: f"python -m neurorad.workflows.svd_train {k} --out RUN && neurorad model import RUN/run/model"
           for k in CONFIGS}
MODELS = {"wmh": "wmh-unet2d@0.2.0", "cmb": "cmb-unet25d@0.2.0"}


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
        return load_segmenter(ref)  # engine "auto": the faster one measured at ONNX export (card)
    except InputError as exc:
        raise InputError(f"model {ref} is not available ({exc.problem}); retrain it with "
                         f"`{RETRAIN[kind]}`") from exc


def predict_native(seg, x: Volume, geom: object) -> np.ndarray:  # noqa: ANN001
    """Foreground probability of the network on its 384 x 384 stack ``x``, back on the native grid."""
    from neurorad.segment.svd_paper import from_paper_grid

    res = seg.predict([x])
    p = np.asarray(res.probabilities.data, np.float32)
    fg = 1.0 - p[..., 0]
    return np.clip(from_paper_grid(fg, geom), 0.0, 1.0)  # type: ignore[arg-type]
