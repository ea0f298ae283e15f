"""Preprocessing and inference shared by training and every network engine.

One function prepares the arrays (:func:`prepare`) for training AND inference, so a model sees
at run time exactly what it saw in training:

1. the working grid: the first input reoriented to RAS (exact, :func:`neurorad.image.reorient`)
   and resampled to the model's ``spacing_mm`` over the same field of view;
2. every contrast resampled onto that grid (linear; labels nearest);
3. intensity normalisation per contrast (``zscore``: whole-volume mean 0 / SD 1 as the WMH
   paper; ``zscore-nonzero``: statistics over voxels > 0 as nnU-Net for MR; ``minmax``: 0-1 as
   the skull-stripping paper's "whitening"; ``percentile``: 0.5-99.5 % clipped to 0-1; ``ct``:
   HU window [-100, 200] to 0-1; ``none``).

Inference (:func:`predict_array`): 3D patches by MONAI ``sliding_window_inference`` with
Gaussian importance weighting (nnU-Net, Isensee et al. 2021) and overlap; 2D / 2.5D nets run
axial slice by axial slice (k adjacent slices as channels for 2.5D, the middle slice out, as the
microbleed paper); optional mirror test-time augmentation averages the softmax over flips.
Before that the array is cropped to its non-constant box (:func:`foreground_box`; nnU-Net crops to
the non-zero region) and the probabilities pasted back, background (class 0 = 1) outside it.
Probabilities go back to the first input's grid by linear interpolation (:func:`to_input_grid`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from neurorad.errors import InputError
from neurorad.image.geometry import grid_for_spacing, reorient, resample_to_reference
from neurorad.image.volume import Volume
from neurorad.preprocess.torch_runtime import denormals_flushed
from neurorad.segment.networks import ArchSpec

NORMALIZATIONS = ("zscore", "zscore-nonzero", "minmax", "percentile", "ct", "none")


@dataclass(frozen=True)
class PreprocessSpec:
    """How inputs become network arrays (stored in the model card)."""

    spacing_mm: tuple[float, float, float] | None = (1.0, 1.0, 1.0)  # None: the first input's own grid
    normalization: str = "zscore"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spacing_mm"] = None if self.spacing_mm is None else [float(s) for s in self.spacing_mm]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        sp = d.get("spacing_mm")
        return cls(None if sp is None else tuple(float(s) for s in sp), d.get("normalization", "zscore"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class InferenceSpec:
    """Sliding-window inference parameters (stored in the model card)."""

    patch_size: tuple[int, ...] = (96, 96, 96)  # 3D patch, or 2D in-plane patch for 2D/2.5D nets
    overlap: float = 0.5
    mirror_tta: bool = False
    batch_size: int = 4  # patches (or slices) per forward pass
    # with mirror_tta, the spatial axes of the RAS working grid mirrored (0: left-right, 1: posterior-anterior,
    # 2: inferior-superior; every combination of them, the unflipped image included); None: every axis of the
    # network (nnU-Net's mirroring: 8 passes in 3D)
    mirror_axes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.mirror_axes is not None:
            axes = tuple(int(a) for a in self.mirror_axes)
            if len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
                raise InputError(f"mirror_axes must be distinct spatial axes 0, 1 or 2, got {self.mirror_axes}")
            object.__setattr__(self, "mirror_axes", axes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = [int(p) for p in self.patch_size]
        if self.mirror_axes is None:  # cards written before mirror_axes read the same
            del d["mirror_axes"]
        else:
            d["mirror_axes"] = list(self.mirror_axes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> InferenceSpec:
        axes = d.get("mirror_axes")
        return cls(tuple(int(p) for p in d.get("patch_size", (96, 96, 96))), float(d.get("overlap", 0.5)),
                   bool(d.get("mirror_tta", False)), int(d.get("batch_size", 4)),
                   None if axes is None else tuple(int(a) for a in axes))


Grid = tuple[tuple[int, int, int], np.ndarray]

#: 2D / 2.5D nets: slices per forward pass when every slice is a single window
SLICES_PER_PASS = 16

#: voxels kept around the non-constant region when inference crops to it (:func:`foreground_box`)
CROP_MARGIN_VOXELS = 4


def working_grid(reference: Volume, spacing_mm: Sequence[float] | None) -> Grid:
    """RAS-oriented grid over the reference's field of view at ``spacing_mm`` (its own voxels when None)."""
    ras = reorient(Volume(np.zeros(reference.spatial_shape, np.uint8), reference.affine), "RAS")
    if spacing_mm is None:
        return ras.spatial_shape, ras.affine
    return grid_for_spacing(ras, tuple(float(s) for s in spacing_mm))  # type: ignore[arg-type]


