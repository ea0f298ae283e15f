"""nnU-Net v2 adapter: a site's trained nnU-Net results folder as a :class:`Segmenter`.

nnU-Net (Isensee et al., Nat Methods 2021) models are shared as a results folder
``<trainer>__<plans>__<configuration>/`` holding ``plans.json``, ``dataset.json`` and
``fold_<k>/checkpoint_final.pth``. :class:`NnUNetSegmenter` checks that folder, then runs
nnU-Net's own predictor (``nnunetv2.inference.predict_from_raw_data.nnUNetPredictor``: its
preprocessing, sliding window with Gaussian weighting, mirroring, fold ensemble) on CPU.

Inputs are handed over as nnU-Net's SimpleITK reader would have read them (array ``[z, y, x]``,
spacing reversed), every contrast first resampled onto the first input's grid; the class
probabilities come back on that grid.

Installation: ``nnunetv2`` and its libraries are installed WITHOUT their declared dependencies
(``make install``; versions pinned in ``constraints.txt``). ``dynamic-network-architectures`` declares
``timm``, which declares ``torchvision``; PyPI's torchvision is a CUDA build that cannot load beside
neurorad's CPU ``torch==2.13.0`` ("operator torchvision::nms does not exist"). Only the Primus/EVA
transformer architectures import ``timm``; nnU-Net's U-Net trainers, planners, preprocessing and
predictor never do, so a results folder of a U-Net-based trainer (the default ``nnUNetTrainer`` and
its variants, as HD-GLIO-like models use) trains and predicts. A Primus model is a clear error.
Checked by ``tests/segment/test_nnunet.py`` against nnU-Net's own file-based prediction on a model
nnU-Net trains in the test.
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
from neurorad.preprocess.torch_runtime import denormals_flushed
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
        """nnU-Net's predictor, set up as ``nnUNetPredictor.initialize_from_trained_model_folder`` does,
        except for finding the trainer class (:func:`find_trainer_class`)."""
        if self._predictor is None:
            try:
                import torch
                from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
                from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
                from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
            except ImportError as exc:
                raise ProcessingError(f"nnunetv2 is not installed ({exc}); `make install` installs it "
                                      "(see the Makefile: without its declared dependencies)") from exc
            ds = json.loads((self.folder / "dataset.json").read_text())
            plans = PlansManager(self.plans)
            params = []
            for i, ck in enumerate(self.ckpts):
                try:
                    c = torch.load(str(ck), map_location="cpu", weights_only=False)
                    params.append(c["network_weights"])
                    if i == 0:
                        trainer_name, config_name = c["trainer_name"], c["init_args"]["configuration"]
                        mirror_axes = c.get("inference_allowed_mirroring_axes")
                except Exception as exc:  # truncated file, foreign pickle, missing keys
                    raise ProcessingError(f"{ck}: corrupt or not an nnU-Net checkpoint "
                                          f"({type(exc).__name__}: {str(exc)[:160]})") from exc
            config = plans.get_configuration(config_name)
            trainer = find_trainer_class(trainer_name, self.folder)
            net = trainer.build_network_architecture(plans, config, determine_num_input_channels(plans, config, ds),
                                                     plans.get_label_manager(ds).num_segmentation_heads,
                                                     enable_deep_supervision=False)
            net.load_state_dict(params[0])
            p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=self.mirror_tta,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
            p.manual_initialization(net, plans, config, params, ds, trainer_name, mirror_axes)
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
        with denormals_flushed():  # subnormal activations are tens of times slower on x86 (torch_runtime)
            _, prob = pred.predict_single_npy_array(np.stack(arrs), props, None, None, True)
        prob = np.asarray(prob, np.float32).transpose(3, 2, 1, 0)  # [K, z, y, x] -> [x, y, z, K]
        record = {"engine": "nnunetv2", "name": self.name, "version": self.version, "weights_sha256": self._weights,
                  "folds": list(self.folds), "mirror_tta": self.mirror_tta}
        return Segmentation(Volume(prob, ref.affine.copy(), {}), self.labels, None, record)


def find_trainer_class(name: str, folder: Path) -> type:
    """nnU-Net's trainer class ``name`` from ``nnunetv2.training.nnUNetTrainer`` (as nnU-Net's
    ``recursive_find_trainer_class_by_name``), skipping the subpackages that cannot be imported because a
    dependency neurorad does not install is missing (the Primus/EVA trainers need ``timm``, see the
    module docstring); nnU-Net's own search stops at the first such module, before reaching ``variants``."""
    import importlib
    import pkgutil

    import nnunetv2.training.nnUNetTrainer as root

    skipped: list[str] = []

    def onerror(modname: str) -> None:
        skipped.append(modname)

    for info in pkgutil.walk_packages(root.__path__, root.__name__ + ".", onerror=onerror):
        if info.ispkg:
            continue
        try:
            mod = importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            skipped.append(f"{info.name} (needs {exc.name})")
            continue
        cls = getattr(mod, name, None)
        if isinstance(cls, type):
            return cls
    why = f"; not importable here: {', '.join(skipped)}" if skipped else ""
    raise ProcessingError(f"{folder}: nnU-Net trainer class {name!r} not found in nnunetv2{why} (neurorad runs "
                          "U-Net-based nnU-Net trainers; timm/torchvision-based ones are not installed)")
