"""nnU-Net v2 adapter: a site's trained nnU-Net results folder as a :class:`Segmenter`.

nnU-Net (Isensee et al., Nat Methods 2021) models are shared as a results folder
``<trainer>__<plans>__<configuration>/`` holding ``plans.json``, ``dataset.json`` and
``fold_<k>/checkpoint_final.pth``. :class:`NnUNetSegmenter` checks that folder, then runs
nnU-Net's own predictor (``nnunetv2.inference.predict_from_raw_data.nnUNetPredictor``: its
preprocessing, sliding window with Gaussian weighting, mirroring, fold ensemble) on CPU.

Inputs are handed over as nnU-Net's SimpleITK reader would have read them (array ``[z, y, x]``,
spacing reversed), every contrast first resampled onto the first input's grid; the class
probabilities come back on that grid.

STATUS: ``nnunetv2`` is not installed in neurorad's environment. ``nnunetv2==2.8.1`` pulls
``torchvision==0.28.0`` from PyPI, a CUDA build whose compiled operators do not load against the
local CPU ``torch==2.13.0`` (``import torchvision`` raises "operator torchvision::nms does not
exist"), which breaks ``import nnunetv2``. Until a matching CPU torchvision is available, the
folder checks below run and :meth:`NnUNetSegmenter.predict` raises a clear error; the
prediction path has not been run against a real nnU-Net model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neurorad.errors import InputError, ProcessingError
from neurorad.image.geometry import resample_to_reference
from neurorad.image.sitk_bridge import to_sitk
from neurorad.image.volume import Volume
from neurorad.provenance import sha256_files
from neurorad.segment.base import Segmentation, check_inputs


class NnUNetSegmenter:
    """A trained nnU-Net v2 results folder behind the Segmenter protocol."""

    def __init__(self, folder: str | Path, folds: Sequence[int | str] = (0,),
                 checkpoint: str = "checkpoint_final.pth", mirror_tta: bool = True, version: str = "0.0.0") -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError("nnU-Net results folder not found", self.folder)
        for need in ("plans.json", "dataset.json"):
            if not (self.folder / need).is_file():
                raise InputError(f"not an nnU-Net v2 results folder: {need} missing (expected "
                                 f"<trainer>__<plans>__<configuration>/ with plans.json, dataset.json, fold_k/)",
                                 self.folder)
        try:
            self.plans = json.loads((self.folder / "plans.json").read_text())
            ds = json.loads((self.folder / "dataset.json").read_text())
        except ValueError as exc:
            raise InputError(f"plans.json or dataset.json is not valid JSON ({exc})", self.folder) from exc
        self.folds = tuple(folds)
        self.checkpoint = checkpoint
        self.ckpts = [self.folder / f"fold_{f}" / checkpoint for f in self.folds]
        missing = [str(p.relative_to(self.folder)) for p in self.ckpts if not p.is_file()]
        if missing:
            raise InputError(f"nnU-Net checkpoint(s) missing: {', '.join(missing)}", self.folder)
        chans = ds.get("channel_names") or ds.get("modality") or {}
        self.contrasts = tuple(str(chans[k]).lower() for k in sorted(chans, key=int))
        self.labels = {int(v): str(k) for k, v in ds.get("labels", {}).items() if not isinstance(v, list)}
        if not self.contrasts or sorted(self.labels) != list(range(len(self.labels))):
            raise InputError("dataset.json needs channel_names and labels 0..K-1", self.folder / "dataset.json")
        self.name = f"nnunet:{self.folder.name}"
        self.version = version
        self.mirror_tta = mirror_tta
        self._weights = sha256_files(self.ckpts)
        self._predictor = None

    @property
    def weights_sha256(self) -> str:
        return self._weights

    def _load(self):  # noqa: ANN202 - nnUNetPredictor
        if self._predictor is None:
            try:
                import torch
                from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
            except Exception as exc:  # ImportError, or torchvision's RuntimeError on a CPU/CUDA mismatch
                raise ProcessingError(f"nnunetv2 cannot be imported ({type(exc).__name__}: {str(exc)[:160]}); "
                                      "install nnunetv2 with a torchvision that matches torch") from exc
            p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=self.mirror_tta,
                                device=torch.device("cpu"), verbose=False, verbose_preprocessing=False,
                                allow_tqdm=False)
            p.initialize_from_trained_model_folder(str(self.folder), use_folds=self.folds,
                                                   checkpoint_name=self.checkpoint)
            self._predictor = p
        return self._predictor

    def predict(self, volumes: Sequence[Volume]) -> Segmentation:
        vols = check_inputs(volumes, self.contrasts, self.name)
        ref = vols[0]
        pred = self._load()
        arrs = []
        for v in vols:
            on_ref = v if v.same_grid(ref) else resample_to_reference(v, ref, "linear")
            arrs.append(np.asarray(on_ref.data, np.float32).transpose(2, 1, 0))  # SimpleITK [z, y, x]
        img = to_sitk(ref)
        props = {"spacing": list(img.GetSpacing())[::-1]}
        _, prob = pred.predict_single_npy_array(np.stack(arrs), props, None, None, True)
        prob = np.asarray(prob, np.float32).transpose(3, 2, 1, 0)  # [K, z, y, x] -> [x, y, z, K]
        record = {"engine": "nnunetv2", "name": self.name, "version": self.version, "weights_sha256": self._weights,
                  "folds": list(self.folds), "mirror_tta": self.mirror_tta}
        return Segmentation(Volume(prob, ref.affine.copy(), {}), self.labels, None, record)