def normalize(data: np.ndarray, method: str) -> np.ndarray:
    """Intensity normalisation of one contrast (see module docstring)."""
    x = np.asarray(data, dtype=np.float32)
    if method == "none":
        return x
    if method == "zscore":
        sd = float(x.std())
        return ((x - float(x.mean())) / (sd if sd > 0 else 1.0)).astype(np.float32)
    if method == "zscore-nonzero":
        m = x > 0
        vals = x[m] if m.any() else x.ravel()
        sd = float(vals.std())
        return np.where(m, (x - float(vals.mean())) / (sd if sd > 0 else 1.0), 0.0).astype(np.float32)
    if method == "minmax":
        lo, hi = float(x.min()), float(x.max())
        return ((x - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
    if method == "percentile":
        lo, hi = (float(v) for v in np.percentile(x, [0.5, 99.5]))
        return np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0).astype(np.float32)
    if method == "ct":
        return np.clip((x + 100.0) / 300.0, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"unknown normalization {method!r}")


def prepare(volumes: Sequence[Volume], spec: PreprocessSpec, label: Volume | None = None
            ) -> tuple[np.ndarray, np.ndarray | None, Grid]:
    """Network input ``[contrast, i, j, k]`` (float32) on the working grid, the label resampled
    onto it (nearest, int16) when given, and the grid."""
    if not volumes:
        raise InputError("no input images")
    grid = working_grid(volumes[0], spec.spacing_mm)
    chans = []
    for v in volumes:
        r = resample_to_reference(v.with_data(np.asarray(v.data, np.float32)), grid, "linear")
        chans.append(normalize(r.data, spec.normalization))
    lab = None
    if label is not None:
        lab = resample_to_reference(label.with_data(np.asarray(label.data, np.int16)), grid, "nearest").data
        lab = np.asarray(lab, np.int16)
    return np.stack(chans).astype(np.float32), lab, grid


def to_input_grid(prob: np.ndarray, grid: Grid, reference: Volume) -> np.ndarray:
    """Class probabilities ``[class, i, j, k]`` on the working grid -> ``[i, j, k, class]`` on the
    reference's grid (linear interpolation of each foreground class; background = 1 - the rest,
    so voxels outside the network's field of view are background)."""
    n = prob.shape[0]
    shape, affine = grid
    if tuple(shape) == reference.spatial_shape and np.allclose(affine, reference.affine, atol=1e-6):
        return np.ascontiguousarray(np.moveaxis(prob, 0, -1)).astype(np.float32)
    out = np.empty((*reference.spatial_shape, n), np.float32)
    for c in range(1, n):
        out[..., c] = resample_to_reference(Volume(prob[c].astype(np.float32), affine), reference, "linear").data
    np.clip(out[..., 1:], 0.0, 1.0, out=out[..., 1:])
    s = out[..., 1:].sum(-1)
    over = s > 1.0
    if over.any():
        out[over, 1:] /= s[over, None]
        s = np.minimum(s, 1.0)
    out[..., 0] = 1.0 - s
    return out


# --------------------------------------------------------------------------------------------
# network forward passes
# --------------------------------------------------------------------------------------------
def slice_stack(arr: np.ndarray, slices: int) -> np.ndarray:
    """``[C, X, Y, Z]`` -> ``[Z, C*slices, X, Y]``: for each axial slice its ``slices`` neighbours
    (edge slices repeated), contrast-major order (all slices of contrast 0 first)."""
    c, _, _, z = arr.shape
    h = slices // 2
    idx = np.clip(np.arange(z)[:, None] + np.arange(-h, h + 1)[None, :], 0, z - 1)  # [Z, slices]
    out = arr[:, :, :, idx]  # [C, X, Y, Z, slices]
    return np.ascontiguousarray(out.transpose(3, 0, 4, 1, 2).reshape(z, c * slices, *arr.shape[1:3]))


def _flips(dims: int, enabled: bool, mirror_axes: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """The tensor dimensions flipped in each pass of mirror test-time augmentation (``()``: the image as it is):
    every combination of the ``dims`` spatial dimensions, or of ``mirror_axes`` (spatial axes, 0-based) among
    them; one unflipped pass when not ``enabled``."""
    if not enabled:
        return [()]
    spatial = range(dims) if mirror_axes is None else [a for a in mirror_axes if a < dims]
    axes = [2 + a for a in spatial]
    return [tuple(c) for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.no_grad()
def _softmax_windows(forward, x: torch.Tensor, roi: Sequence[int], inf: InferenceSpec,  # noqa: ANN001
                     sw_batch_size: int | None = None) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    total = None
    flips = _flips(x.ndim - 2, inf.mirror_tta, inf.mirror_axes)
    for f in flips:
        xi = torch.flip(x, f) if f else x
        logits = sliding_window_inference(xi, list(roi), sw_batch_size or inf.batch_size, forward, overlap=inf.overlap,
                                          mode="gaussian", padding_mode="constant", cval=0.0)
        p = torch.softmax(logits, 1)
        if f:
            p = torch.flip(p, f)
        total = p if total is None else total + p
    return total / len(flips)  # type: ignore[operator]


def foreground_box(arr: np.ndarray, roi: Sequence[int], margin: int = CROP_MARGIN_VOXELS
                   ) -> tuple[slice, slice, slice] | None:
    """Bounding box ``(i, j, k)`` slices of the voxels where any contrast of ``arr`` ``[C, i, j, k]``
    differs from that contrast's minimum, i.e. the non-zero region of a zero-filled background after
    any normalisation (nnU-Net crops to the non-zero region, Isensee et al. 2021). The box grows by
    ``margin`` voxels and, in the first ``len(roi)`` axes, to at least the window ``roi`` (within the
    array), so a window never sees padding the uncropped array did not have. None: nothing to crop
    (all constant, or the box is the whole array)."""
    fg = np.any(arr > arr.reshape(arr.shape[0], -1).min(1)[:, None, None, None], axis=0)
    if not fg.any():
        return None
    box = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(fg.any(axis=other))
        n = fg.shape[ax]
        lo, hi = max(0, int(idx[0]) - margin), min(n, int(idx[-1]) + 1 + margin)
        want = int(roi[ax]) if ax < len(roi) else 0
        if hi - lo < want:  # grow to the window, centred, clamped to the array
            lo = max(0, min(lo - (want - (hi - lo)) // 2, n - want))
            hi = min(n, lo + want)
        box.append(slice(lo, hi))
    if all(b.start == 0 and b.stop == n for b, n in zip(box, fg.shape, strict=True)):
        return None
    return tuple(box)  # type: ignore[return-value]


def _background_probabilities(n_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros((n_classes, *shape), np.float32)
    out[0] = 1.0
    return out


def predict_array(forward, arr: np.ndarray, arch: ArchSpec, inf: InferenceSpec,  # noqa: ANN001
                  crop: bool = True) -> np.ndarray:
    """Class probabilities ``[class, i, j, k]`` for the prepared array ``[C, i, j, k]``.

    ``forward`` maps a float32 tensor batch to logits (a torch module in eval mode, or an ONNX
    Runtime session wrapped as a callable). ``crop`` (default): run the network only inside
    :func:`foreground_box` (3D: the sliding window covers the box; 2D / 2.5D: axial slices outside it
    are skipped, and in-plane it is cropped as in 3D, never below the window); outside it the
    background class has probability 1 (nnU-Net's convention for the region outside its crop). Inside
    it the result equals the uncropped one up to the sliding window's edge effects (window positions
    move with the box); ``crop=False`` gives the uncropped inference.
    """
    if arr.shape[0] != arch.in_channels:
        raise InputError(f"model expects {arch.in_channels} contrast(s), got {arr.shape[0]}")
    roi = tuple(inf.patch_size[:3]) if arch.spatial_dims == 3 else tuple(inf.patch_size[:2])
    box = foreground_box(arr, roi) if crop else None
    if box is not None:
        out = _background_probabilities(arch.out_channels, arr.shape[1:])
        if arch.spatial_dims == 3:
            out[(slice(None), *box)] = _predict_uncropped(forward, arr[(slice(None), *box)], arch, inf)
        else:  # 2D / 2.5D: the neighbour slices of a kept slice come from the whole array
            out[(slice(None), *box)] = _predict_uncropped(forward, arr[:, box[0], box[1]], arch, inf, box[2])
        return out
    return _predict_uncropped(forward, arr, arch, inf)


def _predict_uncropped(forward, arr: np.ndarray, arch: ArchSpec, inf: InferenceSpec,  # noqa: ANN001
                       keep: slice | None = None) -> np.ndarray:
    """:func:`predict_array` without the crop; 2D / 2.5D: only the axial slices ``keep`` (all when None)."""
    if arch.spatial_dims == 3:
        roi = tuple(inf.patch_size[:3])
        x = torch.from_numpy(np.ascontiguousarray(arr[None]))
        with denormals_flushed():  # subnormal activations are tens of times slower (preprocess.torch_runtime)
            return _softmax_windows(forward, x, roi, inf)[0].numpy()
    roi = tuple(inf.patch_size[:2])
    if keep is None:
        stack = slice_stack(arr, arch.slices)  # [Z, C*k, X, Y]
    else:  # the kept slices' neighbours (edge slices repeated only at the array's own ends, as uncropped)
        h, z = arch.slices // 2, arr.shape[3]
        lo = max(0, keep.start - h)
        stack = slice_stack(arr[:, :, :, lo:min(z, keep.stop + h)], arch.slices)[keep.start - lo:keep.stop - lo]
    outs = []
    # SLICES_PER_PASS slices per forward pass when each slice is one window (whole-slice inference, the
    # papers' setting): per-slice cost on 2 cores fell ~2x from batch 4 to 16 (bench/segment.py, docs)
    chunk = max(1, inf.batch_size * 4, SLICES_PER_PASS)
    whole = all(r >= n for r, n in zip(roi, stack.shape[2:], strict=True))
    with denormals_flushed():
        for s in range(0, stack.shape[0], chunk):
            x = torch.from_numpy(stack[s:s + chunk])
            outs.append(_softmax_windows(forward, x, roi, inf, chunk if whole else None).numpy())
    prob = np.concatenate(outs, 0)  # [Z, K, X, Y]
    return np.ascontiguousarray(prob.transpose(1, 2, 3, 0))
