"""``neurorad train CONFIG``: train a network (or a k-fold ensemble) on an nnU-Net raw dataset.

The schedule follows the published systems (PAPERS.md B6, C6, E2): Adam (learning rate
3e-4 by default), the learning rate multiplied by ``lr_factor`` (0.9 = "reduce by 10 %") after
``lr_patience_epochs`` epochs without a better validation Dice, training stopped after
``stop_patience_epochs`` epochs without improvement (or at ``max_epochs``, or once validation
Dice reaches ``stop_at_val_dice``), and the checkpoint with the best validation Dice kept. ``lr_schedule =
"poly"`` replaces the plateau rule with nnU-Net's polynomial decay (Isensee et al., Nat Methods 2021: the
learning rate at epoch ``e`` of ``max_epochs`` is ``learning_rate * (1 - (e - 1) / max_epochs) ** 0.9``), which
anneals to nearly zero by the last epoch instead of waiting for a plateau that a short CPU budget never reaches.

``touch RUN/STOP`` ends a run at the next epoch boundary (also when resuming): the best checkpoint so
far becomes the model.

Deterministic given ``seed`` on CPU: one NumPy generator drives case split, patch sampling and
augmentation; torch is seeded per fold and runs with deterministic algorithms. Two runs of one
config give the same weights (tested through :func:`neurorad.segment.engine.state_sha256`).

``training.device = "cuda"`` (or ``"auto"``: CUDA where torch sees a GPU, else CPU) trains on a GPU. There each
batch is drawn by a pool of threads (``training.loader_threads``), batch ``b`` of epoch ``e`` from its own
generator seeded ``(seed, fold, e, b)``, so the patches do not depend on thread timing; the GPU's own arithmetic
is not bit-reproducible. The weights are saved as CPU tensors either way.

``data.prepared`` (instead of ``data.dataset``) trains from a folder of *prepared* cases written by
:func:`write_prepared`: the cases already on the working grid, each channel quantised to 8 bits over its own
range (error at most half a step, e.g. 0.005 for a channel spanning 0-2.5) and bzip2-compressed. It exists so
that a training set can travel to a machine that has torch but not the imaging stack (SimpleITK) that
:func:`prepare` needs, or within a size limit: 0.64 MB per two-channel MS pair against 10 MB for its float32
volumes.

A run folder holds ``config.toml`` (as given), ``fold_<i>/checkpoint_last.pt`` (resume point:
network, optimiser, RNG states, history), ``fold_<i>/best.pt``, ``curves.csv``/``curves.png``
and, at the end, ``model/``: a registry model whose card is filled from the run (validation
Dice per fold, the command, the data statement from the config).

Config (TOML or JSON), every key but ``data.dataset`` optional::

    [model]     name, version, task, architecture (unet2d|unet25d|unet3d|dynunet|densevnet),
                features, slices (2.5D), dropout, extra
    [data]      dataset (folder, or a list of folders with the same channels and labels; relative to the
                config) or prepared (a :func:`write_prepared` folder), spacing_mm, normalization, patch_size,
                val_fraction, folds
    [training]  seed, max_epochs, iterations_per_epoch, batch_size, learning_rate, loss
                (dice_ce|dice|ce), lr_schedule (plateau|poly), lr_patience_epochs, lr_factor, stop_patience_epochs,
                stop_at_val_dice, foreground_oversample, foreground_sampling (voxel|component: a foreground
                patch centred on a foreground voxel, or on a lesion chosen first so small lesions are seen as
                often as large ones), mirror_augment, intensity_augment,
                init_weights (a registry model: folder or ``name@version``; every fold starts from its
                ``fold_0.pt`` instead of random weights: fine-tuning, as nnU-Net's ``-pretrained_weights``),
                device (cpu|cuda|auto), loader_threads (GPU only)
    [inference] overlap, mirror_tta, mirror_axes, batch_size, patch_size (default: the training patch)
    [card]      training_data, intended_use, limitations, licence (statements for the model card)
"""

from __future__ import annotations

import bz2
import csv
import datetime as _dt
import io
import json
import shutil
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurorad.errors import InputError, ProcessingError
from neurorad.segment.dataset import RawDataset, read_dataset, read_meta_json
from neurorad.segment.engine import build_from_state, load_weights, save_weights, state_sha256
from neurorad.segment.inference import InferenceSpec, PreprocessSpec, predict_array, prepare
from neurorad.segment.networks import ArchSpec, build_network, count_parameters
from neurorad.segment.registry import finalize_folder

LOSSES = ("dice_ce", "dice", "ce")
LR_SCHEDULES = ("plateau", "poly")
#: how a foreground patch picks its centre: a foreground voxel (nnU-Net; large lesions dominate) or first a
#: lesion (a connected component of the label), then a voxel of it, so every lesion is as likely, however small
FOREGROUND_SAMPLING = ("voxel", "component")
DEVICES = ("cpu", "cuda", "auto")


@dataclass
class TrainConfig:
    """A parsed training configuration (see the module docstring for the keys)."""

    dataset: list[Path]  # one or more nnU-Net raw datasets with the same channels and labels
    name: str = "model"
    version: str = "0.1.0"
    task: str = "segmentation"
    architecture: str = "unet3d"
    features: tuple[int, ...] = (16, 32, 64, 128, 256)
    slices: int = 1
    dropout: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    spacing_mm: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    normalization: str = "zscore"
    patch_size: tuple[int, ...] = (64, 64, 64)
    val_fraction: float = 0.2
    folds: int = 1
    seed: int = 0
    max_epochs: int = 100
    iterations_per_epoch: int = 50
    batch_size: int = 2
    learning_rate: float = 3e-4
    loss: str = "dice_ce"
    lr_schedule: str = "plateau"
    lr_patience_epochs: int = 30
    lr_factor: float = 0.9
    stop_patience_epochs: int = 60
    stop_at_val_dice: float | None = None
    foreground_oversample: float = 0.33
    foreground_sampling: str = "voxel"
    mirror_augment: bool = True
    intensity_augment: bool = True
    init_weights: str | None = None
    device: str = "cpu"
    loader_threads: int = 6
    prepared: Path | None = None
    inference: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        src = self.source
        if self.loss not in LOSSES:
            raise InputError(f"training.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}", src)
        dims = 2 if self.architecture in ("unet2d", "unet25d") else 3
        if len(self.patch_size) != dims:
            raise InputError(f"data.patch_size needs {dims} numbers for {self.architecture}, got "
                             f"{list(self.patch_size)}", src)
        if self.folds < 1 or self.max_epochs < 1 or self.iterations_per_epoch < 1 or self.batch_size < 1:
            raise InputError("folds, max_epochs, iterations_per_epoch and batch_size must be >= 1", src)
        if not 0 < self.val_fraction < 1:
            raise InputError("data.val_fraction must be between 0 and 1", src)
        if not 0 < self.lr_factor <= 1:
            raise InputError("training.lr_factor must be in (0, 1]", src)
        if self.foreground_sampling not in FOREGROUND_SAMPLING:
            raise InputError(f"training.foreground_sampling must be one of {', '.join(FOREGROUND_SAMPLING)}, got "
                             f"{self.foreground_sampling!r}", src)
        if self.device not in DEVICES:
            raise InputError(f"training.device must be one of {', '.join(DEVICES)}, got {self.device!r}", src)
        if self.loader_threads < 1:
            raise InputError("training.loader_threads must be >= 1", src)
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"training.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got "
                             f"{self.lr_schedule!r}", src)

    def arch(self, in_channels: int, out_channels: int) -> ArchSpec:
        try:
            spec = ArchSpec(self.architecture, in_channels, out_channels, tuple(self.features), self.slices,
                            self.dropout, dict(self.extra))
        except ValueError as exc:
            raise InputError(f"model: {exc}", self.source) from exc
        bad = [p for p in self.patch_size if p % spec.divisor]
        if bad:
            raise InputError(f"data.patch_size {list(self.patch_size)} must be multiples of {spec.divisor} for "
                             f"{self.architecture}", self.source)
        return spec


_SECTIONS = {
    "model": ("name", "version", "task", "architecture", "features", "slices", "dropout", "extra"),
    "data": ("dataset", "prepared", "spacing_mm", "normalization", "patch_size", "val_fraction", "folds"),
    "training": ("seed", "max_epochs", "iterations_per_epoch", "batch_size", "learning_rate", "loss",
                 "lr_schedule", "lr_patience_epochs", "lr_factor", "stop_patience_epochs", "stop_at_val_dice",
                 "foreground_oversample", "foreground_sampling", "mirror_augment", "intensity_augment",
                 "init_weights", "device", "loader_threads"),
}


def parse_config(raw: dict[str, Any], base: Path, source: Path | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a dict shaped like the TOML file (paths relative to ``base``)."""
    kw: dict[str, Any] = {}
    for sec, keys in _SECTIONS.items():
        part = raw.get(sec, {})
        unknown = sorted(set(part) - set(keys))
        if unknown:
            raise InputError(f"[{sec}] has unknown key(s): {', '.join(unknown)}", source)
        kw.update({k: part[k] for k in keys if k in part})
    unknown_sections = sorted(set(raw) - {*_SECTIONS, "inference", "card"})
    if unknown_sections:
        raise InputError(f"unknown section(s): {', '.join(unknown_sections)}", source)
    if "prepared" in kw:
        if "dataset" in kw:
            raise InputError("[data] takes dataset or prepared, not both", source)
        kw["prepared"] = Path(kw["prepared"]) if Path(kw["prepared"]).is_absolute() else base / kw["prepared"]
        kw["dataset"] = []
    elif "dataset" not in kw:
        raise InputError("[data] dataset (the nnU-Net raw dataset folder) is required", source)
    else:
        dss = kw["dataset"] if isinstance(kw["dataset"], list) else [kw["dataset"]]
        kw["dataset"] = [Path(d) if Path(d).is_absolute() else base / d for d in dss]
    for k in ("features", "patch_size"):
        if k in kw:
            kw[k] = tuple(int(x) for x in kw[k])
    if "spacing_mm" in kw and kw["spacing_mm"] is not None:
        sp = kw["spacing_mm"]
        kw["spacing_mm"] = tuple(float(x) for x in (sp if isinstance(sp, list | tuple) else [sp] * 3))
    try:
        cfg = TrainConfig(**kw, inference=dict(raw.get("inference", {})), card=dict(raw.get("card", {})),
                          source=source, raw=raw)
    except TypeError as exc:
        raise InputError(f"bad config: {exc}", source) from exc
    cfg.validate()
    try:
        PreprocessSpec(cfg.spacing_mm, cfg.normalization)
    except ValueError as exc:
        raise InputError(f"data: {exc}", source) from exc
    return cfg


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML (or JSON) training config."""
    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", path)
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot parse config ({exc})", path) from exc
    return parse_config(raw, path.parent.resolve(), path)


# --------------------------------------------------------------------------------------------
# data: prepared cases, patches, augmentation
# --------------------------------------------------------------------------------------------
@dataclass
class PreparedCase:
    case_id: str
    image: np.ndarray  # [C, X, Y, Z] float32, padded to at least the patch
    label: np.ndarray  # [X, Y, Z] int16
    foreground: np.ndarray  # (N, 3) voxel indices of label > 0 (subsampled)
    components: np.ndarray | None = None  # (N,) connected component (1..) of each foreground entry


def foreground_index(label: np.ndarray, components: bool = False, limit: int = 20000
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """The voxel indices of ``label > 0`` (evenly subsampled to ``limit``) and, with ``components``, the connected
    component (1.., 26-connected in 3D) of each; a subsample then keeps at least one voxel of every component."""
    from scipy import ndimage

    fg = np.argwhere(label > 0)
    keep = np.linspace(0, len(fg) - 1, limit).astype(int) if len(fg) > limit else None
    comp = None
    if components:
        comp = ndimage.label(label > 0, structure=np.ones((3,) * label.ndim, bool))[0][tuple(fg.T)]
        if keep is not None:
            keep = np.union1d(keep, np.unique(comp, return_index=True)[1])
            comp = comp[keep]
    return (fg if keep is None else fg[keep]), comp


def _padded_case(case_id: str, arr: np.ndarray, lab: np.ndarray, min_shape: tuple[int, ...],
                 components: bool) -> PreparedCase:
    """A working-grid case padded (image with its minimum, label with background) to at least ``min_shape``,
    with its foreground voxels (:func:`foreground_index`)."""
    pad = [(0, max(0, m - s)) for m, s in zip(min_shape, arr.shape[1:], strict=True)]
    if any(p[1] for p in pad):
        arr = np.pad(arr, [(0, 0), *pad], mode="constant", constant_values=float(arr.min()))
        lab = np.pad(lab, pad, mode="constant")
    fg, comp = foreground_index(lab, components)
    return PreparedCase(case_id, arr, lab, fg, comp)


def prepare_cases(datasets: list[RawDataset], prep: PreprocessSpec, min_shape: tuple[int, int, int],
                  progress: Callable[[dict], None] | None = None, components: bool = False) -> list[PreparedCase]:
    """The datasets' cases on the working grid, each with its foreground voxels (:func:`foreground_index`)."""
    out = []
    pairs = [(d, c) for d in datasets for c in d.cases]
    for i, (ds, case) in enumerate(pairs):
        imgs, lab = ds.load_case(case)
        arr, lab_arr, _ = prepare(imgs, prep, lab)
        assert lab_arr is not None
        cid = case if len(datasets) == 1 else f"{ds.root.name}/{case}"
        out.append(_padded_case(cid, arr, lab_arr, min_shape, components))
        if progress:
            progress({"stage": "prepare", "done": i + 1, "total": len(pairs)})
    return out


#: the format tag of a :func:`write_prepared` folder's ``prepared.json``
PREPARED_FORMAT = "neurorad-prepared-1"
PREPARED_ENDING = ".npz.bz2"


def _quantise(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """8-bit codes of ``x`` over its range, with the offset and step that decode them (``lo + code * step``).
    The offset is a whole number of steps below zero, so a zero (outside the brain, padding) decodes to 0."""
    lo, hi = float(x.min()), float(x.max())
    step = (hi - lo) / 254.0 if hi > lo else 1.0
    lo = float(np.floor(lo / step) * step) if lo <= 0 <= hi else lo
    codes = np.clip(np.rint((x - lo) / step), 0, 255).astype(np.uint8)
    return codes, lo, step


def write_prepared(folder: str | Path, cases: list[PreparedCase], dataset: RawDataset, prep: PreprocessSpec,
                   description: str = "") -> Path:
    """Write prepared cases (module doc: ``data.prepared``) to ``folder``: ``<case>.npz.bz2`` per case (each
    channel quantised to 8 bits over its own range, :func:`_quantise`; the label as 8 or 16 bits) and
    ``prepared.json`` (channels, labels, the working grid's preprocessing, the cases), written last, so a
    folder without it is incomplete. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for c in cases:
        name = c.case_id.replace("/", "__")
        arrays: dict[str, np.ndarray] = {}
        for ch in range(c.image.shape[0]):
            codes, lo, step = _quantise(c.image[ch])
            arrays[f"image_{ch}"] = codes
            arrays[f"scale_{ch}"] = np.array([lo, step], np.float64)
        arrays["label"] = c.label.astype(np.uint8 if c.label.max(initial=0) < 256 else np.int16)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(bz2.compress(buf.getvalue(), 9))  # bz2 holds these noisy 8-bit images 15 % tighter than xz
        tmp.replace(folder / f"{name}{PREPARED_ENDING}")
        names.append(name)
    meta = {"format": PREPARED_FORMAT, "channel_names": list(dataset.channel_names),
            "labels": {str(k): v for k, v in sorted(dataset.labels.items())}, "preprocessing": prep.to_dict(),
            "cases": names, "description": description,
            "quantisation": "per case and channel: uint8 codes, value = lo + code * step over the channel's range"}
    (folder / "prepared.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def read_prepared(folder: str | Path) -> RawDataset:
    """The channels, labels and cases of a :func:`write_prepared` folder (as a :class:`RawDataset` whose
    ``root`` is the folder); a missing or foreign ``prepared.json`` or a missing case file is a clear error."""
    folder = Path(folder)
    pj = folder / "prepared.json"
    meta = read_meta_json(folder, "prepared.json", "not a prepared-case folder (incomplete, or the wrong folder)")
    if meta.get("format") != PREPARED_FORMAT:
        raise InputError(f"prepared.json has format {meta.get('format')!r}, expected {PREPARED_FORMAT!r}", pj)
    missing = [c for c in meta["cases"] if not (folder / f"{c}{PREPARED_ENDING}").is_file()]
    if missing:
        raise InputError(f"{len(missing)} case file(s) missing, e.g. {missing[0]}{PREPARED_ENDING}", folder)
    return RawDataset(folder, tuple(meta["channel_names"]), {int(k): v for k, v in meta["labels"].items()},
                      tuple(meta["cases"]), PREPARED_ENDING)


def load_prepared(ds: RawDataset, prep: PreprocessSpec, min_shape: tuple[int, ...],
                  progress: Callable[[dict], None] | None = None, components: bool = False) -> list[PreparedCase]:
    """The cases of a :func:`read_prepared` folder, decoded, padded to ``min_shape`` and indexed as
    :func:`prepare_cases` does; the folder's preprocessing must be the config's."""
    meta = json.loads((ds.root / "prepared.json").read_text())
    if PreprocessSpec.from_dict(meta["preprocessing"]) != prep:
        raise InputError(f"prepared with {meta['preprocessing']}, but the config asks for {prep.to_dict()}",
                         ds.root / "prepared.json")
    out = []
    for i, name in enumerate(ds.cases):
        path = ds.root / f"{name}{ds.file_ending}"
        try:
            z = np.load(io.BytesIO(bz2.decompress(path.read_bytes())))
            chans = []
            for ch in range(len(ds.channel_names)):
                lo, step = (float(v) for v in z[f"scale_{ch}"])
                chans.append((lo + z[f"image_{ch}"].astype(np.float32) * np.float32(step)).astype(np.float32))
            arr, lab = np.stack(chans), z["label"].astype(np.int16)
        except (KeyError, ValueError, OSError, EOFError) as exc:
            raise InputError(f"corrupt prepared case ({type(exc).__name__}: {exc})", path) from exc
        out.append(_padded_case(name, arr, lab, min_shape, components))
        if progress:
            progress({"stage": "prepare", "done": i + 1, "total": len(ds.cases)})
    return out


def sample_batch(rng: np.random.Generator, cases: list[PreparedCase], arch: ArchSpec, patch: tuple[int, ...],
                 batch: int, fg_prob: float, mirror: bool, intensity: bool) -> tuple[np.ndarray, np.ndarray]:
    """A batch of patches (nnU-Net style: a share of patches centred on foreground; on a foreground voxel, or on
    a voxel of a lesion chosen first where the cases carry ``components``)."""
    xs, ys = [], []
    for _ in range(batch):
        c = cases[int(rng.integers(len(cases)))]
        shape = c.label.shape
        want_fg = rng.random() < fg_prob and len(c.foreground) > 0
        centre = None
        if want_fg and c.components is not None:  # a lesion first, then a voxel of it (FOREGROUND_SAMPLING)
            ids = np.unique(c.components)
            idx = np.flatnonzero(c.components == ids[int(rng.integers(len(ids)))])
            centre = c.foreground[idx[int(rng.integers(len(idx)))]]
        elif want_fg:
            centre = c.foreground[int(rng.integers(len(c.foreground)))]
        if arch.spatial_dims == 3:
            start = []
            for d in range(3):
                hi = shape[d] - patch[d]
                s = int(np.clip(centre[d] - patch[d] // 2, 0, hi)) if centre is not None else int(rng.integers(hi + 1))
                start.append(s)
            sl = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
            x = c.image[(slice(None), *sl)]
            y = c.label[sl]
        else:
            z = int(centre[2]) if centre is not None else int(rng.integers(shape[2]))
            start = []
            for d in range(2):
                hi = shape[d] - patch[d]
                s = int(np.clip(centre[d] - patch[d] // 2, 0, hi)) if centre is not None else int(rng.integers(hi + 1))
                start.append(s)
            h = arch.slices // 2
            zi = np.clip(np.arange(z - h, z + h + 1), 0, shape[2] - 1)
            x = c.image[:, start[0]:start[0] + patch[0], start[1]:start[1] + patch[1]][:, :, :, zi]  # C,X,Y,k
            x = x.transpose(0, 3, 1, 2).reshape(-1, patch[0], patch[1])
            y = c.label[start[0]:start[0] + patch[0], start[1]:start[1] + patch[1], z]
        x = np.array(x, np.float32)
        y = np.array(y, np.int64)
        if mirror:
            for ax in range(arch.spatial_dims if arch.spatial_dims == 2 else 3):
                if rng.random() < 0.5:
                    x = np.flip(x, ax + 1)
                    y = np.flip(y, ax)
        if intensity:
            x = x * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.normal(0.0, 0.1))
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    return np.stack(xs), np.stack(ys)[:, None]


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """Dice 2|A∩B|/(|A|+|B|) of each foreground class (NaN when absent from both)."""
    out = []
    for k in range(1, n_classes):
        a, b = pred == k, truth == k
        s = int(a.sum()) + int(b.sum())
        out.append(float(2 * np.logical_and(a, b).sum() / s) if s else float("nan"))
    return out


def _loss_fn(name: str):  # noqa: ANN202
    from monai.losses import DiceCELoss, DiceLoss

    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True, batch=True)
    ce = torch.nn.CrossEntropyLoss()
    return lambda logits, y: ce(logits, y[:, 0])


def validate(net: torch.nn.Module, cases: list[PreparedCase], arch: ArchSpec, inf: InferenceSpec) -> float:
    """Mean foreground Dice over validation cases and classes (argmax of the softmax); the windows run on the
    network's device, the stitching on the CPU."""
    net.eval()
    scores = []
    dev = next(net.parameters()).device

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(dev)).float().cpu() if dev.type != "cpu" else net(x)

    with torch.inference_mode():
        for c in cases:
            prob = predict_array(forward, c.image, arch, inf)
            scores.extend(dice_per_class(prob.argmax(0), c.label, arch.out_channels))
    net.train()
    vals = [s for s in scores if not np.isnan(s)]
    return float(np.mean(vals)) if vals else 0.0


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
@dataclass
class FoldResult:
    fold: int
    best_val_dice: float
    best_epoch: int
    epochs: int
    weights_sha256: str
    train_cases: list[str]
    val_cases: list[str]
    seconds: float


@dataclass
class RunResult:
    run_dir: Path
    model_dir: Path
    folds: list[FoldResult]
    arch: ArchSpec

    @property
    def val_dice(self) -> float:
        return float(np.mean([f.best_val_dice for f in self.folds]))


def split_cases(n: int, folds: int, val_fraction: float, seed: int) -> list[tuple[list[int], list[int]]]:
    """(train, val) index lists: one shuffled hold-out split, or ``folds`` disjoint validation folds."""
    if n < 2:
        raise InputError(f"need at least 2 cases to train with validation, got {n}")
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    if folds == 1:
        n_val = min(n - 1, max(1, int(round(val_fraction * n))))
        return [(sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist()))]
    if folds > n:
        raise InputError(f"{folds} folds but only {n} cases")
    parts = np.array_split(perm, folds)
    return [(sorted(np.concatenate([p for j, p in enumerate(parts) if j != i]).tolist()), sorted(parts[i].tolist()))
            for i in range(folds)]


def resolve_device(name: str) -> torch.device:
    """``training.device``: ``cpu``, ``cuda`` (an error naming the problem when torch sees no GPU) or ``auto``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(f"training.device = 'cuda', but torch {torch.__version__} sees no CUDA GPU (a CPU-only "
                         "build, or no driver): use 'cpu' or 'auto'")
    return torch.device(name)


def _threaded_patches(dev: torch.device) -> bool:
    """Whether batches are drawn by the thread pool (a GPU: module doc) rather than by the run's one generator."""
    return dev.type != "cpu"


def _prefetched(pool: Any, draw: Callable[[int], Any], n: int, depth: int) -> Iterator[Any]:
    """``draw(0) .. draw(n - 1)`` in order, computed by ``pool`` at most ``depth`` ahead of the consumer (a whole
    epoch queued at once could hold gigabytes of patches when the threads outrun the GPU)."""
    pending: deque = deque()
    for b in range(n):
        pending.append(pool.submit(draw, b))
        if len(pending) > depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _set_determinism(seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def init_state(cfg: TrainConfig, arch: ArchSpec) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """The starting weights of ``training.init_weights`` (a registry model, verified) and what the card records
    of them; ``None`` without it. The model must have the run's architecture (same layers and shapes)."""
    if not cfg.init_weights:
        return None
    from neurorad.segment.registry import find_model, weight_files

    try:
        m = find_model(cfg.init_weights)
    except InputError as exc:
        raise InputError(f"training.init_weights: {exc}", cfg.source) from exc
    files = weight_files(m.card)
    if not files:
        raise InputError(f"training.init_weights: model {m.name}@{m.version} lists no torch weights (*.pt) to "
                         "start from", m.path)
    state = load_weights(m.path / files[0])
    want = build_network(arch).state_dict()
    bad = sorted(k for k in want if k not in state or tuple(state[k].shape) != tuple(want[k].shape))
    bad += sorted(set(state) - set(want))
    if bad:
        raise InputError(f"training.init_weights: model {m.name}@{m.version} does not fit the configured "
                         f"{arch.architecture} network ({len(bad)} missing, extra or reshaped layer(s), e.g. "
                         f"{bad[0]})", cfg.source)
    return state, {"model": f"{m.name}@{m.version}", "file": files[0], "weights_state_sha256": state_sha256(state)}


def poly_learning_rate(initial: float, epoch: int, max_epochs: int, exponent: float = 0.9) -> float:
    """nnU-Net's polynomial learning-rate decay (Isensee et al., Nat Methods 2021): the rate of 1-based
    ``epoch`` out of ``max_epochs``, ``initial * (1 - (epoch - 1) / max_epochs) ** exponent``."""
    if not 1 <= epoch <= max_epochs:
        raise ValueError(f"epoch {epoch} is outside 1..{max_epochs}")
    return float(initial * (1.0 - (epoch - 1) / max_epochs) ** exponent)


def _train_fold(cfg: TrainConfig, arch: ArchSpec, fold: int, train_cases: list[PreparedCase],
                val_cases: list[PreparedCase], fold_dir: Path, inf: InferenceSpec, resume: bool,
                progress: Callable[[dict], None] | None,
                init: dict[str, torch.Tensor] | None = None) -> tuple[FoldResult, list[dict]]:
    fold_dir.mkdir(parents=True, exist_ok=True)
    last = fold_dir / "checkpoint_last.pt"
    _set_determinism(cfg.seed * 1000 + fold)
    dev = resolve_device(cfg.device)
    if dev.type == "cuda":  # not bit-reproducible there anyway (module doc): let cuDNN pick its fastest kernels
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
    net = build_network(arch)
    if init is not None:  # fine-tuning; a resumed run replaces it with its checkpoint below
        net.load_state_dict(init)
    net.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    pool = None
    if _threaded_patches(dev):  # a GPU outruns one thread's patch sampling (module doc)
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(cfg.loader_threads, thread_name_prefix="patches")
    rng = np.random.default_rng([cfg.seed, fold])
    history: list[dict] = []
    best, best_epoch, since_best, lr, epoch = -1.0, 0, 0, cfg.learning_rate, 0
    done = False
    t_start = time.perf_counter()
    if resume and last.is_file():
        try:
            ck = torch.load(str(last), map_location="cpu", weights_only=False)
            net.load_state_dict(ck["net"])
            opt.load_state_dict(ck["opt"])
        except Exception as exc:
            raise ProcessingError(f"{last}: corrupt checkpoint, cannot resume ({type(exc).__name__})") from exc
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        history, best, best_epoch, since_best, lr, epoch, done = (ck["history"], ck["best"], ck["best_epoch"],
                                                                   ck["since_best"], ck["lr"], ck["epoch"], ck["done"])
    loss_fn = _loss_fn(cfg.loss)
    net.train()
    while not done:
        if (fold_dir.parent / "STOP").exists():  # `touch RUN/STOP`: end now, keep the best checkpoint
            if not (fold_dir / "best.pt").is_file():
                raise ProcessingError(f"{fold_dir.parent}/STOP found before any epoch finished: nothing to keep")
            break
        epoch += 1
        t0 = time.perf_counter()
        if cfg.lr_schedule == "poly":
            lr = poly_learning_rate(cfg.learning_rate, epoch, cfg.max_epochs)
        for g in opt.param_groups:
            g["lr"] = lr
        losses = []
        batches = None
        if pool is not None:
            def draw(b: int, ep: int = epoch) -> tuple[np.ndarray, np.ndarray]:
                return sample_batch(np.random.default_rng([cfg.seed, fold, ep, b]), train_cases, arch,
                                    cfg.patch_size, cfg.batch_size, cfg.foreground_oversample, cfg.mirror_augment,
                                    cfg.intensity_augment)
            batches = _prefetched(pool, draw, cfg.iterations_per_epoch, 2 * cfg.loader_threads)
        for it in range(cfg.iterations_per_epoch):
            if batches is not None:
                x, y = next(batches)
            else:
                x, y = sample_batch(rng, train_cases, arch, cfg.patch_size, cfg.batch_size,
                                    cfg.foreground_oversample, cfg.mirror_augment, cfg.intensity_augment)
            opt.zero_grad(set_to_none=True)
            xt = torch.from_numpy(x).to(dev, non_blocking=True)
            yt = torch.from_numpy(y).to(dev, non_blocking=True)
            loss = loss_fn(net(xt), yt)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if progress:
                progress({"stage": "train", "fold": fold, "epoch": epoch, "iteration": it + 1,
                          "iterations": cfg.iterations_per_epoch, "loss": float(np.mean(losses)), "best": best})
        val = validate(net, val_cases, arch, inf)
        improved = val > best
        if improved:
            best, best_epoch, since_best = val, epoch, 0
            save_weights(net, fold_dir / "best.pt")
        else:
            since_best += 1
            if cfg.lr_schedule == "plateau" and since_best % cfg.lr_patience_epochs == 0:
                lr *= cfg.lr_factor
        row = {"fold": fold, "epoch": epoch, "loss": round(float(np.mean(losses)), 6), "val_dice": round(val, 6),
               "learning_rate": lr, "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        done = (epoch >= cfg.max_epochs or since_best >= cfg.stop_patience_epochs
                or (cfg.stop_at_val_dice is not None and best >= cfg.stop_at_val_dice))
        ck = {"net": net.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
              "torch_rng": torch.get_rng_state(), "history": history, "best": best, "best_epoch": best_epoch,
              "since_best": since_best, "lr": lr, "epoch": epoch, "done": done}
        tmp = fold_dir / ".checkpoint_last.pt.tmp"
        torch.save(ck, str(tmp))
        tmp.replace(last)
        if progress:
            progress({"stage": "epoch", "fold": fold, **row, "best": best, "done": done})
    if pool is not None:
        pool.shutdown()
    state = load_weights(fold_dir / "best.pt")
    res = FoldResult(fold, round(best, 6), best_epoch, epoch, state_sha256(state),
                     [c.case_id for c in train_cases], [c.case_id for c in val_cases],
                     round(time.perf_counter() - t_start, 2))
    return res, history


def write_curves(history: list[dict], out_dir: Path) -> None:
    """``curves.csv`` (one row per fold and epoch) and ``curves.png`` (loss and validation Dice)."""
    if not history:
        return
    keys = list(history[0])
    with open(out_dir / "curves.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for fold in sorted({r["fold"] for r in history}):
        rows = [r for r in history if r["fold"] == fold]
        ep = [r["epoch"] for r in rows]
        a1.plot(ep, [r["loss"] for r in rows], label=f"fold {fold}")
        a2.plot(ep, [r["val_dice"] for r in rows], label=f"fold {fold}")
    a1.set(xlabel="epoch", ylabel="training loss", title="loss")
    a2.set(xlabel="epoch", ylabel="validation Dice", title="validation Dice", ylim=(0, 1))
    a2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=90)
    plt.close(fig)


def _card(cfg: TrainConfig, datasets: list[RawDataset], arch: ArchSpec, prep: PreprocessSpec, inf: InferenceSpec,
          folds: list[FoldResult], command: str, init: dict[str, str] | None = None) -> dict[str, Any]:
    c = cfg.card
    ds = datasets[0]
    n_cases = sum(len(d.cases) for d in datasets)
    val = float(np.mean([f.best_val_dice for f in folds]))
    return {
        "name": cfg.name, "version": cfg.version, "task": cfg.task,
        "labels": {str(k): v for k, v in sorted(ds.labels.items())},
        "contrasts": [ch.lower() for ch in ds.channel_names],
        "preprocessing": prep.to_dict(), "architecture": arch.to_dict(), "inference": inf.to_dict(),
        "training_data": c.get("training_data", f"{n_cases} cases of the nnU-Net raw dataset(s) "
                                                 f"{', '.join(d.root.name for d in datasets)} (no statement given "
                                                 f"in the config)"),
        "validation": {
            "metrics": {"val_dice_mean": round(val, 4),
                        "per_fold": [{"fold": f.fold, "val_dice": f.best_val_dice, "best_epoch": f.best_epoch,
                                      "val_cases": f.val_cases} for f in folds]},
            "definition": "mean foreground Dice (per class, then averaged) of the argmax on the working grid of "
                          "held-out validation cases",
            "command": command,
        },
        "intended_use": c.get("intended_use", "research; validate locally before any clinical use"),
        "limitations": c.get("limitations", "not stated"),
        "licence": c.get("licence", "Apache-2.0"),
        "training": {"config": cfg.raw, "seed": cfg.seed, "folds": cfg.folds, "cases": n_cases,
                     "datasets": [d.root.name for d in datasets],
                     "parameters": count_parameters(build_network(arch)),
                     "weights_state_sha256": [f.weights_sha256 for f in folds],
                     **({"init_weights": init} if init else {}),
                     "seconds": round(sum(f.seconds for f in folds), 1),
                     "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
    }


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False,
          progress: Callable[[dict], None] | None = None, command: str | None = None) -> RunResult:
    """Train every fold of ``cfg`` into ``run_dir`` and write the registry model ``run_dir/model``."""
    from neurorad.provenance import software_versions

    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise InputError("run folder exists and is not empty (use --resume to continue it)", run_dir)
    datasets = [read_prepared(cfg.prepared)] if cfg.prepared is not None else [read_dataset(d) for d in cfg.dataset]
    ds = datasets[0]
    for other in datasets[1:]:
        if other.channel_names != ds.channel_names or other.labels != ds.labels:
            raise InputError(f"dataset {other.root.name} has channels {other.channel_names} / labels {other.labels}, "
                             f"but {ds.root.name} has {ds.channel_names} / {ds.labels}", other.root)
    arch = cfg.arch(len(ds.channel_names), len(ds.labels))
    prep = PreprocessSpec(cfg.spacing_mm, cfg.normalization)
    inf = InferenceSpec.from_dict({"patch_size": cfg.patch_size, **cfg.inference})  # the training patch by default
    val_inf = InferenceSpec(tuple(cfg.patch_size), 0.25, False, inf.batch_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.source is not None and not (run_dir / ("config" + cfg.source.suffix)).exists():
        shutil.copyfile(cfg.source, run_dir / ("config" + cfg.source.suffix))
    min_shape = tuple(cfg.patch_size) + ((1,) if arch.spatial_dims == 2 else ())
    init = init_state(cfg, arch)  # before the data, so a wrong model fails at once
    comps = cfg.foreground_sampling == "component"
    if cfg.prepared is not None:
        cases = load_prepared(ds, prep, min_shape, progress, comps)
    else:
        cases = prepare_cases(datasets, prep, min_shape, progress, components=comps)  # type: ignore[arg-type]
    splits = split_cases(len(cases), cfg.folds, cfg.val_fraction, cfg.seed)
    results, history = [], []
    for fold, (tr, va) in enumerate(splits):
        res, hist = _train_fold(cfg, arch, fold, [cases[i] for i in tr], [cases[i] for i in va],
                                run_dir / f"fold_{fold}", val_inf, resume, progress, init[0] if init else None)
        results.append(res)
        history.extend(hist)
    write_curves(history, run_dir)
    model_dir = run_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir()
    for r in results:
        build_from_state(arch, load_weights(run_dir / f"fold_{r.fold}" / "best.pt"))  # fits the card's network
        shutil.copyfile(run_dir / f"fold_{r.fold}" / "best.pt", model_dir / f"fold_{r.fold}.pt")
    for f in ("curves.csv", "curves.png"):
        if (run_dir / f).exists():
            shutil.copyfile(run_dir / f, model_dir / f)
    cmd = command or f"neurorad train {cfg.source or 'CONFIG'} --out {run_dir}"
    card = _card(cfg, datasets, arch, prep, inf, results, cmd, init[1] if init else None)
    card["training"]["software"] = software_versions()
    finalize_folder(model_dir, card)
    (run_dir / "run.json").write_text(json.dumps(
        {"folds": [r.__dict__ for r in results], "val_dice_mean": float(np.mean([r.best_val_dice for r in results])),
         "model": str(model_dir)}, indent=2, default=str) + "\n")
    return RunResult(run_dir, model_dir, results, arch)


def add_budget_arguments(ap: Any) -> None:
    """The schedule and budget options every starter-model entry takes (``--epochs``, ``--iterations``,
    ``--learning-rate``, ``--lr-schedule``, ``--foreground-sampling``, ``--minutes``, ``--resume``;
    :func:`train_starter`)."""
    ap.add_argument("--epochs", type=int, default=None, help="override max_epochs (tests use 1)")
    ap.add_argument("--iterations", type=int, default=None, help="override iterations_per_epoch")
    ap.add_argument("--learning-rate", type=float, default=None,
                    help="override the initial learning rate (after --init's halving, where the entry has one)")
    ap.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                    help="override the learning-rate schedule: plateau (reduce after epochs without a better "
                         "validation Dice) or poly (nnU-Net's decay to nearly zero at the last epoch: pair it with "
                         "--epochs that fit the --minutes budget)")
    ap.add_argument("--foreground-sampling", choices=FOREGROUND_SAMPLING, default=None,
                    help="override how a foreground patch picks its centre: voxel (nnU-Net) or component (a lesion "
                         "first, so small lesions are seen as often as large ones)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="wall-clock budget of the training loop: stop (keeping the best checkpoint) at the first "
                         "epoch boundary after it")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its last checkpoint (removes a STOP left by --minutes)")


def train_starter(raw_config: dict[str, Any], out: Path, args: Any, prog: str,
                  before: tuple[tuple[str, Any], ...] = (), after: tuple[tuple[str, Any], ...] = ()) -> Path:
    """Train a starter model from its entry's parsed :func:`add_budget_arguments`: ``raw_config`` with the
    ``--epochs``/``--iterations`` overrides, under the ``--minutes`` budget; the card records the command
    ``prog --out RUN`` with the options given (``before`` and ``after`` the schedule's, each ``(name, value)``,
    left out when the value is falsy)."""
    cfg = {k: dict(v) for k, v in raw_config.items()}
    if args.epochs:
        cfg["training"]["max_epochs"] = args.epochs
    if args.iterations:
        cfg["training"]["iterations_per_epoch"] = args.iterations
    lr, schedule, sampling = args.learning_rate, args.lr_schedule, args.foreground_sampling
    for key, value in (("learning_rate", lr), ("lr_schedule", schedule), ("foreground_sampling", sampling)):
        if value:
            cfg["training"][key] = value
    pairs = (*before, ("epochs", args.epochs), ("iterations", args.iterations), ("learning-rate", lr),
             ("lr-schedule", schedule), ("foreground-sampling", sampling), ("minutes", args.minutes), *after)
    command = f"{prog} --out RUN" + "".join(f" --{k} {v}" for k, v in pairs if v)
    return train_within_budget(cfg, out, command, args.minutes, args.resume)


def train_within_budget(raw_config: dict[str, Any], out: Path, command: str, minutes: float | None = None,
                        resume: bool = False) -> Path:
    """Train ``raw_config`` (a dict shaped like the TOML file, paths relative to ``out``) into ``out/run``,
    printing one line per epoch, and stop at the first epoch boundary after ``minutes`` of wall clock
    (a ``STOP`` file: the run keeps its best checkpoint and can be resumed; ``resume`` removes a STOP left
    by an earlier budget). The config is written to ``out/config.json``. Returns the registry model folder.

    The starter-model entries (:mod:`neurorad.workflows.svd_train`, :mod:`neurorad.workflows.ich.train`)
    share it: a CPU budget on a shared machine is a training concern, not a workflow's."""
    out = Path(out)
    (out / "config.json").write_text(json.dumps(raw_config, indent=1))
    run = out / "run"
    t0 = time.perf_counter()

    def progress(ev: dict) -> None:
        if ev.get("stage") == "epoch":
            print(f"epoch {ev['epoch']}: loss {ev['loss']:.4f} val Dice {ev['val_dice']:.4f} "
                  f"({ev['seconds']:.0f} s)", flush=True)
            if minutes and time.perf_counter() - t0 > 60 * minutes:
                (run / "STOP").touch()  # the loop ends at this epoch boundary, keeping the best checkpoint

    if resume:
        (run / "STOP").unlink(missing_ok=True)
    train(parse_config(raw_config, out, out / "config.json"), run, resume=resume, progress=progress, command=command)
    return run / "model"
